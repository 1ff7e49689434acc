//! The admin API, `/api/v1/…`: JSON in, JSON out, described by the
//! checked-in OpenAPI document (`openapi.json`, served at
//! `/api/v1/openapi.json`).
//!
//! [`routes`] is the one list of the API's routes: [`configure`] registers
//! exactly these, and a test compares them with the OpenAPI document in
//! both directions. Authentication and authorisation happen before any
//! handler runs, in the scope's guard (`crate::startup`): a handler here
//! only ever sees callers allowed to do what they ask.

use std::collections::HashMap;

use actix_web::{HttpRequest, HttpResponse, Route, http::Method, web};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tally_queue::{DeadSelector, JobState, QueueStats, WorkerInfo};

use crate::error::ApiError;
use crate::rates::QueueRates;
use crate::startup::{AppState, Caller};

/// Where the API lives.
pub const PREFIX: &str = "/api/v1";

/// The OpenAPI 3.1 document of the API.
pub const OPENAPI: &str = include_str!("../openapi.json");

/// Default page size of `GET …/jobs`.
pub const DEFAULT_PAGE: u64 = 50;
/// Largest page of `GET …/jobs` (the engine's own cap).
pub const MAX_PAGE: u64 = tally_queue::MAX_PAGE;
/// Most ids one retry or purge call may name.
pub const MAX_IDS: usize = 1000;
/// Largest `PUT …/limit`.
pub const MAX_LIMIT: u64 = 100_000;

/// One route of the API.
#[derive(Debug, Clone)]
pub struct ApiRoute {
    /// The method.
    pub method: Method,
    /// The full path, with `{name}` segments as in OpenAPI and actix-web.
    pub path: &'static str,
    handler: fn(Route) -> Route,
}

/// Every route of the API (the probes and pages are not part of it).
pub fn routes() -> Vec<ApiRoute> {
    fn r(method: Method, path: &'static str, handler: fn(Route) -> Route) -> ApiRoute {
        ApiRoute { method, path, handler }
    }
    vec![
        r(Method::GET, "/api/v1/openapi.json", |r| r.to(openapi)),
        r(Method::GET, "/api/v1/queues", |r| r.to(list_queues)),
        r(Method::GET, "/api/v1/queues/{queue}", |r| r.to(get_queue)),
        r(Method::GET, "/api/v1/queues/{queue}/jobs", |r| r.to(list_jobs)),
        r(Method::GET, "/api/v1/queues/{queue}/jobs/{id}", |r| r.to(get_job)),
        r(Method::POST, "/api/v1/queues/{queue}/dead/retry", |r| r.to(dead_retry)),
        r(Method::POST, "/api/v1/queues/{queue}/dead/purge", |r| r.to(dead_purge)),
        r(Method::POST, "/api/v1/queues/{queue}/pause", |r| r.to(pause)),
        r(Method::POST, "/api/v1/queues/{queue}/resume", |r| r.to(resume)),
        r(Method::PUT, "/api/v1/queues/{queue}/limit", |r| r.to(put_limit)),
        r(Method::GET, "/api/v1/workers", |r| r.to(list_workers)),
    ]
}

/// Registers [`routes`] in a scope mounted at [`PREFIX`]; another method
/// on a known path gets 405, an unknown path under the prefix 404.
pub fn configure(cfg: &mut web::ServiceConfig) {
    let routes = routes();
    let mut paths: Vec<&'static str> = routes.iter().map(|r| r.path).collect();
    paths.dedup();
    for path in paths {
        let relative = path.strip_prefix(PREFIX).unwrap_or(path);
        let mut resource = web::resource(relative);
        for route in routes.iter().filter(|r| r.path == path) {
            resource = resource.route((route.handler)(web::route().method(route.method.clone())));
        }
        cfg.service(resource.default_service(web::to(method_not_allowed)));
    }
    cfg.default_service(web::to(no_route));
}

async fn method_not_allowed() -> Result<HttpResponse, ApiError> {
    Err(ApiError::MethodNotAllowed)
}

/// The answer to an unknown path.
pub async fn no_route(req: HttpRequest) -> Result<HttpResponse, ApiError> {
    Err(ApiError::NoRoute {
        method: req.method().to_string(),
        path: req.path().to_owned(),
    })
}

fn json_ok(body: &impl Serialize) -> HttpResponse {
    HttpResponse::Ok()
        .insert_header(("Cache-Control", "no-store"))
        .json(body)
}

async fn openapi() -> HttpResponse {
    HttpResponse::Ok()
        .content_type("application/json")
        .insert_header(("Cache-Control", "no-store"))
        .body(OPENAPI)
}

