//! The gateway's HTTP contract (docs/CONTRACTS.md), against a real server
//! bound on a free port and a real Redis from the test kit: every status
//! and shape, the refresh and the repair each call enqueues (deduplicated),
//! and `REPAIR_ENABLED=off`.

use std::{net::SocketAddr, time::Duration};

use cron_gateway::{Application, Settings, auth::CronSecret};
use tally_jobs::{Job as _, RepairPipeline};
use tally_queue::{QueueAdmin, QueueClient, QueueConfig};
use tally_testkit::http::{HttpResponse, get, request};
use tally_testkit::prometheus;
use tokio::sync::oneshot;

const SECRET: &str = "test-secret-0123456789";

struct Gateway {
    addr: SocketAddr,
    admin: QueueAdmin,
    stop: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
}

impl Gateway {
    async fn stop(mut self) {
        let _ = self.stop.take().expect("running").send(());
        self.task.await.expect("joined").expect("clean shutdown");
    }

    async fn call(&self, method: &str, path: &str, auth: Option<&str>, body: &[u8]) -> HttpResponse {
        let header = auth.map(|a| format!("Bearer {a}"));
        let headers: Vec<(&str, &str)> = header.iter().map(|h| ("Authorization", h.as_str())).collect();
        request(self.addr, method, path, &headers, body)
            .await
            .expect("response")
    }

    async fn stats_ready(&self) -> u64 {
        self.admin.stats("stats").await.expect("stats").ready
    }

    /// `RepairPipeline` jobs: waiting, and ever enqueued.
    async fn repairs(&self) -> (u64, u64) {
        let scoring = self.admin.stats(RepairPipeline::QUEUE).await.expect("stats");
        (scoring.ready, scoring.counters.enqueued)
    }
}

async fn spawn_gateway(redis_url: &str, prefix: &str) -> Gateway {
    spawn_gateway_with(redis_url, prefix, Some(RepairPipeline::default())).await
}

/// A gateway whose cron calls ask for `repair` (`None`: `REPAIR_ENABLED=off`).
async fn spawn_gateway_with(redis_url: &str, prefix: &str, repair: Option<RepairPipeline>) -> Gateway {
    tally_telemetry::init_for_tests();
    let settings = Settings {
        bind_addr: "127.0.0.1:0".parse().expect("addr"),
        redis_url: redis_url.to_owned(),
        cron_secret: CronSecret::new(SECRET).expect("secret"),
        queue_prefix: prefix.to_owned(),
        max_body_bytes: 1024,
        shutdown_timeout: Duration::from_secs(1),
        repair,
        database_url_set: false,
    };
    let app = Application::build(settings).await.expect("gateway builds");
    let addr = app.addr();
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(app.run_until(async move {
        let _ = stopped.await;
    }));
    let client = QueueClient::new(redis_url, QueueConfig::with_prefix(prefix)).expect("client");
    Gateway {
        addr,
        admin: QueueAdmin::new(client),
        stop: Some(stop),
        task,
    }
}

async fn gateway() -> Gateway {
    let redis = tally_testkit::redis().await;
    spawn_gateway(&redis.url, &redis.namespace).await
}

fn assert_error_shape(response: &HttpResponse, status: u16) {
    assert_eq!(response.status, status, "{}", response.body);
    let body = response.json();
    assert_eq!(body["success"], false, "{body}");
    assert!(body["error"].as_str().is_some_and(|e| !e.is_empty()), "{body}");
    let ts = body["timestamp"].as_str().expect("timestamp");
    chrono::DateTime::parse_from_rfc3339(ts).expect("RFC 3339 timestamp");
}

