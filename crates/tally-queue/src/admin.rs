//! Introspection and repair: queue statistics and the dead set (list,
//! inspect, retry, purge), for the CLI, metrics and operators.

use std::collections::HashMap;
use std::time::Duration;

use redis::AsyncCommands as _;
use serde::Serialize;
use tally_jobs::{Envelope, Priority};

use crate::clock::{millis, now_ms};
use crate::config::check_queue_name;
use crate::partitions::limit_shares;
use crate::{QueueClient, QueueError, QueueKeys, scheduler, scripts};

/// Ready jobs per priority.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ReadyByPriority {
    /// `ready:high` length.
    pub high: u64,
    /// `ready:normal` length.
    pub normal: u64,
    /// `ready:low` length.
    pub low: u64,
}

/// Lifetime counters of a queue (never reset by the engine).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct QueueCounters {
    /// Jobs accepted (coalesced enqueues not counted).
    pub enqueued: u64,
    /// Jobs completed.
    pub completed: u64,
    /// Failed attempts (errors, panics, timeouts, bad input).
    pub failed: u64,
    /// Failed attempts scheduled for a retry.
    pub retried: u64,
    /// Jobs moved to the dead set.
    pub dead: u64,
    /// Jobs recovered after their worker was lost.
    pub recovered: u64,
}

/// A snapshot of one queue.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct QueueStats {
    /// Ready jobs, all priorities.
    pub ready: u64,
    /// Ready jobs per priority.
    pub ready_by_priority: ReadyByPriority,
    /// Delayed jobs and retries waiting for their due time.
    pub scheduled: u64,
    /// Jobs claimed by a worker (leased).
    pub in_flight: u64,
    /// Jobs in the dead set.
    pub dead: u64,
    /// Age of the oldest job at the head of a ready list, from its envelope's
    /// `createdAtMs` (for a retried or delayed job that includes its wait).
    pub oldest_ready_age_ms: Option<u64>,
    /// Lifetime counters.
    pub counters: QueueCounters,
    /// Whether workers are stopped from claiming (`QueueAdmin::pause`).
    pub paused: bool,
    /// Most jobs in flight across every worker, when limited
    /// (`QueueAdmin::set_limit`).
    pub limit: Option<u64>,
    /// How many partitions the queue has (1 unless partitioned,
    /// `QueueAdmin::set_partitions`); every figure above adds them up.
    pub partitions: u32,
}

impl QueueStats {
    /// Adds one partition's figures to these.
    fn add(&mut self, p: &Self) {
        self.ready += p.ready;
        self.ready_by_priority.high += p.ready_by_priority.high;
        self.ready_by_priority.normal += p.ready_by_priority.normal;
        self.ready_by_priority.low += p.ready_by_priority.low;
        self.scheduled += p.scheduled;
        self.in_flight += p.in_flight;
        self.dead += p.dead;
        self.oldest_ready_age_ms = self.oldest_ready_age_ms.max(p.oldest_ready_age_ms);
        let (c, o) = (&mut self.counters, &p.counters);
        c.enqueued += o.enqueued;
        c.completed += o.completed;
        c.failed += o.failed;
        c.retried += o.retried;
        c.dead += o.dead;
        c.recovered += o.recovered;
    }
}

/// The operator's controls of one queue, as stored in its `control` hash and
/// enforced by every claim (`lua/claim_jobs.lua`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct QueueControl {
    /// No worker claims while paused; producers still enqueue and running
    /// jobs finish. A partitioned queue is paused when every partition is
    /// (a pause that failed half way shows as not paused: pause again).
    pub paused: bool,
    /// Most jobs in flight (running or claimed ahead) across every worker
    /// process; `None` for no limit.
    pub limit: Option<u64>,
}

/// A job in the dead set.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DeadJob {
    /// Job id.
    pub id: String,
    /// Job kind, when the envelope could be read.
    pub kind: Option<String>,
    /// Why the job died (last error).
    pub error: String,
    /// Attempts made.
    pub attempts: u32,
    /// Attempts whose worker was lost.
    pub crashes: u32,
    /// Attempts that failed.
    pub errors: u32,
    /// Time of death, ms since the Unix epoch.
    pub died_at_ms: u64,
    /// The envelope as stored (raw, since it may be the reason it died).
    pub envelope: Option<String>,
}

