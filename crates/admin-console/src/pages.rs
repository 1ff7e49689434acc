//! The web dashboard: server-rendered HTML pages, kept current by
//! `assets/app.js`, which polls the JSON API every 2 s and sends the
//! operator's actions to it (with the session's CSRF token).
//!
//! Pages: `/` (every queue: counts, rates, paused or not), `/queues/{queue}`
//! (jobs by state, paged; pause, resume, limit; the dead tab retries and
//! purges one job, a selection or all), `/queues/{queue}/jobs/{id}` (one
//! job, its envelope pretty-printed), `/workers`, and `/login` / `/logout`.
//! A page without a valid session redirects to the login page and shows no
//! data. Everything a producer wrote (ids, kinds, payloads, errors) is
//! escaped ([`crate::html::esc`]).

use std::fmt::Write as _;

use actix_web::{
    FromRequest, HttpRequest, HttpResponse, ResponseError,
    dev::Payload,
    http::{StatusCode, header},
    web,
};
use serde::Deserialize;
use tally_queue::{JobDetail, JobPage, JobState, JobSummary, WorkerInfo};

use crate::api::{self, JobsQuery, QueueSummary};
use crate::auth::{self, Role, Session, Sessions};
use crate::error::ApiError;
use crate::html::{duration_ms, esc, rate, segment, time};
use crate::startup::{AppState, now_secs};

const APP_JS: &str = include_str!("../assets/app.js");
const APP_CSS: &str = include_str!("../assets/app.css");

/// Registers the pages and their assets.
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/", web::get().to(overview))
        .route("/queues/{queue}", web::get().to(queue_page))
        .route("/queues/{queue}/jobs/{id}", web::get().to(job_page))
        .route("/workers", web::get().to(workers_page))
        .route("/login", web::get().to(login_form))
        .route("/login", web::post().to(login))
        .route("/logout", web::post().to(logout))
        .route("/static/app.js", web::get().to(app_js))
        .route("/static/app.css", web::get().to(app_css))
        .default_service(web::to(not_found));
}

/// Why a page is not shown.
#[derive(Debug)]
pub enum PageError {
    /// No valid session: go to the login page, then back to `next`.
    Login {
        /// Where to return after logging in.
        next: String,
    },
    /// Anything the API would refuse, shown as an HTML page.
    Api(ApiError),
}

impl std::fmt::Display for PageError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PageError::Login { .. } => f.write_str("login required"),
            PageError::Api(e) => e.fmt(f),
        }
    }
}

impl From<ApiError> for PageError {
    fn from(e: ApiError) -> Self {
        PageError::Api(e)
    }
}

impl ResponseError for PageError {
    fn status_code(&self) -> StatusCode {
        match self {
            PageError::Login { .. } => StatusCode::SEE_OTHER,
            PageError::Api(e) => e.status_code(),
        }
    }

    fn error_response(&self) -> HttpResponse {
        match self {
            PageError::Login { next } => HttpResponse::SeeOther()
                .insert_header((header::LOCATION, format!("/login?next={}", segment(next))))
                .insert_header((header::CACHE_CONTROL, "no-store"))
                .finish(),
            PageError::Api(e) => {
                let title = match e.status_code() {
                    StatusCode::NOT_FOUND => "Not found",
                    StatusCode::BAD_REQUEST => "Bad request",
                    StatusCode::SERVICE_UNAVAILABLE => "Redis unavailable",
                    _ => "Error",
                };
                let body = format!(
                    r#"<h1>{title}</h1><p class="error-text">{}</p><p><a href="/">Back to the queues</a></p>"#,
                    esc(&e.to_string())
                );
                html_response(e.status_code(), &bare_layout(title, &body))
            }
        }
    }
}

/// A page request with a valid session (the extractor redirects to the
/// login page otherwise).
#[derive(Debug)]
pub struct PageSession {
    session: Session,
    csrf: String,
}

