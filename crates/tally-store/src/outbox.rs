//! The job outbox: jobs committed with the data they depend on, relayed to
//! the queue afterwards.
//!
//! A producer writes a job envelope into `job_outbox` inside its own
//! transaction ([`enqueue_in`]); the row commits or rolls back with the data,
//! so a committed result always has its job. A relay (in the workers, see
//! `tally_worker::outbox`) takes the oldest rows with [`relay_batch`]:
//! `FOR UPDATE SKIP LOCKED`, so several relays share the work and never take
//! the same row at once; it hands them to a push callback (this crate knows
//! nothing of Redis), then deletes the rows pushed and marks the rows
//! refused, in the same transaction. Committing that transaction is the
//! "delete" of the relay's "push, then delete".
//!
//! The job id of a row is `outbox-<id>` ([`job_id`]). A relay that dies after
//! its push and before its commit leaves the row to the next relay; pushing
//! the same id again is absorbed while the job is live (the engine's enqueue
//! is idempotent per id). To cover a job that already finished by then, the
//! worker running an `outbox-<id>` job deletes its row ([`settle`]) before it
//! acknowledges the job: a finished job never has a row left behind.
//!
//! Relays wake on `NOTIFY job_outbox`, sent by a trigger when a transaction
//! that inserted rows commits ([`Listener`]).

use std::future::Future;
use std::time::Duration;

use futures::StreamExt as _;
use serde::Serialize;
use tokio_postgres::{AsyncMessage, Client, GenericClient, IsolationLevel, NoTls};

use crate::error::StoreError;
use crate::tx::{self, Budget};

/// The `LISTEN` channel the insert trigger notifies.
pub const CHANNEL: &str = "job_outbox";

/// Prefix of the job id of an outbox row: `outbox-<row id>`.
pub const JOB_ID_PREFIX: &str = "outbox-";

/// Longest a relay's transaction may sit idle (waiting for Redis) before
/// PostgreSQL ends it and frees its rows for another relay.
const RELAY_IDLE_LIMIT: Duration = Duration::from_secs(60);

/// The job id a row is relayed under.
pub fn job_id(row_id: i64) -> String {
    format!("{JOB_ID_PREFIX}{row_id}")
}

/// The row id in a job id made by [`job_id`]; `None` for any other id.
pub fn row_id(job_id: &str) -> Option<i64> {
    let digits = job_id.strip_prefix(JOB_ID_PREFIX)?;
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok().filter(|id| *id > 0)
}

/// One row handed to the push callback.
#[derive(Debug, Clone, PartialEq)]
pub struct OutboxRow {
    /// The row id; the job id is [`job_id`] of it.
    pub id: i64,
    /// The envelope as written (its `id`, if any, is to be replaced).
    pub envelope: serde_json::Value,
    /// When the row was written, ms since the Unix epoch.
    pub created_at_ms: i64,
}

/// What the push callback did with one row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Pushed {
    /// The job is in the queue (new, or already live under its id): delete the row.
    Relayed,
    /// The envelope can never be enqueued: keep the row, marked with the
    /// reason, and skip it from now on.
    Rejected(String),
    /// Not pushed this time (the queue is unreachable): keep the row as it is.
    Kept,
}

/// What one [`relay_batch`] did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct BatchOutcome {
    /// Rows taken (locked) by this batch.
    pub taken: usize,
    /// Rows pushed and deleted.
    pub relayed: usize,
    /// Rows marked rejected.
    pub rejected: usize,
    /// Rows left for later (push failed).
    pub kept: usize,
}

/// The outbox's backlog, for metrics and `tally queue stats`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Backlog {
    /// Rows waiting for a relay.
    pub pending: i64,
    /// Age of the oldest waiting row, ms (`None` when nothing waits).
    pub oldest_pending_age_ms: Option<i64>,
    /// Rows a relay refused (see `rejection`); they wait for an operator.
    pub rejected: i64,
}

/// Writes a job into the outbox inside the caller's transaction (or as its
/// own statement) and returns the row id. The envelope must be a JSON object
/// with `v` = 1, `kind`, `queue`, `payload` and `policy`
/// (`job_outbox_envelope_shape`); an `id` in it is ignored.
pub async fn enqueue_in<C: GenericClient>(client: &C, envelope: &serde_json::Value) -> Result<i64, StoreError> {
    let row = client
        .query_one(
            "INSERT INTO job_outbox (envelope) VALUES ($1) RETURNING id",
            &[envelope],
        )
        .await?;
    Ok(row.get(0))
}

