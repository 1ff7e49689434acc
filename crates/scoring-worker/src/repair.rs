//! The repairing safety net, run as a job: find the matches whose result
//! never reached the totals and enqueue what is missing.
//!
//! The cron gateway enqueues a [`RepairPipeline`] on every cron call (one
//! waits at a time: later requests coalesce into it), and this worker runs
//! it with [`repair`], the way mature queues run their periodic
//! maintenance inside the workers: the gateway stays Redis-only. A run
//! reads the oldest markers of `match_pipeline_pending` older than the
//! job's grace period (`tally_store::repair`), at most `batch` of them, and
//! enqueues `ScoreMatch` (predictions not scored, or not voided) or
//! `CalculatePoints` (points not in the totals) for each; the jobs chain the
//! rest of the pipeline as usual. A larger backlog is worked off over
//! several runs, oldest first; the report says how much remains. A match
//! repaired goes to the back of the line (`tally_store::repair::touch`): it
//! is not repaired again before another grace period, and a match whose
//! jobs keep failing cannot hold a place in every batch.
//!
//! Repair jobs have stable ids (`repair-score_match-<match>`,
//! `repair-calculate_points-<match>`), so two runs close together, or a run
//! while the previous repair of a match still waits, enqueue it once (the
//! engine absorbs an id that is live). Work that was only slow, not lost,
//! may be done twice: every handler is idempotent, so it changes nothing the
//! second time.
//!
//! What a run found goes to one log line and the `tally_repair_*` metrics
//! (served on this worker's `/metrics`); a run that cannot complete (the
//! database or Redis away) is a retryable job error, and whatever it
//! enqueued before stays enqueued.

use futures::future::join_all;
use tally_jobs::{CalculatePoints, Job, Priority, RepairPipeline, ScoreMatch};
use tally_queue::{EnqueueOptions, Enqueued, JobError, Producer, QueueError};
use tally_service::observe;
use tally_store::repair::Missing;
use tally_store::{Store, StoreError};

/// What one repair found and did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RepairReport {
    /// Finished matches with unscored predictions (`ScoreMatch` enqueued).
    pub unscored: u64,
    /// Postponed or cancelled matches whose predictions were not voided
    /// (`ScoreMatch` enqueued).
    pub unvoided: u64,
    /// Scored matches whose points are not in the totals (`CalculatePoints`
    /// enqueued).
    pub points_missing: u64,
    /// Markers of matches back to scheduled or live, owed nothing: removed.
    pub stale: u64,
    /// Jobs enqueued by this run.
    pub enqueued: u64,
    /// Jobs this run would have enqueued that were still waiting from an
    /// earlier run (same id): not added again.
    pub already_queued: u64,
    /// Matches due beyond this run's batch, left for the next runs.
    pub remaining: u64,
}

impl RepairReport {
    /// Matches that needed a job.
    pub fn found(&self) -> u64 {
        self.unscored + self.unvoided + self.points_missing
    }
}

