//! The result of a run: every number, the configuration and the verdict,
//! printed as a table for people and written as JSON for machines.

use std::collections::BTreeMap;
use std::fmt::{self, Write as _};
use std::path::Path;

use anyhow::Context;
use serde::Serialize;

use super::stats::LatencySummary;
use crate::score::Accuracy;

/// Everything a run measured.
#[derive(Debug, Clone, Serialize)]
pub struct RunSummary {
    /// Version of the load generator that produced these numbers.
    pub version: String,
    /// The run's configuration, as given on the command line.
    pub config: serde_json::Value,
    /// False when the generator fell behind its schedule: latencies then
    /// measure the generator, not the system.
    pub valid: bool,
    pub invalid_reasons: Vec<String>,
    /// Length of the sending phase, seconds.
    pub duration_secs: f64,
    /// Mean rate the schedule asked for, reports per second.
    pub offered_rate: f64,
    /// Acks received per second of sending phase.
    pub achieved_rate: f64,
    pub sent: u64,
    /// Report messages sent: batches with `--batch` above 1, else one per
    /// report; `sent / messages` is the mean batch.
    pub messages: u64,
    /// Arrivals skipped because no simulated train was running.
    pub no_report: u64,
    pub accepted: u64,
    pub duplicate: u64,
    pub rejected: u64,
    pub unacked: u64,
    pub out_of_order_acks: u64,
    /// Rejections by reason, numbers blanked (`observed_at: #h in the past`).
    pub rejected_by_reason: BTreeMap<String, u64>,
    /// Failed report streams by gRPC code.
    pub stream_errors: BTreeMap<String, u64>,
    /// Intended send time to ack.
    pub ack_latency: LatencySummary,
    /// How far behind schedule reports were dispatched.
    pub generator_lag: LatencySummary,
    /// Reports dispatched later than the lateness threshold.
    pub late: u64,
    /// Intended send time to the first watched update covering the report.
    pub freshness: LatencySummary,
    /// Reports on watched trains never seen in an update.
    pub freshness_unresolved: u64,
    pub watch_errors: BTreeMap<String, u64>,
    /// `GetOccupancy` sent to its response (see `queries` for why not
    /// from the intended time).
    pub queries: LatencySummary,
    pub query_errors: BTreeMap<String, u64>,
    /// The last accuracy round: estimates against the simulator's truth.
    pub accuracy: Option<Accuracy>,
    /// How many accuracy rounds ran.
    pub accuracy_rounds: u64,
    /// Thresholds missed; the run passes when this is empty.
    pub failures: Vec<String>,
}

impl RunSummary {
    /// True when the run was valid and met every threshold.
    pub fn passed(&self) -> bool {
        self.failures.is_empty()
    }

    /// Share of sent reports that were not ACCEPTED.
    pub fn not_accepted_fraction(&self) -> f64 {
        if self.sent == 0 {
            return 0.0;
        }
        1.0 - self.accepted as f64 / self.sent as f64
    }

    /// Reports per message sent (1 on `StreamReports`); 0 when nothing
    /// was sent.
    pub fn mean_batch(&self) -> f64 {
        if self.messages == 0 {
            return 0.0;
        }
        self.sent as f64 / self.messages as f64
    }

    /// Stream, watch and query errors together.
    pub fn error_count(&self) -> u64 {
        [&self.stream_errors, &self.watch_errors, &self.query_errors]
            .iter()
            .flat_map(|map| map.values())
            .sum()
    }

    /// Writes the summary as pretty JSON.
    pub fn write_json(&self, path: &Path) -> anyhow::Result<()> {
        let json = serde_json::to_string_pretty(self)?;
        std::fs::write(path, json + "\n").with_context(|| format!("writing {}", path.display()))
    }

    /// A summary with every number zero, for unit tests of its consumers.
    #[cfg(test)]
    pub(crate) fn empty_for_tests() -> RunSummary {
        RunSummary {
            version: String::new(),
            config: serde_json::Value::Null,
            valid: true,
            invalid_reasons: Vec::new(),
            duration_secs: 0.0,
            offered_rate: 0.0,
            achieved_rate: 0.0,
            sent: 0,
            messages: 0,
            no_report: 0,
            accepted: 0,
            duplicate: 0,
            rejected: 0,
            unacked: 0,
            out_of_order_acks: 0,
            rejected_by_reason: BTreeMap::new(),
            stream_errors: BTreeMap::new(),
            ack_latency: LatencySummary::default(),
            generator_lag: LatencySummary::default(),
            late: 0,
            freshness: LatencySummary::default(),
            freshness_unresolved: 0,
            watch_errors: BTreeMap::new(),
            queries: LatencySummary::default(),
            query_errors: BTreeMap::new(),
            accuracy: None,
            accuracy_rounds: 0,
            failures: Vec::new(),
        }
    }
}

