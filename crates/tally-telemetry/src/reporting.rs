//! Sentry: client set-up, the `tracing` layers that feed it, and job reports.
//!
//! The rules, from issue 6: a job that fails its last attempt or is
//! dead-lettered is one Sentry event tagged with queue, kind, job id and
//! attempt ([`capture_job_failure`]); a retry in between is a breadcrumb
//! ([`job_breadcrumb`]); a panic is an event (Sentry's panic integration);
//! any other `ERROR` log line (a gateway 5xx, say) is an event through the
//! error layer, with the `INFO`/`WARN` lines before it as breadcrumbs.
//!
//! Both job functions also write their own log line under [`JOB_TARGET`], a
//! target the Sentry layers skip, so one failure is one log line and one
//! event. Callers should therefore not log the same failure at `ERROR`
//! themselves.
//!
//! With `SENTRY_DSN` unset no client is bound and every capture is a cheap
//! no-op.

use std::borrow::Cow;
use std::sync::Arc;
use std::time::Duration;

use sentry::integrations::tracing::{BreadcrumbLayer, ErrorLayer};
use sentry::protocol::{Breadcrumb, Event, Level, Value};
use sentry::transports::ReqwestHttpTransportOptions;
use sentry::{Transport, TransportFactory, TransportOptions};
use tracing::Metadata;
use tracing_subscriber::Layer;
use tracing_subscriber::filter::filter_fn;
use tracing_subscriber::registry::LookupSpan;

use crate::TelemetryError;
use crate::settings::Settings;

/// The `tracing` target of the log lines written by the job report
/// functions; the Sentry layers skip it because the functions report directly.
pub const JOB_TARGET: &str = "tally::job";

/// Sentry `release`: the workspace version all tally binaries share.
pub const RELEASE: &str = concat!("tally@", env!("CARGO_PKG_VERSION"));

/// How long shutdown may wait for queued events to reach Sentry.
pub(crate) const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(2);

/// Connection timeout of the Sentry transport's HTTP client.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Whole-request timeout of the Sentry transport's HTTP client.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// Binds a Sentry client to the main hub when `SENTRY_DSN` is set.
pub(crate) fn init(
    settings: &Settings,
    service_name: &'static str,
) -> Result<Option<sentry::ClientInitGuard>, TelemetryError> {
    let Some(dsn) = settings.sentry_dsn.as_deref() else {
        return Ok(None);
    };
    // `ClientOptions::dsn` panics on a bad DSN; check first and say which variable.
    if let Err(error) = dsn.parse::<sentry::types::Dsn>() {
        return Err(TelemetryError::InvalidSetting {
            name: "SENTRY_DSN",
            reason: format!("not a valid Sentry DSN ({error})"),
        });
    }
    // Sentry's default client has no timeouts: one request to a server that
    // accepts and never answers would hold its transport thread forever.
    let client = reqwest::Client::builder()
        .connect_timeout(CONNECT_TIMEOUT)
        .timeout(REQUEST_TIMEOUT)
        .build()
        .map_err(|error| TelemetryError::InvalidSetting {
            name: "SENTRY_DSN",
            reason: format!("cannot build the HTTP client for Sentry ({error})"),
        })?;
    let transport = TimeoutTransport { client };
    let mut options = sentry::ClientOptions::new()
        .dsn(dsn)
        .release(RELEASE)
        .shutdown_timeout(SHUTDOWN_TIMEOUT)
        .transport(transport);
    if let Some(environment) = &settings.sentry_environment {
        options = options.environment(environment.clone());
    }
    let guard = sentry::init(options);
    sentry::configure_scope(|scope| scope.set_tag("service", service_name));
    Ok(Some(guard))
}

/// Builds Sentry's reqwest transport around a client that has timeouts.
#[derive(Debug, Clone)]
struct TimeoutTransport {
    /// The shared HTTP client (cheap to clone).
    client: reqwest::Client,
}

impl TransportFactory for TimeoutTransport {
    fn create_transport_with_options(&self, options: TransportOptions) -> Arc<dyn Transport> {
        Arc::new(
            ReqwestHttpTransportOptions::from(options)
                .with_client(self.client.clone())
                .build(),
        )
    }
}

/// Targets whose `ERROR` lines must never become Sentry events: job reports
/// (already captured), and telemetry's own plumbing, so that a collector or
/// Sentry outage cannot flood Sentry.
fn skipped_target(target: &str) -> bool {
    target == JOB_TARGET || target.starts_with("opentelemetry") || target.starts_with("sentry")
}

/// `INFO` and `WARN` lines become breadcrumbs; `ERROR` lines become events.
pub(crate) fn layers<S>() -> impl Layer<S> + Send + Sync
where
    S: tracing::Subscriber + for<'a> LookupSpan<'a>,
{
    let breadcrumbs = BreadcrumbLayer::new().with_filter(filter_fn(|meta: &Metadata<'_>| {
        meta.is_event()
            && matches!(*meta.level(), tracing::Level::INFO | tracing::Level::WARN)
            && !skipped_target(meta.target())
    }));
    let errors = ErrorLayer::new().with_filter(filter_fn(|meta: &Metadata<'_>| {
        meta.is_event() && *meta.level() == tracing::Level::ERROR && !skipped_target(meta.target())
    }));
    breadcrumbs.and_then(errors)
}

