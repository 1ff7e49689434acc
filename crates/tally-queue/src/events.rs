//! Event hooks: what happened to a job, for metrics, error tracking and
//! tests. The engine logs every event with `tracing` itself; hooks add to
//! that (a Prometheus counter, a Sentry event) without the engine depending
//! on either.

use std::time::Duration;

/// One job event.
#[derive(Debug, Clone)]
pub struct JobEvent {
    /// Queue name.
    pub queue: String,
    /// Job kind, when the envelope could be read.
    pub kind: Option<String>,
    /// Job id.
    pub id: String,
    /// Attempt number (1-based) of the run the event is about.
    pub attempt: u32,
    /// How long the handler ran, when it ran.
    pub duration: Option<Duration>,
    /// Time from the job's creation (`createdAtMs`) to the start of this run.
    pub wait: Option<Duration>,
    /// What went wrong (failed and dead events), or why the job was
    /// recovered.
    pub error: Option<String>,
}

/// Receives job events. Every method has an empty default, so an
/// implementation picks what it needs. Called inline on the worker's hot
/// path: keep it cheap (increment a counter, send on a channel).
pub trait JobEvents: Send + Sync + 'static {
    /// A handler succeeded and the completion was recorded.
    fn on_completed(&self, _event: &JobEvent) {}
    /// An attempt failed (error, panic, timeout) and a retry is scheduled.
    fn on_failed(&self, _event: &JobEvent) {}
    /// The job was moved to the dead set (attempts exhausted, gave up, bad
    /// input, or its worker was lost too often).
    fn on_dead(&self, _event: &JobEvent) {}
    /// A job whose worker was lost (lease expired) was put back to run again.
    fn on_recovered(&self, _event: &JobEvent) {}
}

/// Hooks that do nothing (the engine still logs).
#[derive(Debug, Clone, Copy, Default)]
pub struct NoEvents;

impl JobEvents for NoEvents {}
