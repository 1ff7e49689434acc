//! `tally bench queue` and `tally bench pipeline`: the benchmark programs.
//! Both print a human summary on stderr and, with `--json`, one JSON object
//! as the last line of stdout (the queue one in the shape of BullMQ's peer
//! bench, so `summarize.mjs` compares them).

use std::process::Stdio;

use anyhow::Context as _;

use crate::cli::{BenchCommand, Cli, PipelineArgs};
use crate::output::Progress;

/// Runs a benchmark.
pub async fn run(cli: &Cli, cmd: &BenchCommand) -> anyhow::Result<()> {
    match cmd {
        BenchCommand::Queue { use_redis_url } => queue(cli, *use_redis_url).await,
        BenchCommand::Pipeline(args) => pipeline(cli, args).await,
    }
}

async fn queue(cli: &Cli, use_redis_url: bool) -> anyhow::Result<()> {
    let mut settings = tally_queue::bench::BenchSettings::from_env()?;
    let mut private = None;
    if use_redis_url {
        crate::commands::redis_url(cli)?.clone_into(&mut settings.redis_url);
    } else {
        let port = crate::services::free_port()?;
        let dir = std::env::temp_dir().join(format!("tally-bench-redis-{port}"));
        std::fs::create_dir_all(&dir)?;
        let child = tokio::process::Command::new("redis-server")
            .args([
                "--port",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .arg("--dir")
            .arg(&dir)
            .stdout(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .context("cannot start redis-server (install the Debian package redis-server)")?;
        private = Some((child, dir));
        settings.redis_url = format!("redis://127.0.0.1:{port}");
        for _ in 0..100 {
            if tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_ok() {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    }
    let result = tally_queue::bench::run(settings).await;
    if let Some((mut child, dir)) = private {
        let _ = child.kill().await;
        let _ = std::fs::remove_dir_all(dir);
    }
    let result = result?;
    eprintln!("{}", tally_queue::bench::summary(&result));
    if cli.json {
        println!("{}", serde_json::to_string(&result)?);
    }
    Ok(())
}

async fn pipeline(cli: &Cli, args: &PipelineArgs) -> anyhow::Result<()> {
    let url = cli
        .database_url
        .clone()
        .context("DATABASE_URL is not set: point it at an empty database")?;
    let options = tally_store::bench::PipelineOptions {
        database_url: url,
        seed: tally_store::seed::SeedOptions {
            users: args.users,
            predictions: args.predictions,
            ..tally_store::seed::SeedOptions::default()
        },
        reuse: args.reuse,
        matches: args.matches,
        ..tally_store::bench::PipelineOptions::default()
    };
    let progress = Progress::new();
    let report =
        tally_store::bench::pipeline(&options, &|p| progress.seed(p), &|line| eprintln!("[bench] {line}")).await?;
    let json = serde_json::to_string(&report)?;
    if cli.json {
        println!("{json}");
    } else {
        println!("{}", serde_json::to_string_pretty(&report)?);
    }
    Ok(())
}
