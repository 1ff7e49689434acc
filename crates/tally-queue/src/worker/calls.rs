//! The Redis calls of a worker's driver: claim (with the acknowledgements of
//! finished jobs), acknowledge, report a failure, requeue at shutdown, and
//! the retry loop around the background ones.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use tracing::{debug, error, info, warn};

use super::runtime::{Finished, Shared};
use crate::retry::RetryBackoff;
use crate::{JobEvent, QueueError, scripts};

/// What a finished claim call hands back.
pub(super) struct ClaimDone {
    pub(super) asked: usize,
    pub(super) sent: Instant,
    pub(super) acks: Vec<Finished>,
    pub(super) request: ClaimRequest,
    pub(super) result: Result<ClaimReply, QueueError>,
}

/// Identifies a claim call, so that it can be sent again after its reply was
/// lost and get the same jobs back (see `claim_jobs.lua`).
#[derive(Debug, Clone, Copy)]
pub(super) struct ClaimRequest {
    pub(super) id: u64,
    pub(super) retry: bool,
}

pub(super) use crate::scripts::ClaimReply;

/// Acknowledges `acks` and claims up to `count` jobs, in one script call.
pub(super) async fn claim_jobs(
    shared: Arc<Shared>,
    count: usize,
    start_now: usize,
    acks: Vec<Finished>,
    request: ClaimRequest,
) -> ClaimDone {
    let sent = Instant::now();
    let result = shared
        .client
        .observe(claim_call(&shared, count, start_now, &acks, Some(request)).await);
    ClaimDone {
        asked: count,
        sent,
        acks,
        request,
        result,
    }
}

pub(super) async fn claim_call(
    shared: &Shared,
    count: usize,
    start_now: usize,
    acks: &[Finished],
    request: Option<ClaimRequest>,
) -> Result<ClaimReply, QueueError> {
    scripts::claim_jobs(
        &shared.client,
        &shared.keys,
        &shared.worker_id,
        request.map(|r| (r.retry, r.id)),
        count,
        start_now,
        acks.iter().map(|job| (job.id.as_str(), job.token)),
    )
    .await
}

/// Runs a Redis call until it succeeds, fails for good, or `give_up_after`
/// passes; transient errors are retried with backoff.
pub(crate) async fn with_retries<T, F, Fut>(
    shared: &Shared,
    what: &str,
    give_up_after: Duration,
    mut call: F,
) -> Option<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, QueueError>>,
{
    let config = shared.client.config();
    let mut backoff = RetryBackoff::new(config.retry_backoff_min, config.retry_backoff_max);
    let started = Instant::now();
    loop {
        match shared.client.observe(call().await) {
            Ok(value) => return Some(value),
            Err(err) if err.is_unavailable() && started.elapsed() < give_up_after => {
                let delay = backoff.next_delay();
                warn!(queue = %shared.queue, error = %err, ?delay, "{what} failed; retrying");
                tokio::time::sleep(delay).await;
            }
            Err(err) => {
                error!(queue = %shared.queue, error = %err, "{what} failed; giving up (the reaper will recover the job)");
                return None;
            }
        }
    }
}

/// How long background acknowledgements keep retrying while Redis is away.
pub(super) fn ack_patience(shared: &Shared) -> Duration {
    (shared.client.config().lease * 4).max(Duration::from_secs(30))
}

/// Acknowledges a batch of successful attempts.
pub(super) async fn acknowledge(shared: Arc<Shared>, batch: Vec<Finished>) {
    let keys = &shared.keys;
    let mut tries = 0_u32;
    let reply = with_retries(&shared, "acknowledgement", ack_patience(&shared), || {
        tries += 1;
        scripts::complete_jobs(
            &shared.client,
            keys,
            batch.iter().map(|job| (job.id.as_str(), job.token)),
        )
    })
    .await;
    if let Some(reply) = reply {
        report_acks(&shared, batch, reply, tries > 1);
    }
}

/// Counts and reports acknowledged attempts (events for the completed ones).
/// `retried`: the batch was sent before by a call that failed, so "already
/// finished" (status 2) means that earlier call finished it.
pub(super) fn report_acks(shared: &Shared, batch: Vec<Finished>, statuses: Vec<i64>, retried: bool) {
    for (job, status) in batch.into_iter().zip(statuses) {
        let ours = status == 1 || (status == 2 && (retried || job.resent));
        if ours {
            shared.counters.completed.fetch_add(1, Ordering::Relaxed);
            debug!(queue = %shared.queue, id = %job.id, kind = %job.kind, attempt = job.attempt, "completed");
            shared.events.on_completed(&JobEvent {
                queue: shared.queue.clone(),
                kind: Some(job.kind),
                id: job.id,
                attempt: job.attempt,
                duration: Some(job.duration),
                wait: job.wait,
                error: None,
            });
        } else if status == 2 {
            shared.counters.stale.fetch_add(1, Ordering::Relaxed);
            warn!(queue = %shared.queue, id = %job.id, token = job.token, "completion not recorded: the job was recovered and already finished elsewhere");
        } else {
            shared.counters.stale.fetch_add(1, Ordering::Relaxed);
            warn!(queue = %shared.queue, id = %job.id, token = job.token, "completion rejected: stale token (the job was recovered and runs again elsewhere)");
        }
    }
}

/// Records a failed attempt: retry at `due` (ms), or dead when `due` < 0.
pub(super) async fn report_failure(
    shared: Arc<Shared>,
    id: Vec<u8>,
    token: u64,
    due: i64,
    reason: String,
    event: JobEvent,
) {
    let keys = &shared.keys;
    let status = with_retries(&shared, "failure report", ack_patience(&shared), || {
        scripts::fail_job(&shared.client, keys, &id, token, due, &reason)
    })
    .await;
    match status {
        Some(1) => {
            shared.counters.retried.fetch_add(1, Ordering::Relaxed);
            warn!(queue = %shared.queue, id = %event.id, attempt = event.attempt, error = %reason, "attempt failed; retry scheduled");
            shared.events.on_failed(&event);
        }
        Some(2) => {
            shared.counters.dead.fetch_add(1, Ordering::Relaxed);
            // A warning, not an error: the `on_dead` hook is the reporting
            // channel (one tagged Sentry event); an error-level log line
            // would be a second, untagged event for the same job.
            warn!(queue = %shared.queue, id = %event.id, attempt = event.attempt, error = %reason, "job moved to the dead set");
            shared.events.on_dead(&event);
        }
        Some(_) => {
            shared.counters.stale.fetch_add(1, Ordering::Relaxed);
            warn!(queue = %shared.queue, id = %event.id, "failure report rejected: stale token");
        }
        None => {}
    }
}

/// Puts unfinished attempts back at the head of their ready list; `why`
/// names the occasion in logs ("requeue at shutdown").
pub(super) async fn requeue(shared: &Arc<Shared>, why: &str, jobs: &[(String, u64)], patience: Duration) {
    let keys = &shared.keys;
    let reply = with_retries(shared, why, patience, || {
        scripts::requeue_jobs(&shared.client, keys, jobs)
    })
    .await;
    let moved = reply.map_or(0, |r| r.iter().filter(|s| **s == 1).count()) as u64;
    shared.counters.requeued.fetch_add(moved, Ordering::Relaxed);
    info!(queue = %shared.queue, requeued = moved, of = jobs.len(), why, "unfinished jobs put back at the head of the queue");
}