/// A queue as the API and the overview show it.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct QueueSummary {
    /// The queue's name.
    pub name: &'static str,
    /// Counts, counters and controls.
    #[serde(flatten)]
    pub stats: QueueStats,
    /// Worker processes serving the queue now.
    pub workers: usize,
    /// Completed and failed per second over the last minute (`null` until
    /// the console has sampled twice).
    pub rates: Option<QueueRates>,
}

/// The summary of one queue.
pub async fn queue_summary(state: &AppState, queue: &'static str) -> Result<QueueSummary, ApiError> {
    let (stats, workers) = tokio::try_join!(state.admin.stats(queue), state.admin.workers(queue))?;
    Ok(QueueSummary {
        name: queue,
        stats,
        workers: workers.len(),
        rates: state.rates.of(queue),
    })
}

/// Every queue's summary.
pub async fn all_summaries(state: &AppState) -> Result<Vec<QueueSummary>, ApiError> {
    let mut out = Vec::with_capacity(tally_jobs::QUEUES.len());
    for queue in tally_jobs::QUEUES {
        out.push(queue_summary(state, queue).await?);
    }
    Ok(out)
}

async fn list_queues(state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    Ok(json_ok(&json!({ "queues": all_summaries(&state).await? })))
}

async fn get_queue(state: web::Data<AppState>, path: web::Path<String>) -> Result<HttpResponse, ApiError> {
    let queue = state.queue(&path)?;
    Ok(json_ok(&queue_summary(&state, queue).await?))
}

/// What `GET …/jobs` asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct JobsQuery {
    /// The state listed.
    pub state: JobState,
    /// Position of the first job.
    pub offset: u64,
    /// Jobs per page.
    pub limit: u64,
}

impl JobsQuery {
    /// Parses `state=…&offset=…&limit=…` (each optional: `ready`, 0,
    /// [`DEFAULT_PAGE`]); anything else is refused.
    pub fn parse(query: &str) -> Result<Self, ApiError> {
        let pairs = web::Query::<Vec<(String, String)>>::from_query(query)
            .map_err(|e| ApiError::BadRequest(format!("invalid query string: {e}")))?;
        let mut out = JobsQuery {
            state: JobState::Ready,
            offset: 0,
            limit: DEFAULT_PAGE,
        };
        for (key, value) in pairs.into_inner() {
            match key.as_str() {
                "state" => {
                    out.state = value.parse().map_err(|_| {
                        ApiError::BadRequest(format!(
                            "invalid state {value:?}: expected one of ready, scheduled, inFlight, dead"
                        ))
                    })?;
                }
                "offset" => {
                    out.offset = value.parse().map_err(|_| {
                        ApiError::BadRequest(format!("invalid offset {value:?}: expected a whole number"))
                    })?;
                }
                "limit" => {
                    out.limit = value
                        .parse()
                        .ok()
                        .filter(|n| (1..=MAX_PAGE).contains(n))
                        .ok_or_else(|| {
                            ApiError::BadRequest(format!("invalid limit {value:?}: expected 1 to {MAX_PAGE}"))
                        })?;
                }
                other => {
                    return Err(ApiError::BadRequest(format!(
                        "unknown query parameter {other:?}: expected state, offset, limit"
                    )));
                }
            }
        }
        Ok(out)
    }
}

async fn list_jobs(
    state: web::Data<AppState>,
    path: web::Path<String>,
    req: HttpRequest,
) -> Result<HttpResponse, ApiError> {
    let queue = state.queue(&path)?;
    let query = JobsQuery::parse(req.query_string())?;
    let page = state.admin.jobs(queue, query.state, query.offset, query.limit).await?;
    let mut body = serde_json::to_value(&page).map_err(|_| ApiError::Internal)?;
    body["limit"] = json!(query.limit);
    Ok(json_ok(&body))
}

async fn get_job(state: web::Data<AppState>, path: web::Path<(String, String)>) -> Result<HttpResponse, ApiError> {
    let (queue, id) = path.into_inner();
    let queue = state.queue(&queue)?;
    match state.admin.job(queue, &id).await? {
        Some(job) => Ok(json_ok(&job)),
        None => Err(ApiError::UnknownJob {
            queue: queue.to_owned(),
            id,
        }),
    }
}

/// The body of `…/dead/retry` and `…/dead/purge`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct SelectorBody {
    ids: Option<Vec<String>>,
    all: Option<bool>,
    older_than_secs: Option<u64>,
}

