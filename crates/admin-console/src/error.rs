//! The API's one error type: every refusal is JSON `{"error": "…"}` with
//! the status that fits.

use actix_web::{HttpResponse, ResponseError, http::StatusCode};
use serde_json::json;
use tally_queue::QueueError;

/// Why an API request was refused.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// No token, a wrong token, or an expired or forged session.
    #[error("missing or invalid token: send Authorization: Bearer <ADMIN_TOKEN>, or log in at /login")]
    Unauthorized,
    /// A read-only token (or session) asked to change something.
    #[error("read-only token: changes need ADMIN_TOKEN")]
    ReadOnly,
    /// A browser write without the session's CSRF token.
    #[error("missing or wrong CSRF token (X-CSRF-Token)")]
    Csrf,
    /// A browser write whose `Origin` is not this console.
    #[error("cross-origin request refused (Origin is not this console)")]
    CrossOrigin,
    /// The queue is not one of tally's.
    #[error("unknown queue {0:?}: known queues are {known}", known = tally_jobs::QUEUES.join(", "))]
    UnknownQueue(String),
    /// No such job (live or dead) on the queue.
    #[error("unknown job {id:?} on queue {queue}")]
    UnknownJob {
        /// The queue asked.
        queue: String,
        /// The id asked.
        id: String,
    },
    /// Ids given to retry or purge that are not in the dead set; nothing
    /// was changed.
    #[error("not in the dead set of {queue}: {ids}; nothing was changed", ids = .ids.join(", "))]
    NotDead {
        /// The queue asked.
        queue: String,
        /// The ids that are not dead.
        ids: Vec<String>,
    },
    /// A malformed query, body or value.
    #[error("{0}")]
    BadRequest(String),
    /// No route has this path.
    #[error("no such route: {method} {path}")]
    NoRoute {
        /// The request method.
        method: String,
        /// The request path.
        path: String,
    },
    /// The path exists, the method does not.
    #[error("method not allowed")]
    MethodNotAllowed,
    /// Redis cannot be reached.
    #[error("redis unavailable, nothing was read or changed; retry later")]
    Unavailable,
    /// Anything else; the details go to the log, not to the caller.
    #[error("internal error")]
    Internal,
}

impl From<QueueError> for ApiError {
    fn from(e: QueueError) -> Self {
        if e.is_unavailable() {
            tracing::warn!(error = %e, "redis unavailable");
            ApiError::Unavailable
        } else if let QueueError::InvalidArgument(message) = e {
            ApiError::BadRequest(message)
        } else {
            tracing::error!(error = %e, "queue operation failed");
            ApiError::Internal
        }
    }
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        match self {
            ApiError::Unauthorized => StatusCode::UNAUTHORIZED,
            ApiError::ReadOnly | ApiError::Csrf | ApiError::CrossOrigin => StatusCode::FORBIDDEN,
            ApiError::UnknownQueue(_)
            | ApiError::UnknownJob { .. }
            | ApiError::NotDead { .. }
            | ApiError::NoRoute { .. } => StatusCode::NOT_FOUND,
            ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn error_response(&self) -> HttpResponse {
        let mut response = HttpResponse::build(self.status_code());
        response.insert_header(("Cache-Control", "no-store"));
        if matches!(self, ApiError::Unauthorized) {
            response.insert_header(("WWW-Authenticate", "Bearer"));
        }
        response.json(json!({ "error": self.to_string() }))
    }
}