/// Reports a job that failed its last attempt (`dead == false`) or was moved
/// to the dead set (`dead == true`, e.g. bad input or too many crashes) as one
/// Sentry event tagged `queue`, `kind`, `job_id`, `attempt` and `dead`, and
/// writes one `ERROR` log line with the same fields.
///
/// Events are grouped per queue, kind and outcome, not per message, so a
/// thousand failures of one job kind are one Sentry issue. No-op for Sentry
/// when it is off (the log line is still written).
pub fn capture_job_failure(queue: &str, kind: &str, job_id: &str, attempt: u32, reason: &str, dead: bool) {
    let outcome = if dead {
        "dead-lettered"
    } else {
        "failed its last attempt"
    };
    tracing::error!(target: JOB_TARGET, queue, kind, job_id, attempt, dead, reason, "job {outcome}");

    let hub = sentry::Hub::current();
    if hub.client().is_none() {
        return;
    }
    let mut event = Event {
        level: Level::Error,
        message: Some(format!("{kind} job {outcome}: {reason}")),
        logger: Some(JOB_TARGET.to_owned()),
        fingerprint: Cow::Owned(vec![
            Cow::Borrowed("tally-job-failure"),
            Cow::Owned(queue.to_owned()),
            Cow::Owned(kind.to_owned()),
            Cow::Borrowed(if dead { "dead" } else { "failed" }),
        ]),
        ..Event::default()
    };
    event.tags.insert("queue".to_owned(), queue.to_owned());
    event.tags.insert("kind".to_owned(), kind.to_owned());
    event.tags.insert("job_id".to_owned(), job_id.to_owned());
    event.tags.insert("attempt".to_owned(), attempt.to_string());
    event.tags.insert("dead".to_owned(), dead.to_string());
    event.extra.insert("reason".to_owned(), Value::from(reason));
    hub.capture_event(event);
}

/// Records a failed attempt that will be retried: a `WARN` log line and a
/// Sentry breadcrumb (not an event), so the attempts before a final failure
/// show up on its event when they happened in the same process.
pub fn job_breadcrumb(queue: &str, kind: &str, job_id: &str, attempt: u32, message: &str) {
    tracing::warn!(target: JOB_TARGET, queue, kind, job_id, attempt, "job attempt failed, will retry: {message}");

    let hub = sentry::Hub::current();
    if hub.client().is_none() {
        return;
    }
    let mut breadcrumb = Breadcrumb {
        ty: "default".to_owned(),
        category: Some("job".to_owned()),
        level: Level::Warning,
        message: Some(format!("{kind} job {job_id} attempt {attempt} failed: {message}")),
        ..Breadcrumb::default()
    };
    breadcrumb.data.insert("queue".to_owned(), Value::from(queue));
    breadcrumb.data.insert("kind".to_owned(), Value::from(kind));
    breadcrumb.data.insert("job_id".to_owned(), Value::from(job_id));
    breadcrumb.data.insert("attempt".to_owned(), Value::from(attempt));
    hub.add_breadcrumb(breadcrumb);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn last_attempt_failure_is_one_tagged_event() {
        let events = sentry::test::with_captured_events(|| {
            capture_job_failure("stats", "calculate_points", "job-1", 3, "boom", false);
        });
        assert_eq!(events.len(), 1, "{events:?}");
        let event = &events[0];
        assert_eq!(event.tags.get("queue").map(String::as_str), Some("stats"));
        assert_eq!(event.tags.get("kind").map(String::as_str), Some("calculate_points"));
        assert_eq!(event.tags.get("job_id").map(String::as_str), Some("job-1"));
        assert_eq!(event.tags.get("attempt").map(String::as_str), Some("3"));
        assert_eq!(event.tags.get("dead").map(String::as_str), Some("false"));
        assert!(
            event.message.as_deref().is_some_and(|m| m.contains("boom")),
            "{event:?}"
        );
    }

    #[test]
    fn retries_are_breadcrumbs_on_the_final_event_not_events() {
        let events = sentry::test::with_captured_events(|| {
            job_breadcrumb("scoring", "score_match", "job-2", 1, "db timeout");
            job_breadcrumb("scoring", "score_match", "job-2", 2, "db timeout");
        });
        assert!(events.is_empty(), "retries must not be events: {events:?}");

        let events = sentry::test::with_captured_events(|| {
            job_breadcrumb("scoring", "score_match", "job-3", 1, "db timeout");
            capture_job_failure("scoring", "score_match", "job-3", 2, "bad payload", true);
        });
        assert_eq!(events.len(), 1);
        assert_eq!(events[0].tags.get("dead").map(String::as_str), Some("true"));
        assert_eq!(events[0].breadcrumbs.len(), 1, "{:?}", events[0].breadcrumbs);
    }

    #[test]
    fn job_reports_and_telemetry_plumbing_are_skipped_by_the_layers() {
        assert!(skipped_target(JOB_TARGET));
        assert!(skipped_target("opentelemetry_sdk"));
        assert!(!skipped_target("cron_gateway::routes"));
    }

    #[test]
    fn error_log_lines_become_events_and_info_lines_breadcrumbs() {
        use tracing_subscriber::layer::SubscriberExt;

        let subscriber = tracing_subscriber::registry().with(layers());
        let events = sentry::test::with_captured_events(|| {
            tracing::subscriber::with_default(subscriber, || {
                tracing::info!("before");
                tracing::error!(status = 503, "gateway answered 503");
                // Job reports go to Sentry directly, never twice via the layer.
                capture_job_failure("stats", "refresh_views", "job-4", 3, "timeout", false);
            });
        });
        assert_eq!(events.len(), 2, "{events:?}");
        assert!(
            events[0]
                .breadcrumbs
                .iter()
                .any(|b| b.message.as_deref() == Some("before"))
        );
    }
}