#[tokio::test]
async fn the_right_secret_enqueues_one_refresh_and_coalesces_the_next() {
    let gw = gateway().await;
    let first = gw.call("POST", "/api/cron/update-stats", Some(SECRET), b"").await;
    assert_eq!(first.status, 200, "{}", first.body);
    let body = first.json();
    assert_eq!(body["success"], true);
    assert_eq!(body["scope"], "all");
    assert_eq!(body["deduplicated"], false);
    let job_id = body["jobId"].as_str().expect("jobId").to_owned();
    chrono::DateTime::parse_from_rfc3339(body["timestamp"].as_str().expect("ts")).expect("RFC 3339");
    assert_eq!(gw.stats_ready().await, 1);

    // GET works too, and coalesces into the waiting job.
    let second = gw
        .call("GET", "/api/cron/update-stats?scope=all", Some(SECRET), b"")
        .await;
    assert_eq!(second.status, 200, "{}", second.body);
    assert_eq!(second.json()["deduplicated"], true);
    assert_eq!(second.json()["jobId"], job_id.as_str());
    assert_eq!(gw.stats_ready().await, 1);

    // Another scope is another job.
    let standings = gw
        .call("GET", "/api/cron/update-stats?scope=standings", Some(SECRET), b"")
        .await;
    assert_eq!(standings.json()["scope"], "standings");
    assert_eq!(standings.json()["deduplicated"], false);
    assert_eq!(gw.stats_ready().await, 2);
    gw.stop().await;
}

#[tokio::test]
async fn missing_or_wrong_secrets_get_401_and_enqueue_nothing() {
    let gw = gateway().await;
    for auth in [
        None,
        Some("wrong-secret-0123456789"),
        Some(&SECRET[..SECRET.len() - 1]),
        Some(""),
    ] {
        let response = gw.call("POST", "/api/cron/update-stats", auth, b"").await;
        assert_error_shape(&response, 401);
        assert_eq!(response.header("www-authenticate"), Some("Bearer"));
    }
    // A bad scope without the secret is still 401: nothing is revealed.
    assert_error_shape(
        &gw.call("GET", "/api/cron/update-stats?scope=nope", None, b"").await,
        401,
    );
    assert_eq!(gw.stats_ready().await, 0);
    assert_eq!(gw.repairs().await, (0, 0), "no repair either");
    gw.stop().await;
}

#[tokio::test]
async fn bad_scope_404_405_and_413_are_json() {
    let gw = gateway().await;
    let bad = gw
        .call("GET", "/api/cron/update-stats?scope=everything", Some(SECRET), b"")
        .await;
    assert_error_shape(&bad, 400);
    assert!(bad.json()["error"].as_str().expect("error").contains("everything"));
    assert_error_shape(&gw.call("GET", "/api/cron/nope", Some(SECRET), b"").await, 404);
    let put = gw.call("PUT", "/api/cron/update-stats", Some(SECRET), b"").await;
    assert_error_shape(&put, 405);
    assert_eq!(put.header("allow"), Some("GET, POST"));
    let big = vec![b'x'; 4096];
    assert_error_shape(
        &gw.call("POST", "/api/cron/update-stats", Some(SECRET), &big).await,
        413,
    );
    assert_eq!(gw.stats_ready().await, 0, "refused requests enqueue nothing");
    assert_eq!(gw.repairs().await, (0, 0), "refused requests enqueue nothing");
    gw.stop().await;
}

#[tokio::test]
async fn a_burst_of_calls_enqueues_a_single_refresh() {
    let gw = gateway().await;
    let calls = (0..100).map(|_| gw.call("POST", "/api/cron/update-stats", Some(SECRET), b""));
    let responses = futures::future::join_all(calls).await;
    assert!(responses.iter().all(|r| r.status == 200), "all accepted");
    let fresh = responses.iter().filter(|r| r.json()["deduplicated"] == false).count();
    assert_eq!(fresh, 1, "exactly one call created the job, the others coalesced");
    assert_eq!(gw.stats_ready().await, 1);
    let fresh_repairs = responses
        .iter()
        .filter(|r| r.json()["repair"]["deduplicated"] == false)
        .count();
    assert_eq!(fresh_repairs, 1, "one repair too");
    assert_eq!(gw.repairs().await, (1, 1));
    gw.stop().await;
}

