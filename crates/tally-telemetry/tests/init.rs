//! `init` as a binary's `main` calls it, in a process of its own (this test
//! binary) because it installs process-wide state.
//!
//! Runs with whatever the environment holds; under `cargo test` that means
//! no collector and no DSN, the case every developer machine and CI is in.

#[test]
fn init_once_then_a_second_call_is_an_error_not_a_panic() {
    let guard = tally_telemetry::init("telemetry-test").expect("first init succeeds");
    if std::env::var_os("OTEL_EXPORTER_OTLP_ENDPOINT").is_none()
        && std::env::var_os("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT").is_none()
    {
        assert!(!guard.otlp_enabled());
        assert_eq!(tally_telemetry::current_traceparent(), None);
    }
    if std::env::var_os("SENTRY_DSN").is_none() {
        assert!(!guard.sentry_enabled());
        // No client: reporting is a no-op and must not panic.
        tally_telemetry::capture_job_failure("stats", "refresh_views", "j1", 3, "boom", false);
    }

    let second = tally_telemetry::init("telemetry-test");
    assert!(
        matches!(second, Err(tally_telemetry::TelemetryError::AlreadyInitialized)),
        "{second:?}"
    );

    metrics::counter!("tally_init_test_total").increment(1);
    assert!(tally_telemetry::render_metrics().contains("tally_init_test_total 1"));
    drop(guard);
}
