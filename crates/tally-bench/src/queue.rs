//! The queue benchmark: the phases of BullMQ's benchmark (`bench/bullmq/bench.mjs`
//! in this repository) run against tally's engine, printing the same JSON
//! shape with `"queue":"tally"`, so `bench/summarize.mjs` lines them up.
//!
//! Phases, each on a fresh queue (its own key prefix), producer and worker in
//! one process as in the peer:
//! - enqueue: batches of 1000, one at a time (awaited), 100 in flight;
//! - process: a pre-filled queue drained by a no-op worker, per concurrency;
//! - latency: an open-loop producer at a fixed rate, enqueue → handler start;
//! - delayed: 1000 jobs due together (burst) or one per ms (spread);
//! - retry: every job fails its first attempt (3 attempts, 100 ms backoff).
//!
//! Each phase reports its cost: CPU seconds of this process (from
//! `/proc/self/stat`) and of redis-server (`INFO`), and Redis commands per job
//! (`total_commands_processed`, which counts commands run inside scripts).

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tally_jobs::{Backoff, BackoffKind, Job, JobPolicy, Priority};
use tally_settings::{Env, SettingsError};
use tokio::sync::{Notify, oneshot};

use tally_queue::{
    EnqueueOptions, JobContext, JobError, JobEvent, JobEvents, Producer, QueueAdmin, QueueClient, QueueConfig,
    QueueError, Worker,
};

/// Milliseconds since the Unix epoch, with sub-millisecond precision (for
/// latency measurements).
fn now_ms_f64() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or(Duration::ZERO)
        .as_secs_f64()
        * 1000.0
}

/// Settings, named and defaulted as in `bench.mjs`.
#[derive(Debug, Clone)]
pub struct BenchSettings {
    /// Redis to measure (loopback only).
    pub redis_url: String,
    /// Phases to run: enqueue, process, latency, delayed, retry.
    pub phases: BTreeSet<String>,
    /// Jobs per enqueue / process run.
    pub n: usize,
    /// Concurrency values; delayed and retry use the first.
    pub concurrency: Vec<usize>,
    /// Approximate size of the JSON payload.
    pub payload_bytes: usize,
    /// Jobs per batch enqueue call.
    pub bulk_batch: usize,
    /// Outstanding single enqueues in the "parallel" variant.
    pub add_inflight: usize,
    /// Jobs/s offered by the open-loop producer.
    pub latency_rate: f64,
    /// Seconds the open-loop producer runs.
    pub latency_seconds: f64,
    /// Jobs in each delayed run.
    pub delayed_jobs: usize,
    /// Delay of each delayed job, ms.
    pub delay_ms: u64,
    /// Jobs/s of the spread delayed run.
    pub delayed_spread_rate: f64,
    /// Jobs in the retry run.
    pub retry_jobs: usize,
    /// Backoff base of the retry run, ms.
    pub retry_backoff_ms: u64,
    /// Untimed jobs first (connections, script cache); 0 = none.
    pub warmup_jobs: usize,
    /// A phase not done by then is reported with `complete: false`.
    pub phase_timeout: Duration,
    /// Partitions of each phase's queue (1: not partitioned).
    pub partitions: u32,
}

impl Default for BenchSettings {
    fn default() -> Self {
        Self {
            redis_url: "redis://127.0.0.1:6390".into(),
            phases: ["enqueue", "process", "latency", "delayed", "retry"]
                .into_iter()
                .map(String::from)
                .collect(),
            n: 20_000,
            concurrency: vec![5, 50],
            payload_bytes: 100,
            bulk_batch: 1000,
            add_inflight: 100,
            latency_rate: 500.0,
            latency_seconds: 5.0,
            delayed_jobs: 1000,
            delay_ms: 1000,
            delayed_spread_rate: 1000.0,
            retry_jobs: 1000,
            retry_backoff_ms: 100,
            warmup_jobs: 2000,
            phase_timeout: Duration::from_mins(1),
            partitions: 1,
        }
    }
}

impl BenchSettings {
    /// Defaults overridden by the environment variables of `bench.mjs`
    /// (`REDIS_URL`, `N`, `CONCURRENCY=5,50`, `PHASES=…`, …), read with
    /// `tally_settings::Env` like every other setting.
    pub fn from_env() -> Result<Self, SettingsError> {
        Self::read(&Env::process())
    }

