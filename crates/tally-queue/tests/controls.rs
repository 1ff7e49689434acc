//! Queue controls under concurrency: a global concurrency limit and a pause,
//! enforced by the claim script across several worker processes.
//!
//! The worker processes are this test binary run again with
//! `TALLY_QUEUE_CONTROLS_CHILD` set, executing only `controls_child_worker`.
//! A child also stops when its stdin closes, so none outlives the test.
//!
//! Both scenarios run in one test function, one after the other, because the
//! pause scenario counts the script calls Redis answered (`INFO
//! commandstats`): no other test of this binary may send any meanwhile. The
//! children run without promoter and reaper, so their only script calls are
//! claims (and heartbeats, only while they hold a job).

mod common;

use std::collections::HashMap;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::{Echo, QUEUE, eventually};
use redis::AsyncCommands as _;
use tally_queue::{JobContext, JobError, Producer, QueueAdmin, QueueClient, QueueConfig, QueueKeys, Worker};
use tally_testkit::script_calls;

const CHILD_ENV: &str = "TALLY_QUEUE_CONTROLS_CHILD";
/// Worker processes and the concurrency of each.
const PROCESSES: usize = 4;
const CONCURRENCY: usize = 5;
/// The global limit: far below PROCESSES × CONCURRENCY.
const LIMIT: u64 = 3;
/// Jobs of the limit scenario.
const JOBS: u64 = 400;

/// Run by every handler at its start (ARGV[1] = 1) and end (ARGV[1] = -1):
/// counts running handlers across the processes and records the most seen,
/// of them and of the queue's leases (in flight: running or claimed ahead).
const OBSERVE: &str = r"
local running = redis.call('HINCRBY', KEYS[2], 'running', ARGV[1])
local in_flight = redis.call('ZCARD', KEYS[1])
if running > tonumber(redis.call('HGET', KEYS[2], 'maxRunning') or '0') then
  redis.call('HSET', KEYS[2], 'maxRunning', running)
end
if in_flight > tonumber(redis.call('HGET', KEYS[2], 'maxInFlight') or '0') then
  redis.call('HSET', KEYS[2], 'maxInFlight', in_flight)
end
if ARGV[1] == '1' then
  redis.call('HINCRBY', KEYS[2], 'started', 1)
end
";

fn observe_key(prefix: &str) -> String {
    format!("{prefix}:controls:observed")
}

/// The worker process of these tests; does nothing in a normal run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn controls_child_worker() {
    if std::env::var(CHILD_ENV).is_err() {
        return;
    }
    let url = std::env::var("CONTROLS_REDIS_URL").expect("url");
    let prefix = std::env::var("CONTROLS_PREFIX").expect("prefix");
    let config = QueueConfig {
        prefix: prefix.clone(),
        lease: Duration::from_secs(2),
        throttle_poll: Duration::from_millis(50),
        ..QueueConfig::default()
    };
    let client = QueueClient::connect(&url, config).await.expect("connect");
    let sink = redis::Client::open(url.as_str())
        .expect("url")
        .get_multiplexed_async_connection()
        .await
        .expect("sink");
    let observe = redis::Script::new(OBSERVE);
    let leases = QueueKeys::new(&prefix, QUEUE).leases();
    let worker = Worker::builder(client, QUEUE)
        .concurrency(CONCURRENCY)
        .background_tasks(false)
        .handle(move |job: Echo, _ctx: JobContext| {
            let mut sink = sink.clone();
            let observe = observe.clone();
            let leases = leases.clone();
            let observed = observe_key(&prefix);
            async move {
                let call = |delta: i64| {
                    let mut invocation = observe.key(&leases);
                    invocation.key(&observed).arg(delta);
                    let mut sink = sink.clone();
                    async move { invocation.invoke_async::<()>(&mut sink).await }
                };
                call(1).await.map_err(JobError::retry)?;
                // 0-3 ms: the fast ones make the worker claim ahead.
                tokio::time::sleep(Duration::from_millis(job.n % 4)).await;
                call(-1).await.map_err(JobError::retry)?;
                let _: () = sink.hincr(&observed, "done", 1).await.map_err(JobError::retry)?;
                Ok(())
            }
        })
        .build()
        .expect("build");
    let report = worker.run_until(common::terminated_or_orphaned()).await;
    std::process::exit(i32::from(report.is_err()));
}

fn spawn_child(url: &str, prefix: &str) -> Child {
    Command::new(std::env::current_exe().expect("test binary"))
        .args(["--exact", "controls_child_worker", "--nocapture", "--test-threads=1"])
        .env(CHILD_ENV, "1")
        .env("CONTROLS_REDIS_URL", url)
        .env("CONTROLS_PREFIX", prefix)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn worker process")
}

fn kill_all(children: &mut Vec<Child>) {
    for child in children.iter_mut() {
        let _ = child.kill();
        let _ = child.wait();
    }
    children.clear();
}

async fn observed(conn: &mut tally_testkit::RedisConnection, prefix: &str) -> HashMap<String, i64> {
    conn.hgetall(observe_key(prefix)).await.expect("observed")
}

