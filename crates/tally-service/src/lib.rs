//! Plumbing every tally binary shares, so each `main.rs` stays about thirty
//! lines: typed settings read from the environment and validated at start
//! ([`settings`]), a shutdown future for SIGTERM/SIGINT ([`shutdown`]), and
//! the `/healthz`, `/readyz` and `/metrics` endpoints ([`health`]), and the
//! bootstrap both workers share ([`worker`]): connect Redis and Postgres,
//! serve probes, run the queue worker and the outbox relay ([`outbox`])
//! until shutdown, with job metrics, Sentry reports and trace continuation
//! ([`observe`]); and the repairing safety net the cron call runs
//! ([`repair`]).

pub mod args;
pub mod health;
pub mod http_client;
pub mod observe;
pub mod outbox;
pub mod repair;
pub mod settings;
pub mod shutdown;
pub mod worker;

pub use health::{HealthServer, ReadinessCheck};
pub use settings::{Env, SettingsError, redact_url};
pub use shutdown::shutdown_signal;
pub use worker::{WorkerDeps, WorkerSettings, run_worker};

/// Initialises telemetry for a binary. A bad telemetry setting (`RUST_LOG`,
/// `LOG_FORMAT`, `SENTRY_DSN`, `OTEL_*`) is a bad setting like any other: the
/// caller stops with the error, which names the variable. An unreachable
/// collector or Sentry is not an error: they are only contacted later, in the
/// background.
pub fn init_telemetry(
    service: &'static str,
) -> Result<tally_telemetry::TelemetryGuard, tally_telemetry::TelemetryError> {
    tally_telemetry::init(service)
}
