//! Chaos: workers as separate processes, killed with SIGKILL mid-job over
//! and over, or stopped with SIGTERM under load.
//!
//! The worker processes are this test binary run again with
//! `TALLY_QUEUE_CHAOS_CHILD` set, executing only `chaos_child_worker`. A
//! child also stops when its stdin closes, so no child outlives the test
//! process however that ends.

mod common;

use std::collections::{HashMap, HashSet};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{Echo, QUEUE, eventually};
use redis::AsyncCommands as _;
use tally_queue::{
    EnqueueOptions, JobContext, JobError, Producer, QueueAdmin, QueueClient, QueueConfig, Worker, now_ms,
};

const CHILD_ENV: &str = "TALLY_QUEUE_CHAOS_CHILD";
/// Lease of the child workers.
const LEASE: Duration = Duration::from_secs(1);

/// Side-effect sink guarded by the fencing token: a write is applied only if
/// its token is newer than the last applied one for that job.
const FENCED_APPLY: &str = r"
local last = tonumber(redis.call('HGET', KEYS[1], ARGV[1]) or '0')
if tonumber(ARGV[2]) > last then
  redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
  redis.call('HINCRBY', KEYS[2], ARGV[1], 1)
  return 1
end
redis.call('HINCRBY', KEYS[3], ARGV[1], 1)
return 0
";

/// Records a start as `pid:<Redis's clock, ms>:attempt`: Redis's clock, so
/// that starts of workers whose own clocks are shifted compare.
const RECORD_START: &str = r"
local t = redis.call('TIME')
local ms = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2] .. ':' .. string.format('%d', ms) .. ':' .. ARGV[3])
";

/// Redis's clock, ms.
async fn redis_now(conn: &mut tally_testkit::RedisConnection) -> u64 {
    let (secs, micros): (u64, u64) = redis::cmd("TIME").query_async(conn).await.expect("TIME");
    secs * 1000 + micros / 1000
}

/// The chaos tests' own keys share the hash tag `{chaos}`, so that on a
/// Redis Cluster the scripts above, which touch several, find them in one
/// slot.
fn chaos_key(prefix: &str, name: &str) -> String {
    format!("{prefix}:{{chaos}}:{name}")
}

/// The worker process of the chaos tests; does nothing in a normal run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chaos_child_worker() {
    let Ok(mode) = std::env::var(CHILD_ENV) else { return };
    let url = std::env::var("CHAOS_REDIS_URL").expect("url");
    let prefix = std::env::var("CHAOS_PREFIX").expect("prefix");
    let drain = Duration::from_millis(
        std::env::var("CHAOS_DRAIN_MS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(2000),
    );
    let config = QueueConfig {
        prefix: prefix.clone(),
        lease: LEASE,
        reap_interval: Duration::from_millis(200),
        drain_timeout: drain,
        ..QueueConfig::default()
    };
    let client = QueueClient::connect(&url, config).await.expect("connect");
    let sink = tally_testkit::connect(&url).await;
    let script = redis::Script::new(FENCED_APPLY);
    let record_start = redis::Script::new(RECORD_START);
    let pid = std::process::id();
    let worker = Worker::builder(client, QUEUE)
        .concurrency(4)
        .handle(move |job: Echo, ctx: JobContext| {
            let mut sink = sink.clone();
            let script = script.clone();
            let record_start = record_start.clone();
            let prefix = prefix.clone();
            // Longer than the drain (term) or than two leases (clock).
            let long = match mode.as_str() {
                "term" => job.n.is_multiple_of(10).then_some(3000),
                "clock" => job.n.is_multiple_of(25).then_some(2500),
                _ => None,
            };
            async move {
                let _: () = record_start
                    .key(chaos_key(&prefix, "starts"))
                    .arg(format!("{}:{:020}", ctx.id, ctx.token))
                    .arg(pid)
                    .arg(ctx.attempt)
                    .invoke_async(&mut sink)
                    .await
                    .map_err(JobError::retry)?;
                tokio::time::sleep(Duration::from_millis(10 + rand::random::<u64>() % 50)).await;
                let _: i64 = script
                    .key(chaos_key(&prefix, "ledger"))
                    .key(chaos_key(&prefix, "applied"))
                    .key(chaos_key(&prefix, "refused"))
                    .arg(&ctx.id)
                    .arg(ctx.token)
                    .invoke_async(&mut sink)
                    .await
                    .map_err(JobError::retry)?;
                let tail = long.unwrap_or_else(|| rand::random::<u64>() % 20);
                tokio::time::sleep(Duration::from_millis(tail)).await;
                let _: () = sink
                    .hset(chaos_key(&prefix, "done"), &ctx.id, ctx.token)
                    .await
                    .map_err(JobError::retry)?;
                Ok(())
            }
        })
        .build()
        .expect("build");
    let report = worker.run_until(common::terminated_or_orphaned()).await;
    std::process::exit(i32::from(report.is_err()));
}

