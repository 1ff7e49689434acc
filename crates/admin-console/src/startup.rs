//! Building and running the console: connect to Redis (lazily), bind,
//! start the counter sampler, serve until the shutdown future resolves,
//! then drain in-flight requests.
//!
//! Also the request pipeline every route goes through: security headers
//! and request metrics for all, and for `/api/v1/…` the guard that
//! authenticates the caller before any handler (or 404) is reached and
//! refuses writes by read-only callers, and browser writes without their
//! CSRF token or from another origin.

use std::{future::Future, net::SocketAddr, time::Instant};

use actix_web::{
    App, FromRequest, HttpMessage as _, HttpRequest, HttpServer, ResponseError as _,
    body::MessageBody,
    dev::{Payload, ServiceRequest, ServiceResponse},
    http::{Method, header},
    middleware::{Next, from_fn},
    web,
};
use tally_queue::{QueueAdmin, QueueClient, QueueConfig};
use tally_service::ReadinessCheck;

use crate::auth::{self, Bearer, Role, Session, Sessions};
use crate::error::ApiError;
use crate::rates::Rates;
use crate::{Settings, api, pages};

/// Largest request body the API reads (a retry of [`api::MAX_IDS`] ids fits).
const MAX_BODY_BYTES: usize = 256 * 1024;

/// What every handler can reach.
#[derive(Debug)]
pub struct AppState {
    /// Reads and changes the queues.
    pub admin: QueueAdmin,
    /// The tokens, and the browser sessions and CSRF tokens made from them.
    pub sessions: Sessions,
    /// Completed and failed per second, from the sampler.
    pub rates: Rates,
    /// `ADMIN_PUBLIC_ORIGIN`, when set.
    pub public_origin: Option<String>,
    /// Whether cookies carry `Secure`.
    pub secure_cookie: bool,
}

impl AppState {
    /// The queue named `name`, if it is one of tally's.
    pub fn queue(&self, name: &str) -> Result<&'static str, ApiError> {
        tally_jobs::QUEUES
            .into_iter()
            .find(|q| *q == name)
            .ok_or_else(|| ApiError::UnknownQueue(name.to_owned()))
    }

    /// The session of a request's cookie, when it has a valid one.
    pub fn session(&self, headers: &header::HeaderMap) -> Option<Session> {
        let value = auth::cookie_value(headers, auth::SESSION_COOKIE)?;
        self.sessions.verify(value, now_secs())
    }

    /// Who is calling the API and whether they may do what the method
    /// asks; see `crate::auth`.
    pub fn authorize(&self, headers: &header::HeaderMap, write: bool) -> Result<Caller, ApiError> {
        let caller = match auth::bearer(headers) {
            Bearer::Token(token) => {
                Caller::Bearer(self.sessions.tokens().role_of(token).ok_or(ApiError::Unauthorized)?)
            }
            Bearer::Malformed => return Err(ApiError::Unauthorized),
            Bearer::Absent => Caller::Session(self.session(headers).ok_or(ApiError::Unauthorized)?.role),
        };
        if write {
            if let Caller::Session(_) = caller {
                if !auth::origin_allowed(headers, self.public_origin.as_deref()) {
                    return Err(ApiError::CrossOrigin);
                }
                let session = self.session(headers).ok_or(ApiError::Unauthorized)?;
                let presented = headers.get(auth::CSRF_HEADER).and_then(|v| v.to_str().ok());
                if !self.sessions.check_csrf(&session, presented) {
                    return Err(ApiError::Csrf);
                }
            }
            if caller.role() != Role::Write {
                return Err(ApiError::ReadOnly);
            }
        }
        Ok(caller)
    }
}

/// Seconds since the Unix epoch, for session times.
pub fn now_secs() -> u64 {
    tally_queue::now_ms() / 1000
}

/// An authenticated API caller (put in the request by the API guard, and
/// taken by handlers that log what they changed).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Caller {
    /// `Authorization: Bearer …`.
    Bearer(Role),
    /// A browser session cookie.
    Session(Role),
}

impl Caller {
    /// What the caller may do.
    pub fn role(self) -> Role {
        match self {
            Caller::Bearer(role) | Caller::Session(role) => role,
        }
    }
}

impl std::fmt::Display for Caller {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Caller::Bearer(role) => write!(f, "bearer {}", role.as_str()),
            Caller::Session(role) => write!(f, "browser session {}", role.as_str()),
        }
    }
}

impl FromRequest for Caller {
    type Error = ApiError;
    type Future = std::future::Ready<Result<Self, ApiError>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        std::future::ready(req.extensions().get::<Caller>().copied().ok_or(ApiError::Unauthorized))
    }
}

