//! The wire contract of tally: the job types other services import to enqueue
//! work, and the versioned JSON envelope that carries them through Redis.
//!
//! This crate knows nothing of Redis or Tokio (serde and serde_json only), so
//! any service (or a test, or a code generator) can depend on it cheaply. The
//! queue engine (`tally-queue`) stores an [`Envelope`] per job; a worker decodes
//! it, looks up the handler by [`Envelope::kind`] and decodes the payload into
//! the concrete type with [`Envelope::payload_as`].
//!
//! The envelope is pinned by golden files (`tests/golden/`) and described by a
//! JSON Schema per job (`docs/schemas/`, written by [`schema::envelope_schema`]),
//! so a wire change fails a test before it reaches a producer in another
//! language.

pub mod envelope;
pub mod football;
pub mod policy;
pub mod schema;

pub use envelope::{ENVELOPE_VERSION, Envelope, EnvelopeError, EnvelopeRef, TraceContext};
pub use football::{CalculatePoints, RefreshScope, RefreshViews, RepairPipeline, ScoreMatch};
pub use policy::{Backoff, BackoffKind, JobPolicy, Priority};

/// Every queue the job types of this crate go to: what the CLI, the
/// operator console and the metrics list.
pub const QUEUES: [&str; 2] = [ScoreMatch::QUEUE, RefreshViews::QUEUE];

/// A job type: a payload plus where it goes and how it is retried.
///
/// `KIND` and `QUEUE` are part of the wire contract: never rename them, add a
/// new kind instead. The payload itself is the serde form of the type.
pub trait Job: serde::Serialize + serde::de::DeserializeOwned + Send + Sync + 'static {
    /// Stable name of the job type, written into every envelope.
    const KIND: &'static str;
    /// Queue the job is enqueued on.
    const QUEUE: &'static str;

    /// Retry, timeout and priority policy of this particular job.
    fn policy(&self) -> JobPolicy {
        JobPolicy::default()
    }

    /// Deduplication key: while a job with the same key is still waiting, a
    /// new enqueue is coalesced into it. `None` (the default) never coalesces.
    fn dedup_key(&self) -> Option<String> {
        None
    }

    /// JSON Schema of the payload, checked against the serde form by tests.
    fn payload_schema() -> serde_json::Value;

    /// A representative value, used for golden files and schema checks.
    fn example() -> Self;
}
