//! Observability end to end, through real processes: one trace from the
//! CLI's `match finish` (and from a cron call) across the workers, Sentry
//! events for dead jobs only, and Prometheus counters that match the work
//! done. The collector and Sentry are local recorders decoding what the
//! binaries really send.

use std::{
    collections::HashSet,
    time::{Duration, Instant},
};

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use prost::Message as _;
use tally_e2e::{SECRET, Stack, StackOptions, receivers::Recorder, score_for};
use tally_testkit::http::{get, request};
use tally_testkit::prometheus;

/// One exported span, flattened.
#[derive(Debug, Clone)]
struct Span {
    service: String,
    name: String,
    trace: Vec<u8>,
    id: Vec<u8>,
    parent: Vec<u8>,
}

fn spans(recorder: &Recorder) -> Vec<Span> {
    let mut out = Vec::new();
    for r in recorder.received().iter().filter(|r| r.path.ends_with("/v1/traces")) {
        let request = ExportTraceServiceRequest::decode(r.body.as_slice()).expect("an OTLP protobuf trace export");
        for rs in request.resource_spans {
            let service = rs
                .resource
                .iter()
                .flat_map(|res| res.attributes.iter())
                .find(|kv| kv.key == "service.name")
                .and_then(|kv| kv.value.as_ref())
                .and_then(|v| match &v.value {
                    Some(opentelemetry_proto::tonic::common::v1::any_value::Value::StringValue(s)) => Some(s.clone()),
                    _ => None,
                })
                .unwrap_or_default();
            for ss in rs.scope_spans {
                for s in ss.spans {
                    out.push(Span {
                        service: service.clone(),
                        name: s.name,
                        trace: s.trace_id,
                        id: s.span_id,
                        parent: s.parent_span_id,
                    });
                }
            }
        }
    }
    out
}

async fn wait_for<T>(timeout: Duration, mut probe: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = probe() {
            return Some(v);
        }
        if Instant::now() > deadline {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The spans of one trace, checked to form a tree: every parent is in it.
fn trace_of<'a>(all: &'a [Span], trace: &[u8]) -> Vec<&'a Span> {
    all.iter().filter(|s| s.trace == trace).collect()
}

fn assert_tree(spans: &[&Span]) {
    let ids: HashSet<&[u8]> = spans.iter().map(|s| s.id.as_slice()).collect();
    let roots: Vec<&&Span> = spans.iter().filter(|s| s.parent.is_empty()).collect();
    assert_eq!(roots.len(), 1, "one root span: {roots:?}");
    for s in spans.iter().filter(|s| !s.parent.is_empty()) {
        assert!(
            ids.contains(s.parent.as_slice()),
            "span {} ({}) has a parent outside the trace",
            s.name,
            s.service
        );
    }
}

fn parent_of<'a>(spans: &[&'a Span], child: &Span) -> Option<&'a Span> {
    spans.iter().find(|s| s.id == child.parent).copied()
}

