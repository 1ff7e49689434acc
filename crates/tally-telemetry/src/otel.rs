//! OpenTelemetry: the OTLP trace pipeline and W3C trace-context propagation.
//!
//! Export uses the SDK's batch span processor, which runs on its own thread
//! with a bounded queue: ending a span only pushes onto that queue (and drops
//! the span when the queue is full), so an unreachable collector costs a failed
//! HTTP request on the exporter thread and never blocks a request or a job.
//!
//! Propagation works on `tracing` spans through `tracing-opentelemetry`: the
//! traceparent of the current span is what a producer writes into a job
//! envelope, and a worker hands it to [`set_parent_from_traceparent`] on the
//! job span it just created.

use std::collections::HashMap;
use std::time::Duration;

use opentelemetry::propagation::TextMapPropagator;
use opentelemetry::trace::{TraceContextExt, TracerProvider as _};
use opentelemetry::{Key, KeyValue, Value};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{SdkTracer, SdkTracerProvider};
use tracing_opentelemetry::OpenTelemetrySpanExt;

use crate::TelemetryError;

/// The W3C header (and envelope field) name of the trace context.
pub(crate) const TRACEPARENT: &str = "traceparent";

/// How long shutdown may wait for the last batch to reach the collector.
pub(crate) const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(3);

/// Builds the OTLP/HTTP tracer provider.
///
/// Endpoint, headers, timeout and protocol come from the standard
/// `OTEL_EXPORTER_OTLP_*` variables, batching from `OTEL_BSP_*`, sampling from
/// `OTEL_TRACES_SAMPLER`, and the resource from `OTEL_SERVICE_NAME` /
/// `OTEL_RESOURCE_ATTRIBUTES`; `service_name` is used only when neither names
/// the service.
pub(crate) fn build_provider(service_name: &'static str) -> Result<SdkTracerProvider, TelemetryError> {
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .build()
        .map_err(|e| TelemetryError::Otlp(e.to_string()))?;
    Ok(SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(resource(service_name))
        .build())
}

/// The SDK's default resource (which reads `OTEL_SERVICE_NAME` and
/// `OTEL_RESOURCE_ATTRIBUTES`), with `service_name` filling in for the SDK's
/// `unknown_service` placeholder.
fn resource(service_name: &'static str) -> Resource {
    let detected = Resource::builder().build();
    let named = detected
        .get(&Key::from_static_str("service.name"))
        .is_some_and(|name| !name.as_str().starts_with("unknown_service"));
    if named {
        detected
    } else {
        Resource::builder()
            .with_attribute(KeyValue::new("service.name", Value::from(service_name)))
            .build()
    }
}

/// The tracer the `tracing` layer records into.
pub(crate) fn tracer(provider: &SdkTracerProvider) -> SdkTracer {
    provider.tracer("tally")
}

/// The W3C `traceparent` of the current `tracing` span.
///
/// `None` when OpenTelemetry is off (no layer, so no span context), outside
/// any span, or when the context is otherwise invalid. Calling this starts the
/// current span's OpenTelemetry span, which is what a producer wants: the
/// context it hands on must exist.
pub fn current_traceparent() -> Option<String> {
    traceparent_of(&tracing::Span::current())
}

/// The W3C `traceparent` of `span` (see [`current_traceparent`]).
pub fn traceparent_of(span: &tracing::Span) -> Option<String> {
    let cx = span.context();
    if !cx.span().span_context().is_valid() {
        return None;
    }
    let mut carrier = HashMap::new();
    TraceContextPropagator::new().inject_context(&cx, &mut carrier);
    carrier.remove(TRACEPARENT)
}

/// Makes `span` continue the remote trace named by `traceparent`.
///
/// Call it right after creating the job span and before entering it (or
/// calling anything that starts it, such as [`current_traceparent`] inside it):
/// an OpenTelemetry span's parent is fixed once it starts. A malformed or
/// invalid `traceparent`, a span that has already started, or OpenTelemetry
/// being off leave the span as it was (the latter silently; the others with a
/// debug line), so a bad envelope never fails a job.
pub fn set_parent_from_traceparent(span: &tracing::Span, traceparent: &str) {
    let carrier = HashMap::from([(TRACEPARENT.to_owned(), traceparent.trim().to_owned())]);
    let cx = TraceContextPropagator::new().extract(&carrier);
    if !cx.span().span_context().is_valid() {
        tracing::debug!(traceparent, "ignoring an invalid traceparent");
        return;
    }
    match span.set_parent(cx) {
        Ok(())
        | Err(
            tracing_opentelemetry::SetParentError::LayerNotFound | tracing_opentelemetry::SetParentError::SpanDisabled,
        ) => {}
        Err(error) => tracing::debug!(%error, "could not continue the remote trace"),
    }
}