/// Why a repair did not complete. Whatever it enqueued before stays
/// enqueued; running it again is safe.
#[derive(Debug, thiserror::Error)]
pub enum RepairError {
    /// PostgreSQL failed.
    #[error("repair: database: {0}")]
    Store(#[from] StoreError),
    /// Redis failed.
    #[error("repair: queue: {0}")]
    Queue(#[from] QueueError),
}

impl RepairError {
    /// What the engine should do about it: a store error as every handler
    /// treats one (`tally_worker::store_job_error`: transient ones are
    /// retried), a queue error is retried.
    pub fn job_error(&self) -> JobError {
        match self {
            Self::Store(e) => tally_worker::store_job_error(e),
            Self::Queue(_) => JobError::retry(self),
        }
    }
}

/// The id of the repair job of `kind` for `match_id`.
pub fn repair_job_id(kind: &str, match_id: i64) -> String {
    format!("repair-{kind}-{match_id}")
}

/// One repair run (see the module docs) with the bounds of `request`.
/// Reports what it found and did, and records it in metrics and one log
/// line. Database work is bounded by `store`'s budget (the job's deadline
/// when the handler runs it).
pub async fn repair(store: &Store, producer: &Producer, request: &RepairPipeline) -> Result<RepairReport, RepairError> {
    let result = run(store, producer, request).await;
    match &result {
        Ok(report) => {
            metrics::counter!("tally_repair_runs_total", "result" => "ok").increment(1);
            metrics::gauge!("tally_repair_remaining_matches").set(report.remaining as f64);
            for (missing, n) in [
                ("scoring", report.unscored),
                ("voiding", report.unvoided),
                ("points", report.points_missing),
                ("nothing", report.stale),
            ] {
                if n > 0 {
                    metrics::counter!("tally_repair_found_total", "missing" => missing).increment(n);
                }
            }
            if report.found() + report.stale > 0 {
                tracing::warn!(
                    unscored = report.unscored,
                    unvoided = report.unvoided,
                    points_missing = report.points_missing,
                    stale = report.stale,
                    enqueued = report.enqueued,
                    already_queued = report.already_queued,
                    remaining = report.remaining,
                    "repair: work that should have happened did not; jobs enqueued"
                );
            } else {
                tracing::info!(remaining = report.remaining, "repair: nothing lost");
            }
        }
        Err(e) => {
            metrics::counter!("tally_repair_runs_total", "result" => "error").increment(1);
            tracing::warn!(error = %e, "repair did not complete");
        }
    }
    result
}

async fn run(store: &Store, producer: &Producer, request: &RepairPipeline) -> Result<RepairReport, RepairError> {
    let scan = store
        .repair_scan(request.grace_secs as f64, i64::from(request.batch))
        .await?;
    let mut report = RepairReport {
        remaining: u64::try_from(scan.remaining).unwrap_or(0),
        ..RepairReport::default()
    };
    let mut jobs = Vec::new();
    for lost in &scan.lost {
        match lost.missing {
            Missing::Scoring => report.unscored += 1,
            Missing::Voiding => report.unvoided += 1,
            Missing::Points => report.points_missing += 1,
            Missing::Nothing => {
                if store.clear_stale_marker(lost.match_id, lost.generation).await? {
                    report.stale += 1;
                }
                continue;
            }
        }
        jobs.push((lost.match_id, lost.missing));
    }
    let trace = observe::current_trace();
    let enqueued = join_all(jobs.iter().map(|&(match_id, missing)| {
        let trace = trace.clone();
        let options = move |kind: &str| EnqueueOptions {
            id: Some(repair_job_id(kind, match_id)),
            trace: trace.clone(),
            ..EnqueueOptions::default()
        };
        async move {
            let result: Result<(&'static str, Enqueued), QueueError> = if missing == Missing::Points {
                let job = CalculatePoints {
                    match_id,
                    priority: Priority::Normal,
                };
                producer
                    .enqueue_with(&job, options(CalculatePoints::KIND))
                    .await
                    .map(|e| (CalculatePoints::KIND, e))
            } else {
                producer
                    .enqueue_with(&ScoreMatch { match_id }, options(ScoreMatch::KIND))
                    .await
                    .map(|e| (ScoreMatch::KIND, e))
            };
            result
        }
    }))
    .await;
    // Enqueued (or still waiting from an earlier run): to the back of the
    // line, so the next run reaches the matches behind these and does not
    // enqueue them again before another grace period.
    let repaired: Vec<(i64, i64)> = scan
        .lost
        .iter()
        .filter(|lost| lost.missing != Missing::Nothing)
        .map(|lost| (lost.match_id, lost.generation))
        .collect();
    let mut results = Vec::with_capacity(enqueued.len());
    for result in enqueued {
        results.push(result?);
    }
    if !repaired.is_empty() {
        store.repair_touch(&repaired).await?;
    }
    for (kind, enqueued) in results {
        let outcome = if enqueued.deduplicated {
            report.already_queued += 1;
            "already_queued"
        } else {
            report.enqueued += 1;
            "enqueued"
        };
        metrics::counter!("tally_repair_jobs_total", "kind" => kind, "outcome" => outcome).increment(1);
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_report_counts_the_matches_that_needed_a_job() {
        let report = RepairReport {
            unscored: 1,
            points_missing: 2,
            stale: 4,
            already_queued: 1,
            ..RepairReport::default()
        };
        assert_eq!(report.found(), 3, "stale markers needed no job");
        assert_eq!(repair_job_id(ScoreMatch::KIND, 7), "repair-score_match-7");
    }

    #[test]
    fn queue_failures_are_retried() {
        let error = RepairError::Queue(QueueError::Protocol("a reply cut short".into()));
        assert!(matches!(error.job_error(), JobError::Retry(_)), "{error}");
    }
}