#[tokio::test]
async fn one_trace_runs_from_the_cli_through_both_workers_and_from_the_gateway() {
    let otlp = Recorder::start().await.expect("collector");
    let mut stack = Stack::new(StackOptions::default()).await.expect("stack");
    stack.extra_env.extend([
        (
            "OTEL_EXPORTER_OTLP_ENDPOINT".to_owned(),
            format!("http://{}", otlp.addr),
        ),
        ("OTEL_BSP_SCHEDULE_DELAY".to_owned(), "100".to_owned()),
    ]);
    for (binary, name) in [
        ("scoring-worker", "scoring-worker"),
        ("stats-worker", "stats-worker"),
        ("cron-gateway", "cron-gateway"),
    ] {
        stack.start(binary, name).await.expect(name);
    }
    let fixture = stack.matchday().await.expect("matchday").remove(0);
    let (h, a) = score_for(fixture.id);
    let out = stack
        .tally(&[
            "match",
            "finish",
            &fixture.id.to_string(),
            &h.to_string(),
            &a.to_string(),
        ])
        .expect("cli");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    stack.wait_settled(Duration::from_secs(30)).await.expect("settled");

    // CLI (process 1) → scoring-worker (2) → stats-worker (3).
    let chain = wait_for(Duration::from_secs(15), || {
        let all = spans(&otlp);
        let root = all
            .iter()
            .find(|s| s.service == "tally" && s.name == "tally match finish")?;
        let trace: Vec<Span> = trace_of(&all, &root.trace).into_iter().cloned().collect();
        let has = |service: &str, name: &str| trace.iter().any(|s| s.service == service && s.name == name);
        (has("scoring-worker", "scoring score_match") && has("stats-worker", "stats calculate_points")).then_some(trace)
    })
    .await
    .unwrap_or_else(|| panic!("no complete trace; spans seen: {:#?}", spans(&otlp)));
    let refs: Vec<&Span> = chain.iter().collect();
    assert_tree(&refs);
    let services: HashSet<&str> = chain.iter().map(|s| s.service.as_str()).collect();
    assert!(
        services.len() >= 3,
        "the trace spans at least three processes: {services:?}"
    );
    let score = chain
        .iter()
        .find(|s| s.name == "scoring score_match")
        .expect("score span");
    assert_eq!(
        parent_of(&refs, score).map(|p| p.service.as_str()),
        Some("tally"),
        "ScoreMatch continues the CLI's span"
    );
    let points = chain
        .iter()
        .find(|s| s.name == "stats calculate_points")
        .expect("points span");
    let mut up = parent_of(&refs, points);
    while let Some(p) = up {
        if p.name == "scoring score_match" {
            break;
        }
        up = parent_of(&refs, p);
    }
    assert!(up.is_some(), "CalculatePoints descends from the ScoreMatch span");
    let below_score: Vec<&str> = chain
        .iter()
        .filter(|s| s.parent == score.id && s.service == "scoring-worker")
        .map(|s| s.name.as_str())
        .collect();
    assert!(
        !below_score.is_empty(),
        "the scoring job has child spans (its SQL work)"
    );

    // Gateway (process 1) → stats-worker (2).
    let auth = format!("Bearer {SECRET}");
    let resp = request(
        stack.service("cron-gateway").addr,
        "POST",
        "/api/cron/update-stats",
        &[("Authorization", &auth)],
        b"",
    )
    .await
    .expect("cron call");
    assert_eq!(resp.status, 200);
    stack.wait_settled(Duration::from_secs(30)).await.expect("settled");
    let gateway_trace = wait_for(Duration::from_secs(15), || {
        let all = spans(&otlp);
        let root = all
            .iter()
            .find(|s| s.service == "cron-gateway" && s.name == "POST /api/cron/update-stats")?;
        let trace: Vec<Span> = trace_of(&all, &root.trace).into_iter().cloned().collect();
        trace
            .iter()
            .any(|s| s.service == "stats-worker" && s.name == "stats refresh_views")
            .then_some(trace)
    })
    .await
    .unwrap_or_else(|| panic!("no gateway trace; spans seen: {:#?}", spans(&otlp)));
    assert_tree(&gateway_trace.iter().collect::<Vec<_>>());
    stack.stop_cleanly().await;
}

/// The events (not transactions or sessions) in Sentry envelopes.
fn sentry_events(recorder: &Recorder) -> Vec<serde_json::Value> {
    let mut events = Vec::new();
    for r in recorder.received().iter().filter(|r| r.path.contains("/envelope")) {
        let text = String::from_utf8_lossy(&r.body);
        let lines: Vec<&str> = text.lines().collect();
        for pair in lines.windows(2) {
            let Ok(header) = serde_json::from_str::<serde_json::Value>(pair[0]) else {
                continue;
            };
            if header["type"] == "event"
                && let Ok(event) = serde_json::from_str::<serde_json::Value>(pair[1])
            {
                events.push(event);
            }
        }
    }
    events
}