#[tokio::test]
async fn each_call_asks_for_one_repair_and_calls_close_together_coalesce() {
    let redis = tally_testkit::redis().await;
    let repair = RepairPipeline {
        grace_secs: 30,
        batch: 50,
    };
    let gw = spawn_gateway_with(&redis.url, &redis.namespace, Some(repair)).await;
    let first = gw.call("POST", "/api/cron/update-stats", Some(SECRET), b"").await;
    assert_eq!(first.status, 200, "{}", first.body);
    let body = first.json();
    let object = body["repair"].as_object().expect("a repair object");
    let mut keys: Vec<&str> = object.keys().map(String::as_str).collect();
    keys.sort_unstable();
    assert_eq!(
        keys,
        ["deduplicated", "jobId"],
        "the job reference only, no counts: {body}"
    );
    assert_eq!(body["repair"]["deduplicated"], false, "{body}");
    let repair_id = body["repair"]["jobId"].as_str().expect("jobId").to_owned();
    assert_ne!(body["jobId"], repair_id.as_str(), "two jobs: refresh and repair");
    assert_eq!(gw.repairs().await, (1, 1), "exactly one RepairPipeline");

    // The job carries the gateway's bounds, on the scoring queue, with the
    // repair's policy.
    let raw: Option<String> = {
        use redis::AsyncCommands as _;
        let client = QueueClient::new(&redis.url, QueueConfig::with_prefix(&redis.namespace)).expect("client");
        let mut conn = redis.connection().await;
        conn.hget(client.keys(RepairPipeline::QUEUE).jobs(), &repair_id)
            .await
            .expect("hget")
    };
    let envelope = tally_jobs::Envelope::decode(raw.expect("the job is stored").as_bytes()).expect("envelope");
    assert_eq!(envelope.kind, RepairPipeline::KIND);
    assert_eq!(envelope.payload_as::<RepairPipeline>().expect("payload"), repair);
    assert_eq!(envelope.policy, RepairPipeline::POLICY);

    // A second call while it waits coalesces into it.
    let second = gw.call("GET", "/api/cron/update-stats", Some(SECRET), b"").await;
    assert_eq!(second.status, 200, "{}", second.body);
    assert_eq!(second.json()["repair"]["deduplicated"], true, "{}", second.body);
    assert_eq!(second.json()["repair"]["jobId"], repair_id.as_str());
    assert_eq!(gw.repairs().await, (1, 1), "still one RepairPipeline");

    // Another scope is another refresh, but the same repair.
    let standings = gw
        .call("POST", "/api/cron/update-stats?scope=standings", Some(SECRET), b"")
        .await;
    assert_eq!(standings.json()["repair"]["jobId"], repair_id.as_str());
    assert_eq!(gw.repairs().await, (1, 1));
    gw.stop().await;
}

#[tokio::test]
async fn with_the_repair_disabled_a_call_enqueues_the_refresh_only() {
    let redis = tally_testkit::redis().await;
    let gw = spawn_gateway_with(&redis.url, &redis.namespace, None).await;
    let response = gw.call("POST", "/api/cron/update-stats", Some(SECRET), b"").await;
    assert_eq!(response.status, 200, "{}", response.body);
    let body = response.json();
    assert_eq!(body["success"], true, "{body}");
    assert!(body["jobId"].is_string(), "{body}");
    assert!(body.get("repair").is_none(), "no repair object: {body}");
    assert_eq!(gw.stats_ready().await, 1);
    assert_eq!(gw.repairs().await, (0, 0), "no RepairPipeline");
    gw.stop().await;
}

