//! The scheduling policy of a worker: the claim loop (how many jobs to ask
//! for, how many to start at once, when to claim ahead), starting attempts,
//! their ends, and the drain at shutdown. The Redis calls are in
//! `calls.rs`.

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::pin::{Pin, pin};
use std::sync::atomic::Ordering;
use std::sync::{Arc, PoisonError};
use std::time::{Duration, Instant};

use futures::StreamExt as _;
use futures::stream::FuturesUnordered;
use tally_jobs::EnvelopeRef;
use tokio::sync::{Notify, watch};
use tokio::task::{Id as TaskId, JoinError, JoinSet};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::calls::{ClaimDone, ClaimRequest, acknowledge, claim_jobs, report_acks, report_failure, requeue};
use super::runtime::{Claimed, Finished, LeaseTable, Outcome, Running, Shared};
use super::{ErasedHandler, HandlerFuture, JobContext, JobError};
use crate::JobEvent;
use crate::clock::{millis, now_ms};
use crate::keys::MAX_CLAIM_BATCH;
use crate::retry::RetryBackoff;

/// A claim call in flight. Its output carries how many jobs it asked for,
/// when it was sent, and the acknowledgements it was sent with (so they can
/// be retried if the call fails).
pub(super) type ClaimFuture = Pin<Box<dyn Future<Output = ClaimDone> + Send>>;

pub(super) struct Driver {
    pub(super) shared: Arc<Shared>,
    pub(super) handlers: HashMap<&'static str, Arc<dyn ErasedHandler>>,
    pub(super) job_timeout: Option<Duration>,
    pub(super) drain_timeout: Duration,
    /// Running attempts.
    pub(super) jobs: JoinSet<Outcome>,
    pub(super) by_task: HashMap<TaskId, Running>,
    pub(super) leases: LeaseTable,
    /// Background acknowledgements and failure reports.
    pub(super) finishers: JoinSet<()>,
    /// Successful attempts not yet sent for acknowledgement.
    pub(super) completions: Vec<Finished>,
    /// Claimed jobs Redis was told start at once (a slot is theirs).
    pub(super) starting: VecDeque<(Claimed, CancellationToken)>,
    /// Jobs claimed ahead, waiting for a free slot (held: leased, covered by
    /// heartbeats, not charged a crash if this process dies).
    pub(super) buffer: VecDeque<(Claimed, CancellationToken)>,
    /// Whether to claim ahead of free slots when handlers are fast.
    pub(super) prefetch: bool,
    /// The slots that bound claiming ahead: the worker's whole concurrency
    /// (more than `concurrency` in a lane of a partitioned queue).
    pub(super) ahead_of: usize,
    /// Recent claim round trip, µs.
    pub(super) rtt_us: Ewma,
    /// Recent handler duration, µs.
    pub(super) handler_us: Ewma,
    /// When a job last left the buffer for a slot (or the buffer was
    /// empty): jobs held longer than `HOLD_LIMIT` without one starting are
    /// given back.
    pub(super) buffer_moved: tokio::time::Instant,
}

/// Bound of claiming ahead, in multiples of the concurrency. Claimed-ahead
/// jobs wait about one round trip at most (only handlers much faster than a
/// round trip cause any), so a few times the concurrency is harmless and
/// makes each script call carry a bigger batch.
pub(super) const MAX_AHEAD_FACTOR: usize = 4;

/// The bound of claiming ahead is never below this, so that a worker of
/// low concurrency with very fast handlers still claims in batches big
/// enough to amortise a script call (a worker of concurrency 5 would
/// otherwise carry about 10 jobs a call; at 50, about 100).
const MIN_AHEAD_BOUND: usize = 200;

/// Longest the buffer of jobs claimed ahead may go without a job leaving it
/// for a slot (every slot taken by handlers slower than the estimate that
/// claimed them). Then the held jobs go back to the head of their ready
/// list, without spending an attempt, for other workers to take.
const HOLD_LIMIT: Duration = Duration::from_millis(100);

/// Longest a finished job's acknowledgement waits to join a bigger batch
/// (its lease stays in Redis meanwhile; a worker killed now would see it run
/// again).
const ACK_DELAY: Duration = Duration::from_millis(5);

/// Exponentially weighted moving average.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct Ewma(Option<f64>);

impl Ewma {
    fn add(&mut self, sample: f64) {
        self.0 = Some(self.0.map_or(sample, |avg| avg * 0.8 + sample * 0.2));
    }
}

