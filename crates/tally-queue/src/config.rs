//! Engine settings shared by producers, workers and the admin API.

use std::time::Duration;

use crate::QueueError;

/// Settings of the queue engine. `Default` gives production values; tests
/// shorten the intervals (e.g. a 500 ms lease) instead of sleeping long.
#[derive(Debug, Clone)]
pub struct QueueConfig {
    /// First part of every key (`<prefix>:{<queue>}:…`). Tests pass their own
    /// namespace so they never see each other's keys.
    pub prefix: String,
    /// How long a claim holds a job without a heartbeat. A killed worker's
    /// job is recovered within `lease` + `reap_interval` (+ scheduling noise).
    pub lease: Duration,
    /// Heartbeat period while handlers run; `None` means `lease / 3`.
    pub heartbeat: Option<Duration>,
    /// How often some worker (one at a time, by a short Redis lock) looks for
    /// expired leases.
    pub reap_interval: Duration,
    /// Longest a promoter sleeps without re-checking the scheduled set, in
    /// case a due-time announcement was missed (e.g. across a reconnect).
    pub promote_max_sleep: Duration,
    /// Longest an idle worker blocks on the wake list before claiming anyway
    /// (a safety net for producers that push no wake marker).
    pub idle_poll: Duration,
    /// How often a worker whose queue is paused, or at its global
    /// concurrency limit, asks again (`QueueAdmin::pause`, `set_limit`).
    pub throttle_poll: Duration,
    /// Default per-job timeout when set; otherwise the job's policy decides.
    pub job_timeout: Option<Duration>,
    /// How long a graceful shutdown waits for running handlers before putting
    /// them back at the head of their ready list.
    pub drain_timeout: Duration,
    /// Most dead jobs kept per queue (oldest dropped first).
    pub dead_max_count: u64,
    /// Oldest dead job kept per queue.
    pub dead_max_age: Duration,
    /// Time limit of one Redis command (not of blocking waits).
    pub command_timeout: Duration,
    /// Time limit of one connection attempt.
    pub connect_timeout: Duration,
    /// First delay before a worker retries after Redis failed it; doubles up
    /// to `retry_backoff_max`, with jitter.
    pub retry_backoff_min: Duration,
    /// Longest delay between a worker's reconnection attempts.
    pub retry_backoff_max: Duration,
    /// Largest encoded envelope a producer accepts (bytes). Redis stores
    /// every job in memory and each claim carries it: a job that needs more
    /// should carry a reference to its data, not the data.
    pub max_envelope_bytes: usize,
    /// How often producers and workers read a queue's partition count again
    /// (`QueueAdmin::set_partitions`): a producer routes by a count at most
    /// this old, and a worker serves new partitions within this long.
    pub partition_refresh: Duration,
}

impl Default for QueueConfig {
    fn default() -> Self {
        Self {
            prefix: "tally".to_owned(),
            lease: Duration::from_secs(15),
            heartbeat: None,
            reap_interval: Duration::from_secs(1),
            promote_max_sleep: Duration::from_secs(1),
            idle_poll: Duration::from_secs(5),
            throttle_poll: Duration::from_millis(200),
            job_timeout: None,
            drain_timeout: Duration::from_secs(20),
            dead_max_count: 10_000,
            dead_max_age: Duration::from_hours(7 * 24),
            command_timeout: Duration::from_secs(5),
            connect_timeout: Duration::from_secs(1),
            retry_backoff_min: Duration::from_millis(50),
            retry_backoff_max: Duration::from_secs(5),
            max_envelope_bytes: 1024 * 1024,
            partition_refresh: Duration::from_secs(5),
        }
    }
}

impl QueueConfig {
    /// Default settings under another key prefix.
    pub fn with_prefix(prefix: impl Into<String>) -> Self {
        Self {
            prefix: prefix.into(),
            ..Self::default()
        }
    }

    /// The heartbeat period in force.
    pub fn heartbeat_interval(&self) -> Duration {
        self.heartbeat.unwrap_or(self.lease / 3)
    }

    /// Checks that the settings can work together.
    pub fn validate(&self) -> Result<(), QueueError> {
        let bad = |msg: &str| Err(QueueError::Config(msg.to_owned()));
        if self.prefix.is_empty() || self.prefix.contains(['{', '}']) {
            return bad("prefix must be non-empty and free of braces");
        }
        if self.lease < Duration::from_millis(100) {
            return bad("lease must be at least 100 ms");
        }
        if self.heartbeat_interval() >= self.lease || self.heartbeat_interval().is_zero() {
            return bad("heartbeat must be shorter than the lease");
        }
        if self.reap_interval.is_zero()
            || self.promote_max_sleep.is_zero()
            || self.idle_poll.is_zero()
            || self.throttle_poll.is_zero()
            || self.partition_refresh.is_zero()
        {
            return bad("intervals must be positive");
        }
        if self.max_envelope_bytes == 0 {
            return bad("max_envelope_bytes must be at least 1");
        }
        if self.dead_max_count == 0 {
            return bad("dead_max_count must be at least 1");
        }
        if self.retry_backoff_min.is_zero() || self.retry_backoff_max < self.retry_backoff_min {
            return bad("retry backoff must be positive and max >= min");
        }
        Ok(())
    }
}

/// Checks a queue name: non-empty and free of the braces that delimit the
/// hash tag.
pub(crate) fn check_queue_name(queue: &str) -> Result<(), QueueError> {
    // `#` separates a queue from its partition number in key names
    // (`{stats#2}`), so a queue named `stats#2` would share partition 2 of
    // `stats`.
    if queue.is_empty() || queue.contains(['{', '}', '#']) {
        return Err(QueueError::InvalidArgument(format!(
            "queue name {queue:?} must be non-empty and free of braces and '#'"
        )));
    }
    Ok(())
}
