//! The process-wide Prometheus registry that both the server and the
//! aggregator expose on `/metrics`.
//!
//! A `metrics` recorder can be installed only once per process, and a process
//! may run a server and aggregators side by side (the demo, the tests), so it
//! is installed here, once, on first use, and every `/metrics` endpoint of the
//! process renders the same registry. Metric names are part of the contract
//! with dashboards: they are listed in the README and kept stable.

use std::sync::OnceLock;

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

/// Media type of the Prometheus text exposition format.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4";

/// Buckets of every `*_seconds` histogram: 100 µs to 30 s.
const SECONDS_BUCKETS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0, 30.0,
];

/// Buckets of every `*_size` histogram (entries per batch).
const SIZE_BUCKETS: &[f64] = &[
    1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0, 1024.0, 4096.0,
];

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// The handle of the process-wide registry, installing it as the global
/// `metrics` recorder on first call.
///
/// When another recorder was installed first (by an embedding program), the
/// handle renders an empty registry and a warning says why.
pub fn prometheus() -> &'static PrometheusHandle {
    HANDLE.get_or_init(|| {
        let builder = PrometheusBuilder::new()
            .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), SECONDS_BUCKETS)
            .and_then(|b| b.set_buckets_for_metric(Matcher::Suffix("_size".into()), SIZE_BUCKETS))
            .expect("bucket lists are not empty");
        let recorder = builder.build_recorder();
        let handle = recorder.handle();
        if let Err(e) = metrics::set_global_recorder(recorder) {
            tracing::warn!(error = %e, "another metrics recorder is installed; /metrics is empty");
        }
        handle
    })
}

/// The registry in the Prometheus text format.
pub fn render() -> String {
    let handle = prometheus();
    handle.run_upkeep();
    handle.render()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recorded_series_are_rendered_with_buckets() {
        prometheus();
        metrics::counter!("crowd_test_events_total", "reason" => "why").increment(2);
        metrics::histogram!("crowd_test_wait_seconds").record(0.003);
        let text = render();
        assert!(
            text.contains("crowd_test_events_total{reason=\"why\"} 2"),
            "{text}"
        );
        assert!(
            text.contains("crowd_test_wait_seconds_bucket{le=\"0.005\"} 1"),
            "{text}"
        );
        // A second call returns the same registry.
        assert!(std::ptr::eq(prometheus(), prometheus()));
    }
}
