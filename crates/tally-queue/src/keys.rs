//! Every Redis key name of a queue, built in this one place.
//!
//! Layout: `<prefix>:{<queue>}:<part>`. The `{<queue>}` hash tag puts every
//! key of one queue in the same Redis Cluster slot, so each Lua script may
//! touch all of them. A partitioned queue (see `partitions.rs`) is that many
//! such key sets: partition 0 is `{<queue>}` (today's layout, so existing data
//! is partition 0 of a queue that grows), partition `p` ≥ 1 is
//! `{<queue>#<p>}`, each a slot of its own. `docs/PROTOCOL.md` documents the
//! same names for producers in other languages; keep the two in step.

use tally_jobs::Priority;

/// Most wake markers kept in `…:wake` (one per job made ready, up to this).
pub(crate) const WAKE_CAP: u32 = 64;

/// Most jobs one claim call asks for: a script's work must stay bounded
/// however large the concurrency (the scripts themselves are safe at any
/// size, see `call_unpacked` in `lua/_shared.lua`).
pub(crate) const MAX_CLAIM_BATCH: usize = 1000;

/// Most jobs one enqueue script call carries (a bigger batch is several
/// calls, pipelined).
pub(crate) const ENQUEUE_CHUNK: usize = 1000;

/// Most jobs one promote or reap call moves (more means another call at once).
pub(crate) const MOVE_BATCH: usize = 1000;

/// Key names of one queue (of one partition of it).
#[derive(Debug, Clone)]
pub struct QueueKeys {
    /// `<prefix>:{<queue>}:` (`<prefix>:{<queue>#<p>}:` for partition `p` ≥
    /// 1), the common start of every key.
    base: String,
    /// The queue name.
    queue: String,
    /// Which partition these are the keys of.
    partition: u32,
}

impl QueueKeys {
    /// Keys of `queue` under `prefix` (of its partition 0: all of a queue
    /// that is not partitioned).
    pub fn new(prefix: &str, queue: &str) -> Self {
        Self::partition(prefix, queue, 0)
    }

    /// Keys of partition `partition` of `queue` under `prefix`.
    pub fn partition(prefix: &str, queue: &str, partition: u32) -> Self {
        let base = if partition == 0 {
            format!("{prefix}:{{{queue}}}:")
        } else {
            format!("{prefix}:{{{queue}#{partition}}}:")
        };
        Self {
            base,
            queue: queue.to_owned(),
            partition,
        }
    }

    /// The queue name.
    pub fn queue(&self) -> &str {
        &self.queue
    }

    /// The hash tag of these keys (`<queue>` or `<queue>#<p>`).
    pub fn hash_tag(&self) -> &str {
        let start = self.base.find('{').map_or(0, |i| i + 1);
        let end = self.base[start..].find('}').map_or(self.base.len(), |i| start + i);
        &self.base[start..end]
    }

    /// The Redis Cluster slot of these keys: CRC16 (XMODEM) of the hash tag,
    /// modulo 16384, as every cluster node computes it.
    pub fn slot(&self) -> u16 {
        crc16::State::<crc16::XMODEM>::calculate(self.hash_tag().as_bytes()) % 16384
    }

    /// The partition these keys belong to (0 for a queue that is not
    /// partitioned).
    pub fn partition_index(&self) -> u32 {
        self.partition
    }

    fn part(&self, part: &str) -> String {
        format!("{}{part}", self.base)
    }

    /// List of ready job ids of one priority. The name is a contract: KEDA
    /// autoscaling reads the length of `<prefix>:{<queue>}:ready:<priority>`.
    pub fn ready(&self, priority: Priority) -> String {
        self.part(&format!("ready:{}", priority.as_str()))
    }

    /// The three ready lists, in claim order (high, normal, low).
    pub fn ready_all(&self) -> [String; 3] {
        Priority::ALL.map(|p| self.ready(p))
    }

    /// Hash: job id -> envelope JSON, for every live job (ready, scheduled, in flight).
    pub fn jobs(&self) -> String {
        self.part("jobs")
    }

    /// Hash: job id -> mutable per-job state (token, attempts, crashes, errors, priority).
    pub fn state(&self) -> String {
        self.part("state")
    }

    /// Sorted set: job id by due time in ms (delayed jobs and retries).
    pub fn scheduled(&self) -> String {
        self.part("scheduled")
    }

    /// Sorted set: job id by lease expiry in ms (jobs in flight).
    pub fn leases(&self) -> String {
        self.part("leases")
    }

    /// Sorted set: dead job id by time of death in ms.
    pub fn dead(&self) -> String {
        self.part("dead")
    }

    /// Hash: dead job id -> its envelope.
    pub fn dead_envelopes(&self) -> String {
        self.part("dead:envelopes")
    }

    /// Hash: dead job id -> JSON record (error, attempts, crashes, died at).
    pub fn dead_info(&self) -> String {
        self.part("dead:info")
    }

    /// Hash: dedup key -> id of the waiting job carrying it.
    pub fn dedup(&self) -> String {
        self.part("dedup")
    }

