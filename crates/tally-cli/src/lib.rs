//! `tally`: the operator's and developer's command line.
//!
//! - [`cli`]: the arguments (clap), with `--json` where a script would want it;
//! - [`commands`]: migrate, seed, match finish, queue stats and dead-set
//!   repair, leaderboard, standings, enqueue;
//! - [`demo`]: a whole matchday through the real services;
//! - [`services`]: starting the service binaries as child processes (used by
//!   the demo and the end-to-end tests);
//! - [`output`]: tables and a progress bar for humans.

pub mod bench;
pub mod cli;
pub mod commands;
pub mod demo;
pub mod output;
pub mod services;

pub use cli::Cli;

/// An error in how the command was called (a missing setting), which `main`
/// reports with exit code 2 like clap's own usage errors.
#[derive(Debug)]
pub struct UsageError(pub String);

impl std::fmt::Display for UsageError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for UsageError {}

/// An error and its causes on one line, each cause once (see
/// [`tally_service::error_line`]).
pub fn error_line(error: &anyhow::Error) -> String {
    tally_service::error_line(error.as_ref())
}

/// Runs one parsed command line.
///
/// Telemetry is set up only when it would send something (trace export on,
/// by the same reading of the `OTEL_*` variables the services make, so
/// `OTEL_SDK_DISABLED=true` switches it off; or a Sentry DSN), so everyday
/// use prints no log noise; then a command runs inside a `tally <command>`
/// span, which is where the trace of a recorded result starts.
pub async fn run(cli: Cli) -> anyhow::Result<()> {
    let settings = tally_telemetry::Settings::from_env()?;
    let exporting = settings.otlp_endpoint.is_some() || settings.sentry_dsn.is_some();
    let _telemetry = if exporting {
        Some(tally_service::init_telemetry("tally")?)
    } else {
        None
    };
    let span = tracing::info_span!("tally command", otel.name = %format!("tally {}", cli.command.name()));
    tracing::Instrument::instrument(commands::dispatch(cli), span).await
}
