//! Partitioned queues: one queue spread over several hash slots, so that on a
//! Redis Cluster one busy queue is served by several masters.
//!
//! A queue with `K` partitions is `K` complete key sets (see [`QueueKeys`]):
//! partition 0 is the queue's usual `{<queue>}` keys, partition `p` ≥ 1 has
//! the hash tag `{<queue>#<p>}`. Every script still touches one partition,
//! so each stays atomic; nothing spans two.
//!
//! - **The count** lives in Redis, in the `partitions` field of partition
//!   0's `control` hash (absent: 1, today's layout). It only grows
//!   ([`QueueAdmin::set_partitions`]): a job routed to a partition must
//!   always have workers.
//! - **Producers** route a job with a dedup key to
//!   [`partition_for_key`] of the key (so a second enqueue with that key
//!   meets the waiting one and coalesces), and any other job to
//!   [`partition_for_key`] of its id (so a job sent again with the same id,
//!   as the outbox relay does after a lost reply, meets its first copy and
//!   is not enqueued twice). They read the count at most every
//!   `QueueConfig::partition_refresh`.
//! - **Workers** run one lane per partition (`worker/runtime.rs`), each with
//!   its share of the worker's concurrency, its own leases, heartbeats,
//!   promoter and reaper. A worker notices a new count within
//!   `partition_refresh`, drains, and starts again with a lane for each.
//! - **Controls**: a pause is written to every partition; a limit is split
//!   between them (its shares add up to the limit), so it must be at least
//!   the partition count.
//! - **Admin views** ([`QueueAdmin::stats`], job listings, workers) add up or
//!   list the partitions in order.

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use redis::AsyncCommands as _;

use crate::config::check_queue_name;
use crate::{QueueAdmin, QueueClient, QueueControl, QueueError, QueueKeys, scripts};

/// Most partitions a queue may have.
pub const MAX_PARTITIONS: u32 = 64;

/// How long the partitioning lock lives unless released (a change of the
/// count takes a few round trips).
const PARTITIONING_LOCK: Duration = Duration::from_secs(10);

/// The field of partition 0's `control` hash that holds the count.
const COUNT_FIELD: &str = "partitions";

/// The partition of a job with dedup key `key` in a queue of `partitions`:
/// FNV-1a (32 bits) of the key's UTF-8 bytes, modulo the count.
/// `docs/PROTOCOL.md` gives the same rule to producers in other languages.
pub fn partition_for_key(key: &str, partitions: u32) -> u32 {
    if partitions <= 1 {
        return 0;
    }
    let hash = key.bytes().fold(0x811c_9dc5_u32, |hash, byte| {
        (hash ^ u32::from(byte)).wrapping_mul(0x0100_0193)
    });
    hash % partitions
}

/// Each partition's share of a queue-wide limit: as even as possible, the
/// larger shares first, adding up to `limit`.
pub(crate) fn limit_shares(limit: u64, partitions: u32) -> Vec<u64> {
    let k = u64::from(partitions.max(1));
    (0..k).map(|p| limit / k + u64::from(p < limit % k)).collect()
}

/// What a client remembers of partition counts, per queue.
#[derive(Debug, Default)]
pub(crate) struct PartitionCache {
    counts: Mutex<HashMap<String, (u32, Instant)>>,
}

fn parse_count(queue: &str, raw: Option<String>) -> Result<u32, QueueError> {
    let Some(raw) = raw else { return Ok(1) };
    match raw.parse::<u32>() {
        Ok(n) if (1..=MAX_PARTITIONS).contains(&n) => Ok(n),
        _ => Err(QueueError::Protocol(format!(
            "queue {queue:?} has an invalid partition count {raw:?} in its control hash \
             (expected 1 to {MAX_PARTITIONS})"
        ))),
    }
}

impl QueueClient {
    /// How many partitions `queue` has (1 unless it was partitioned), as read
    /// at most `QueueConfig::partition_refresh` ago.
    pub async fn partitions(&self, queue: &str) -> Result<u32, QueueError> {
        let refresh = self.config().partition_refresh;
        {
            let counts = self
                .partition_cache()
                .counts
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            if let Some((count, read)) = counts.get(queue)
                && read.elapsed() < refresh
            {
                return Ok(*count);
            }
        }
        self.fresh_partitions(queue).await
    }

