//! [`Store`]: a connection pool and the operations the services call.
//!
//! Every operation takes a connection from the pool for its own duration and
//! runs its own transaction; the free functions in the other modules do the
//! work on a plain `tokio_postgres::Client` for callers that bring their own.
//! Reads use statements prepared once per pooled connection.
//!
//! A job handler bounds the work with its attempt's deadline,
//! `store.with_deadline(ctx.deadline)`: every transaction then runs with
//! `statement_timeout` / `lock_timeout` from the time left (see
//! [`crate::tx`]), and the wait for a pooled connection is capped too.
//!
//! A connection is lent to an operation through [`Lent`]. When the
//! operation's future is dropped before it finishes (an attempt timed out, a
//! caller's `tokio::time::timeout` fired), a statement may still be running
//! on the server, holding locks, and the connection is still busy with it.
//! Such a connection never goes back to the pool: the guard detaches it,
//! sends PostgreSQL a cancel request for the running statement, then closes
//! it. A connection whose operation finished (with or without an error) goes
//! back as usual; a failed transaction has already been rolled back.

use std::future::Future;
use std::str::FromStr;
use std::time::{Duration, Instant};

use deadpool_postgres::{Manager, ManagerConfig, Object, Pool, RecyclingMethod, Runtime, Timeouts};
use futures::future::BoxFuture;
use tokio_postgres::NoTls;

use crate::error::StoreError;
use crate::migrate::{self, AppliedMigration};
use crate::model::{
    LeaderboardRow, MatchStatus, PointsOutcome, RecordOutcome, RefreshOutcome, Scope, ScoreOutcome, StandingRow,
};
use crate::seed::{SeedOptions, SeedProgress, SeedSummary};
use crate::tx::{Budget, MIN_TIMEOUT};
use crate::{outbox, points, repair, scoring, seed, views};

/// How long an operation waits for a free pooled connection before failing
/// with a (transient) pool error; less when its budget has less left.
const POOL_WAIT: Duration = Duration::from_secs(30);
/// How long opening a new connection may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How many times an operation runs when concurrent writers keep getting in
/// its way ([`StoreError::is_race`]); after that the error goes to the
/// caller, which sees it as transient.
pub const RACE_ATTEMPTS: u32 = 3;

/// The Postgres side of tally, behind a connection pool. Cheap to clone.
#[derive(Clone)]
pub struct Store {
    /// Connections, opened lazily, at most `pool_size`.
    pool: Pool,
    /// Bounds every operation of this handle (unbounded unless
    /// [`Store::with_deadline`] or [`Store::with_budget`] set one).
    budget: Budget,
}

impl std::fmt::Debug for Store {
    // The pool's configuration holds the password: show only its size.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("pool_size", &self.pool.status().max_size)
            .field("budget", &self.budget)
            .finish_non_exhaustive()
    }
}

/// A pooled connection lent to one operation (see the module docs). Call
/// [`Lent::finish`] when the operation has returned; dropped unfinished, it
/// cancels whatever runs on the connection and keeps it out of the pool.
struct Lent {
    object: Option<Object>,
}

impl Lent {
    fn client(&mut self) -> &mut deadpool_postgres::ClientWrapper {
        self.object
            .as_mut()
            .expect("a Lent holds its connection until finished or dropped")
    }

    /// The operation returned: the connection is idle and goes back to the pool.
    fn finish(mut self) {
        drop(self.object.take());
    }
}

impl Drop for Lent {
    fn drop(&mut self) {
        let Some(object) = self.object.take() else { return };
        // Detached: the pool forgets it and opens a fresh one when needed.
        let client = Object::take(object);
        let token = client.cancel_token();
        tracing::warn!("database operation abandoned mid-flight; cancelling its statement and closing its connection");
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => {
                runtime.spawn(async move {
                    // Cancel first, then close: closing alone would not stop
                    // a statement (the server notices a closed socket only
                    // when it next talks to the client). The cancel request
                    // goes over a new connection without TLS, as the pool's.
                    if let Err(error) = token.cancel_query(NoTls).await {
                        tracing::warn!(%error, "cancel request for an abandoned statement failed");
                    }
                    drop(client);
                });
            }
            // No runtime left (process exiting): closing is all we can do;
            // the statement's own timeout, if any, ends it.
            Err(_) => drop(client),
        }
    }
}