/// The controls of a queue from those of its partitions: paused when every one is
/// (a pause is written to all), limited by the sum of the shares.
fn combine_controls(parts: impl Iterator<Item = QueueControl>) -> QueueControl {
    let parts: Vec<QueueControl> = parts.collect();
    QueueControl {
        paused: !parts.is_empty() && parts.iter().all(|part| part.paused),
        limit: parts.iter().fold(None, |total, part| match (total, part.limit) {
            (None, None) => None,
            (a, b) => Some(a.unwrap_or(0) + b.unwrap_or(0)),
        }),
    }
}

/// The controls from the fields of a `control` hash.
fn parse_control(fields: &HashMap<String, String>) -> QueueControl {
    QueueControl {
        paused: fields.get("paused").is_some_and(|v| v == "1"),
        limit: fields.get("limit").and_then(|v| v.parse().ok()),
    }
}

/// Hash values as raw bytes, absent ones as `None`.
type MaybeBytes = Vec<Option<Vec<u8>>>;

/// Which dead jobs to retry or purge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeadSelector {
    /// These ids.
    Ids(Vec<String>),
    /// Every dead job.
    All,
    /// Dead jobs that died more than this long ago (purge only; retry treats
    /// it as `All`).
    OlderThan(Duration),
}

/// Queue statistics and dead-set repair.
#[derive(Debug, Clone)]
pub struct QueueAdmin {
    pub(crate) client: QueueClient,
}

#[derive(serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct DeadInfo {
    #[serde(default)]
    error: String,
    #[serde(default)]
    attempts: u32,
    #[serde(default)]
    crashes: u32,
    #[serde(default)]
    errors: u32,
    #[serde(default)]
    died_at_ms: u64,
}

impl QueueAdmin {
    /// Admin on `client`.
    pub fn new(client: QueueClient) -> Self {
        Self { client }
    }

    /// The client this admin uses.
    pub fn client(&self) -> &QueueClient {
        &self.client
    }

    /// The keys of every partition of `queue`, the count read from Redis
    /// now (for writes that must reach every partition).
    async fn fresh_partition_keys(&self, queue: &str) -> Result<Vec<QueueKeys>, QueueError> {
        check_queue_name(queue)?;
        let count = self.client.fresh_partitions(queue).await?;
        Ok(self.client.partition_keys(queue, count))
    }

    /// The keys of every partition of `queue`, in order.
    pub(crate) async fn partition_keys(&self, queue: &str) -> Result<Vec<QueueKeys>, QueueError> {
        check_queue_name(queue)?;
        self.client.all_partition_keys(queue).await
    }

    /// A snapshot of `queue` (two round trips per partition, the partitions
    /// at once), its partitions added up.
    pub async fn stats(&self, queue: &str) -> Result<QueueStats, QueueError> {
        let keys = self.partition_keys(queue).await?;
        let parts = futures::future::try_join_all(keys.iter().map(|k| self.partition_stats(k))).await?;
        let mut total = QueueStats {
            partitions: keys.len() as u32,
            ..QueueStats::default()
        };
        for part in &parts {
            total.add(part);
        }
        let control = combine_controls(parts.iter().map(|p| QueueControl {
            paused: p.paused,
            limit: p.limit,
        }));
        total.paused = control.paused;
        total.limit = control.limit;
        Ok(total)
    }

