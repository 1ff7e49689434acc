//! Building and running the gateway: connect the producer (Redis is the
//! gateway's only dependency), bind, serve until the shutdown future
//! resolves, then drain in-flight requests.

use std::{future::Future, net::SocketAddr, time::Instant};

use actix_web::{
    App, HttpServer,
    body::MessageBody,
    dev::{ServiceRequest, ServiceResponse},
    middleware::{Next, from_fn},
    web,
};
use tally_jobs::RepairPipeline;
use tally_queue::{Producer, QueueClient, QueueConfig};
use tally_service::ReadinessCheck;
use tracing::Instrument as _;

use crate::{Settings, auth::CronSecret, routes};

/// What every request handler can reach.
#[derive(Debug)]
pub struct AppState {
    /// Enqueues `RefreshViews` and `RepairPipeline`.
    pub producer: Producer,
    /// The repair each cron call asks for, unless `REPAIR_ENABLED=off`.
    pub repair: Option<RepairPipeline>,
    /// The configured cron secret.
    pub secret: CronSecret,
    /// Largest accepted request body.
    pub max_body_bytes: usize,
}

/// A bound, not yet running gateway.
pub struct Application {
    server: actix_web::dev::Server,
    addr: SocketAddr,
}

impl std::fmt::Debug for Application {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Application")
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
}

/// Records request count and latency per route pattern (not per raw path)
/// and per standard method, so a scanner cannot blow up the metric's
/// cardinality.
async fn record_metrics(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    let started = Instant::now();
    let method = tally_service::http::method_label(req.method());
    let route = req.match_pattern().unwrap_or_else(|| "unmatched".to_owned());
    // The request span: a trace starts here and travels on inside the
    // enqueued job.
    let span = tracing::info_span!(
        "http request",
        otel.name = %format!("{method} {route}"),
        otel.kind = "server",
        http.request.method = %method,
        http.route = %route,
        http.response.status_code = tracing::field::Empty,
    );
    // A caller's traceparent is honoured only when the call carries the cron
    // secret: otherwise anyone could attach the gateway's spans, and the jobs
    // they enqueue, to a trace of their choosing. A span's parent is fixed
    // once it starts, so the secret is checked here, ahead of the handler.
    let authenticated = req
        .app_data::<web::Data<AppState>>()
        .is_some_and(|state| state.secret.verify_request(req.headers()));
    if authenticated && let Some(traceparent) = req.headers().get("traceparent").and_then(|v| v.to_str().ok()) {
        tally_telemetry::set_parent_from_traceparent(&span, traceparent);
    }
    let response = next.call(req).instrument(span.clone()).await?;
    span.record("http.response.status_code", response.status().as_u16());
    let status = response.status();
    if status.is_server_error() {
        // An error-level event: the Sentry layer turns it into an event.
        tracing::error!(%status, %method, %route, "cron-gateway answered with a server error");
    }
    let labels = [
        ("route", route),
        ("method", method.to_owned()),
        ("status", status.as_u16().to_string()),
    ];
    metrics::counter!("tally_http_requests_total", &labels).increment(1);
    metrics::histogram!("tally_http_request_duration_seconds", &labels).record(started.elapsed().as_secs_f64());
    Ok(response)
}

impl Application {
    /// Connects to Redis and binds the listener (`BIND_ADDR` port 0 picks a
    /// free port, as tests do). Redis being down at start is not fatal: the
    /// gateway answers 503 until it is back.
    pub async fn build(settings: Settings) -> anyhow::Result<Self> {
        let client = QueueClient::new(&settings.redis_url, QueueConfig::with_prefix(&settings.queue_prefix))?;
        if let Err(e) = client.ping().await {
            tracing::warn!(error = %e, "redis not reachable yet; answering 503 until it is");
        }
        let checks = vec![ReadinessCheck::redis(client.clone())];
        let producer = Producer::new(client);
        if settings.database_url_set {
            // Deployments from before the repair moved still pass it; it is
            // harmless, but whoever reads the log should know it is unused.
            tracing::warn!(
                "DATABASE_URL is set but no longer used: the repair now runs in scoring-worker \
                 (the gateway enqueues a RepairPipeline job); remove it from the gateway's environment"
            );
        }
        let state = web::Data::new(AppState {
            producer,
            repair: settings.repair,
            secret: settings.cron_secret.clone(),
            max_body_bytes: settings.max_body_bytes,
        });
        let server = HttpServer::new(move || {
            App::new()
                .wrap(from_fn(record_metrics))
                .app_data(state.clone())
                .configure(tally_service::health::configure(checks.clone()))
                .service(
                    web::resource("/api/cron/update-stats")
                        .route(web::get().to(routes::update_stats))
                        .route(web::post().to(routes::update_stats))
                        .default_service(web::to(routes::method_not_allowed)),
                )
                .default_service(web::to(routes::not_found))
        })
        .disable_signals()
        .shutdown_timeout(settings.shutdown_timeout.as_secs())
        .bind(settings.bind_addr)
        .map_err(|e| anyhow::anyhow!("cannot listen on BIND_ADDR={}: {e}", settings.bind_addr))?;
        let addr = server.addrs().first().copied().unwrap_or(settings.bind_addr);
        Ok(Application {
            server: server.run(),
            addr,
        })
    }

    /// The bound address (useful when `BIND_ADDR` had port 0).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Serves until `shutdown` resolves, then stops accepting and lets
    /// in-flight requests finish within `SHUTDOWN_TIMEOUT_SECS`.
    pub async fn run_until(self, shutdown: impl Future<Output = ()>) -> std::io::Result<()> {
        tally_service::serve_until(self.server, shutdown).await
    }
}
