//! The bootstrap both workers share: read [`WorkerSettings`], connect Redis
//! and Postgres (lazily, so a dependency that is down at start delays work
//! instead of crashing the pod), serve `/healthz` `/readyz` `/metrics` on
//! `HEALTH_ADDR`, run the queue worker and the outbox relay
//! ([`crate::outbox`], unless `OUTBOX_RELAY=off`) until the shutdown future
//! resolves, then drain.
//!
//! A worker binary only names its queue and registers its handlers.

pub mod outbox;

use std::{future::Future, net::SocketAddr, time::Duration};

use futures::FutureExt as _;
use tally_queue::{Producer, QueueAdmin, QueueClient, QueueConfig, Worker, WorkerBuilder};
use tally_store::Store;

use crate::outbox::{Relay, RelaySettings};
use tally_service::{Env, HealthServer, REDIS_SCHEMES, ReadinessCheck, SettingsError, observe, redact_url};

/// Settings of a worker process, from the environment.
#[derive(Debug, Clone)]
pub struct WorkerSettings {
    /// `REDIS_URL` (default `redis://127.0.0.1:6379`).
    pub redis_url: String,
    /// `DATABASE_URL` (required).
    pub database_url: String,
    /// `WORKER_CONCURRENCY`: handlers running at once (default 5).
    pub concurrency: usize,
    /// `HEALTH_ADDR`: probes and metrics (default `0.0.0.0:9090`).
    pub health_addr: SocketAddr,
    /// `SHUTDOWN_TIMEOUT_SECS`: drain deadline after SIGTERM (default 25,
    /// below Kubernetes' default 30 s grace period).
    pub drain_timeout: Duration,
    /// `LEASE_SECS`: how long a claim survives without a heartbeat (default 15).
    pub lease: Duration,
    /// `DATABASE_POOL_SIZE`: Postgres connections (default 8).
    pub db_pool_size: usize,
    /// `TALLY_QUEUE_PREFIX`: key prefix of every queue key (default `tally`).
    pub queue_prefix: String,
    /// `OUTBOX_RELAY`, `OUTBOX_BATCH`, `OUTBOX_POLL_SECS`: the outbox relay
    /// this process runs (on by default).
    pub relay: RelaySettings,
    /// `QUEUE_PARTITIONS`: the least partition count of this worker's queue
    /// (1 to 64; unset: whatever Redis holds). A lower count in Redis is
    /// raised at start; a higher one is kept (partitions are never removed).
    pub partitions: Option<u32>,
}

impl WorkerSettings {
    /// Reads and validates the settings; the error names the variable.
    pub fn from_env(env: &Env) -> Result<Self, SettingsError> {
        Ok(WorkerSettings {
            redis_url: env.url("REDIS_URL", Some("redis://127.0.0.1:6379"), REDIS_SCHEMES)?,
            database_url: env.url("DATABASE_URL", None, &["postgres://", "postgresql://"])?,
            concurrency: env.number("WORKER_CONCURRENCY", 5, 1, 1000)? as usize,
            health_addr: env.socket_addr("HEALTH_ADDR", "0.0.0.0:9090")?,
            drain_timeout: env.seconds("SHUTDOWN_TIMEOUT_SECS", 25, 0, 3600)?,
            lease: env.seconds("LEASE_SECS", 15, 2, 3600)?,
            db_pool_size: env.number("DATABASE_POOL_SIZE", 8, 1, 500)? as usize,
            queue_prefix: env.raw("TALLY_QUEUE_PREFIX").unwrap_or_else(|| "tally".into()),
            relay: RelaySettings::from_env(env)?,
            partitions: match env.raw("QUEUE_PARTITIONS") {
                None => None,
                Some(_) => Some(env.number("QUEUE_PARTITIONS", 1, 1, u64::from(tally_queue::MAX_PARTITIONS))? as u32),
            },
        })
    }

    /// One line describing the configuration, safe to log.
    pub fn summary(&self) -> String {
        let relay = if self.relay.enabled {
            format!("on (batch {}, poll {}s)", self.relay.batch, self.relay.poll.as_secs())
        } else {
            "off".to_owned()
        };
        format!(
            "redis={} database={} concurrency={} health={} lease={}s drain={}s prefix={} outbox_relay={relay}",
            redact_url(&self.redis_url),
            redact_url(&self.database_url),
            self.concurrency,
            self.health_addr,
            self.lease.as_secs(),
            self.drain_timeout.as_secs(),
            self.queue_prefix
        )
    }

