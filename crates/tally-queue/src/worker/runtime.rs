//! The worker's run: what one worker process shares between its parts, the
//! records of a job on its way through the worker, and
//! [`Worker::run_until`], which starts the parts and returns the report.
//!
//! The parts, one file each:
//! - `driver.rs`: the scheduling policy. One task owns the claim loop: it
//!   claims as many jobs as it has free slots in one script call (more when
//!   handlers are fast), spawns each attempt as a task (so a panic is a
//!   `JoinError`, not a dead worker), batches acknowledgements, and drains
//!   at shutdown.
//! - `calls.rs`: the Redis calls the driver makes (claim, acknowledge, fail,
//!   requeue) and their retries.
//! - `background.rs`: the waker (blocks on the wake list on its own
//!   connection while the ready lists are empty) and the heartbeat (extends
//!   the leases of held and running attempts).
//! - the promoter and the reaper, unless turned off (`scheduler.rs`).

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt as _;
use futures::stream::FuturesUnordered;
use tally_jobs::JobPolicy;
use tokio::sync::{Notify, watch};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::background::{run_heartbeat, run_registry, run_waker};
use super::driver::{Driver, Ewma};
use super::{JobError, Worker};
use crate::retry::RetryBackoff;
use crate::{JobEvents, QueueClient, QueueError, QueueKeys, scheduler};

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
    /// Most jobs this worker held claimed ahead at once: claimed, leased,
    /// waiting for a free slot (see `WorkerBuilder::prefetch`).
    pub most_claimed_ahead: u64,
}

#[derive(Default)]
pub(super) struct Counters {
    pub(super) completed: AtomicU64,
    pub(super) retried: AtomicU64,
    pub(super) dead: AtomicU64,
    pub(super) requeued: AtomicU64,
    pub(super) stale: AtomicU64,
    pub(super) most_claimed_ahead: AtomicU64,
}

/// Everything the background pieces of one worker share.
pub(crate) struct Shared {
    pub(crate) client: QueueClient,
    pub(crate) keys: QueueKeys,
    pub(crate) queue: String,
    pub(crate) events: Arc<dyn JobEvents>,
    pub(super) counters: Counters,
    /// This worker process's id (its claim record in Redis).
    pub(super) worker_id: String,
    /// This lane's slots: its share of the worker's concurrency, which
    /// shrinks when the queue gains partitions.
    pub(super) slots: Arc<AtomicUsize>,
}

impl Shared {
    /// This lane's slots now.
    pub(super) fn slots(&self) -> usize {
        self.slots.load(Ordering::Relaxed)
    }
}

/// Held and running attempts by (job id, fencing token), for the heartbeat.
/// Keyed by the token too: after a lost lease the same worker may claim the
/// job again, and the stale attempt must neither share nor remove the new
/// claim's entry.
pub(super) type LeaseTable = Arc<Mutex<HashMap<(String, u64), CancellationToken>>>;

pub(super) use crate::scripts::Claimed;

/// An attempt in progress.
pub(super) struct Running {
    pub(super) id: String,
    pub(super) token: u64,
    pub(super) kind: String,
    pub(super) attempt: u32,
    pub(super) errors: u32,
    pub(super) policy: JobPolicy,
    pub(super) started: Instant,
    pub(super) wait: Option<Duration>,
    pub(super) cancel: CancellationToken,
}

/// How an attempt ended.
pub(super) enum Outcome {
    Done,
    Failed(JobError),
    TimedOut(Duration),
    LeaseLost,
}

/// A finished attempt waiting for its acknowledgement.
pub(super) struct Finished {
    pub(super) id: String,
    pub(super) token: u64,
    pub(super) kind: String,
    pub(super) attempt: u32,
    pub(super) duration: Duration,
    pub(super) wait: Option<Duration>,
    /// Sent before in a call whose reply was lost: an "already finished"
    /// answer then means that earlier call finished it.
    pub(super) resent: bool,
}