    /// The partition count read from Redis now (and remembered).
    pub(crate) async fn fresh_partitions(&self, queue: &str) -> Result<u32, QueueError> {
        check_queue_name(queue)?;
        let mut conn = self.conn();
        let raw: Option<String> = self.observe(
            conn.hget(self.keys(queue).control(), COUNT_FIELD)
                .await
                .map_err(QueueError::from),
        )?;
        let count = parse_count(queue, raw)?;
        self.partition_cache()
            .counts
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(queue.to_owned(), (count, Instant::now()));
        Ok(count)
    }

    /// The keys of each of `count` partitions of `queue`, in order.
    pub(crate) fn partition_keys(&self, queue: &str, count: u32) -> Vec<QueueKeys> {
        (0..count.max(1))
            .map(|p| QueueKeys::partition(&self.config().prefix, queue, p))
            .collect()
    }

    /// The keys of every partition of `queue` (reading the count).
    pub(crate) async fn all_partition_keys(&self, queue: &str) -> Result<Vec<QueueKeys>, QueueError> {
        let count = self.partitions(queue).await?;
        Ok(self.partition_keys(queue, count))
    }
}

/// The partition for a job: by its dedup key, else by its id. Both are
/// deterministic, so sending a job again (same key, or same id) reaches the
/// partition that holds its first copy.
pub(crate) fn route(dedup_key: Option<&str>, id: &str, partitions: u32) -> u32 {
    partition_for_key(dedup_key.unwrap_or(id), partitions)
}

impl QueueAdmin {
    /// Grows `queue` to `count` partitions (1 to [`MAX_PARTITIONS`]) and
    /// returns the count now in force. A count can grow, never shrink: jobs
    /// already routed to a partition above a smaller count would wait
    /// forever.
    ///
    /// Under a short lock (a second caller waits for the first), in order:
    /// the new partitions get the queue's pause and every partition its
    /// share of the limit (split over `count`, so the limit must be at
    /// least `count`); then one script raises the count, never lowering it.
    /// A call that fails half way may leave the limit's shares split over
    /// the larger count (a lower limit, never a higher one): call it again. Producers
    /// route to the new partitions, and workers serve them, within
    /// `QueueConfig::partition_refresh`. A count field holding something
    /// that is not a count (written by hand) is replaced.
    pub async fn set_partitions(&self, queue: &str, count: u32) -> Result<u32, QueueError> {
        check_queue_name(queue)?;
        if !(1..=MAX_PARTITIONS).contains(&count) {
            return Err(QueueError::InvalidArgument(format!(
                "a queue has 1 to {MAX_PARTITIONS} partitions, not {count}"
            )));
        }
        let keys0 = QueueKeys::partition(&self.client.config().prefix, queue, 0);
        let token = self.lock_partitioning(queue, &keys0).await?;
        let result = self.change_partitions(queue, &keys0, count).await;
        self.unlock_partitioning(&keys0, &token).await;
        result
    }

    /// [`QueueAdmin::set_partitions`] under the partitioning lock.
    async fn change_partitions(&self, queue: &str, keys0: &QueueKeys, count: u32) -> Result<u32, QueueError> {
        let current = match self.client.fresh_partitions(queue).await {
            Ok(current) => current,
            // Unreadable: nothing routes by it; partition 0 holds the controls.
            Err(QueueError::Protocol(reason)) => {
                tracing::warn!(queue, %reason, "replacing an invalid partition count");
                1
            }
            Err(err) => return Err(err),
        };
        if count < current {
            return Err(shrink_refused(queue, current, count));
        }
        if count == current {
            return Ok(current);
        }
        let control = self.control_of(&self.client.partition_keys(queue, current)).await?;
        if let Some(limit) = control.limit
            && limit < u64::from(count)
        {
            return Err(QueueError::InvalidArgument(format!(
                "queue {queue:?} has a concurrency limit of {limit}, below {count} partitions \
                 (each partition needs a share of at least one): raise or remove the limit first"
            )));
        }
        self.write_controls(queue, &control, current, count).await?;
        let (before, now) = scripts::raise_partitions(&self.client, &keys0.control(), count).await?;
        if now != count {
            // Raised past `count` meanwhile by a caller that took no lock
            // (an older client, or by hand): split the controls over its count.
            self.write_controls(queue, &control, current, now).await?;
        }
        self.client.fresh_partitions(queue).await?;
        if before.is_some_and(|before| before > count) {
            return Err(shrink_refused(queue, now, count));
        }
        Ok(now)
    }

