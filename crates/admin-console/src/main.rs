//! admin-console binary: settings, telemetry, serve until SIGTERM/SIGINT.
//! All logic lives in the library (`admin_console::Application`).

use admin_console::{Application, Settings};
use tally_service::shutdown_signal;
use tally_service::startup::{self, Binary};

const ABOUT: &str = "the operator console: a web dashboard and a JSON admin API over tally's queues
(jobs by state, dead-set retry and purge, pause, resume, concurrency limits, workers).";

const HELP: &str = "\
Routes: /  /queues/{queue}  /queues/{queue}/jobs/{id}  /workers  /login   (the dashboard)
        /api/v1/...  (JSON, Authorization: Bearer <token>; see /api/v1/openapi.json)
        /healthz, /readyz, /metrics

Environment:
  ADMIN_TOKEN            required, at least 16 characters: reads and writes
  ADMIN_READ_TOKEN       optional, at least 16 characters: reads only
  REDIS_URL              required: the queues' Redis
  ADMIN_BIND_ADDR        listen address (default 0.0.0.0:8081)
  TALLY_QUEUE_PREFIX     queue key prefix (default tally)
  ADMIN_PUBLIC_ORIGIN    the origin browsers reach the console at, e.g. https://console.example.com
                         (default: writes must come from the Host they were sent to; https sets Secure cookies)
  ADMIN_SESSION_HOURS    how long a browser login lasts (default 12)
  ADMIN_SAMPLE_SECS      how often the counters behind the rates are read (default 5)
  SHUTDOWN_TIMEOUT_SECS  drain time for in-flight requests (default 10)
  RUST_LOG, LOG_FORMAT=text|json, SENTRY_DSN, OTEL_EXPORTER_OTLP_ENDPOINT  telemetry (optional)";

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let binary = Binary {
        name: "admin-console",
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
