//! Plumbing every tally binary shares, so each `main.rs` stays about thirty
//! lines: typed settings read from the environment and validated at start
//! ([`settings`]), a shutdown future for SIGTERM/SIGINT ([`shutdown`]), and
//! the `/healthz`, `/readyz` and `/metrics` endpoints ([`health`]), and the
//! bootstrap both workers share ([`worker`]): connect Redis and Postgres,
//! serve probes, run the queue worker until shutdown, with job metrics,
//! Sentry reports and trace continuation ([`observe`]).

pub mod health;
pub mod http_client;
pub mod observe;
pub mod settings;
pub mod shutdown;
pub mod worker;

pub use health::{HealthServer, ReadinessCheck};
pub use settings::{Env, SettingsError, redact_url};
pub use shutdown::shutdown_signal;
pub use worker::{WorkerDeps, WorkerSettings, run_worker};

/// Initialises telemetry for a binary. Telemetry is never a reason not to
/// run: a failure is reported on stderr and the service goes on without it.
pub fn init_telemetry(service: &'static str) -> Option<tally_telemetry::TelemetryGuard> {
    match tally_telemetry::init(service) {
        Ok(guard) => Some(guard),
        Err(e) => {
            eprintln!("{service}: telemetry disabled: {e}");
            None
        }
    }
}