    /// [`BenchSettings::from_env`] from `env`.
    pub fn read(env: &Env) -> Result<Self, SettingsError> {
        let d = Self::default();
        let count = |name: &'static str, default: usize| -> Result<usize, SettingsError> {
            env.parsed(name, default, "a whole number")
        };
        let phases = env.raw("PHASES").map_or(d.phases.clone(), |phases| {
            phases
                .split(',')
                .map(|p| p.trim().to_owned())
                .filter(|p| !p.is_empty())
                .collect()
        });
        let concurrency = match env.raw("CONCURRENCY") {
            None => d.concurrency.clone(),
            Some(c) => c
                .split(',')
                .map(|x| x.trim().parse::<usize>().ok().filter(|c| *c > 0))
                .collect::<Option<Vec<_>>>()
                .ok_or_else(|| SettingsError::Invalid {
                    name: "CONCURRENCY",
                    shown: format!("{c:?}"),
                    reason: "expected integers >= 1, comma-separated".into(),
                })?,
        };
        Ok(Self {
            redis_url: env.raw("REDIS_URL").unwrap_or(d.redis_url),
            phases,
            n: count("N", d.n)?,
            concurrency,
            payload_bytes: count("PAYLOAD_BYTES", d.payload_bytes)?,
            bulk_batch: count("BULK_BATCH", d.bulk_batch)?,
            add_inflight: count("ADD_INFLIGHT", d.add_inflight)?,
            latency_rate: env.parsed("LATENCY_RATE", d.latency_rate, "a number")?,
            latency_seconds: env.parsed("LATENCY_SECONDS", d.latency_seconds, "a number")?,
            delayed_jobs: count("DELAYED_JOBS", d.delayed_jobs)?,
            delay_ms: env.parsed("DELAY_MS", d.delay_ms, "a whole number")?,
            delayed_spread_rate: env.parsed("DELAYED_SPREAD_RATE", d.delayed_spread_rate, "a number")?,
            retry_jobs: count("RETRY_JOBS", d.retry_jobs)?,
            retry_backoff_ms: env.parsed("RETRY_BACKOFF_MS", d.retry_backoff_ms, "a whole number")?,
            warmup_jobs: count("WARMUP_JOBS", d.warmup_jobs)?,
            phase_timeout: Duration::from_secs(env.parsed(
                "PHASE_TIMEOUT_S",
                d.phase_timeout.as_secs(),
                "whole seconds",
            )?),
            partitions: match env.parsed("PARTITIONS", d.partitions, "a whole number from 1 to 64")? {
                p @ 1..=tally_queue::MAX_PARTITIONS => p,
                p => {
                    return Err(SettingsError::Invalid {
                        name: "PARTITIONS",
                        shown: p.to_string(),
                        reason: "expected a whole number from 1 to 64".into(),
                    });
                }
            },
        })
    }

    fn params(&self) -> Value {
        json!({
            "REDIS_URL": self.redis_url,
            "PHASES": self.phases.iter().collect::<Vec<_>>(),
            "N": self.n,
            "CONCURRENCY": self.concurrency,
            "PAYLOAD_BYTES": self.payload_bytes,
            "BULK_BATCH": self.bulk_batch,
            "ADD_INFLIGHT": self.add_inflight,
            "LATENCY_RATE": self.latency_rate,
            "LATENCY_SECONDS": self.latency_seconds,
            "DELAYED_JOBS": self.delayed_jobs,
            "DELAY_MS": self.delay_ms,
            "DELAYED_SPREAD_RATE": self.delayed_spread_rate,
            "RETRY_JOBS": self.retry_jobs,
            "RETRY_BACKOFF_MS": self.retry_backoff_ms,
            "WARMUP_JOBS": self.warmup_jobs,
            "PHASE_TIMEOUT_S": self.phase_timeout.as_secs(),
            "PARTITIONS": self.partitions,
        })
    }
}

/// The benchmark's job: the peer's payload
/// (`{"matchId","priority","enqueuedAt","pad"}`) plus the retry knobs.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BenchJob {
    /// Sequence number.
    pub match_id: u64,
    /// Constant 1, as in the peer's payload.
    pub priority: u32,
    /// Client wall clock at enqueue, ms since the epoch (fractional).
    pub enqueued_at: f64,
    /// Padding up to the payload size.
    pub pad: String,
    /// Retry phase: attempts 3, exponential backoff from this many ms.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_backoff_ms: Option<u64>,
}

impl Job for BenchJob {
    const KIND: &'static str = "bench_job";
    const QUEUE: &'static str = "bench";

    fn policy(&self) -> JobPolicy {
        match self.retry_backoff_ms {
            Some(base_ms) => JobPolicy {
                max_attempts: 3,
                backoff: Backoff {
                    kind: BackoffKind::Exponential,
                    base_ms,
                    max_ms: 600_000,
                    jitter: false,
                },
                timeout_ms: 120_000,
                priority: Priority::Normal,
            },
            None => JobPolicy::DEFAULT,
        }
    }

    fn payload_schema() -> Value {
        json!({ "type": "object" })
    }

    fn example() -> Self {
        BenchJob {
            match_id: 1,
            priority: 1,
            enqueued_at: 0.0,
            pad: String::new(),
            retry_backoff_ms: None,
        }
    }
}

/// Counts completions and failures; wakes the phase when the target is hit.
#[derive(Default)]
struct Counter {
    completed: AtomicUsize,
    failed: AtomicUsize,
    target: AtomicUsize,
    done: Notify,
}

