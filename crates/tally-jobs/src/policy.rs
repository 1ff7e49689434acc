//! Retry, timeout and priority policy carried by every job.
//!
//! The defaults are the old BullMQ system's: 3 attempts, exponential backoff
//! from 5 s, a 2 minute timeout. The policy travels inside the envelope so a
//! worker (or a Lua script on the crash path) never needs the producer's code.

use serde::{Deserialize, Serialize};

/// Strict priority within a queue: every `High` job is claimed before any
/// `Normal` one, every `Normal` before any `Low`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Priority {
    /// Claimed first.
    High,
    /// The default.
    #[default]
    Normal,
    /// Claimed only when nothing else waits.
    Low,
}

impl Priority {
    /// All priorities, in claim order.
    pub const ALL: [Priority; 3] = [Priority::High, Priority::Normal, Priority::Low];

    /// The wire name (`high`, `normal`, `low`), also used in Redis key names.
    pub const fn as_str(self) -> &'static str {
        match self {
            Priority::High => "high",
            Priority::Normal => "normal",
            Priority::Low => "low",
        }
    }

    /// Parses a wire name.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "high" => Some(Priority::High),
            "normal" => Some(Priority::Normal),
            "low" => Some(Priority::Low),
            _ => None,
        }
    }
}

impl std::fmt::Display for Priority {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How the delay between attempts grows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BackoffKind {
    /// `base * 2^(attempt - 1)`, capped.
    Exponential,
    /// Always `base`.
    Fixed,
}

/// Delay before a failed job is tried again.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Backoff {
    /// Growth of the delay.
    #[serde(rename = "type")]
    pub kind: BackoffKind,
    /// Delay after the first failed attempt, in milliseconds.
    pub base_ms: u64,
    /// Upper bound of any delay, in milliseconds.
    pub max_ms: u64,
    /// Spread retries over `[delay/2, delay]` so a burst of failures does not
    /// come back as a burst.
    #[serde(default)]
    pub jitter: bool,
}

impl Backoff {
    /// The old system's backoff: exponential from 5 s, capped at 10 minutes, no jitter.
    pub const DEFAULT: Backoff = Backoff {
        kind: BackoffKind::Exponential,
        base_ms: 5_000,
        max_ms: 600_000,
        jitter: false,
    };

    /// Delay in milliseconds after failed attempt number `attempt` (1-based).
    /// `unit` is a random number in `[0, 1)`, used only when `jitter` is set;
    /// passing it in keeps this function pure and testable.
    pub fn delay_ms(&self, attempt: u32, unit: f64) -> u64 {
        let raw = match self.kind {
            BackoffKind::Fixed => self.base_ms,
            BackoffKind::Exponential => {
                let shift = attempt.saturating_sub(1).min(32);
                self.base_ms.saturating_mul(1_u64 << shift)
            }
        };
        let capped = raw.min(self.max_ms);
        if self.jitter {
            let half = capped / 2;
            // The float product can round above the span for large delays:
            // clamp, so a jittered delay never exceeds the cap.
            let spread = ((capped - half) as f64 * unit.clamp(0.0, 1.0)) as u64;
            half + spread.min(capped - half)
        } else {
            capped
        }
    }
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff::DEFAULT
    }
}

/// Everything the engine needs to know to run one job.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct JobPolicy {
    /// Attempts before the job is moved to the dead set (errors and crashes
    /// are counted apart, each against this bound).
    pub max_attempts: u32,
    /// Delay between attempts.
    pub backoff: Backoff,
    /// Per-attempt timeout in milliseconds; the handler is cancelled after it.
    pub timeout_ms: u64,
    /// Priority within the queue.
    pub priority: Priority,
}

impl JobPolicy {
    /// The old system's policy: 3 attempts, exponential 5 s backoff, 2 minute timeout.
    pub const DEFAULT: JobPolicy = JobPolicy {
        max_attempts: 3,
        backoff: Backoff::DEFAULT,
        timeout_ms: 120_000,
        priority: Priority::Normal,
    };

    /// The same policy at another priority.
    #[must_use]
    pub const fn with_priority(mut self, priority: Priority) -> Self {
        self.priority = priority;
        self
    }
}

impl Default for JobPolicy {
    fn default() -> Self {
        JobPolicy::DEFAULT
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exponential_backoff_doubles_and_caps() {
        let b = Backoff::DEFAULT;
        assert_eq!(b.delay_ms(1, 0.0), 5_000);
        assert_eq!(b.delay_ms(2, 0.0), 10_000);
        assert_eq!(b.delay_ms(3, 0.0), 20_000);
        assert_eq!(b.delay_ms(40, 0.0), 600_000);
    }

    #[test]
    fn jitter_stays_within_half_and_full_delay() {
        let b = Backoff {
            jitter: true,
            ..Backoff::DEFAULT
        };
        assert_eq!(b.delay_ms(2, 0.0), 5_000);
        assert_eq!(b.delay_ms(2, 0.999_999), 9_999);
        assert_eq!(b.delay_ms(2, 1.0), 10_000);
    }

    #[test]
    fn fixed_backoff_is_constant() {
        let b = Backoff {
            kind: BackoffKind::Fixed,
            base_ms: 100,
            max_ms: 1_000,
            jitter: false,
        };
        assert_eq!(b.delay_ms(1, 0.5), 100);
        assert_eq!(b.delay_ms(9, 0.5), 100);
    }

    #[test]
    fn priority_names_round_trip() {
        for p in Priority::ALL {
            assert_eq!(Priority::parse(p.as_str()), Some(p));
        }
        assert_eq!(Priority::parse("urgent"), None);
    }
}
