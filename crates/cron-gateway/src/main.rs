//! cron-gateway binary: settings, telemetry, serve until SIGTERM/SIGINT.
//! All logic lives in the library (`cron_gateway::Application`).

use cron_gateway::{Application, Settings};
use tally_service::shutdown_signal;
use tally_service::startup::{self, Binary};

const ABOUT: &str = "the endpoint the Kubernetes CronJob calls to refresh leaderboards and standings
and to ask scoring-worker to repair work that got lost between PostgreSQL and Redis.";

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
  REPAIR_ENABLED         on|off: each cron call also enqueues a RepairPipeline job (default on)
  REPAIR_GRACE_SECS      the repair leaves work marked more recently than this: in flight, not lost (default 120)
  REPAIR_BATCH           the repair handles at most this many matches per run (default 200)
  RUST_LOG, LOG_FORMAT=text|json, SENTRY_DSN, OTEL_EXPORTER_OTLP_ENDPOINT  telemetry (optional)

A 200 answer: success, scope, jobId and deduplicated (the RefreshViews job), timestamp, and
repair: {jobId, deduplicated} (the RepairPipeline job; absent with REPAIR_ENABLED=off).
The repair runs in scoring-worker, not here: what it found is in scoring-worker's log line
(\"repair: ...\") and its tally_repair_* metrics. DATABASE_URL is not read (if set, the
gateway says so once at start and ignores it); the gateway needs Redis only.";

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