impl Counter {
    fn with_target(target: usize) -> Arc<Self> {
        let c = Arc::new(Self::default());
        c.target.store(target, Ordering::SeqCst);
        c
    }

    async fn wait(&self, limit: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let notified = self.done.notified();
            if self.completed.load(Ordering::SeqCst) >= self.target.load(Ordering::SeqCst) {
                return true;
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return false;
            }
        }
    }
}

struct CounterHooks(Arc<Counter>);

impl JobEvents for CounterHooks {
    fn on_completed(&self, _event: &JobEvent) {
        let n = self.0.completed.fetch_add(1, Ordering::SeqCst) + 1;
        if n >= self.0.target.load(Ordering::SeqCst) {
            self.0.done.notify_waiters();
        }
    }

    fn on_failed(&self, _event: &JobEvent) {
        self.0.failed.fetch_add(1, Ordering::SeqCst);
    }
}

fn round(x: f64, digits: i32) -> f64 {
    let f = 10_f64.powi(digits);
    (x * f).round() / f
}

fn rate(jobs: usize, seconds: f64) -> f64 {
    round(jobs as f64 / seconds, 1)
}

/// Nearest-rank percentiles, as in `bench.mjs`.
fn percentiles(samples: &[f64]) -> Value {
    if samples.is_empty() {
        return json!({ "count": 0 });
    }
    let mut s = samples.to_vec();
    s.sort_by(f64::total_cmp);
    let at = |p: f64| s[((p * s.len() as f64).ceil() as usize).clamp(1, s.len()) - 1];
    let mean = s.iter().sum::<f64>() / s.len() as f64;
    json!({
        "count": s.len(),
        "minMs": round(s[0], 3),
        "p50Ms": round(at(0.5), 3),
        "p95Ms": round(at(0.95), 3),
        "p99Ms": round(at(0.99), 3),
        "maxMs": round(s[s.len() - 1], 3),
        "meanMs": round(mean, 3),
    })
}

/// CPU seconds (user + system) of this process so far.
fn process_cpu_seconds() -> f64 {
    // Fields 14 and 15 of /proc/self/stat, after the parenthesised command
    // name, in clock ticks (100 per second on Linux).
    let Ok(stat) = std::fs::read_to_string("/proc/self/stat") else {
        return 0.0;
    };
    let Some(rest) = stat.rsplit_once(')').map(|(_, r)| r) else {
        return 0.0;
    };
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let tick = |i: usize| fields.get(i).and_then(|f| f.parse::<f64>().ok()).unwrap_or(0.0);
    (tick(11) + tick(12)) / 100.0
}

fn loadavg() -> Value {
    let text = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let v: Vec<f64> = text.split_whitespace().take(3).filter_map(|x| x.parse().ok()).collect();
    json!(v)
}

/// RFC 3339 UTC timestamp without a date library.
fn rfc3339_now() -> String {
    let d = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or(Duration::ZERO);
    let secs = d.as_secs() as i64;
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Civil-from-days (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        d.subsec_millis()
    )
}

struct Bench {
    settings: BenchSettings,
    /// One connection per Redis server (each node of a cluster), by address.
    admin_conns: Vec<(String, redis::aio::MultiplexedConnection)>,
    pad: String,
    seq: AtomicU64,
}

/// One phase's queue: its own prefix, client, producer.
struct PhaseQueue {
    client: QueueClient,
    producer: Producer,
}

impl Bench {
    /// CPU seconds used and commands processed so far, per server.
    async fn server_stats(&self) -> Result<Vec<(f64, f64)>, QueueError> {
        let mut out = Vec::with_capacity(self.admin_conns.len());
        for (_, conn) in &self.admin_conns {
            let mut conn = conn.clone();
            let info: String = redis::cmd("INFO").query_async(&mut conn).await?;
            let field = |name: &str| {
                info.lines()
                    .find_map(|l| l.strip_prefix(name).and_then(|r| r.strip_prefix(':')))
                    .and_then(|v| v.trim().parse::<f64>().ok())
                    .unwrap_or(0.0)
            };
            out.push((
                field("used_cpu_user") + field("used_cpu_sys"),
                field("total_commands_processed"),
            ));
        }
        Ok(out)
    }

