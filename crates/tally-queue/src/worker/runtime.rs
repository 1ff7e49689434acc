//! The worker's event loop.
//!
//! One driver task owns the claim loop: it claims as many jobs as it has free
//! slots in one script call, spawns each attempt as a task (so a panic is a
//! `JoinError`, not a dead worker), and batches the acknowledgements of
//! attempts that finished close together into one script call sent in the
//! background, so a slot is refilled without waiting for the ack.
//!
//! Around it run small tasks: the waker (blocks on the wake list on its own
//! connection while the ready lists are empty), the heartbeat (extends the
//! leases of running attempts), and, unless turned off, the promoter and the
//! reaper (see `scheduler.rs`).

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::pin::{Pin, pin};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use futures::StreamExt as _;
use futures::stream::FuturesUnordered;
use redis::Value;
use tally_jobs::{Envelope, JobPolicy};
use tokio::sync::{Notify, watch};
use tokio::task::{Id as TaskId, JoinError, JoinSet};
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, info, warn};

use super::{ErasedHandler, HandlerFuture, JobContext, JobError, Worker};
use crate::clock::{millis, now_ms};
use crate::producer::WAKE_CAP;
use crate::retry::RetryBackoff;
use crate::{JobEvent, JobEvents, QueueClient, QueueError, QueueKeys, scheduler, scripts};

/// What a worker did in one run, returned by [`Worker::run_until`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WorkerReport {
    /// Attempts that succeeded and were recorded as completed.
    pub completed: u64,
    /// Attempts that failed and were scheduled for a retry.
    pub retried: u64,
    /// Jobs this worker moved to the dead set.
    pub dead: u64,
    /// Jobs put back at the head of their ready list by the shutdown drain.
    pub requeued: u64,
    /// Results refused because the claim was no longer current (stale token).
    pub stale: u64,
}

#[derive(Default)]
struct Counters {
    completed: AtomicU64,
    retried: AtomicU64,
    dead: AtomicU64,
    requeued: AtomicU64,
    stale: AtomicU64,
}

/// Everything the background pieces of one worker share.
pub(crate) struct Shared {
    pub(crate) client: QueueClient,
    pub(crate) keys: QueueKeys,
    pub(crate) queue: String,
    pub(crate) events: Arc<dyn JobEvents>,
    counters: Counters,
    /// This worker process's id (its claim record in Redis).
    worker_id: String,
}

/// Held and running attempts by (job id, fencing token), for the heartbeat.
/// Keyed by the token too: after a lost lease the same worker may claim the
/// job again, and the stale attempt must neither share nor remove the new
/// claim's entry.
type LeaseTable = Arc<Mutex<HashMap<(String, u64), CancellationToken>>>;

/// Most jobs one claim call asks for: a script's work must stay bounded
/// however large the concurrency (the scripts themselves are safe at any
/// size, see `call_unpacked` in `lua/_shared.lua`).
pub(crate) const MAX_CLAIM_BATCH: usize = 1000;

/// One job as returned by the claim script.
struct Claimed {
    id: String,
    envelope: Option<Vec<u8>>,
    attempt: u32,
    crashes: u32,
    errors: u32,
    token: u64,
    /// Claimed ahead of a free slot (Redis marked it held, see `claim_jobs.lua`).
    held: bool,
    /// The id as Redis holds it when it is not UTF-8 (`id` is then a lossy
    /// copy for logs): such a job can only be buried, by these bytes.
    bad_id: Option<Vec<u8>>,
}

/// An attempt in progress.
struct Running {
    id: String,
    token: u64,
    kind: String,
    attempt: u32,
    errors: u32,
    policy: JobPolicy,
    started: Instant,
    wait: Option<Duration>,
    cancel: CancellationToken,
}

/// How an attempt ended.
enum Outcome {
    Done,
    Failed(JobError),
    TimedOut(Duration),
    LeaseLost,
}

