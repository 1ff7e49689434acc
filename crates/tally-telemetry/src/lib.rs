//! tally-telemetry: one telemetry set-up for every tally binary.
//!
//! `main` calls [`init`] first and keeps the returned [`TelemetryGuard`] until
//! it returns; dropping the guard flushes traces and Sentry events. What is on
//! is decided by the environment alone:
//!
//! | piece | switched on by | module |
//! | --- | --- | --- |
//! | log lines on stderr, `RUST_LOG` filter (default `info`) | always; `LOG_FORMAT=json` for JSON, `text` (default) for humans | here |
//! | OpenTelemetry traces over OTLP/HTTP | `OTEL_EXPORTER_OTLP_ENDPOINT` or `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` (and the other standard `OTEL_*` variables) | [`otel`] |
//! | W3C trace-context propagation | always installed; spans carry a context only when traces are on | [`otel`] |
//! | Sentry events, breadcrumbs and panics | `SENTRY_DSN` (with `SENTRY_ENVIRONMENT`) | [`reporting`] |
//! | Prometheus recorder for `metrics` | always; services serve [`render_metrics`] on `/metrics` | [`prometheus`] |
//!
//! Logs go to stderr so that stdout stays clean for the CLI's `--json` output.
//! An unreachable collector or Sentry never blocks or stops a service: both
//! export from background threads with bounded queues and bounded shutdown.

pub mod otel;
pub mod prometheus;
pub mod reporting;
pub mod settings;

use std::io::IsTerminal as _;
use std::sync::Once;
use std::sync::atomic::{AtomicBool, Ordering};

use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing_subscriber::EnvFilter;
use tracing_subscriber::Layer as _;
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;

pub use otel::{current_traceparent, job_span, set_parent_from_traceparent, traceparent_of};
pub use prometheus::render_metrics;
pub use reporting::{capture_job_failure, job_breadcrumb};
pub use settings::{LogFormat, Settings};

/// Why telemetry could not start. Each message names the variable at fault.
#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    /// An environment variable has a value that cannot be used.
    #[error("invalid {name}: {reason}")]
    InvalidSetting {
        /// The variable's name.
        name: &'static str,
        /// What is wrong with its value.
        reason: String,
    },
    /// The OTLP exporter could not be built from the `OTEL_EXPORTER_OTLP_*` settings.
    #[error("cannot set up OTLP trace export (check the OTEL_EXPORTER_OTLP_* variables): {0}")]
    Otlp(String),
    /// `init` already ran in this process, or another global `tracing`
    /// subscriber or `log` logger is installed (tests: use [`init_for_tests`]).
    #[error("telemetry is already initialised in this process")]
    AlreadyInitialized,
}

/// Keeps exporters alive; dropping it flushes and shuts down OpenTelemetry
/// (at most 3 s) and flushes Sentry (at most 2 s). Hold it in `main` until
/// exit: after the drop no more Sentry events are delivered.
#[must_use = "dropping the guard shuts telemetry down at once"]
pub struct TelemetryGuard {
    /// The OTLP pipeline, when trace export is on.
    tracer_provider: Option<SdkTracerProvider>,
    /// The Sentry client binding, when `SENTRY_DSN` is set.
    sentry: Option<sentry::ClientInitGuard>,
    /// The shape of the log lines, so [`TelemetryGuard::report_fatal`]
    /// writes a fatal error once in it.
    log_format: LogFormat,
}

impl TelemetryGuard {
    /// Whether spans are exported over OTLP.
    pub fn otlp_enabled(&self) -> bool {
        self.tracer_provider.is_some()
    }

    /// Whether a Sentry client is bound.
    pub fn sentry_enabled(&self) -> bool {
        self.sentry.is_some()
    }

    /// Reports the error a service stops on, once: with text logs, the
    /// line `service: error` on stderr (and a Sentry event when Sentry is
    /// on); with JSON logs, one `error` event, which log collectors and
    /// Sentry see like any other (or the plain line when `RUST_LOG`
    /// silences errors, so a fatal error is never invisible).
    pub fn report_fatal(&self, service: &str, line: &str) {
        if self.log_format == LogFormat::Json && tracing::enabled!(tracing::Level::ERROR) {
            tracing::error!(error = %line, "{service} failed");
            return;
        }
        eprintln!("{service}: {line}");
        if self.sentry.is_some() {
            sentry::capture_message(&format!("{service} failed: {line}"), sentry::Level::Error);
        }
    }
}

impl std::fmt::Debug for TelemetryGuard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TelemetryGuard")
            .field("otlp", &self.otlp_enabled())
            .field("sentry", &self.sentry_enabled())
            .finish()
    }
}