    /// Runs `block`, adding the `cost` object to its result (on a cluster
    /// with each node's share of the Redis CPU).
    async fn cost_of<F>(&self, jobs: usize, block: F) -> Result<Value, QueueError>
    where
        F: Future<Output = Result<Value, QueueError>>,
    {
        let before = self.server_stats().await?;
        let client0 = process_cpu_seconds();
        let mut result = block.await?;
        let client_cpu = process_cpu_seconds() - client0;
        let after = self.server_stats().await?;
        let per_node: Vec<(f64, f64)> = before
            .iter()
            .zip(&after)
            .map(|((cpu0, cmd0), (cpu1, cmd1))| (cpu1 - cpu0, cmd1 - cmd0))
            .collect();
        let redis_cpu: f64 = per_node.iter().map(|(cpu, _)| cpu).sum();
        let commands: f64 = per_node.iter().map(|(_, cmds)| cmds).sum();
        let jobs = jobs.max(1) as f64;
        result["cost"] = json!({
            "clientCpuS": round(client_cpu, 3),
            "redisCpuS": round(redis_cpu, 3),
            "clientCpuUsPerJob": round(client_cpu * 1e6 / jobs, 1),
            "redisCpuUsPerJob": round(redis_cpu * 1e6 / jobs, 1),
            "redisCommandsPerJob": round(commands / jobs, 2),
        });
        if per_node.len() > 1 {
            result["cost"]["byNode"] = per_node
                .iter()
                .zip(&self.admin_conns)
                .map(|((cpu, cmds), (addr, _))| {
                    json!({
                        "node": addr,
                        "redisCpuS": round(*cpu, 3),
                        "share": round(if redis_cpu > 0.0 { cpu / redis_cpu } else { 0.0 }, 3),
                        "commands": cmds,
                    })
                })
                .collect();
        }
        Ok(result)
    }

    fn payload(&self, i: usize) -> BenchJob {
        BenchJob {
            match_id: i as u64,
            priority: 1,
            enqueued_at: now_ms_f64(),
            pad: self.pad.clone(),
            retry_backoff_ms: None,
        }
    }

    async fn open_queue(&self, tag: &str) -> Result<PhaseQueue, QueueError> {
        let seq = self.seq.fetch_add(1, Ordering::SeqCst) + 1;
        let prefix = format!("tallybench-{tag}-{}-{seq}", std::process::id());
        let client = QueueClient::connect(&self.settings.redis_url, QueueConfig::with_prefix(prefix)).await?;
        if self.settings.partitions > 1 {
            QueueAdmin::new(client.clone())
                .set_partitions(BenchJob::QUEUE, self.settings.partitions)
                .await?;
        }
        Ok(PhaseQueue {
            producer: Producer::new(client.clone()),
            client,
        })
    }

