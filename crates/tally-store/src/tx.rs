//! How every transaction of tally-store starts: an explicit isolation level
//! and, when the caller has a deadline, bounded statements and lock waits.
//!
//! A job attempt has a deadline (its timeout). When it passes, the queue
//! engine drops the handler's future, but dropping a future does not stop a
//! statement already sent to PostgreSQL: without a bound it would keep
//! running, holding its row and advisory locks, long after the attempt was
//! given up. So a transaction started with a bounded [`Budget`] sets
//! `statement_timeout` and `lock_timeout` (`SET LOCAL`: they end with the
//! transaction and never leak to the next user of a pooled connection) from
//! the time left, and the server itself ends the work. The other half (a
//! future dropped mid-statement, before either timeout fires) is handled by
//! the pool guard in [`crate::store`], which sends a cancel request and
//! keeps the connection out of the pool.
//!
//! The isolation level is always stated instead of inherited from the
//! session or the database (`default_transaction_isolation` may be set to
//! something else by an administrator); each caller says why it needs the
//! level it asks for.

use std::time::{Duration, Instant};

use tokio_postgres::{Client, IsolationLevel, Transaction};

use crate::error::StoreError;

/// The shortest statement or lock timeout a bounded transaction gets, even
/// when its deadline is (almost) past: enough for a short statement to
/// finish, never zero (which PostgreSQL reads as "no timeout").
pub const MIN_TIMEOUT: Duration = Duration::from_millis(100);

/// How long the database work of one call may take: unbounded, or until a
/// deadline (a job attempt's, see `tally_queue::JobContext::deadline`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Budget {
    deadline: Option<Instant>,
}

impl Budget {
    /// No deadline: statements run under the session's own settings.
    pub const UNBOUNDED: Budget = Budget { deadline: None };

    /// Work must end by `deadline`.
    pub fn until(deadline: Instant) -> Self {
        Self {
            deadline: Some(deadline),
        }
    }

    /// Work must end within `time` from now.
    pub fn within(time: Duration) -> Self {
        let now = Instant::now();
        Self {
            deadline: Some(
                now.checked_add(time)
                    .unwrap_or_else(|| now + Duration::from_secs(86_400 * 365)),
            ),
        }
    }

    /// The deadline, if any.
    pub fn deadline(&self) -> Option<Instant> {
        self.deadline
    }

    /// Time left before the deadline (zero once passed); `None` when unbounded.
    pub fn remaining(&self) -> Option<Duration> {
        self.deadline.map(|d| d.saturating_duration_since(Instant::now()))
    }

    /// The `statement_timeout` and `lock_timeout` a transaction started now
    /// gets: nine tenths of the time left (so the server's own error, with a
    /// clean rollback on a connection that stays usable, normally arrives
    /// before the attempt's deadline drops the future), at least
    /// [`MIN_TIMEOUT`]. `None` when unbounded.
    pub fn statement_timeout(&self) -> Option<Duration> {
        self.remaining().map(|left| (left * 9 / 10).max(MIN_TIMEOUT))
    }
}

/// Starts a transaction at `isolation` and bounds it by `budget` (see the
/// module docs). Every transaction in this crate starts here.
pub async fn begin(
    client: &mut Client,
    isolation: IsolationLevel,
    budget: Budget,
) -> Result<Transaction<'_>, StoreError> {
    let tx = client.build_transaction().isolation_level(isolation).start().await?;
    bound(&tx, budget).await?;
    Ok(tx)
}

/// Applies `budget` to an open transaction (`SET LOCAL statement_timeout`
/// and `lock_timeout`); nothing when unbounded. The statement timeout counts
/// per statement: a transaction of several statements can outlast it, which
/// the pool guard covers when the deadline drops the caller.
pub async fn bound(tx: &Transaction<'_>, budget: Budget) -> Result<(), StoreError> {
    if let Some(limit) = budget.statement_timeout() {
        // Integers are milliseconds for both settings; no quoting involved.
        let ms = limit.as_millis().max(1);
        tx.batch_execute(&format!(
            "SET LOCAL statement_timeout = {ms}; SET LOCAL lock_timeout = {ms}"
        ))
        .await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn budgets_bound_statements_with_a_floor() {
        assert_eq!(Budget::UNBOUNDED.statement_timeout(), None);
        assert_eq!(Budget::default(), Budget::UNBOUNDED);
        let past = Budget::until(Instant::now().checked_sub(Duration::from_secs(1)).expect("clock"));
        assert_eq!(past.remaining(), Some(Duration::ZERO));
        assert_eq!(past.statement_timeout(), Some(MIN_TIMEOUT));
        let ten = Budget::within(Duration::from_secs(10))
            .statement_timeout()
            .expect("bounded");
        assert!(
            ten <= Duration::from_secs(9) && ten > Duration::from_millis(8_900),
            "{ten:?}"
        );
        assert!(Budget::within(Duration::MAX).statement_timeout().is_some());
    }
}