impl Drop for TelemetryGuard {
    fn drop(&mut self) {
        if let Some(provider) = self.tracer_provider.take()
            && let Err(error) = provider.shutdown_with_timeout(otel::SHUTDOWN_TIMEOUT)
        {
            // The subscriber may already be gone at exit; stderr always works.
            eprintln!("tally-telemetry: trace export did not shut down cleanly: {error}");
        }
        if let Some(sentry) = self.sentry.take() {
            // Send what is queued, within the timeout. Then leak the guard:
            // dropping it joins the transport thread, which waits for an
            // in-flight request however long that takes; the process is
            // about to exit anyway.
            sentry.flush(Some(reporting::SHUTDOWN_TIMEOUT));
            std::mem::forget(sentry);
        }
    }
}

/// Set by the first call to [`init`].
static INITIALISED: AtomicBool = AtomicBool::new(false);

/// Sets up logging, tracing, Sentry and metrics for `service_name` from the
/// environment (see the crate documentation for the variables).
///
/// `service_name` names the service in traces unless `OTEL_SERVICE_NAME` or
/// `OTEL_RESOURCE_ATTRIBUTES` does, and is tagged on Sentry events. With no
/// collector and no DSN the only output is one `info` line saying what is on.
/// A second call in the same process returns
/// [`TelemetryError::AlreadyInitialized`] and changes nothing.
pub fn init(service_name: &'static str) -> Result<TelemetryGuard, TelemetryError> {
    if INITIALISED.swap(true, Ordering::SeqCst) {
        return Err(TelemetryError::AlreadyInitialized);
    }
    // Sentry's and the OTLP exporter's HTTP clients use rustls without a
    // built-in crypto provider; building one before this line panics. An
    // error means a provider is installed already, which is just as good.
    let _ = rustls::crypto::ring::default_provider().install_default();

    let settings = Settings::from_env()?;
    let filter = EnvFilter::try_new(&settings.filter).map_err(|error| TelemetryError::InvalidSetting {
        name: "RUST_LOG",
        reason: error.to_string(),
    })?;

    let tracer_provider = match settings.otlp_endpoint {
        Some(_) => Some(otel::build_provider(service_name)?),
        None => None,
    };
    let sentry = reporting::init(&settings, service_name)?;
    let guard = TelemetryGuard {
        tracer_provider,
        sentry,
        log_format: settings.log_format,
    };

    if let Some(provider) = &guard.tracer_provider {
        // Before the subscriber exists, so the SDK's own "provider set" info
        // line goes nowhere and startup stays at one line.
        opentelemetry::global::set_tracer_provider(provider.clone());
    }
    let otel_layer = guard
        .tracer_provider
        .as_ref()
        .map(|provider| tracing_opentelemetry::layer().with_tracer(otel::tracer(provider)));
    let fmt_layer = match settings.log_format {
        LogFormat::Text => tracing_subscriber::fmt::layer()
            .with_writer(std::io::stderr)
            .with_ansi(std::io::stderr().is_terminal())
            .boxed(),
        LogFormat::Json => tracing_subscriber::fmt::layer()
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(false)
            .with_writer(std::io::stderr)
            .boxed(),
    };
    let sentry_layers = guard.sentry.is_some().then(reporting::layers);

    tracing_subscriber::registry()
        .with(filter)
        .with(otel_layer)
        .with(fmt_layer)
        .with(sentry_layers)
        .try_init()
        .map_err(|_| TelemetryError::AlreadyInitialized)?;

    opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());
    prometheus::install();

    tracing::info!(
        service = service_name,
        version = env!("CARGO_PKG_VERSION"),
        log_format = %settings.log_format,
        filter = %settings.filter,
        otlp_traces = settings.otlp_endpoint.as_deref().unwrap_or("off"),
        sentry = match (&guard.sentry, &settings.sentry_environment) {
            (None, _) => "off",
            (Some(_), Some(environment)) => environment.as_str(),
            (Some(_), None) => "on",
        },
        metrics = "prometheus",
        "telemetry initialised"
    );
    Ok(guard)
}

/// Telemetry for tests: silent unless `TEST_LOG` is set, in which case log
/// lines (filtered by `RUST_LOG`, default `info`) go to the test harness's
/// captured output. Installs the Prometheus recorder and the trace-context
/// propagator so tests can read `/metrics`. Safe to call from every test.
pub fn init_for_tests() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        if std::env::var_os("TEST_LOG").is_some() {
            let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(settings::DEFAULT_FILTER));
            // Another subscriber may be installed already; then that one logs.
            let _ = tracing_subscriber::registry()
                .with(filter)
                .with(tracing_subscriber::fmt::layer().with_test_writer())
                .try_init();
        }
        opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());
        prometheus::install();
    });
}
