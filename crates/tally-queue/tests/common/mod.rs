//! Shared test harness: a test job type, short-interval settings, and a
//! worker running in the background that a test can stop gracefully or
//! "kill" (abort without any cleanup, as `kill -9` would).

#![allow(dead_code, reason = "each test binary uses a different part of the harness")]

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tally_jobs::{Backoff, BackoffKind, Job, JobPolicy, Priority};
use tally_queue::{JobEvent, JobEvents, QueueClient, QueueConfig, Worker, WorkerReport};
use tally_testkit::TestRedis;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// Queue of the test job types.
pub const QUEUE: &str = "test";

/// The test job: a number, plus knobs for policy.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Echo {
    pub n: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority: Option<Priority>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_attempts: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_ms: Option<u64>,
}

impl Echo {
    pub fn new(n: u64) -> Self {
        Self { n, ..Self::default() }
    }
}

impl Job for Echo {
    const KIND: &'static str = "echo";
    const QUEUE: &'static str = QUEUE;

    fn policy(&self) -> JobPolicy {
        JobPolicy {
            max_attempts: self.max_attempts.unwrap_or(3),
            // Short, so retries are quick in tests.
            backoff: Backoff {
                kind: BackoffKind::Exponential,
                base_ms: 50,
                max_ms: 1_000,
                jitter: false,
            },
            timeout_ms: self.timeout_ms.unwrap_or(30_000),
            priority: self.priority.unwrap_or_default(),
        }
    }

    fn dedup_key(&self) -> Option<String> {
        self.key.clone()
    }

    fn payload_schema() -> serde_json::Value {
        serde_json::json!({ "type": "object" })
    }

    fn example() -> Self {
        Self::new(1)
    }
}

/// Another job type on the same queue, which a worker may not handle.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Other {
    pub text: String,
}

impl Job for Other {
    const KIND: &'static str = "other";
    const QUEUE: &'static str = QUEUE;

    fn payload_schema() -> serde_json::Value {
        serde_json::json!({ "type": "object" })
    }

    fn example() -> Self {
        Self { text: "x".into() }
    }
}

/// Short intervals so time-based behaviour shows in well under a second.
pub fn fast_config(prefix: &str) -> QueueConfig {
    QueueConfig {
        prefix: prefix.to_owned(),
        lease: Duration::from_millis(500),
        reap_interval: Duration::from_millis(100),
        drain_timeout: Duration::from_secs(2),
        ..QueueConfig::default()
    }
}

/// A namespace on the shared test Redis and a client using it as prefix.
pub async fn setup() -> (TestRedis, QueueClient) {
    let redis = tally_testkit::redis().await;
    let client = QueueClient::connect(&redis.url, fast_config(&redis.namespace))
        .await
        .expect("connect");
    (redis, client)
}

/// A worker running on its own task.
pub struct Running {
    stop: Option<oneshot::Sender<()>>,
    handle: JoinHandle<Result<WorkerReport, tally_queue::QueueError>>,
}

impl Running {
    /// Graceful shutdown; returns the worker's report.
    pub async fn stop(mut self) -> WorkerReport {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        (&mut self.handle).await.expect("worker task").expect("worker run")
    }

    /// Drops the worker without any cleanup, like `kill -9`: running
    /// attempts vanish, leases stay until they expire.
    pub async fn kill(self) {
        self.handle.abort();
        let _ = self.handle.await;
    }
}

pub fn spawn(worker: Worker) -> Running {
    let (tx, rx) = oneshot::channel::<()>();
    let handle = tokio::spawn(worker.run_until(async move {
        let _ = rx.await;
    }));
    Running { stop: Some(tx), handle }
}

pub use tally_testkit::eventually;