impl Driver {
    /// This lane's slots now (a share that shrinks when the queue gains
    /// partitions: running attempts above it finish, no new one starts).
    fn concurrency(&self) -> usize {
        self.shared.slots()
    }

    /// The claim loop; returns the claims still in flight at shutdown.
    pub(super) async fn run(
        &mut self,
        shutdown: impl Future<Output = ()>,
        woken: &Notify,
        arm: &watch::Sender<u64>,
    ) -> FuturesUnordered<ClaimFuture> {
        let mut shutdown = pin!(shutdown);
        let mut claims: FuturesUnordered<ClaimFuture> = FuturesUnordered::new();
        // Jobs asked for by the claims in flight.
        let mut asked_in_flight = 0;
        // Whether the last claim filled its request (more may be waiting).
        let mut more = true;
        let mut was_woken = false;
        let mut retry_at: Option<tokio::time::Instant> = None;
        // Whether `retry_at` waits out a pause or the queue's limit (not an
        // error): a job of ours ending makes room, so claim at once then.
        let mut throttled_wait = false;
        // When completions held back for a bigger batch must go anyway.
        let mut ack_by: Option<tokio::time::Instant> = None;
        let config = self.shared.client.config().clone();
        let mut backoff = RetryBackoff::new(config.retry_backoff_min, config.retry_backoff_max);
        let mut generation = 0_u64;
        // Claim calls are numbered; a call that failed in a way that may
        // have run in Redis (its reply lost) is sent again under its number.
        let mut next_request = 0_u64;
        let mut retry_request: Option<u64> = None;
        loop {
            let free = self.concurrency().saturating_sub(self.by_task.len());
            let ahead = if more { self.claim_ahead() } else { 0 };
            let pending = self.starting.len() + self.buffer.len() + asked_in_flight;
            let want = (free + ahead).saturating_sub(pending).min(MAX_CLAIM_BATCH);
            // Jobs of this claim that will find a free slot on arrival: every
            // job buffered or asked for before them is served first.
            let start_now = free.saturating_sub(pending).min(want);
            // With fast handlers a second call may travel while the first is
            // served, so Redis and this process work at the same time.
            let max_calls = if ahead > 0 { 2 } else { 1 };
            let retrying = retry_request.is_some() && claims.is_empty();
            // While jobs claimed ahead keep the slots busy there is no hurry:
            // wait until a call can carry a worthwhile batch (half of what
            // is claimed ahead), so that fast handlers cost few calls each.
            // A free slot with nothing to start never waits.
            let starving =
                self.by_task.len() < self.concurrency() && self.starting.is_empty() && self.buffer.is_empty();
            let worthwhile = want >= (ahead / 2).max(1) || starving;
            if retry_at.is_none()
                && ((want > 0 && worthwhile) || retrying)
                && claims.len() < max_calls
                && (more || was_woken || retrying)
            {
                // One call acknowledges what finished and refills the slots.
                was_woken = false;
                asked_in_flight += want;
                let acks = std::mem::take(&mut self.completions);
                let request = if let Some(id) = retry_request.take() {
                    ClaimRequest { id, retry: true }
                } else {
                    next_request += 1;
                    ClaimRequest {
                        id: next_request,
                        retry: false,
                    }
                };
                claims.push(Box::pin(claim_jobs(
                    self.shared.clone(),
                    want,
                    start_now,
                    acks,
                    request,
                )));
            } else if claims.is_empty() {
                // Nothing is being claimed: acknowledge on our own, in a
                // batch while jobs claimed ahead are still running through,
                // but never later than `ACK_DELAY` after the first waited.
                if starving || !more || self.completions.len() >= (ahead / 2).max(1) {
                    self.flush_completions();
                } else if !self.completions.is_empty() && ack_by.is_none() {
                    ack_by = Some(tokio::time::Instant::now() + ACK_DELAY);
                }
            }
            if self.completions.is_empty() {
                ack_by = None;
            }
            tokio::select! {
                biased;
                () = &mut shutdown => return claims,
                Some(result) = self.jobs.join_next_with_id(), if !self.jobs.is_empty() => {
                    self.on_attempt_end(result);
                    // Let sibling attempts that are about to finish do so
                    // (a few scheduler turns, microseconds), so that one
                    // call acknowledges them all and refills all the slots.
                    let mut quiet_turns = 0;
                    while !self.jobs.is_empty() && quiet_turns < 2 {
                        tokio::task::yield_now().await;
                        quiet_turns += 1;
                        while let Some(result) = self.jobs.try_join_next_with_id() {
                            self.on_attempt_end(result);
                            quiet_turns = 0;
                        }
                    }
                    self.fill_slots();
                    if throttled_wait {
                        throttled_wait = false;
                        retry_at = None;
                        more = true;
                    }
                }
                Some(done) = claims.next(), if !claims.is_empty() => {
                    asked_in_flight -= done.asked;
                    match done.result {
                        Ok(reply) => {
                            backoff.reset();
                            self.rtt_us.add(done.sent.elapsed().as_secs_f64() * 1e6);
                            report_acks(&self.shared, done.acks, reply.acks, false);
                            // A retry returns the jobs of the lost reply,
                            // not a fresh batch: look again at once.
                            let throttled = reply.throttled && !done.request.retry;
                            more = !throttled && (reply.jobs.len() == done.asked || done.request.retry);
                            for job in reply.jobs {
                                self.accept(job);
                            }
                            self.fill_slots();
                            if throttled {
                                // Paused, or at the queue's global limit: the
                                // wake list says nothing about either ending,
                                // so look again after a pause.
                                retry_at = Some(tokio::time::Instant::now() + config.throttle_poll);
                                throttled_wait = true;
                            } else if !more {
                                // Ready lists were empty: block on the wake list.
                                generation += 1;
                                arm.send_replace(generation);
                            }
                        }
                        Err(err) => {
                            // The acknowledgements go again with the next call.
                            self.completions.extend(done.acks.into_iter().map(|mut ack| {
                                ack.resent = true;
                                ack
                            }));
                            // Unavailable may mean the script ran and only the
                            // reply was lost: ask for that claim again.
                            if err.is_unavailable() {
                                retry_request = Some(retry_request.map_or(done.request.id, |r| r.max(done.request.id)));
                            }
                            let delay = backoff.next_delay();
                            warn!(queue = %self.shared.queue, error = %err, ?delay, "claim failed; backing off");
                            retry_at = Some(tokio::time::Instant::now() + delay);
                            throttled_wait = false;
                        }
                    }
                }
                () = woken.notified(), if !more => was_woken = true,
                () = tokio::time::sleep_until(retry_at.unwrap_or_else(tokio::time::Instant::now)), if retry_at.is_some() => {
                    retry_at = None;
                    throttled_wait = false;
                    more = true;
                }
                () = tokio::time::sleep_until(ack_by.unwrap_or_else(tokio::time::Instant::now)), if ack_by.is_some() => {
                    ack_by = None;
                    self.flush_completions();
                }
                () = tokio::time::sleep_until(self.buffer_moved + HOLD_LIMIT), if !self.buffer.is_empty() => {
                    if self.buffer_moved.elapsed() >= HOLD_LIMIT {
                        self.give_back_held().await;
                    }
                }
            }
        }
    }