/// A finished attempt waiting for its acknowledgement.
struct Finished {
    id: String,
    token: u64,
    kind: String,
    attempt: u32,
    duration: Duration,
    wait: Option<Duration>,
    /// Sent before in a call whose reply was lost: an "already finished"
    /// answer then means that earlier call finished it.
    resent: bool,
}

impl Worker {
    /// Runs until `shutdown` resolves, then drains: stops claiming, lets
    /// running handlers finish within the drain timeout, puts the rest back
    /// at the head of their ready list without spending an attempt, waits for
    /// outstanding acknowledgements, and returns.
    ///
    /// Redis errors never end the run: the worker logs them, backs off with
    /// jitter and carries on when Redis is back.
    pub async fn run_until(self, shutdown: impl Future<Output = ()> + Send) -> Result<WorkerReport, QueueError> {
        let shared = Arc::new(Shared {
            client: self.client.clone(),
            keys: self.keys.clone(),
            queue: self.queue.clone(),
            events: self.events.clone(),
            counters: Counters::default(),
            worker_id: uuid::Uuid::new_v4().simple().to_string(),
        });
        let stop = CancellationToken::new();
        let leases: LeaseTable = Arc::default();
        let woken = Arc::new(Notify::new());
        let (arm_tx, arm_rx) = watch::channel(0_u64);
        let mut background = JoinSet::new();
        if self.background {
            background.spawn(scheduler::run_promoter(shared.clone(), stop.clone()));
            background.spawn(scheduler::run_reaper(shared.clone(), stop.clone()));
        }
        background.spawn(run_heartbeat(shared.clone(), leases.clone(), stop.clone()));
        let waker_stop = stop.child_token();
        background.spawn(run_waker(shared.clone(), arm_rx, woken.clone(), waker_stop.clone()));
        info!(queue = %self.queue, concurrency = self.concurrency, "worker started");

        let mut driver = Driver {
            shared: shared.clone(),
            handlers: self.handlers,
            concurrency: self.concurrency,
            job_timeout: self.job_timeout,
            drain_timeout: self.drain_timeout,
            jobs: JoinSet::new(),
            by_task: HashMap::new(),
            leases,
            finishers: JoinSet::new(),
            completions: Vec::new(),
            starting: VecDeque::new(),
            buffer: VecDeque::new(),
            prefetch: self.prefetch,
            rtt_us: Ewma::default(),
            handler_us: Ewma::default(),
        };
        let in_flight = driver.run(shutdown, &woken, &arm_tx).await;
        waker_stop.cancel();
        driver.drain(in_flight).await;
        stop.cancel();
        while background.join_next().await.is_some() {}

        let c = &shared.counters;
        let report = WorkerReport {
            completed: c.completed.load(Ordering::Relaxed),
            retried: c.retried.load(Ordering::Relaxed),
            dead: c.dead.load(Ordering::Relaxed),
            requeued: c.requeued.load(Ordering::Relaxed),
            stale: c.stale.load(Ordering::Relaxed),
        };
        info!(queue = %self.queue, ?report, "worker stopped");
        Ok(report)
    }
}

/// A claim call in flight. Its output carries how many jobs it asked for,
/// when it was sent, and the acknowledgements it was sent with (so they can
/// be retried if the call fails).
type ClaimFuture = Pin<Box<dyn Future<Output = ClaimDone> + Send>>;

/// What a finished claim call hands back.
struct ClaimDone {
    asked: usize,
    sent: Instant,
    acks: Vec<Finished>,
    request: ClaimRequest,
    result: Result<ClaimReply, QueueError>,
}

/// Identifies a claim call, so that it can be sent again after its reply was
/// lost and get the same jobs back (see `claim_jobs.lua`).
#[derive(Debug, Clone, Copy)]
struct ClaimRequest {
    id: u64,
    retry: bool,
}

/// Reply of the claim script: acknowledgement statuses, then claimed jobs.
struct ClaimReply {
    acks: Vec<i64>,
    jobs: Vec<Claimed>,
}