#[tokio::test]
async fn sentry_gets_one_event_for_a_dead_job_and_none_for_a_retried_success() {
    let sentry = Recorder::start().await.expect("sentry");
    let mut stack = Stack::new(StackOptions::default()).await.expect("stack");
    stack
        .extra_env
        .push(("SENTRY_DSN".to_owned(), format!("http://public@{}/1", sentry.addr)));
    stack
        .start_services(&[("scoring-worker", "scoring-worker"), ("stats-worker", "stats-worker")])
        .await;

    // Retried, then successful: points asked for before the match is scored
    // fail (not scored yet), are retried after the backoff, and succeed.
    let fixture = stack.matchday().await.expect("matchday").remove(0);
    let (h, a) = score_for(fixture.id);
    stack.store.record_result(fixture.id, h, a).await.expect("record");
    let early = stack
        .producer
        .enqueue(&tally_jobs::CalculatePoints {
            match_id: fixture.id,
            priority: tally_jobs::Priority::Normal,
        })
        .await
        .expect("enqueue");
    tokio::time::sleep(Duration::from_millis(500)).await;
    stack
        .producer
        .enqueue(&tally_jobs::ScoreMatch { match_id: fixture.id })
        .await
        .expect("enqueue");
    // Dead at once: the match does not exist, so the handler gives up.
    let doomed = stack
        .producer
        .enqueue(&tally_jobs::ScoreMatch { match_id: 987_654 })
        .await
        .expect("enqueue");

    let admin = stack.admin.clone();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let stats = admin.stats("stats").await.expect("stats");
        let scoring = admin.stats("scoring").await.expect("stats");
        if scoring.dead == 1 && stats.counters.retried >= 1 && stats.ready + stats.scheduled + stats.in_flight == 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "work did not finish: scoring {scoring:?} stats {stats:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(
        admin.dead_get("stats", &early.id).await.expect("dead_get").is_none(),
        "the retried job succeeded"
    );

    wait_for(Duration::from_secs(10), || {
        (!sentry_events(&sentry).is_empty()).then_some(())
    })
    .await
    .expect("a Sentry event for the dead job");
    // A barrier instead of a pause: one more dead job in each worker, whose
    // events come after anything either process sent before (each sends its
    // events in order). Once both markers are in, a stray event for the
    // retried success or a second one for the dead job would be too.
    let markers = [
        stack
            .producer
            .enqueue(&tally_jobs::ScoreMatch { match_id: 987_655 })
            .await
            .expect("enqueue")
            .id,
        stack
            .producer
            .enqueue(&tally_jobs::CalculatePoints {
                match_id: 987_656,
                priority: tally_jobs::Priority::Normal,
            })
            .await
            .expect("enqueue")
            .id,
    ];
    let job_id = |e: &serde_json::Value| e["tags"]["job_id"].as_str().map(str::to_owned);
    let all = wait_for(Duration::from_secs(20), || {
        let e = sentry_events(&sentry);
        markers
            .iter()
            .all(|m| e.iter().any(|ev| job_id(ev).as_deref() == Some(m.as_str())))
            .then_some(e)
    })
    .await
    .expect("the markers' Sentry events");
    let events: Vec<serde_json::Value> = all
        .into_iter()
        .filter(|e| job_id(e).is_none_or(|id| !markers.contains(&id)))
        .collect();
    assert_eq!(events.len(), 1, "exactly one event besides the markers: {events:#?}");
    let tags = &events[0]["tags"];
    assert_eq!(tags["queue"], "scoring", "{tags}");
    assert_eq!(tags["kind"], "score_match", "{tags}");
    assert_eq!(tags["job_id"], doomed.id.as_str(), "{tags}");
    assert_eq!(tags["attempt"], "1", "{tags}");
    stack.stop_cleanly().await;
}

#[tokio::test]
async fn metrics_of_each_service_match_the_work_done() {
    let mut stack = Stack::new(StackOptions::default()).await.expect("stack");
    stack
        .start_services(&[
            ("scoring-worker", "scoring-worker"),
            ("stats-worker", "stats-worker"),
            ("cron-gateway", "cron-gateway"),
        ])
        .await;
    let matchday = stack.matchday().await.expect("matchday");
    stack.finish_all(&matchday).await;
    stack.wait_settled(Duration::from_secs(30)).await.expect("settled");
    let gateway = stack.service("cron-gateway").addr;
    let auth = format!("Bearer {SECRET}");
    assert_eq!(
        request(
            gateway,
            "POST",
            "/api/cron/update-stats",
            &[("Authorization", &auth)],
            b""
        )
        .await
        .expect("ok")
        .status,
        200
    );
    assert_eq!(
        request(gateway, "POST", "/api/cron/update-stats", &[], b"")
            .await
            .expect("denied")
            .status,
        401
    );
    stack.wait_settled(Duration::from_secs(30)).await.expect("settled");
    let n = matchday.len() as f64;

    let scoring = get(stack.service("scoring-worker").addr, "/metrics")
        .await
        .expect("metrics")
        .body;
    assert_eq!(
        prometheus::sum(
            &scoring,
            "tally_jobs_completed_total",
            &[("queue", "scoring"), ("kind", "score_match")]
        ),
        Some(n),
        "{scoring}"
    );
    assert_eq!(
        prometheus::sum(&scoring, "tally_job_duration_seconds_count", &[("kind", "score_match")]),
        Some(n),
        "{scoring}"
    );
    assert_eq!(
        prometheus::sum(&scoring, "tally_job_wait_seconds_count", &[("kind", "score_match")]),
        Some(n),
        "{scoring}"
    );
    assert_eq!(
        prometheus::sum(&scoring, "tally_jobs_dead_total", &[("kind", "score_match")]),
        None,
        "nothing died"
    );

    let stats = get(stack.service("stats-worker").addr, "/metrics")
        .await
        .expect("metrics")
        .body;
    assert_eq!(
        prometheus::sum(&stats, "tally_jobs_completed_total", &[("kind", "calculate_points")]),
        Some(n),
        "{stats}"
    );
    let refreshes =
        prometheus::sum(&stats, "tally_jobs_completed_total", &[("kind", "refresh_views")]).expect("refreshes");
    assert!(
        (1.0..=n + 1.0).contains(&refreshes),
        "refreshes coalesce: {refreshes} for {n} results + 1 cron call"
    );
    // Queue gauges are sampled every 5 s from the first moment on.
    assert!(
        prometheus::sum(
            &stats,
            "tally_queue_ready_jobs",
            &[("queue", "stats"), ("priority", "normal")]
        )
        .is_some(),
        "{stats}"
    );
    assert!(
        prometheus::sum(&stats, "tally_queue_oldest_ready_age_seconds", &[("queue", "stats")]).is_some(),
        "{stats}"
    );

    let http = get(gateway, "/metrics").await.expect("metrics").body;
    let route = ("route", "/api/cron/update-stats");
    assert_eq!(
        prometheus::sum(&http, "tally_http_requests_total", &[route, ("status", "200")]),
        Some(1.0),
        "{http}"
    );
    assert_eq!(
        prometheus::sum(&http, "tally_http_requests_total", &[route, ("status", "401")]),
        Some(1.0),
        "{http}"
    );
    assert!(
        prometheus::sum(
            &http,
            "tally_http_request_duration_seconds_count",
            &[route, ("status", "200")]
        )
        .is_some(),
        "{http}"
    );
    stack.stop_cleanly().await;
}

