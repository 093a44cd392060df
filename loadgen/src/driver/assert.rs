//! Pass/fail thresholds of a run (`--min-rate`, `--max-p99-ms`, ...).
//!
//! A run that is not valid (the generator could not keep to its schedule)
//! fails regardless: its latencies describe the load generator, not the
//! system under test.

use serde::Serialize;

use super::stats::LatencySummary;
use super::summary::RunSummary;

/// How far behind its schedule the generator may run before the run is
/// INVALID.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Validity {
    /// A report leaving this much behind schedule counts as late.
    pub late_ms: f64,
    /// Limit on the p99 of the generator's lag.
    pub max_lag_p99_ms: f64,
    /// Limit on the share of reports that left late.
    pub max_late_fraction: f64,
}

impl Validity {
    /// Why the run is invalid; empty when it is valid. `late` of
    /// `dispatched` arrivals left late.
    pub fn check(&self, lag: &LatencySummary, late: u64, dispatched: u64) -> Vec<String> {
        let mut reasons = Vec::new();
        if lag.p99_ms > self.max_lag_p99_ms {
            reasons.push(format!(
                "generator lag p99 {:.1} ms > {} ms",
                lag.p99_ms, self.max_lag_p99_ms
            ));
        }
        let late_fraction = if dispatched == 0 {
            0.0
        } else {
            late as f64 / dispatched as f64
        };
        if late_fraction > self.max_late_fraction {
            reasons.push(format!(
                "{:.2}% of reports sent more than {} ms late (limit {:.2}%)",
                late_fraction * 100.0,
                self.late_ms,
                self.max_late_fraction * 100.0
            ));
        }
        reasons
    }
}

/// Thresholds a run must meet; each is off unless given.
#[derive(Debug, Clone, Default, PartialEq, clap::Args, Serialize)]
pub struct Thresholds {
    /// Fail unless at least this many acks per second came back on average.
    #[arg(long, value_name = "REPORTS_PER_SEC")]
    pub min_rate: Option<f64>,
    /// Fail if the p99 ack latency (from intended send time) is above this.
    #[arg(long, value_name = "MS")]
    pub max_p99_ms: Option<f64>,
    /// Fail if the share of cars estimated within one level of the truth
    /// (0..1, last accuracy round) is below this.
    #[arg(long, value_name = "FRACTION")]
    pub min_within_one: Option<f64>,
    /// Fail if the share of running trains with an estimate (0..1, last
    /// accuracy round) is below this.
    #[arg(long, value_name = "FRACTION")]
    pub min_coverage: Option<f64>,
    /// Fail if the p99 freshness (report sent to watcher update) is above this.
    #[arg(long, value_name = "MS")]
    pub max_freshness_p99_ms: Option<f64>,
    /// Fail if the p99 `GetOccupancy` latency is above this.
    #[arg(long, value_name = "MS")]
    pub max_query_p99_ms: Option<f64>,
    /// Fail if more than this share of sent reports was not ACCEPTED
    /// (rejected, duplicate or never acknowledged).
    #[arg(long, value_name = "FRACTION")]
    pub max_not_accepted: Option<f64>,
    /// Fail if more than this many stream, watch or query errors occurred.
    #[arg(long, value_name = "COUNT")]
    pub max_errors: Option<u64>,
}

