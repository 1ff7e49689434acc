//! The one error type of the crate.
//!
//! Variants are typed so a job handler can decide what the queue should do
//! without parsing messages: [`StoreError::is_transient`] says whether the same
//! call may succeed later (retry with backoff) or never will (give up).

use crate::model::MatchStatus;

/// Everything that can go wrong in tally-store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database URL could not be parsed or the pool could not be built.
    #[error("invalid database configuration: {0}")]
    Config(String),

    /// No connection could be taken from the pool (database down, timeout).
    #[error("database pool: {0}")]
    Pool(#[from] deadpool_postgres::PoolError),

    /// A query failed (connection lost, constraint violated, deadlock, …).
    #[error("database: {0}")]
    Postgres(#[from] tokio_postgres::Error),

    /// The match does not exist.
    #[error("match {match_id} not found")]
    MatchNotFound {
        /// The id asked for.
        match_id: i64,
    },

    /// The match has no final result yet (scheduled or live): retry later.
    #[error("match {match_id} is not finished (status {status})")]
    MatchNotFinished {
        /// The match.
        match_id: i64,
        /// Its current status.
        status: MatchStatus,
    },

    /// Points were asked for a match whose predictions are not all scored
    /// (or voided) yet: the scoring job has not run or not finished.
    #[error("match {match_id} is not scored yet ({pending} predictions pending)")]
    MatchNotScored {
        /// The match.
        match_id: i64,
        /// Predictions still waiting for scoring (or voiding).
        pending: i64,
    },

    /// A score outside 0..=99 was given.
    #[error("invalid score {home}-{away}: scores must be between 0 and {max}", max = crate::scoring::MAX_SCORE)]
    InvalidScore {
        /// Home goals as given.
        home: i32,
        /// Away goals as given.
        away: i32,
    },

    /// A different result is already recorded; results are final.
    #[error("match {match_id} already finished {recorded_home}-{recorded_away}, refusing {home}-{away}")]
    ResultConflict {
        /// The match.
        match_id: i64,
        /// Home goals on record.
        recorded_home: i32,
        /// Away goals on record.
        recorded_away: i32,
        /// Home goals attempted.
        home: i32,
        /// Away goals attempted.
        away: i32,
    },

    /// The status change is not allowed (for example un-finishing a match).
    #[error("match {match_id} cannot go from {from} to {to}")]
    InvalidTransition {
        /// The match.
        match_id: i64,
        /// Its current status.
        from: MatchStatus,
        /// The status asked for.
        to: MatchStatus,
    },

    /// The competition does not exist.
    #[error("competition {competition_id} not found")]
    CompetitionNotFound {
        /// The id asked for.
        competition_id: i64,
    },

    /// A status string read from the database or given by a caller is unknown.
    #[error("unknown match status {0:?}")]
    UnknownStatus(String),

    /// An already-applied migration file was edited after it ran.
    #[error("migration {version} ({name}) changed after it was applied: recorded checksum {recorded}, file {current}")]
    MigrationChecksum {
        /// Migration number.
        version: i32,
        /// Migration name.
        name: String,
        /// Checksum stored when it was applied.
        recorded: String,
        /// Checksum of the file compiled into this binary.
        current: String,
    },

    /// The database has migrations this binary does not know (it is older).
    #[error("database has migration {version} ({name}) unknown to this build")]
    UnknownMigration {
        /// Migration number.
        version: i32,
        /// Migration name as recorded.
        name: String,
    },

    /// Seeding was asked for with impossible sizes or into a non-empty database.
    #[error("cannot seed: {0}")]
    Seed(String),

    /// The benchmark could not run (no open matches left, a reader failed).
    #[error("benchmark: {0}")]
    Bench(String),
}

impl StoreError {
    /// Whether the database itself is unreachable (no connection, the
    /// connection broke, the server is shutting down or starting up), as
    /// opposed to a statement failing. Such a call is worth repeating as soon
    /// as the database is back, without counting it against the job.
    pub fn is_unavailable(&self) -> bool {
        match self {
            Self::Pool(_) => true,
            Self::Postgres(error) => error.code().is_none_or(|code| {
                let code = code.code();
                code.starts_with("08") || code.starts_with("57P0")
            }),
            _ => false,
        }
    }

    /// Whether a concurrent transaction got in the way of this one: a
    /// deadlock (`40P01`), a serialization failure (`40001`) or a unique
    /// violation (`23505`). tally's writers insert a key only after checking
    /// it is absent (under locks that make the check reliable at READ
    /// COMMITTED, see [`crate::tx`]), so a duplicate key means another writer
    /// inserted the same row between the check and the insert; running the
    /// whole transaction again sees that row and updates it instead. The
    /// store repeats such calls a few times itself ([`crate::Store`]), and
    /// they count as transient.
    pub fn is_race(&self) -> bool {
        self.sqlstate()
            .is_some_and(|code| matches!(code, "40P01" | "40001" | "23505"))
    }

    /// Whether a statement was stopped because it ran out of time: a
    /// `statement_timeout` or cancel request (`57014`) or a `lock_timeout`
    /// (`55P03`). A bounded transaction (see [`crate::tx::Budget`]) ends
    /// this way when the job attempt's deadline comes; nothing was written.
    pub fn is_timeout(&self) -> bool {
        self.sqlstate().is_some_and(|code| matches!(code, "57014" | "55P03"))
    }

    /// The SQLSTATE of a failed statement, if this is one.
    pub fn sqlstate(&self) -> Option<&str> {
        match self {
            Self::Postgres(error) => error.code().map(tokio_postgres::error::SqlState::code),
            _ => None,
        }
    }

    /// Whether the same call may succeed later without anyone changing it:
    /// connection problems, races with concurrent writers ([`Self::is_race`]:
    /// deadlocks, serialization failures, unique violations), statements cut
    /// off by a timeout ([`Self::is_timeout`]), a match not finished or not
    /// scored yet. Everything else (missing rows, conflicting results, other
    /// constraint violations) will fail again: give up.
    pub fn is_transient(&self) -> bool {
        match self {
            Self::Pool(_) | Self::MatchNotScored { .. } => true,
            Self::MatchNotFinished { status, .. } => {
                matches!(status, MatchStatus::Scheduled | MatchStatus::Live)
            }
            Self::Postgres(error) => match error.code() {
                // No SQLSTATE: the connection broke, not the statement.
                None => true,
                Some(code) => {
                    let code = code.code();
                    // 40: transaction rollback (deadlock, serialization);
                    // 08: connection exception; 57P0x: server shutting down;
                    // 53: insufficient resources; races and timeouts above.
                    code.starts_with("40")
                        || code.starts_with("08")
                        || code.starts_with("57P0")
                        || code.starts_with("53")
                        || self.is_race()
                        || self.is_timeout()
                }
            },
            _ => false,
        }
    }
}
