//! With no collector and no DSN configured, starting telemetry prints exactly
//! one line (the `info` line saying what is on) and no warning or error.
//!
//! The check needs the child's stderr, so the test re-runs this test binary
//! as a child process with a clean telemetry environment and reads it.

use std::process::Command;

/// Set in the child's environment.
const CHILD: &str = "TALLY_TELEMETRY_QUIET_CHILD";

#[test]
fn no_collector_and_no_dsn_means_one_info_line() {
    if std::env::var_os(CHILD).is_some() {
        let guard = tally_telemetry::init("quiet-test").expect("init");
        assert!(!guard.otlp_enabled() && !guard.sentry_enabled());
        drop(guard);
        return;
    }

    let exe = std::env::current_exe().expect("test binary path");
    let mut command = Command::new(exe);
    command
        .args([
            "--exact",
            "no_collector_and_no_dsn_means_one_info_line",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD, "1")
        .env("RUST_LOG", "info")
        .env("LOG_FORMAT", "text");
    for (name, _) in std::env::vars_os() {
        let name = name.to_string_lossy().into_owned();
        if name.starts_with("OTEL_") || name.starts_with("SENTRY_") {
            command.env_remove(name);
        }
    }
    let output = command.output().expect("run the child");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "child failed:\n{stderr}");

    // libtest's own chatter goes to stdout; log lines go to stderr.
    let lines: Vec<&str> = stderr.lines().filter(|line| !line.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "expected one startup line, got:\n{stderr}");
    assert!(
        lines[0].contains("INFO") && lines[0].contains("telemetry initialised"),
        "{stderr}"
    );
    assert!(
        lines[0].contains(r#"otlp_traces="off""#) && lines[0].contains(r#"sentry="off""#),
        "{stderr}"
    );
}
