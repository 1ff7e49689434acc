//! The end-to-end harness: a [`Stack`] is a seeded PostgreSQL database and a
//! Redis namespace (or dedicated servers, for chaos tests) plus the real
//! service binaries started as child processes against them. Tests record
//! results, break things (SIGKILL, SIGTERM, stop Postgres, restart or flush
//! Redis, write results behind tally's back) and check the final state
//! against the brute-force recomputation in `tally_oracle`.
//!
//! The binaries must be built first (`make test` runs `cargo build --bins`);
//! a missing one fails with a line saying so.

pub mod receivers;

use std::{
    path::PathBuf,
    process::Output,
    time::{Duration, Instant},
};

use tally_cli::{demo::Fixture, services::Service};
use tally_jobs::{Job as _, RefreshViews, RepairPipeline, ScoreMatch};
use tally_queue::{Producer, QueueAdmin, QueueClient, QueueConfig};
use tally_store::{Store, seed::SeedOptions};

/// Where the databases and Redis come from.
#[derive(Debug, Default, Clone, Copy)]
pub struct StackOptions {
    /// A dedicated PostgreSQL the test may stop and start.
    pub own_postgres: bool,
    /// A dedicated Redis with AOF persistence the test may restart.
    pub own_redis: bool,
    /// A Redis Cluster (three masters with replicas) instead of one Redis.
    pub cluster: bool,
    /// Users to seed.
    pub users: u32,
    /// Predictions to seed.
    pub predictions: u64,
}

/// Databases, queues and running services for one test.
pub struct Stack {
    /// The database URL the services use.
    pub database_url: String,
    /// The Redis URL the services use.
    pub redis_url: String,
    /// The queue key prefix (the test's Redis namespace).
    pub prefix: String,
    /// The store, for the test's own reads and writes.
    pub store: Store,
    /// Queue statistics.
    pub admin: QueueAdmin,
    /// Enqueues jobs.
    pub producer: Producer,
    /// Service logs.
    pub log_dir: PathBuf,
    /// Running services, by name.
    pub services: Vec<Service>,
    /// Extra environment for every service.
    pub extra_env: Vec<(String, String)>,
    /// The dedicated PostgreSQL, when asked for.
    pub postgres: Option<tally_testkit::PostgresServer>,
    /// The dedicated Redis, when asked for.
    pub redis: Option<tally_testkit::RedisServer>,
    /// The Redis Cluster, when asked for.
    pub cluster: Option<tally_testkit::RedisCluster>,
    _database: Option<tally_testkit::TestDatabase>,
}

impl std::fmt::Debug for Stack {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Stack")
            .field("prefix", &self.prefix)
            .field("log_dir", &self.log_dir)
            .finish_non_exhaustive()
    }
}

async fn migrated_database() -> tally_testkit::TestDatabase {
    tally_testkit::database_from_template("tally-migrated", |url| async move {
        tally_store::migrate_url(&url).await?;
        Ok(())
    })
    .await
}

