//! Completed and failed jobs per second over the last minute, from the
//! queues' lifetime counters sampled in this process every
//! `ADMIN_SAMPLE_SECS`. The counters live in Redis, so every console
//! replica computes the same rates; a console that just started reports
//! none until it has two samples.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use serde::Serialize;
use tally_queue::QueueAdmin;

/// The window the rates are averaged over.
pub const WINDOW: Duration = Duration::from_secs(60);

/// One reading of a queue's counters.
#[derive(Debug, Clone, Copy)]
struct Sample {
    at: Instant,
    completed: u64,
    failed: u64,
}

/// Rates of one queue.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct QueueRates {
    /// Jobs completed per second.
    pub completed_per_sec: f64,
    /// Failed attempts per second (errors, timeouts, lost workers' jobs do
    /// not count).
    pub failed_per_sec: f64,
    /// The time the rates are averaged over (at most [`WINDOW`]).
    pub window_secs: f64,
}

/// The samples of every queue, shared by the sampler and the handlers.
#[derive(Debug, Clone, Default)]
pub struct Rates {
    samples: Arc<Mutex<HashMap<String, VecDeque<Sample>>>>,
}

impl Rates {
    /// Records a reading of `queue`'s counters taken at `at`.
    pub fn record(&self, queue: &str, at: Instant, completed: u64, failed: u64) {
        let mut samples = self.samples.lock().unwrap_or_else(PoisonError::into_inner);
        let list = samples.entry(queue.to_owned()).or_default();
        // Counters went down: the queue was obliterated or Redis lost data.
        // Older samples say nothing about the new counters.
        if list
            .back()
            .is_some_and(|last| completed < last.completed || failed < last.failed)
        {
            list.clear();
        }
        list.push_back(Sample { at, completed, failed });
        while list.len() > 2 && list.front().is_some_and(|first| at.duration_since(first.at) > WINDOW) {
            list.pop_front();
        }
    }

    /// The rates of `queue`, or `None` before it has two samples.
    pub fn of(&self, queue: &str) -> Option<QueueRates> {
        let samples = self.samples.lock().unwrap_or_else(PoisonError::into_inner);
        let list = samples.get(queue)?;
        let last = list.back()?;
        // The oldest sample within the window (the front may be one older,
        // kept so that the window is never empty).
        let first = list
            .iter()
            .find(|s| last.at.duration_since(s.at) <= WINDOW)
            .filter(|s| s.at < last.at)
            .or_else(|| list.front().filter(|s| s.at < last.at))?;
        let secs = last.at.duration_since(first.at).as_secs_f64();
        Some(QueueRates {
            completed_per_sec: last.completed.saturating_sub(first.completed) as f64 / secs,
            failed_per_sec: last.failed.saturating_sub(first.failed) as f64 / secs,
            window_secs: secs,
        })
    }

    /// Samples every queue in `queues` every `interval` until the task is
    /// dropped. A failed reading (Redis away) is skipped and logged once
    /// per outage.
    pub async fn run(self, admin: QueueAdmin, queues: &'static [&'static str], interval: Duration) {
        let mut ticker = tokio::time::interval(interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut failing = false;
        loop {
            ticker.tick().await;
            for queue in queues {
                match admin.stats(queue).await {
                    Ok(stats) => {
                        failing = false;
                        self.record(queue, Instant::now(), stats.counters.completed, stats.counters.failed);
                    }
                    Err(e) => {
                        if !failing {
                            tracing::warn!(queue, error = %e, "cannot sample the queue's counters; retrying");
                        }
                        failing = true;
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_need_two_samples_and_use_the_last_minute() {
        let rates = Rates::default();
        let t0 = Instant::now();
        assert_eq!(rates.of("stats"), None);
        rates.record("stats", t0, 100, 10);
        assert_eq!(rates.of("stats"), None, "one sample is no rate");
        rates.record("stats", t0 + Duration::from_secs(10), 150, 10);
        let r = rates.of("stats").expect("rates");
        assert!((r.completed_per_sec - 5.0).abs() < 1e-9, "{r:?}");
        assert!(r.failed_per_sec.abs() < 1e-9, "{r:?}");
        // Samples older than the window stop counting.
        for i in 2..=20 {
            rates.record("stats", t0 + Duration::from_secs(i * 10), 150 + (i - 1) * 10, 10 + i);
        }
        let r = rates.of("stats").expect("rates");
        assert!((r.window_secs - 60.0).abs() < 1e-9, "{r:?}");
        assert!((r.completed_per_sec - 1.0).abs() < 1e-9, "{r:?}");
        assert!((r.failed_per_sec - 0.1).abs() < 1e-9, "{r:?}");
    }

    #[test]
    fn counters_that_go_down_start_over() {
        let rates = Rates::default();
        let t0 = Instant::now();
        rates.record("scoring", t0, 100, 0);
        rates.record("scoring", t0 + Duration::from_secs(5), 120, 0);
        rates.record("scoring", t0 + Duration::from_secs(10), 3, 0);
        assert_eq!(rates.of("scoring"), None, "reset: one sample left");
    }
}
