//! The outbox relay the workers run, and the step that closes its crash
//! window.
//!
//! A producer commits a job envelope into PostgreSQL's `job_outbox` with the
//! data it depends on (`tally_store::outbox`); the [`Relay`] moves the rows
//! to Redis. It wakes on `NOTIFY job_outbox` (sent when a transaction that
//! wrote rows commits), takes the oldest rows no other relay holds (`FOR
//! UPDATE SKIP LOCKED`: any number of relays, in any number of processes,
//! never take the same row at once), enqueues each under the job id
//! `outbox-<row id>`, and deletes the rows in the transaction that held
//! them. Without notifications (the listening connection broke) it polls
//! every `OUTBOX_POLL_SECS` until it listens again.
//!
//! A relay that dies after its push and before its commit leaves its rows
//! to the next relay, which pushes the same ids again: the engine absorbs
//! an id that is still live (waiting, scheduled or running). For a job
//! already finished by then, [`settling`] wraps every handler: a job whose
//! id is `outbox-<n>` deletes row `n` after its handler succeeded and before
//! the engine acknowledges it (waiting for a relay that still holds the
//! row). So a finished job never leaves a row behind, and no row is relayed
//! into a second job. A job that ended in the dead set is not live and has
//! not settled its row: a row left behind by a dead relay is relayed again,
//! and runs once more.
//!
//! An envelope that can never be enqueued (it does not decode, it is above
//! the size limit) is marked rejected with the reason and skipped from then
//! on; `tally queue stats` and the `tally_outbox_rejected_rows` gauge show
//! it. A queue that cannot be reached leaves the rows in place and the
//! relay backs off (200 ms doubling to 5 s).

use std::future::Future;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures::future::{BoxFuture, join_all};
use tally_jobs::{Envelope, Job};
use tally_queue::{JobContext, JobError, Producer, QueueError};
use tally_store::outbox::{self, Backlog, BatchOutcome, Listener, OutboxRow, Pushed};
use tally_store::{Budget, Store, StoreError};

use tally_service::{Env, SettingsError};

/// How long one relay batch (take, push, delete) may hold its rows.
const BATCH_BUDGET: Duration = Duration::from_secs(30);
/// How often the backlog gauges are sampled.
const GAUGE_EVERY: Duration = Duration::from_secs(5);
/// Longest pause between attempts while PostgreSQL or Redis is away.
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// Settings of the relay, from a worker's environment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RelaySettings {
    /// `OUTBOX_RELAY` (`on` or `off`, default `on`): whether this process relays.
    pub enabled: bool,
    /// `OUTBOX_BATCH`: rows taken per transaction (default 100).
    pub batch: usize,
    /// `OUTBOX_POLL_SECS`: how often the outbox is read without a
    /// notification, a safety net for missed ones (default 5).
    pub poll: Duration,
}

impl Default for RelaySettings {
    fn default() -> Self {
        Self {
            enabled: true,
            batch: 100,
            poll: Duration::from_secs(5),
        }
    }
}

impl RelaySettings {
    /// Reads and validates the settings; the error names the variable.
    pub fn from_env(env: &Env) -> Result<Self, SettingsError> {
        Ok(Self {
            enabled: env.switch("OUTBOX_RELAY", true)?,
            batch: env.number("OUTBOX_BATCH", 100, 1, 1000)? as usize,
            poll: env.seconds("OUTBOX_POLL_SECS", 5, 1, 3600)?,
        })
    }
}

/// What one [`Relay::drain`] did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Drained {
    /// Rows pushed and deleted.
    pub relayed: usize,
    /// Rows marked rejected.
    pub rejected: usize,
    /// Transactions run.
    pub batches: usize,
}

/// Why a drain stopped early.
#[derive(Debug, thiserror::Error)]
pub enum RelayError {
    /// PostgreSQL failed (unreachable, timed out, …).
    #[error("outbox: {0}")]
    Store(#[from] StoreError),
    /// Redis could not take some rows; they stay for the next attempt.
    #[error("outbox: {kept} row(s) could not be enqueued (queue unavailable); kept for the next attempt")]
    QueueUnavailable {
        /// Rows left in the outbox.
        kept: usize,
    },
}

/// Moves outbox rows to the queues. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Relay {
    store: Store,
    producer: Producer,
    database_url: String,
    settings: RelaySettings,
}