fn parse_json<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err(ApiError::BadRequest("a JSON body is required".into()));
    }
    serde_json::from_slice(body).map_err(|e| ApiError::BadRequest(format!("invalid JSON body: {e}")))
}

/// Reads `{"ids":[…]}`, `{"all":true}` or (purge only) `{"olderThanSecs":N}`.
fn parse_selector(body: &[u8], allow_age: bool) -> Result<DeadSelector, ApiError> {
    let body: SelectorBody = parse_json(body)?;
    let expected = if allow_age {
        r#"{"ids":[…]}, {"all":true} or {"olderThanSecs":N}"#
    } else {
        r#"{"ids":[…]} or {"all":true}"#
    };
    match (body.ids, body.all, body.older_than_secs) {
        (Some(ids), None, None) => {
            if ids.is_empty() || ids.len() > MAX_IDS {
                return Err(ApiError::BadRequest(format!("ids must hold 1 to {MAX_IDS} job ids")));
            }
            if ids.iter().any(String::is_empty) {
                return Err(ApiError::BadRequest("job ids must not be empty".into()));
            }
            Ok(DeadSelector::Ids(ids))
        }
        (None, Some(true), None) => Ok(DeadSelector::All),
        (None, None, Some(secs)) if allow_age => Ok(DeadSelector::OlderThan(std::time::Duration::from_secs(secs))),
        _ => Err(ApiError::BadRequest(format!("expected exactly one of {expected}"))),
    }
}

/// Refuses ids that are not in the dead set, before anything changes.
async fn check_dead(state: &AppState, queue: &str, which: &DeadSelector) -> Result<(), ApiError> {
    let DeadSelector::Ids(ids) = which else {
        return Ok(());
    };
    let mut missing = Vec::new();
    for id in ids {
        if state.admin.dead_get(queue, id).await?.is_none() {
            missing.push(id.clone());
        }
    }
    if missing.is_empty() {
        Ok(())
    } else {
        Err(ApiError::NotDead {
            queue: queue.to_owned(),
            ids: missing,
        })
    }
}

fn describe(which: &DeadSelector) -> String {
    match which {
        DeadSelector::Ids(ids) => format!("{} id(s)", ids.len()),
        DeadSelector::All => "all".into(),
        DeadSelector::OlderThan(age) => format!("older than {}s", age.as_secs()),
    }
}

async fn dead_retry(
    state: web::Data<AppState>,
    path: web::Path<String>,
    caller: Caller,
    body: web::Bytes,
) -> Result<HttpResponse, ApiError> {
    let queue = state.queue(&path)?;
    let which = parse_selector(&body, false)?;
    check_dead(&state, queue, &which).await?;
    let what = describe(&which);
    let (retried, skipped) = state.admin.dead_retry_counted(queue, which).await?;
    tracing::info!(queue, selection = %what, retried, skipped, caller = %caller, "dead jobs retried");
    Ok(json_ok(
        &json!({ "queue": queue, "retried": retried, "skipped": skipped }),
    ))
}

async fn dead_purge(
    state: web::Data<AppState>,
    path: web::Path<String>,
    caller: Caller,
    body: web::Bytes,
) -> Result<HttpResponse, ApiError> {
    let queue = state.queue(&path)?;
    let which = parse_selector(&body, true)?;
    check_dead(&state, queue, &which).await?;
    let what = describe(&which);
    let purged = state.admin.dead_purge(queue, which).await?;
    tracing::info!(queue, selection = %what, purged, caller = %caller, "dead jobs purged");
    Ok(json_ok(&json!({ "queue": queue, "purged": purged })))
}

async fn pause(state: web::Data<AppState>, path: web::Path<String>, caller: Caller) -> Result<HttpResponse, ApiError> {
    let queue = state.queue(&path)?;
    let control = state.admin.pause(queue).await?;
    tracing::info!(queue, caller = %caller, "queue paused");
    Ok(json_ok(&control))
}

async fn resume(state: web::Data<AppState>, path: web::Path<String>, caller: Caller) -> Result<HttpResponse, ApiError> {
    let queue = state.queue(&path)?;
    let control = state.admin.resume(queue).await?;
    tracing::info!(queue, caller = %caller, "queue resumed");
    Ok(json_ok(&control))
}

