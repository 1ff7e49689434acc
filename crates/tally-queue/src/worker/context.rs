//! What a handler sees ([`JobContext`]) and what it answers on failure
//! ([`JobError`]).

use std::time::{Duration, Instant};

use tally_jobs::{JobPolicy, TraceContext};
use tokio_util::sync::CancellationToken;

/// Facts about the running attempt, handed to every handler call.
#[derive(Debug, Clone)]
pub struct JobContext {
    /// Job id.
    pub id: String,
    /// Job kind.
    pub kind: String,
    /// Queue name.
    pub queue: String,
    /// Attempt number, 1-based (crashed attempts count; a graceful requeue
    /// does not).
    pub attempt: u32,
    /// Fencing token of this claim. Side effects that must not be applied by
    /// a stale worker can be guarded with it: a later claim always has a
    /// larger token.
    pub token: u64,
    /// Earlier attempts whose worker was lost (lease expired).
    pub crashes: u32,
    /// Earlier attempts that failed (error, panic, timeout).
    pub errors: u32,
    /// The job's policy.
    pub policy: JobPolicy,
    /// Trace context of the code that enqueued the job.
    pub trace: Option<TraceContext>,
    /// When the job was created, ms since the Unix epoch.
    pub created_at_ms: u64,
    /// Cancelled when the attempt times out, the lease is lost or a shutdown
    /// drain runs out of time. The handler's future is dropped right after;
    /// the token lets it stop blocking work or child tasks first.
    pub cancel: CancellationToken,
    /// When the attempt times out (its timeout from the start of the
    /// handler). Work the handler hands to other systems (a database
    /// statement, a lock wait) should be bounded by the time left, see
    /// [`JobContext::remaining`], so it does not outlive the attempt.
    pub deadline: Instant,
}

impl JobContext {
    /// Time left before the attempt times out (zero once it has).
    pub fn remaining(&self) -> Duration {
        self.deadline.saturating_duration_since(Instant::now())
    }
}

/// A handler's failure, saying what the engine should do next.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JobError {
    /// Retry with the job's backoff (dead once attempts are exhausted).
    #[error("{0}")]
    Retry(String),
    /// Retry after this delay instead of the backoff (still counts an attempt).
    #[error("{1} (retry after {0:?})")]
    RetryAfter(Duration, String),
    /// Do not retry: move the job to the dead set now.
    #[error("{0}")]
    GiveUp(String),
}

impl JobError {
    /// A retryable failure from any error (e.g. `anyhow::Error`), with its
    /// chain of causes in the message.
    pub fn retry(err: impl std::fmt::Display) -> Self {
        JobError::Retry(format!("{err:#}"))
    }

    /// A permanent failure from any error.
    pub fn give_up(err: impl std::fmt::Display) -> Self {
        JobError::GiveUp(format!("{err:#}"))
    }

    /// The message, without the retry advice.
    pub fn message(&self) -> &str {
        match self {
            JobError::Retry(m) | JobError::RetryAfter(_, m) | JobError::GiveUp(m) => m,
        }
    }
}

/// Any boxed error is a retryable failure, so `?` works in handlers on most
/// error types (`anyhow::Error` converts with `.into()`).
impl From<Box<dyn std::error::Error + Send + Sync>> for JobError {
    fn from(err: Box<dyn std::error::Error + Send + Sync>) -> Self {
        JobError::Retry(err.to_string())
    }
}
