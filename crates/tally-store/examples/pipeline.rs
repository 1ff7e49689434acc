//! Runs the pipeline benchmark against a database you provide.
//!
//! ```text
//! cargo run --release -p tally-store --example pipeline -- \
//!     --database-url postgres://postgres@127.0.0.1:5432/tally_bench \
//!     --users 100000 --predictions 1000000 [--matches 30] [--readers 4] [--seed 42] [--reuse]
//! ```
//!
//! The database must exist (empty, or already seeded with `--reuse`). Progress
//! goes to stderr; stdout gets one JSON line, the report. The `tally bench
//! pipeline` CLI command calls the same library function.

use std::time::Duration;

use tally_store::bench::{PipelineOptions, pipeline};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut options = PipelineOptions {
        database_url: std::env::var("DATABASE_URL").unwrap_or_default(),
        ..PipelineOptions::default()
    };
    options.seed.users = 100_000;
    options.seed.predictions = 1_000_000;
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        if flag == "--reuse" {
            options.reuse = true;
            continue;
        }
        let value = args.next().ok_or_else(|| format!("{flag} needs a value"))?;
        match flag.as_str() {
            "--database-url" => options.database_url = value,
            "--users" => options.seed.users = value.parse()?,
            "--predictions" => options.seed.predictions = value.parse()?,
            "--competitions" => options.seed.competitions = value.parse()?,
            "--teams" => options.seed.teams_per_competition = value.parse()?,
            "--played" => options.seed.played_fraction = value.parse()?,
            "--seed" => options.seed.seed = value.parse()?,
            "--matches" => options.matches = value.parse()?,
            "--readers" => options.readers = value.parse()?,
            "--read-pause-ms" => options.read_pause = Duration::from_millis(value.parse()?),
            "--naive-runs" => options.naive_runs = value.parse()?,
            other => return Err(format!("unknown flag {other}").into()),
        }
    }
    if options.database_url.is_empty() {
        return Err("pass --database-url or set DATABASE_URL".into());
    }
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    let started = std::time::Instant::now();
    let report = runtime.block_on(pipeline(
        &options,
        &|p| {
            if p.done == p.total {
                let at = started.elapsed().as_secs_f64();
                eprintln!("[{at:7.2}s] seed: {:?} {}/{}", p.stage, p.done, p.total);
            }
        },
        &|line| eprintln!("[{:7.2}s] bench: {line}", started.elapsed().as_secs_f64()),
    ))?;
    println!("{}", serde_json::to_string(&report)?);
    Ok(())
}