impl Stack {
    /// A seeded stack with no services running yet.
    pub async fn new(options: StackOptions) -> anyhow::Result<Self> {
        let (postgres, database, database_url) = if options.own_postgres {
            let server = tally_testkit::PostgresServer::start().await?;
            let url = server.url("postgres");
            tally_store::migrate_url(&url).await?;
            (Some(server), None, url)
        } else {
            let db = migrated_database().await;
            let url = db.url.clone();
            (None, Some(db), url)
        };
        let mut cluster = None;
        let (redis, redis_url, prefix) = if options.cluster {
            let started = tally_testkit::RedisCluster::start().await?;
            let url = started.url();
            cluster = Some(started);
            (None, url, "tally".to_owned())
        } else if options.own_redis {
            let server = tally_testkit::RedisServer::start(tally_testkit::RedisOptions {
                appendonly: true,
                extra_args: vec![],
            })
            .await?;
            let url = server.url();
            (Some(server), url, "tally".to_owned())
        } else {
            let r = tally_testkit::redis().await;
            (None, r.url, r.namespace)
        };
        let store = Store::connect(&database_url, 4).await?;
        let seed = SeedOptions {
            users: options.users.max(50),
            predictions: options.predictions.max(500),
            competitions: 2,
            teams_per_competition: 6,
            played_fraction: 0.3,
            seed: 7,
        };
        store.seed(&seed, &|_| {}).await?;
        let queue = QueueClient::new(&redis_url, QueueConfig::with_prefix(&prefix))?;
        let log_dir = tally_cli::services::bin_dir()
            .join("e2e-logs")
            .join(uuid::Uuid::new_v4().simple().to_string());
        Ok(Stack {
            database_url,
            redis_url,
            prefix,
            store,
            admin: QueueAdmin::new(queue.clone()),
            producer: Producer::new(queue),
            log_dir,
            services: Vec::new(),
            extra_env: vec![
                ("LEASE_SECS".into(), "2".into()),
                ("SHUTDOWN_TIMEOUT_SECS".into(), "5".into()),
                ("RUST_LOG".into(), "info".into()),
            ],
            postgres,
            redis,
            cluster,
            _database: database,
        })
    }

    /// The environment every service gets (the gateway all of it but
    /// `DATABASE_URL`, which it does not read: [`Stack::start_with`]).
    pub fn env(&self) -> Vec<(String, String)> {
        let mut env = vec![
            ("REDIS_URL".to_owned(), self.redis_url.clone()),
            ("DATABASE_URL".to_owned(), self.database_url.clone()),
            ("TALLY_QUEUE_PREFIX".to_owned(), self.prefix.clone()),
            ("CRON_SECRET".to_owned(), SECRET.to_owned()),
        ];
        env.extend(self.extra_env.iter().cloned());
        env
    }

    /// Starts a service binary under an instance name and waits until it is ready.
    pub async fn start(&mut self, binary: &str, name: &str) -> anyhow::Result<()> {
        self.start_with(binary, name, &[]).await
    }