    /// The queue engine settings these imply.
    pub fn queue_config(&self) -> QueueConfig {
        QueueConfig {
            lease: self.lease,
            drain_timeout: self.drain_timeout,
            ..QueueConfig::with_prefix(&self.queue_prefix)
        }
    }
}

/// What handlers get to work with.
#[derive(Debug, Clone)]
pub struct WorkerDeps {
    /// The database.
    pub store: Store,
    /// For enqueueing the next job of the chain.
    pub producer: Producer,
}

/// Runs a worker on `queue` until `shutdown` resolves; `register` adds the
/// handlers. Returns after the drain; an error means the worker could not
/// start (bad URL, port in use).
pub async fn run_worker(
    settings: WorkerSettings,
    queue: &'static str,
    register: impl FnOnce(WorkerBuilder, WorkerDeps) -> WorkerBuilder,
    shutdown: impl Future<Output = ()> + Send,
) -> anyhow::Result<()> {
    let store = Store::connect_lazy(&settings.database_url, settings.db_pool_size)?;
    let client = QueueClient::new(&settings.redis_url, settings.queue_config())?;
    let deps = WorkerDeps {
        store: store.clone(),
        producer: Producer::new(client.clone()),
    };
    let relay = settings.relay.enabled.then(|| {
        Relay::new(
            store.clone(),
            deps.producer.clone(),
            settings.database_url.clone(),
            settings.relay,
        )
    });

    // Say at start when a dependency is not there (the worker still starts
    // and waits for it), instead of only "worker running".
    let probe = Duration::from_secs(3);
    match tokio::time::timeout(probe, store.ping()).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => tracing::warn!(
            error = %tally_service::error_line(&e),
            database = %redact_url(&settings.database_url),
            "PostgreSQL not reachable yet; jobs wait and /readyz answers 503 until it is"
        ),
        Err(_) => tracing::warn!(
            database = %redact_url(&settings.database_url),
            "PostgreSQL did not answer within 3 s; jobs wait and /readyz answers 503 until it does"
        ),
    }
    match tokio::time::timeout(probe, client.ping()).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => tracing::warn!(
            error = %tally_service::error_line(&e),
            redis = %redact_url(&settings.redis_url),
            "Redis not reachable yet; no job is claimed until it is"
        ),
        Err(_) => tracing::warn!(
            redis = %redact_url(&settings.redis_url),
            "Redis did not answer within 3 s; no job is claimed until it does"
        ),
    }

    let checks = vec![ReadinessCheck::redis(client.clone()), postgres_ready(store)];
    let health = HealthServer::start(settings.health_addr, checks)
        .map_err(|e| anyhow::anyhow!("cannot serve probes on HEALTH_ADDR={}: {e}", settings.health_addr))?;
    tracing::info!(addr = %health.addr(), "probes and metrics listening");

    // QUEUE_PARTITIONS before the worker starts, when Redis answers: the
    // worker then starts with a lane per partition at once, instead of
    // restarting its lanes when it notices the new count (within 5 s).
    let mut partitions = settings
        .partitions
        .map(|count| tokio::spawn(ensure_partitions(QueueAdmin::new(client.clone()), queue, count)));
    if let Some(task) = partitions.as_mut()
        && tokio::time::timeout(probe, task).await.is_ok()
    {
        partitions = None;
    }
    let gauges = tokio::spawn(observe::sample_queue_gauges(
        QueueAdmin::new(client.clone()),
        vec![queue.to_owned()],
        Duration::from_secs(5),
    ));
    let builder = Worker::builder(client, queue)
        .concurrency(settings.concurrency)
        .events(observe::ObservedEvents);
    let worker = register(builder, deps).build()?;
    tracing::info!(queue, concurrency = settings.concurrency, "worker running");
    // One shutdown for both: the relay stops taking rows when the worker
    // stops claiming (a batch in flight completes first).
    let shutdown = shutdown.shared();
    let relaying = async {
        if let Some(relay) = relay {
            relay.run_until(shutdown.clone()).await;
        }
    };
    let (report, ()) = tokio::join!(worker.run_until(shutdown.clone()), relaying);
    gauges.abort();
    if let Some(task) = partitions {
        task.abort();
    }
    health.stop().await;
    let report = report?;
    tracing::info!(?report, "worker stopped");
    Ok(())
}

