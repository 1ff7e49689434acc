//! The versioned JSON envelope every job travels in.
//!
//! A producer in any language writes this JSON into Redis (see
//! `docs/PROTOCOL.md`); the worker decodes it, checks the version, and only
//! then looks at the payload. Each step has its own [`EnvelopeError`] so the
//! dead set can say exactly why a job was refused.

use std::borrow::Cow;

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use crate::{Job, JobPolicy};

/// The envelope version this crate writes and accepts.
pub const ENVELOPE_VERSION: u32 = 1;

/// W3C trace context of the code that enqueued the job, continued by the worker.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TraceContext {
    /// The `traceparent` header value (`00-<trace id>-<span id>-<flags>`).
    pub traceparent: String,
    /// The `tracestate` header value, when there is one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tracestate: Option<String>,
}

/// One job on the wire.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Envelope {
    /// Envelope version; [`ENVELOPE_VERSION`] for everything this crate writes.
    pub v: u32,
    /// Job id, unique within its queue.
    pub id: String,
    /// Stable job type name ([`Job::KIND`]).
    pub kind: String,
    /// Queue name ([`Job::QUEUE`]).
    pub queue: String,
    /// The job's own data, the serde form of the job type.
    pub payload: serde_json::Value,
    /// Retry, timeout and priority policy.
    pub policy: JobPolicy,
    /// When the job was first enqueued, in milliseconds since the Unix epoch.
    pub created_at_ms: u64,
    /// Deduplication key, when the job has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dedup_key: Option<String>,
    /// Trace context of the enqueuing span, when tracing is on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trace: Option<TraceContext>,
}

/// Why an envelope or its payload was refused. Every variant is permanent:
/// retrying the same bytes cannot succeed, so the job goes to the dead set.
#[derive(Debug)]
pub enum EnvelopeError {
    /// Not JSON, or JSON without the envelope's fields.
    Malformed(serde_json::Error),
    /// An envelope version this build does not understand.
    UnsupportedVersion {
        /// Version found in the envelope.
        found: u32,
    },
    /// The payload was decoded as another kind than the envelope names.
    KindMismatch {
        /// Kind the caller expected.
        expected: &'static str,
        /// Kind in the envelope.
        found: String,
    },
    /// The payload does not have the shape of its kind.
    BadPayload {
        /// Kind in the envelope.
        kind: String,
        /// What serde said.
        source: serde_json::Error,
    },
    /// The job could not be serialised (a bug in the job type).
    Encode(serde_json::Error),
}

/// An envelope read for running it: one JSON pass over the stored bytes,
/// strings borrowed from them where they need no unescaping, the payload
/// left as raw JSON until the handler's type decodes it
/// ([`EnvelopeRef::payload_as`]). What a worker uses on every job; the
/// owned [`Envelope`] is for building and inspecting envelopes.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EnvelopeRef<'a> {
    /// Envelope version.
    pub v: u32,
    /// Job id.
    #[serde(borrow)]
    pub id: Cow<'a, str>,
    /// Job type name.
    #[serde(borrow)]
    pub kind: Cow<'a, str>,
    /// Queue name.
    #[serde(borrow)]
    pub queue: Cow<'a, str>,
    /// The payload's JSON text, not yet decoded.
    #[serde(borrow)]
    pub payload: &'a RawValue,
    /// Retry, timeout and priority policy.
    pub policy: JobPolicy,
    /// When the job was first enqueued, in milliseconds since the Unix epoch.
    pub created_at_ms: u64,
    /// Deduplication key, when the job has one.
    #[serde(default, borrow)]
    pub dedup_key: Option<Cow<'a, str>>,
    /// Trace context of the enqueuing span, when tracing is on.
    #[serde(default)]
    pub trace: Option<TraceContext>,
}

#[derive(Deserialize)]
struct VersionOnly {
    v: u32,
}

