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
//!   [`partition_for_key`] (so a second enqueue with that key meets the
//!   waiting one and coalesces), and any other job round robin. They read
//!   the count at most every `QueueConfig::partition_refresh`.
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
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::Instant;

use redis::AsyncCommands as _;

use crate::config::check_queue_name;
use crate::{QueueAdmin, QueueClient, QueueError, QueueKeys};

/// Most partitions a queue may have.
pub const MAX_PARTITIONS: u32 = 64;

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
    /// Round-robin position for jobs without a dedup key.
    next: AtomicU32,
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

    /// The partition for a job: by its dedup key, else round robin.
    pub(crate) fn route(&self, dedup_key: Option<&str>, partitions: u32) -> u32 {
        if partitions <= 1 {
            return 0;
        }
        match dedup_key {
            Some(key) => partition_for_key(key, partitions),
            None => self.partition_cache().next.fetch_add(1, Ordering::Relaxed) % partitions,
        }
    }
}

impl QueueAdmin {
    /// Grows `queue` to `count` partitions (1 to [`MAX_PARTITIONS`]) and
    /// returns the count now in force. A count can grow, never shrink: jobs
    /// already routed to a partition above a smaller count would wait
    /// forever. The new partitions get the queue's pause, the limit is split
    /// again over all of them (so it must be at least `count`), and only
    /// then is the count written, so no worker serves a partition without
    /// its controls. Producers route to the new partitions, and workers
    /// serve them, within `QueueConfig::partition_refresh`.
    pub async fn set_partitions(&self, queue: &str, count: u32) -> Result<u32, QueueError> {
        check_queue_name(queue)?;
        if !(1..=MAX_PARTITIONS).contains(&count) {
            return Err(QueueError::InvalidArgument(format!(
                "a queue has 1 to {MAX_PARTITIONS} partitions, not {count}"
            )));
        }
        let current = self.client.fresh_partitions(queue).await?;
        if count < current {
            return Err(QueueError::InvalidArgument(format!(
                "queue {queue:?} has {current} partitions; partitions can be added, not removed \
                 (jobs routed to the partitions above {count} would never be claimed)"
            )));
        }
        if count == current {
            return Ok(current);
        }
        let control = self.control(queue).await?;
        if let Some(limit) = control.limit
            && limit < u64::from(count)
        {
            return Err(QueueError::InvalidArgument(format!(
                "queue {queue:?} has a concurrency limit of {limit}, below {count} partitions \
                 (each partition needs a share of at least one): raise or remove the limit first"
            )));
        }
        let keys = self.client.partition_keys(queue, count);
        let mut conn = self.client.conn();
        for partition in &keys[current as usize..] {
            if control.paused {
                let () = conn.hset(partition.control(), "paused", "1").await?;
            }
        }
        if let Some(limit) = control.limit {
            for (partition, share) in keys.iter().zip(limit_shares(limit, count)) {
                let () = conn.hset(partition.control(), "limit", share).await?;
            }
        }
        let () = conn.hset(keys[0].control(), COUNT_FIELD, count).await?;
        self.client.fresh_partitions(queue).await
    }
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