    /// [`Stack::start`] with extra environment for this instance only (e.g.
    /// `OUTBOX_RELAY=off`).
    pub async fn start_with(&mut self, binary: &str, name: &str, extra: &[(&str, &str)]) -> anyhow::Result<()> {
        let addr_var = if binary == "cron-gateway" {
            "BIND_ADDR"
        } else {
            "HEALTH_ADDR"
        };
        let mut env = self.env();
        if binary == "cron-gateway" {
            // As deployed: the gateway needs Redis only (it would warn that
            // the setting is unused).
            env.retain(|(k, _)| k != "DATABASE_URL");
        }
        env.extend(extra.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())));
        let mut service = Service::start(binary, name, &env, addr_var, &self.log_dir)?;
        service.wait_ready(Duration::from_secs(30)).await?;
        self.services.push(service);
        Ok(())
    }

    /// Starts several services, `(binary, instance name)`, each awaited ready.
    pub async fn start_services(&mut self, services: &[(&str, &str)]) {
        for (binary, name) in services {
            self.start(binary, name)
                .await
                .unwrap_or_else(|e| panic!("{name} did not start: {e:#}"));
        }
    }

    /// Records a deterministic result ([`score_for`]) for each fixture.
    pub async fn finish_all(&self, fixtures: &[Fixture]) {
        for f in fixtures {
            let (h, a) = score_for(f.id);
            self.finish(f.id, h, a)
                .await
                .unwrap_or_else(|e| panic!("match {}: {e:#}", f.id));
        }
    }

    /// Stops every running service with SIGTERM and asserts each exits 0.
    pub async fn stop_cleanly(&mut self) {
        for (name, status) in self.stop_all().await {
            let status = status.unwrap_or_else(|e| panic!("{name}: {e:#}"));
            assert!(status.success(), "{name} exited with {status}");
        }
    }

    /// The running service with this instance name.
    pub fn service(&mut self, name: &str) -> &mut Service {
        self.services
            .iter_mut()
            .find(|s| s.name == name)
            .unwrap_or_else(|| panic!("no service {name}"))
    }

    /// The next round of each competition.
    pub async fn matchday(&self) -> anyhow::Result<Vec<Fixture>> {
        tally_cli::demo::next_matchday(&self.store).await
    }

    /// Runs the `tally` CLI against this stack.
    pub fn tally(&self, args: &[&str]) -> anyhow::Result<Output> {
        let path = tally_cli::services::bin_dir().join("tally");
        anyhow::ensure!(
            path.exists(),
            "{} not found: run `cargo build --bins` first",
            path.display()
        );
        Ok(std::process::Command::new(path).args(args).envs(self.env()).output()?)
    }

    /// Records a result with its scoring job (through the outbox, which the
    /// workers relay), as `tally match finish` does.
    pub async fn finish(&self, id: i64, home: i32, away: i32) -> anyhow::Result<()> {
        tally_cli::commands::finish_match(&self.store, id, home, away).await?;
        Ok(())
    }

    /// Calls the cron endpoint of the instance `gateway` with the secret and
    /// returns the JSON answer (which must be 200).
    pub async fn cron(&mut self, gateway: &str) -> anyhow::Result<serde_json::Value> {
        let addr = self.service(gateway).addr;
        let auth = format!("Bearer {SECRET}");
        let response =
            tally_testkit::http::request(addr, "POST", "/api/cron/update-stats", &[("Authorization", &auth)], b"")
                .await?;
        anyhow::ensure!(
            response.status == 200,
            "cron call answered {}: {}",
            response.status,
            response.body
        );
        Ok(serde_json::from_str(&response.body)?)
    }

    /// Calls the cron endpoint of `gateway`, then waits until the
    /// `RepairPipeline` job the call asked for has completed on the scoring
    /// worker `worker`, and returns the answer with what the run found and
    /// did, read from that worker's `tally_repair_*` metrics (their change
    /// across the call; a worker restarted meanwhile would reset them).
    pub async fn cron_and_repair(
        &mut self,
        gateway: &str,
        worker: &str,
    ) -> anyhow::Result<(serde_json::Value, RepairCounts)> {
        let before = RepairMetrics::read(self, worker).await?;
        let answer = self.cron(gateway).await?;
        anyhow::ensure!(
            answer["repair"]["jobId"].is_string(),
            "the cron call asked for no repair: {answer}"
        );
        let addr = self.service(worker).addr;
        self.wait_for("the repair job completed", Duration::from_secs(60), || async move {
            let text = tally_testkit::http::get(addr, "/metrics").await?.body;
            Ok(RepairMetrics::parse(&text).completed > before.completed)
        })
        .await?;
        let after = RepairMetrics::read(self, worker).await?;
        Ok((answer, after.since(&before)))
    }

    /// The instance's `/metrics`, summed over every series of `name` whose
    /// labels include `labels` (0 when there is none).
    pub async fn metric(&mut self, instance: &str, name: &str, labels: &[(&str, &str)]) -> anyhow::Result<f64> {
        let addr = self.service(instance).addr;
        let text = tally_testkit::http::get(addr, "/metrics").await?.body;
        Ok(tally_testkit::prometheus::sum(&text, name, labels).unwrap_or(0.0))
    }

    /// Records the next matchday's results while a transaction of the test
    /// holds a SHARE lock on `predictions`, and waits until a scoring job is
    /// leased and blocked inside its UPDATE: a kill now lands mid-job by
    /// construction. [`ScoringHeld::release`] lets the job (or its retry)
    /// through.
    pub async fn matchday_with_scoring_held(&self) -> anyhow::Result<(Vec<Fixture>, ScoringHeld)> {
        let lock = self.store.pool().get().await?;
        lock.batch_execute("BEGIN; LOCK TABLE predictions IN SHARE MODE")
            .await?;
        let fixtures = self.matchday().await?;
        self.finish_all(&fixtures).await;
        let admin = self.admin.clone();
        self.wait_for("a scoring job leased and blocked", Duration::from_secs(20), || {
            let admin = admin.clone();
            async move { Ok(admin.stats(ScoreMatch::QUEUE).await?.in_flight > 0) }
        })
        .await?;
        Ok((fixtures, ScoringHeld { lock }))
    }

    /// Matches still owed work (`match_pipeline_pending`): none once the
    /// pipeline caught up.
    pub async fn pending_markers(&self) -> anyhow::Result<i64> {
        let client = self.store.pool().get().await?;
        Ok(client
            .query_one("SELECT count(*) FROM match_pipeline_pending", &[])
            .await?
            .get(0))
    }

    /// Waits until `condition` holds, checking every 50 ms, failing after
    /// `timeout` with `what` and the services' log tails.
    pub async fn wait_for<F, Fut>(&self, what: &str, timeout: Duration, mut condition: F) -> anyhow::Result<()>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = anyhow::Result<bool>>,
    {
        let deadline = Instant::now() + timeout;
        loop {
            let last = match condition().await {
                Ok(true) => return Ok(()),
                Ok(false) => "not yet".to_owned(),
                Err(e) => format!("{e:#}"),
            };
            if Instant::now() > deadline {
                let logs: Vec<String> = self
                    .services
                    .iter()
                    .map(|s| format!("--- {}:\n{}", s.name, s.log_tail(15)))
                    .collect();
                anyhow::bail!("{what}: not after {timeout:?} ({last})\n{}", logs.join("\n"));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Waits until both queues are empty (nothing ready, scheduled or in
    /// flight), the outbox is empty (every committed job relayed) and the
    /// published views equal the brute-force recomputation. Fails at once if
    /// a job is dead.
    pub async fn wait_settled(&self, timeout: Duration) -> anyhow::Result<tally_oracle::Checked> {
        let deadline = Instant::now() + timeout;
        loop {
            let mut busy = 0;
            let mut unreadable = None;
            for queue in [ScoreMatch::QUEUE, RefreshViews::QUEUE] {
                let stats = self.admin.stats(queue).await;
                match stats {
                    Ok(s) => {
                        if s.dead > 0 {
                            let dead = self.admin.dead_list(queue, 0, 5).await.unwrap_or_default();
                            anyhow::bail!("{} dead job(s) in {queue}: {dead:?}", s.dead);
                        }
                        busy += s.ready + s.scheduled + s.in_flight;
                    }
                    Err(e) => unreadable = Some(format!("queue stats: {e}")),
                }
            }
            match self.store.outbox_backlog().await {
                Ok(backlog) => busy += u64::try_from(backlog.pending).unwrap_or(0),
                Err(e) => unreadable = Some(format!("outbox backlog: {e}")),
            }
            let last = if let Some(problem) = unreadable {
                problem
            } else if busy > 0 {
                format!("{busy} job(s) not finished")
            } else {
                match tally_oracle::verify(&self.store).await {
                    Ok(Ok(checked)) => return Ok(checked),
                    Ok(Err(diff)) => diff,
                    Err(e) => format!("verify: {e:#}"),
                }
            };
            if Instant::now() > deadline {
                let logs: Vec<String> = self
                    .services
                    .iter()
                    .map(|s| format!("--- {}:\n{}", s.name, s.log_tail(15)))
                    .collect();
                anyhow::bail!("not settled after {timeout:?}: {last}\n{}", logs.join("\n"));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Stops every service with SIGTERM and returns their exit statuses.
    pub async fn stop_all(&mut self) -> Vec<(String, anyhow::Result<std::process::ExitStatus>)> {
        let mut out = Vec::new();
        for s in &mut self.services {
            if s.pid().is_some() {
                out.push((s.name.clone(), s.terminate(Duration::from_secs(15)).await));
            }
        }
        out
    }
}

/// What repair runs found and did, from a scoring worker's metrics (see
/// [`Stack::cron_and_repair`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RepairCounts {
    /// `RepairPipeline` jobs completed (runs that succeeded).
    pub runs: u64,
    /// Finished matches with unscored predictions (`missing="scoring"`).
    pub unscored: u64,
    /// Postponed or cancelled matches not voided (`missing="voiding"`).
    pub unvoided: u64,
    /// Scored matches whose points are not in the totals (`missing="points"`).
    pub points_missing: u64,
    /// Jobs the runs enqueued.
    pub enqueued: u64,
    /// Jobs the runs found still waiting from an earlier run.
    pub already_queued: u64,
    /// Matches the last run left for the next ones (a gauge).
    pub remaining: u64,
}

/// The repair series of one `/metrics` text.
#[derive(Debug, Clone, Copy, Default)]
struct RepairMetrics {
    completed: u64,
    unscored: u64,
    unvoided: u64,
    points_missing: u64,
    enqueued: u64,
    already_queued: u64,
    remaining: u64,
}

impl RepairMetrics {
    async fn read(stack: &mut Stack, worker: &str) -> anyhow::Result<Self> {
        let addr = stack.service(worker).addr;
        Ok(Self::parse(&tally_testkit::http::get(addr, "/metrics").await?.body))
    }

    fn parse(text: &str) -> Self {
        // Counters: whole numbers, exactly representable.
        let n = |name: &str, labels: &[(&str, &str)]| {
            tally_testkit::prometheus::sum(text, name, labels).unwrap_or(0.0) as u64
        };
        let found = |missing| n("tally_repair_found_total", &[("missing", missing)]);
        Self {
            completed: n(
                "tally_jobs_completed_total",
                &[("queue", RepairPipeline::QUEUE), ("kind", RepairPipeline::KIND)],
            ),
            unscored: found("scoring"),
            unvoided: found("voiding"),
            points_missing: found("points"),
            enqueued: n("tally_repair_jobs_total", &[("outcome", "enqueued")]),
            already_queued: n("tally_repair_jobs_total", &[("outcome", "already_queued")]),
            remaining: n("tally_repair_remaining_matches", &[]),
        }
    }

    fn since(&self, before: &Self) -> RepairCounts {
        RepairCounts {
            runs: self.completed - before.completed,
            unscored: self.unscored - before.unscored,
            unvoided: self.unvoided - before.unvoided,
            points_missing: self.points_missing - before.points_missing,
            enqueued: self.enqueued - before.enqueued,
            already_queued: self.already_queued - before.already_queued,
            remaining: self.remaining,
        }
    }
}

/// The lock of [`Stack::matchday_with_scoring_held`].
pub struct ScoringHeld {
    lock: deadpool_postgres::Object,
}

impl std::fmt::Debug for ScoringHeld {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ScoringHeld")
    }
}

impl ScoringHeld {
    /// Rolls the lock's transaction back: blocked scoring goes on.
    pub async fn release(self) -> anyhow::Result<()> {
        self.lock.batch_execute("ROLLBACK").await?;
        Ok(())
    }
}

impl Drop for Stack {
    fn drop(&mut self) {
        // Logs of a passing test are not needed; a failing one keeps them.
        if !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.log_dir);
        }
    }
}

/// The cron secret the stack's gateway uses.
pub const SECRET: &str = "e2e-secret-0123456789abcdef";

/// A deterministic score for match `id`.
pub fn score_for(id: i64) -> (i32, i32) {
    let h = (id * 7919) % 5;
    let a = (id * 104_729 + 3) % 4;
    (h as i32, a as i32)
}