impl<'a> EnvelopeRef<'a> {
    /// Decodes and version-checks an envelope, accepting and refusing
    /// exactly what [`Envelope::decode`] does (an envelope of another
    /// version is reported as such, whatever its other fields).
    pub fn decode(bytes: &'a [u8]) -> Result<Self, EnvelopeError> {
        match serde_json::from_slice::<Self>(bytes) {
            Ok(envelope) if envelope.v == ENVELOPE_VERSION => Ok(envelope),
            Ok(envelope) => Err(EnvelopeError::UnsupportedVersion { found: envelope.v }),
            Err(err) => match serde_json::from_slice::<VersionOnly>(bytes) {
                Ok(version) if version.v != ENVELOPE_VERSION => {
                    Err(EnvelopeError::UnsupportedVersion { found: version.v })
                }
                _ => Err(EnvelopeError::Malformed(err)),
            },
        }
    }

    /// Decodes the payload as job type `J`, checking the kind first.
    pub fn payload_as<J: Job>(&self) -> Result<J, EnvelopeError> {
        if self.kind != J::KIND {
            return Err(EnvelopeError::KindMismatch {
                expected: J::KIND,
                found: self.kind.clone().into_owned(),
            });
        }
        serde_json::from_str(self.payload.get()).map_err(|source| EnvelopeError::BadPayload {
            kind: self.kind.clone().into_owned(),
            source,
        })
    }
}

impl std::fmt::Display for EnvelopeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            EnvelopeError::Malformed(e) => write!(f, "malformed envelope: {e}"),
            EnvelopeError::UnsupportedVersion { found } => write!(
                f,
                "unsupported envelope version {found} (this build reads version {ENVELOPE_VERSION})"
            ),
            EnvelopeError::KindMismatch { expected, found } => {
                write!(f, "envelope kind {found:?} where {expected:?} was expected")
            }
            EnvelopeError::BadPayload { kind, source } => {
                write!(f, "payload does not match kind {kind:?}: {source}")
            }
            EnvelopeError::Encode(e) => write!(f, "job could not be encoded: {e}"),
        }
    }
}

impl std::error::Error for EnvelopeError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            EnvelopeError::Malformed(e) | EnvelopeError::Encode(e) => Some(e),
            EnvelopeError::BadPayload { source, .. } => Some(source),
            EnvelopeError::UnsupportedVersion { .. } | EnvelopeError::KindMismatch { .. } => None,
        }
    }
}

impl Envelope {
    /// Wraps a job with the given id and creation time, taking its queue,
    /// kind, policy and dedup key from the job type.
    pub fn new<J: Job>(job: &J, id: impl Into<String>, created_at_ms: u64) -> Result<Self, EnvelopeError> {
        Ok(Envelope {
            v: ENVELOPE_VERSION,
            id: id.into(),
            kind: J::KIND.to_owned(),
            queue: J::QUEUE.to_owned(),
            payload: serde_json::to_value(job).map_err(EnvelopeError::Encode)?,
            policy: job.policy(),
            created_at_ms,
            dedup_key: job.dedup_key(),
            trace: None,
        })
    }

    /// Decodes and version-checks an envelope. The version is checked before
    /// the other fields so a future envelope is reported as such, not as
    /// malformed.
    pub fn decode(bytes: &[u8]) -> Result<Self, EnvelopeError> {
        let version: VersionOnly = serde_json::from_slice(bytes).map_err(EnvelopeError::Malformed)?;
        if version.v != ENVELOPE_VERSION {
            return Err(EnvelopeError::UnsupportedVersion { found: version.v });
        }
        serde_json::from_slice(bytes).map_err(EnvelopeError::Malformed)
    }

    /// The JSON form stored in Redis.
    pub fn encode(&self) -> String {
        // An Envelope holds only strings, numbers and a serde_json::Value, all
        // of which serialise infallibly.
        serde_json::to_string(self).unwrap_or_else(|e| unreachable!("envelope serialisation cannot fail: {e}"))
    }

    /// Decodes the payload as job type `J`, checking the kind first.
    pub fn payload_as<J: Job>(&self) -> Result<J, EnvelopeError> {
        if self.kind != J::KIND {
            return Err(EnvelopeError::KindMismatch {
                expected: J::KIND,
                found: self.kind.clone(),
            });
        }
        J::deserialize(&self.payload).map_err(|source| EnvelopeError::BadPayload {
            kind: self.kind.clone(),
            source,
        })
    }
}
