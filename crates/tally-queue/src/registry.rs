//! The registry of live worker processes: each running [`Worker`] records
//! who it is and how busy it is every heartbeat, in a key of its own that
//! Redis expires when the process stops beating (killed, frozen, cut off),
//! so the registry needs no clean-up by anyone to stay true.
//!
//! Layout (inside the queue's hash tag, see [`QueueKeys`]): the set
//! `workers` holds the ids of registered processes; `worker:<id>` holds one
//! JSON [`WorkerInfo`] with a TTL of [`ttl`]. A listing reads both and drops
//! from the set the ids whose key has expired. Plain commands, no script:
//! the expiry is judged by Redis's clock alone.
//!
//! [`Worker`]: crate::Worker

use std::time::Duration;

use redis::AsyncCommands as _;
use serde::{Deserialize, Serialize};

use crate::admin::QueueAdmin;
use crate::clock::{millis, now_ms};
use crate::{QueueClient, QueueError, QueueKeys};

/// One live worker process of a queue.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WorkerInfo {
    /// The process's worker id (also the name of its claim record).
    pub id: String,
    /// The queue it works.
    pub queue: String,
    /// Host name (the pod's name on Kubernetes).
    pub host: String,
    /// Process id on that host.
    pub pid: u32,
    /// The executable's file name (`stats-worker`, …).
    pub program: String,
    /// Version of the queue engine it runs.
    pub version: String,
    /// Handlers it runs at once.
    pub concurrency: u32,
    /// Jobs it holds now: running, or claimed ahead of a free slot.
    pub in_flight: u32,
    /// When it started, ms since the Unix epoch on its own clock.
    pub started_at_ms: u64,
    /// Its last heartbeat, ms since the Unix epoch on its own clock (only
    /// shown: liveness is the key's TTL, judged by Redis).
    pub heartbeat_at_ms: u64,
}

/// How long an entry outlives its last heartbeat: a lease, and at least
/// three heartbeats, so one slow beat does not make a live process vanish.
pub(crate) fn ttl(lease: Duration, heartbeat: Duration) -> Duration {
    lease.max(heartbeat * 3)
}

/// This host's name: the kernel's, else `$HOSTNAME`, else `unknown`.
pub(crate) fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| "unknown".to_owned())
}

/// The running executable's file name.
pub(crate) fn program_name() -> String {
    std::env::current_exe()
        .ok()
        .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
        .unwrap_or_else(|| "unknown".to_owned())
}

/// Records (or refreshes) `info` with its TTL.
pub(crate) async fn beat(
    client: &QueueClient,
    keys: &QueueKeys,
    info: &WorkerInfo,
    ttl: Duration,
) -> Result<(), QueueError> {
    let json = serde_json::to_string(info).map_err(|e| QueueError::Protocol(e.to_string()))?;
    let mut conn = client.conn();
    let () = redis::pipe()
        .cmd("SET")
        .arg(keys.worker(&info.id))
        .arg(json)
        .arg("PX")
        .arg(millis(ttl))
        .ignore()
        .sadd(keys.workers(), &info.id)
        .ignore()
        .query_async(&mut conn)
        .await?;
    Ok(())
}

/// Removes the entry of a process that stops gracefully.
pub(crate) async fn leave(client: &QueueClient, keys: &QueueKeys, id: &str) -> Result<(), QueueError> {
    let mut conn = client.conn();
    let () = redis::pipe()
        .del(keys.worker(id))
        .ignore()
        .srem(keys.workers(), id)
        .ignore()
        .query_async(&mut conn)
        .await?;
    Ok(())
}

/// A fresh entry for a process starting now.
pub(crate) fn starting(id: &str, queue: &str, concurrency: usize) -> WorkerInfo {
    let now = now_ms();
    WorkerInfo {
        id: id.to_owned(),
        queue: queue.to_owned(),
        host: host_name(),
        pid: std::process::id(),
        program: program_name(),
        version: env!("CARGO_PKG_VERSION").to_owned(),
        concurrency: u32::try_from(concurrency).unwrap_or(u32::MAX),
        in_flight: 0,
        started_at_ms: now,
        heartbeat_at_ms: now,
    }
}

impl QueueAdmin {
    /// The live worker processes of `queue`, by host and pid. Entries of
    /// processes that stopped beating have expired; their ids are dropped
    /// from the registry's set on the way.
    pub async fn workers(&self, queue: &str) -> Result<Vec<WorkerInfo>, QueueError> {
        // A worker of a partitioned queue is registered in each partition it
        // serves, with that lane's slots: one entry, the slots added up.
        let mut by_id: std::collections::BTreeMap<String, WorkerInfo> = std::collections::BTreeMap::new();
        for keys in self.partition_keys(queue).await? {
            for info in self.workers_in(&keys).await? {
                match by_id.entry(info.id.clone()) {
                    std::collections::btree_map::Entry::Vacant(entry) => {
                        entry.insert(info);
                    }
                    std::collections::btree_map::Entry::Occupied(mut entry) => {
                        let seen = entry.get_mut();
                        seen.concurrency += info.concurrency;
                        seen.in_flight += info.in_flight;
                        seen.heartbeat_at_ms = seen.heartbeat_at_ms.max(info.heartbeat_at_ms);
                    }
                }
            }
        }
        let mut live: Vec<WorkerInfo> = by_id.into_values().collect();
        live.sort_by(|a, b| (&a.host, a.pid, &a.id).cmp(&(&b.host, b.pid, &b.id)));
        Ok(live)
    }

    /// The live registry entries of one partition.
    async fn workers_in(&self, keys: &QueueKeys) -> Result<Vec<WorkerInfo>, QueueError> {
        let mut conn = self.client.conn();
        let ids: Vec<String> = conn.smembers(keys.workers()).await?;
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let entry_keys: Vec<String> = ids.iter().map(|id| keys.worker(id)).collect();
        let entries: Vec<Option<String>> = redis::cmd("MGET").arg(&entry_keys).query_async(&mut conn).await?;
        let mut gone = Vec::new();
        let mut live = Vec::new();
        for (id, entry) in ids.into_iter().zip(entries) {
            match entry.as_deref().map(serde_json::from_str::<WorkerInfo>) {
                Some(Ok(info)) => live.push(info),
                // Expired, or not ours to read: not a live worker.
                _ => gone.push(id),
            }
        }
        if !gone.is_empty() {
            // A process that beats again between the MGET and here adds
            // itself back at its next heartbeat.
            let _: u64 = conn.srem(keys.workers(), &gone).await?;
        }
        Ok(live)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_entry_outlives_a_slow_heartbeat() {
        assert_eq!(
            ttl(Duration::from_secs(30), Duration::from_secs(10)),
            Duration::from_secs(30)
        );
        assert_eq!(
            ttl(Duration::from_secs(2), Duration::from_secs(1)),
            Duration::from_secs(3)
        );
    }
}