/// Raises `queue` to at least `count` partitions (`QUEUE_PARTITIONS`),
/// asking again with backoff while Redis is away; the worker's lanes follow
/// the new count by themselves. A refusal (a concurrency limit below the
/// count) is logged once: the operator must lift the limit.
async fn ensure_partitions(admin: QueueAdmin, queue: &'static str, count: u32) {
    let mut delay = Duration::from_millis(200);
    loop {
        match admin.client().partitions(queue).await {
            Ok(current) if current >= count => {
                if current > count {
                    tracing::warn!(
                        queue,
                        partitions = current,
                        wanted = count,
                        "the queue has more partitions than QUEUE_PARTITIONS; keeping them (partitions are never removed)"
                    );
                }
                return;
            }
            Ok(_) => match admin.set_partitions(queue, count).await {
                Ok(now) => {
                    tracing::info!(queue, partitions = now, "queue partitioned as QUEUE_PARTITIONS asks");
                    return;
                }
                Err(e) if !e.is_unavailable() => {
                    tracing::error!(queue, error = %e, "QUEUE_PARTITIONS={count} could not be applied");
                    return;
                }
                Err(_) => {}
            },
            Err(e) if !e.is_unavailable() => {
                tracing::error!(queue, error = %e, "cannot read the partition count");
                return;
            }
            Err(_) => {}
        }
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(Duration::from_secs(5));
    }
}