impl Relay {
    /// A relay over `store` (whose database `database_url` names, for the
    /// listening connection) into `producer`'s Redis.
    pub fn new(store: Store, producer: Producer, database_url: impl Into<String>, settings: RelaySettings) -> Self {
        Self {
            store,
            producer,
            database_url: database_url.into(),
            settings,
        }
    }

    /// Relays batches until no free row is left (rows other relays hold are
    /// theirs; rejected rows are skipped).
    pub async fn drain(&self) -> Result<Drained, RelayError> {
        let mut drained = Drained::default();
        let store = self.store.with_budget(Budget::within(BATCH_BUDGET));
        loop {
            let producer = self.producer.clone();
            let outcome: BatchOutcome = store
                .relay_outbox(self.settings.batch as i64, move |rows| push_rows(producer, rows))
                .await?;
            drained.batches += 1;
            drained.relayed += outcome.relayed;
            drained.rejected += outcome.rejected;
            if outcome.kept > 0 {
                return Err(RelayError::QueueUnavailable { kept: outcome.kept });
            }
            if outcome.taken < self.settings.batch {
                return Ok(drained);
            }
        }
    }

    /// Samples the backlog gauges once.
    pub async fn sample_backlog(&self) -> Result<Backlog, StoreError> {
        let backlog = self.store.outbox_backlog().await?;
        record_backlog(&backlog);
        Ok(backlog)
    }

    /// Runs until `shutdown` resolves: drain, wait for a notification (or
    /// the poll interval), drain again. Errors are logged and retried with
    /// backoff; they never stop the relay. Samples the backlog gauges every
    /// few seconds meanwhile.
    pub async fn run_until(self, shutdown: impl Future<Output = ()>) {
        tracing::info!(
            batch = self.settings.batch,
            poll_secs = self.settings.poll.as_secs(),
            "outbox relay running"
        );
        let gauges = async {
            let mut tick = tokio::time::interval(GAUGE_EVERY);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                if let Err(e) = self.sample_backlog().await {
                    tracing::debug!(error = %e, "outbox backlog not sampled");
                }
            }
        };
        tokio::select! {
            () = self.relay_until(shutdown) => {}
            () = gauges => {}
        }
        tracing::info!("outbox relay stopped");
    }

    async fn relay_until(&self, shutdown: impl Future<Output = ()>) {
        let mut shutdown = std::pin::pin!(shutdown);
        let mut listener: Option<Listener> = None;
        let mut backoff = Duration::from_millis(200);
        loop {
            if listener.is_none() {
                match Listener::connect(&self.database_url).await {
                    Ok(l) => listener = Some(l),
                    Err(e) => tracing::warn!(error = %e, "outbox relay cannot listen for notifications; polling"),
                }
            }
            let pause = match self.drain().await {
                Ok(drained) => {
                    backoff = Duration::from_millis(200);
                    if drained.relayed + drained.rejected > 0 {
                        tracing::debug!(?drained, "outbox drained");
                    }
                    None
                }
                Err(e) => {
                    metrics::counter!("tally_outbox_relay_errors_total").increment(1);
                    tracing::warn!(error = %e, retry_in_ms = backoff.as_millis(), "outbox relay failed; retrying");
                    let pause = backoff;
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                    Some(pause)
                }
            };
            // Without a listener, poll at the backoff pace until it is back.
            let wait = match (pause, &listener) {
                (Some(pause), _) => pause,
                (None, Some(_)) => self.settings.poll,
                (None, None) => self.settings.poll.min(MAX_BACKOFF),
            };
            tokio::select! {
                () = &mut shutdown => break,
                woke = notified(listener.as_mut()), if pause.is_none() => {
                    if !woke {
                        tracing::warn!("outbox relay lost its listening connection; reconnecting");
                        listener = None;
                    }
                }
                () = tokio::time::sleep(wait) => {}
            }
        }
    }
}

/// Waits for a notification; never resolves without a listener.
async fn notified(listener: Option<&mut Listener>) -> bool {
    match listener {
        Some(l) => l.notified().await,
        None => std::future::pending().await,
    }
}