/// Takes up to `limit` of the oldest rows no other relay holds, hands them
/// to `push`, then deletes the relayed rows and marks the rejected ones, in
/// one transaction bounded by `budget`. The rows stay locked while `push`
/// runs, so no other relay takes them meanwhile; if this process dies
/// before the commit, they are free again for the next relay.
///
/// `push` must return one [`Pushed`] per row, in the rows' order.
pub async fn relay_batch<F, Fut>(
    client: &mut Client,
    limit: i64,
    budget: Budget,
    push: F,
) -> Result<BatchOutcome, StoreError>
where
    F: FnOnce(Vec<OutboxRow>) -> Fut,
    Fut: Future<Output = Vec<Pushed>>,
{
    // READ COMMITTED: SKIP LOCKED needs nothing more, and a relay must see
    // rows committed after an earlier batch of its own.
    let tx = tx::begin(client, IsolationLevel::ReadCommitted, budget).await?;
    tx.batch_execute(&format!(
        "SET LOCAL idle_in_transaction_session_timeout = {}",
        RELAY_IDLE_LIMIT.as_millis()
    ))
    .await?;
    let rows = tx
        .query(
            "SELECT id, envelope, (extract(epoch FROM created_at) * 1000)::bigint
             FROM job_outbox
             WHERE rejected_at IS NULL
             ORDER BY id
             LIMIT $1
             FOR UPDATE SKIP LOCKED",
            &[&limit.max(1)],
        )
        .await?;
    if rows.is_empty() {
        tx.commit().await?;
        return Ok(BatchOutcome::default());
    }
    let taken: Vec<OutboxRow> = rows
        .iter()
        .map(|row| OutboxRow {
            id: row.get(0),
            envelope: row.get(1),
            created_at_ms: row.get(2),
        })
        .collect();
    let ids: Vec<i64> = taken.iter().map(|row| row.id).collect();
    let results = push(taken).await;
    let mut outcome = BatchOutcome {
        taken: ids.len(),
        ..BatchOutcome::default()
    };
    let mut relayed = Vec::new();
    let mut rejected_ids = Vec::new();
    let mut reasons = Vec::new();
    for (i, id) in ids.iter().enumerate() {
        match results.get(i) {
            Some(Pushed::Relayed) => relayed.push(*id),
            Some(Pushed::Rejected(reason)) => {
                rejected_ids.push(*id);
                reasons.push(reason.clone());
            }
            Some(Pushed::Kept) | None => outcome.kept += 1,
        }
    }
    if !relayed.is_empty() {
        outcome.relayed = tx
            .execute("DELETE FROM job_outbox WHERE id = ANY($1)", &[&relayed])
            .await? as usize;
    }
    if !rejected_ids.is_empty() {
        outcome.rejected = tx
            .execute(
                "UPDATE job_outbox AS o
                 SET rejected_at = now(), rejection = r.reason
                 FROM unnest($1::bigint[], $2::text[]) AS r (id, reason)
                 WHERE o.id = r.id",
                &[&rejected_ids, &reasons],
            )
            .await? as usize;
    }
    tx.commit().await?;
    Ok(outcome)
}

/// Deletes the row of a relayed job; the worker calls it for an
/// `outbox-<id>` job after the handler succeeded and before acknowledging
/// it. Returns whether a row was still there (the relay died between its
/// push and its delete). Waits for a relay that still holds the row.
pub async fn settle(client: &mut Client, row_id: i64, budget: Budget) -> Result<bool, StoreError> {
    let tx = tx::begin(client, IsolationLevel::ReadCommitted, budget).await?;
    let deleted = tx.execute("DELETE FROM job_outbox WHERE id = $1", &[&row_id]).await?;
    tx.commit().await?;
    Ok(deleted > 0)
}

/// Counts the waiting and the rejected rows.
pub async fn backlog<C: GenericClient>(client: &C) -> Result<Backlog, StoreError> {
    let row = client
        .query_one(
            "SELECT count(*) FILTER (WHERE rejected_at IS NULL),
                    (extract(epoch FROM clock_timestamp() - min(created_at) FILTER (WHERE rejected_at IS NULL))
                     * 1000)::bigint,
                    count(*) FILTER (WHERE rejected_at IS NOT NULL)
             FROM job_outbox",
            &[],
        )
        .await?;
    Ok(Backlog {
        pending: row.get(0),
        oldest_pending_age_ms: row.get::<_, Option<i64>>(1).map(|ms| ms.max(0)),
        rejected: row.get(2),
    })
}

/// A connection listening on [`CHANNEL`]. Notifications are coalesced: any
/// number of commits between two waits wake the next wait once.
#[derive(Debug)]
pub struct Listener {
    /// Kept so the connection stays open; `LISTEN` was issued on it.
    _client: Client,
    /// One message per burst of notifications; closed when the connection ends.
    wakes: tokio::sync::mpsc::Receiver<()>,
}

impl Listener {
    /// Opens a dedicated connection to `database_url` (not from the pool: it
    /// must stay for the process's lifetime) and listens on [`CHANNEL`].
    pub async fn connect(database_url: &str) -> Result<Self, StoreError> {
        let (client, mut connection) = tokio_postgres::connect(database_url, NoTls).await?;
        let (wake, wakes) = tokio::sync::mpsc::channel(1);
        tokio::spawn(async move {
            let mut messages = futures::stream::poll_fn(move |cx| connection.poll_message(cx));
            while let Some(message) = messages.next().await {
                match message {
                    Ok(AsyncMessage::Notification(_)) => {
                        // Full: a wake-up is already pending, which covers this one.
                        let _ = wake.try_send(());
                    }
                    Ok(_) => {}
                    Err(error) => {
                        tracing::warn!(%error, "outbox listener connection failed");
                        break;
                    }
                }
            }
            // Dropping `wake` closes the channel: the relay reconnects.
        });
        client.batch_execute(&format!("LISTEN {CHANNEL}")).await?;
        Ok(Listener { _client: client, wakes })
    }

    /// Waits for the next notification. `false` when the connection is gone
    /// (notifications may have been missed: drain, then connect again).
    pub async fn notified(&mut self) -> bool {
        self.wakes.recv().await.is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn job_ids_round_trip_and_nothing_else_parses() {
        assert_eq!(job_id(17), "outbox-17");
        assert_eq!(row_id(&job_id(17)), Some(17));
        assert_eq!(row_id(&job_id(i64::MAX)), Some(i64::MAX));
        for other in [
            "",
            "outbox-",
            "outbox-0",
            "outbox--1",
            "outbox-+1",
            "outbox-1a",
            "outbox-99999999999999999999",
            "0193a0a5-7c2e-7d3a-9a41-2f0f3a5f7c11",
            "repair-score_match-3",
            "Outbox-1",
        ] {
            assert_eq!(row_id(other), None, "{other:?}");
        }
    }
}