/// Environment variables every worker reads, for `--help`.
pub const WORKER_ENV_HELP: &str = "\
Environment:
  DATABASE_URL           PostgreSQL (required)
  REDIS_URL              queue Redis (default redis://127.0.0.1:6379)
  WORKER_CONCURRENCY     jobs at once (default 5)
  HEALTH_ADDR            /healthz /readyz /metrics (default 0.0.0.0:9090)
  SHUTDOWN_TIMEOUT_SECS  drain deadline after SIGTERM (default 25)
  LEASE_SECS             claim lease; a killed worker's job returns after it (default 15)
  DATABASE_POOL_SIZE     Postgres connections (default 8)
  TALLY_QUEUE_PREFIX     queue key prefix (default tally)
  QUEUE_PARTITIONS       least partition count of the worker's queue, 1-64 (default: as in Redis)
  OUTBOX_RELAY           on|off: relay the job outbox from PostgreSQL to Redis (default on)
  OUTBOX_BATCH           outbox rows per relay transaction (default 100)
  OUTBOX_POLL_SECS       read the outbox this often without a notification (default 5)
  RUST_LOG, LOG_FORMAT=text|json, SENTRY_DSN, OTEL_EXPORTER_OTLP_ENDPOINT  telemetry (optional)";

/// The whole `main` of a worker binary: [`tally_service::startup::run`] with the
/// worker settings and [`run_worker`] until SIGTERM/SIGINT (exit 0 after
/// the drain, 1 if the worker could not start).
pub async fn main(
    name: &'static str,
    about: &str,
    queue: &'static str,
    register: impl FnOnce(WorkerBuilder, WorkerDeps) -> WorkerBuilder,
) -> std::process::ExitCode {
    let binary = tally_service::startup::Binary {
        name,
        about,
        help: WORKER_ENV_HELP,
    };
    tally_service::startup::run(binary, WorkerSettings::from_env, WorkerSettings::summary, |settings| {
        run_worker(settings, queue, register, tally_service::shutdown_signal())
    })
    .await
}

/// Runs a store call, riding out a database outage inside the attempt.
///
/// While PostgreSQL is unreachable (restart, failover, network blip) the call
/// is repeated with backoff (200 ms doubling to 5 s) for up to half the
/// job's timeout, so a short outage delays jobs instead of spending their
/// attempts: with 3 attempts and a 5 s backoff base, a 20-second outage would
/// otherwise send every job that hit it to the dead set. The lease is kept
/// alive by the engine's heartbeats meanwhile, jobs not yet claimed wait in
/// Redis, and a shutdown (the context's cancellation) stops the wait. Only
/// safe for idempotent calls, which every store call the handlers make is.
pub async fn with_database<T, F, Fut>(ctx: &tally_queue::JobContext, mut call: F) -> Result<T, tally_store::StoreError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, tally_store::StoreError>>,
{
    let budget = Duration::from_millis(ctx.policy.timeout_ms) / 2;
    let started = std::time::Instant::now();
    let mut delay = Duration::from_millis(200);
    loop {
        match call().await {
            Err(e) if e.is_unavailable() && started.elapsed() + delay < budget => {
                tracing::warn!(error = %e, retry_in_ms = delay.as_millis(), "database unavailable; waiting for it");
                tokio::select! {
                    () = ctx.cancel.cancelled() => return Err(e),
                    () = tokio::time::sleep(delay) => {}
                }
                delay = (delay * 2).min(Duration::from_secs(5));
            }
            other => return other,
        }
    }
}

/// What the engine should do about a store error: a match not finished yet
/// is retried in a minute; connection trouble, races with a concurrent writer
/// (deadlock, serialization failure, unique violation: the store has already
/// run the call again a few times), a statement cut off by the attempt's
/// deadline and "not scored yet" are retried with the job's backoff;
/// everything else (unknown match, conflicting result, other constraint
/// violations) will never succeed, so the job gives up.
pub fn store_job_error(error: &tally_store::StoreError) -> tally_queue::JobError {
    use tally_queue::JobError;
    match error {
        tally_store::StoreError::MatchNotFinished { .. } if error.is_transient() => {
            JobError::RetryAfter(Duration::from_mins(1), error.to_string())
        }
        _ if error.is_transient() => JobError::retry(error),
        _ => JobError::give_up(error),
    }
}

/// The readiness check of the store: PostgreSQL answers
/// ([`tally_store::Store::ping`]).
fn postgres_ready(store: Store) -> ReadinessCheck {
    ReadinessCheck::new("postgres", move || {
        let store = store.clone();
        Box::pin(async move { store.ping().await.map_err(|e| e.to_string()) })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queue_partitions_is_optional_and_checked() {
        let db = ("DATABASE_URL", "postgres://u:secret@db/x");
        let s = WorkerSettings::from_env(&Env::from_pairs([db])).expect("unset");
        assert_eq!(s.partitions, None);
        let s = WorkerSettings::from_env(&Env::from_pairs([db, ("QUEUE_PARTITIONS", "3")])).expect("three");
        assert_eq!(s.partitions, Some(3));
        let s = WorkerSettings::from_env(&Env::from_pairs([db, ("QUEUE_PARTITIONS", " ")])).expect("blank");
        assert_eq!(s.partitions, None, "blank is unset, as for every setting");
        for bad in ["0", "65", "x"] {
            let err = WorkerSettings::from_env(&Env::from_pairs([db, ("QUEUE_PARTITIONS", bad)]))
                .expect_err("refused")
                .to_string();
            assert!(err.contains("QUEUE_PARTITIONS"), "{bad:?}: {err}");
        }
    }

    #[test]
    fn worker_settings_need_a_database_and_check_numbers() {
        let err = WorkerSettings::from_env(&Env::from_pairs([])).expect_err("no DATABASE_URL");
        assert!(err.to_string().starts_with("missing setting DATABASE_URL"), "{err}");
        let env = Env::from_pairs([
            ("DATABASE_URL", "postgres://u:secret@db/x"),
            ("WORKER_CONCURRENCY", "0"),
        ]);
        let err = WorkerSettings::from_env(&env).expect_err("zero concurrency");
        assert!(err.to_string().contains("WORKER_CONCURRENCY"), "{err}");
        let env = Env::from_pairs([("DATABASE_URL", "postgres://u:secret@db/x")]);
        let s = WorkerSettings::from_env(&env).expect("defaults");
        assert_eq!((s.concurrency, s.lease.as_secs(), s.health_addr.port()), (5, 15, 9090));
        assert!(!s.summary().contains("secret"), "{}", s.summary());
    }

    #[tokio::test]
    async fn lost_races_and_timeouts_are_retried_other_violations_give_up() {
        use tally_queue::JobError;
        use tally_store::StoreError;

        let db = tally_testkit::database().await;
        let client = db.client().await;
        client
            .batch_execute("CREATE TABLE t (id integer PRIMARY KEY CHECK (id > 0)); INSERT INTO t VALUES (1)")
            .await
            .expect("table");
        let failure =
            async |sql: &str| StoreError::from(client.batch_execute(sql).await.expect_err("the statement fails"));

        let duplicate = failure("INSERT INTO t VALUES (1)").await;
        assert!(
            matches!(store_job_error(&duplicate), JobError::Retry(_)),
            "a unique violation is a lost race, not a permanent failure: {duplicate}"
        );
        let timed_out = failure("SET statement_timeout = 50; SELECT pg_sleep(5)").await;
        client.batch_execute("RESET statement_timeout").await.expect("reset");
        assert!(
            matches!(store_job_error(&timed_out), JobError::Retry(_)),
            "cut off by the attempt's deadline: {timed_out}"
        );
        let invalid = failure("INSERT INTO t VALUES (-1)").await;
        assert!(
            matches!(store_job_error(&invalid), JobError::GiveUp(_)),
            "a check violation will fail again: {invalid}"
        );
    }
}
