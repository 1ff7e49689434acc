//! Who may do what, over real HTTP: bearer tokens (missing, wrong,
//! read-only), the browser login and its cookie, CSRF tokens and the
//! `Origin` check on browser writes, and pages without a session.

mod common;

use common::{Console, READ_TOKEN, TOKEN, settings};
use serde_json::json;

/// Request headers, as a table of cases lists them.
type Headers<'a> = &'a [(&'a str, &'a str)];

async fn paused(console: &Console) -> bool {
    console.admin.control("stats").await.expect("control").paused
}

#[tokio::test]
async fn the_api_needs_a_valid_token_before_anything_else() {
    let console = Console::start().await;
    let wrong = format!("Bearer {}x", &TOKEN[..TOKEN.len() - 1]);
    for headers in [
        vec![],
        vec![("Authorization", wrong.as_str())],
        vec![("Authorization", "Bearer ")],
        vec![("Authorization", "Basic dGVzdDp0ZXN0")],
        vec![("Authorization", TOKEN)],
        vec![("Cookie", "tally_admin_session=w.1.00")],
    ] {
        // Known routes, unknown ones, reads and writes alike: 401 first.
        for (method, path) in [
            ("GET", "/api/v1/queues"),
            ("GET", "/api/v1/openapi.json"),
            ("GET", "/api/v1/no-such-route"),
            ("POST", "/api/v1/queues/stats/pause"),
            ("PUT", "/api/v1/queues/nope/limit"),
        ] {
            let r = console.call(method, path, &headers, "").await;
            assert_eq!(r.status, 401, "{method} {path} {headers:?}: {}", r.body);
            assert_eq!(r.header("www-authenticate"), Some("Bearer"));
            assert!(
                r.json()["error"].as_str().is_some_and(|e| e.contains("token")),
                "{}",
                r.body
            );
        }
    }
    assert!(!paused(&console).await);
    // The probes need no token.
    for probe in ["/healthz", "/readyz", "/metrics"] {
        assert_eq!(console.call("GET", probe, &[], "").await.status, 200, "{probe}");
    }
    // Requests are counted per route pattern, under the console's own
    // metric names (the gateway's alerts read tally_http_*).
    let metrics = console.call("GET", "/metrics", &[], "").await.body;
    let refused = tally_testkit::prometheus::sum(
        &metrics,
        "tally_admin_http_requests_total",
        &[("route", "/api/v1/queues/{queue}/pause"), ("status", "401")],
    );
    assert!(refused.is_some_and(|n| n >= 6.0), "{metrics}");
    console.stop().await;
}