    /// How many jobs to claim beyond the free slots: about as many as the
    /// busy slots will finish while a claim travels, so that a slot never
    /// waits a round trip for its next job. Zero when handlers are slow
    /// compared with a round trip (a claimed job must not sit behind a long
    /// handler while another worker idles), at most `MAX_AHEAD_FACTOR`
    /// times the worker's whole concurrency (`ahead_of`). A lane of a
    /// partitioned queue has a share of the slots but may claim ahead as
    /// much as a whole worker, so that its calls carry batches about as big
    /// as an unpartitioned worker's: a worker with K lanes may hold up to
    /// K × `MAX_AHEAD_FACTOR` × its concurrency jobs claimed ahead, which
    /// happens only while handlers are much faster than a round trip (those
    /// jobs are gone within a round trip or so).
    fn claim_ahead(&self) -> usize {
        if !self.prefetch {
            return 0;
        }
        let (Some(rtt), Some(handler)) = (self.rtt_us.0, self.handler_us.0) else {
            return 0;
        };
        let ahead = (self.concurrency() as f64 * rtt / handler.max(1.0)).floor();
        (ahead as usize).min((self.ahead_of * MAX_AHEAD_FACTOR).max(MIN_AHEAD_BOUND))
    }

    /// Takes a claimed job: leased from now on, so the heartbeat covers it
    /// while it waits for a slot.
    fn accept(&mut self, job: Claimed) {
        let cancel = CancellationToken::new();
        self.leases
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert((job.id.clone(), job.token), cancel.clone());
        if job.held {
            self.buffer.push_back((job, cancel));
        } else {
            self.starting.push_back((job, cancel));
        }
    }

