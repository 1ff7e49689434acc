//! The cron endpoint and its error contract.
//!
//! Every answer is JSON. Success: `{"success":true,"scope":…,"jobId":…,
//! "deduplicated":…,"timestamp":…}`, plus `"repair":{"jobId":…,
//! "deduplicated":…}` (the `RepairPipeline` job the call enqueued, or the
//! waiting one it coalesced into) unless `REPAIR_ENABLED=off`; failure:
//! `{"success":false,"error":…,"timestamp":…}` with 400 (bad scope), 401
//! (missing or wrong secret), 404, 405, 413 (body too large) or 503 (Redis
//! unreachable). The secret is checked before anything else about the
//! request is looked at, so an unauthenticated caller learns nothing but
//! 401 (or 413 for an oversized body, which is refused before it is read).

use actix_web::{HttpRequest, HttpResponse, ResponseError, http::StatusCode, web};
use futures::StreamExt;
use serde_json::json;
use tally_jobs::{Job, RefreshScope, RefreshViews};
use tally_queue::{EnqueueOptions, Enqueued, Producer};

use crate::startup::AppState;

/// Why a request was refused.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// Missing or wrong bearer secret.
    #[error("missing or invalid bearer token")]
    Unauthorized,
    /// `?scope=` is not one of the known scopes.
    #[error("invalid scope {0:?}: expected one of all, leaderboard, standings")]
    BadScope(String),
    /// The query string could not be parsed.
    #[error("invalid query string: {0}")]
    BadQuery(String),
    /// The request body exceeds the limit.
    #[error("request body larger than {0} bytes")]
    PayloadTooLarge(usize),
    /// No such route.
    #[error("not found")]
    NotFound,
    /// The route exists, the method does not.
    #[error("method not allowed: use GET or POST")]
    MethodNotAllowed,
    /// Redis cannot be reached, so nothing (or not everything) was
    /// enqueued; a retry is safe, both jobs are deduplicated.
    #[error("queue unavailable, nothing was enqueued; retry later")]
    Unavailable,
    /// Anything else; the details go to the log and Sentry, not to the caller.
    #[error("internal error")]
    Internal,
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        match self {
            ApiError::Unauthorized => StatusCode::UNAUTHORIZED,
            ApiError::BadScope(_) | ApiError::BadQuery(_) => StatusCode::BAD_REQUEST,
            ApiError::PayloadTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::NotFound => StatusCode::NOT_FOUND,
            ApiError::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn error_response(&self) -> HttpResponse {
        let mut response = HttpResponse::build(self.status_code());
        if matches!(self, ApiError::Unauthorized) {
            response.insert_header(("WWW-Authenticate", "Bearer"));
        }
        if matches!(self, ApiError::MethodNotAllowed) {
            response.insert_header(("Allow", "GET, POST"));
        }
        response.json(json!({ "success": false, "error": self.to_string(), "timestamp": now_rfc3339() }))
    }
}

fn now_rfc3339() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

fn parse_scope(query: &str) -> Result<RefreshScope, ApiError> {
    let pairs =
        web::Query::<Vec<(String, String)>>::from_query(query).map_err(|e| ApiError::BadQuery(e.to_string()))?;
    let mut scope = RefreshScope::All;
    for (key, value) in pairs.into_inner() {
        if key == "scope" {
            scope = RefreshScope::parse(&value).ok_or(ApiError::BadScope(value))?;
        }
    }
    Ok(scope)
}

/// Reads (and discards) the body, refusing it past `limit` bytes. The body is
/// not used, but reading it enforces the limit even without Content-Length.
async fn drain_body(mut payload: web::Payload, limit: usize) -> Result<(), ApiError> {
    let mut seen = 0_usize;
    while let Some(chunk) = payload.next().await {
        let chunk = chunk.map_err(|_| ApiError::BadQuery("unreadable request body".into()))?;
        seen += chunk.len();
        if seen > limit {
            return Err(ApiError::PayloadTooLarge(limit));
        }
    }
    Ok(())
}

/// Enqueues `job` with the current trace, mapping a failure to the answer.
async fn enqueue<J: Job>(producer: &Producer, job: &J) -> Result<Enqueued, ApiError> {
    let options = EnqueueOptions {
        trace: tally_service::observe::current_trace(),
        ..EnqueueOptions::default()
    };
    producer.enqueue_with(job, options).await.map_err(|e| {
        // A warning: the 5xx itself is reported once, by the request
        // middleware; this line adds the cause (a breadcrumb in Sentry).
        tracing::warn!(error = %e, kind = J::KIND, "cannot enqueue");
        if e.is_unavailable() {
            ApiError::Unavailable
        } else {
            ApiError::Internal
        }
    })
}

/// `GET`/`POST /api/cron/update-stats`: enqueue a deduplicated repair and a
/// deduplicated refresh.
pub async fn update_stats(
    req: HttpRequest,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let limit = state.max_body_bytes;
    let declared = req
        .headers()
        .get(actix_web::http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|len| len > limit) {
        return Err(ApiError::PayloadTooLarge(limit));
    }
    if !state.secret.verify_request(req.headers()) {
        tracing::warn!(peer = ?req.peer_addr(), "cron call refused: missing or wrong secret");
        return Err(ApiError::Unauthorized);
    }
    drain_body(payload, limit).await?;
    let scope = parse_scope(req.query_string())?;

    // The safety net first: scoring-worker runs it, and what it enqueues
    // chains its own refresh; the refresh below covers whatever else changed.
    let repair = match &state.repair {
        None => None,
        Some(job) => {
            let enqueued = enqueue(&state.producer, job).await?;
            tracing::info!(job_id = %enqueued.id, deduplicated = enqueued.deduplicated, "repair requested");
            Some(enqueued)
        }
    };
    let enqueued = enqueue(&state.producer, &RefreshViews { scope }).await?;
    tracing::info!(%scope, job_id = %enqueued.id, deduplicated = enqueued.deduplicated, "refresh requested");
    let mut body = json!({
        "success": true,
        "scope": scope.as_str(),
        "jobId": enqueued.id,
        "deduplicated": enqueued.deduplicated,
        "timestamp": now_rfc3339(),
    });
    if let Some(repair) = repair {
        body["repair"] = json!({ "jobId": repair.id, "deduplicated": repair.deduplicated });
    }
    Ok(HttpResponse::Ok().json(body))
}

/// 404 for every unknown path.
pub async fn not_found() -> Result<HttpResponse, ApiError> {
    Err(ApiError::NotFound)
}

/// 405 for other methods on the cron route.
pub async fn method_not_allowed() -> Result<HttpResponse, ApiError> {
    Err(ApiError::MethodNotAllowed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scopes_parse_and_default_to_all() {
        assert_eq!(parse_scope("").expect("empty"), RefreshScope::All);
        assert_eq!(parse_scope("scope=standings").expect("ok"), RefreshScope::Standings);
        assert!(matches!(parse_scope("scope=everything"), Err(ApiError::BadScope(s)) if s == "everything"));
        assert!(matches!(parse_scope("scope=ALL"), Err(ApiError::BadScope(_))));
    }
}