#[tokio::test]
async fn the_read_only_token_reads_but_cannot_change_anything() {
    let console = Console::start().await;
    common::dead_jobs(&console, 1).await;
    for path in [
        "/api/v1/queues",
        "/api/v1/queues/scoring/jobs?state=dead",
        "/api/v1/workers",
    ] {
        assert_eq!(console.bearer(READ_TOKEN, "GET", path, "").await.status, 200, "{path}");
    }
    for (method, path, body) in [
        ("POST", "/api/v1/queues/stats/pause", ""),
        ("POST", "/api/v1/queues/stats/resume", ""),
        ("PUT", "/api/v1/queues/stats/limit", r#"{"limit":1}"#),
        ("POST", "/api/v1/queues/scoring/dead/retry", r#"{"all":true}"#),
        ("POST", "/api/v1/queues/scoring/dead/purge", r#"{"all":true}"#),
    ] {
        let r = console.bearer(READ_TOKEN, method, path, body).await;
        assert_eq!(r.status, 403, "{method} {path}: {}", r.body);
        assert!(
            r.json()["error"].as_str().is_some_and(|e| e.contains("read-only")),
            "{}",
            r.body
        );
    }
    let control = console.admin.control("stats").await.expect("control");
    assert!(!control.paused && control.limit.is_none(), "{control:?}");
    assert_eq!(
        console.admin.stats("scoring").await.expect("stats").dead,
        1,
        "still dead"
    );
    console.stop().await;
}

#[tokio::test]
async fn a_browser_login_sets_a_strict_http_only_cookie_that_is_not_the_token() {
    let console = Console::start().await;
    let origin = console.base();
    let form = |token: &str| format!("token={token}&next=%2Fworkers");
    let headers = [
        ("Content-Type", "application/x-www-form-urlencoded"),
        ("Origin", origin.as_str()),
    ];
    let wrong = console
        .call("POST", "/login", &headers, &form("wrong-token-0123456789"))
        .await;
    assert_eq!(wrong.status, 401, "{}", wrong.body);
    assert!(wrong.header("set-cookie").is_none());
    assert!(wrong.body.contains("That token is not valid"), "{}", wrong.body);

    let r = console.call("POST", "/login", &headers, &form(TOKEN)).await;
    assert_eq!(r.status, 303, "{}", r.body);
    assert_eq!(r.header("location"), Some("/workers"), "back where the login began");
    let cookie = r.header("set-cookie").expect("cookie");
    for attribute in ["HttpOnly", "SameSite=Strict", "Path=/", "Max-Age=3600"] {
        assert!(cookie.contains(attribute), "{cookie}");
    }
    assert!(!cookie.contains(TOKEN) && !cookie.contains("test-admin"), "{cookie}");

    // A login form posted from another site is refused.
    let evil = [
        ("Content-Type", "application/x-www-form-urlencoded"),
        ("Origin", "http://evil.example"),
    ];
    let r = console.call("POST", "/login", &evil, &form(TOKEN)).await;
    assert_eq!(r.status, 403, "{}", r.body);
    assert!(r.header("set-cookie").is_none());

    // The session reads the API; the next never leaves the site.
    let session = console.login(TOKEN).await;
    let r = console
        .call("GET", "/api/v1/queues", &[("Cookie", session.cookie.as_str())], "")
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let r = console
        .call(
            "POST",
            "/login",
            &headers,
            &format!("token={TOKEN}&next=%2F%2Fevil.example%2F"),
        )
        .await;
    assert_eq!(r.header("location"), Some("/"));
    console.stop().await;
}

#[tokio::test]
async fn browser_writes_need_the_csrf_token_and_this_origin() {
    let console = Console::start().await;
    let session = console.login(TOKEN).await;
    let origin = console.base();
    let cookie = session.cookie.as_str();
    let csrf = session.csrf.as_str();
    let cases: &[(Headers, u16, &str)] = &[
        (&[("Cookie", cookie), ("Origin", origin.as_str())], 403, "CSRF"),
        (
            &[
                ("Cookie", cookie),
                ("Origin", origin.as_str()),
                ("X-CSRF-Token", "0000"),
            ],
            403,
            "CSRF",
        ),
        (&[("Cookie", cookie), ("X-CSRF-Token", csrf)], 403, "cross-origin"),
        (
            &[
                ("Cookie", cookie),
                ("Origin", "http://evil.example"),
                ("X-CSRF-Token", csrf),
            ],
            403,
            "cross-origin",
        ),
        (
            &[("Cookie", cookie), ("Origin", "null"), ("X-CSRF-Token", csrf)],
            403,
            "cross-origin",
        ),
    ];
    for (headers, status, error) in cases {
        let r = console.call("POST", "/api/v1/queues/stats/pause", headers, "").await;
        assert_eq!(r.status, *status, "{headers:?}: {}", r.body);
        assert!(
            r.json()["error"].as_str().is_some_and(|e| e.contains(error)),
            "{}",
            r.body
        );
        assert!(!paused(&console).await, "{headers:?} must change nothing");
    }
    // Another session's CSRF token does not do either.
    let other = console.login(TOKEN).await;
    if other.csrf != session.csrf {
        let r = console
            .call(
                "POST",
                "/api/v1/queues/stats/pause",
                &[
                    ("Cookie", cookie),
                    ("Origin", origin.as_str()),
                    ("X-CSRF-Token", other.csrf.as_str()),
                ],
                "",
            )
            .await;
        assert_eq!(r.status, 403, "{}", r.body);
    }

    let ok = [("Cookie", cookie), ("Origin", origin.as_str()), ("X-CSRF-Token", csrf)];
    let r = console.call("POST", "/api/v1/queues/stats/pause", &ok, "").await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json(), json!({ "paused": true, "limit": null }));
    assert!(paused(&console).await);

    // A read-only session with its CSRF token is still read-only.
    let read = console.login(READ_TOKEN).await;
    let headers = [
        ("Cookie", read.cookie.as_str()),
        ("Origin", origin.as_str()),
        ("X-CSRF-Token", read.csrf.as_str()),
    ];
    let r = console.call("POST", "/api/v1/queues/stats/resume", &headers, "").await;
    assert_eq!(r.status, 403, "{}", r.body);
    assert!(
        r.json()["error"].as_str().is_some_and(|e| e.contains("read-only")),
        "{}",
        r.body
    );
    assert!(paused(&console).await);
    console.stop().await;
}

#[tokio::test]
async fn a_public_origin_is_the_only_origin_writes_may_come_from() {
    let redis = tally_testkit::redis().await;
    let mut s = settings(&redis.url, &redis.namespace);
    s.public_origin = Some("https://console.example.com".into());
    s.secure_cookie = true;
    let console = Console::start_with(s).await;
    let form = format!("token={TOKEN}");
    let r = console
        .call(
            "POST",
            "/login",
            &[
                ("Content-Type", "application/x-www-form-urlencoded"),
                ("Origin", "https://console.example.com"),
            ],
            &form,
        )
        .await;
    assert_eq!(r.status, 303, "{}", r.body);
    let set_cookie = r.header("set-cookie").expect("cookie").to_owned();
    assert!(set_cookie.contains("; Secure"), "{set_cookie}");
    let cookie = set_cookie.split(';').next().expect("cookie").to_owned();
    let page = console.call("GET", "/", &[("Cookie", cookie.as_str())], "").await;
    let csrf = page
        .body
        .split(r#"<meta name="csrf-token" content=""#)
        .nth(1)
        .and_then(|r| r.split('"').next())
        .expect("csrf")
        .to_owned();
    let host_origin = console.base();
    for (origin, status) in [(host_origin.as_str(), 403), ("https://console.example.com", 200)] {
        let r = console
            .call(
                "POST",
                "/api/v1/queues/stats/pause",
                &[
                    ("Cookie", cookie.as_str()),
                    ("Origin", origin),
                    ("X-CSRF-Token", csrf.as_str()),
                ],
                "",
            )
            .await;
        assert_eq!(r.status, status, "{origin}: {}", r.body);
    }
    console.stop().await;
}

#[tokio::test]
async fn pages_without_a_session_show_the_login_page_and_no_data() {
    let console = Console::start().await;
    common::dead_jobs(&console, 1).await;
    for (path, next) in [
        ("/", "%2F"),
        ("/queues/scoring?state=dead", "%2Fqueues%2Fscoring%3Fstate%3Ddead"),
        ("/queues/scoring/jobs/dead-0", "%2Fqueues%2Fscoring%2Fjobs%2Fdead-0"),
        ("/workers", "%2Fworkers"),
    ] {
        for cookie in [
            None,
            Some("tally_admin_session=w.99999999999.abcdef"),
            Some("tally_admin_session="),
        ] {
            let headers: Vec<(&str, &str)> = cookie.iter().map(|c| ("Cookie", *c)).collect();
            let r = console.call("GET", path, &headers, "").await;
            assert_eq!(r.status, 303, "{path} {cookie:?}: {}", r.body);
            assert_eq!(r.header("location"), Some(format!("/login?next={next}").as_str()));
            assert!(!r.body.contains("dead-0"), "{}", r.body);
        }
    }
    let login = console.call("GET", "/login?next=%2Fworkers", &[], "").await;
    assert_eq!(login.status, 200);
    assert!(
        login.body.contains(r#"name="token""#) && !login.body.contains("dead-0"),
        "{}",
        login.body
    );
    assert!(!login.body.contains("csrf-token"), "no session, no CSRF token");
    console.stop().await;
}

#[tokio::test]
async fn logging_out_clears_the_cookie_and_needs_the_csrf_token() {
    let console = Console::start().await;
    let session = console.login(TOKEN).await;
    let origin = console.base();
    let headers = [
        ("Cookie", session.cookie.as_str()),
        ("Origin", origin.as_str()),
        ("Content-Type", "application/x-www-form-urlencoded"),
    ];
    let r = console.call("POST", "/logout", &headers, "csrf=wrong").await;
    assert_eq!(r.status, 303);
    assert!(r.header("set-cookie").is_none(), "a forged logout changes nothing");
    let r = console
        .call("POST", "/logout", &headers, &format!("csrf={}", session.csrf))
        .await;
    assert_eq!(r.status, 303);
    assert_eq!(r.header("location"), Some("/login"));
    assert!(
        r.header("set-cookie").is_some_and(|c| c.contains("Max-Age=0")),
        "{:?}",
        r.headers
    );
    console.stop().await;
}

#[tokio::test]
async fn every_answer_carries_the_security_headers() {
    let console = Console::start().await;
    let session = console.login(TOKEN).await;
    for (path, cookie) in [
        ("/", Some(session.cookie.as_str())),
        ("/login", None),
        ("/static/app.js", None),
    ] {
        let headers: Vec<(&str, &str)> = cookie.iter().map(|c| ("Cookie", *c)).collect();
        let r = console.call("GET", path, &headers, "").await;
        assert_eq!(r.status, 200, "{path}");
        let csp = r.header("content-security-policy").expect("CSP");
        assert!(
            csp.contains("script-src 'self'") && csp.contains("frame-ancestors 'none'"),
            "{csp}"
        );
        assert_eq!(r.header("x-content-type-options"), Some("nosniff"));
        assert_eq!(r.header("x-frame-options"), Some("DENY"));
    }
    console.stop().await;
}