    /// Hash of counters (enqueued, completed, failed, retried, dead, recovered).
    pub fn stats(&self) -> String {
        self.part("stats")
    }

    /// List of wake markers that idle workers block on (`BLPOP`).
    pub fn wake(&self) -> String {
        self.part("wake")
    }

    /// String counter: the last fencing token handed out.
    pub fn token(&self) -> String {
        self.part("token")
    }

    /// The last claim of one worker process (`worker` is its id): which jobs
    /// with which tokens, so a claim retried after its reply was lost gets
    /// the same jobs back (see `claim_jobs.lua`). Expires after a lease;
    /// deleted when the worker stops.
    pub fn claim_record(&self, worker: &str) -> String {
        self.part(&format!("claim:{worker}"))
    }

    /// Hash of the queue's controls, set by operators and read by every
    /// claim: `paused` (`1` while paused), `limit` (most jobs in flight
    /// across every worker; of a partitioned queue, this partition's share
    /// of the queue's limit). Absent fields mean running, unlimited. On
    /// partition 0 also `partitions`: how many the queue has (absent: 1).
    pub fn control(&self) -> String {
        self.part("control")
    }

    /// Set of the ids of registered worker processes (see `registry.rs`).
    pub fn workers(&self) -> String {
        self.part("workers")
    }

    /// One worker process's registry entry (JSON, expiring unless its
    /// process keeps beating). Listed by [`workers`](Self::workers).
    pub fn worker(&self, id: &str) -> String {
        self.part(&format!("worker:{id}"))
    }

    /// Short-lived lock (`SET NX PX`) held by the worker running the reaper.
    pub fn reaper_lock(&self) -> String {
        self.part("reaper")
    }

    /// Short-lived lock (`SET NX PX`, on partition 0) held while the
    /// partition count changes, so that two callers do not split the
    /// controls over different counts at once.
    pub fn partitioning_lock(&self) -> String {
        self.part("partitioning")
    }

    /// Pub/sub channel on which scripts announce a due time earlier than any
    /// scheduled so far, so sleeping promoters wake early.
    pub fn due_channel(&self) -> String {
        self.part("due")
    }

    /// Every key the queue may have but the per-process registry entries
    /// ([`worker`](Self::worker), listed in [`workers`](Self::workers) and
    /// expiring on their own); there are no per-job keys, so this list is
    /// otherwise complete (used to delete a queue and to check for leftovers).
    pub fn all(&self) -> Vec<String> {
        let mut keys = self.ready_all().to_vec();
        keys.extend([
            self.jobs(),
            self.state(),
            self.scheduled(),
            self.leases(),
            self.dead(),
            self.dead_envelopes(),
            self.dead_info(),
            self.dedup(),
            self.stats(),
            self.wake(),
            self.token(),
            self.control(),
            self.workers(),
            self.reaper_lock(),
            self.partitioning_lock(),
        ]);
        keys
    }
}

/// The one-letter priority code used inside scripts and per-job state.
pub(crate) fn priority_letter(priority: Priority) -> &'static str {
    match priority {
        Priority::High => "h",
        Priority::Normal => "n",
        Priority::Low => "l",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ready_lists_have_the_contract_names() {
        let keys = QueueKeys::new("tally", "stats");
        assert_eq!(keys.ready(Priority::High), "tally:{stats}:ready:high");
        assert_eq!(keys.ready(Priority::Normal), "tally:{stats}:ready:normal");
        assert_eq!(keys.ready(Priority::Low), "tally:{stats}:ready:low");
        assert_eq!(keys.jobs(), "tally:{stats}:jobs");
    }

    #[test]
    fn partition_zero_is_the_unpartitioned_layout_and_others_have_their_own_tag() {
        assert_eq!(QueueKeys::partition("tally", "stats", 0).jobs(), "tally:{stats}:jobs");
        assert_eq!(
            QueueKeys::partition("tally", "stats", 2).ready(Priority::High),
            "tally:{stats#2}:ready:high"
        );
        for key in QueueKeys::partition("p", "q", 7).all() {
            assert!(key.starts_with("p:{q#7}:"), "{key}");
        }
    }

    #[test]
    fn slots_are_the_cluster_slots_of_the_tags() {
        // `CLUSTER KEYSLOT` of a real node gives these (the engine's cluster
        // tests read them back from one).
        assert_eq!(QueueKeys::new("tally", "stats").hash_tag(), "stats");
        assert_eq!(QueueKeys::partition("tally", "stats", 2).hash_tag(), "stats#2");
        assert_eq!(QueueKeys::new("tally", "stats").slot(), 7650);
        assert_eq!(QueueKeys::partition("x", "stats", 1).slot(), 4168);
        assert_eq!(QueueKeys::partition("tally", "bench", 2).slot(), 11508);
    }

    #[test]
    fn every_key_shares_the_hash_tag() {
        let keys = QueueKeys::new("p", "q");
        for key in keys.all().iter().chain([&keys.due_channel()]) {
            assert!(key.starts_with("p:{q}:"), "{key}");
        }
    }
}