fn spawn_child(url: &str, prefix: &str, mode: &str, drain_ms: u64) -> Child {
    spawn_child_with_clock(url, prefix, mode, drain_ms, None)
}

/// A child worker; with `clock_offset` (e.g. "+30s") it runs under
/// `faketime`, its wall clock shifted (its monotonic clock left alone, as on
/// a host whose clock is simply wrong).
fn spawn_child_with_clock(url: &str, prefix: &str, mode: &str, drain_ms: u64, clock_offset: Option<&str>) -> Child {
    let exe = std::env::current_exe().expect("test binary");
    let mut command = match clock_offset {
        None => Command::new(exe),
        Some(offset) => {
            let faketime = tally_testkit::faketime().expect("faketime");
            let mut command = Command::new(faketime);
            command
                .arg("-f")
                .arg(offset)
                .arg(exe)
                .env("FAKETIME_DONT_FAKE_MONOTONIC", "1");
            command
        }
    };
    command
        .args(["--exact", "chaos_child_worker", "--nocapture", "--test-threads=1"])
        .env(CHILD_ENV, mode)
        .env("CHAOS_REDIS_URL", url)
        .env("CHAOS_PREFIX", prefix)
        .env("CHAOS_DRAIN_MS", drain_ms.to_string())
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn worker process")
}

/// One recorded start of a job: which process, when, which attempt.
#[derive(Debug, Clone)]
struct Start {
    token: u64,
    pid: u32,
    at_ms: u64,
    attempt: u32,
}

async fn read_starts(conn: &mut tally_testkit::RedisConnection, prefix: &str) -> HashMap<String, Vec<Start>> {
    let raw: HashMap<String, String> = conn.hgetall(chaos_key(prefix, "starts")).await.expect("starts");
    let mut by_job: HashMap<String, Vec<Start>> = HashMap::new();
    for (field, value) in raw {
        let (id, token) = field.rsplit_once(':').expect("id:token");
        let parts: Vec<&str> = value.split(':').collect();
        by_job.entry(id.to_owned()).or_default().push(Start {
            token: token.parse().expect("token"),
            pid: parts[0].parse().expect("pid"),
            at_ms: parts[1].parse().expect("ms"),
            attempt: parts[2].parse().expect("attempt"),
        });
    }
    for starts in by_job.values_mut() {
        starts.sort_by_key(|s| s.token);
    }
    by_job
}