    /// The snapshot of one partition.
    async fn partition_stats(&self, keys: &QueueKeys) -> Result<QueueStats, QueueError> {
        let mut conn = self.client.conn();
        let [high, normal, low] = keys.ready_all();
        let mut pipe = redis::pipe();
        pipe.llen(&high)
            .llen(&normal)
            .llen(&low)
            .zcard(keys.scheduled())
            .zcard(keys.leases())
            .zcard(keys.dead())
            .hgetall(keys.stats())
            .lindex(&high, 0)
            .lindex(&normal, 0)
            .lindex(&low, 0)
            .hgetall(keys.control());
        #[expect(clippy::type_complexity, reason = "the shape of one pipeline reply")]
        let (h, n, l, scheduled, in_flight, dead, counters, heads, control): (
            u64,
            u64,
            u64,
            u64,
            u64,
            u64,
            HashMap<String, u64>,
            (Option<String>, Option<String>, Option<String>),
            HashMap<String, String>,
        ) = {
            let (high_len, normal_len, low_len, scheduled, in_flight, dead, counters, high0, normal0, low0, control) =
                pipe.query_async(&mut conn).await?;
            (
                high_len,
                normal_len,
                low_len,
                scheduled,
                in_flight,
                dead,
                counters,
                (high0, normal0, low0),
                control,
            )
        };
        let control = parse_control(&control);
        let head_ids: Vec<String> = [heads.0, heads.1, heads.2].into_iter().flatten().collect();
        let mut oldest = None;
        if !head_ids.is_empty() {
            let envelopes: Vec<Option<Vec<u8>>> = redis::cmd("HMGET")
                .arg(keys.jobs())
                .arg(&head_ids)
                .query_async(&mut conn)
                .await?;
            let now = now_ms();
            oldest = envelopes
                .iter()
                .flatten()
                .filter_map(|bytes| Envelope::decode(bytes).ok())
                .map(|e| now.saturating_sub(e.created_at_ms))
                .max();
        }
        let counter = |name: &str| counters.get(name).copied().unwrap_or(0);
        Ok(QueueStats {
            ready: h + n + l,
            ready_by_priority: ReadyByPriority {
                high: h,
                normal: n,
                low: l,
            },
            scheduled,
            in_flight,
            dead,
            oldest_ready_age_ms: oldest,
            counters: QueueCounters {
                enqueued: counter("enqueued"),
                completed: counter("completed"),
                failed: counter("failed"),
                retried: counter("retried"),
                dead: counter("dead"),
                recovered: counter("recovered"),
            },
            paused: control.paused,
            limit: control.limit,
            partitions: 1,
        })
    }

    /// The controls of `queue` (running and unlimited unless set); of a
    /// partitioned queue, its limit is the sum of the partitions' shares.
    pub async fn control(&self, queue: &str) -> Result<QueueControl, QueueError> {
        let keys = self.partition_keys(queue).await?;
        self.control_of(&keys).await
    }

    /// The controls over the partitions `keys` (paused when every one is).
    pub(crate) async fn control_of(&self, keys: &[QueueKeys]) -> Result<QueueControl, QueueError> {
        let parts = futures::future::try_join_all(keys.iter().map(|k| async move {
            let mut conn = self.client.conn();
            let fields: HashMap<String, String> = conn.hgetall(k.control()).await?;
            Ok::<_, QueueError>(parse_control(&fields))
        }))
        .await?;
        Ok(combine_controls(parts.into_iter()))
    }

    /// Pauses `queue`: from the next claim on no worker takes a job from it
    /// (jobs already claimed run to their end); producers keep enqueuing.
    /// Stored in Redis, so it outlasts worker and Redis restarts (with
    /// persistence). Returns the controls now in force.
    pub async fn pause(&self, queue: &str) -> Result<QueueControl, QueueError> {
        let keys = self.fresh_partition_keys(queue).await?;
        for keys in &keys {
            let mut conn = self.client.conn();
            let () = conn.hset(keys.control(), "paused", "1").await?;
        }
        self.control_of(&keys).await
    }

    /// Resumes a paused `queue` (workers notice within `throttle_poll`).
    pub async fn resume(&self, queue: &str) -> Result<QueueControl, QueueError> {
        let keys = self.fresh_partition_keys(queue).await?;
        for keys in &keys {
            let mut conn = self.client.conn();
            let () = conn.hdel(keys.control(), "paused").await?;
        }
        self.control_of(&keys).await
    }

