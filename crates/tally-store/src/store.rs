//! [`Store`]: a connection pool and the operations the services call.
//!
//! Every operation takes a connection from the pool for its own duration and
//! runs its own transaction; the free functions in the other modules do the
//! work on a plain `tokio_postgres::Client` for callers that bring their own.
//! Reads use statements prepared once per pooled connection.

use std::str::FromStr;
use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use tokio_postgres::NoTls;

use crate::error::StoreError;
use crate::migrate::{self, AppliedMigration};
use crate::model::{
    LeaderboardRow, MatchStatus, PointsOutcome, RecordOutcome, RefreshOutcome, Scope, ScoreOutcome, StandingRow,
};
use crate::seed::{SeedOptions, SeedProgress, SeedSummary};
use crate::{points, scoring, seed, views};

/// How long an operation waits for a free pooled connection before failing
/// with a (transient) pool error.
const POOL_WAIT: Duration = Duration::from_secs(30);
/// How long opening a new connection may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// The Postgres side of tally, behind a connection pool. Cheap to clone.
#[derive(Clone)]
pub struct Store {
    /// Connections, opened lazily, at most `pool_size`.
    pool: Pool,
}

impl std::fmt::Debug for Store {
    // The pool's configuration holds the password: show only its size.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("pool_size", &self.pool.status().max_size)
            .finish_non_exhaustive()
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
        Ok(Self { pool })
    }

    /// Builds the pool and checks that one connection works.
    pub async fn connect(database_url: &str, pool_size: usize) -> Result<Self, StoreError> {
        let store = Self::connect_lazy(database_url, pool_size)?;
        store.ping().await?;
        Ok(store)
    }

    /// Wraps an existing pool.
    pub fn from_pool(pool: Pool) -> Self {
        Self { pool }
    }

    /// The underlying pool, for callers with their own queries.
    pub fn pool(&self) -> &Pool {
        &self.pool
    }

    /// Readiness probe: a connection can be taken and answers `SELECT 1`.
    pub async fn ping(&self) -> Result<(), StoreError> {
        let client = self.pool.get().await?;
        client.simple_query("SELECT 1").await?;
        Ok(())
    }

    /// Applies pending migrations (see [`migrate::migrate`]).
    pub async fn migrate(&self) -> Result<Vec<AppliedMigration>, StoreError> {
        let mut client = self.pool.get().await?;
        migrate::migrate(&mut client).await
    }

    /// Records a final score (see [`scoring::record_result`]).
    #[tracing::instrument(name = "db record_result", skip(self), fields(db.system = "postgresql", otel.kind = "client"))]
    pub async fn record_result(&self, match_id: i64, home: i32, away: i32) -> Result<RecordOutcome, StoreError> {
        let mut client = self.pool.get().await?;
        scoring::record_result(&mut client, match_id, home, away).await
    }

    /// Changes a match's status (see [`scoring::set_match_status`]).
    #[tracing::instrument(name = "db set_match_status", skip(self), fields(db.system = "postgresql", otel.kind = "client"))]
    pub async fn set_match_status(&self, match_id: i64, status: MatchStatus) -> Result<RecordOutcome, StoreError> {
        let mut client = self.pool.get().await?;
        scoring::set_match_status(&mut client, match_id, status).await
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
        let mut client = self.pool.get().await?;
        scoring::score_match(&mut client, match_id).await
    }

    /// Recomputes the affected users' totals (see [`points::calculate_points`]).
    #[tracing::instrument(name = "db calculate_points", skip(self), fields(db.system = "postgresql", otel.kind = "client"))]
    pub async fn calculate_points(&self, match_id: i64) -> Result<PointsOutcome, StoreError> {
        let mut client = self.pool.get().await?;
        points::calculate_points(&mut client, match_id).await
    }

    /// Recomputes all totals (see [`points::rebuild_totals`]).
    #[tracing::instrument(name = "db rebuild_totals", skip(self), fields(db.system = "postgresql", otel.kind = "client"))]
    pub async fn rebuild_totals(&self) -> Result<i64, StoreError> {
        let mut client = self.pool.get().await?;
        points::rebuild_totals(&mut client).await
    }

    /// Publishes what changed (see [`views::refresh_views`]).
    #[tracing::instrument(name = "db refresh_views", skip(self), fields(db.system = "postgresql", otel.kind = "client"))]
    pub async fn refresh_views(&self, scope: Scope) -> Result<RefreshOutcome, StoreError> {
        let mut client = self.pool.get().await?;
        views::refresh_views(&mut client, scope).await
    }

    /// Fills an empty database with generated data (see [`seed::seed`]).
    pub async fn seed(
        &self,
        options: &SeedOptions,
        progress: &(dyn Fn(SeedProgress) + Send + Sync),
    ) -> Result<SeedSummary, StoreError> {
        let mut client = self.pool.get().await?;
        seed::seed(&mut client, options, progress).await
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
        let client = self.pool.get().await?;
        let statement = client.prepare_cached(views::LEADERBOARD_SQL).await?;
        let rows = client.query(&statement, &[&board, &top.max(0), &offset.max(0)]).await?;
        if rows.is_empty()
            && let Some(id) = competition
        {
            views::ensure_competition(&**client, id).await?;
        }
        Ok(rows.iter().map(views::leaderboard_row).collect())
    }

    /// A competition's league table (see [`views::standings`]).
    #[tracing::instrument(name = "db standings", skip(self), fields(db.system = "postgresql", otel.kind = "client"))]
    pub async fn standings(&self, competition_id: i64) -> Result<Vec<StandingRow>, StoreError> {
        let client = self.pool.get().await?;
        let statement = client.prepare_cached(views::STANDINGS_SQL).await?;
        let rows = client.query(&statement, &[&competition_id]).await?;
        if rows.is_empty() {
            views::ensure_competition(&**client, competition_id).await?;
        }
        Ok(rows.iter().map(views::standing_row).collect())
    }
}
