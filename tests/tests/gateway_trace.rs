//! Whose trace a gateway request joins, through the real process and a local
//! OTLP collector: a caller's `traceparent` is honoured only when the call
//! carries the cron secret. An authenticated call continues the caller's
//! trace, and the job it enqueues carries that trace on to the worker; a
//! refused (or unauthenticated) call starts a trace of its own, so nobody
//! without the secret can attach the gateway's spans to a trace they chose.

use std::{
    fmt::Write as _,
    time::{Duration, Instant},
};

use opentelemetry_proto::tonic::{
    collector::trace::v1::ExportTraceServiceRequest,
    common::v1::{AnyValue, any_value::Value},
};
use prost::Message as _;
use tally_cli::services::{Service, bin_dir};
use tally_e2e::{SECRET, receivers::Recorder};
use tally_jobs::{RefreshViews, TraceContext};
use tally_queue::{JobContext, JobError, QueueClient, QueueConfig, Worker};
use tally_testkit::http::request;
use tokio::sync::{mpsc, oneshot};

/// One exported span of the gateway, flattened.
#[derive(Debug, Clone)]
struct Span {
    name: String,
    trace: String,
    parent: String,
    status: Option<i64>,
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().fold(String::new(), |mut out, b| {
        let _ = write!(out, "{b:02x}");
        out
    })
}

fn spans(recorder: &Recorder) -> Vec<Span> {
    let mut out = Vec::new();
    for r in recorder.received().iter().filter(|r| r.path.ends_with("/v1/traces")) {
        let request = ExportTraceServiceRequest::decode(r.body.as_slice()).expect("an OTLP protobuf trace export");
        for s in request
            .resource_spans
            .into_iter()
            .flat_map(|rs| rs.scope_spans)
            .flat_map(|ss| ss.spans)
        {
            let status = s
                .attributes
                .iter()
                .find(|kv| kv.key == "http.response.status_code")
                .and_then(|kv| match &kv.value {
                    // tracing-opentelemetry exports the recorded u16 as a string.
                    Some(AnyValue {
                        value: Some(Value::StringValue(n)),
                    }) => n.parse().ok(),
                    Some(AnyValue {
                        value: Some(Value::IntValue(n)),
                    }) => Some(*n),
                    _ => None,
                });
            out.push(Span {
                name: s.name,
                trace: hex(&s.trace_id),
                parent: hex(&s.parent_span_id),
                status,
            });
        }
    }
    out
}

/// A caller's trace context: `(traceparent, trace id, span id)`.
fn caller(trace: &str, span: &str) -> (String, String, String) {
    (format!("00-{trace}-{span}-01"), trace.to_owned(), span.to_owned())
}

