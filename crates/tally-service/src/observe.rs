//! What the workers tell operators about jobs: Prometheus metrics, Sentry
//! reports and the job span that continues the producer's trace.
//!
//! The queue engine knows nothing of Prometheus or Sentry; it calls the
//! [`JobEvents`] hooks implemented here, and the handlers are wrapped by
//! [`traced`] so every job runs inside a span parented on the trace context
//! the producer wrote into the envelope.

use std::{future::Future, time::Duration};

use tally_jobs::{Job, TraceContext};
use tally_queue::{JobContext, JobError, JobEvent, JobEvents, QueueAdmin};
use tracing::Instrument;

/// Job hooks that feed Prometheus and Sentry.
#[derive(Debug, Clone, Copy, Default)]
pub struct ObservedEvents;

fn kind_of(event: &JobEvent) -> String {
    event.kind.clone().unwrap_or_else(|| "unknown".to_owned())
}

impl JobEvents for ObservedEvents {
    fn on_completed(&self, event: &JobEvent) {
        let labels = [("queue", event.queue.clone()), ("kind", kind_of(event))];
        metrics::counter!("tally_jobs_completed_total", &labels).increment(1);
        if let Some(d) = event.duration {
            metrics::histogram!("tally_job_duration_seconds", &labels).record(d.as_secs_f64());
        }
        if let Some(w) = event.wait {
            metrics::histogram!("tally_job_wait_seconds", &labels).record(w.as_secs_f64());
        }
    }

    fn on_failed(&self, event: &JobEvent) {
        let kind = kind_of(event);
        let labels = [("queue", event.queue.clone()), ("kind", kind.clone())];
        metrics::counter!("tally_jobs_failed_total", &labels).increment(1);
        metrics::counter!("tally_jobs_retried_total", &labels).increment(1);
        if let Some(d) = event.duration {
            metrics::histogram!("tally_job_duration_seconds", &labels).record(d.as_secs_f64());
        }
        // Retries in between are breadcrumbs, not events.
        let reason = event.error.as_deref().unwrap_or("failed");
        tally_telemetry::job_breadcrumb(&event.queue, &kind, &event.id, event.attempt, reason);
    }

    fn on_dead(&self, event: &JobEvent) {
        let kind = kind_of(event);
        let labels = [("queue", event.queue.clone()), ("kind", kind.clone())];
        metrics::counter!("tally_jobs_failed_total", &labels).increment(1);
        metrics::counter!("tally_jobs_dead_total", &labels).increment(1);
        let reason = event.error.as_deref().unwrap_or("dead");
        tally_telemetry::capture_job_failure(&event.queue, &kind, &event.id, event.attempt, reason, true);
    }

    fn on_recovered(&self, event: &JobEvent) {
        let labels = [("queue", event.queue.clone()), ("kind", kind_of(event))];
        metrics::counter!("tally_lease_recoveries_total", &labels).increment(1);
    }
}

/// Wraps a handler so each run happens inside a `job` span carrying queue,
/// kind, job id and attempt, continuing the producer's trace when the
/// envelope has one.
pub fn traced<J, F, Fut>(handler: F) -> impl Fn(J, JobContext) -> tracing::instrument::Instrumented<Fut> + Send + Sync
where
    J: Job,
    F: Fn(J, JobContext) -> Fut + Send + Sync,
    Fut: Future<Output = Result<(), JobError>> + Send,
{
    move |job, ctx| {
        let traceparent = ctx.trace.as_ref().map(|t| t.traceparent.clone());
        let span = tally_telemetry::job_span(&ctx.queue, &ctx.kind, &ctx.id, ctx.attempt, traceparent.as_deref());
        handler(job, ctx).instrument(span)
    }
}

/// The trace context of the current span, to write into an envelope so the
/// consumer continues this trace.
pub fn current_trace() -> Option<TraceContext> {
    tally_telemetry::current_traceparent().map(|traceparent| TraceContext {
        traceparent,
        tracestate: None,
    })
}

/// Samples queue depth gauges every `every` until the task is aborted:
/// ready per priority, scheduled, in flight, dead, oldest ready age.
pub async fn sample_queue_gauges(admin: QueueAdmin, queues: Vec<String>, every: Duration) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        for queue in &queues {
            match admin.stats(queue).await {
                Ok(stats) => {
                    record_stats(queue, &stats);
                    // The heartbeat means "this worker reaches its queue": it
                    // stops advancing while Redis is away, so the stale
                    // heartbeat alert covers that outage too.
                    let now = std::time::SystemTime::now()
                        .duration_since(std::time::UNIX_EPOCH)
                        .map_or(0.0, |d| d.as_secs_f64());
                    metrics::gauge!("tally_worker_heartbeat_timestamp_seconds", "queue" => queue.clone()).set(now);
                }
                Err(e) => tracing::debug!(%queue, error = %e, "queue gauges not sampled"),
            }
        }
    }
}

fn record_stats(queue: &str, stats: &tally_queue::QueueStats) {
    let q = queue.to_owned();
    for (priority, n) in [
        ("high", stats.ready_by_priority.high),
        ("normal", stats.ready_by_priority.normal),
        ("low", stats.ready_by_priority.low),
    ] {
        metrics::gauge!("tally_queue_ready_jobs", "queue" => q.clone(), "priority" => priority).set(n as f64);
    }
    metrics::gauge!("tally_queue_scheduled_jobs", "queue" => q.clone()).set(stats.scheduled as f64);
    metrics::gauge!("tally_queue_in_flight_jobs", "queue" => q.clone()).set(stats.in_flight as f64);
    metrics::gauge!("tally_queue_dead_jobs", "queue" => q.clone()).set(stats.dead as f64);
    metrics::gauge!("tally_queue_paused", "queue" => q.clone()).set(if stats.paused { 1.0 } else { 0.0 });
    // 0: no limit (a limit is at least 1).
    metrics::gauge!("tally_queue_concurrency_limit", "queue" => q.clone()).set(stats.limit.unwrap_or(0) as f64);
    metrics::gauge!("tally_queue_oldest_ready_age_seconds", "queue" => q)
        .set(stats.oldest_ready_age_ms.unwrap_or(0) as f64 / 1000.0);
}
