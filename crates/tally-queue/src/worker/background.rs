//! The small tasks beside a worker's driver: the waker, the heartbeat and
//! the registry entry.

use std::sync::{Arc, PoisonError};

use tokio::sync::{Notify, watch};
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use super::runtime::{LeaseTable, Shared};
use crate::clock::now_ms;
use crate::retry::RetryBackoff;
use crate::{registry, scripts};

/// Blocks on the wake list while the driver has nothing to claim, and tells
/// the driver when a marker (or the idle-poll timeout) arrives.
pub(super) async fn run_waker(
    shared: Arc<Shared>,
    mut arm: watch::Receiver<u64>,
    woken: Arc<Notify>,
    stop: CancellationToken,
) {
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
pub(super) async fn run_heartbeat(shared: Arc<Shared>, leases: LeaseTable, stop: CancellationToken) {
    let config = shared.client.config().clone();
    // The first beat one period in, not at once: a lease just handed out
    // needs no extension (and an extension racing the claim that made it
    // would only push an operator's or a test's expiry back).
    let period = config.heartbeat_interval();
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
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
            let result = scripts::extend_leases(&shared.client, &shared.keys, config.lease, chunk).await;
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

/// Keeps this process's entry in the registry of live workers (see
/// `registry.rs`) every heartbeat period, with how many jobs it holds;
/// removes it when the worker stops. A failed write is only logged: the
/// registry is for operators, never a reason to stop working.
pub(super) async fn run_registry(shared: Arc<Shared>, leases: LeaseTable, stop: CancellationToken) {
    let config = shared.client.config().clone();
    let ttl = registry::ttl(config.lease, config.heartbeat_interval());
    let mut info = registry::starting(&shared.worker_id, &shared.queue, shared.slots());
    let mut tick = tokio::time::interval(config.heartbeat_interval());
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = stop.cancelled() => break,
            _ = tick.tick() => {}
        }
        info.in_flight = u32::try_from(leases.lock().unwrap_or_else(PoisonError::into_inner).len()).unwrap_or(u32::MAX);
        info.concurrency = u32::try_from(shared.slots()).unwrap_or(u32::MAX);
        info.heartbeat_at_ms = now_ms();
        if let Err(err) = registry::beat(&shared.client, &shared.keys, &info, ttl).await {
            debug!(queue = %shared.queue, error = %err, "worker registry heartbeat failed");
        }
    }
    if let Err(err) = registry::leave(&shared.client, &shared.keys, &shared.worker_id).await {
        debug!(queue = %shared.queue, error = %err, "could not leave the worker registry; the entry expires on its own");
    }
}
