//! Soak benchmark (not a test): `SOAK_JOBS` jobs (1,000,000 by default)
//! through two worker processes on a private Redis, one of them killed with
//! SIGKILL every `SOAK_KILL_EVERY_MS` (3,000) and started again. It reports
//! whether every job completed exactly once, Redis's memory before the jobs
//! and after the drain, and the resident memory of the worker that is never
//! killed, sampled over the run.
//!
//! ```sh
//! cargo run --release -p tally-bench --example soak            # or: make soak
//! SOAK_JOBS=200000 cargo run --release -p tally-bench --example soak
//! ```
//! Prints a human summary on stderr and one JSON line last on stdout.

use std::collections::BTreeMap;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use redis::AsyncCommands as _;
use serde::{Deserialize, Serialize};
use tally_jobs::{Job, JobPolicy};
use tally_queue::{JobContext, JobError, Producer, QueueAdmin, QueueClient, QueueConfig, Worker};
use tally_testkit::{RedisOptions, RedisServer};

const QUEUE: &str = "soak";
const CHILD_FLAG: &str = "--soak-worker";

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Tick {
    n: u64,
}

impl Job for Tick {
    const KIND: &'static str = "tick";
    const QUEUE: &'static str = QUEUE;

    fn policy(&self) -> JobPolicy {
        JobPolicy {
            // A job may honestly be running in several killed workers.
            max_attempts: 25,
            ..JobPolicy::default()
        }
    }

    fn payload_schema() -> serde_json::Value {
        serde_json::json!({ "type": "object" })
    }

    fn example() -> Self {
        Self { n: 1 }
    }
}

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn config(prefix: &str) -> QueueConfig {
    QueueConfig {
        lease: Duration::from_secs(2),
        reap_interval: Duration::from_millis(250),
        ..QueueConfig::with_prefix(prefix)
    }
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some(CHILD_FLAG) {
        runtime.block_on(child(&args[2], &args[3]));
        return;
    }
    match runtime.block_on(parent()) {
        Ok(line) => println!("{line}"),
        Err(err) => {
            eprintln!("soak: {err:#}");
            std::process::exit(1);
        }
    }
}

/// A worker process: runs until its stdin closes (the parent went away).
async fn child(queue_url: &str, sink_url: &str) {
    let client = QueueClient::connect(queue_url, config("soak")).await.expect("connect");
    let sink = redis::Client::open(sink_url)
        .expect("sink url")
        .get_multiplexed_async_connection()
        .await
        .expect("sink");
    let worker = Worker::builder(client, QUEUE)
        .concurrency(50)
        .handle(move |job: Tick, _ctx: JobContext| {
            let mut sink = sink.clone();
            async move {
                // One bit per job on another Redis: a second run of a job
                // (after its worker was killed) finds its bit set.
                let before: u8 = sink
                    .setbit("ran", job.n as usize, true)
                    .await
                    .map_err(JobError::retry)?;
                if before == 1 {
                    let _: u64 = sink.incr("reruns", 1).await.map_err(JobError::retry)?;
                }
                Ok(())
            }
        })
        .build()
        .expect("build");
    let shutdown = async {
        let (tx, orphaned) = tokio::sync::oneshot::channel::<()>();
        std::thread::spawn(move || {
            let mut buf = [0_u8; 64];
            while std::io::Read::read(&mut std::io::stdin(), &mut buf).is_ok_and(|n| n > 0) {}
            let _ = tx.send(());
        });
        let _ = orphaned.await;
    };
    let _ = worker.run_until(shutdown).await;
}

fn spawn_worker(queue_url: &str, sink_url: &str) -> anyhow::Result<Child> {
    Ok(Command::new(std::env::current_exe()?)
        .args([CHILD_FLAG, queue_url, sink_url])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()?)
}

fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

/// Redis's memory: `used_memory`, the part of it that is data
/// (`used_memory_dataset`, what jobs cost) and the cached scripts.
async fn memory(conn: &mut redis::aio::MultiplexedConnection) -> anyhow::Result<serde_json::Value> {
    let info: String = redis::cmd("INFO").arg("memory").query_async(conn).await?;
    let field = |name: &str| -> u64 {
        info.lines()
            .find_map(|l| l.strip_prefix(name).and_then(|v| v.strip_prefix(':')))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0)
    };
    let keys: u64 = redis::cmd("DBSIZE").query_async(conn).await?;
    Ok(serde_json::json!({
        "usedMemory": field("used_memory"),
        "dataset": field("used_memory_dataset"),
        "scripts": field("used_memory_scripts_eval"),
        "keys": keys,
    }))
}