    /// Takes the partitioning lock of `queue`, waiting (at most the lock's
    /// lifetime and a little) while another caller holds it.
    async fn lock_partitioning(&self, queue: &str, keys0: &QueueKeys) -> Result<String, QueueError> {
        let token = uuid::Uuid::new_v4().simple().to_string();
        let deadline = Instant::now() + PARTITIONING_LOCK + PARTITIONING_LOCK / 5;
        loop {
            if self
                .client
                .try_lock(&keys0.partitioning_lock(), &token, PARTITIONING_LOCK)
                .await?
            {
                return Ok(token);
            }
            if Instant::now() > deadline {
                return Err(QueueError::InvalidArgument(format!(
                    "another caller is changing the partition count of queue {queue:?} \
                     (lock {} held): try again",
                    keys0.partitioning_lock()
                )));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Releases the lock if it is still ours (it may have expired and been
    /// taken by another caller); a failure only leaves it to expire.
    async fn unlock_partitioning(&self, keys0: &QueueKeys, token: &str) {
        let mut conn = self.client.conn();
        let holder: Result<Option<String>, _> = conn.get(keys0.partitioning_lock()).await;
        if matches!(holder, Ok(Some(ref t)) if t == token) {
            let _: Result<u64, _> = conn.del(keys0.partitioning_lock()).await;
        }
    }

    /// Writes `control` (as read over the first `from` partitions) to a
    /// queue of `to` partitions: the pause on the partitions from `from` on,
    /// the limit's shares on all of them.
    async fn write_controls(&self, queue: &str, control: &QueueControl, from: u32, to: u32) -> Result<(), QueueError> {
        let keys = self.client.partition_keys(queue, to);
        let mut conn = self.client.conn();
        if control.paused {
            for partition in keys.iter().skip(from as usize) {
                let () = conn.hset(partition.control(), "paused", "1").await?;
            }
        }
        if let Some(limit) = control.limit {
            for (partition, share) in keys.iter().zip(limit_shares(limit, to)) {
                let () = conn.hset(partition.control(), "limit", share).await?;
            }
        }
        Ok(())
    }
}

fn shrink_refused(queue: &str, current: u32, count: u32) -> QueueError {
    QueueError::InvalidArgument(format!(
        "queue {queue:?} has {current} partitions; partitions can be added, not removed \
         (jobs routed to the partitions above {count} would never be claimed)"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_route_by_fnv1a() {
        // FNV-1a 32 of "a" is 0xe40c292c, of "foobar" 0xbf9cf968 (the
        // published test vectors), so other languages can check theirs.
        assert_eq!(partition_for_key("a", u32::MAX), 0xe40c_292c);
        assert_eq!(partition_for_key("foobar", 1000), 0xbf9c_f968 % 1000);
        assert_eq!(partition_for_key("anything", 1), 0);
        for key in ["refresh:all", "match:42", ""] {
            assert!(partition_for_key(key, 3) < 3);
        }
    }

    #[test]
    fn limit_shares_add_up_and_differ_by_at_most_one() {
        assert_eq!(limit_shares(10, 3), vec![4, 3, 3]);
        assert_eq!(limit_shares(3, 3), vec![1, 1, 1]);
        assert_eq!(limit_shares(7, 1), vec![7]);
        for (limit, k) in [(5, 2), (64, 64), (100, 7)] {
            let shares = limit_shares(limit, k);
            assert_eq!(shares.iter().sum::<u64>(), limit);
            let (most, least) = (
                shares.iter().max().expect("shares"),
                shares.iter().min().expect("shares"),
            );
            assert!(most - least <= 1, "{shares:?}");
        }
    }

    #[test]
    fn counts_parse_or_say_what_is_wrong() {
        assert_eq!(parse_count("q", None).expect("absent"), 1);
        assert_eq!(parse_count("q", Some("3".into())).expect("three"), 3);
        for bad in ["0", "65", "x", "-1"] {
            let err = parse_count("q", Some(bad.into())).expect_err("invalid").to_string();
            assert!(err.contains("invalid partition count"), "{err}");
        }
    }
}