struct Driver {
    shared: Arc<Shared>,
    handlers: HashMap<&'static str, Arc<dyn ErasedHandler>>,
    concurrency: usize,
    job_timeout: Option<Duration>,
    drain_timeout: Duration,
    /// Running attempts.
    jobs: JoinSet<Outcome>,
    by_task: HashMap<TaskId, Running>,
    leases: LeaseTable,
    /// Background acknowledgements and failure reports.
    finishers: JoinSet<()>,
    /// Successful attempts not yet sent for acknowledgement.
    completions: Vec<Finished>,
    /// Claimed jobs Redis was told start at once (a slot is theirs).
    starting: VecDeque<(Claimed, CancellationToken)>,
    /// Jobs claimed ahead, waiting for a free slot (held: leased, covered by
    /// heartbeats, not charged a crash if this process dies).
    buffer: VecDeque<(Claimed, CancellationToken)>,
    /// Whether to claim ahead of free slots when handlers are fast.
    prefetch: bool,
    /// Recent claim round trip, µs.
    rtt_us: Ewma,
    /// Recent handler duration, µs.
    handler_us: Ewma,
}

/// Bound of claiming ahead, in multiples of the concurrency. Claimed-ahead
/// jobs wait about one round trip at most (only handlers much faster than a
/// round trip cause any), so a few times the concurrency is harmless and
/// makes each script call carry a bigger batch.
const MAX_AHEAD_FACTOR: usize = 4;

/// Exponentially weighted moving average.
#[derive(Debug, Clone, Copy, Default)]
struct Ewma(Option<f64>);

impl Ewma {
    fn add(&mut self, sample: f64) {
        self.0 = Some(self.0.map_or(sample, |avg| avg * 0.8 + sample * 0.2));
    }
}