impl FromRequest for PageSession {
    type Error = PageError;
    type Future = std::future::Ready<Result<Self, PageError>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let result = match req.app_data::<web::Data<AppState>>() {
            None => Err(PageError::Api(ApiError::Internal)),
            Some(state) => match state.session(req.headers()) {
                Some(session) => Ok(PageSession {
                    csrf: state.sessions.csrf_token(&session),
                    session,
                }),
                None => Err(PageError::Login {
                    next: req
                        .uri()
                        .path_and_query()
                        .map_or_else(|| "/".to_owned(), ToString::to_string),
                }),
            },
        };
        std::future::ready(result)
    }
}

fn html_response(status: StatusCode, body: &str) -> HttpResponse {
    HttpResponse::build(status)
        .content_type("text/html; charset=utf-8")
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .body(body.to_owned())
}

fn head(title: &str, csrf: Option<&str>) -> String {
    let csrf = csrf.map_or_else(String::new, |t| {
        format!(r#"<meta name="csrf-token" content="{}">"#, esc(t))
    });
    format!(
        r#"<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
{csrf}
<title>{} · tally console</title>
<link rel="stylesheet" href="/static/app.css">
<script src="/static/app.js" defer></script>
</head>
"#,
        esc(title)
    )
}

/// A page with no session (login, errors).
fn bare_layout(title: &str, main: &str) -> String {
    format!(
        r#"{}<body data-page="bare">
<header class="top"><a class="brand" href="/">tally console</a></header>
<main>{main}</main>
</body>
</html>
"#,
        head(title, None)
    )
}

/// Which item of the navigation is current.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Nav {
    Queues,
    Workers,
}