    /// Starts buffered jobs while slots are free, the ones Redis was told
    /// start at once first.
    fn fill_slots(&mut self) {
        let held = self.buffer.len();
        while self.by_task.len() < self.concurrency() {
            let Some((job, cancel)) = self.starting.pop_front().or_else(|| self.buffer.pop_front()) else {
                break;
            };
            self.start(job, cancel);
        }
        if self.buffer.len() < held || self.buffer.is_empty() {
            self.buffer_moved = tokio::time::Instant::now();
        }
        let waiting = (self.starting.len() + self.buffer.len()) as u64;
        self.shared
            .counters
            .most_claimed_ahead
            .fetch_max(waiting, Ordering::Relaxed);
    }

    /// Puts the jobs held in the buffer back at the head of their ready
    /// lists (as the drain does), for other workers to take: this worker's
    /// slots are all taken by handlers slower than the estimate that claimed
    /// them. The estimate is reset so that claiming ahead starts afresh.
    async fn give_back_held(&mut self) {
        let jobs: Vec<(String, u64)> = self.buffer.drain(..).map(|(job, _)| (job.id, job.token)).collect();
        for (id, token) in &jobs {
            self.forget_lease(id, *token);
        }
        self.handler_us = Ewma::default();
        let patience = self.shared.client.config().command_timeout * 2;
        requeue(&self.shared, "requeue of held jobs behind busy slots", &jobs, patience).await;
        self.buffer_moved = tokio::time::Instant::now();
    }