impl Thresholds {
    /// One message per threshold missed, naming the flag; empty when all pass.
    pub fn check(&self, summary: &RunSummary) -> Vec<String> {
        let mut failures = Vec::new();
        if !summary.valid {
            failures.push(format!(
                "run INVALID (generator fell behind its schedule): {}",
                summary.invalid_reasons.join("; ")
            ));
        }
        let mut at_least = |flag: &str, limit: Option<f64>, actual: Option<f64>, unit: &str| {
            if let Some(limit) = limit {
                match actual {
                    Some(actual) if actual >= limit => {}
                    Some(actual) => {
                        failures.push(format!("--{flag} {limit}: got {}{unit}", number(actual)));
                    }
                    None => failures.push(format!("--{flag} {limit}: not measured")),
                }
            }
        };
        let accuracy = summary.accuracy.as_ref();
        at_least("min-rate", self.min_rate, Some(summary.achieved_rate), "/s");
        at_least(
            "min-within-one",
            self.min_within_one,
            accuracy.map(|a| a.within_one),
            "",
        );
        at_least(
            "min-coverage",
            self.min_coverage,
            accuracy.map(|a| a.coverage),
            "",
        );
        let mut at_most = |flag: &str, limit: Option<f64>, actual: Option<f64>, unit: &str| {
            if let Some(limit) = limit {
                match actual {
                    Some(actual) if actual <= limit => {}
                    Some(actual) => {
                        failures.push(format!("--{flag} {limit}: got {}{unit}", number(actual)));
                    }
                    None => failures.push(format!("--{flag} {limit}: not measured")),
                }
            }
        };
        let measured = |count: u64, value: f64| (count > 0).then_some(value);
        at_most(
            "max-p99-ms",
            self.max_p99_ms,
            measured(summary.ack_latency.count, summary.ack_latency.p99_ms),
            " ms",
        );
        at_most(
            "max-freshness-p99-ms",
            self.max_freshness_p99_ms,
            measured(summary.freshness.count, summary.freshness.p99_ms),
            " ms",
        );
        at_most(
            "max-query-p99-ms",
            self.max_query_p99_ms,
            measured(summary.queries.count, summary.queries.p99_ms),
            " ms",
        );
        at_most(
            "max-not-accepted",
            self.max_not_accepted,
            measured(summary.sent, summary.not_accepted_fraction()),
            "",
        );
        at_most(
            "max-errors",
            self.max_errors.map(|n| n as f64),
            Some(summary.error_count() as f64),
            "",
        );
        failures
    }
}

/// A measured value for a message: counts without decimals, fractions and
/// milliseconds with three.
fn number(value: f64) -> String {
    if value.fract() == 0.0 {
        format!("{value:.0}")
    } else {
        format!("{value:.3}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const VALIDITY: Validity = Validity {
        late_ms: 10.0,
        max_lag_p99_ms: 50.0,
        max_late_fraction: 0.01,
    };

    #[test]
    fn a_generator_on_schedule_is_valid() {
        let lag = LatencySummary {
            count: 1000,
            p99_ms: 3.0,
            ..Default::default()
        };
        assert!(VALIDITY.check(&lag, 10, 1000).is_empty());
        assert!(VALIDITY.check(&LatencySummary::default(), 0, 0).is_empty());
    }

    #[test]
    fn lagging_or_late_generators_are_invalid_with_reasons() {
        let lag = LatencySummary {
            count: 1000,
            p99_ms: 80.0,
            ..Default::default()
        };
        let reasons = VALIDITY.check(&lag, 11, 1000);
        assert_eq!(reasons.len(), 2, "{reasons:?}");
        assert!(reasons[0].contains("p99 80.0 ms > 50 ms"), "{reasons:?}");
        assert!(reasons[1].contains("1.10% of reports"), "{reasons:?}");
    }

    fn good_run() -> RunSummary {
        let mut summary = RunSummary::empty_for_tests();
        summary.valid = true;
        summary.sent = 1000;
        summary.accepted = 1000;
        summary.achieved_rate = 100.0;
        summary.ack_latency = LatencySummary {
            count: 1000,
            p99_ms: 20.0,
            ..Default::default()
        };
        summary
    }

    #[test]
    fn no_thresholds_no_failures() {
        assert!(Thresholds::default().check(&good_run()).is_empty());
    }

    #[test]
    fn each_missed_threshold_is_named() {
        let thresholds = Thresholds {
            min_rate: Some(200.0),
            max_p99_ms: Some(10.0),
            max_freshness_p99_ms: Some(500.0),
            max_errors: Some(0),
            ..Default::default()
        };
        let failures = thresholds.check(&good_run());
        assert_eq!(failures.len(), 3, "{failures:?}");
        assert!(failures[0].contains("--min-rate 200"), "{failures:?}");
        assert!(failures[1].contains("--max-p99-ms 10"), "{failures:?}");
        assert!(failures[2].contains("--max-freshness-p99-ms 500: not measured"));
    }

    #[test]
    fn thresholds_met_pass() {
        let thresholds = Thresholds {
            min_rate: Some(100.0),
            max_p99_ms: Some(20.0),
            max_not_accepted: Some(0.0),
            max_errors: Some(0),
            ..Default::default()
        };
        assert_eq!(thresholds.check(&good_run()), Vec::<String>::new());
    }

    #[test]
    fn an_invalid_run_always_fails() {
        let mut summary = good_run();
        summary.valid = false;
        summary.invalid_reasons = vec!["generator lag p99 80 ms > 50 ms".into()];
        let failures = Thresholds::default().check(&summary);
        assert_eq!(failures.len(), 1);
        assert!(failures[0].contains("INVALID") && failures[0].contains("80 ms"));
    }
}