#[tokio::test]
async fn only_authenticated_calls_continue_the_callers_trace() {
    let otlp = Recorder::start().await.expect("collector");
    let redis = tally_testkit::redis().await;
    let env: Vec<(String, String)> = [
        ("REDIS_URL", redis.url.as_str()),
        ("TALLY_QUEUE_PREFIX", redis.namespace.as_str()),
        ("CRON_SECRET", SECRET),
        ("OTEL_EXPORTER_OTLP_ENDPOINT", &format!("http://{}", otlp.addr)),
        ("OTEL_BSP_SCHEDULE_DELAY", "100"),
        ("RUST_LOG", "info"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect();
    let log_dir = bin_dir()
        .join("e2e-logs")
        .join(uuid::Uuid::new_v4().simple().to_string());
    let mut gateway = Service::start("cron-gateway", "cron-gateway", &env, "BIND_ADDR", &log_dir).expect("gateway");
    gateway.wait_ready(Duration::from_secs(30)).await.expect("ready");

    let path = "/api/cron/update-stats";
    let auth = format!("Bearer {SECRET}");
    let (trusted, trusted_trace, trusted_span) = caller("4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7");
    let ok = request(
        gateway.addr,
        "POST",
        path,
        &[("Authorization", &auth), ("traceparent", &trusted)],
        b"",
    )
    .await
    .expect("response");
    assert_eq!(ok.status, 200, "{}", ok.body);

    // Refused calls with a traceparent: no secret, a wrong one, and the
    // right one mangled.
    let (anonymous, anonymous_trace, _) = caller("0af7651916cd43dd8448eb211c80319c", "b7ad6b7169203331");
    let (wrong, wrong_trace, _) = caller("5c3e1f6a9b2d4e7f8a1b2c3d4e5f6a7b", "1a2b3c4d5e6f7081");
    let (mangled, mangled_trace, _) = caller("9e8d7c6b5a4f3e2d1c0b9a8f7e6d5c4b", "8f7e6d5c4b3a2918");
    let wrong_auth = "Bearer wrong-secret-0123456789".to_owned();
    let mangled_auth = format!("Bearer {SECRET}x");
    for (traceparent, authorization) in [
        (&anonymous, None),
        (&wrong, Some(&wrong_auth)),
        (&mangled, Some(&mangled_auth)),
    ] {
        let mut headers = vec![("traceparent", traceparent.as_str())];
        if let Some(a) = authorization {
            headers.push(("Authorization", a.as_str()));
        }
        let denied = request(gateway.addr, "POST", path, &headers, b"")
            .await
            .expect("response");
        assert_eq!(denied.status, 401, "{}", denied.body);
    }
    // Probes need no secret, so they do not join a caller's trace either.
    let (probe, probe_trace, _) = caller("1f2e3d4c5b6a79881726354453627180", "0123456789abcdef");
    let healthz = request(gateway.addr, "GET", "/healthz", &[("traceparent", &probe)], b"")
        .await
        .expect("response");
    assert_eq!(healthz.status, 200);

    // Wait for the spans of the four cron calls and the probe.
    let deadline = Instant::now() + Duration::from_secs(15);
    let all = loop {
        let all = spans(&otlp);
        let cron = all.iter().filter(|s| s.name == format!("POST {path}")).count();
        let probes = all.iter().filter(|s| s.name == "GET /healthz").count();
        if cron >= 4 && probes >= 1 {
            break all;
        }
        assert!(
            Instant::now() < deadline,
            "gateway spans not exported: {all:#?}\n{}",
            gateway.log_tail(20)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };

    let cron = |status: i64| -> Vec<&Span> {
        all.iter()
            .filter(|s| s.name == format!("POST {path}") && s.status == Some(status))
            .collect()
    };
    let accepted = cron(200);
    assert_eq!(accepted.len(), 1, "{all:#?}");
    assert_eq!(
        accepted[0].trace, trusted_trace,
        "the authenticated call continues the caller's trace"
    );
    assert_eq!(accepted[0].parent, trusted_span, "under the caller's span");

    let refused = cron(401);
    assert_eq!(refused.len(), 3, "{all:#?}");
    for foreign in [&anonymous_trace, &wrong_trace, &mangled_trace, &probe_trace] {
        let joined: Vec<&Span> = all.iter().filter(|s| &s.trace == foreign).collect();
        assert!(
            joined.is_empty(),
            "an unauthenticated caller's trace {foreign} was continued: {joined:#?}"
        );
    }
    for span in refused {
        assert!(span.parent.is_empty(), "a refused call's span is a root: {span:?}");
    }

    // The job the authenticated call enqueued carries the caller's trace.
    let client = QueueClient::new(&redis.url, QueueConfig::with_prefix(&redis.namespace)).expect("client");
    let (seen, mut traces) = mpsc::unbounded_channel::<Option<TraceContext>>();
    let worker = Worker::builder(client, "stats")
        .concurrency(1)
        .handle(move |_job: RefreshViews, ctx: JobContext| {
            let seen = seen.clone();
            async move {
                let _ = seen.send(ctx.trace);
                Ok::<(), JobError>(())
            }
        })
        .build()
        .expect("worker");
    let (stop, stopped) = oneshot::channel::<()>();
    let running = tokio::spawn(worker.run_until(async move {
        let _ = stopped.await;
    }));
    let trace = tokio::time::timeout(Duration::from_secs(15), traces.recv())
        .await
        .expect("the enqueued job is consumed")
        .expect("a job");
    let _ = stop.send(());
    running.await.expect("joined").expect("worker stops cleanly");
    let traceparent = trace.expect("the envelope carries a trace context").traceparent;
    assert_eq!(
        traceparent.split('-').nth(1),
        Some(trusted_trace.as_str()),
        "envelope traceparent {traceparent}"
    );

    let status = gateway.terminate(Duration::from_secs(15)).await.expect("stopped");
    assert!(status.success(), "{status}");
    let _ = std::fs::remove_dir_all(&log_dir);
}