impl Worker {
    /// Runs until `shutdown` resolves, then drains: stops claiming, lets
    /// running handlers finish within the drain timeout, puts the rest back
    /// at the head of their ready list without spending an attempt, waits for
    /// outstanding acknowledgements, and returns.
    ///
    /// A partitioned queue gets one lane per partition, each with its share
    /// of the concurrency (at least one slot); when the queue gains
    /// partitions, lanes start for the new ones while the others go on.
    ///
    /// Redis errors never end the run: the worker logs them, backs off with
    /// jitter and carries on when Redis is back.
    pub async fn run_until(self, shutdown: impl Future<Output = ()> + Send) -> Result<WorkerReport, QueueError> {
        let stop = CancellationToken::new();
        let run = self.run_lanes(stop.clone());
        let mut run = std::pin::pin!(run);
        let mut shutdown = std::pin::pin!(shutdown);
        tokio::select! {
            report = &mut run => report,
            () = &mut shutdown => {
                stop.cancel();
                run.await
            }
        }
    }

    /// Reads the partition count and runs a lane for each until `stop`.
    /// When the queue gains partitions, lanes start for the new ones and the
    /// running lanes give up slots as their handlers finish (their shares
    /// shrink): nothing is drained or cancelled. A count that went down
    /// (written by hand, or a queue deleted and made again) keeps every
    /// lane: jobs may still wait in the higher partitions.
    async fn run_lanes(&self, stop: CancellationToken) -> Result<WorkerReport, QueueError> {
        let worker_id = uuid::Uuid::new_v4().simple().to_string();
        let mut report = WorkerReport::default();
        let Some(mut partitions) = self.partition_count(&stop).await else {
            return Ok(report);
        };
        let mut shares: Vec<Arc<AtomicUsize>> = Vec::new();
        let mut lanes = FuturesUnordered::new();
        let mut watch = std::pin::pin!(self.next_count(&stop));
        // The count Redis last gave when it was below ours (warned once).
        let mut lower_seen = None;
        loop {
            if (shares.len() as u32) < partitions {
                if partitions as usize > self.concurrency {
                    warn!(
                        queue = %self.queue,
                        partitions,
                        concurrency = self.concurrency,
                        "the queue has more partitions than this worker has slots: \
                         running one slot per partition"
                    );
                }
                let slots = slot_shares(self.concurrency, partitions);
                for (share, slots) in shares.iter().zip(&slots) {
                    share.store(*slots, Ordering::Relaxed);
                }
                for keys in self
                    .client
                    .partition_keys(&self.queue, partitions)
                    .into_iter()
                    .skip(shares.len())
                {
                    let share = Arc::new(AtomicUsize::new(slots[keys.partition_index() as usize]));
                    shares.push(share.clone());
                    lanes.push(self.run_lane(keys, share, worker_id.clone(), stop.clone()));
                }
            }
            tokio::select! {
                Some(lane) = lanes.next() => {
                    report.add(&lane);
                    if lanes.is_empty() {
                        return Ok(report);
                    }
                }
                count = &mut watch => {
                    match count {
                        Some(count) if count > partitions => {
                            info!(queue = %self.queue, from = partitions, to = count, "partitions added; starting their lanes");
                            partitions = count;
                        }
                        Some(count) if count < partitions && lower_seen != Some(count) => {
                            warn!(queue = %self.queue, from = partitions, to = count, "the partition count went down; still serving every partition");
                            lower_seen = Some(count);
                        }
                        _ => {}
                    }
                    watch.set(self.next_count(&stop));
                }
            }
        }
    }

    /// The queue's partition count, asking again with backoff while Redis
    /// does not answer; `None` if stopped first.
    async fn partition_count(&self, stop: &CancellationToken) -> Option<u32> {
        let config = self.client.config();
        let mut backoff = RetryBackoff::new(config.retry_backoff_min, config.retry_backoff_max);
        loop {
            match self.client.fresh_partitions(&self.queue).await {
                Ok(count) => return Some(count),
                Err(err) => {
                    let delay = backoff.next_delay();
                    warn!(queue = %self.queue, error = %err, ?delay, "reading the partition count failed; backing off");
                    tokio::select! {
                        () = stop.cancelled() => return None,
                        () = tokio::time::sleep(delay) => {}
                    }
                }
            }
        }
    }

