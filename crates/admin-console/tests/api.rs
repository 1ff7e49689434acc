//! The admin API against a real Redis: jobs put there with the real
//! producer, made dead or finished by real workers, read and repaired
//! through the console over HTTP.

mod common;

use std::collections::{BTreeSet, HashSet};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use common::{Behaviour, Console, TestWorker, dead_jobs, eventually, script_calls, settings};
use serde_json::{Value, json};
use tally_jobs::{CalculatePoints, Priority, ScoreMatch};
use tally_queue::EnqueueOptions;
use tokio::sync::Semaphore;

const WAIT: Duration = Duration::from_secs(20);

fn with_id(id: &str) -> EnqueueOptions {
    EnqueueOptions {
        id: Some(id.to_owned()),
        ..EnqueueOptions::default()
    }
}

async fn points(console: &Console, n: usize) {
    for i in 0..n {
        let job = CalculatePoints {
            match_id: i as i64 + 1,
            priority: Priority::Normal,
        };
        console.producer.enqueue(&job).await.expect("enqueue");
    }
}

fn ids(page: &Value) -> Vec<String> {
    page["jobs"]
        .as_array()
        .expect("jobs")
        .iter()
        .map(|j| j["id"].as_str().expect("id").to_owned())
        .collect()
}

#[tokio::test]
async fn the_queue_list_shows_counts_controls_workers_and_rates() {
    let console = Console::start().await;
    points(&console, 3).await;
    let body = console.get_json("/api/v1/queues").await;
    let queues = body["queues"].as_array().expect("queues");
    let names: Vec<&str> = queues.iter().map(|q| q["name"].as_str().expect("name")).collect();
    assert_eq!(names, tally_jobs::QUEUES);
    let stats = &queues[1];
    assert_eq!(stats["ready"], 3, "{stats}");
    assert_eq!(stats["readyByPriority"]["normal"], 3, "{stats}");
    assert!(stats["oldestReadyAgeMs"].is_u64(), "{stats}");
    assert_eq!(
        (stats["paused"].clone(), stats["limit"].clone()),
        (json!(false), Value::Null)
    );
    assert_eq!(stats["workers"], 0);
    assert_eq!(stats["counters"]["enqueued"], 3);
    assert!(stats.get("rates").is_some(), "{stats}");

    let behaviour = Behaviour::completing();
    let worker = TestWorker::start(&console.client, "stats", &behaviour, true);
    eventually("the jobs complete and the worker shows", WAIT, || async {
        let q = console.get_json("/api/v1/queues/stats").await;
        q["counters"]["completed"] == 3 && q["ready"] == 0 && q["workers"] == 1
    })
    .await;
    eventually("a completion rate over the last minute", WAIT, || async {
        let q = console.get_json("/api/v1/queues/stats").await;
        q["rates"]["completedPerSec"].as_f64().is_some_and(|r| r > 0.0) && q["rates"]["failedPerSec"] == 0.0
    })
    .await;
    let q = console.get_json("/api/v1/queues/stats").await;
    assert_eq!(q["name"], "stats");
    assert!(q["oldestReadyAgeMs"].is_null(), "{q}");

    let workers = console.get_json("/api/v1/workers").await;
    let workers = workers["workers"].as_array().expect("workers");
    assert_eq!(workers.len(), 1, "{workers:?}");
    assert_eq!(workers[0]["queue"], "stats");
    assert_eq!(workers[0]["pid"], std::process::id());
    assert_eq!(workers[0]["concurrency"], 5);
    worker.stop().await;
    eventually("a stopped worker leaves the list", WAIT, || async {
        console.get_json("/api/v1/workers").await["workers"] == json!([])
    })
    .await;
    console.stop().await;
}