/// Reads `{"limit": N}` (1 to [`MAX_LIMIT`]) or `{"limit": null}`.
fn parse_limit(body: &[u8]) -> Result<Option<u64>, ApiError> {
    let expected =
        format!(r#"expected {{"limit": N}} with N from 1 to {MAX_LIMIT}, or {{"limit": null}} for no limit"#);
    let body: HashMap<String, Value> = parse_json(body)?;
    if body.len() != 1 {
        return Err(ApiError::BadRequest(expected));
    }
    match body.get("limit") {
        Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) => match n.as_u64().filter(|n| (1..=MAX_LIMIT).contains(n)) {
            Some(n) => Ok(Some(n)),
            None => Err(ApiError::BadRequest(format!("invalid limit {n}: {expected}"))),
        },
        _ => Err(ApiError::BadRequest(expected)),
    }
}

async fn put_limit(
    state: web::Data<AppState>,
    path: web::Path<String>,
    caller: Caller,
    body: web::Bytes,
) -> Result<HttpResponse, ApiError> {
    let queue = state.queue(&path)?;
    let limit = parse_limit(&body)?;
    let control = state.admin.set_limit(queue, limit).await?;
    tracing::info!(queue, limit = ?limit, caller = %caller, "queue limit set");
    Ok(json_ok(&control))
}

/// Every live worker process, of every queue, by queue then host.
pub async fn all_workers(state: &AppState) -> Result<Vec<WorkerInfo>, ApiError> {
    let mut workers = Vec::new();
    for queue in tally_jobs::QUEUES {
        workers.extend(state.admin.workers(queue).await?);
    }
    workers.sort_by(|a, b| (&a.queue, &a.host, a.pid, &a.id).cmp(&(&b.queue, &b.host, b.pid, &b.id)));
    Ok(workers)
}

async fn list_workers(state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    Ok(json_ok(&json!({ "workers": all_workers(&state).await? })))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn job_queries_parse_strictly() {
        let q = JobsQuery::parse("").expect("defaults");
        assert_eq!((q.state, q.offset, q.limit), (JobState::Ready, 0, DEFAULT_PAGE));
        let q = JobsQuery::parse("state=inFlight&offset=50&limit=500").expect("valid");
        assert_eq!((q.state, q.offset, q.limit), (JobState::InFlight, 50, 500));
        for bad in [
            "state=running",
            "limit=0",
            "limit=501",
            "limit=x",
            "offset=-1",
            "page=2",
        ] {
            let err = JobsQuery::parse(bad).expect_err(bad);
            assert!(matches!(err, ApiError::BadRequest(_)), "{bad}: {err}");
        }
    }

    #[test]
    fn selectors_take_exactly_one_form() {
        assert_eq!(
            parse_selector(br#"{"ids":["a","b"]}"#, false).expect("ids"),
            DeadSelector::Ids(vec!["a".into(), "b".into()])
        );
        assert_eq!(
            parse_selector(br#"{"all":true}"#, false).expect("all"),
            DeadSelector::All
        );
        assert!(matches!(
            parse_selector(br#"{"olderThanSecs":60}"#, true).expect("age"),
            DeadSelector::OlderThan(_)
        ));
        for bad in [
            &br#"{"olderThanSecs":60}"#[..],
            br#"{"all":false}"#,
            br#"{"ids":[]}"#,
            br#"{"ids":[""]}"#,
            br#"{"ids":["a"],"all":true}"#,
            br#"{"every":true}"#,
            br"{}",
            b"",
            b"not json",
        ] {
            assert!(parse_selector(bad, false).is_err(), "{}", String::from_utf8_lossy(bad));
        }
    }

    #[test]
    fn limits_are_a_number_or_null() {
        assert_eq!(parse_limit(br#"{"limit":3}"#).expect("3"), Some(3));
        assert_eq!(parse_limit(br#"{"limit":null}"#).expect("null"), None);
        for bad in [
            &br#"{"limit":0}"#[..],
            br#"{"limit":-1}"#,
            br#"{"limit":1.5}"#,
            br#"{"limit":"3"}"#,
            br#"{"limit":100001}"#,
            br"{}",
            br#"{"limit":3,"x":1}"#,
            b"[3]",
        ] {
            assert!(parse_limit(bad).is_err(), "{}", String::from_utf8_lossy(bad));
        }
    }

    #[test]
    fn every_route_is_under_the_prefix_once() {
        let routes = routes();
        let mut seen = std::collections::HashSet::new();
        for r in &routes {
            assert!(r.path.starts_with(PREFIX), "{}", r.path);
            assert!(seen.insert((r.method.clone(), r.path)), "{} {} twice", r.method, r.path);
        }
        // Routes of one path are listed together, so configure groups them.
        let mut paths: Vec<_> = routes.iter().map(|r| r.path).collect();
        paths.dedup();
        let unique: std::collections::HashSet<_> = paths.iter().collect();
        assert_eq!(paths.len(), unique.len(), "routes of one path must be adjacent");
    }
}