    fn forget_lease(&self, id: &str, token: u64) {
        self.leases
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&(id.to_owned(), token));
    }

    /// Starts one claimed job, or buries it when its input is bad.
    fn start(&mut self, job: Claimed, cancel: CancellationToken) {
        if cancel.is_cancelled() {
            // The lease was lost while the job waited for a slot.
            self.forget_lease(&job.id, job.token);
            self.shared.counters.stale.fetch_add(1, Ordering::Relaxed);
            return;
        }
        if job.bad_id.is_some() {
            self.bury(&job, None, "job id is not valid UTF-8".into());
            return;
        }
        let Some(bytes) = job.envelope.as_deref() else {
            self.bury(
                &job,
                None,
                "envelope missing: the id was in a ready list but not in the jobs hash".into(),
            );
            return;
        };
        let envelope = match EnvelopeRef::decode(bytes) {
            Ok(envelope) => envelope,
            Err(err) => {
                self.bury(&job, None, format!("bad envelope: {err}"));
                return;
            }
        };
        let Some(handler) = self.handlers.get(envelope.kind.as_ref()) else {
            let reason = format!(
                "unknown job kind {:?}: no handler registered for it on queue {:?}",
                envelope.kind, self.shared.queue
            );
            self.bury(&job, Some(envelope.kind.into_owned()), reason);
            return;
        };
        let timeout = self
            .job_timeout
            .unwrap_or(Duration::from_millis(envelope.policy.timeout_ms.max(1)));
        let ctx = JobContext {
            id: job.id.clone(),
            kind: envelope.kind.clone().into_owned(),
            queue: self.shared.queue.clone(),
            attempt: job.attempt,
            token: job.token,
            crashes: job.crashes,
            errors: job.errors,
            policy: envelope.policy,
            trace: envelope.trace.clone(),
            created_at_ms: envelope.created_at_ms,
            cancel: cancel.clone(),
            deadline: Instant::now() + timeout,
        };
        let future = match handler.start(&envelope, ctx) {
            Ok(future) => future,
            Err(err) => {
                self.bury(&job, Some(envelope.kind.into_owned()), err.to_string());
                return;
            }
        };
        let handle = self.jobs.spawn(run_attempt(future, timeout, cancel.clone()));
        let wait = now_ms().checked_sub(envelope.created_at_ms).map(Duration::from_millis);
        self.by_task.insert(
            handle.id(),
            Running {
                id: job.id,
                token: job.token,
                kind: envelope.kind.into_owned(),
                attempt: job.attempt,
                errors: job.errors,
                policy: envelope.policy,
                started: Instant::now(),
                wait,
                cancel,
            },
        );
    }

    /// Sends a job with bad input to the dead set.
    fn bury(&mut self, job: &Claimed, kind: Option<String>, reason: String) {
        self.forget_lease(&job.id, job.token);
        warn!(queue = %self.shared.queue, id = %job.id, %reason, "bad input: moving job to the dead set");
        let event = JobEvent {
            queue: self.shared.queue.clone(),
            kind,
            id: job.id.clone(),
            attempt: job.attempt,
            duration: None,
            wait: None,
            error: Some(reason.clone()),
        };
        let id_arg = job.bad_id.clone().unwrap_or_else(|| job.id.clone().into_bytes());
        self.finishers.spawn(report_failure(
            self.shared.clone(),
            id_arg,
            job.token,
            -1,
            reason,
            event,
        ));
    }

    fn on_attempt_end(&mut self, result: Result<(TaskId, Outcome), JoinError>) {
        let (task, outcome) = match result {
            Ok(pair) => pair,
            Err(err) => {
                let task = err.id();
                let message = if err.is_panic() {
                    let payload = err.into_panic();
                    let text = payload
                        .downcast_ref::<&str>()
                        .map(ToString::to_string)
                        .or_else(|| payload.downcast_ref::<String>().cloned())
                        .unwrap_or_else(|| "non-string panic payload".to_owned());
                    format!("handler panicked: {text}")
                } else {
                    err.to_string()
                };
                (task, Outcome::Failed(JobError::Retry(message)))
            }
        };
        self.attempt_ended(task, outcome);
    }

    fn attempt_ended(&mut self, task: TaskId, outcome: Outcome) {
        let Some(running) = self.by_task.remove(&task) else {
            return;
        };
        self.forget_lease(&running.id, running.token);
        let duration = running.started.elapsed();
        self.handler_us.add(duration.as_secs_f64() * 1e6);
        let error = match outcome {
            Outcome::Done => {
                self.completions.push(Finished {
                    id: running.id,
                    token: running.token,
                    kind: running.kind,
                    attempt: running.attempt,
                    duration,
                    wait: running.wait,
                    resent: false,
                });
                return;
            }
            Outcome::LeaseLost => {
                warn!(queue = %self.shared.queue, id = %running.id, "lease lost: the job was recovered elsewhere; result dropped");
                self.shared.counters.stale.fetch_add(1, Ordering::Relaxed);
                return;
            }
            Outcome::Failed(err) => err,
            Outcome::TimedOut(limit) => JobError::Retry(format!("timed out after {limit:?}")),
        };
        let (due, reason) = decide(&running, &error);
        let event = JobEvent {
            queue: self.shared.queue.clone(),
            kind: Some(running.kind),
            id: running.id,
            attempt: running.attempt,
            duration: Some(duration),
            wait: running.wait,
            error: Some(reason.clone()),
        };
        drop(running.cancel);
        let id_arg = event.id.clone().into_bytes();
        self.finishers.spawn(report_failure(
            self.shared.clone(),
            id_arg,
            running.token,
            due,
            reason,
            event,
        ));
    }

    /// Sends the pending completions as one batch, in the background.
    fn flush_completions(&mut self) {
        while self.finishers.try_join_next().is_some() {}
        if self.completions.is_empty() {
            return;
        }
        let batch = std::mem::take(&mut self.completions);
        self.finishers.spawn(acknowledge(self.shared.clone(), batch));
    }

    /// The graceful end: see [`Worker::run_until`].
    pub(super) async fn drain(&mut self, mut in_flight: FuturesUnordered<ClaimFuture>) {
        let config = self.shared.client.config().clone();
        let mut to_requeue: Vec<(String, u64)> = Vec::new();
        // Claimed at the very moment of shutdown: never started, give back.
        let claims_deadline = tokio::time::Instant::now() + config.command_timeout;
        while let Ok(Some(done)) = tokio::time::timeout_at(claims_deadline, in_flight.next()).await {
            match done.result {
                Ok(reply) => {
                    report_acks(&self.shared, done.acks, reply.acks, false);
                    to_requeue.extend(reply.jobs.into_iter().map(|job| (job.id, job.token)));
                }
                Err(_) => self.completions.extend(done.acks),
            }
        }
        // Claimed ahead but never started: give back at once, before waiting
        // for the running handlers, so other workers can take them now.
        to_requeue.extend(
            self.starting
                .drain(..)
                .chain(self.buffer.drain(..))
                .map(|(job, _)| (job.id, job.token)),
        );
        if !to_requeue.is_empty() {
            for (id, token) in &to_requeue {
                self.forget_lease(id, *token);
            }
            requeue(
                &self.shared,
                "requeue at shutdown",
                &to_requeue,
                config.command_timeout * 2,
            )
            .await;
            to_requeue.clear();
        }
        // Finished jobs waiting to join a bigger acknowledgement go now: the
        // heartbeat no longer covers their leases, which must not lapse
        // while a long job drains (the reaper would run them again).
        self.flush_completions();
        // The heartbeat keeps the running jobs' leases alive until they end
        // or are put back below.
        let deadline = tokio::time::Instant::now() + self.drain_timeout;
        if !self.jobs.is_empty() {
            info!(queue = %self.shared.queue, running = self.jobs.len(), "draining running jobs");
        }
        while !self.jobs.is_empty() {
            tokio::select! {
                Some(result) = self.jobs.join_next_with_id() => {
                    self.on_attempt_end(result);
                    self.flush_completions();
                }
                () = tokio::time::sleep_until(deadline) => break,
            }
        }
        self.flush_completions();
        for (_, running) in self.by_task.drain() {
            running.cancel.cancel();
            to_requeue.push((running.id, running.token));
        }
        self.jobs.abort_all();
        while self.jobs.join_next().await.is_some() {}
        self.leases.lock().unwrap_or_else(PoisonError::into_inner).clear();
        // Nothing of this worker's last claim can need a retry any more.
        let mut conn = self.shared.client.conn();
        let record = self.shared.keys.claim_record(&self.shared.worker_id);
        if let Err(err) = redis::cmd("DEL").arg(record).query_async::<()>(&mut conn).await {
            debug!(queue = %self.shared.queue, error = %err, "could not delete the claim record; it expires after a lease");
        }
        if !to_requeue.is_empty() {
            requeue(
                &self.shared,
                "requeue at shutdown",
                &to_requeue,
                config.drain_timeout.max(Duration::from_secs(5)),
            )
            .await;
        }
        let finish_deadline = tokio::time::Instant::now() + config.command_timeout * 2;
        loop {
            tokio::select! {
                next = self.finishers.join_next() => if next.is_none() { break },
                () = tokio::time::sleep_until(finish_deadline) => {
                    warn!(queue = %self.shared.queue, pending = self.finishers.len(), "acknowledgements still pending at shutdown; their jobs will be recovered by the reaper");
                    self.finishers.abort_all();
                    break;
                }
            }
        }
    }
}