#[tokio::test]
async fn jobs_are_listed_by_state_in_order_and_paged() {
    let console = Console::start().await;
    dead_jobs(&console, 2).await;
    for (id, priority) in [
        ("low-0", Priority::Low),
        ("normal-0", Priority::Normal),
        ("high-0", Priority::High),
        ("normal-1", Priority::Normal),
        ("low-1", Priority::Low),
    ] {
        let options = EnqueueOptions {
            priority: Some(priority),
            ..with_id(id)
        };
        console
            .producer
            .enqueue_with(&ScoreMatch { match_id: 7 }, options)
            .await
            .expect("enqueue");
    }
    for id in ["later-0", "later-1"] {
        let options = EnqueueOptions {
            delay: Some(Duration::from_secs(3600)),
            ..with_id(id)
        };
        console
            .producer
            .enqueue_with(&ScoreMatch { match_id: 8 }, options)
            .await
            .expect("enqueue");
    }

    let ready = console.get_json("/api/v1/queues/scoring/jobs?state=ready").await;
    assert_eq!(ready["state"], "ready");
    assert_eq!((ready["total"].clone(), ready["offset"].clone()), (json!(5), json!(0)));
    assert_eq!(
        ids(&ready),
        ["high-0", "normal-0", "normal-1", "low-0", "low-1"],
        "claim order"
    );
    assert_eq!(ready["jobs"][0]["priority"], "high");
    assert_eq!(ready["jobs"][0]["kind"], "score_match");
    assert_eq!(
        ready,
        console.get_json("/api/v1/queues/scoring/jobs").await,
        "ready is the default"
    );

    let page = console
        .get_json("/api/v1/queues/scoring/jobs?state=ready&offset=1&limit=2")
        .await;
    assert_eq!(ids(&page), ["normal-0", "normal-1"]);
    assert_eq!(
        (page["total"].clone(), page["offset"].clone(), page["limit"].clone()),
        (json!(5), json!(1), json!(2))
    );
    let past = console
        .get_json("/api/v1/queues/scoring/jobs?state=ready&offset=9")
        .await;
    assert_eq!((past["total"].clone(), past["jobs"].clone()), (json!(5), json!([])));

    let scheduled = console.get_json("/api/v1/queues/scoring/jobs?state=scheduled").await;
    assert_eq!(
        ids(&scheduled).into_iter().collect::<BTreeSet<_>>(),
        BTreeSet::from(["later-0".into(), "later-1".into()])
    );
    let due = scheduled["jobs"][0]["atMs"].as_u64().expect("due time");
    assert!(due > tally_queue::now_ms() + 3_000_000, "due in an hour: {due}");

    let dead = console.get_json("/api/v1/queues/scoring/jobs?state=dead").await;
    assert_eq!(dead["total"], 2);
    for job in dead["jobs"].as_array().expect("jobs") {
        assert_eq!(job["state"], "dead");
        assert!(
            job["error"]
                .as_str()
                .is_some_and(|e| e.contains("test handler refused")),
            "{job}"
        );
        assert!(
            job["atMs"].as_u64().is_some_and(|t| t <= tally_queue::now_ms()),
            "{job}"
        );
        assert_eq!(
            (job["attempts"].clone(), job["errors"].clone()),
            (json!(1), json!(1)),
            "{job}"
        );
    }

    // In flight: a worker holds two jobs until the gate opens.
    let gate = Arc::new(Semaphore::new(0));
    let behaviour = Behaviour::gated(gate.clone());
    let worker = TestWorker::start(&console.client, "stats", &behaviour, false);
    points(&console, 2).await;
    eventually("two jobs in flight", WAIT, || async {
        console.get_json("/api/v1/queues/stats/jobs?state=inFlight").await["total"] == 2
    })
    .await;
    let in_flight = console.get_json("/api/v1/queues/stats/jobs?state=inFlight").await;
    for job in in_flight["jobs"].as_array().expect("jobs") {
        assert_eq!(job["state"], "inFlight");
        assert_eq!(job["kind"], "calculate_points");
        assert!(job["atMs"].as_u64().is_some(), "a lease expiry: {job}");
    }
    gate.add_permits(2);
    eventually("the held jobs complete", WAIT, || async { behaviour.completed() == 2 }).await;
    worker.stop().await;
    console.stop().await;
}

