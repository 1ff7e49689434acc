//! `tally bench queue` and `tally bench pipeline`: the benchmark programs of
//! `tally-bench`. Both print a human summary on stderr and, with `--json`,
//! one JSON object as the last line of stdout (the queue one in the shape of
//! BullMQ's benchmark harness, so `bench/summarize.mjs` compares them).

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
    let redis_url = if use_redis_url {
        Some(crate::commands::redis_url(cli)?.to_owned())
    } else {
        None
    };
    let report = tally_bench::queue(redis_url).await?;
    eprintln!("{}", tally_bench::queue::summary(&report));
    if cli.json {
        println!("{}", serde_json::to_string(&report)?);
    }
    Ok(())
}

async fn pipeline(cli: &Cli, args: &PipelineArgs) -> anyhow::Result<()> {
    let url = cli
        .database_url
        .clone()
        .context("DATABASE_URL is not set: point it at an empty database")?;
    let defaults = tally_store::seed::SeedOptions::default();
    let options = tally_bench::PipelineOptions {
        database_url: url,
        seed: tally_store::seed::SeedOptions {
            users: args.users,
            predictions: args.predictions,
            competitions: args.competitions.unwrap_or(defaults.competitions),
            teams_per_competition: args.teams.unwrap_or(defaults.teams_per_competition),
            played_fraction: args.played.unwrap_or(defaults.played_fraction),
            seed: args.seed.unwrap_or(defaults.seed),
        },
        reuse: args.reuse,
        matches: args.matches,
        readers: args.readers,
        read_pause: std::time::Duration::from_millis(args.read_pause_ms),
        naive_runs: args.naive_runs,
        ..tally_bench::PipelineOptions::default()
    };
    let progress = Progress::new();
    let report = tally_bench::pipeline(&options, &|p| progress.seed(p), &|line| eprintln!("[bench] {line}")).await?;
    if cli.json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        println!("{}", serde_json::to_string_pretty(&report)?);
    }
    Ok(())
}
