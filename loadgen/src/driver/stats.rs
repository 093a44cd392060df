//! Live measurements of a run, shared by every task of the driver.
//!
//! Latencies go into HdrHistograms in microseconds, counters into atomics,
//! and categorical counts (reject reasons, gRPC codes) into small maps. The
//! locks are held for one record at a time, which is negligible next to a
//! network round trip even at tens of thousands of reports per second.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

/// Distinct reject reasons or error codes kept before lumping the rest
/// together, so a misbehaving server cannot grow the summary without bound.
const MAX_CATEGORIES: usize = 64;

/// Latencies are recorded up to one hour; anything longer is clamped.
const MAX_MICROS: u64 = 3_600_000_000;

/// A latency histogram in microseconds.
#[derive(Debug)]
pub struct Latency(Mutex<Histogram<u64>>);

impl Default for Latency {
    fn default() -> Self {
        Latency(Mutex::new(new_histogram()))
    }
}

fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, MAX_MICROS, 3).expect("static histogram bounds are valid")
}

impl Latency {
    pub fn record(&self, elapsed: Duration) {
        let micros = u64::try_from(elapsed.as_micros()).unwrap_or(MAX_MICROS);
        lock(&self.0).saturating_record(micros.clamp(1, MAX_MICROS));
    }

    pub fn summary(&self) -> LatencySummary {
        LatencySummary::of(&lock(&self.0))
    }

    /// The summary since the last call, for per-second progress lines.
    pub fn take_interval(&self) -> LatencySummary {
        let mut histogram = lock(&self.0);
        let summary = LatencySummary::of(&histogram);
        histogram.reset();
        summary
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A panic elsewhere must not hide the measurements taken so far.
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Percentiles of one latency histogram, in milliseconds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct LatencySummary {
    pub count: u64,
    pub mean_ms: f64,
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    pub p999_ms: f64,
    pub max_ms: f64,
}

impl LatencySummary {
    fn of(histogram: &Histogram<u64>) -> LatencySummary {
        if histogram.is_empty() {
            return LatencySummary::default();
        }
        let ms = |micros: u64| micros as f64 / 1000.0;
        LatencySummary {
            count: histogram.len(),
            mean_ms: histogram.mean() / 1000.0,
            p50_ms: ms(histogram.value_at_quantile(0.50)),
            p90_ms: ms(histogram.value_at_quantile(0.90)),
            p99_ms: ms(histogram.value_at_quantile(0.99)),
            p999_ms: ms(histogram.value_at_quantile(0.999)),
            max_ms: ms(histogram.max()),
        }
    }
}

/// Counts by category (a reject reason, a gRPC code), bounded in size.
#[derive(Debug, Default)]
pub struct Tally(Mutex<BTreeMap<String, u64>>);

impl Tally {
    pub fn add(&self, category: &str) {
        let mut map = lock(&self.0);
        if let Some(count) = map.get_mut(category) {
            *count += 1;
        } else if map.len() < MAX_CATEGORIES {
            map.insert(category.to_owned(), 1);
        } else {
            *map.entry("(other)".to_owned()).or_default() += 1;
        }
    }

    pub fn total(&self) -> u64 {
        lock(&self.0).values().sum()
    }

    pub fn snapshot(&self) -> BTreeMap<String, u64> {
        lock(&self.0).clone()
    }
}

/// A monotonically increasing count.
#[derive(Debug, Default)]
pub struct Counter(AtomicU64);

impl Counter {
    pub fn add(&self, n: u64) {
        self.0.fetch_add(n, Ordering::Relaxed);
    }

    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// Everything measured during a run.
#[derive(Debug, Default)]
pub struct Stats {
    /// Reports handed to a stream by the generator.
    pub sent: Counter,
    /// Messages the streams sent: one per report on `StreamReports`, one
    /// per batch on `StreamReportBatches`.
    pub messages: Counter,
    /// Arrivals for which the simulator had no rider to report (no train
    /// running at that simulated time).
    pub no_report: Counter,
    /// Reports dispatched later than the lateness threshold.
    pub late: Counter,
    pub accepted: Counter,
    pub duplicate: Counter,
    pub rejected: Counter,
    /// Reports never acknowledged: in flight when their stream failed, or
    /// in flight or still queued when the drain deadline passed.
    pub unacked: Counter,
    /// Acks that did not match the oldest report in flight on their stream.
    pub out_of_order_acks: Counter,
    pub reject_reasons: Tally,
    /// Failed or ended-early report streams, by gRPC code.
    pub stream_errors: Tally,
    /// Intended send time to ack, any status.
    pub ack_latency: Latency,
    /// Same as `ack_latency`, reset every progress line.
    pub ack_latency_interval: Latency,
    /// How late the generator dispatched each report against its schedule.
    pub generator_lag: Latency,
    /// Same as `generator_lag`, reset every progress line.
    pub generator_lag_interval: Latency,
    /// Intended send time of a report to the first watched update covering it.
    pub freshness: Latency,
    pub watch_errors: Tally,
    /// Intended query time to `GetOccupancy` response.
    pub query_latency: Latency,
    pub query_errors: Tally,
}

/// The category name of a gRPC status code, e.g. `Unavailable`.
pub fn code_name(status: &tonic::Status) -> String {
    format!("{:?}", status.code())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn latency_percentiles_come_out_in_milliseconds() {
        let latency = Latency::default();
        for ms in 1..=100 {
            latency.record(Duration::from_millis(ms));
        }
        let summary = latency.summary();
        assert_eq!(summary.count, 100);
        assert!((summary.p50_ms - 50.0).abs() < 0.1, "{summary:?}");
        assert!((summary.p99_ms - 99.0).abs() < 0.1, "{summary:?}");
        assert!((summary.max_ms - 100.0).abs() < 0.1, "{summary:?}");
    }

    #[test]
    fn interval_resets_but_an_empty_histogram_is_all_zero() {
        let latency = Latency::default();
        latency.record(Duration::from_secs(2));
        assert_eq!(latency.take_interval().count, 1);
        assert_eq!(latency.take_interval(), LatencySummary::default());
    }

    #[test]
    fn huge_latencies_are_clamped_not_lost() {
        let latency = Latency::default();
        latency.record(Duration::from_secs(10 * 3600));
        assert_eq!(latency.summary().count, 1);
    }

    #[test]
    fn tally_is_bounded() {
        let tally = Tally::default();
        for i in 0..100 {
            tally.add(&format!("reason {i}"));
        }
        tally.add("reason 0");
        let snapshot = tally.snapshot();
        assert_eq!(snapshot.len(), MAX_CATEGORIES + 1);
        assert_eq!(snapshot["reason 0"], 2);
        assert_eq!(snapshot["(other)"], 100 - MAX_CATEGORIES as u64);
        assert_eq!(tally.total(), 101);
    }
}