/// Guarantee 1 + 2, the crash test: 1000 jobs, three worker
/// processes, one killed with SIGKILL every 250 ms and replaced. Every job
/// completes exactly once, the fenced side effects are never applied by a
/// stale claim, and each killed job is recovered (the hang guard is lease +
/// 15 s; the figures are printed).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s01_sigkill_chaos_1000_jobs_none_lost_all_recovered() {
    const TOTAL: u64 = 1000;
    if std::env::var(CHILD_ENV).is_ok() {
        return;
    }
    let redis = tally_testkit::redis().await;
    let prefix = redis.namespace.clone();
    let client = QueueClient::connect(&redis.url, QueueConfig::with_prefix(&prefix))
        .await
        .expect("connect");
    // A worker is killed every 250 ms, far beyond any real deployment: a
    // job can honestly be running in three killed workers in a row, and the
    // poison-job rule (dead after max attempts crashes, see
    // reliability.rs::s03) would then bury it. Ten crashes allowed keeps that
    // rule out of this test, which is about nothing lost and nothing wrongly
    // charged: jobs merely held by a killed worker are charged nothing (unit
    // tests in src/worker/runtime_tests.rs).
    let jobs: Vec<Echo> = (0..TOTAL)
        .map(|n| Echo {
            max_attempts: Some(10),
            ..Echo::new(n)
        })
        .collect();
    Producer::new(client.clone())
        .enqueue_batch(&jobs)
        .await
        .expect("enqueue");
    let mut children: Vec<Child> = (0..3).map(|_| spawn_child(&redis.url, &prefix, "kill", 2000)).collect();
    let admin = QueueAdmin::new(client.clone());
    let mut kill_times: HashMap<u32, u64> = HashMap::new();
    let started = Instant::now();
    loop {
        tokio::time::sleep(Duration::from_millis(250)).await;
        let stats = admin.stats(QUEUE).await.expect("stats");
        if stats.counters.completed + stats.counters.dead >= TOTAL {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_mins(3),
            "chaos run did not finish: {stats:?}"
        );
        let victim = rand::random::<u64>() as usize % children.len();
        let mut child = children.swap_remove(victim);
        kill_times.insert(child.id(), now_ms());
        child.kill().expect("SIGKILL");
        child.wait().expect("reap");
        children.push(spawn_child(&redis.url, &prefix, "kill", 2000));
    }
    for mut child in children {
        let _ = child.kill();
        let _ = child.wait();
    }

    let stats = admin.stats(QUEUE).await.expect("stats");
    let dead = admin.dead_list(QUEUE, 0, 10).await.expect("dead list");
    assert_eq!(
        stats.counters.completed, TOTAL,
        "every job completed exactly once: {stats:?}, dead: {dead:?}"
    );
    assert_eq!((stats.dead, stats.ready, stats.scheduled), (0, 0, 0));
    assert!(kill_times.len() >= 5, "only {} kills", kill_times.len());

    let mut conn = redis.connection().await;
    let done: HashMap<String, u64> = conn.hgetall(chaos_key(&prefix, "done")).await.expect("done");
    let ledger: HashMap<String, u64> = conn.hgetall(chaos_key(&prefix, "ledger")).await.expect("ledger");
    let refused: HashMap<String, u64> = conn.hgetall(chaos_key(&prefix, "refused")).await.expect("refused");
    assert_eq!(done.len() as u64, TOTAL, "no job lost");
    assert!(refused.is_empty(), "stale claims tried to apply effects: {refused:?}");
    for (id, token) in &done {
        assert_eq!(
            ledger.get(id),
            Some(token),
            "job {id}: the effect in force is the completing claim's"
        );
    }

    // Recovery time of every job whose process was killed mid-attempt.
    let starts = read_starts(&mut conn, &prefix).await;
    // A hang guard, not a latency figure: recovery takes about lease +
    // reap interval (the median and maximum are printed below); only a
    // recovery that never comes, or comes from the wrong mechanism, takes
    // this long, however loaded the machine.
    let bound = LEASE + Duration::from_secs(15);
    let mut recoveries = Vec::new();
    for (id, runs) in &starts {
        for pair in runs.windows(2) {
            let (before, after) = (&pair[0], &pair[1]);
            if let Some(&killed) = kill_times.get(&before.pid)
                && killed >= before.at_ms
            {
                let recovery = Duration::from_millis(after.at_ms.saturating_sub(killed));
                assert!(recovery <= bound, "job {id} recovered after {recovery:?}");
                recoveries.push(recovery);
            }
            assert!(
                after.attempt > before.attempt,
                "job {id}: attempts count up across crashes"
            );
        }
    }
    assert!(!recoveries.is_empty(), "no kill landed mid-job");
    recoveries.sort();
    eprintln!(
        "chaos: {} kills, {} recovered attempts, recovery max {:?}, median {:?}, recovered counter {}",
        kill_times.len(),
        recoveries.len(),
        recoveries.last(),
        recoveries[recoveries.len() / 2],
        stats.counters.recovered
    );
    assert!(stats.counters.recovered >= recoveries.len() as u64);
}