/// Pushes a batch, all rows at once (the producer pipelines them on one
/// connection), one [`Pushed`] per row in order.
async fn push_rows(producer: Producer, rows: Vec<OutboxRow>) -> Vec<Pushed> {
    join_all(rows.into_iter().map(|row| push_row(&producer, row))).await
}

async fn push_row(producer: &Producer, row: OutboxRow) -> Pushed {
    let row_id = row.id;
    let created_at_ms = row.created_at_ms;
    let envelope = match envelope_of(row) {
        Ok(envelope) => envelope,
        Err(reason) => return reject(row_id, reason),
    };
    let queue = envelope.queue.clone();
    let id = envelope.id.clone();
    match producer.enqueue_envelope(envelope).await {
        Ok(enqueued) => {
            let outcome = if !enqueued.deduplicated {
                "enqueued"
            } else if enqueued.id == id {
                // Pushed before by a relay that died before its delete.
                "already_live"
            } else {
                // Coalesced into a waiting job with the same dedup key.
                "coalesced"
            };
            metrics::counter!("tally_outbox_relayed_total", "queue" => queue, "outcome" => outcome).increment(1);
            let lag_ms = now_ms().saturating_sub(created_at_ms.max(0) as u64);
            metrics::histogram!("tally_outbox_relay_lag_seconds").record(lag_ms as f64 / 1000.0);
            Pushed::Relayed
        }
        Err(e @ (QueueError::InvalidArgument(_) | QueueError::Encode(_))) => reject(row_id, e.to_string()),
        Err(e) => {
            tracing::debug!(row = row_id, error = %e, "outbox row not enqueued; kept");
            Pushed::Kept
        }
    }
}

fn reject(row_id: i64, reason: String) -> Pushed {
    metrics::counter!("tally_outbox_rejected_total").increment(1);
    tracing::error!(
        row = row_id,
        reason = %reason,
        "outbox row can never be enqueued; marked rejected (see job_outbox.rejection)"
    );
    Pushed::Rejected(reason)
}

/// The envelope of a row: its own JSON with the id `outbox-<row id>` (any
/// id written into it is replaced) and, when absent, `createdAtMs` from the
/// row. `Err` says why it can never be enqueued.
pub fn envelope_of(row: OutboxRow) -> Result<Envelope, String> {
    let serde_json::Value::Object(mut fields) = row.envelope else {
        return Err("the envelope is not a JSON object".into());
    };
    fields.insert("id".into(), outbox::job_id(row.id).into());
    fields
        .entry("createdAtMs")
        .or_insert_with(|| row.created_at_ms.max(0).into());
    let bytes = serde_json::to_vec(&serde_json::Value::Object(fields)).map_err(|e| e.to_string())?;
    Envelope::decode(&bytes).map_err(|e| e.to_string())
}

/// The envelope of `job` as an outbox row holds it: the job type's queue,
/// kind, policy and dedup key, `trace`, now as its creation time, and no
/// id (the relay gives it `outbox-<row id>`).
pub fn outbox_envelope<J: Job>(job: &J, trace: Option<tally_jobs::TraceContext>) -> serde_json::Value {
    let mut envelope = Envelope::new(job, String::new(), now_ms())
        .unwrap_or_else(|e| unreachable!("the job types serialise infallibly: {e}"));
    envelope.trace = trace;
    let mut value = serde_json::to_value(&envelope).unwrap_or_else(|e| unreachable!("an envelope serialises: {e}"));
    if let Some(fields) = value.as_object_mut() {
        fields.remove("id");
    }
    value
}