impl Driver {
    /// The claim loop; returns the claims still in flight at shutdown.
    async fn run(
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
        let config = self.shared.client.config().clone();
        let mut backoff = RetryBackoff::new(config.retry_backoff_min, config.retry_backoff_max);
        let mut generation = 0_u64;
        // Claim calls are numbered; a call that failed in a way that may
        // have run in Redis (its reply lost) is sent again under its number.
        let mut next_request = 0_u64;
        let mut retry_request: Option<u64> = None;
        loop {
            let free = self.concurrency.saturating_sub(self.by_task.len());
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
            if retry_at.is_none()
                && (want > 0 || retrying)
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
                self.flush_completions();
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
                            more = reply.jobs.len() == done.asked || done.request.retry;
                            for job in reply.jobs {
                                self.accept(job);
                            }
                            self.fill_slots();
                            if !more {
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
                        }
                    }
                }
                () = woken.notified(), if !more => was_woken = true,
                () = tokio::time::sleep_until(retry_at.unwrap_or_else(tokio::time::Instant::now)), if retry_at.is_some() => {
                    retry_at = None;
                    more = true;
                }
            }
        }
    }

    /// How many jobs to claim beyond the free slots: about as many as the
    /// busy slots will finish while a claim travels, so that a slot never
    /// waits a round trip for its next job. Zero when handlers are slow
    /// compared with a round trip (a claimed job must not sit behind a long
    /// handler while another worker idles), at most `MAX_AHEAD_FACTOR`
    /// times `concurrency`.
    fn claim_ahead(&self) -> usize {
        if !self.prefetch {
            return 0;
        }
        let (Some(rtt), Some(handler)) = (self.rtt_us.0, self.handler_us.0) else {
            return 0;
        };
        let ahead = (self.concurrency as f64 * rtt / handler.max(1.0)).floor();
        (ahead as usize).min(self.concurrency * MAX_AHEAD_FACTOR)
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
        while self.by_task.len() < self.concurrency {
            let Some((job, cancel)) = self.starting.pop_front().or_else(|| self.buffer.pop_front()) else {
                break;
            };
            self.start(job, cancel);
        }
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
        let envelope = match Envelope::decode(bytes) {
            Ok(envelope) => envelope,
            Err(err) => {
                self.bury(&job, None, format!("bad envelope: {err}"));
                return;
            }
        };
        let Some(handler) = self.handlers.get(envelope.kind.as_str()) else {
            let reason = format!(
                "unknown job kind {:?}: no handler registered for it on queue {:?}",
                envelope.kind, self.shared.queue
            );
            self.bury(&job, Some(envelope.kind), reason);
            return;
        };
        let timeout = self
            .job_timeout
            .unwrap_or(Duration::from_millis(envelope.policy.timeout_ms.max(1)));
        let ctx = JobContext {
            id: job.id.clone(),
            kind: envelope.kind.clone(),
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
                self.bury(&job, Some(envelope.kind), err.to_string());
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
                kind: envelope.kind,
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
    async fn drain(&mut self, mut in_flight: FuturesUnordered<ClaimFuture>) {
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
            requeue(&self.shared, &to_requeue, config.command_timeout * 2).await;
            to_requeue.clear();
        }
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
async fn run_attempt(mut future: HandlerFuture, timeout: Duration, cancel: CancellationToken) -> Outcome {
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
const MAX_RETRY_DELAY_MS: u64 = 365 * 24 * 3_600_000;

/// Retry time (ms since the epoch, on this host's clock; the script moves it
/// to Redis's) or -1 for the dead set, and the reason.
fn decide(running: &Running, error: &JobError) -> (i64, String) {
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

/// Acknowledges `acks` and claims up to `count` jobs, in one script call.
async fn claim_jobs(
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

async fn claim_call(
    shared: &Shared,
    count: usize,
    start_now: usize,
    acks: &[Finished],
    request: Option<ClaimRequest>,
) -> Result<ClaimReply, QueueError> {
    let keys = &shared.keys;
    let config = shared.client.config();
    let mut invocation = scripts::CLAIM_JOBS.prepare_invoke();
    for key in keys.ready_all() {
        invocation.key(key);
    }
    invocation
        .key(keys.jobs())
        .key(keys.state())
        .key(keys.leases())
        .key(keys.token())
        .key(keys.dedup())
        .key(keys.wake())
        .key(keys.stats())
        .key(keys.claim_record(&shared.worker_id))
        .arg(request.map_or_else(
            || "-".to_owned(),
            |r| format!("{}:{}", if r.retry { 'r' } else { 'n' }, r.id),
        ))
        .arg(millis(config.lease))
        .arg(count)
        .arg(start_now);
    for job in acks {
        invocation.arg(&job.id).arg(job.token);
    }
    let mut conn = shared.client.conn();
    let reply: Vec<Value> = invocation.invoke_async(&mut conn).await?;
    // Owned conversions: the envelopes move out of the reply without a copy.
    let mut values = reply.into_iter();
    let Some(ack_statuses) = values.next() else {
        return Err(QueueError::Protocol("empty claim reply".into()));
    };
    let acks: Vec<i64> = redis::from_redis_value(ack_statuses)?;
    let mut jobs = Vec::with_capacity(values.len() / 6);
    while let Some(id) = values.next() {
        let mut field = || {
            values
                .next()
                .ok_or_else(|| QueueError::Protocol("claim reply not a multiple of 6".into()))
        };
        let (envelope, attempt, crashes, errors, token) = (field()?, field()?, field()?, field()?, field()?);
        // Ids are bytes to Redis: one that is not UTF-8 (from another
        // producer) must harm only its own job, not the whole reply.
        let (id, bad_id) = match String::from_utf8(redis::from_redis_value::<Vec<u8>>(id)?) {
            Ok(id) => (id, None),
            Err(err) => (
                String::from_utf8_lossy(err.as_bytes()).into_owned(),
                Some(err.into_bytes()),
            ),
        };
        jobs.push(Claimed {
            id,
            bad_id,
            envelope: redis::from_redis_value(envelope)?,
            attempt: redis::from_redis_value(attempt)?,
            crashes: redis::from_redis_value(crashes)?,
            errors: redis::from_redis_value(errors)?,
            token: redis::from_redis_value(token)?,
            held: jobs.len() >= start_now,
        });
    }
    Ok(ClaimReply { acks, jobs })
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
fn ack_patience(shared: &Shared) -> Duration {
    (shared.client.config().lease * 4).max(Duration::from_secs(30))
}

/// Acknowledges a batch of successful attempts.
async fn acknowledge(shared: Arc<Shared>, batch: Vec<Finished>) {
    let keys = &shared.keys;
    let mut tries = 0_u32;
    let reply = with_retries(&shared, "acknowledgement", ack_patience(&shared), || {
        tries += 1;
        let mut invocation = scripts::COMPLETE_JOBS.prepare_invoke();
        invocation
            .key(keys.jobs())
            .key(keys.state())
            .key(keys.leases())
            .key(keys.stats());
        for job in &batch {
            invocation.arg(&job.id).arg(job.token);
        }
        let mut conn = shared.client.conn();
        async move { Ok::<Vec<i64>, QueueError>(invocation.invoke_async(&mut conn).await?) }
    })
    .await;
    if let Some(reply) = reply {
        report_acks(&shared, batch, reply, tries > 1);
    }
}

/// Counts and reports acknowledged attempts (events for the completed ones).
/// `retried`: the batch was sent before by a call that failed, so "already
/// finished" (status 2) means that earlier call finished it.
fn report_acks(shared: &Shared, batch: Vec<Finished>, statuses: Vec<i64>, retried: bool) {
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
async fn report_failure(shared: Arc<Shared>, id: Vec<u8>, token: u64, due: i64, reason: String, event: JobEvent) {
    let keys = &shared.keys;
    let config = shared.client.config();
    let status = with_retries(&shared, "failure report", ack_patience(&shared), || {
        let mut invocation = scripts::FAIL_JOB.prepare_invoke();
        invocation
            .key(keys.jobs())
            .key(keys.state())
            .key(keys.leases())
            .key(keys.scheduled())
            .key(keys.dead())
            .key(keys.dead_envelopes())
            .key(keys.dead_info())
            .key(keys.stats())
            .arg(&id)
            .arg(token)
            .arg(now_ms())
            .arg(due)
            .arg(&reason)
            .arg(keys.due_channel())
            .arg(config.dead_max_count)
            .arg(millis(config.dead_max_age));
        let mut conn = shared.client.conn();
        async move { Ok::<i64, QueueError>(invocation.invoke_async(&mut conn).await?) }
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

/// Puts unfinished attempts back at the head of their ready list.
async fn requeue(shared: &Arc<Shared>, jobs: &[(String, u64)], patience: Duration) {
    let keys = &shared.keys;
    let reply = with_retries(shared, "requeue at shutdown", patience, || {
        let mut invocation = scripts::REQUEUE_JOBS.prepare_invoke();
        invocation.key(keys.state()).key(keys.leases());
        for key in keys.ready_all() {
            invocation.key(key);
        }
        invocation.key(keys.wake()).arg(WAKE_CAP);
        for (id, token) in jobs {
            invocation.arg(id).arg(*token);
        }
        let mut conn = shared.client.conn();
        async move { Ok::<Vec<i64>, QueueError>(invocation.invoke_async(&mut conn).await?) }
    })
    .await;
    let moved = reply.map_or(0, |r| r.iter().filter(|s| **s == 1).count()) as u64;
    shared.counters.requeued.fetch_add(moved, Ordering::Relaxed);
    info!(queue = %shared.queue, requeued = moved, of = jobs.len(), "unfinished jobs put back at the head of the queue");
}

/// Blocks on the wake list while the driver has nothing to claim, and tells
/// the driver when a marker (or the idle-poll timeout) arrives.
async fn run_waker(shared: Arc<Shared>, mut arm: watch::Receiver<u64>, woken: Arc<Notify>, stop: CancellationToken) {
    let config = shared.client.config().clone();
    let mut backoff = RetryBackoff::new(config.retry_backoff_min, config.retry_backoff_max);
    let mut served = 0_u64;
    let mut conn = None;
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            changed = arm.wait_for(|generation| *generation > served) => {
                match changed {
                    Ok(generation) => served = *generation,
                    Err(_) => return,
                }
            }
        }
        if conn.is_none() {
            match shared.client.dedicated_connection().await {
                Ok(c) => conn = Some(c),
                Err(err) => {
                    let delay = backoff.next_delay();
                    warn!(queue = %shared.queue, error = %err, ?delay, "wake connection failed; backing off");
                    tokio::select! {
                        () = stop.cancelled() => return,
                        () = tokio::time::sleep(delay) => {}
                    }
                    woken.notify_one();
                    continue;
                }
            }
        }
        let Some(c) = conn.as_mut() else { continue };
        let mut blpop_cmd = redis::cmd("BLPOP");
        blpop_cmd.arg(shared.keys.wake()).arg(config.idle_poll.as_secs_f64());
        let blpop = blpop_cmd.query_async::<Option<(String, String)>>(c);
        // Redis answers a BLPOP by its own timeout at the latest; no answer a
        // command timeout after that means the connection went silent (the
        // peer vanished without a reset): drop it and connect again.
        let bound = config.idle_poll + config.command_timeout;
        let result = tokio::select! {
            () = stop.cancelled() => return,
            result = tokio::time::timeout(bound, blpop) => result.unwrap_or_else(|_| {
                Err(redis::RedisError::from((
                    redis::ErrorKind::Io,
                    "no answer to BLPOP within its timeout plus the command timeout",
                )))
            }),
        };
        if let Err(err) = result {
            conn = None;
            let delay = backoff.next_delay();
            warn!(queue = %shared.queue, error = %err, ?delay, "waiting for work failed; backing off");
            tokio::select! {
                () = stop.cancelled() => return,
                () = tokio::time::sleep(delay) => {}
            }
        } else {
            backoff.reset();
        }
        woken.notify_one();
    }
}

/// Extends the leases of running attempts every heartbeat period; cancels
/// the attempts whose claim is no longer current.
async fn run_heartbeat(shared: Arc<Shared>, leases: LeaseTable, stop: CancellationToken) {
    let config = shared.client.config().clone();
    let mut tick = tokio::time::interval(config.heartbeat_interval());
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        let snapshot: Vec<(String, u64)> = leases
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .keys()
            .cloned()
            .collect();
        for chunk in snapshot.chunks(500) {
            let mut invocation = scripts::EXTEND_LEASES.prepare_invoke();
            invocation
                .key(shared.keys.state())
                .key(shared.keys.leases())
                .arg(millis(config.lease));
            for (id, token) in chunk {
                invocation.arg(id).arg(*token);
            }
            let mut conn = shared.client.conn();
            let result = invocation
                .invoke_async::<Vec<i64>>(&mut conn)
                .await
                .map_err(QueueError::from);
            match shared.client.observe(result) {
                Ok(statuses) => {
                    let table = leases.lock().unwrap_or_else(PoisonError::into_inner);
                    for (key, status) in chunk.iter().zip(statuses) {
                        if status == 0
                            && let Some(cancel) = table.get(key)
                        {
                            let id = &key.0;
                            warn!(queue = %shared.queue, %id, "lease lost; cancelling the attempt");
                            cancel.cancel();
                        }
                    }
                }
                Err(err) => warn!(queue = %shared.queue, error = %err, "heartbeat failed"),
            }
        }
    }
}

#[cfg(test)]
#[path = "runtime_tests.rs"]
mod tests;
