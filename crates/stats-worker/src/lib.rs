//! stats-worker: consumes the `stats` queue; scaled horizontally.
//!
//! `CalculatePoints` recalculates the totals of the users who predicted a
//! scored match, then enqueues a deduplicated `RefreshViews`: while one
//! refresh waits, further requests coalesce into it. A free slot claims a
//! waiting refresh at once, and the next request then makes a new one, so a
//! burst of results costs one or two refreshes on a worker with one slot
//! (`WORKER_CONCURRENCY=1`) and up to about one per free slot with more
//! (5 for 6 results at the default 5), never more than one per result; the
//! extra ones wait on the refresh lock and publish only what changed since
//! (`tests/tests/pipeline.rs` shows both). Because the refresh is enqueued after the
//! points are committed, and a refresh that has started no longer absorbs
//! new requests, every committed result is covered by some later refresh.
//! `RefreshViews` refreshes leaderboards and/or standings without blocking
//! readers (see `tally-store`). Jobs relayed from the outbox (`outbox-<n>`)
//! delete their outbox row before they are acknowledged
//! (`tally_worker::outbox::settling`).

use tally_jobs::{CalculatePoints, Job, RefreshScope, RefreshViews};
use tally_queue::{EnqueueOptions, JobContext, JobError, WorkerBuilder};
use tally_service::observe;
use tally_store::model::Scope;
use tally_worker::{WorkerDeps, outbox, store_job_error, with_database};

/// The queue this worker consumes.
pub const QUEUE: &str = CalculatePoints::QUEUE;

/// Registers the `CalculatePoints` and `RefreshViews` handlers.
pub fn register(builder: WorkerBuilder, deps: WorkerDeps) -> WorkerBuilder {
    let points_deps = deps.clone();
    let store = deps.store.clone();
    builder
        .handle(observe::traced(outbox::settling(
            store.clone(),
            move |job: CalculatePoints, ctx: JobContext| {
                let deps = points_deps.clone();
                async move { calculate_points(&deps, &job, &ctx).await }
            },
        )))
        .handle(observe::traced(outbox::settling(
            store,
            move |job: RefreshViews, ctx: JobContext| {
                let deps = deps.clone();
                async move { refresh_views(&deps, &job, &ctx).await }
            },
        )))
}

/// Recalculates the affected users' points, then asks for a refresh.
pub async fn calculate_points(deps: &WorkerDeps, job: &CalculatePoints, ctx: &JobContext) -> Result<(), JobError> {
    // Bounded by the attempt's deadline: a statement or lock wait that would
    // outlive the attempt is stopped by PostgreSQL, not left running.
    let store = deps.store.with_deadline(ctx.deadline);
    let outcome = with_database(ctx, || store.calculate_points(job.match_id))
        .await
        .map_err(|e| store_job_error(&e))?;
    tracing::info!(
        match_id = job.match_id,
        attempt = ctx.attempt,
        ?outcome,
        "points recalculated"
    );
    let options = EnqueueOptions {
        trace: observe::current_trace(),
        ..EnqueueOptions::default()
    };
    let enqueued = deps
        .producer
        .enqueue_with(
            &RefreshViews {
                scope: RefreshScope::All,
            },
            options,
        )
        .await
        .map_err(JobError::retry)?;
    tracing::debug!(
        match_id = job.match_id,
        next = RefreshViews::KIND,
        job_id = %enqueued.id,
        deduplicated = enqueued.deduplicated,
        "chained"
    );
    Ok(())
}

/// Refreshes the views of the job's scope.
pub async fn refresh_views(deps: &WorkerDeps, job: &RefreshViews, ctx: &JobContext) -> Result<(), JobError> {
    let scope = match job.scope {
        RefreshScope::All => Scope::All,
        RefreshScope::Leaderboard => Scope::Leaderboard,
        RefreshScope::Standings => Scope::Standings,
    };
    let store = deps.store.with_deadline(ctx.deadline);
    let outcome = with_database(ctx, || store.refresh_views(scope))
        .await
        .map_err(|e| store_job_error(&e))?;
    tracing::info!(%scope, attempt = ctx.attempt, ?outcome, "views refreshed");
    Ok(())
}