    /// Sets the most jobs of `queue` in flight across every worker process
    /// (`None` removes the limit). Claims check it atomically against the
    /// queue's leases, so it holds from the next claim on; jobs already in
    /// flight above a lowered limit run to their end. A partitioned queue's
    /// limit is split between its partitions (each enforces its share), so
    /// it must be at least the partition count.
    pub async fn set_limit(&self, queue: &str, limit: Option<u64>) -> Result<QueueControl, QueueError> {
        let keys = self.fresh_partition_keys(queue).await?;
        let mut conn = self.client.conn();
        match limit {
            Some(n) if n < keys.len() as u64 => {
                return Err(QueueError::InvalidArgument(format!(
                    "queue {queue:?} has {} partitions and each enforces a share of the limit: \
                     the limit must be at least {}, not {n}",
                    keys.len(),
                    keys.len()
                )));
            }
            Some(n) => {
                for (keys, share) in keys.iter().zip(limit_shares(n, keys.len() as u32)) {
                    let () = conn.hset(keys.control(), "limit", share).await?;
                }
            }
            None => {
                for keys in &keys {
                    let () = conn.hdel(keys.control(), "limit").await?;
                }
            }
        }
        self.control_of(&keys).await
    }

    /// Length of one ready list (what KEDA reads).
    pub async fn ready_len(&self, queue: &str, priority: Priority) -> Result<u64, QueueError> {
        let mut total = 0;
        for keys in self.partition_keys(queue).await? {
            let mut conn = self.client.conn();
            let len: u64 = conn.llen(keys.ready(priority)).await?;
            total += len;
        }
        Ok(total)
    }

    /// Dead jobs, most recent first (of a partitioned queue: partition by
    /// partition, each most recent first).
    pub async fn dead_list(&self, queue: &str, offset: usize, limit: usize) -> Result<Vec<DeadJob>, QueueError> {
        let keys = self.partition_keys(queue).await?;
        if limit == 0 {
            return Ok(Vec::new());
        }
        if let [keys] = keys.as_slice() {
            return self.dead_list_in(keys, offset, limit).await;
        }
        let mut sizes = Vec::with_capacity(keys.len());
        for keys in &keys {
            let mut conn = self.client.conn();
            sizes.push(conn.zcard(keys.dead()).await?);
        }
        let mut jobs = Vec::new();
        for (part, start, count) in page_spans(&sizes, offset as u64, limit as u64) {
            jobs.extend(self.dead_list_in(&keys[part], start as usize, count as usize).await?);
        }
        Ok(jobs)
    }

    /// Dead jobs of one partition, most recent first.
    pub(crate) async fn dead_list_in(
        &self,
        keys: &QueueKeys,
        offset: usize,
        limit: usize,
    ) -> Result<Vec<DeadJob>, QueueError> {
        let mut conn = self.client.conn();
        // Ids are bytes: another producer may have used one that is not
        // UTF-8, and it must not make the whole page unreadable.
        let ids: Vec<Vec<u8>> = conn
            .zrevrange(keys.dead(), offset as isize, (offset + limit - 1) as isize)
            .await?;
        self.dead_records(keys, &ids)
            .await
            .map(|jobs| jobs.into_iter().flatten().collect())
    }

    /// One dead job.
    pub async fn dead_get(&self, queue: &str, id: &str) -> Result<Option<DeadJob>, QueueError> {
        for keys in self.partition_keys(queue).await? {
            if let Some(job) = self
                .dead_records(&keys, &[id.as_bytes().to_vec()])
                .await?
                .pop()
                .flatten()
            {
                return Ok(Some(job));
            }
        }
        Ok(None)
    }

