//! The `admin-console` binary as operators run it: `--help`, one clear line
//! for a missing or bad setting, a clean exit on SIGTERM, and no token in
//! its output, whatever callers send it.

mod common;

use std::process::Command;

use common::{ConsoleProcess, READ_TOKEN, TOKEN, request};

fn run(env: &[(&str, &str)], args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_admin-console"))
        .env_clear()
        .envs(env.iter().copied())
        .args(args)
        .output()
        .expect("runs");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn help_names_every_setting() {
    let (code, stdout, _) = run(&[], &["--help"]);
    assert_eq!(code, 0);
    for name in [
        "ADMIN_TOKEN",
        "ADMIN_READ_TOKEN",
        "REDIS_URL",
        "ADMIN_BIND_ADDR",
        "TALLY_QUEUE_PREFIX",
        "ADMIN_PUBLIC_ORIGIN",
        "ADMIN_SESSION_HOURS",
        "ADMIN_SAMPLE_SECS",
        "SHUTDOWN_TIMEOUT_SECS",
    ] {
        assert!(stdout.contains(name), "--help does not name {name}:\n{stdout}");
    }
    let (code, _, stderr) = run(&[], &["--bogus"]);
    assert_eq!(code, 2, "{stderr}");
}

#[test]
fn a_missing_or_bad_setting_stops_it_with_one_line_naming_the_variable() {
    let redis = ("REDIS_URL", "redis://127.0.0.1:1");
    let cases: &[(&[(&str, &str)], &str)] = &[
        (&[redis], "admin-console: missing setting ADMIN_TOKEN"),
        (
            &[redis, ("ADMIN_TOKEN", "short-secret")],
            "admin-console: invalid setting ADMIN_TOKEN=(hidden)",
        ),
        (&[("ADMIN_TOKEN", TOKEN)], "admin-console: missing setting REDIS_URL"),
        (
            &[redis, ("ADMIN_TOKEN", TOKEN), ("ADMIN_READ_TOKEN", "tiny")],
            "admin-console: invalid setting ADMIN_READ_TOKEN=(hidden)",
        ),
        (
            &[redis, ("ADMIN_TOKEN", TOKEN), ("ADMIN_BIND_ADDR", "everywhere")],
            "admin-console: invalid setting ADMIN_BIND_ADDR",
        ),
    ];
    for (env, line) in cases {
        let (code, _, stderr) = run(env, &[]);
        assert_eq!(code, 2, "{env:?}: {stderr}");
        assert_eq!(stderr.lines().count(), 1, "one line: {stderr}");
        assert!(stderr.starts_with(line), "{env:?}: {stderr}");
        assert!(!stderr.contains("short-secret") && !stderr.contains("tiny"), "{stderr}");
    }
}

/// Every way a token travels (login forms right and wrong, bearer headers
/// right, wrong and read-only, refused writes) and the most verbose log
/// level: neither token, nor a form-encoded copy, appears in the output.
#[tokio::test]
async fn tokens_never_reach_the_logs() {
    let redis = tally_testkit::redis().await;
    for format in ["text", "json"] {
        let console = ConsoleProcess::start(
            &redis.url,
            &redis.namespace,
            &[("RUST_LOG", "trace"), ("LOG_FORMAT", format)],
        )
        .await;
        let addr = console.addr;
        let origin = console.base();
        let form_headers = [
            ("Content-Type", "application/x-www-form-urlencoded"),
            ("Origin", origin.as_str()),
        ];
        for token in [TOKEN, READ_TOKEN, "wrong-token-but-long-enough"] {
            request(addr, "POST", "/login", &form_headers, &format!("token={token}")).await;
            let bearer = format!("Bearer {token}");
            for (method, path) in [
                ("GET", "/api/v1/queues"),
                ("POST", "/api/v1/queues/stats/pause"),
                ("POST", "/api/v1/queues/stats/resume"),
            ] {
                request(addr, method, path, &[("Authorization", bearer.as_str())], "").await;
            }
        }
        let login = request(addr, "POST", "/login", &form_headers, &format!("token={TOKEN}")).await;
        let cookie = login
            .header("set-cookie")
            .and_then(|c| c.split(';').next())
            .expect("cookie")
            .to_owned();
        let r = request(
            addr,
            "POST",
            "/api/v1/queues/stats/pause",
            &[("Cookie", cookie.as_str()), ("Origin", origin.as_str())],
            "",
        )
        .await;
        assert_eq!(r.status, 403, "no CSRF token: {}", r.body);

        let (status, output) = console.stop().await;
        assert!(status.success(), "exit on SIGTERM: {status}\n{output}");
        // The logs are there (so the test would see a leak)...
        for expected in [
            "starting admin-console",
            "browser session started",
            "login refused",
            "queue paused",
            "api request refused",
        ] {
            assert!(
                output.contains(expected),
                "{format}: no {expected:?} in the output:\n{output}"
            );
        }
        // ...and no token is.
        for secret in [TOKEN, READ_TOKEN, "test-admin-token", "test-read-token"] {
            assert!(
                !output.contains(secret),
                "{format}: the output holds {secret:?}:\n{output}"
            );
        }
    }
}
