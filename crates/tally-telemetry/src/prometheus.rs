//! Prometheus: the process-wide `metrics` recorder and its text rendering.
//!
//! Services record with the `metrics` macros (`counter!`, `gauge!`,
//! `histogram!`) and serve [`render_metrics`] on their own `/metrics` route;
//! the exporter runs no HTTP listener of its own. Names are written in full
//! by the caller following Prometheus conventions (`_total` on counters,
//! `_seconds` and other base units); nothing is appended here.
//!
//! Histograms whose name ends in `_seconds` are rendered as real Prometheus
//! histograms with [`SECONDS_BUCKETS`] (so they can be aggregated across pods);
//! any other histogram is rendered as a summary.

use std::sync::OnceLock;
use std::time::Duration;

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

/// Bucket bounds, in seconds, for every `*_seconds` histogram: from half a
/// millisecond (enqueue-to-start latency) to the 2 minute job timeout.
pub const SECONDS_BUCKETS: &[f64] = &[
    0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0,
];

/// How often raw histogram samples are folded into buckets when nobody scrapes.
const UPKEEP_INTERVAL: Duration = Duration::from_secs(5);

/// The one recorder handle of the process.
static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// Installs the Prometheus recorder as the global `metrics` recorder (once per
/// process) and returns its handle.
///
/// If another recorder was installed first, the handle still works but renders
/// only what it recorded itself (nothing); that is reported once as a warning.
pub(crate) fn install() -> &'static PrometheusHandle {
    HANDLE.get_or_init(|| {
        let recorder = PrometheusBuilder::new()
            .set_buckets_for_metric(Matcher::Suffix("_seconds".to_owned()), SECONDS_BUCKETS)
            .expect("SECONDS_BUCKETS is not empty")
            .build_recorder();
        let handle = recorder.handle();
        if let Err(error) = metrics::set_global_recorder(recorder) {
            tracing::warn!(%error, "another metrics recorder is installed; /metrics will be empty");
        }
        // Without the exporter's HTTP listener nobody runs upkeep for us, and
        // unscraped histograms would keep every raw sample.
        let upkeep = handle.clone();
        let spawned = std::thread::Builder::new()
            .name("metrics-upkeep".to_owned())
            .spawn(move || {
                loop {
                    std::thread::sleep(UPKEEP_INTERVAL);
                    upkeep.run_upkeep();
                }
            });
        if let Err(error) = spawned {
            tracing::warn!(%error, "could not start the metrics upkeep thread");
        }
        handle
    })
}

/// The current metrics in the Prometheus text exposition format, for a
/// `/metrics` route (content type `text/plain; version=0.0.4`).
///
/// Installs the recorder if `init` has not (metrics recorded before that are
/// not kept: nothing was recording them).
pub fn render_metrics() -> String {
    install().render()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn render_contains_a_counter_after_incrementing_it() {
        install();
        metrics::counter!("tally_test_things_total", "queue" => "stats").increment(3);
        let text = render_metrics();
        assert!(
            text.contains(r#"tally_test_things_total{queue="stats"} 3"#),
            "counter missing from:\n{text}"
        );
    }

    #[test]
    fn seconds_histograms_have_buckets() {
        install();
        metrics::histogram!("tally_test_wait_seconds").record(0.003);
        let text = render_metrics();
        assert!(text.contains("# TYPE tally_test_wait_seconds histogram"), "{text}");
        assert!(
            text.contains(r#"tally_test_wait_seconds_bucket{le="0.005"} 1"#),
            "{text}"
        );
        assert!(
            text.contains(r#"tally_test_wait_seconds_bucket{le="0.0025"} 0"#),
            "{text}"
        );
        assert!(text.contains("tally_test_wait_seconds_count 1"), "{text}");
    }
}