/// Waits until Redis has answered `at_least` more script calls than
/// `since`: the children's claims, as nothing else sends any meanwhile.
async fn wait_for_claims(conn: &mut tally_testkit::RedisConnection, since: u64, at_least: u64) -> u64 {
    // Hang guard only: the children poll every 50 ms.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let seen = script_calls(conn).await;
        if seen >= since + at_least {
            return seen;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for the paused workers to keep claiming ({seen} calls, since {since})"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn limit_and_pause_hold_across_worker_processes() {
    if std::env::var(CHILD_ENV).is_ok() {
        return;
    }
    limit_holds_across_processes().await;
    pause_holds_across_processes_and_restarts().await;
}

/// A limit of 3 over 4 processes × 5 slots: the queue's in-flight jobs
/// (leases, claimed-ahead ones included) never exceed it, sampled at every
/// handler start and end and by the test meanwhile, and every job completes.
async fn limit_holds_across_processes() {
    let redis = tally_testkit::redis().await;
    let prefix = redis.namespace.clone();
    let client = QueueClient::connect(&redis.url, common::fast_config(&prefix))
        .await
        .expect("connect");
    let admin = QueueAdmin::new(client.clone());
    let mut conn = redis.connection().await;
    let mut children: Vec<Child> = (0..PROCESSES).map(|_| spawn_child(&redis.url, &prefix)).collect();
    // Set while the workers run: a limit takes effect at run time.
    let control = admin.set_limit(QUEUE, Some(LIMIT)).await.expect("limit");
    assert_eq!(control.limit, Some(LIMIT));
    assert!(!control.paused);
    assert_eq!(admin.stats(QUEUE).await.expect("stats").limit, Some(LIMIT));

    let jobs: Vec<Echo> = (0..JOBS).map(Echo::new).collect();
    Producer::new(client.clone())
        .enqueue_batch(&jobs)
        .await
        .expect("enqueue");
    let leases = QueueKeys::new(&prefix, QUEUE).leases();
    let mut most_sampled = 0_u64;
    // Hang guard only: 400 jobs of at most 3 ms, three at a time.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    loop {
        let in_flight: u64 = conn.zcard(&leases).await.expect("zcard");
        most_sampled = most_sampled.max(in_flight);
        let obs = observed(&mut conn, &prefix).await;
        if obs.get("done").copied().unwrap_or(0) as u64 >= JOBS {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {JOBS} jobs: {obs:?}"
        );
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let obs = observed(&mut conn, &prefix).await;
    kill_all(&mut children);
    let stats = admin.stats(QUEUE).await.expect("stats");
    assert_eq!(stats.counters.completed, JOBS, "{stats:?}");
    assert_eq!(obs["started"] as u64, JOBS, "each job ran once: {obs:?}");
    assert!(
        obs["maxInFlight"] as u64 <= LIMIT && most_sampled <= LIMIT,
        "in flight exceeded the limit of {LIMIT}: {obs:?}, sampled {most_sampled}"
    );
    assert!(obs["maxRunning"] as u64 <= LIMIT, "{obs:?}");
    // The limit was reached, not merely never approached.
    assert!(obs["maxInFlight"] as u64 >= 2, "{obs:?}");

    let control = admin.set_limit(QUEUE, None).await.expect("unlimit");
    assert_eq!(control.limit, None);
}

/// A paused queue: three worker processes keep asking, Redis answers their
/// claims, and none takes a job; processes killed and started again while
/// paused take none either (the pause is in Redis). After resume every job
/// completes.
async fn pause_holds_across_processes_and_restarts() {
    let redis = tally_testkit::redis().await;
    let prefix = redis.namespace.clone();
    let client = QueueClient::connect(&redis.url, common::fast_config(&prefix))
        .await
        .expect("connect");
    let admin = QueueAdmin::new(client.clone());
    let producer = Producer::new(client.clone());
    let mut conn = redis.connection().await;
    let mut children: Vec<Child> = (0..3).map(|_| spawn_child(&redis.url, &prefix)).collect();
    // The workers run: a first job completes.
    producer.enqueue(&Echo::new(1)).await.expect("enqueue");
    eventually("the first job to complete", Duration::from_secs(60), || {
        let admin = admin.clone();
        async move { admin.stats(QUEUE).await.expect("stats").counters.completed == 1 }
    })
    .await;

    let control = admin.pause(QUEUE).await.expect("pause");
    assert!(control.paused);
    let jobs: Vec<Echo> = (10..60).map(Echo::new).collect();
    producer.enqueue_batch(&jobs).await.expect("enqueue while paused");
    let stats = admin.stats(QUEUE).await.expect("stats");
    assert!(stats.paused, "{stats:?}");
    assert_eq!(stats.ready, 50, "producers keep enqueuing: {stats:?}");

    // 30 claims answered (ten per process) while paused: none took a job.
    let calls = script_calls(&mut conn).await;
    let calls = wait_for_claims(&mut conn, calls, 30).await;
    let stats = admin.stats(QUEUE).await.expect("stats");
    assert_eq!(
        (stats.ready, stats.in_flight, stats.counters.completed),
        (50, 0, 1),
        "{stats:?}"
    );

    // Killed and started again: the pause is Redis's, not the processes'.
    kill_all(&mut children);
    children = (0..2).map(|_| spawn_child(&redis.url, &prefix)).collect();
    wait_for_claims(&mut conn, calls, 20).await;
    let stats = admin.stats(QUEUE).await.expect("stats");
    assert_eq!(
        (stats.ready, stats.in_flight, stats.counters.completed, stats.paused),
        (50, 0, 1, true),
        "{stats:?}"
    );

    let control = admin.resume(QUEUE).await.expect("resume");
    assert!(!control.paused);
    eventually("every job to complete after resume", Duration::from_secs(60), || {
        let admin = admin.clone();
        async move { admin.stats(QUEUE).await.expect("stats").counters.completed == 51 }
    })
    .await;
    kill_all(&mut children);
    assert!(!admin.stats(QUEUE).await.expect("stats").paused);
}