/// Guarantee 10, the shutdown test: SIGTERM under load exits 0 within
/// the drain deadline; unfinished jobs go back without spending an attempt;
/// nothing is lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s10_sigterm_under_load_exits_zero_in_time_and_loses_nothing() {
    const TOTAL: u64 = 300;
    if std::env::var(CHILD_ENV).is_ok() {
        return;
    }
    let redis = tally_testkit::redis().await;
    let prefix = redis.namespace.clone();
    let client = QueueClient::connect(&redis.url, QueueConfig::with_prefix(&prefix))
        .await
        .expect("connect");
    let jobs: Vec<Echo> = (0..TOTAL).map(Echo::new).collect();
    Producer::new(client.clone())
        .enqueue_batch(&jobs)
        .await
        .expect("enqueue");
    let drain = Duration::from_secs(1);
    let mut victim = spawn_child(&redis.url, &prefix, "term", drain.as_millis() as u64);
    let admin = QueueAdmin::new(client.clone());
    eventually("the victim is busy", Duration::from_secs(30), || async {
        admin.stats(QUEUE).await.expect("stats").counters.completed >= 20
    })
    .await;
    // Some of its running jobs take 3 s: longer than the drain deadline.
    let signalled = Instant::now();
    tally_testkit::send_signal(victim.id(), tally_testkit::Signal::SIGTERM);
    let exit = loop {
        if let Some(exit) = victim.try_wait().expect("wait") {
            break exit;
        }
        assert!(
            signalled.elapsed() < drain + Duration::from_secs(10),
            "no exit after SIGTERM"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    let took = signalled.elapsed();
    assert!(exit.success(), "exit status {exit:?}");
    assert!(
        took <= drain + Duration::from_secs(2),
        "exit took {took:?} with a {drain:?} drain"
    );
    let stats = admin.stats(QUEUE).await.expect("stats");
    assert_eq!(stats.in_flight, 0, "nothing left leased: finished or put back");

    // A successor finishes the rest.
    let mut successor = spawn_child(&redis.url, &prefix, "term", 10_000);
    eventually("all jobs done", Duration::from_mins(2), || async {
        admin.stats(QUEUE).await.expect("stats").counters.completed >= TOTAL
    })
    .await;
    let _ = successor.kill();
    let _ = successor.wait();
    let stats = admin.stats(QUEUE).await.expect("stats");
    assert_eq!((stats.counters.completed, stats.dead, stats.ready), (TOTAL, 0, 0));
    let mut conn = redis.connection().await;
    let starts = read_starts(&mut conn, &prefix).await;
    assert_eq!(starts.len() as u64, TOTAL);
    let requeued: HashSet<&String> = starts
        .iter()
        .filter(|(_, runs)| runs.len() > 1)
        .map(|(id, _)| id)
        .collect();
    assert!(!requeued.is_empty(), "some jobs were interrupted by the shutdown");
    for (id, runs) in &starts {
        assert!(
            runs.iter().all(|r| r.attempt == 1),
            "job {id} spent an attempt: {runs:?}"
        );
    }
}

/// Clocks that disagree: three worker processes, one on the true clock, one
/// 30 s ahead and one 30 s behind, share a queue of short jobs, jobs longer
/// than two leases (kept alive only by heartbeats) and delayed jobs. Leases
/// and due times are judged by Redis's clock, so nothing is reaped, nothing
/// runs twice or dies, and no delayed job starts before it is due.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn skewed_worker_clocks_neither_reap_early_nor_promote_early() {
    const NOW: u64 = 200;
    const DELAYED: u64 = 40;
    if std::env::var(CHILD_ENV).is_ok() {
        return;
    }
    let redis = tally_testkit::redis().await;
    let prefix = redis.namespace.clone();
    let client = QueueClient::connect(&redis.url, QueueConfig::with_prefix(&prefix))
        .await
        .expect("connect");
    let mut conn = redis.connection().await;
    let children: Vec<Child> = [None, Some("+30s"), Some("-30s")]
        .into_iter()
        .map(|offset| spawn_child_with_clock(&redis.url, &prefix, "clock", 2000, offset))
        .collect();
    // Let every worker start and block on the wake list.
    tokio::time::sleep(Duration::from_secs(1)).await;

    let producer = Producer::new(client.clone());
    let jobs: Vec<Echo> = (0..NOW).map(Echo::new).collect();
    producer.enqueue_batch(&jobs).await.expect("enqueue");
    let mut due_at: HashMap<String, u64> = HashMap::new();
    for i in 0..DELAYED {
        let delay = Duration::from_millis(1500 + 50 * i);
        let before = redis_now(&mut conn).await;
        let enqueued = producer
            .enqueue_with(&Echo::new(1000 + i), EnqueueOptions::delayed(delay))
            .await
            .expect("enqueue delayed");
        due_at.insert(enqueued.id, before + millis(delay));
    }
    let admin = QueueAdmin::new(client.clone());
    eventually("every job done", Duration::from_mins(2), || async {
        let stats = admin.stats(QUEUE).await.expect("stats");
        stats.counters.completed + stats.counters.dead >= NOW + DELAYED
    })
    .await;
    for mut child in children {
        let _ = child.kill();
        let _ = child.wait();
    }

    let stats = admin.stats(QUEUE).await.expect("stats");
    assert_eq!(
        (
            stats.counters.completed,
            stats.counters.recovered,
            stats.counters.failed,
            stats.dead
        ),
        (NOW + DELAYED, 0, 0, 0),
        "no lease judged expired by a skewed clock: {stats:?}"
    );
    let starts = read_starts(&mut conn, &prefix).await;
    assert_eq!(starts.len() as u64, NOW + DELAYED);
    let runs_twice: Vec<_> = starts.iter().filter(|(_, runs)| runs.len() > 1).collect();
    assert!(runs_twice.is_empty(), "jobs ran twice: {runs_twice:?}");
    let pids: HashSet<u32> = starts.values().flatten().map(|s| s.pid).collect();
    assert_eq!(pids.len(), 3, "all three clocks took part");
    for (id, due) in &due_at {
        let started = starts[id][0].at_ms;
        assert!(
            started + 5 >= *due,
            "delayed job {id} started {} ms before it was due",
            due - started
        );
        assert!(
            started <= due + 2000,
            "delayed job {id} started {} ms late",
            started - due
        );
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).expect("ms")
}
