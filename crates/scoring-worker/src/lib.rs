//! scoring-worker: consumes the `scoring` queue.
//!
//! `ScoreMatch` scores every prediction of a finished match (idempotent in
//! the store), then enqueues `CalculatePoints` for it. The next job is
//! enqueued only after the scores are committed, which is what orders the
//! pipeline: no sleeps. A crash between the commit and the enqueue is
//! harmless: the job is recovered, scoring again changes nothing, and the
//! enqueue happens then. `RepairPipeline`, which the cron gateway enqueues on
//! every cron call, runs the repairing safety net ([`repair`]): it enqueues
//! whatever the pipeline lost between PostgreSQL and Redis. A job relayed
//! from the outbox (`outbox-<n>`) deletes its outbox row before it is
//! acknowledged (`tally_worker::outbox::settling`).

pub mod repair;

use tally_jobs::{CalculatePoints, Job, Priority, RepairPipeline, ScoreMatch};
use tally_queue::{EnqueueOptions, JobContext, JobError, WorkerBuilder};
use tally_service::observe;
use tally_worker::{WorkerDeps, outbox, store_job_error, with_database};

/// The queue this worker consumes.
pub const QUEUE: &str = ScoreMatch::QUEUE;

/// Registers the `ScoreMatch` and `RepairPipeline` handlers.
pub fn register(builder: WorkerBuilder, deps: WorkerDeps) -> WorkerBuilder {
    let store = deps.store.clone();
    let repair_deps = deps.clone();
    builder
        .handle(observe::traced(outbox::settling(
            store.clone(),
            move |job: ScoreMatch, ctx: JobContext| {
                let deps = deps.clone();
                async move { score_match(&deps, &job, &ctx).await }
            },
        )))
        .handle(observe::traced(outbox::settling(
            store,
            move |job: RepairPipeline, ctx: JobContext| {
                let deps = repair_deps.clone();
                async move { repair_pipeline(&deps, &job, &ctx).await }
            },
        )))
}

/// Runs one repair ([`repair::repair`]) within the attempt's deadline.
///
/// Bounds out of range (a foreign producer) will never work: the job gives
/// up. A database that is away is waited for inside the attempt, as every
/// handler does (`with_database`), and after that the attempt fails
/// retryably; so does one that loses Redis midway.
pub async fn repair_pipeline(deps: &WorkerDeps, job: &RepairPipeline, ctx: &JobContext) -> Result<(), JobError> {
    if let Some(reason) = job.out_of_bounds() {
        return Err(JobError::give_up(reason));
    }
    let store = deps.store.with_deadline(ctx.deadline);
    with_database(ctx, || store.ping())
        .await
        .map_err(|e| store_job_error(&e))?;
    repair::repair(&store, &deps.producer, job)
        .await
        .map_err(|e| e.job_error())?;
    Ok(())
}

/// Scores the match's predictions, then chains `CalculatePoints`.
pub async fn score_match(deps: &WorkerDeps, job: &ScoreMatch, ctx: &JobContext) -> Result<(), JobError> {
    // Bounded by the attempt's deadline: a statement or lock wait that would
    // outlive the attempt is stopped by PostgreSQL, not left running.
    let store = deps.store.with_deadline(ctx.deadline);
    let outcome = with_database(ctx, || store.score_match(job.match_id))
        .await
        .map_err(|e| store_job_error(&e))?;
    tracing::info!(match_id = job.match_id, attempt = ctx.attempt, ?outcome, "match scored");
    let next = CalculatePoints {
        match_id: job.match_id,
        priority: Priority::Normal,
    };
    let options = EnqueueOptions {
        trace: observe::current_trace(),
        ..EnqueueOptions::default()
    };
    let enqueued = deps
        .producer
        .enqueue_with(&next, options)
        .await
        .map_err(JobError::retry)?;
    tracing::debug!(match_id = job.match_id, next = CalculatePoints::KIND, job_id = %enqueued.id, "chained");
    Ok(())
}