#[tokio::test]
async fn gateway_server_errors_reach_sentry_and_client_errors_do_not() {
    let sentry = Recorder::start().await.expect("sentry");
    let mut stack = Stack::new(StackOptions::default()).await.expect("stack");
    stack
        .extra_env
        .push(("SENTRY_DSN".to_owned(), format!("http://public@{}/1", sentry.addr)));
    // A Redis nobody listens on: the cron call cannot enqueue and gets 503.
    let closed = tally_cli::services::free_port().expect("port");
    stack.redis_url = format!("redis://127.0.0.1:{closed}");
    let addr_var = "BIND_ADDR";
    let mut gateway =
        tally_cli::services::Service::start("cron-gateway", "cron-gateway", &stack.env(), addr_var, &stack.log_dir)
            .expect("gateway");
    // Alive (healthz) even though not ready: wait for the listener.
    let mut alive = false;
    for _ in 0..100 {
        if get(gateway.addr, "/healthz").await.is_ok_and(|r| r.status == 200) {
            alive = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(alive, "gateway did not come up:\n{}", gateway.log_tail(20));
    let auth = format!("Bearer {SECRET}");
    let addr = gateway.addr;
    let authorised_call = || async {
        request(addr, "POST", "/api/cron/update-stats", &[("Authorization", &auth)], b"")
            .await
            .expect("response")
    };
    let unavailable = authorised_call().await;
    assert_eq!(unavailable.status, 503, "{}", unavailable.body);
    let denied = request(gateway.addr, "POST", "/api/cron/update-stats", &[], b"")
        .await
        .expect("response");
    assert_eq!(denied.status, 401);
    // A barrier instead of a pause: a second 503 after the 401. The gateway
    // sends its events in order, so once the second 503's event is in, one
    // for the 401 would be too.
    let again = authorised_call().await;
    assert_eq!(again.status, 503, "{}", again.body);
    wait_for(Duration::from_secs(10), || {
        (sentry_events(&sentry).len() >= 2).then_some(())
    })
    .await
    .expect("Sentry events for the two 503s");
    // Sentry leaves out the default level (error) when serialising.
    let events = sentry_events(&sentry);
    assert_eq!(events.len(), 2, "an event for each 5xx, none for the 401: {events:#?}");
    for event in &events {
        assert_eq!(
            event["message"], "cron-gateway answered with a server error",
            "{events:#?}"
        );
    }
    let text = serde_json::to_string(&events).expect("json");
    assert!(text.contains("503"), "the event names the status: {text}");
    assert!(
        !text.contains("401 Unauthorized") && !text.contains(SECRET),
        "no event for 401, no secret: {text}"
    );
    let status = gateway.terminate(Duration::from_secs(15)).await.expect("stopped");
    assert!(status.success());
}
