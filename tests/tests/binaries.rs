//! The binaries' own contract: settings validated at start with one clear
//! line and a non-zero exit, `--help`, and the gateway answering over real
//! HTTP from its own process.

use std::process::Command;

use tally_cli::services::bin_dir;
use tally_e2e::{SECRET, Stack, StackOptions};
use tally_service::http_client::request;

fn run(binary: &str, env: &[(&str, &str)], args: &[&str]) -> std::process::Output {
    let path = bin_dir().join(binary);
    assert!(
        path.exists(),
        "{} not found: run `cargo build --bins` first",
        path.display()
    );
    Command::new(path)
        .env_clear()
        .envs(env.iter().copied())
        .args(args)
        .output()
        .expect("runs")
}

#[test]
fn bad_settings_stop_each_binary_with_one_line_naming_the_variable() {
    /// (binary, environment, what its one stderr line must say)
    type Case<'a> = (&'a str, &'a [(&'a str, &'a str)], &'a str);
    let cases: [Case; 7] = [
        (
            "scoring-worker",
            &[("DATABASE_URL", "postgres://x/y"), ("SENTRY_DSN", "nonsense")],
            "invalid SENTRY_DSN",
        ),
        (
            "cron-gateway",
            &[("CRON_SECRET", "0123456789abcdef0"), ("LOG_FORMAT", "xml")],
            "LOG_FORMAT",
        ),
        ("cron-gateway", &[], "missing setting CRON_SECRET"),
        (
            "cron-gateway",
            &[("CRON_SECRET", "short")],
            "invalid setting CRON_SECRET=(hidden): must be at least 16",
        ),
        ("scoring-worker", &[], "missing setting DATABASE_URL"),
        (
            "stats-worker",
            &[("DATABASE_URL", "postgres://x/y"), ("WORKER_CONCURRENCY", "lots")],
            "WORKER_CONCURRENCY",
        ),
        (
            "stats-worker",
            &[("DATABASE_URL", "postgres://x/y"), ("HEALTH_ADDR", "nine")],
            "HEALTH_ADDR",
        ),
    ];
    for (binary, env, expected) in cases {
        let out = run(binary, env, &[]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{binary} {env:?}: {stderr}");
        assert_eq!(stderr.lines().count(), 1, "{binary}: one line, got {stderr}");
        assert!(stderr.contains(expected), "{binary}: {stderr}");
        assert!(!stderr.contains("short\""), "the secret value is never shown: {stderr}");
    }
}

#[test]
fn every_binary_has_help() {
    for binary in ["cron-gateway", "scoring-worker", "stats-worker", "tally"] {
        let out = run(binary, &[], &["--help"]);
        assert!(out.status.success(), "{binary} --help");
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(text.contains("REDIS_URL") || binary == "tally", "{binary}: {text}");
    }
}

#[tokio::test]
async fn the_gateway_process_serves_the_cron_contract() {
    let mut stack = Stack::new(StackOptions::default()).await.expect("stack");
    stack.start("cron-gateway", "cron-gateway").await.expect("gateway");
    let addr = stack.service("cron-gateway").addr;
    let auth = format!("Bearer {SECRET}");
    let ok = request(
        addr,
        "POST",
        "/api/cron/update-stats?scope=leaderboard",
        &[("Authorization", &auth)],
        b"",
    )
    .await
    .expect("response");
    assert_eq!(ok.status, 200, "{}", ok.body);
    assert_eq!(ok.json()["scope"], "leaderboard");
    let denied = request(
        addr,
        "POST",
        "/api/cron/update-stats",
        &[("Authorization", "Bearer nope")],
        b"",
    )
    .await
    .expect("response");
    assert_eq!(denied.status, 401);
    let stats = stack.admin.stats("stats").await.expect("stats");
    assert_eq!(stats.ready, 1, "one refresh enqueued, none for the refused call");
    let log = stack.service("cron-gateway").log_tail(200);
    assert!(!log.contains(SECRET), "the secret must never reach the logs");
    stack.stop_cleanly().await;
}

#[tokio::test]
async fn without_collector_or_dsn_a_service_starts_with_one_telemetry_line_and_no_warnings() {
    let mut stack = Stack::new(StackOptions::default()).await.expect("stack");
    stack
        .start_services(&[("stats-worker", "stats-worker"), ("cron-gateway", "cron-gateway")])
        .await;
    stack.stop_cleanly().await;
    for name in ["stats-worker", "cron-gateway"] {
        let log = stack.service(name).log_tail(1000);
        let telemetry: Vec<&str> = log.lines().filter(|l| l.to_lowercase().contains("telemetry")).collect();
        assert_eq!(telemetry.len(), 1, "{name}: one telemetry line:\n{log}");
        assert!(telemetry[0].contains("INFO"), "{name}: {}", telemetry[0]);
        let noisy: Vec<&str> = log
            .lines()
            .filter(|l| l.contains("WARN") || l.contains("ERROR"))
            .collect();
        assert!(
            noisy.is_empty(),
            "{name}: warnings or errors in a clean start and stop:\n{}",
            noisy.join("\n")
        );
    }
}
