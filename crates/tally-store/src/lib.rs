//! tally-store: the Postgres side of tally.
//!
//! Schema and migrations, recording results, scoring predictions
//! (`ScoreMatch`), per-user totals (`CalculatePoints`), the published
//! leaderboards and league tables (`RefreshViews`) and their reads, plus the
//! deterministic seed generator the demo and the benchmarks use.
//!
//! Map:
//!
//! - [`mod@migrate`]: forward-only migrations compiled in from `migrations/`.
//! - [`store`]: [`Store`], the pool every service holds.
//! - [`scoring`]: results, status changes, scoring rules.
//! - [`points`]: per-user totals, incrementally.
//! - [`views`]: refresh and reads of leaderboards and standings.
//! - [`outbox`]: jobs committed with their data, relayed to the queue.
//! - [`repair`]: the matches whose result never reached the totals.
//! - [`tx`]: how transactions start: explicit isolation, deadline-bounded
//!   statement and lock timeouts ([`tx::Budget`]).
//! - [`model`]: the plain types they exchange.
//! - [`seed`]: demo and benchmark data, loaded with COPY.
//!
//! Data flows result → scored predictions → `user_totals` → published
//! leaderboard, each step its own idempotent transaction; the schema comments
//! in `migrations/0002_leaderboards_and_standings.sql` explain why.

pub mod error;
mod locks;
pub mod migrate;
pub mod model;
pub mod outbox;
pub mod points;
pub mod repair;
pub mod scoring;
pub mod seed;
pub mod store;
pub mod tx;
pub mod views;

/// Run at the start of the write transactions that join a list of keys
/// against large tables (points, refresh). With the default
/// `random_page_cost` (4, tuned for spinning disks) the planner prefers to
/// hash-join a few thousand keys against a full scan of a 400k-row table,
/// which measured 4x slower than index lookups on a cached working set.
/// `SET LOCAL`: it ends with the transaction and touches nobody else.
pub(crate) const CACHED_WORKING_SET: &str = "SET LOCAL random_page_cost = 1.1";

pub use error::StoreError;
pub use migrate::{AppliedMigration, migrate, migrate_url};
pub use model::{
    LeaderboardRow, MatchStatus, PointsOutcome, RecordOutcome, RefreshOutcome, Scope, ScoreOutcome, StandingRow,
};
pub use scoring::ScoringRules;
pub use store::Store;
pub use tx::Budget;