/// The shutdown of a child worker process: SIGTERM, or its parent (the test)
/// going away, which closes the child's stdin, so no child outlives a test.
pub async fn terminated_or_orphaned() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).expect("signal");
    let (tx, orphaned) = oneshot::channel::<()>();
    std::thread::spawn(move || {
        let mut buf = [0_u8; 64];
        while std::io::Read::read(&mut std::io::stdin(), &mut buf).is_ok_and(|n| n > 0) {}
        let _ = tx.send(());
    });
    tokio::select! {
        _ = term.recv() => {}
        _ = orphaned => {}
    }
}

/// Event hooks that count and keep every event.
#[derive(Debug, Default)]
pub struct Recorder {
    pub completed: AtomicUsize,
    pub failed: AtomicUsize,
    pub dead: AtomicUsize,
    pub recovered: AtomicUsize,
    pub events: std::sync::Mutex<Vec<(&'static str, JobEvent)>>,
}

impl Recorder {
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    fn record(&self, what: &'static str, counter: &AtomicUsize, event: &JobEvent) {
        counter.fetch_add(1, Ordering::SeqCst);
        self.events.lock().expect("lock").push((what, event.clone()));
    }

    pub fn count(&self, what: &str) -> usize {
        match what {
            "completed" => self.completed.load(Ordering::SeqCst),
            "failed" => self.failed.load(Ordering::SeqCst),
            "dead" => self.dead.load(Ordering::SeqCst),
            "recovered" => self.recovered.load(Ordering::SeqCst),
            _ => unreachable!(),
        }
    }

    pub fn of(&self, what: &str) -> Vec<JobEvent> {
        self.events
            .lock()
            .expect("lock")
            .iter()
            .filter(|(w, _)| *w == what)
            .map(|(_, e)| e.clone())
            .collect()
    }
}

/// Shares a recorder with a worker.
#[derive(Debug, Clone)]
pub struct Hooks(pub Arc<Recorder>);

impl JobEvents for Hooks {
    fn on_completed(&self, event: &JobEvent) {
        self.0.record("completed", &self.0.completed, event);
    }
    fn on_failed(&self, event: &JobEvent) {
        self.0.record("failed", &self.0.failed, event);
    }
    fn on_dead(&self, event: &JobEvent) {
        self.0.record("dead", &self.0.dead, event);
    }
    fn on_recovered(&self, event: &JobEvent) {
        self.0.record("recovered", &self.0.recovered, event);
    }
}

/// A Redis of the test's own (not the shared one), so that what it reports
/// about its clients concerns this test alone: a server, or with
/// `TALLY_TEST_REDIS=cluster` a cluster (see `tally_testkit::DedicatedRedis`).
pub async fn private_setup() -> (tally_testkit::DedicatedRedis, QueueClient) {
    let server = tally_testkit::DedicatedRedis::start(tally_testkit::RedisOptions::default())
        .await
        .expect("redis-server");
    let client = QueueClient::connect(&server.url(), fast_config("t"))
        .await
        .expect("connect");
    (server, client)
}

/// Waits until `blocked` clients of the Redis at `url` (summed over a
/// cluster's masters) are blocked in `BLPOP` (idle workers waiting on the
/// wake list): a wait on the real condition, where a sleep would only
/// guess. Use with [`private_setup`].
pub async fn wait_until_blocked(url: &str, blocked: usize) {
    let conns = tally_testkit::master_connections(url).await.expect("connect");
    eventually("workers blocked in BLPOP", Duration::from_secs(20), || {
        let conns = conns.clone();
        async move {
            let mut seen = 0;
            for mut conn in conns {
                let list: String = redis::cmd("CLIENT")
                    .arg("LIST")
                    .query_async(&mut conn)
                    .await
                    .expect("CLIENT LIST");
                seen += list
                    .lines()
                    .filter(|l| l.contains("cmd=blpop") && l.contains("flags=b"))
                    .count();
            }
            seen >= blocked
        }
    })
    .await;
}

/// A plain connection to the Redis at `url` (a cluster connection for a
/// cluster), for looking at keys directly.
pub async fn raw_connection(url: &str) -> tally_testkit::RedisConnection {
    tally_testkit::connect(url).await
}