/// The API guard: authenticates every `/api/v1/…` request (known route or
/// not) and authorises writes, before anything else looks at it.
async fn api_guard(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    let write = !matches!(*req.method(), Method::GET | Method::HEAD);
    let verdict = match req.app_data::<web::Data<AppState>>() {
        Some(state) => state.authorize(req.headers(), write),
        None => Err(ApiError::Internal),
    };
    match verdict {
        Ok(caller) => {
            req.extensions_mut().insert(caller);
            Ok(next.call(req).await?.map_into_left_body())
        }
        Err(e) => {
            if !matches!(e, ApiError::Unauthorized) || write {
                tracing::warn!(method = %req.method(), path = req.path(), peer = ?req.peer_addr(), reason = %e, "api request refused");
            }
            Ok(req.into_response(e.error_response()).map_into_right_body())
        }
    }
}

/// Security headers on every answer, and request metrics per route
/// pattern (never per raw path). The metrics have names of their own
/// (`tally_admin_http_*`): the gateway's alerts read `tally_http_*`, and
/// the console's traffic must neither raise nor mask them.
async fn headers_and_metrics(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    let started = Instant::now();
    let method = tally_service::http::method_label(req.method());
    let route = req.match_pattern().unwrap_or_else(|| "unmatched".to_owned());
    let mut response = next.call(req).await?;
    let headers = response.headers_mut();
    for (name, value) in [
        (
            "content-security-policy",
            "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; \
             form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
        ),
        ("x-content-type-options", "nosniff"),
        ("x-frame-options", "DENY"),
        ("referrer-policy", "same-origin"),
        ("cross-origin-opener-policy", "same-origin"),
    ] {
        headers.insert(
            header::HeaderName::from_static(name),
            header::HeaderValue::from_static(value),
        );
    }
    let status = response.status();
    if status.is_server_error() {
        tracing::error!(%status, %method, %route, "admin-console answered with a server error");
    }
    let labels = [
        ("route", route),
        ("method", method.to_owned()),
        ("status", status.as_u16().to_string()),
    ];
    metrics::counter!("tally_admin_http_requests_total", &labels).increment(1);
    metrics::histogram!("tally_admin_http_request_duration_seconds", &labels).record(started.elapsed().as_secs_f64());
    Ok(response)
}

/// The probe routes, served beside the API and the pages.
pub const PROBES: [&str; 3] = ["/healthz", "/readyz", "/metrics"];

/// A bound, not yet running console.
pub struct Application {
    server: actix_web::dev::Server,
    addr: SocketAddr,
    sampler: tokio::task::JoinHandle<()>,
}

impl std::fmt::Debug for Application {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Application")
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
}

impl Application {
    /// Connects to Redis (lazily: a Redis down at start is not fatal, the
    /// console answers 503 until it is back), starts the sampler and binds
    /// `ADMIN_BIND_ADDR` (port 0 picks a free port, as tests do).
    pub async fn build(settings: Settings) -> anyhow::Result<Self> {
        let client = QueueClient::new(&settings.redis_url, QueueConfig::with_prefix(&settings.queue_prefix))?;
        if let Err(e) = client.ping().await {
            tracing::warn!(error = %e, "redis not reachable yet; answering 503 until it is");
        }
        let checks = vec![ReadinessCheck::redis(client.clone())];
        let admin = QueueAdmin::new(client);
        let rates = Rates::default();
        let sampler = tokio::spawn(
            rates
                .clone()
                .run(admin.clone(), &tally_jobs::QUEUES, settings.sample_interval),
        );
        let state = web::Data::new(AppState {
            admin,
            sessions: Sessions::new(settings.tokens.clone(), settings.session_ttl),
            rates,
            public_origin: settings.public_origin.clone(),
            secure_cookie: settings.secure_cookie,
        });
        let server = HttpServer::new(move || {
            App::new()
                .wrap(from_fn(headers_and_metrics))
                .app_data(state.clone())
                .app_data(web::PayloadConfig::new(MAX_BODY_BYTES))
                .app_data(web::FormConfig::default().limit(16 * 1024))
                .configure(tally_service::health::configure(checks.clone()))
                .service(
                    web::scope(api::PREFIX)
                        .wrap(from_fn(api_guard))
                        .configure(api::configure),
                )
                .configure(pages::configure)
        })
        .disable_signals()
        .shutdown_timeout(settings.shutdown_timeout.as_secs())
        .bind(settings.bind_addr)
        .map_err(|e| anyhow::anyhow!("cannot listen on ADMIN_BIND_ADDR={}: {e}", settings.bind_addr))?;
        let addr = server.addrs().first().copied().unwrap_or(settings.bind_addr);
        Ok(Application {
            server: server.run(),
            addr,
            sampler,
        })
    }

    /// The bound address (useful when `ADMIN_BIND_ADDR` had port 0).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Serves until `shutdown` resolves, then stops accepting and lets
    /// in-flight requests finish within `SHUTDOWN_TIMEOUT_SECS`.
    pub async fn run_until(self, shutdown: impl Future<Output = ()>) -> std::io::Result<()> {
        // The rates' sampler stops with the last request it could serve.
        let sampler = self.sampler;
        let result = tally_service::serve_until(self.server, shutdown).await;
        sampler.abort();
        result
    }
}