impl Store {
    /// Builds a pool of at most `pool_size` connections without connecting;
    /// the first operation connects. Lets a service start (and report not
    /// ready) while the database is down.
    pub fn connect_lazy(database_url: &str, pool_size: usize) -> Result<Self, StoreError> {
        let mut config = tokio_postgres::Config::from_str(database_url)
            .map_err(|e| StoreError::Config(format!("DATABASE_URL: {e}")))?;
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(CONNECT_TIMEOUT);
        }
        let manager = Manager::from_config(
            config,
            NoTls,
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(pool_size.max(1))
            .runtime(Runtime::Tokio1)
            .wait_timeout(Some(POOL_WAIT))
            .create_timeout(Some(CONNECT_TIMEOUT))
            .build()
            .map_err(|e| StoreError::Config(e.to_string()))?;
        Ok(Self::from_pool(pool))
    }

    /// Builds the pool and checks that one connection works.
    pub async fn connect(database_url: &str, pool_size: usize) -> Result<Self, StoreError> {
        let store = Self::connect_lazy(database_url, pool_size)?;
        store.ping().await?;
        Ok(store)
    }

    /// Wraps an existing pool.
    pub fn from_pool(pool: Pool) -> Self {
        Self {
            pool,
            budget: Budget::UNBOUNDED,
        }
    }

    /// The same pool, with every operation bounded by `deadline` (a job
    /// attempt's): statement and lock timeouts from the time left, at least
    /// [`MIN_TIMEOUT`], and the wait for a connection capped. See [`crate::tx`].
    #[must_use]
    pub fn with_deadline(&self, deadline: Instant) -> Self {
        self.with_budget(Budget::until(deadline))
    }

    /// The same pool, with every operation bounded by `budget`.
    #[must_use]
    pub fn with_budget(&self, budget: Budget) -> Self {
        Self {
            pool: self.pool.clone(),
            budget,
        }
    }

    /// What bounds this handle's operations.
    pub fn budget(&self) -> Budget {
        self.budget
    }

    /// Lends a connection, waiting at most [`POOL_WAIT`] (or the time left
    /// in the budget, at least [`MIN_TIMEOUT`]) for a free one.
    async fn lend(&self) -> Result<Lent, StoreError> {
        let wait = self
            .budget
            .remaining()
            .map_or(POOL_WAIT, |left| left.clamp(MIN_TIMEOUT, POOL_WAIT));
        let timeouts = Timeouts {
            wait: Some(wait),
            ..self.pool.timeouts()
        };
        let object = self.pool.timeout_get(&timeouts).await?;
        Ok(Lent { object: Some(object) })
    }