/// A page of a logged-in operator. `data` holds the `data-*` attributes
/// of `<body>` that tell `app.js` what to refresh (values escaped here).
fn layout(title: &str, nav: Nav, page: &PageSession, data: &[(&str, &str)], main: &str) -> String {
    let mut attrs = String::new();
    for (name, value) in data {
        let _ = write!(attrs, r#" data-{name}="{}""#, esc(value));
    }
    let current = |n: Nav| if n == nav { r#" aria-current="page""# } else { "" };
    format!(
        r#"{head}<body{attrs} data-role="{role}">
<header class="top">
<a class="brand" href="/">tally console</a>
<nav class="main-nav"><a href="/"{q}>Queues</a><a href="/workers"{w}>Workers</a></nav>
<span class="who" title="what this session may do">{role}</span>
<form class="logout" method="post" action="/logout"><input type="hidden" name="csrf" value="{csrf}"><button type="submit">Log out</button></form>
</header>
<div id="status" class="status" role="status" hidden></div>
<main>
{main}
</main>
</body>
</html>
"#,
        head = head(title, Some(&page.csrf)),
        role = page.session.role.as_str(),
        q = current(Nav::Queues),
        w = current(Nav::Workers),
        csrf = esc(&page.csrf),
    )
}

fn now_ms() -> u64 {
    tally_queue::now_ms()
}

fn state_badge(paused: bool) -> String {
    if paused {
        r#"<span class="badge paused" data-field="state">paused</span>"#.to_owned()
    } else {
        r#"<span class="badge running" data-field="state">running</span>"#.to_owned()
    }
}

fn limit_text(limit: Option<u64>) -> String {
    limit.map_or_else(|| "none".to_owned(), |n| n.to_string())
}

/// The counts of a queue, as the overview card and the queue page show
/// them (`app.js` updates each `data-field`).
fn counts(q: &QueueSummary) -> String {
    let s = &q.stats;
    let dead_link = format!(
        r#"<a href="/queues/{}?state=dead" data-field="dead">{}</a>"#,
        segment(q.name),
        s.dead
    );
    let items: [(&str, &str, String); 11] = [
        ("Ready", "ready", s.ready.to_string()),
        ("Scheduled", "scheduled", s.scheduled.to_string()),
        ("In flight", "inFlight", s.in_flight.to_string()),
        ("Dead", "", dead_link),
        (
            "Oldest ready",
            "oldestReadyAgeMs",
            s.oldest_ready_age_ms.map_or_else(|| "–".to_owned(), duration_ms),
        ),
        (
            "Completed/s",
            "completedPerSec",
            rate(q.rates.map(|r| r.completed_per_sec)),
        ),
        ("Failed/s", "failedPerSec", rate(q.rates.map(|r| r.failed_per_sec))),
        ("Completed", "completed", s.counters.completed.to_string()),
        ("Failed", "failed", s.counters.failed.to_string()),
        ("Workers", "workers", q.workers.to_string()),
        ("Limit", "limit", limit_text(s.limit)),
    ];
    let mut out = String::from(r#"<dl class="counts">"#);
    for (label, field, value) in items {
        if field.is_empty() {
            let _ = write!(out, "<div><dt>{label}</dt><dd>{value}</dd></div>");
        } else {
            let _ = write!(
                out,
                r#"<div><dt>{label}</dt><dd data-field="{field}">{}</dd></div>"#,
                esc(&value)
            );
        }
    }
    out.push_str("</dl>");
    out
}

async fn overview(state: web::Data<AppState>, page: PageSession) -> Result<HttpResponse, PageError> {
    let queues = api::all_summaries(&state).await?;
    let mut main = String::from(r#"<h1>Queues</h1><div class="cards">"#);
    for q in &queues {
        let _ = write!(
            main,
            r#"<section class="card" data-queue="{name}"><h2><a href="/queues/{seg}">{name}</a> {badge}</h2>{counts}</section>"#,
            name = esc(q.name),
            seg = segment(q.name),
            badge = state_badge(q.stats.paused),
            counts = counts(q),
        );
    }
    main.push_str(
        r#"</div><p class="hint">Rates are averaged over the last minute; the page refreshes every 2 s.</p>"#,
    );
    Ok(html_response(
        StatusCode::OK,
        &layout("Queues", Nav::Queues, &page, &[("page", "overview")], &main),
    ))
}

/// The label of the time column for a state.
fn at_label(state: JobState) -> Option<&'static str> {
    match state {
        JobState::Ready => None,
        JobState::Scheduled => Some("Due"),
        JobState::InFlight => Some("Lease expires"),
        JobState::Dead => Some("Died"),
    }
}

fn state_label(state: JobState) -> &'static str {
    match state {
        JobState::Ready => "Ready",
        JobState::Scheduled => "Scheduled",
        JobState::InFlight => "In flight",
        JobState::Dead => "Dead",
    }
}

fn job_href(queue: &str, id: &str) -> String {
    format!("/queues/{}/jobs/{}", segment(queue), segment(id))
}

fn opt(text: Option<&str>) -> String {
    text.map_or_else(|| "–".to_owned(), esc)
}

/// The header of the jobs table (mirrored by `app.js`).
fn jobs_head(state: JobState, writable: bool) -> String {
    let mut out = String::from("<tr>");
    if state == JobState::Dead && writable {
        out.push_str(r#"<th class="select"><input type="checkbox" id="select-all" aria-label="select every job on this page"></th>"#);
    }
    out.push_str(
        "<th>Id</th><th>Kind</th><th>Priority</th><th>Attempts</th><th>Errors</th><th>Crashes</th><th>Created</th>",
    );
    if let Some(label) = at_label(state) {
        let _ = write!(out, "<th>{label}</th>");
    }
    if state == JobState::Dead {
        out.push_str("<th>Error</th>");
        if writable {
            out.push_str("<th>Actions</th>");
        }
    }
    out.push_str("</tr>");
    out
}

/// One row of the jobs table (mirrored by `app.js`).
fn job_row(queue: &str, job: &JobSummary, writable: bool, now: u64) -> String {
    let id = esc(&job.id);
    let mut out = format!(r#"<tr data-id="{id}">"#);
    if job.state == JobState::Dead && writable {
        let _ = write!(
            out,
            r#"<td class="select"><input type="checkbox" class="select-job" value="{id}" aria-label="select {id}"></td>"#
        );
    }
    let _ = write!(
        out,
        r#"<td data-label="Id" class="id"><a class="job-link" href="{href}">{id}</a></td><td data-label="Kind">{kind}</td><td data-label="Priority">{prio}</td><td data-label="Attempts">{a}</td><td data-label="Errors">{e}</td><td data-label="Crashes">{c}</td><td data-label="Created">{created}</td>"#,
        href = esc(&job_href(queue, &job.id)),
        kind = opt(job.kind.as_deref()),
        prio = job.priority.map_or_else(|| "–".to_owned(), |p| p.as_str().to_owned()),
        a = job.attempts,
        e = job.errors,
        c = job.crashes,
        created = time(job.created_at_ms, now),
    );
    if let Some(label) = at_label(job.state) {
        let _ = write!(out, r#"<td data-label="{label}">{}</td>"#, time(job.at_ms, now));
    }
    if job.state == JobState::Dead {
        let _ = write!(
            out,
            r#"<td data-label="Error" class="error-text">{}</td>"#,
            opt(job.error.as_deref())
        );
        if writable {
            let _ = write!(
                out,
                r#"<td data-label="Actions" class="row-actions"><button type="button" data-action="retry-one" data-id="{id}">Retry</button><button type="button" class="danger" data-action="purge-one" data-id="{id}">Purge</button></td>"#
            );
        }
    }
    out.push_str("</tr>");
    out
}

fn pager(queue: &str, page: &JobPage, limit: u64) -> String {
    let range = if page.jobs.is_empty() {
        format!("0 of {}", page.total)
    } else {
        format!(
            "{}–{} of {}",
            page.offset + 1,
            page.offset + page.jobs.len() as u64,
            page.total
        )
    };
    let link = |offset: u64, text: &str, id: &str, enabled: bool| {
        let href = format!(
            "/queues/{}?state={}&offset={offset}&limit={limit}",
            segment(queue),
            page.state
        );
        if enabled {
            format!(r#"<a id="{id}" href="{}">{text}</a>"#, esc(&href))
        } else {
            format!(r#"<a id="{id}" aria-disabled="true">{text}</a>"#)
        }
    };
    format!(
        r#"<nav class="pager" aria-label="pages">{prev}<span id="range">{range}</span>{next}</nav>"#,
        prev = link(page.offset.saturating_sub(limit), "← Previous", "prev", page.offset > 0),
        next = link(
            page.offset + limit,
            "Next →",
            "next",
            page.offset + (page.jobs.len() as u64) < page.total
        ),
    )
}

async fn queue_page(
    state: web::Data<AppState>,
    page: PageSession,
    path: web::Path<String>,
    req: HttpRequest,
) -> Result<HttpResponse, PageError> {
    let queue = state.queue(&path)?;
    let query = JobsQuery::parse(req.query_string())?;
    let (summary, jobs) = tokio::try_join!(api::queue_summary(&state, queue), async {
        state
            .admin
            .jobs(queue, query.state, query.offset, query.limit)
            .await
            .map_err(ApiError::from)
    })?;
    let writable = page.session.role == Role::Write;
    let now = now_ms();
    let s = &summary.stats;
    let mut main = format!(
        r#"<p class="crumbs"><a href="/">Queues</a> / {name}</p><h1>Queue <span class="queue-name">{name}</span> {badge}</h1>"#,
        name = esc(queue),
        badge = state_badge(s.paused),
    );
    if writable {
        let _ = write!(
            main,
            r#"<section class="controls" aria-label="queue controls">
<button type="button" id="pause" data-action="pause"{hide_pause}>Pause</button>
<button type="button" id="resume" data-action="resume"{hide_resume}>Resume</button>
<form id="limit-form" class="inline"><label>Concurrency limit <input type="number" id="limit-input" name="limit" min="1" max="{max}" placeholder="none" value="{limit}"></label><button type="submit">Set limit</button><button type="button" data-action="unlimit">Remove limit</button></form>
</section>"#,
            hide_pause = if s.paused { " hidden" } else { "" },
            hide_resume = if s.paused { "" } else { " hidden" },
            max = api::MAX_LIMIT,
            limit = s.limit.map_or_else(String::new, |n| n.to_string()),
        );
    } else {
        main.push_str(r#"<p class="hint">This session is read-only: log in with ADMIN_TOKEN to change the queue.</p>"#);
    }
    main.push_str(&counts(&summary));
    main.push_str(r#"<nav class="tabs" aria-label="job states">"#);
    for st in JobState::ALL {
        let count = match st {
            JobState::Ready => s.ready,
            JobState::Scheduled => s.scheduled,
            JobState::InFlight => s.in_flight,
            JobState::Dead => s.dead,
        };
        let _ = write!(
            main,
            r#"<a href="/queues/{q}?state={st}"{cur}>{label} <span class="count" data-count="{st}">{count}</span></a>"#,
            q = segment(queue),
            cur = if st == query.state {
                r#" aria-current="page""#
            } else {
                ""
            },
            label = state_label(st),
        );
    }
    main.push_str("</nav>");
    if query.state == JobState::Dead && writable {
        main.push_str(
            r#"<div class="toolbar"><button type="button" data-action="retry-selected">Retry selected</button><button type="button" class="danger" data-action="purge-selected">Purge selected</button><button type="button" data-action="retry-all">Retry all</button><button type="button" class="danger" data-action="purge-all">Purge all</button></div>"#,
        );
    }
    let _ = write!(
        main,
        r#"<div class="table-wrap"><table class="jobs"><thead id="jobs-head">{head}</thead><tbody id="jobs">"#,
        head = jobs_head(query.state, writable)
    );
    for job in &jobs.jobs {
        main.push_str(&job_row(queue, job, writable, now));
    }
    let _ = write!(
        main,
        r#"</tbody></table></div><p class="empty" id="jobs-empty"{hidden}>No {label} jobs.</p>{pager}<p id="message" class="message" role="status"></p>"#,
        hidden = if jobs.jobs.is_empty() { "" } else { " hidden" },
        label = state_label(query.state).to_lowercase(),
        pager = pager(queue, &jobs, query.limit),
    );
    let offset = query.offset.to_string();
    let limit = query.limit.to_string();
    let data = [
        ("page", "queue"),
        ("queue", queue),
        ("state", query.state.as_str()),
        ("offset", offset.as_str()),
        ("limit", limit.as_str()),
    ];
    Ok(html_response(
        StatusCode::OK,
        &layout(
            &format!("{queue} · {}", state_label(query.state)),
            Nav::Queues,
            &page,
            &data,
            &main,
        ),
    ))
}

/// The envelope, pretty-printed when it is JSON (as stored otherwise: it
/// may be why the job died).
fn pretty_envelope(raw: Option<&str>) -> String {
    match raw {
        None => "(no envelope stored)".to_owned(),
        Some(raw) => serde_json::from_str::<serde_json::Value>(raw)
            .ok()
            .and_then(|v| serde_json::to_string_pretty(&v).ok())
            .unwrap_or_else(|| raw.to_owned()),
    }
}

fn job_facts(job: &JobDetail, now: u64) -> String {
    let s = &job.summary;
    let at = format!(
        r#"<div id="at-row"{hidden}><dt data-field="atLabel">{label}</dt><dd data-field="atMs">{time}</dd></div>"#,
        hidden = if at_label(s.state).is_some() { "" } else { " hidden" },
        label = at_label(s.state).unwrap_or_default(),
        time = time(s.at_ms, now),
    );
    format!(
        r#"<dl class="facts">
<div><dt>State</dt><dd><span class="badge state-{st}" data-field="state">{st_label}</span></dd></div>
<div><dt>Kind</dt><dd data-field="kind">{kind}</dd></div>
<div><dt>Priority</dt><dd data-field="priority">{prio}</dd></div>
<div><dt>Attempts</dt><dd data-field="attempts">{a}</dd></div>
<div><dt>Errors</dt><dd data-field="errors">{e}</dd></div>
<div><dt>Crashes</dt><dd data-field="crashes">{c}</dd></div>
<div><dt>Created</dt><dd data-field="createdAtMs">{created}</dd></div>
{at}
<div><dt>Trace id</dt><dd data-field="traceId"><code>{trace}</code></dd></div>
<div><dt>Dedup key</dt><dd data-field="dedupKey"><code>{dedup}</code></dd></div>
</dl>"#,
        st = s.state,
        st_label = state_label(s.state),
        kind = opt(s.kind.as_deref()),
        prio = s.priority.map_or_else(|| "–".to_owned(), |p| p.as_str().to_owned()),
        a = s.attempts,
        e = s.errors,
        c = s.crashes,
        created = time(s.created_at_ms, now),
        trace = opt(job.trace_id.as_deref()),
        dedup = opt(job.dedup_key.as_deref()),
    )
}

async fn job_page(
    state: web::Data<AppState>,
    page: PageSession,
    path: web::Path<(String, String)>,
) -> Result<HttpResponse, PageError> {
    let (queue, id) = path.into_inner();
    let queue = state.queue(&queue)?;
    let writable = page.session.role == Role::Write;
    let job = state.admin.job(queue, &id).await.map_err(ApiError::from)?;
    let crumbs = format!(
        r#"<p class="crumbs"><a href="/">Queues</a> / <a href="/queues/{seg}">{q}</a> / job</p><h1>Job <code id="job-id">{id}</code></h1>"#,
        seg = segment(queue),
        q = esc(queue),
        id = esc(&id),
    );
    let data = [("page", "job"), ("queue", queue), ("job", id.as_str())];
    let Some(job) = job else {
        let main = format!(
            r#"{crumbs}<p class="notice" id="gone">No job {} on queue {}: it completed, was purged, or never existed.</p>"#,
            esc(&id),
            esc(queue)
        );
        return Ok(html_response(
            StatusCode::NOT_FOUND,
            &layout("Job", Nav::Queues, &page, &data, &main),
        ));
    };
    let dead = job.summary.state == JobState::Dead;
    let mut main = crumbs;
    main.push_str(&job_facts(&job, now_ms()));
    let _ = write!(
        main,
        r#"<section id="dead-section"{hidden}><h2>Error</h2><pre class="error-text" id="job-error">{error}</pre>"#,
        hidden = if dead { "" } else { " hidden" },
        error = opt(job.summary.error.as_deref()),
    );
    if writable {
        main.push_str(r#"<div class="actions"><button type="button" data-action="retry-job">Retry</button><button type="button" class="danger" data-action="purge-job">Purge</button></div>"#);
    }
    main.push_str("</section>");
    let _ = write!(
        main,
        r#"<p class="notice" id="gone" hidden>This job is no longer in the queue: it completed, or was purged.</p><p id="message" class="message" role="status"></p><h2>Envelope</h2><pre class="envelope" id="envelope">{}</pre>"#,
        esc(&pretty_envelope(job.envelope.as_deref()))
    );
    Ok(html_response(
        StatusCode::OK,
        &layout("Job", Nav::Queues, &page, &data, &main),
    ))
}

/// One row of the workers table (mirrored by `app.js`).
fn worker_row(w: &WorkerInfo, now: u64) -> String {
    format!(
        r#"<tr><td data-label="Queue">{queue}</td><td data-label="Host">{host}</td><td data-label="Pid">{pid}</td><td data-label="Program">{program}</td><td data-label="Version">{version}</td><td data-label="In flight">{in_flight} / {concurrency}</td><td data-label="Started">{started}</td><td data-label="Heartbeat">{beat}</td><td data-label="Id"><code>{id}</code></td></tr>"#,
        queue = esc(&w.queue),
        host = esc(&w.host),
        pid = w.pid,
        program = esc(&w.program),
        version = esc(&w.version),
        in_flight = w.in_flight,
        concurrency = w.concurrency,
        started = time(Some(w.started_at_ms), now),
        beat = time(Some(w.heartbeat_at_ms), now),
        id = esc(&w.id),
    )
}

async fn workers_page(state: web::Data<AppState>, page: PageSession) -> Result<HttpResponse, PageError> {
    let workers = api::all_workers(&state).await?;
    let now = now_ms();
    let mut main = String::from(
        r#"<h1>Workers</h1><p class="hint">Live worker processes; a process that dies drops off this list within its heartbeat's expiry.</p><div class="table-wrap"><table class="workers"><thead><tr><th>Queue</th><th>Host</th><th>Pid</th><th>Program</th><th>Version</th><th>In flight</th><th>Started</th><th>Heartbeat</th><th>Id</th></tr></thead><tbody id="workers">"#,
    );
    for w in &workers {
        main.push_str(&worker_row(w, now));
    }
    let _ = write!(
        main,
        r#"</tbody></table></div><p class="empty" id="workers-empty"{}>No worker process is running.</p>"#,
        if workers.is_empty() { "" } else { " hidden" }
    );
    Ok(html_response(
        StatusCode::OK,
        &layout("Workers", Nav::Workers, &page, &[("page", "workers")], &main),
    ))
}

/// Where to go after logging in: a local path only (never `//host` or a
/// URL, so the login page cannot be used to send people elsewhere).
fn safe_next(next: Option<&str>) -> String {
    match next {
        Some(n) if n.starts_with('/') && !n.starts_with("//") && !n.contains(['\\', '\r', '\n']) => n.to_owned(),
        _ => "/".to_owned(),
    }
}

fn login_page(status: StatusCode, next: &str, error: Option<&str>) -> HttpResponse {
    let error = error.map_or_else(String::new, |e| {
        format!(r#"<p class="error-text" id="login-error" role="alert">{}</p>"#, esc(e))
    });
    let body = format!(
        r#"<section class="login"><h1>Log in</h1><p>Paste ADMIN_TOKEN (read-write) or ADMIN_READ_TOKEN (read-only). The browser keeps a session cookie, never the token.</p>{error}<form method="post" action="/login"><label for="token">Token</label><input type="password" id="token" name="token" autocomplete="current-password" required autofocus><input type="hidden" name="next" value="{next}"><button type="submit" id="login-submit">Log in</button></form></section>"#,
        next = esc(next),
    );
    html_response(status, &bare_layout("Log in", &body))
}

#[derive(Debug, Deserialize)]
struct NextQuery {
    next: Option<String>,
}

async fn login_form(state: web::Data<AppState>, req: HttpRequest, query: web::Query<NextQuery>) -> HttpResponse {
    let next = safe_next(query.next.as_deref());
    if state.session(req.headers()).is_some() {
        return HttpResponse::SeeOther()
            .insert_header((header::LOCATION, next))
            .finish();
    }
    login_page(StatusCode::OK, &next, None)
}

/// The login form's fields.
#[derive(Deserialize)]
struct LoginForm {
    token: String,
    next: Option<String>,
}

async fn login(state: web::Data<AppState>, req: HttpRequest, form: web::Form<LoginForm>) -> HttpResponse {
    let next = safe_next(form.next.as_deref());
    // A login posted from another site (login CSRF) is refused; a form
    // posted from this console always carries its Origin.
    if req.headers().contains_key(header::ORIGIN)
        && !auth::origin_allowed(req.headers(), state.public_origin.as_deref())
    {
        tracing::warn!(peer = ?req.peer_addr(), "login refused: cross-origin form");
        return login_page(StatusCode::FORBIDDEN, &next, Some("Cross-origin login refused."));
    }
    let Some(session) = state
        .sessions
        .tokens()
        .role_of(form.token.trim())
        .and_then(|role| state.sessions.issue(role, now_secs()))
    else {
        tracing::warn!(peer = ?req.peer_addr(), "login refused: wrong token");
        return login_page(StatusCode::UNAUTHORIZED, &next, Some("That token is not valid."));
    };
    tracing::info!(peer = ?req.peer_addr(), role = session.role.as_str(), "browser session started");
    HttpResponse::SeeOther()
        .insert_header((header::SET_COOKIE, state.sessions.cookie(&session, state.secure_cookie)))
        .insert_header((header::LOCATION, next))
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .finish()
}

#[derive(Deserialize)]
struct LogoutForm {
    csrf: Option<String>,
}

async fn logout(state: web::Data<AppState>, req: HttpRequest, form: web::Form<LogoutForm>) -> HttpResponse {
    // Logging out is a write too: a cross-site form must not end a session.
    let allowed = state.session(req.headers()).is_some_and(|session| {
        auth::origin_allowed(req.headers(), state.public_origin.as_deref())
            && state.sessions.check_csrf(&session, form.csrf.as_deref())
    });
    if !allowed {
        return HttpResponse::SeeOther().insert_header((header::LOCATION, "/")).finish();
    }
    HttpResponse::SeeOther()
        .insert_header((header::SET_COOKIE, Sessions::clear_cookie(state.secure_cookie)))
        .insert_header((header::LOCATION, "/login"))
        .finish()
}

async fn app_js() -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/javascript; charset=utf-8")
        .insert_header((header::CACHE_CONTROL, "no-cache"))
        .body(APP_JS)
}

async fn app_css() -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/css; charset=utf-8")
        .insert_header((header::CACHE_CONTROL, "no-cache"))
        .body(APP_CSS)
}

async fn not_found(req: HttpRequest) -> HttpResponse {
    let error = ApiError::NoRoute {
        method: req.method().to_string(),
        path: req.path().to_owned(),
    };
    if req.path().starts_with("/api/") {
        error.error_response()
    } else {
        PageError::Api(error).error_response()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn next_stays_on_this_site() {
        assert_eq!(safe_next(Some("/queues/stats?state=dead")), "/queues/stats?state=dead");
        for bad in [
            "//evil.example",
            "https://evil.example",
            "\\\\evil",
            "/\\evil",
            "",
            "queues",
        ] {
            assert_eq!(safe_next(Some(bad)), "/", "{bad}");
        }
        assert_eq!(safe_next(None), "/");
    }

    #[test]
    fn untrusted_job_fields_are_escaped() {
        let job = JobSummary {
            id: r#"x"><script>alert(1)</script>"#.into(),
            kind: Some("<img src=x onerror=alert(1)>".into()),
            state: JobState::Dead,
            priority: None,
            attempts: 1,
            crashes: 0,
            errors: 1,
            created_at_ms: Some(0),
            at_ms: Some(0),
            error: Some("</td><script>alert(2)</script>".into()),
            partition: 0,
        };
        let row = job_row("stats", &job, true, 0);
        assert!(!row.contains("<script>") && !row.contains("<img"), "{row}");
        assert!(row.contains("&lt;script&gt;alert(1)&lt;/script&gt;"), "{row}");
        assert!(row.contains("/queues/stats/jobs/x%22%3E%3Cscript%3E"), "{row}");
        let envelope = pretty_envelope(Some(r#"{"payload":{"note":"</pre><script>alert(3)</script>"}}"#));
        assert!(!esc(&envelope).contains("<script>"));
        assert_eq!(pretty_envelope(Some("not json <b>")), "not json <b>");
    }
}