#[tokio::test]
async fn a_job_shows_its_envelope_and_a_dead_one_its_error() {
    let console = Console::start().await;
    dead_jobs(&console, 1).await;
    let dead = console.get_json("/api/v1/queues/scoring/jobs/dead-0").await;
    assert_eq!(dead["id"], "dead-0");
    assert_eq!(dead["state"], "dead");
    assert!(
        dead["error"].as_str().is_some_and(|e| e.contains("refused match 1")),
        "{dead}"
    );
    let envelope: Value = serde_json::from_str(dead["envelope"].as_str().expect("envelope")).expect("JSON");
    assert_eq!(envelope["payload"], json!({ "matchId": 1 }));
    assert_eq!(envelope["kind"], "score_match");

    // An id that needs escaping in a URL.
    let odd = "odd id/with?chars&<b>";
    console
        .producer
        .enqueue_with(&ScoreMatch { match_id: 9 }, with_id(odd))
        .await
        .expect("enqueue");
    let path = format!("/api/v1/queues/scoring/jobs/{}", admin_console::html::segment(odd));
    let live = console.get_json(&path).await;
    assert_eq!(live["id"], odd);
    assert_eq!(live["state"], "ready");
    assert_eq!(live["priority"], "normal");
    assert!(
        live["error"].is_null() && live.get("traceId").is_some() && live.get("dedupKey").is_some(),
        "{live}"
    );

    let missing = console
        .admin_call("GET", "/api/v1/queues/scoring/jobs/no-such-job", "")
        .await;
    assert_eq!(missing.status, 404, "{}", missing.body);
    assert!(
        missing.json()["error"]
            .as_str()
            .is_some_and(|e| e.contains("unknown job")),
        "{}",
        missing.body
    );
    console.stop().await;
}