    /// Starts a worker with `handler`; returns a stopper.
    fn start_worker<F, Fut>(
        q: &PhaseQueue,
        concurrency: usize,
        counter: &Arc<Counter>,
        handler: F,
    ) -> Result<(oneshot::Sender<()>, tokio::task::JoinHandle<()>), QueueError>
    where
        F: Fn(BenchJob, JobContext) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), JobError>> + Send + 'static,
    {
        let worker = Worker::builder(q.client.clone(), BenchJob::QUEUE)
            .concurrency(concurrency)
            .events(CounterHooks(counter.clone()))
            .handle(handler)
            .build()?;
        let (tx, rx) = oneshot::channel::<()>();
        let handle = tokio::spawn(async move {
            if let Err(err) = worker
                .run_until(async move {
                    let _ = rx.await;
                })
                .await
            {
                eprintln!("[bench] worker: {err}");
            }
        });
        Ok((tx, handle))
    }

    /// Stops the worker, reports what was left behind, deletes the queue.
    async fn dispose(
        q: &PhaseQueue,
        worker: Option<(oneshot::Sender<()>, tokio::task::JoinHandle<()>)>,
    ) -> Result<Value, QueueError> {
        if let Some((stop, handle)) = worker {
            let _ = stop.send(());
            let _ = handle.await;
        }
        let admin = QueueAdmin::new(q.client.clone());
        let stats = admin.stats(BenchJob::QUEUE).await?;
        admin.obliterate(BenchJob::QUEUE).await?;
        let mut left = serde_json::Map::new();
        for (name, n) in [
            ("wait", stats.ready),
            ("delayed", stats.scheduled),
            ("active", stats.in_flight),
            ("failed", stats.dead),
        ] {
            if n > 0 {
                left.insert(name.into(), json!(n));
            }
        }
        Ok(Value::Object(left))
    }

    async fn add_bulk_all(
        &self,
        q: &PhaseQueue,
        count: usize,
        options: &EnqueueOptions,
        make: impl Fn(usize) -> BenchJob,
    ) -> Result<(), QueueError> {
        let mut i = 0;
        while i < count {
            let end = (i + self.settings.bulk_batch).min(count);
            let batch: Vec<BenchJob> = (i..end).map(&make).collect();
            q.producer.enqueue_batch_with(&batch, options).await?;
            i = end;
        }
        Ok(())
    }

    /// Open-loop producer: one enqueue every 1/rate s on an absolute
    /// schedule, never waiting for earlier ones.
    async fn produce_at_rate(
        &self,
        q: &PhaseQueue,
        total: usize,
        rate_per_s: f64,
        options: EnqueueOptions,
    ) -> Result<Value, QueueError> {
        let interval = Duration::from_secs_f64(1.0 / rate_per_s);
        let t0 = tokio::time::Instant::now();
        let mut adds = Vec::with_capacity(total);
        for i in 0..total {
            let at = t0 + interval.mul_f64(i as f64);
            if at > tokio::time::Instant::now() {
                tokio::time::sleep_until(at).await;
            } else {
                tokio::task::yield_now().await;
            }
            let producer = q.producer.clone();
            let job = self.payload(i);
            let options = options.clone();
            adds.push(tokio::spawn(async move { producer.enqueue_with(&job, options).await }));
        }
        let seconds = t0.elapsed().as_secs_f64();
        for add in adds {
            add.await.map_err(|e| QueueError::Protocol(e.to_string()))??;
        }
        Ok(json!({ "offeredRate": rate_per_s, "achievedRate": round(total as f64 / seconds, 1) }))
    }

    async fn warm_up(&self) -> Result<(), QueueError> {
        let jobs = self.settings.warmup_jobs;
        eprintln!("[bench] warm-up: {jobs} jobs");
        let q = self.open_queue("warmup").await?;
        let bulk = jobs / 2;
        self.add_bulk_all(&q, bulk, &EnqueueOptions::default(), |i| self.payload(i))
            .await?;
        for i in bulk..jobs {
            q.producer.enqueue(&self.payload(i)).await?;
        }
        let counter = Counter::with_target(jobs);
        let worker = Self::start_worker(&q, self.settings.concurrency[0], &counter, |_job, _ctx| async {
            Ok(())
        })?;
        counter.wait(self.settings.phase_timeout).await;
        Self::dispose(&q, Some(worker)).await?;
        Ok(())
    }

    async fn phase_enqueue(&self) -> Result<Value, QueueError> {
        let n = self.settings.n;
        let mut out = serde_json::Map::new();
        for variant in ["addBulk", "addSerial", "addParallel"] {
            eprintln!("[bench] enqueue {variant}: {n} jobs");
            let q = self.open_queue(&format!("enqueue-{variant}")).await?;
            let result = self
                .cost_of(n, async {
                    let t0 = Instant::now();
                    let extra = match variant {
                        "addBulk" => {
                            self.add_bulk_all(&q, n, &EnqueueOptions::default(), |i| self.payload(i))
                                .await?;
                            json!({ "batch": self.settings.bulk_batch })
                        }
                        "addSerial" => {
                            let mut per_call = Vec::with_capacity(n);
                            for i in 0..n {
                                let t = Instant::now();
                                q.producer.enqueue(&self.payload(i)).await?;
                                per_call.push(t.elapsed().as_secs_f64() * 1000.0);
                            }
                            json!({ "inflight": 1, "perCall": percentiles(&per_call) })
                        }
                        _ => {
                            let next = Arc::new(AtomicUsize::new(0));
                            let lanes = (0..self.settings.add_inflight).map(|_| {
                                let next = next.clone();
                                let producer = q.producer.clone();
                                let pad = self.pad.clone();
                                async move {
                                    loop {
                                        let i = next.fetch_add(1, Ordering::SeqCst);
                                        if i >= n {
                                            return Ok::<(), QueueError>(());
                                        }
                                        let job = BenchJob {
                                            match_id: i as u64,
                                            priority: 1,
                                            enqueued_at: now_ms_f64(),
                                            pad: pad.clone(),
                                            retry_backoff_ms: None,
                                        };
                                        producer.enqueue(&job).await?;
                                    }
                                }
                            });
                            futures::future::try_join_all(lanes).await?;
                            json!({ "inflight": self.settings.add_inflight })
                        }
                    };
                    let seconds = t0.elapsed().as_secs_f64();
                    let mut r = json!({ "jobs": n, "seconds": round(seconds, 3), "jobsPerSec": rate(n, seconds) });
                    if let (Value::Object(r), Value::Object(extra)) = (&mut r, extra) {
                        r.extend(extra);
                    }
                    Ok(r)
                })
                .await?;
            let waiting = QueueAdmin::new(q.client.clone()).stats(BenchJob::QUEUE).await?.ready;
            if waiting != n as u64 {
                eprintln!("[bench] enqueue {variant}: expected {n} waiting, found {waiting}");
            }
            Self::dispose(&q, None).await?;
            out.insert(variant.into(), result);
        }
        Ok(Value::Object(out))
    }

    async fn phase_process(&self, concurrency: usize) -> Result<Value, QueueError> {
        let n = self.settings.n;
        eprintln!("[bench] process c={concurrency}: pre-filling {n} jobs");
        let q = self.open_queue(&format!("process-c{concurrency}")).await?;
        self.add_bulk_all(&q, n, &EnqueueOptions::default(), |i| self.payload(i))
            .await?;
        let counter = Counter::with_target(n);
        eprintln!("[bench] process c={concurrency}: worker running");
        let mut worker = None;
        let mut result = self
            .cost_of(n, async {
                let t0 = Instant::now();
                worker = Some(Self::start_worker(&q, concurrency, &counter, |_job, _ctx| async { Ok(()) })?);
                let complete = counter.wait(self.settings.phase_timeout).await;
                let seconds = t0.elapsed().as_secs_f64();
                let done = counter.completed.load(Ordering::SeqCst);
                Ok(json!({ "concurrency": concurrency, "jobs": done, "complete": complete, "seconds": round(seconds, 3), "jobsPerSec": rate(done, seconds) }))
            })
            .await?;
        result["leftOver"] = Self::dispose(&q, worker).await?;
        Ok(result)
    }

    async fn phase_latency(&self, concurrency: usize) -> Result<Value, QueueError> {
        let total = (self.settings.latency_rate * self.settings.latency_seconds).round() as usize;
        eprintln!(
            "[bench] latency c={concurrency}: {total} jobs at {}/s",
            self.settings.latency_rate
        );
        let q = self.open_queue(&format!("latency-c{concurrency}")).await?;
        let latencies = Arc::new(Mutex::new(Vec::with_capacity(total)));
        let counter = Counter::with_target(total);
        let samples = latencies.clone();
        let worker = Self::start_worker(&q, concurrency, &counter, move |job, _ctx| {
            samples
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .push(now_ms_f64() - job.enqueued_at);
            async { Ok(()) }
        })?;
        tokio::time::sleep(Duration::from_millis(200)).await;
        let mut result = self
            .cost_of(total, async {
                let produced = self
                    .produce_at_rate(&q, total, self.settings.latency_rate, EnqueueOptions::default())
                    .await?;
                let complete = counter.wait(self.settings.phase_timeout).await;
                let lat = percentiles(&latencies.lock().unwrap_or_else(PoisonError::into_inner));
                let mut r = json!({ "concurrency": concurrency });
                r["offeredRate"] = produced["offeredRate"].clone();
                r["achievedRate"] = produced["achievedRate"].clone();
                r["complete"] = json!(complete);
                r["latency"] = lat;
                Ok(r)
            })
            .await?;
        result["leftOver"] = Self::dispose(&q, Some(worker)).await?;
        Ok(result)
    }

    async fn phase_delayed(&self, concurrency: usize, mode: &str) -> Result<Value, QueueError> {
        let total = self.settings.delayed_jobs;
        let delay = self.settings.delay_ms;
        eprintln!("[bench] delayed {mode} c={concurrency}: {total} jobs, delay {delay} ms");
        let q = self.open_queue(&format!("delayed-{mode}")).await?;
        let lags = Arc::new(Mutex::new(Vec::with_capacity(total)));
        let counter = Counter::with_target(total);
        let samples = lags.clone();
        let worker = Self::start_worker(&q, concurrency, &counter, move |job, _ctx| {
            samples
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .push(now_ms_f64() - (job.enqueued_at + delay as f64));
            async { Ok(()) }
        })?;
        tokio::time::sleep(Duration::from_millis(200)).await;
        let options = EnqueueOptions::delayed(Duration::from_millis(delay));
        let mut result = self
            .cost_of(total, async {
                let mut r = json!({ "mode": mode, "concurrency": concurrency, "jobs": total, "delayMs": delay });
                if mode == "burst" {
                    self.add_bulk_all(&q, total, &options, |i| self.payload(i)).await?;
                } else {
                    let produced = self
                        .produce_at_rate(&q, total, self.settings.delayed_spread_rate, options.clone())
                        .await?;
                    r["offeredRate"] = produced["offeredRate"].clone();
                    r["achievedRate"] = produced["achievedRate"].clone();
                }
                let complete = counter
                    .wait(self.settings.phase_timeout + Duration::from_millis(delay))
                    .await;
                r["complete"] = json!(complete);
                r["lag"] = percentiles(&lags.lock().unwrap_or_else(PoisonError::into_inner));
                Ok(r)
            })
            .await?;
        result["leftOver"] = Self::dispose(&q, Some(worker)).await?;
        Ok(result)
    }

    async fn phase_retry(&self, concurrency: usize) -> Result<Value, QueueError> {
        #[derive(Default)]
        struct Samples {
            failed_at: HashMap<String, f64>,
            retry_lags: Vec<f64>,
            end_to_end: Vec<f64>,
            attempts: usize,
        }
        let total = self.settings.retry_jobs;
        let backoff = self.settings.retry_backoff_ms;
        eprintln!("[bench] retry c={concurrency}: {total} jobs, backoff exponential {backoff} ms");
        let q = self.open_queue("retry").await?;
        let samples = Arc::new(Mutex::new(Samples::default()));
        let counter = Counter::with_target(total);
        let s = samples.clone();
        let worker = Self::start_worker(&q, concurrency, &counter, move |job, ctx| {
            let t = now_ms_f64();
            let mut s = s.lock().unwrap_or_else(PoisonError::into_inner);
            s.attempts += 1;
            let result = if ctx.attempt == 1 {
                s.failed_at.insert(ctx.id, t);
                Err(JobError::Retry("planned failure on first attempt".into()))
            } else {
                let failed_at = s.failed_at.get(&ctx.id).copied().unwrap_or(t);
                s.retry_lags.push(t - (failed_at + backoff as f64));
                s.end_to_end.push(t - job.enqueued_at);
                Ok(())
            };
            async move { result }
        })?;
        tokio::time::sleep(Duration::from_millis(200)).await;
        let mut result = self
            .cost_of(total, async {
                let t0 = Instant::now();
                self.add_bulk_all(&q, total, &EnqueueOptions::default(), |i| BenchJob {
                    retry_backoff_ms: Some(backoff),
                    ..self.payload(i)
                })
                .await?;
                let complete = counter.wait(self.settings.phase_timeout).await;
                let seconds = t0.elapsed().as_secs_f64();
                let s = samples.lock().unwrap_or_else(PoisonError::into_inner);
                Ok(json!({
                    "concurrency": concurrency,
                    "jobs": total,
                    "backoffMs": backoff,
                    "complete": complete,
                    "seconds": round(seconds, 3),
                    "jobsPerSec": rate(counter.completed.load(Ordering::SeqCst), seconds),
                    "attempts": s.attempts,
                    "failedEvents": counter.failed.load(Ordering::SeqCst),
                    "retryStartLag": percentiles(&s.retry_lags),
                    "enqueueToSuccess": percentiles(&s.end_to_end),
                }))
            })
            .await?;
        result["leftOver"] = Self::dispose(&q, Some(worker)).await?;
        Ok(result)
    }
}

