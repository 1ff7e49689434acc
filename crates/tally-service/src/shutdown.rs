//! The production shutdown future: resolves on SIGTERM (Kubernetes) or
//! SIGINT (Ctrl-C). Libraries take any future, so tests pass a oneshot.

/// Resolves when the process receives SIGTERM or SIGINT.
pub async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = match signal(SignalKind::terminate()) {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(error = %e, "cannot listen for SIGTERM; only Ctrl-C will stop this process");
            let _ = tokio::signal::ctrl_c().await;
            return;
        }
    };
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM received, shutting down"),
        _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT received, shutting down"),
    }
}

/// Serves an HTTP `server` until `shutdown` resolves, then stops accepting
/// and lets in-flight requests finish within the server's shutdown timeout
/// (`SHUTDOWN_TIMEOUT_SECS` in the services).
pub async fn serve_until(server: actix_web::dev::Server, shutdown: impl Future<Output = ()>) -> std::io::Result<()> {
    let handle = server.handle();
    let server = tokio::spawn(server);
    shutdown.await;
    tracing::info!("stopping: draining in-flight requests");
    handle.stop(true).await;
    server.await.map_err(std::io::Error::other)?
}