#[tokio::test]
async fn dead_jobs_are_retried_and_purged_by_id_or_all() {
    let console = Console::start().await;
    dead_jobs(&console, 4).await;
    let behaviour = Behaviour::completing();
    let worker = TestWorker::start(&console.client, "scoring", &behaviour, true);

    let r = console
        .admin_call("POST", "/api/v1/queues/scoring/dead/retry", r#"{"ids":["dead-0"]}"#)
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json(), json!({ "queue": "scoring", "retried": 1, "skipped": 0 }));
    eventually("the retried job completes", WAIT, || async {
        behaviour.completed() == 1
    })
    .await;
    assert_eq!(console.admin.stats("scoring").await.expect("stats").dead, 3);

    // An id that is not dead fails the whole call, which changes nothing.
    let r = console
        .admin_call(
            "POST",
            "/api/v1/queues/scoring/dead/retry",
            r#"{"ids":["dead-1","dead-0","nope"]}"#,
        )
        .await;
    assert_eq!(r.status, 404, "{}", r.body);
    let error = r.json()["error"].as_str().expect("error").to_owned();
    assert!(
        error.contains("dead-0") && error.contains("nope") && !error.contains("dead-1"),
        "{error}"
    );
    assert!(
        console
            .admin
            .dead_get("scoring", "dead-1")
            .await
            .expect("get")
            .is_some()
    );

    let r = console
        .admin_call("POST", "/api/v1/queues/scoring/dead/purge", r#"{"ids":["dead-1"]}"#)
        .await;
    assert_eq!(r.json(), json!({ "queue": "scoring", "purged": 1 }), "{}", r.body);
    assert_eq!(
        console
            .admin_call("GET", "/api/v1/queues/scoring/jobs/dead-1", "")
            .await
            .status,
        404
    );
    let again = console
        .admin_call("POST", "/api/v1/queues/scoring/dead/purge", r#"{"ids":["dead-1"]}"#)
        .await;
    assert_eq!(again.status, 404, "{}", again.body);

    let r = console
        .admin_call("POST", "/api/v1/queues/scoring/dead/retry", r#"{"all":true}"#)
        .await;
    assert_eq!(r.json()["retried"], 2, "{}", r.body);
    eventually("every retried job completes", WAIT, || async {
        behaviour.completed() == 3
    })
    .await;
    worker.stop().await;

    dead_jobs(&console, 2).await;
    let r = console
        .admin_call("POST", "/api/v1/queues/scoring/dead/purge", r#"{"olderThanSecs":3600}"#)
        .await;
    assert_eq!(r.json()["purged"], 0, "none is an hour old: {}", r.body);
    let r = console
        .admin_call("POST", "/api/v1/queues/scoring/dead/purge", r#"{"all":true}"#)
        .await;
    assert_eq!(r.json()["purged"], 2, "{}", r.body);
    assert_eq!(console.get_json("/api/v1/queues/scoring").await["dead"], 0);
    console.stop().await;
}

#[tokio::test]
async fn pause_resume_and_limit_govern_real_workers() {
    // A Redis of this test alone: it counts the script calls (claims) it
    // answers, which would mix with other tests' on the shared server.
    let server = tally_testkit::RedisServer::start(tally_testkit::RedisOptions::default())
        .await
        .expect("redis-server");
    let url = server.url();
    let console = Console::start_with(settings(&url, "pause")).await;
    let behaviour = Behaviour::completing();
    let worker = TestWorker::start(&console.client, "stats", &behaviour, false);
    eventually("the worker registers", WAIT, || async {
        console.get_json("/api/v1/queues/stats").await["workers"] == 1
    })
    .await;

    let r = console.admin_call("POST", "/api/v1/queues/stats/pause", "").await;
    assert_eq!(r.json(), json!({ "paused": true, "limit": null }), "{}", r.body);
    assert_eq!(console.get_json("/api/v1/queues/stats").await["paused"], true);
    points(&console, 3).await;
    let before = script_calls(&url).await;
    eventually("the worker tries to claim, several times", WAIT, || async {
        script_calls(&url).await >= before + 5
    })
    .await;
    let q = console.get_json("/api/v1/queues/stats").await;
    assert_eq!(
        (q["ready"].clone(), q["inFlight"].clone()),
        (json!(3), json!(0)),
        "paused: nothing claimed: {q}"
    );
    assert_eq!(behaviour.completed(), 0);

    let r = console.admin_call("POST", "/api/v1/queues/stats/resume", "").await;
    assert_eq!(r.json(), json!({ "paused": false, "limit": null }), "{}", r.body);
    eventually("the queue drains", WAIT, || async { behaviour.completed() == 3 }).await;
    worker.stop().await;

    // A limit of one job in flight across the workers, concurrency 5 each.
    let r = console
        .admin_call("PUT", "/api/v1/queues/stats/limit", r#"{"limit":1}"#)
        .await;
    assert_eq!(r.json(), json!({ "paused": false, "limit": 1 }), "{}", r.body);
    let gate = Arc::new(Semaphore::new(0));
    let gated = Behaviour::gated(gate.clone());
    let worker = TestWorker::start(&console.client, "stats", &gated, false);
    points(&console, 3).await;
    eventually("one job runs", WAIT, || async {
        gated.running.load(Ordering::SeqCst) == 1
    })
    .await;
    let before = script_calls(&url).await;
    eventually("the worker asks for more, several times", WAIT, || async {
        script_calls(&url).await >= before + 10
    })
    .await;
    let q = console.get_json("/api/v1/queues/stats").await;
    assert_eq!(
        (q["inFlight"].clone(), q["ready"].clone(), q["limit"].clone()),
        (json!(1), json!(2), json!(1)),
        "{q}"
    );
    gate.add_permits(3);
    eventually("the rest run, one at a time", WAIT, || async { gated.completed() == 3 }).await;
    assert_eq!(gated.max_running.load(Ordering::SeqCst), 1);
    let r = console
        .admin_call("PUT", "/api/v1/queues/stats/limit", r#"{"limit":null}"#)
        .await;
    assert_eq!(r.json(), json!({ "paused": false, "limit": null }), "{}", r.body);
    worker.stop().await;
    console.stop().await;
}

#[tokio::test]
async fn bad_requests_get_json_errors_with_the_right_status() {
    let console = Console::start().await;
    let cases: &[(&str, &str, &str, u16, &str)] = &[
        ("GET", "/api/v1/queues/nope", "", 404, "unknown queue"),
        ("GET", "/api/v1/queues/nope/jobs", "", 404, "unknown queue"),
        (
            "GET",
            "/api/v1/queues/stats/jobs?state=running",
            "",
            400,
            "invalid state",
        ),
        ("GET", "/api/v1/queues/stats/jobs?limit=0", "", 400, "invalid limit"),
        ("GET", "/api/v1/queues/stats/jobs?limit=501", "", 400, "invalid limit"),
        ("GET", "/api/v1/queues/stats/jobs?offset=x", "", 400, "invalid offset"),
        (
            "GET",
            "/api/v1/queues/stats/jobs?page=2",
            "",
            400,
            "unknown query parameter",
        ),
        ("GET", "/api/v1/queues/stats/jobs/nope", "", 404, "unknown job"),
        (
            "POST",
            "/api/v1/queues/stats/dead/retry",
            "not json",
            400,
            "invalid JSON",
        ),
        (
            "POST",
            "/api/v1/queues/stats/dead/retry",
            "",
            400,
            "JSON body is required",
        ),
        ("POST", "/api/v1/queues/stats/dead/retry", "{}", 400, "exactly one of"),
        (
            "POST",
            "/api/v1/queues/stats/dead/retry",
            r#"{"all":false}"#,
            400,
            "exactly one of",
        ),
        (
            "POST",
            "/api/v1/queues/stats/dead/retry",
            r#"{"olderThanSecs":5}"#,
            400,
            "exactly one of",
        ),
        (
            "POST",
            "/api/v1/queues/stats/dead/purge",
            r#"{"ids":[]}"#,
            400,
            "ids must hold",
        ),
        (
            "POST",
            "/api/v1/queues/stats/dead/purge",
            r#"{"ids":"x"}"#,
            400,
            "invalid JSON",
        ),
        (
            "POST",
            "/api/v1/queues/stats/dead/purge",
            r#"{"ids":["x"]}"#,
            404,
            "not in the dead set",
        ),
        ("POST", "/api/v1/queues/nope/pause", "", 404, "unknown queue"),
        (
            "PUT",
            "/api/v1/queues/stats/limit",
            r#"{"limit":0}"#,
            400,
            "invalid limit",
        ),
        (
            "PUT",
            "/api/v1/queues/stats/limit",
            r#"{"limit":-1}"#,
            400,
            "invalid limit",
        ),
        ("PUT", "/api/v1/queues/stats/limit", r#"{"limit":"3"}"#, 400, "expected"),
        ("PUT", "/api/v1/queues/stats/limit", "{}", 400, "expected"),
        ("PUT", "/api/v1/queues/stats/limit", "[1]", 400, "invalid JSON"),
        ("GET", "/api/v1/nope", "", 404, "no such route"),
        ("GET", "/api/v1/queues/stats/extra", "", 404, "no such route"),
        ("DELETE", "/api/v1/queues", "", 405, "method not allowed"),
        ("GET", "/api/v1/queues/stats/pause", "", 405, "method not allowed"),
        ("POST", "/api/v1/queues/stats/limit", "{}", 405, "method not allowed"),
    ];
    for (method, path, body, status, error) in cases {
        let r = console.admin_call(method, path, body).await;
        assert_eq!(r.status, *status, "{method} {path} {body}: {}", r.body);
        assert!(
            r.header("content-type")
                .is_some_and(|c| c.starts_with("application/json")),
            "{method} {path}: {:?}",
            r.headers
        );
        let message = r.json()["error"].as_str().unwrap_or_default().to_owned();
        assert!(
            message.contains(error),
            "{method} {path} {body}: {message:?} should say {error:?}"
        );
    }
    // Nothing above changed the queue.
    let q = console.get_json("/api/v1/queues/stats").await;
    assert_eq!((q["paused"].clone(), q["limit"].clone()), (json!(false), Value::Null));
    console.stop().await;
}

#[tokio::test]
async fn redis_down_is_a_503_everywhere() {
    let mut server = tally_testkit::RedisServer::start(tally_testkit::RedisOptions::default())
        .await
        .expect("redis-server");
    let console = Console::start_with(settings(&server.url(), "down")).await;
    let session = console.login(common::TOKEN).await;
    server.stop().await;
    for (method, path) in [
        ("GET", "/api/v1/queues"),
        ("GET", "/api/v1/queues/stats"),
        ("GET", "/api/v1/queues/stats/jobs?state=dead"),
        ("GET", "/api/v1/queues/stats/jobs/x"),
        ("GET", "/api/v1/workers"),
        ("POST", "/api/v1/queues/stats/pause"),
    ] {
        let r = console.admin_call(method, path, "").await;
        assert_eq!(r.status, 503, "{method} {path}: {}", r.body);
        assert!(
            r.json()["error"]
                .as_str()
                .is_some_and(|e| e.contains("redis unavailable")),
            "{}",
            r.body
        );
    }
    let ready = console.call("GET", "/readyz", &[], "").await;
    assert_eq!(ready.status, 503, "{}", ready.body);
    let page = console
        .call("GET", "/", &[("Cookie", session.cookie.as_str())], "")
        .await;
    assert_eq!(page.status, 503, "{}", page.body);
    assert!(page.body.contains("Redis unavailable"), "{}", page.body);
    assert_eq!(console.call("GET", "/healthz", &[], "").await.status, 200);
    console.stop().await;
}

/// The OpenAPI document and the served routes agree in both directions:
/// every documented operation is registered and answers as documented, and
/// every registered route is documented.
#[tokio::test]
async fn the_openapi_document_describes_exactly_the_served_routes() {
    let console = Console::start().await;
    let served = console.get_json("/api/v1/openapi.json").await;
    let doc: Value = serde_json::from_str(admin_console::api::OPENAPI).expect("the document is JSON");
    assert_eq!(served, doc, "the binary serves the checked-in document");
    assert!(
        doc["openapi"].as_str().is_some_and(|v| v.starts_with("3.1")),
        "OpenAPI 3.1"
    );
    assert_eq!(
        doc["components"]["parameters"]["queue"]["schema"]["enum"],
        json!(tally_jobs::QUEUES),
        "the documented queues are tally's"
    );

    let mut documented = HashSet::new();
    for (path, item) in doc["paths"].as_object().expect("paths") {
        for method in item.as_object().expect("path item").keys() {
            documented.insert((method.to_uppercase(), path.clone()));
        }
    }
    let mut registered: HashSet<(String, String)> = admin_console::api::routes()
        .iter()
        .map(|r| (r.method.to_string(), r.path.to_owned()))
        .collect();
    for probe in admin_console::startup::PROBES {
        registered.insert(("GET".into(), probe.to_owned()));
    }
    let undocumented: Vec<_> = registered.difference(&documented).collect();
    let unserved: Vec<_> = documented.difference(&registered).collect();
    assert!(
        undocumented.is_empty(),
        "routes missing from openapi.json: {undocumented:?}"
    );
    assert!(unserved.is_empty(), "documented but not registered: {unserved:?}");

    // Each documented operation, called for real, reaches its handler and
    // answers with a status its document lists.
    for (method, path) in &documented {
        let concrete = path.replace("{queue}", "stats").replace("{id}", "no-such-job");
        let body = if method == "GET" { "" } else { "{}" };
        let r = console.admin_call(method, &concrete, body).await;
        assert_ne!(r.status, 405, "{method} {path}: {}", r.body);
        assert!(
            !r.body.contains("no such route"),
            "{method} {path} is not served: {}",
            r.body
        );
        let responses = &doc["paths"][path][method.to_lowercase()]["responses"];
        assert!(
            responses.get(r.status.to_string()).is_some(),
            "{method} {path} answered {} which the document does not list: {}",
            r.status,
            r.body
        );
    }
    console.stop().await;
}
