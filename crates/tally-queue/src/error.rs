//! The crate's one error type.
//!
//! Callers mostly care about one distinction: Redis could not be reached
//! ([`QueueError::Unavailable`]: retry later, answer 503) versus everything
//! else (a bug, a bad argument, a refused envelope).

use tally_jobs::EnvelopeError;

/// Everything that can go wrong in the queue engine.
#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    /// Redis is unreachable, refused the connection, timed out or is still
    /// loading its data. Transient: producers should report it (HTTP 503),
    /// workers back off and retry.
    #[error("redis unavailable: {0}")]
    Unavailable(#[source] redis::RedisError),
    /// Redis answered with an error (a bug in a script or a wrong key type).
    #[error("redis error: {0}")]
    Redis(#[source] redis::RedisError),
    /// The job could not be wrapped into an envelope.
    #[error("cannot encode job: {0}")]
    Encode(#[source] EnvelopeError),
    /// A setting is out of range.
    #[error("invalid queue configuration: {0}")]
    Config(String),
    /// A script or Redis returned something this version does not expect.
    #[error("unexpected reply from redis: {0}")]
    Protocol(String),
    /// A caller passed an argument that cannot work (e.g. an empty queue name).
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
}

impl QueueError {
    /// Whether the error is transient (Redis unreachable), i.e. worth retrying.
    pub fn is_unavailable(&self) -> bool {
        matches!(self, QueueError::Unavailable(_))
    }
}

impl From<redis::RedisError> for QueueError {
    fn from(err: redis::RedisError) -> Self {
        let transient = err.is_io_error()
            || err.is_connection_refusal()
            || err.is_connection_dropped()
            || err.is_timeout()
            || err.is_unrecoverable_error()
            || matches!(
                err.kind(),
                redis::ErrorKind::Server(
                    redis::ServerErrorKind::BusyLoading
                        | redis::ServerErrorKind::TryAgain
                        | redis::ServerErrorKind::MasterDown
                )
            );
        if transient {
            QueueError::Unavailable(err)
        } else {
            QueueError::Redis(err)
        }
    }
}

impl From<redis::ParsingError> for QueueError {
    fn from(err: redis::ParsingError) -> Self {
        QueueError::Protocol(err.to_string())
    }
}

impl From<EnvelopeError> for QueueError {
    fn from(err: EnvelopeError) -> Self {
        QueueError::Encode(err)
    }
}
