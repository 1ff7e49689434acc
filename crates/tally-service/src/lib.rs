//! Plumbing every tally binary shares, so each `main.rs` stays about thirty
//! lines: typed settings read from the environment and validated at start
//! ([`settings`]), a shutdown future for SIGTERM/SIGINT ([`shutdown`]), the
//! `/healthz`, `/readyz` and `/metrics` endpoints ([`health`]), job metrics,
//! Sentry reports and trace continuation ([`observe`]). Every service's
//! `main` goes through [`startup::run`].
//!
//! No PostgreSQL here: the workers' bootstrap, which connects the store and
//! runs the outbox relay, is `tally-worker`; the repair the cron call asks
//! for runs in scoring-worker. So the gateway, which uses only this crate,
//! links no Postgres client.

pub mod args;
pub mod health;
pub mod http;
pub mod observe;
pub mod shutdown;
pub mod startup;

pub use health::{HealthServer, ReadinessCheck};
pub use shutdown::{serve_until, shutdown_signal};
/// The settings reader (`tally-settings`), re-exported for the binaries.
pub use tally_settings as settings;
pub use tally_settings::{Env, REDIS_SCHEMES, SettingsError, redact_url};

/// An error and its causes on one line, each cause once. Many errors print
/// their source inside their own message, so `{e:#}` repeats it ("Connection
/// refused: Connection refused: …"), and some hide it, so plain `{e}` loses
/// it ("error connecting to server"): this walks the chain, drops a part's
/// copy of its cause and any part already said.
pub fn error_line(error: &(dyn std::error::Error + 'static)) -> String {
    let mut parts = Vec::new();
    let mut next: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(e) = next {
        parts.push(e.to_string());
        next = e.source();
    }
    let mut line = String::new();
    for (i, part) in parts.iter().enumerate() {
        let mut own = part.as_str();
        if let Some(cause) = parts.get(i + 1) {
            own = own
                .strip_suffix(cause.as_str())
                .map_or(own, |s| s.trim_end_matches([':', ' ']));
        }
        if own.is_empty() || line.contains(own) {
            continue;
        }
        if !line.is_empty() {
            line.push_str(": ");
        }
        line.push_str(own);
    }
    line
}

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
