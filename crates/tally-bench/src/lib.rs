//! tally-bench: the benchmark programs, out of the production crates.
//! `tally bench queue` and `tally bench pipeline` call the two entry points
//! here, and `make bench` (`scripts/bench.sh`) runs those commands beside
//! the comparison harnesses in `bench/`.
//!
//! - [`queue()`]: the engine through the phases of BullMQ's benchmark
//!   ([`mod@queue`]), on a private `redis-server` unless given a Redis; one
//!   JSON object in the shape BullMQ's harness prints.
//! - [`pipeline()`]: a result-to-leaderboard pipeline at scale
//!   ([`mod@pipeline`]) on the database it is given.
//!
//! Speed is measured here, never asserted in tests.

pub mod pipeline;
pub mod queue;

pub use pipeline::{PipelineOptions, PipelineReport};

/// Runs the queue benchmark with the settings of the environment
/// ([`queue::BenchSettings::from_env`]) against `redis_url`, or, without
/// one, against a private `redis-server` with no persistence that is gone
/// when the benchmark ends. Returns the JSON report.
pub async fn queue(redis_url: Option<String>) -> anyhow::Result<serde_json::Value> {
    let mut settings = queue::BenchSettings::from_env()?;
    // `BENCH_REDIS=cluster`: a private local cluster (three masters, a
    // replica each) instead of one private redis-server.
    let cluster = match std::env::var("BENCH_REDIS").as_deref() {
        Err(_) | Ok("" | "single") => false,
        Ok("cluster") => true,
        Ok(other) => anyhow::bail!("BENCH_REDIS={other:?}: expected `single` (the default) or `cluster`"),
    };
    let mut private_server = None;
    let mut private_cluster = None;
    if let Some(url) = redis_url {
        settings.redis_url = url;
    } else if cluster {
        let c = tally_testkit::RedisCluster::start().await?;
        // Every node is a seed, so each one's CPU is measured.
        settings.redis_url = c.url();
        private_cluster = Some(c);
    } else {
        let server = tally_testkit::RedisServer::start(tally_testkit::RedisOptions::default()).await?;
        settings.redis_url = server.url();
        private_server = Some(server);
    }
    let report = queue::run(settings).await;
    drop(private_server);
    drop(private_cluster);
    Ok(report?)
}

/// Runs the pipeline benchmark; `progress` sees the seeding, `log` gets a
/// line per step.
pub async fn pipeline(
    options: &PipelineOptions,
    progress: &(dyn Fn(tally_store::seed::SeedProgress) + Send + Sync),
    log: &(dyn Fn(&str) + Send + Sync),
) -> anyhow::Result<PipelineReport> {
    Ok(pipeline::pipeline(options, progress, log).await?)
}