    pub(crate) async fn dead_records(
        &self,
        keys: &QueueKeys,
        ids: &[Vec<u8>],
    ) -> Result<Vec<Option<DeadJob>>, QueueError> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let mut conn = self.client.conn();
        let (infos, envelopes): (MaybeBytes, MaybeBytes) = redis::pipe()
            .cmd("HMGET")
            .arg(keys.dead_info())
            .arg(ids)
            .cmd("HMGET")
            .arg(keys.dead_envelopes())
            .arg(ids)
            .query_async(&mut conn)
            .await?;
        Ok(ids
            .iter()
            .zip(infos.into_iter().zip(envelopes))
            .map(|(id, (info, envelope))| {
                let info: DeadInfo = serde_json::from_str(&String::from_utf8_lossy(info.as_deref()?)).ok()?;
                let kind = envelope
                    .as_deref()
                    .and_then(|b| Envelope::decode(b).ok())
                    .map(|e| e.kind);
                Some(DeadJob {
                    id: String::from_utf8_lossy(id).into_owned(),
                    kind,
                    error: info.error,
                    attempts: info.attempts,
                    crashes: info.crashes,
                    errors: info.errors,
                    died_at_ms: info.died_at_ms,
                    envelope: envelope.map(|b| String::from_utf8_lossy(&b).into_owned()),
                })
            })
            .collect())
    }

    /// Sends dead jobs back to their ready list with fresh attempt counts.
    /// Returns how many were retried (see [`QueueAdmin::dead_retry_counted`]
    /// for the skipped ones too).
    pub async fn dead_retry(&self, queue: &str, which: DeadSelector) -> Result<u64, QueueError> {
        Ok(self.dead_retry_counted(queue, which).await?.0)
    }

    /// [`QueueAdmin::dead_retry`], returning (retried, skipped): skipped are
    /// dead entries that cannot be retried (no stored envelope) or ids that
    /// are not dead. `All` walks the whole dead set, past any number of
    /// entries it has to skip.
    pub async fn dead_retry_counted(&self, queue: &str, which: DeadSelector) -> Result<(u64, u64), QueueError> {
        let keys = self.partition_keys(queue).await?;
        if let DeadSelector::Ids(ids) = &which
            && keys.len() > 1
        {
            // An id is dead in one partition at most: the others skip it.
            let mut retried = 0;
            for keys in &keys {
                retried += self.retry_dead_in(keys, &which).await?.0;
            }
            return Ok((retried, ids.len() as u64 - retried));
        }
        let (mut retried, mut skipped) = (0, 0);
        for keys in &keys {
            let (r, s) = self.retry_dead_in(keys, &which).await?;
            retried += r;
            skipped += s;
        }
        Ok((retried, skipped))
    }

    /// [`QueueAdmin::dead_retry_counted`] on one partition.
    async fn retry_dead_in(&self, keys: &QueueKeys, which: &DeadSelector) -> Result<(u64, u64), QueueError> {
        const PAGE: u64 = 1000;
        let (mut retried, mut skipped) = (0, 0);
        match which {
            DeadSelector::Ids(ids) => {
                for chunk in ids.chunks(PAGE as usize) {
                    let (r, s): (u64, u64) = self.retry_dead_call(keys, "ids", chunk).await?;
                    retried += r;
                    skipped += s;
                }
            }
            DeadSelector::All | DeadSelector::OlderThan(_) => loop {
                // Retried entries leave the dead set; skipped ones stay at
                // its head, so the next page starts after them.
                let (r, s): (u64, u64) = self
                    .retry_dead_call(keys, "oldest", &[PAGE.to_string(), skipped.to_string()])
                    .await?;
                retried += r;
                skipped += s;
                if r + s < PAGE {
                    break;
                }
            },
        }
        Ok((retried, skipped))
    }

    async fn retry_dead_call(&self, keys: &QueueKeys, mode: &str, args: &[String]) -> Result<(u64, u64), QueueError> {
        scripts::retry_dead(&self.client, keys, mode, args).await
    }

    /// Deletes dead jobs for good. Returns how many.
    pub async fn dead_purge(&self, queue: &str, which: DeadSelector) -> Result<u64, QueueError> {
        let mut total = 0;
        for keys in self.partition_keys(queue).await? {
            total += self.purge_dead_in(&keys, &which).await?;
        }
        Ok(total)
    }

    /// [`QueueAdmin::dead_purge`] on one partition.
    async fn purge_dead_in(&self, keys: &QueueKeys, which: &DeadSelector) -> Result<u64, QueueError> {
        let call = |args: Vec<String>| async move { scripts::purge_dead(&self.client, keys, &args).await };
        match which {
            DeadSelector::All => call(vec!["all".into()]).await,
            DeadSelector::Ids(ids) => {
                let mut total = 0;
                for chunk in ids.chunks(1000) {
                    let mut args = vec!["ids".to_owned()];
                    args.extend(chunk.iter().cloned());
                    total += call(args).await?;
                }
                Ok(total)
            }
            DeadSelector::OlderThan(age) => {
                let age_ms = millis(*age);
                let mut total = 0;
                loop {
                    let n = call(vec!["older".into(), age_ms.to_string()]).await?;
                    total += n;
                    if n < 5000 {
                        break Ok(total);
                    }
                }
            }
        }
    }

    /// Runs the promoter once now (scheduled jobs that are due become ready).
    /// Workers do this by themselves; this is for tools and tests.
    pub async fn promote_due(&self, queue: &str) -> Result<usize, QueueError> {
        let mut moved = 0;
        for keys in self.partition_keys(queue).await? {
            moved += scheduler::promote_due(&self.client, &keys).await?.moved;
        }
        Ok(moved)
    }

    /// Runs the reaper once now. Returns how many expired leases it handled.
    pub async fn reap_expired(&self, queue: &str) -> Result<usize, QueueError> {
        let mut handled = 0;
        for keys in self.partition_keys(queue).await? {
            handled += scheduler::reap_expired(&self.client, &keys).await?.len();
        }
        Ok(handled)
    }

    /// Deletes every key of `queue` (jobs, counters, dead set, pause and
    /// limit; of every partition). The partition count stays: producers and
    /// workers that read it before keep routing to and serving every
    /// partition, and a count never shrinks. There are no per-job keys, so
    /// this is a `DEL` of a fixed list per partition.
    pub async fn obliterate(&self, queue: &str) -> Result<(), QueueError> {
        let count = self.client.fresh_partitions(queue).await?;
        for keys in self.client.partition_keys(queue, count).iter().rev() {
            let mut conn = self.client.conn();
            let workers: Vec<String> = conn.smembers(keys.workers()).await?;
            let mut doomed = keys.all();
            doomed.extend(workers.iter().map(|id| keys.worker(id)));
            let _: u64 = conn.del(doomed).await?;
        }
        if count > 1 {
            let control = QueueKeys::partition(&self.client.config().prefix, queue, 0).control();
            scripts::raise_partitions(&self.client, &control, count).await?;
        }
        self.client.fresh_partitions(queue).await?;
        Ok(())
    }
}