async fn parent() -> anyhow::Result<serde_json::Value> {
    let total = env_u64("SOAK_JOBS", 1_000_000);
    let kill_every = Duration::from_millis(env_u64("SOAK_KILL_EVERY_MS", 3_000));
    let queue_redis = RedisServer::start(RedisOptions::default()).await?;
    let sink_redis = RedisServer::start(RedisOptions::default()).await?;
    let (queue_url, sink_url) = (queue_redis.url(), sink_redis.url());
    let client = QueueClient::connect(&queue_url, config("soak")).await?;
    let mut conn = redis::Client::open(queue_url.as_str())?
        .get_multiplexed_async_connection()
        .await?;
    let memory_before = memory(&mut conn).await?;

    eprintln!("soak: enqueueing {total} jobs");
    let started = Instant::now();
    let producer = Producer::new(client.clone());
    let mut n = 0;
    while n < total {
        let batch: Vec<Tick> = (n..(n + 10_000).min(total)).map(|n| Tick { n }).collect();
        producer.enqueue_batch(&batch).await?;
        n += batch.len() as u64;
    }
    let enqueued_in = started.elapsed();
    let memory_loaded = memory(&mut conn).await?;

    let mut survivor = spawn_worker(&queue_url, &sink_url)?;
    let mut victim = spawn_worker(&queue_url, &sink_url)?;
    let admin = QueueAdmin::new(client.clone());
    let run_started = Instant::now();
    let mut last_kill = Instant::now();
    let mut kills = 0_u64;
    let mut rss: BTreeMap<u64, u64> = BTreeMap::new();
    loop {
        tokio::time::sleep(Duration::from_millis(500)).await;
        if let Some(kib) = rss_kib(survivor.id()) {
            rss.insert(run_started.elapsed().as_secs(), kib);
        }
        let stats = admin.stats(QUEUE).await?;
        if stats.counters.completed + stats.counters.dead >= total {
            break;
        }
        if last_kill.elapsed() >= kill_every {
            victim.kill()?;
            victim.wait()?;
            kills += 1;
            victim = spawn_worker(&queue_url, &sink_url)?;
            last_kill = Instant::now();
        }
        anyhow::ensure!(
            run_started.elapsed() < Duration::from_mins(30),
            "soak did not finish in 30 minutes: {stats:?}"
        );
    }
    let processed_in = run_started.elapsed();
    for child in [&mut survivor, &mut victim] {
        drop(child.stdin.take());
        let _ = child.wait();
    }
    // Jobs are all finished; claim records and locks expire within a lease.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let stats = admin.stats(QUEUE).await?;
    let memory_after = memory(&mut conn).await?;
    // The slow log keeps the arguments of the last 128 slow commands (the
    // 10,000-job enqueue calls): bounded, but not nothing. Emptied, the rest
    // is what the queue itself keeps.
    let slowlog: u64 = redis::cmd("SLOWLOG").arg("LEN").query_async(&mut conn).await?;
    let _: () = redis::cmd("SLOWLOG").arg("RESET").query_async(&mut conn).await?;
    let memory_after_slowlog = memory(&mut conn).await?;
    let mut sink = redis::Client::open(sink_url.as_str())?
        .get_multiplexed_async_connection()
        .await?;
    let ran: u64 = redis::cmd("BITCOUNT").arg("ran").query_async(&mut sink).await?;
    let reruns: Option<u64> = sink.get("reruns").await?;
    let keys: Vec<String> = redis::cmd("KEYS").arg("*").query_async(&mut conn).await?;

    let exactly_once = stats.counters.completed == total
        && stats.dead == 0
        && stats.ready + stats.scheduled + stats.in_flight == 0
        && ran == total;
    let samples: Vec<u64> = rss.values().copied().collect();
    let quarter = samples.get(samples.len() / 4).copied().unwrap_or(0);
    let last = samples.last().copied().unwrap_or(0);
    let peak = samples.iter().copied().max().unwrap_or(0);
    eprintln!(
        "soak: {total} jobs, {kills} SIGKILLs, processed in {:.1} s ({:.0} jobs/s), enqueued in {:.1} s",
        processed_in.as_secs_f64(),
        total as f64 / processed_in.as_secs_f64(),
        enqueued_in.as_secs_f64()
    );
    eprintln!(
        "soak: completed {} exactly once: {exactly_once} (ran {ran} distinct, {} reruns after kills, recovered {}, dead {})",
        stats.counters.completed,
        reruns.unwrap_or(0),
        stats.counters.recovered,
        stats.dead
    );
    eprintln!(
        "soak: redis memory before {memory_before}, loaded {memory_loaded}, after the drain {memory_after}, after emptying the slow log ({slowlog} entries) {memory_after_slowlog}; keys left: {keys:?}"
    );
    eprintln!("soak: survivor RSS KiB at 25%: {quarter}, end: {last}, peak: {peak}");
    anyhow::ensure!(
        exactly_once,
        "not every job completed exactly once: {stats:?}, ran {ran}"
    );
    Ok(serde_json::json!({
        "jobs": total,
        "kills": kills,
        "processedSeconds": processed_in.as_secs_f64(),
        "jobsPerSecond": total as f64 / processed_in.as_secs_f64(),
        "completed": stats.counters.completed,
        "dead": stats.dead,
        "recovered": stats.counters.recovered,
        "distinctRuns": ran,
        "reruns": reruns.unwrap_or(0),
        "redisMemory": {
            "before": memory_before,
            "loaded": memory_loaded,
            "after": memory_after,
            "afterEmptyingSlowlog": memory_after_slowlog,
            "slowlogEntries": slowlog,
        },
        "keysLeft": keys,
        "survivorRssKib": { "at25pct": quarter, "end": last, "peak": peak, "samples": rss },
    }))
}