/// The span a worker runs one job attempt in: named `<queue> <kind>` in
/// traces (an OpenTelemetry consumer span), with the fields `queue`, `kind`,
/// `job_id` and `attempt`, continuing the producer's trace when the envelope
/// carried a `traceparent`.
///
/// Enter it (or `.instrument()` the handler future with it) only after this
/// returns; the parent is already set.
pub fn job_span(queue: &str, kind: &str, job_id: &str, attempt: u32, traceparent: Option<&str>) -> tracing::Span {
    let span = tracing::info_span!(
        "job",
        otel.name = format!("{queue} {kind}"),
        otel.kind = "consumer",
        queue,
        kind,
        job_id,
        attempt,
    );
    if let Some(traceparent) = traceparent {
        set_parent_from_traceparent(&span, traceparent);
    }
    span
}

#[cfg(test)]
mod tests {
    use opentelemetry::trace::{SpanId, TraceId};
    use opentelemetry_sdk::trace::{InMemorySpanExporter, SpanData};
    use tracing_subscriber::layer::SubscriberExt as _;

    use super::*;

    /// Runs `f` under a subscriber with the OpenTelemetry layer exporting to
    /// memory (the same layer `init` installs), and returns the ended spans.
    fn with_otel(f: impl FnOnce()) -> Vec<SpanData> {
        let exporter = InMemorySpanExporter::default();
        let provider = SdkTracerProvider::builder()
            .with_simple_exporter(exporter.clone())
            .build();
        let subscriber =
            tracing_subscriber::registry().with(tracing_opentelemetry::layer().with_tracer(tracer(&provider)));
        tracing::subscriber::with_default(subscriber, f);
        provider.force_flush().expect("in-memory flush");
        exporter.get_finished_spans().expect("in-memory spans")
    }

    fn parse(traceparent: &str) -> (TraceId, SpanId) {
        let parts: Vec<&str> = traceparent.split('-').collect();
        assert_eq!(parts.len(), 4, "{traceparent}");
        assert_eq!(parts[0], "00", "{traceparent}");
        (
            TraceId::from_hex(parts[1]).expect("trace id"),
            SpanId::from_hex(parts[2]).expect("span id"),
        )
    }

    #[test]
    fn a_job_span_continues_the_producers_trace() {
        let mut sent = None;
        let mut seen_in_job = None;
        let spans = with_otel(|| {
            // Producer side: the traceparent written into the envelope.
            let request = tracing::info_span!("http_request");
            sent = request.in_scope(current_traceparent);
            drop(request);

            // Worker side (as if in another process): a fresh root span.
            let job =
                tracing::Span::none().in_scope(|| job_span("stats", "calculate_points", "j-1", 2, sent.as_deref()));
            seen_in_job = job.in_scope(current_traceparent);
        });

        let (trace_id, producer_span) = parse(sent.as_deref().expect("producer traceparent"));
        let (job_trace, job_span_id) = parse(seen_in_job.as_deref().expect("job traceparent"));
        assert_eq!(job_trace, trace_id, "one trace across the hop");
        assert_ne!(job_span_id, producer_span);

        let job = spans
            .iter()
            .find(|s| s.name == "stats calculate_points")
            .expect("job span exported under its otel.name");
        let attribute = |key: &str| {
            job.attributes
                .iter()
                .find(|kv| kv.key.as_str() == key)
                .map(|kv| kv.value.to_string())
        };
        assert_eq!(attribute("queue").as_deref(), Some("stats"));
        assert_eq!(attribute("kind").as_deref(), Some("calculate_points"));
        assert_eq!(attribute("job_id").as_deref(), Some("j-1"));
        assert_eq!(attribute("attempt").as_deref(), Some("2"));
        assert_eq!(job.span_kind, opentelemetry::trace::SpanKind::Consumer);
        assert_eq!(job.span_context.trace_id(), trace_id);
        assert_eq!(job.parent_span_id, producer_span, "job's parent is the producer span");
        assert!(job.parent_span_is_remote);
    }

    #[test]
    fn invalid_traceparents_are_ignored() {
        let spans = with_otel(|| {
            for bad in ["", "garbage", "00-00000000000000000000000000000000-0000000000000000-01"] {
                let job = tracing::info_span!(parent: None, "job");
                set_parent_from_traceparent(&job, bad);
                let _entered = job.enter();
            }
        });
        assert_eq!(spans.len(), 3);
        for span in &spans {
            assert_eq!(span.parent_span_id, SpanId::INVALID, "stays a root span");
        }
    }

    #[test]
    fn no_traceparent_without_the_opentelemetry_layer() {
        let subscriber = tracing_subscriber::registry();
        tracing::subscriber::with_default(subscriber, || {
            let span = tracing::info_span!("plain");
            assert_eq!(span.in_scope(current_traceparent), None);
            // And continuing a trace is a harmless no-op.
            set_parent_from_traceparent(&span, "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01");
        });
        assert_eq!(current_traceparent(), None, "outside any span");
    }
}