/// Where a page of `limit` entries from position `offset` falls in parts of
/// the given sizes laid end to end: `(part, start within it, count)` for
/// each part it touches, in order.
pub(crate) fn page_spans(sizes: &[u64], offset: u64, limit: u64) -> Vec<(usize, u64, u64)> {
    let mut spans = Vec::new();
    let (mut start, mut left) = (offset, limit);
    for (part, &size) in sizes.iter().enumerate() {
        if left == 0 {
            break;
        }
        if start >= size {
            start -= size;
            continue;
        }
        let count = (size - start).min(left);
        spans.push((part, start, count));
        left -= count;
        start = 0;
    }
    spans
}

#[cfg(test)]
mod tests {
    use super::page_spans;

    #[test]
    fn pages_span_the_parts_in_order() {
        assert_eq!(page_spans(&[3, 0, 5], 0, 10), vec![(0, 0, 3), (2, 0, 5)]);
        assert_eq!(page_spans(&[3, 0, 5], 2, 2), vec![(0, 2, 1), (2, 0, 1)]);
        assert_eq!(page_spans(&[3, 0, 5], 4, 100), vec![(2, 1, 4)]);
        assert_eq!(page_spans(&[3, 5], 8, 10), vec![]);
        assert_eq!(page_spans(&[3, 5], 0, 0), vec![]);
    }
}