/// Runs one attempt under its timeout and cancellation.
pub(super) async fn run_attempt(mut future: HandlerFuture, timeout: Duration, cancel: CancellationToken) -> Outcome {
    // The handler future is borrowed, not moved, into the select so that on
    // a timeout the token is cancelled *before* the future is dropped: child
    // tasks and drop guards of the handler see the cancellation.
    let outcome = tokio::select! {
        biased;
        result = &mut future => return match result {
            Ok(()) => Outcome::Done,
            Err(err) => Outcome::Failed(err),
        },
        () = cancel.cancelled() => Outcome::LeaseLost,
        () = tokio::time::sleep(timeout) => Outcome::TimedOut(timeout),
    };
    cancel.cancel();
    drop(future);
    outcome
}

/// Longest retry delay honoured: an envelope may ask for any backoff, but a
/// due time must stay a valid Redis score and a positive `i64`.
pub(super) const MAX_RETRY_DELAY_MS: u64 = 365 * 24 * 3_600_000;

/// Retry time (ms since the epoch, on this host's clock; the script moves it
/// to Redis's) or -1 for the dead set, and the reason.
pub(super) fn decide(running: &Running, error: &JobError) -> (i64, String) {
    let failures = running.errors + 1;
    let max = running.policy.max_attempts.max(1);
    let message = error.message().to_owned();
    let delay_ms = match error {
        JobError::GiveUp(_) => return (-1, format!("gave up: {message}")),
        _ if failures >= max => {
            return (-1, format!("{message} (failed {failures} of {max} allowed attempts)"));
        }
        JobError::Retry(_) => running.policy.backoff.delay_ms(failures, rand::random::<f64>()),
        JobError::RetryAfter(delay, _) => millis(*delay),
    };
    let due = now_ms().saturating_add(delay_ms.min(MAX_RETRY_DELAY_MS));
    (i64::try_from(due).unwrap_or(i64::MAX), message)
}