/// The human-readable table.
impl fmt::Display for RunSummary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let verdict = match (self.valid, self.passed()) {
            (false, _) => "INVALID",
            (true, true) => "PASS",
            (true, false) => "FAIL",
        };
        writeln!(f, "loadgen {} run: {verdict}", self.version)?;
        writeln!(
            f,
            "  reports   {:.1}s  offered {:.0}/s  achieved {:.0}/s  sent {}  no-train {}",
            self.duration_secs, self.offered_rate, self.achieved_rate, self.sent, self.no_report
        )?;
        writeln!(
            f,
            "  acks      accepted {}  duplicate {}  rejected {}  unacked {}  out-of-order {}",
            self.accepted, self.duplicate, self.rejected, self.unacked, self.out_of_order_acks
        )?;
        if self.messages > 0 && self.messages != self.sent {
            writeln!(
                f,
                "  batches   {}  mean {:.1} reports per batch",
                self.messages,
                self.mean_batch()
            )?;
        }
        write_counts(f, "  rejected  ", &self.rejected_by_reason)?;
        write_counts(f, "  stream err", &self.stream_errors)?;
        writeln!(
            f,
            "  {:<18}{:>8}{:>10}{:>10}{:>10}{:>10}{:>10}",
            "latency (ms)", "count", "p50", "p90", "p99", "p99.9", "max"
        )?;
        write_latency(f, "ack", &self.ack_latency)?;
        write_latency(f, "generator lag", &self.generator_lag)?;
        write_latency(f, "freshness", &self.freshness)?;
        write_latency(f, "query", &self.queries)?;
        writeln!(
            f,
            "  late sends {}  freshness unresolved {}",
            self.late, self.freshness_unresolved
        )?;
        write_counts(f, "  watch err ", &self.watch_errors)?;
        write_counts(f, "  query err ", &self.query_errors)?;
        match &self.accuracy {
            Some(accuracy) => writeln!(
                f,
                "  accuracy  ({} rounds) {accuracy}",
                self.accuracy_rounds
            )?,
            None => writeln!(f, "  accuracy  not measured")?,
        }
        for reason in &self.invalid_reasons {
            writeln!(f, "  INVALID: {reason}")?;
        }
        for failure in &self.failures {
            writeln!(f, "  FAILED: {failure}")?;
        }
        Ok(())
    }
}

fn write_latency(f: &mut fmt::Formatter<'_>, name: &str, l: &LatencySummary) -> fmt::Result {
    writeln!(
        f,
        "  {name:<18}{:>8}{:>10.2}{:>10.2}{:>10.2}{:>10.2}{:>10.2}",
        l.count, l.p50_ms, l.p90_ms, l.p99_ms, l.p999_ms, l.max_ms
    )
}

fn write_counts(
    f: &mut fmt::Formatter<'_>,
    label: &str,
    counts: &BTreeMap<String, u64>,
) -> fmt::Result {
    if counts.is_empty() {
        return Ok(());
    }
    let mut line = String::new();
    for (name, count) in counts {
        let _ = write!(line, "  {name}: {count}");
    }
    writeln!(f, "{label}{line}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_shows_verdict_and_failures() {
        let mut summary = RunSummary::empty_for_tests();
        summary.sent = 10;
        summary.accepted = 7;
        summary.stream_errors.insert("Unavailable".into(), 2);
        summary.failures.push("--max-errors 0: got 2".into());
        let table = summary.to_string();
        assert!(table.contains("run: FAIL"), "{table}");
        assert!(table.contains("Unavailable: 2"), "{table}");
        assert!(table.contains("FAILED: --max-errors 0"), "{table}");
        assert!((summary.not_accepted_fraction() - 0.3).abs() < 1e-9);
        assert_eq!(summary.error_count(), 2);
    }

    #[test]
    fn json_round_trips_through_a_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("run.json");
        let mut summary = RunSummary::empty_for_tests();
        summary.sent = 42;
        summary.write_json(&path).unwrap();
        let value: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        assert_eq!(value["sent"], 42);
        assert_eq!(value["ack_latency"]["count"], 0);
    }
}