    /// Runs `operation` (one idempotent transaction) on a lent connection,
    /// again when a concurrent writer got in its way ([`StoreError::is_race`]),
    /// at most [`RACE_ATTEMPTS`] times and while the budget lasts. Between
    /// runs it waits a little, so the writer it collided with can commit.
    async fn retrying_races<T>(
        &self,
        what: &'static str,
        mut operation: impl for<'c> FnMut(&'c mut tokio_postgres::Client) -> BoxFuture<'c, Result<T, StoreError>>,
    ) -> Result<T, StoreError> {
        let mut lent = self.lend().await?;
        let mut attempt = 1;
        let result = loop {
            let error = match operation(lent.client()).await {
                Err(error) if error.is_race() && attempt < RACE_ATTEMPTS => error,
                other => break other,
            };
            let pause = Duration::from_millis(rand::random_range(10..=50) * u64::from(attempt));
            if self.budget.remaining().is_some_and(|left| left < pause + MIN_TIMEOUT) {
                break Err(error);
            }
            tracing::warn!(%error, attempt, operation = what, "concurrent writer got in the way; running again");
            tokio::time::sleep(pause).await;
            attempt += 1;
        };
        lent.finish();
        result
    }

    /// The underlying pool, for callers with their own queries.
    pub fn pool(&self) -> &Pool {
        &self.pool
    }

    /// Readiness probe: a connection can be taken and answers `SELECT 1`.
    pub async fn ping(&self) -> Result<(), StoreError> {
        let mut lent = self.lend().await?;
        let result = lent.client().simple_query("SELECT 1").await;
        lent.finish();
        result?;
        Ok(())
    }

    /// Applies pending migrations (see [`migrate::migrate`]).
    pub async fn migrate(&self) -> Result<Vec<AppliedMigration>, StoreError> {
        let mut lent = self.lend().await?;
        let result = migrate::migrate(lent.client()).await;
        lent.finish();
        result
    }

    /// Records a final score (see [`scoring::record_result`]).
    #[tracing::instrument(name = "db record_result", skip(self), fields(db.system = "postgresql", otel.kind = "client"))]
    pub async fn record_result(&self, match_id: i64, home: i32, away: i32) -> Result<RecordOutcome, StoreError> {
        let budget = self.budget;
        self.retrying_races("record_result", |client| {
            Box::pin(scoring::record_result(client, match_id, home, away, budget))
        })
        .await
    }

    /// Changes a match's status (see [`scoring::set_match_status`]).
    #[tracing::instrument(name = "db set_match_status", skip(self), fields(db.system = "postgresql", otel.kind = "client"))]
    pub async fn set_match_status(&self, match_id: i64, status: MatchStatus) -> Result<RecordOutcome, StoreError> {
        let budget = self.budget;
        self.retrying_races("set_match_status", |client| {
            Box::pin(scoring::set_match_status(client, match_id, status, budget))
        })
        .await
    }

    /// Records a final score and writes `job` (a job envelope, see
    /// [`crate::outbox`]) into the outbox in the same transaction (see
    /// [`scoring::record_result_with_job`]).
    #[tracing::instrument(name = "db record_result", skip(self, job), fields(db.system = "postgresql", otel.kind = "client"))]
    pub async fn record_result_with_job(
        &self,
        match_id: i64,
        home: i32,
        away: i32,
        job: &serde_json::Value,
    ) -> Result<RecordOutcome, StoreError> {
        let budget = self.budget;
        self.retrying_races("record_result", |client| {
            let job = job.clone();
            Box::pin(
                async move { scoring::record_result_with_job(client, match_id, home, away, Some(&job), budget).await },
            )
        })
        .await
    }

    /// Changes a match's status and writes `job` into the outbox in the same
    /// transaction (see [`scoring::set_match_status_with_job`]).
    #[tracing::instrument(name = "db set_match_status", skip(self, job), fields(db.system = "postgresql", otel.kind = "client"))]
    pub async fn set_match_status_with_job(
        &self,
        match_id: i64,
        status: MatchStatus,
        job: &serde_json::Value,
    ) -> Result<RecordOutcome, StoreError> {
        let budget = self.budget;
        self.retrying_races("set_match_status", |client| {
            let job = job.clone();
            Box::pin(
                async move { scoring::set_match_status_with_job(client, match_id, status, Some(&job), budget).await },
            )
        })
        .await
    }

    /// Writes a job envelope into the outbox as a transaction of its own and
    /// returns the row id (see [`outbox::enqueue_in`] to write one inside a
    /// transaction of yours).
    pub async fn enqueue_outbox(&self, envelope: &serde_json::Value) -> Result<i64, StoreError> {
        let mut lent = self.lend().await?;
        let result = outbox::enqueue_in(&**lent.client(), envelope).await;
        lent.finish();
        result
    }

    /// One relay step (see [`outbox::relay_batch`]): up to `limit` rows to
    /// `push`, then deleted or marked in the same transaction.
    pub async fn relay_outbox<F, Fut>(&self, limit: i64, push: F) -> Result<outbox::BatchOutcome, StoreError>
    where
        F: FnOnce(Vec<outbox::OutboxRow>) -> Fut,
        Fut: Future<Output = Vec<outbox::Pushed>>,
    {
        let mut lent = self.lend().await?;
        let result = outbox::relay_batch(lent.client(), limit, self.budget, push).await;
        lent.finish();
        result
    }

    /// Deletes the outbox row of a job about to be acknowledged (see
    /// [`outbox::settle`]); true when the row was still there.
    pub async fn settle_outbox(&self, row_id: i64) -> Result<bool, StoreError> {
        let budget = self.budget;
        self.retrying_races("settle_outbox", |client| {
            Box::pin(outbox::settle(client, row_id, budget))
        })
        .await
    }

    /// The outbox's waiting and rejected rows (see [`outbox::backlog`]).
    pub async fn outbox_backlog(&self) -> Result<outbox::Backlog, StoreError> {
        let mut lent = self.lend().await?;
        let result = outbox::backlog(&**lent.client()).await;
        lent.finish();
        result
    }

    /// The oldest matches owed work, older than `grace_secs`, at most
    /// `limit` (see [`repair::scan`]).
    pub async fn repair_scan(&self, grace_secs: f64, limit: i64) -> Result<repair::Scan, StoreError> {
        let mut lent = self.lend().await?;
        let result = repair::scan(lent.client(), grace_secs, limit, self.budget).await;
        lent.finish();
        result
    }

    /// Sends repaired markers to the back of the line (see [`repair::touch`]).
    pub async fn repair_touch(&self, repaired: &[(i64, i64)]) -> Result<u64, StoreError> {
        let budget = self.budget;
        self.retrying_races("repair_touch", |client| {
            let repaired = repaired.to_vec();
            Box::pin(async move { repair::touch(client, &repaired, budget).await })
        })
        .await
    }

    /// Removes a marker owed nothing (see [`repair::clear_stale`]).
    pub async fn clear_stale_marker(&self, match_id: i64, generation: i64) -> Result<bool, StoreError> {
        let budget = self.budget;
        self.retrying_races("clear_stale_marker", |client| {
            Box::pin(repair::clear_stale(client, match_id, generation, budget))
        })
        .await
    }

    /// Marks a match postponed; then run [`Store::score_match`] to void.
    pub async fn postpone_match(&self, match_id: i64) -> Result<RecordOutcome, StoreError> {
        self.set_match_status(match_id, MatchStatus::Postponed).await
    }

    /// Marks a match cancelled; then run [`Store::score_match`] to void.
    pub async fn cancel_match(&self, match_id: i64) -> Result<RecordOutcome, StoreError> {
        self.set_match_status(match_id, MatchStatus::Cancelled).await
    }

    /// Scores or voids a match's predictions (see [`scoring::score_match`]).
    #[tracing::instrument(name = "db score_match", skip(self), fields(db.system = "postgresql", otel.kind = "client"))]
    pub async fn score_match(&self, match_id: i64) -> Result<ScoreOutcome, StoreError> {
        let budget = self.budget;
        self.retrying_races("score_match", |client| {
            Box::pin(scoring::score_match(client, match_id, budget))
        })
        .await
    }

    /// Recomputes the affected users' totals (see [`points::calculate_points`]).
    #[tracing::instrument(name = "db calculate_points", skip(self), fields(db.system = "postgresql", otel.kind = "client"))]
    pub async fn calculate_points(&self, match_id: i64) -> Result<PointsOutcome, StoreError> {
        let budget = self.budget;
        self.retrying_races("calculate_points", |client| {
            Box::pin(points::calculate_points(client, match_id, budget))
        })
        .await
    }

    /// Recomputes all totals (see [`points::rebuild_totals`]).
    #[tracing::instrument(name = "db rebuild_totals", skip(self), fields(db.system = "postgresql", otel.kind = "client"))]
    pub async fn rebuild_totals(&self) -> Result<i64, StoreError> {
        let budget = self.budget;
        self.retrying_races("rebuild_totals", |client| {
            Box::pin(points::rebuild_totals(client, budget))
        })
        .await
    }

    /// Publishes what changed (see [`views::refresh_views`]).
    #[tracing::instrument(name = "db refresh_views", skip(self), fields(db.system = "postgresql", otel.kind = "client"))]
    pub async fn refresh_views(&self, scope: Scope) -> Result<RefreshOutcome, StoreError> {
        let budget = self.budget;
        self.retrying_races("refresh_views", |client| {
            Box::pin(views::refresh_views(client, scope, budget))
        })
        .await
    }

    /// Fills an empty database with generated data (see [`seed::seed`]).
    pub async fn seed(
        &self,
        options: &SeedOptions,
        progress: &(dyn Fn(SeedProgress) + Send + Sync),
    ) -> Result<SeedSummary, StoreError> {
        let mut lent = self.lend().await?;
        let result = seed::seed(lent.client(), options, progress).await;
        lent.finish();
        result
    }

    /// One page of the overall (`None`) or a competition's leaderboard
    /// (see [`views::leaderboard`]).
    #[tracing::instrument(name = "db leaderboard", skip(self), fields(db.system = "postgresql", otel.kind = "client"))]
    pub async fn leaderboard(
        &self,
        competition: Option<i64>,
        top: i64,
        offset: i64,
    ) -> Result<Vec<LeaderboardRow>, StoreError> {
        let board = views::board_for(competition)?;
        let mut lent = self.lend().await?;
        let client = lent.client();
        let result = async {
            let statement = client.prepare_cached(views::LEADERBOARD_SQL).await?;
            let rows = client.query(&statement, &[&board, &top.max(0), &offset.max(0)]).await?;
            if rows.is_empty()
                && let Some(id) = competition
            {
                views::ensure_competition(&**client, id).await?;
            }
            Ok(rows.iter().map(views::leaderboard_row).collect())
        }
        .await;
        lent.finish();
        result
    }

    /// A competition's league table (see [`views::standings`]).
    #[tracing::instrument(name = "db standings", skip(self), fields(db.system = "postgresql", otel.kind = "client"))]
    pub async fn standings(&self, competition_id: i64) -> Result<Vec<StandingRow>, StoreError> {
        let mut lent = self.lend().await?;
        let client = lent.client();
        let result = async {
            let statement = client.prepare_cached(views::STANDINGS_SQL).await?;
            let rows = client.query(&statement, &[&competition_id]).await?;
            if rows.is_empty() {
                views::ensure_competition(&**client, competition_id).await?;
            }
            Ok(rows.iter().map(views::standing_row).collect())
        }
        .await;
        lent.finish();
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn send<T: Send>(_: &T) {}

    #[test]
    fn operation_futures_can_be_spawned() {
        // Job handlers run on a multi-threaded runtime: their futures, which
        // hold these, must be Send.
        let store = Store::connect_lazy("postgres://tally@127.0.0.1:1/tally", 1)
            .expect("lazy pool")
            .with_deadline(Instant::now());
        send(&store.score_match(1));
        send(&store.calculate_points(1));
        send(&store.refresh_views(Scope::All));
        send(&store.record_result(1, 1, 0));
        let job = serde_json::json!({});
        send(&store.record_result_with_job(1, 1, 0, &job));
        send(&store.settle_outbox(1));
        send(&store.repair_scan(0.0, 1));
        send(&store.relay_outbox(1, |_rows| async { Vec::new() }));
        send(&store.leaderboard(None, 10, 0));
        send(&store.ping());
    }
}
