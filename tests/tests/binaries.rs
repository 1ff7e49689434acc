//! The binaries' own contract: settings validated at start with one clear
//! line and a non-zero exit, `--help`, and the gateway answering over real
//! HTTP from its own process.

use std::process::Command;

use tally_cli::services::bin_dir;
use tally_e2e::{SECRET, Stack, StackOptions};
use tally_testkit::http::request;

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
            &[("CRON_SECRET", "s3cr3t-val")],
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
        // In no form: quoted, after `=`, or bare.
        assert!(
            !stderr.contains("s3cr3t-val"),
            "the secret value is never shown: {stderr}"
        );
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
    // The gateway names its repair settings and where the repair runs.
    let text = String::from_utf8_lossy(&run("cron-gateway", &[], &["--help"]).stdout).into_owned();
    for word in [
        "REPAIR_ENABLED",
        "REPAIR_GRACE_SECS",
        "REPAIR_BATCH",
        "scoring-worker",
        "tally_repair_",
    ] {
        assert!(text.contains(word), "cron-gateway --help names {word}: {text}");
    }
}

/// Like [`run`], but a binary still running after 10 s (it started the
/// service instead of refusing its arguments) is killed and reported as such.
fn run_briefly(binary: &str, env: &[(&str, &str)], args: &[&str]) -> std::process::Output {
    use std::process::Stdio;
    let mut child = Command::new(bin_dir().join(binary))
        .env_clear()
        .envs(env.iter().copied())
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("runs");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while child.try_wait().expect("waits").is_none() {
        if std::time::Instant::now() > deadline {
            child.kill().expect("kills");
            let out = child.wait_with_output().expect("collects");
            panic!(
                "{binary} {args:?} started the service instead of stopping: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    child.wait_with_output().expect("collects")
}

#[test]
fn unknown_arguments_are_a_usage_error_and_never_start_a_service() {
    // A full environment: were an argument ignored, the binary would start
    // (and a worker would process real jobs); `--bogus` must stop it first.
    // Nothing listens on port 1, so a started binary would not exit 2 with
    // the usage line.
    let env: &[(&str, &str)] = &[
        ("DATABASE_URL", "postgres://tally@127.0.0.1:1/none"),
        ("REDIS_URL", "redis://127.0.0.1:1"),
        ("CRON_SECRET", "0123456789abcdef0"),
        ("HEALTH_ADDR", "127.0.0.1:0"),
        ("BIND_ADDR", "127.0.0.1:0"),
    ];
    for binary in ["cron-gateway", "scoring-worker", "stats-worker"] {
        for args in [&["--bogus"][..], &["run"], &["--help", "extra"]] {
            let out = run_briefly(binary, env, args);
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert_eq!(out.status.code(), Some(2), "{binary} {args:?}: {stderr}");
            assert_eq!(stderr.lines().count(), 1, "{binary} {args:?}: one line, got {stderr}");
            assert!(
                stderr.starts_with(&format!("{binary}: unexpected argument")) && stderr.contains("--help"),
                "{binary} {args:?}: {stderr}"
            );
            assert!(out.stdout.is_empty(), "{binary} {args:?}: nothing on stdout");
        }
        for flag in ["--version", "-V"] {
            let out = run_briefly(binary, env, &[flag]);
            let stdout = String::from_utf8_lossy(&out.stdout);
            assert_eq!(out.status.code(), Some(0), "{binary} {flag}: {stdout}");
            assert_eq!(
                stdout.trim(),
                format!("{binary} {}", env!("CARGO_PKG_VERSION")),
                "{binary} {flag}"
            );
            assert!(
                out.stderr.is_empty(),
                "{binary} {flag}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let out = run(binary, env, &["--help"]);
        let text = String::from_utf8_lossy(&out.stdout);
        assert_eq!(out.status.code(), Some(0), "{binary} --help");
        for word in ["Usage:", "Environment:", "REDIS_URL", "--version"] {
            assert!(text.contains(word), "{binary} --help names {word}: {text}");
        }
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
async fn a_gateway_given_a_database_url_starts_says_once_that_it_is_unused_and_serves() {
    let mut stack = Stack::new(StackOptions::default()).await.expect("stack");
    let url = stack.database_url.clone();
    stack
        .start_with("cron-gateway", "cron-gateway", &[("DATABASE_URL", url.as_str())])
        .await
        .expect("gateway starts");
    let answer = stack.cron("cron-gateway").await.expect("cron");
    assert!(answer["repair"]["jobId"].is_string(), "{answer}");
    stack.stop_cleanly().await;
    let log = stack.service("cron-gateway").log_tail(1000);
    let noisy: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("WARN") || l.contains("ERROR"))
        .collect();
    assert_eq!(noisy.len(), 1, "one warning:\n{log}");
    assert!(
        noisy[0].contains("DATABASE_URL") && noisy[0].contains("repair now runs in scoring-worker"),
        "{}",
        noisy[0]
    );
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

/// A service that cannot start says why once: with text logs the line
/// `name: cause` alone (not also as a log line), with JSON logs one JSON
/// `error` event (what a log collector reads) and no plain copy.
#[test]
fn a_taken_port_names_the_setting_once() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = taken.local_addr().expect("addr").to_string();
    // (binary, the setting that names the taken address, the other required one)
    let cases = [
        ("cron-gateway", "BIND_ADDR", ("CRON_SECRET", "0123456789abcdef0")),
        (
            "scoring-worker",
            "HEALTH_ADDR",
            ("DATABASE_URL", "postgres://tally@127.0.0.1:1/none"),
        ),
    ];
    for (binary, setting, required) in cases {
        for format in ["text", "json"] {
            let all = [
                required,
                (setting, addr.as_str()),
                ("REDIS_URL", "redis://127.0.0.1:1"),
                ("LOG_FORMAT", format),
                ("OUTBOX_RELAY", "off"),
            ];
            let out = run_briefly(binary, &all, &[]);
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert_eq!(out.status.code(), Some(1), "{binary} {format}: {stderr}");
            let cause = format!("{setting}={addr}");
            let lines: Vec<&str> = stderr.lines().filter(|l| l.contains(&cause)).collect();
            assert_eq!(lines.len(), 1, "{binary} {format}: the cause once, got:\n{stderr}");
            let line = lines[0];
            assert_eq!(line.matches("Address already in use").count(), 1, "{line}");
            if format == "text" {
                assert!(line.starts_with(&format!("{binary}: ")), "{line}");
            } else {
                let event: serde_json::Value = serde_json::from_str(line).expect("a JSON log line");
                assert_eq!(event["level"], "ERROR", "{line}");
            }
        }
    }
}

#[test]
fn a_worker_warns_at_start_when_postgres_is_unreachable() {
    use std::io::BufRead as _;
    use std::process::Stdio;
    let mut child = Command::new(bin_dir().join("scoring-worker"))
        .env_clear()
        .envs([
            ("DATABASE_URL", "postgres://tally@127.0.0.1:1/none"),
            ("REDIS_URL", "redis://127.0.0.1:1"),
            ("HEALTH_ADDR", "127.0.0.1:0"),
            ("OUTBOX_RELAY", "off"),
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("runs");
    let stderr = child.stderr.take().expect("stderr");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stderr).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
    let mut seen = Vec::new();
    let found = loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        match rx.recv_timeout(left) {
            // With the cause, once.
            Ok(line) if line.contains("WARN") && line.contains("PostgreSQL not reachable") => {
                assert_eq!(line.matches("Connection refused").count(), 1, "{line}");
                break true;
            }
            Ok(line) => seen.push(line),
            Err(_) => break false,
        }
    };
    let _ = child.kill();
    let _ = child.wait();
    assert!(found, "no warning about PostgreSQL at start: {seen:#?}");
}