fn record_backlog(backlog: &Backlog) {
    metrics::gauge!("tally_outbox_pending_rows").set(backlog.pending as f64);
    metrics::gauge!("tally_outbox_rejected_rows").set(backlog.rejected as f64);
    metrics::gauge!("tally_outbox_oldest_pending_age_seconds")
        .set(backlog.oldest_pending_age_ms.unwrap_or(0) as f64 / 1000.0);
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Wraps a handler so that a job relayed from the outbox (`outbox-<n>`)
/// deletes its row once the handler succeeded, before the engine
/// acknowledges the job (see the module docs). Any other job is untouched.
/// A failed delete is retried like any transient failure (the handlers are
/// idempotent).
pub fn settling<J, F, Fut>(
    store: Store,
    handler: F,
) -> impl Fn(J, JobContext) -> BoxFuture<'static, Result<(), JobError>> + Send + Sync + 'static
where
    J: Job,
    F: Fn(J, JobContext) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<(), JobError>> + Send + 'static,
{
    move |job, ctx| {
        let row = outbox::row_id(&ctx.id);
        let deadline = ctx.deadline;
        let queue = ctx.queue.clone();
        let store = store.clone();
        let work = handler(job, ctx);
        Box::pin(async move {
            work.await?;
            let Some(row) = row else { return Ok(()) };
            match store.with_deadline(deadline).settle_outbox(row).await {
                Ok(true) => {
                    metrics::counter!("tally_outbox_settled_by_worker_total", "queue" => queue).increment(1);
                    tracing::info!(
                        row,
                        "outbox row still there after its job ran (its relay stopped between push and delete); deleted"
                    );
                    Ok(())
                }
                Ok(false) => Ok(()),
                Err(e) => Err(JobError::retry(format!(
                    "job done, but its outbox row {row} could not be deleted: {e}"
                ))),
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tally_jobs::{ScoreMatch, TraceContext};

    fn row(envelope: serde_json::Value) -> OutboxRow {
        OutboxRow {
            id: 42,
            envelope,
            created_at_ms: 1_700_000_000_000,
        }
    }

    #[test]
    fn an_outbox_envelope_becomes_the_job_outbox_42_and_keeps_its_trace() {
        let trace = TraceContext {
            traceparent: "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".into(),
            tracestate: None,
        };
        let written = outbox_envelope(&ScoreMatch { match_id: 7 }, Some(trace.clone()));
        assert!(written.get("id").is_none(), "{written}");
        let envelope = envelope_of(row(written)).expect("decodes");
        assert_eq!(envelope.id, "outbox-42");
        assert_eq!(
            (envelope.kind.as_str(), envelope.queue.as_str()),
            ("score_match", "scoring")
        );
        assert_eq!(envelope.trace, Some(trace));
        assert_eq!(envelope.payload_as::<ScoreMatch>().expect("payload").match_id, 7);

        // An id written by the producer is replaced; a missing creation time
        // comes from the row.
        let mut foreign = outbox_envelope(&ScoreMatch { match_id: 7 }, None);
        let fields = foreign.as_object_mut().expect("object");
        fields.insert("id".into(), "mine".into());
        fields.remove("createdAtMs");
        let envelope = envelope_of(row(foreign)).expect("decodes");
        assert_eq!(
            (envelope.id.as_str(), envelope.created_at_ms),
            ("outbox-42", 1_700_000_000_000)
        );
    }

    #[test]
    fn envelopes_that_cannot_decode_say_why() {
        let not_object = envelope_of(row(serde_json::json!([1]))).expect_err("array");
        assert!(not_object.contains("not a JSON object"), "{not_object}");
        let mut bad_policy = outbox_envelope(&ScoreMatch { match_id: 7 }, None);
        bad_policy["policy"] = serde_json::json!({ "maxAttempts": "three" });
        let error = envelope_of(row(bad_policy)).expect_err("bad policy");
        assert!(error.contains("malformed envelope"), "{error}");
        let mut future = outbox_envelope(&ScoreMatch { match_id: 7 }, None);
        future["v"] = 2.into();
        let error = envelope_of(row(future)).expect_err("version 2");
        assert!(error.contains("unsupported envelope version 2"), "{error}");
    }

    #[test]
    fn relay_settings_are_checked_and_name_the_variable() {
        let defaults = RelaySettings::from_env(&Env::from_pairs([])).expect("defaults");
        assert_eq!(defaults, RelaySettings::default());
        let off = RelaySettings::from_env(&Env::from_pairs([("OUTBOX_RELAY", "off")])).expect("off");
        assert!(!off.enabled);
        for (name, value) in [
            ("OUTBOX_RELAY", "maybe"),
            ("OUTBOX_BATCH", "0"),
            ("OUTBOX_BATCH", "1001"),
            ("OUTBOX_POLL_SECS", "0"),
        ] {
            let error = RelaySettings::from_env(&Env::from_pairs([(name, value)])).expect_err(value);
            assert!(error.to_string().contains(name), "{error}");
        }
    }
}
