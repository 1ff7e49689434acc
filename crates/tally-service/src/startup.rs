//! The one start-up path of every service binary, so the gateway and both
//! workers behave alike from the first line: `--help`, `--version`, a usage
//! error (exit 2) for any other argument, settings read and checked (exit 2
//! with one line naming the variable), telemetry, a `starting` line with the
//! settings' summary, then the service until it returns (exit 0) or fails
//! (exit 1, the cause reported once: see
//! [`tally_telemetry::TelemetryGuard::report_fatal`]).

use std::future::Future;
use std::process::ExitCode;

use crate::{Env, SettingsError};

/// What a binary says of itself in `--help`.
#[derive(Debug, Clone, Copy)]
pub struct Binary<'a> {
    /// The binary's name, the prefix of every line it prints itself.
    pub name: &'static str,
    /// One sentence: what it does.
    pub about: &'a str,
    /// The routes and environment variables it reads.
    pub help: &'a str,
}

/// Runs a service binary's `main`: see the module documentation.
/// `settings` reads the environment, `summary` describes what was read
/// (secrets hidden), `run` is the service itself.
pub async fn run<S, Fut>(
    binary: Binary<'_>,
    settings: impl FnOnce(&Env) -> Result<S, SettingsError>,
    summary: impl FnOnce(&S) -> String,
    run: impl FnOnce(S) -> Fut,
) -> ExitCode
where
    Fut: Future<Output = anyhow::Result<()>>,
{
    let Binary { name, about, help } = binary;
    if let Some(code) = crate::args::handle(name, about, help) {
        return code;
    }
    let settings = match settings(&Env::process()) {
        Ok(settings) => settings,
        Err(e) => {
            eprintln!("{name}: {e}");
            return ExitCode::from(2);
        }
    };
    let telemetry = match crate::init_telemetry(name) {
        Ok(guard) => guard,
        Err(e) => {
            eprintln!("{name}: {e}");
            return ExitCode::from(2);
        }
    };
    tracing::info!(settings = %summary(&settings), "starting {name}");
    match run(settings).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            telemetry.report_fatal(name, &crate::error_line(e.as_ref()));
            ExitCode::FAILURE
        }
    }
}
