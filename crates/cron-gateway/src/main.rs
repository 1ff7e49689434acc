//! cron-gateway binary: settings, telemetry, serve until SIGTERM/SIGINT.
//! All logic lives in the library (`cron_gateway::Application`).

use cron_gateway::{Application, Settings};
use tally_service::shutdown_signal;
use tally_service::startup::{self, Binary};

const ABOUT: &str = "the endpoint the Kubernetes CronJob calls to refresh leaderboards and standings
(and, with a database, to repair work that got lost between PostgreSQL and Redis).";

const HELP: &str = "\
Routes: GET|POST /api/cron/update-stats[?scope=all|leaderboard|standings] (Authorization: Bearer <CRON_SECRET>),
        /healthz, /readyz, /metrics

Environment:
  CRON_SECRET            required, at least 16 characters
  BIND_ADDR              listen address (default 0.0.0.0:8080)
  REDIS_URL              queue Redis (default redis://127.0.0.1:6379)
  TALLY_QUEUE_PREFIX     queue key prefix (default tally)
  MAX_BODY_BYTES         larger bodies get 413 (default 4096)
  SHUTDOWN_TIMEOUT_SECS  drain time for in-flight requests (default 10)
  DATABASE_URL           PostgreSQL (optional): each cron call then also repairs lost work
  REPAIR_GRACE_SECS      work marked more recently than this is in flight, not lost (default 120)
  REPAIR_BATCH           at most this many matches repaired per call (default 200)
  RUST_LOG, LOG_FORMAT=text|json, SENTRY_DSN, OTEL_EXPORTER_OTLP_ENDPOINT  telemetry (optional)";

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let binary = Binary {
        name: "cron-gateway",
        about: ABOUT,
        help: HELP,
    };
    startup::run(binary, Settings::from_env, Settings::summary, |settings| async move {
        let app = Application::build(settings).await?;
        tracing::info!(addr = %app.addr(), "listening");
        app.run_until(shutdown_signal()).await?;
        Ok(())
    })
    .await
}