/// Runs the phases in `settings` and returns the result object (the JSON
/// line `bench.mjs` prints, with `"queue":"tally"`).
pub async fn run(settings: BenchSettings) -> Result<Value, QueueError> {
    let nodes = tally_queue::cluster_seed_urls(&settings.redis_url).unwrap_or_else(|| vec![settings.redis_url.clone()]);
    let mut admin_conns = Vec::with_capacity(nodes.len());
    for node in &nodes {
        let host = node
            .split("://")
            .nth(1)
            .unwrap_or("")
            .rsplit('@')
            .next()
            .unwrap_or("")
            .split(['/', ':'])
            .next()
            .unwrap_or("");
        if !(host == "localhost" || host.starts_with("127.") || host == "[::1]") {
            return Err(QueueError::Config(format!(
                "refusing non-loopback REDIS_URL {}",
                settings.redis_url
            )));
        }
        let client = redis::Client::open(node.as_str()).map_err(|e| QueueError::Config(e.to_string()))?;
        let conn = client.get_multiplexed_async_connection().await?;
        let addr = node
            .split("://")
            .nth(1)
            .unwrap_or(node)
            .trim_end_matches('/')
            .to_owned();
        admin_conns.push((addr, conn));
    }
    let mut admin_conn = admin_conns[0].1.clone();
    let info: String = redis::cmd("INFO").arg("server").query_async(&mut admin_conn).await?;
    let redis_version = info
        .lines()
        .find_map(|l| l.strip_prefix("redis_version:"))
        .unwrap_or("")
        .trim()
        .to_owned();
    let hz: Vec<String> = redis::cmd("CONFIG")
        .arg("GET")
        .arg("hz")
        .query_async(&mut admin_conn)
        .await?;
    let redis_hz = hz.get(1).and_then(|h| h.parse::<u64>().ok());
    let sample = serde_json::to_string(&BenchJob {
        match_id: 123_456,
        priority: 1,
        enqueued_at: now_ms_f64(),
        pad: String::new(),
        retry_backoff_ms: None,
    })
    .map_err(|e| QueueError::Protocol(e.to_string()))?;
    let pad = "x".repeat(settings.payload_bytes.saturating_sub(sample.len()));
    let cpus = std::thread::available_parallelism().map_or(1, std::num::NonZero::get);
    let mut results = json!({
        "queue": "tally",
        "version": env!("CARGO_PKG_VERSION"),
        "runtime": "rust/tokio",
        "redis": redis_version,
        "redisHz": redis_hz,
        "startedAt": rfc3339_now(),
        "host": { "cpus": cpus, "loadavgBefore": loadavg() },
        "params": settings.params(),
        "redisNodes": nodes.len(),
    });
    let bench = Bench {
        settings,
        admin_conns,
        pad,
        seq: AtomicU64::new(0),
    };
    let t0 = Instant::now();
    let c0 = bench.settings.concurrency.first().copied().unwrap_or(5);
    let phases = bench.settings.phases.clone();
    if bench.settings.warmup_jobs > 0 {
        bench.warm_up().await?;
    }
    if phases.contains("enqueue") {
        results["enqueue"] = bench.phase_enqueue().await?;
    }
    if phases.contains("process") {
        let mut out = Vec::new();
        for c in bench.settings.concurrency.clone() {
            out.push(bench.phase_process(c).await?);
        }
        results["process"] = json!(out);
    }
    if phases.contains("latency") {
        let mut out = Vec::new();
        for c in bench.settings.concurrency.clone() {
            out.push(bench.phase_latency(c).await?);
        }
        results["latency"] = json!(out);
    }
    if phases.contains("delayed") {
        results["delayed"] = json!([
            bench.phase_delayed(c0, "burst").await?,
            bench.phase_delayed(c0, "spread").await?
        ]);
    }
    if phases.contains("retry") {
        results["retry"] = bench.phase_retry(c0).await?;
    }
    results["host"]["loadavgAfter"] = loadavg();
    results["totalSeconds"] = json!(round(t0.elapsed().as_secs_f64(), 1));
    Ok(results)
}

