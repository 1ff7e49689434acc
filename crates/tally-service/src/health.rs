//! `/healthz`, `/readyz` and `/metrics` for every service.
//!
//! Workers serve these on `HEALTH_ADDR`; the gateway mounts the same routes
//! next to its API with [`configure`]. `/healthz` only says the process
//! answers (Kubernetes restarts it otherwise); `/readyz` runs the readiness
//! checks (Redis and Postgres reachable) and answers 503 naming the failing
//! one, so a pod whose dependencies are away leaves the Service without being
//! restarted.

use std::{net::SocketAddr, sync::Arc, time::Duration};

use actix_web::{App, HttpResponse, HttpServer, dev::ServerHandle, web};
use futures::future::BoxFuture;
use serde_json::json;

/// One dependency check for `/readyz`.
#[derive(Clone)]
pub struct ReadinessCheck {
    name: &'static str,
    check: Arc<dyn Fn() -> BoxFuture<'static, Result<(), String>> + Send + Sync>,
}

impl std::fmt::Debug for ReadinessCheck {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReadinessCheck")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

impl ReadinessCheck {
    /// A named check; `check` is called on every `/readyz` request.
    pub fn new<F>(name: &'static str, check: F) -> Self
    where
        F: Fn() -> BoxFuture<'static, Result<(), String>> + Send + Sync + 'static,
    {
        ReadinessCheck {
            name,
            check: Arc::new(check),
        }
    }
}

impl ReadinessCheck {
    /// Redis answers `PING` (see [`tally_queue::QueueClient::ping`]).
    pub fn redis(client: tally_queue::QueueClient) -> Self {
        ReadinessCheck::new("redis", move || {
            let client = client.clone();
            Box::pin(async move { client.ping().await.map_err(|e| e.to_string()) })
        })
    }
}

/// How long one readiness check may take before it counts as failed.
const CHECK_TIMEOUT: Duration = Duration::from_secs(2);

async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(json!({ "status": "ok" }))
}

async fn readyz(checks: web::Data<Vec<ReadinessCheck>>) -> HttpResponse {
    let results = futures::future::join_all(checks.iter().map(|c| async move {
        let outcome = match tokio::time::timeout(CHECK_TIMEOUT, (c.check)()).await {
            Ok(result) => result,
            Err(_) => Err(format!("no answer within {}s", CHECK_TIMEOUT.as_secs())),
        };
        (c.name, outcome)
    }))
    .await;
    let failed: serde_json::Map<String, serde_json::Value> = results
        .into_iter()
        .filter_map(|(name, r)| r.err().map(|e| (name.to_owned(), e.into())))
        .collect();
    if failed.is_empty() {
        HttpResponse::Ok().json(json!({ "status": "ready" }))
    } else {
        HttpResponse::ServiceUnavailable().json(json!({ "status": "unavailable", "failed": failed }))
    }
}

async fn metrics() -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4; charset=utf-8")
        .body(tally_telemetry::render_metrics())
}

/// Mounts `/healthz`, `/readyz` and `/metrics` on an actix-web app.
pub fn configure(checks: Vec<ReadinessCheck>) -> impl FnOnce(&mut web::ServiceConfig) {
    move |cfg| {
        cfg.app_data(web::Data::new(checks))
            .route("/healthz", web::get().to(healthz))
            .route("/readyz", web::get().to(readyz))
            .route("/metrics", web::get().to(metrics));
    }
}

/// A small HTTP server for a worker's probes and metrics.
#[derive(Debug)]
pub struct HealthServer {
    handle: ServerHandle,
    addr: SocketAddr,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
}

impl HealthServer {
    /// Binds `addr` (port 0 picks a free one) and serves in the background.
    pub fn start(addr: SocketAddr, checks: Vec<ReadinessCheck>) -> std::io::Result<Self> {
        let server = HttpServer::new(move || App::new().configure(configure(checks.clone())))
            .workers(1)
            .disable_signals()
            .shutdown_timeout(1)
            .bind(addr)?;
        let addr = server.addrs().first().copied().unwrap_or(addr);
        let server = server.run();
        let handle = server.handle();
        let task = tokio::spawn(server);
        Ok(HealthServer { handle, addr, task })
    }

    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops the server.
    pub async fn stop(self) {
        self.handle.stop(true).await;
        let _ = self.task.await;
    }
}
