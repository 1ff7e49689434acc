//! Time-driven background work each worker process runs: the promoter
//! (scheduled → ready when due) and the reaper (expired leases → ready, or
//! dead).
//!
//! The promoter sleeps on a precise client-side timer until the next due
//! time it knows of, never polling Redis in a loop and never relying on
//! Redis's own timeouts (which fire on the server's `hz` tick, ~100 ms by
//! default). Scripts that schedule a job earlier than any other announce the
//! due time on a pub/sub channel, so the sleep is cut short; a capped sleep
//! is the safety net should an announcement be missed. Every process runs a
//! promoter and the move is one idempotent script, so they need no
//! coordination.
//!
//! The reaper runs every `reap_interval` in whichever process takes the short
//! `SET NX PX` lock first.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt as _;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use crate::JobEvent;
use crate::clock::{millis, now_ms};
use crate::keys::MOVE_BATCH;
use crate::retry::RetryBackoff;
use crate::worker::Shared;

pub(crate) use crate::scripts::{Reaped, promote_due, reap_expired};

/// The promoter loop of one worker process.
pub(crate) async fn run_promoter(shared: Arc<Shared>, stop: CancellationToken) {
    let config = shared.client.config().clone();
    let max_sleep = millis(config.promote_max_sleep);
    let (tx, mut announcements) = mpsc::unbounded_channel::<u64>();
    let listener = tokio::spawn(listen_for_due_times(shared.clone(), tx, stop.clone()));
    let mut backoff = RetryBackoff::new(config.retry_backoff_min, config.retry_backoff_max);
    loop {
        // Due times live on Redis's clock; this process sleeps on its own
        // monotonic timer. `offset` turns one into the other (Redis's now
        // minus ours when the script ran), so a skewed host clock neither
        // promotes early nor late.
        let (next_due, offset) = match promote_due(&shared.client, &shared.keys).await {
            Ok(promoted) => {
                backoff.reset();
                if promoted.moved > 0 {
                    debug!(queue = %shared.queue, moved = promoted.moved, "promoted due jobs");
                }
                if promoted.moved >= MOVE_BATCH {
                    continue;
                }
                (
                    promoted.next_due,
                    promoted.redis_now.cast_signed() - now_ms().cast_signed(),
                )
            }
            Err(err) => {
                let delay = backoff.next_delay();
                warn!(queue = %shared.queue, error = %err, ?delay, "promoter failed; backing off");
                tokio::select! {
                    () = stop.cancelled() => break,
                    () = tokio::time::sleep(delay) => continue,
                }
            }
        };
        // Everything below on Redis's clock.
        let redis_now = || now_ms().saturating_add_signed(offset);
        let now = redis_now();
        let mut target = next_due.map_or(now + max_sleep, |due| due.min(now + max_sleep));
        loop {
            let wait = target.saturating_sub(redis_now());
            if wait == 0 {
                break;
            }
            tokio::select! {
                () = stop.cancelled() => {
                    listener.abort();
                    return;
                }
                () = tokio::time::sleep(Duration::from_millis(wait)) => break,
                announced = announcements.recv() => match announced {
                    Some(due) => target = target.min(due),
                    // The listener only ends on stop.
                    None => break,
                },
            }
        }
    }
    listener.abort();
}

/// Subscribes to the queue's due-time channel and forwards announcements;
/// after every (re)subscription it asks for one immediate check, since
/// announcements made while disconnected are lost.
async fn listen_for_due_times(shared: Arc<Shared>, tx: mpsc::UnboundedSender<u64>, stop: CancellationToken) {
    let config = shared.client.config().clone();
    let mut backoff = RetryBackoff::new(config.retry_backoff_min, config.retry_backoff_max);
    let channel = shared.keys.due_channel();
    let mut attempt = 0_usize;
    loop {
        attempt += 1;
        let subscribed = async {
            let mut pubsub = shared.client.pubsub_client(attempt).get_async_pubsub().await?;
            pubsub.subscribe(&channel).await?;
            Ok::<_, redis::RedisError>(pubsub)
        };
        let result = tokio::select! {
            () = stop.cancelled() => return,
            result = subscribed => result,
        };
        match result {
            Ok(mut pubsub) => {
                backoff.reset();
                if tx.send(0).is_err() {
                    return;
                }
                let mut messages = pubsub.on_message();
                loop {
                    tokio::select! {
                        () = stop.cancelled() => return,
                        message = messages.next() => match message {
                            Some(message) => {
                                let due = message.get_payload::<u64>().unwrap_or(0);
                                if tx.send(due).is_err() {
                                    return;
                                }
                            }
                            None => break,
                        },
                    }
                }
                warn!(queue = %shared.queue, "due-time subscription lost; resubscribing");
            }
            Err(err) => {
                let delay = backoff.next_delay();
                warn!(queue = %shared.queue, error = %err, ?delay, "cannot subscribe to due times; backing off");
                tokio::select! {
                    () = stop.cancelled() => return,
                    () = tokio::time::sleep(delay) => {}
                }
            }
        }
    }
}

/// The reaper loop of one worker process: one process at a time reaps,
/// chosen by a lock that lives for one interval.
pub(crate) async fn run_reaper(shared: Arc<Shared>, stop: CancellationToken) {
    let config = shared.client.config().clone();
    let interval = config.reap_interval;
    let owner = uuid::Uuid::new_v4().to_string();
    loop {
        // Jitter so that processes started together do not race every time.
        let delay = interval.mul_f64(0.8 + rand::random::<f64>() * 0.4);
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(delay) => {}
        }
        match shared
            .client
            .try_lock(&shared.keys.reaper_lock(), &owner, interval)
            .await
        {
            Ok(true) => {}
            Ok(false) => continue,
            Err(err) => {
                debug!(queue = %shared.queue, error = %err, "reaper lock failed");
                continue;
            }
        }
        loop {
            match reap_expired(&shared.client, &shared.keys).await {
                Ok(reaped) => {
                    for job in &reaped {
                        report_reaped(&shared, job);
                    }
                    if reaped.len() < MOVE_BATCH {
                        break;
                    }
                }
                Err(err) => {
                    warn!(queue = %shared.queue, error = %err, "reaper failed");
                    break;
                }
            }
        }
    }
}

fn report_reaped(shared: &Shared, job: &Reaped) {
    let event = JobEvent {
        queue: shared.queue.clone(),
        kind: job.kind.clone(),
        id: job.id.clone(),
        attempt: job.attempt,
        duration: None,
        wait: None,
        error: Some(format!("worker lost (lease expired), crash {}", job.crashes)),
    };
    if job.dead {
        warn!(queue = %shared.queue, id = %job.id, crashes = job.crashes, "worker lost too often: job moved to the dead set");
        shared.events.on_dead(&event);
    } else {
        warn!(queue = %shared.queue, id = %job.id, crashes = job.crashes, "recovered a job whose worker was lost");
        shared.events.on_recovered(&event);
    }
}