    /// The count read after `partition_refresh`; `None` when the read fails
    /// (the lanes are backing off too) or never, once stopped.
    async fn next_count(&self, stop: &CancellationToken) -> Option<u32> {
        tokio::select! {
            () = stop.cancelled() => std::future::pending().await,
            () = tokio::time::sleep(self.client.config().partition_refresh) => {}
        }
        match self.client.fresh_partitions(&self.queue).await {
            Ok(count) => Some(count),
            Err(err) => {
                debug!(queue = %self.queue, error = %err, "reading the partition count failed");
                None
            }
        }
    }

    /// One partition's worker: the driver with `slots` slots and the
    /// background tasks, until `stop`, then the drain.
    async fn run_lane(
        &self,
        keys: QueueKeys,
        slots: Arc<AtomicUsize>,
        worker_id: String,
        stop: CancellationToken,
    ) -> WorkerReport {
        let partition = keys.partition_index();
        let shared = Arc::new(Shared {
            client: self.client.clone(),
            keys,
            queue: self.queue.clone(),
            events: self.events.clone(),
            counters: Counters::default(),
            worker_id,
            slots,
        });
        let background_stop = CancellationToken::new();
        let leases: LeaseTable = Arc::default();
        let woken = Arc::new(Notify::new());
        let (arm_tx, arm_rx) = watch::channel(0_u64);
        let mut background = JoinSet::new();
        if self.background {
            background.spawn(scheduler::run_promoter(shared.clone(), background_stop.clone()));
            background.spawn(scheduler::run_reaper(shared.clone(), background_stop.clone()));
        }
        background.spawn(run_heartbeat(shared.clone(), leases.clone(), background_stop.clone()));
        background.spawn(run_registry(shared.clone(), leases.clone(), background_stop.clone()));
        let waker_stop = background_stop.child_token();
        background.spawn(run_waker(shared.clone(), arm_rx, woken.clone(), waker_stop.clone()));
        let slots = shared.slots();
        info!(queue = %self.queue, partition, concurrency = slots, "worker started");

        let mut driver = Driver {
            shared: shared.clone(),
            handlers: self.handlers.clone(),
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
            ahead_of: self.concurrency.max(slots),
            rtt_us: Ewma::default(),
            handler_us: Ewma::default(),
            buffer_moved: tokio::time::Instant::now(),
        };
        let in_flight = driver.run(stop.cancelled(), &woken, &arm_tx).await;
        waker_stop.cancel();
        driver.drain(in_flight).await;
        background_stop.cancel();
        while background.join_next().await.is_some() {}

        let c = &shared.counters;
        let report = WorkerReport {
            completed: c.completed.load(Ordering::Relaxed),
            retried: c.retried.load(Ordering::Relaxed),
            dead: c.dead.load(Ordering::Relaxed),
            requeued: c.requeued.load(Ordering::Relaxed),
            stale: c.stale.load(Ordering::Relaxed),
            most_claimed_ahead: c.most_claimed_ahead.load(Ordering::Relaxed),
        };
        info!(queue = %self.queue, partition, ?report, "worker stopped");
        report
    }
}

impl WorkerReport {
    fn add(&mut self, other: &Self) {
        self.completed += other.completed;
        self.retried += other.retried;
        self.dead += other.dead;
        self.requeued += other.requeued;
        self.stale += other.stale;
        self.most_claimed_ahead = self.most_claimed_ahead.max(other.most_claimed_ahead);
    }
}

/// Each partition's slots out of `concurrency`: as even as possible, at
/// least one each (so every partition is served, even by a worker with
/// fewer slots than partitions).
fn slot_shares(concurrency: usize, partitions: u32) -> Vec<usize> {
    let k = (partitions as usize).max(1);
    (0..k)
        .map(|p| (concurrency / k + usize::from(p < concurrency % k)).max(1))
        .collect()
}

#[cfg(test)]
#[path = "runtime_tests.rs"]
mod tests;