#[tokio::test]
async fn redis_down_is_503_and_not_ready_but_alive() {
    let mut server = tally_testkit::RedisServer::start(tally_testkit::RedisOptions::default())
        .await
        .expect("redis");
    let gw = spawn_gateway(&server.url(), "down").await;
    assert_eq!(get(gw.addr, "/readyz").await.expect("readyz").status, 200);
    server.stop().await;
    let response = gw.call("POST", "/api/cron/update-stats", Some(SECRET), b"").await;
    assert_error_shape(&response, 503);
    assert_eq!(get(gw.addr, "/healthz").await.expect("healthz").status, 200);
    let ready = get(gw.addr, "/readyz").await.expect("readyz");
    assert_eq!(ready.status, 503, "{}", ready.body);
    assert!(ready.json()["failed"]["redis"].is_string(), "{}", ready.body);

    // Back again: the same gateway recovers without a restart.
    server.restart().await.expect("restart");
    let mut ok = None;
    for _ in 0..50 {
        let response = gw.call("POST", "/api/cron/update-stats", Some(SECRET), b"").await;
        if response.status == 200 {
            ok = Some(response);
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(ok.is_some(), "gateway did not recover after Redis came back");
    gw.stop().await;
}

/// Set in the environment of the child process that runs
/// [`metrics_count_requests_by_route_and_status`] alone.
const METRICS_CHILD: &str = "TALLY_GATEWAY_METRICS_CHILD";

/// The `tally_http_requests_total` count with these route and status labels
/// (every method), if served.
fn requests_total(text: &str, route: &str, status: &str) -> Option<f64> {
    prometheus::sum(
        text,
        "tally_http_requests_total",
        &[("route", route), ("status", status)],
    )
}

#[tokio::test]
async fn metrics_count_requests_by_route_and_status() {
    if std::env::var_os(METRICS_CHILD).is_none() {
        // The recorder is process-global and the other tests of this file
        // feed it in parallel: count exactly in a child process running this
        // test alone.
        let output = std::process::Command::new(std::env::current_exe().expect("test binary"))
            .args(["--exact", "metrics_count_requests_by_route_and_status", "--nocapture"])
            .env(METRICS_CHILD, "1")
            .output()
            .expect("run the child");
        assert!(
            output.status.success() && String::from_utf8_lossy(&output.stdout).contains("1 passed"),
            "child failed:\n{}\n{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        return;
    }
    let gw = gateway().await;
    let route = "/api/cron/update-stats";
    assert_eq!(gw.call("POST", route, Some(SECRET), b"").await.status, 200);
    assert_eq!(gw.call("POST", route, None, b"").await.status, 401);
    assert_eq!(
        gw.call("POST", route, Some("wrong-secret-0123456789"), b"")
            .await
            .status,
        401
    );
    let metrics = get(gw.addr, "/metrics").await.expect("metrics");
    assert_eq!(metrics.status, 200);
    assert!(
        metrics
            .header("content-type")
            .is_some_and(|c| c.starts_with("text/plain")),
        "{:?}",
        metrics.headers
    );
    let text = &metrics.body;
    assert_eq!(requests_total(text, route, "200"), Some(1.0), "{text}");
    assert_eq!(requests_total(text, route, "401"), Some(2.0), "{text}");
    assert_eq!(requests_total(text, route, "503"), None, "{text}");
    // The histogram counts the same requests.
    assert_eq!(
        prometheus::sum(text, "tally_http_request_duration_seconds_count", &[("route", route)]),
        Some(3.0),
        "{text}"
    );
    gw.stop().await;
}

/// `n` HTTP methods nobody uses, different on every run: letters, digits and
/// the token characters the server accepts in a method (it answers 400 to
/// `#$%&'` before any middleware runs).
fn invented_methods(n: usize) -> Vec<String> {
    use rand::Rng as _;
    const TOKEN: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789!*+-.^_`|~";
    let mut rng = rand::rng();
    (0..n)
        .map(|_| {
            let len = rng.random_range(6..=16);
            let tail: String = (0..len)
                .map(|_| char::from(TOKEN[rng.random_range(0..TOKEN.len())]))
                .collect();
            // The prefix keeps a method from matching any other text on the page.
            format!("ZQ{tail}")
        })
        .collect()
}

#[tokio::test]
async fn invented_methods_share_one_metrics_label() {
    let gw = gateway().await;
    let methods = invented_methods(12);
    for method in &methods {
        for (path, auth) in [
            ("/api/cron/update-stats", None),
            ("/api/cron/update-stats", Some(SECRET)),
            ("/no/such/route", None),
        ] {
            let response = gw.call(method, path, auth, b"").await;
            assert!(
                [401, 404, 405].contains(&response.status),
                "{method} {path}: {} {}",
                response.status,
                response.body
            );
        }
    }
    gw.call("OPTIONS", "/api/cron/update-stats", None, b"").await;
    let metrics = get(gw.addr, "/metrics").await.expect("metrics");
    assert_eq!(metrics.status, 200);
    for method in &methods {
        assert!(
            !metrics.body.contains(method.as_str()),
            "{method} became a label value:\n{}",
            metrics.body
        );
    }
    for series in [r#"method="other""#, r#"method="OPTIONS""#] {
        assert!(metrics.body.contains(series), "missing {series} in:\n{}", metrics.body);
    }
    assert_eq!(gw.stats_ready().await, 0, "no invented method enqueues anything");
    gw.stop().await;
}