/// A human summary of a result object, like the peer's.
pub fn summary(r: &Value) -> String {
    let mut lines = Vec::new();
    let lat = |p: &Value| {
        if p["count"].as_u64().unwrap_or(0) == 0 {
            "n/a".to_owned()
        } else {
            format!(
                "p50 {}  p95 {}  p99 {}  max {} ms",
                p["p50Ms"], p["p95Ms"], p["p99Ms"], p["maxMs"]
            )
        }
    };
    let mark = |x: &Value| {
        if x["complete"] == json!(false) {
            "  [INCOMPLETE]"
        } else {
            ""
        }
    };
    let mut row = |label: String, value: String| lines.push(format!("  {label:<40} {value}"));
    let mut head = vec![format!(
        "tally {} | redis {} (hz {}) | {} cpus | N={}",
        r["version"], r["redis"], r["redisHz"], r["host"]["cpus"], r["params"]["N"]
    )];
    if let Some(e) = r.get("enqueue") {
        row(
            "enqueue addBulk (jobs/s)".into(),
            e["addBulk"]["jobsPerSec"].to_string(),
        );
        row(
            "enqueue one at a time".into(),
            format!(
                "{}   (per call {})",
                e["addSerial"]["jobsPerSec"],
                lat(&e["addSerial"]["perCall"])
            ),
        );
        row(
            "enqueue 100 in flight".into(),
            e["addParallel"]["jobsPerSec"].to_string(),
        );
    }
    for p in r.get("process").and_then(Value::as_array).into_iter().flatten() {
        row(
            format!("process c={} (jobs/s)", p["concurrency"]),
            format!(
                "{}   (redis {} us/job, {} cmds/job, client {} us/job){}",
                p["jobsPerSec"],
                p["cost"]["redisCpuUsPerJob"],
                p["cost"]["redisCommandsPerJob"],
                p["cost"]["clientCpuUsPerJob"],
                mark(p)
            ),
        );
    }
    for l in r.get("latency").and_then(Value::as_array).into_iter().flatten() {
        row(
            format!("latency c={} (achieved {}/s)", l["concurrency"], l["achievedRate"]),
            lat(&l["latency"]) + mark(l),
        );
    }
    for d in r.get("delayed").and_then(Value::as_array).into_iter().flatten() {
        row(
            format!("delayed {} lag", d["mode"].as_str().unwrap_or("")),
            lat(&d["lag"]) + mark(d),
        );
    }
    if let Some(t) = r.get("retry") {
        row(
            "retry: all complete after".into(),
            format!(
                "{} s ({} attempts, {} failures){}",
                t["seconds"],
                t["attempts"],
                t["failedEvents"],
                mark(t)
            ),
        );
        row("retry start lag behind fail+backoff".into(), lat(&t["retryStartLag"]));
    }
    head.extend(lines);
    head.join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_read_bench_mjs_names_and_name_a_bad_one() {
        let s = BenchSettings::read(&Env::from_pairs([
            ("N", "500"),
            ("CONCURRENCY", "2, 8"),
            ("PHASES", "process,latency"),
            ("LATENCY_RATE", "250.5"),
        ]))
        .expect("valid");
        assert_eq!(
            (s.n, s.concurrency.as_slice(), s.latency_rate),
            (500, &[2, 8][..], 250.5)
        );
        assert_eq!(
            s.phases.iter().map(String::as_str).collect::<Vec<_>>(),
            ["latency", "process"]
        );
        assert_eq!(
            BenchSettings::read(&Env::from_pairs([])).expect("defaults").n,
            BenchSettings::default().n
        );
        for (name, value) in [("N", "many"), ("CONCURRENCY", "5,0"), ("DELAY_MS", "-1")] {
            let err = BenchSettings::read(&Env::from_pairs([(name, value)])).expect_err(value);
            assert!(err.to_string().contains(name), "{err}");
        }
    }
}
