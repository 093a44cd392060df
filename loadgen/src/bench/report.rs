//! The benchmark's results: every number with how it was measured, the
//! ratios that make them comparable across machines, the targets they are
//! judged against, and their rendering as a markdown table.

use std::fmt::Write as _;

use serde::Serialize;

use super::ceiling::Ceiling;
use super::drain::{Drain, TrainScale};
use super::probe::{FRESHNESS_P99_MS, Probe};
use super::resources::Machine;

/// Everything one `loadgen bench` run measured.
#[derive(Debug, Clone, Serialize)]
pub struct BenchReport {
    pub version: String,
    /// `release` or `debug`: numbers of a debug build mean little.
    pub build_profile: String,
    /// UTC time the run started.
    pub started_at: String,
    pub quick: bool,
    pub machine: Machine,
    pub redis_version: String,
    /// Bytes of a real encoded report entry (field `r`).
    pub entry_bytes: usize,
    pub ceiling: Ceiling,
    pub firehose: Search,
    pub sparse: Search,
    pub drain: Drain,
    /// The aggregator alone with 1,000 trains against 100,000.
    pub trains_scale: TrainScale,
    /// The run at half the sustained firehose rate, with queries.
    pub half_load: Probe,
    pub ratios: Ratios,
    pub targets: Vec<Target>,
}

/// One mode's step search.
#[derive(Debug, Clone, Serialize)]
pub struct Search {
    pub streams: usize,
    /// Most reports per message: 1 is one report per `StreamReports`
    /// message; more is `StreamReportBatches`, which costs the server less
    /// per report, so rates are comparable only at the same batch.
    pub batch: usize,
    /// How long a batch waited after its first report for more.
    pub linger_ms: f64,
    /// Highest offered rate sustained, reports/s (0 when none was).
    pub sustained_rate: f64,
    /// The probe at that rate.
    pub best: Option<Probe>,
    pub probes: Vec<Probe>,
}

/// The numbers divided by the store's ceiling.
#[derive(Debug, Clone, Serialize)]
pub struct Ratios {
    pub firehose_over_ceiling: f64,
    pub sparse_over_ceiling: f64,
    pub drain_over_ceiling: f64,
    pub sparse_over_firehose: f64,
}

impl Ratios {
    pub fn of(ceiling: f64, firehose: f64, sparse: f64, drain: f64) -> Ratios {
        let over = |x: f64, y: f64| if y > 0.0 { x / y } else { 0.0 };
        Ratios {
            firehose_over_ceiling: over(firehose, ceiling),
            sparse_over_ceiling: over(sparse, ceiling),
            drain_over_ceiling: over(drain, ceiling),
            sparse_over_firehose: over(sparse, firehose),
        }
    }
}

/// A target and whether this run met it.
#[derive(Debug, Clone, Serialize)]
pub struct Target {
    pub what: String,
    pub target: String,
    pub measured: String,
    /// `None` when it could not be measured.
    pub met: Option<bool>,
}

fn target(what: &str, goal: &str, measured: String, met: Option<bool>) -> Target {
    Target {
        what: what.to_owned(),
        target: goal.to_owned(),
        measured,
        met,
    }
}

/// How a mode sends its reports, for the report and the logs.
pub fn batch_text(batch: usize) -> String {
    if batch > 1 {
        format!("batches of up to {batch} reports")
    } else {
        "one report per message".to_owned()
    }
}

/// [`batch_text`] and, when batched, the mean batch actually sent by
/// `probe`.
fn batch_with_mean(batch: usize, probe: Option<&Probe>) -> String {
    match probe {
        Some(p) if batch > 1 => format!("{} (mean {:.1})", batch_text(batch), p.mean_batch),
        _ => batch_text(batch),
    }
}

/// Judges the measurements against the project's performance targets.
pub fn targets(
    ceiling: f64,
    firehose: &Search,
    sparse: &Search,
    drain: &Drain,
    scale: &TrainScale,
    half: &Probe,
) -> Vec<Target> {
    let firehose_batch = firehose.batch;
    let firehose = firehose.sustained_rate;
    let ratio = if ceiling > 0.0 {
        firehose / ceiling
    } else {
        0.0
    };
    let per_core = drain.reports_per_cpu_sec;
    let sparse_probe = sparse.best.as_ref();
    let server_rss = sparse_probe.and_then(|p| p.server_peak_rss_mib);
    let rss = server_rss.or(sparse_probe.and_then(|p| p.max_rss_mib));
    let rss_what = if server_rss.is_some() {
        "server peak RSS"
    } else {
        "process RSS (server + aggregator + load generator)"
    };
    let memory = half.train_memory.as_ref();
    vec![
        target(
            "firehose sustained / store ceiling",
            ">= 0.30",
            format!(
                "{ratio:.2} ({firehose:.0}/s of {ceiling:.0}/s, {})",
                batch_text(firehose_batch)
            ),
            Some(ratio >= 0.30),
        ),
        target(
            &format!("sparse sustained ({} streams)", sparse.streams),
            ">= 60000/s (with >= 5000 streams)",
            format!("{:.0}/s", sparse.sustained_rate),
            Some(sparse.sustained_rate >= 60_000.0 && sparse.streams >= 5_000),
        ),
        target(
            "aggregator alone, per CPU second",
            ">= 300000/s",
            per_core.map_or("n/a".to_owned(), |r| format!("{r:.0}/s")),
            per_core.map(|r| r >= 300_000.0),
        ),
        target(
            &format!(
                "aggregator alone, {} trains vs {}: reports per CPU second (aggregator + Redis)",
                scale.many.trains, scale.few.trains
            ),
            "within 20%",
            scale.cpu_ratio.map_or("n/a".to_owned(), |r| {
                format!(
                    "{r:.2}x ({} vs {})",
                    per_cpu(&scale.many),
                    per_cpu(&scale.few)
                )
            }),
            scale.cpu_ratio.map(|r| r >= 0.8),
        ),
        target(
            "freshness p99 at 50% of max",
            &format!("<= {FRESHNESS_P99_MS:.0} ms"),
            format!("{:.1} ms", half.freshness_p99_ms),
            Some(half.freshness_count > 0 && half.freshness_p99_ms <= FRESHNESS_P99_MS),
        ),
        target(
            "GetOccupancy p99 at 50% of max",
            "<= 2 ms",
            format!("{:.2} ms", half.query_p99_ms),
            Some(half.query_count > 0 && half.query_p99_ms <= 2.0),
        ),
        target(
            &format!("{rss_what} with {} streams", sparse.streams),
            "server <= 200 MB with 10000 streams",
            rss.map_or("n/a".to_owned(), |m| format!("{m:.0} MiB")),
            // Judged only where it was measured: with 10,000 streams or more.
            rss.filter(|_| sparse.streams >= 10_000)
                .map(|m| m <= 200.0 * 1e6 / (1024.0 * 1024.0)),
        ),
        target(
            "Redis memory per active train (state + estimate keys)",
            "<= 2 KB",
            memory.map_or("n/a".to_owned(), |m| {
                format!("{:.0} B ({} trains)", m.state_and_estimate_bytes, m.trains)
            }),
            memory
                .filter(|m| m.sampled > 0)
                .map(|m| m.state_and_estimate_bytes <= 2048.0),
        ),
    ]
}

/// A drain's reports per CPU second of the aggregator and Redis, as text.
fn per_cpu(d: &Drain) -> String {
    d.reports_per_total_cpu_sec()
        .map_or("n/a".to_owned(), |r| format!("{r:.0}/s"))
}

impl BenchReport {
    /// The results as a markdown document.
    pub fn markdown(&self) -> String {
        let mut md = String::new();
        let m = &self.machine;
        let _ = writeln!(md, "# crowd benchmark ({})\n", self.started_at);
        let _ = writeln!(
            md,
            "Machine: {} cores, {}, kernel {}, load average {} at start; Redis {}; \
             loadgen {} ({} build){}.\n",
            m.cores,
            m.cpu_model,
            m.kernel,
            m.load_average_at_start
                .map_or("n/a".to_owned(), |l| format!("{l:.2}")),
            self.redis_version,
            self.version,
            self.build_profile,
            if self.quick { ", --quick" } else { "" }
        );
        let split = self.half_load.server_process;
        let _ = writeln!(
            md,
            "Everything runs on this one machine, sharing its cores: Redis is its own \
             process; {}.\n",
            if split && self.half_load.aggregator_process {
                "the server and the aggregator are processes of their own; the load \
                 generator's CPU is this process's"
            } else if split {
                "the server is its own process; the aggregator and the load generator share one \
                 (build crowd-aggregator to measure it apart)"
            } else {
                "the server, the aggregator and the load generator share one process \
                 (build crowd-server to measure it apart)"
            }
        );
        let _ = writeln!(
            md,
            "The firehose ({} streams) sends {}; the sparse mode ({} streams) sends {}. \
             Batching spares the server the framing and the ack message of each report, so \
             a firehose rate compares only with one measured at the same batch size.\n",
            self.firehose.streams,
            if self.firehose.batch > 1 {
                format!(
                    "{} per message over StreamReportBatches, each batch waiting up to \
                     {} ms after its first report for more",
                    batch_text(self.firehose.batch),
                    self.firehose.linger_ms
                )
            } else {
                "one report per message over StreamReports".to_owned()
            },
            self.sparse.streams,
            if self.sparse.batch > 1 {
                format!(
                    "{} per message over StreamReportBatches",
                    batch_text(self.sparse.batch)
                )
            } else {
                "one report per message over StreamReports".to_owned()
            },
        );
        let _ = writeln!(md, "| measure | value | ratio |");
        let _ = writeln!(md, "|---|---|---|");
        let c = &self.ceiling;
        let _ = writeln!(
            md,
            "| store ceiling: redis-benchmark XADD, {} B payload, -P 64 -c 50 | {:.0}/s | 1.00 |",
            c.payload_bytes, c.xadd_per_sec
        );
        for (name, s, ratio) in [
            (
                "firehose",
                &self.firehose,
                self.ratios.firehose_over_ceiling,
            ),
            ("sparse", &self.sparse, self.ratios.sparse_over_ceiling),
        ] {
            let _ = writeln!(
                md,
                "| {name}: highest sustained rate, {} streams, {} | {:.0}/s | {ratio:.2} |",
                s.streams,
                batch_with_mean(s.batch, s.best.as_ref()),
                s.sustained_rate
            );
        }
        let d = &self.drain;
        let _ = writeln!(
            md,
            "| aggregator alone: drain of {} pre-filled reports ({} trains) | {:.0}/s | {:.2} |",
            d.reports, d.trains, d.reports_per_sec, self.ratios.drain_over_ceiling
        );
        let _ = writeln!(
            md,
            "| aggregator alone: reports per CPU second | {} | |",
            d.reports_per_cpu_sec
                .map_or("n/a".to_owned(), |r| format!("{r:.0}/s"))
        );
        let sc = &self.trains_scale;
        for d in [&sc.few, &sc.many] {
            let _ = writeln!(
                md,
                "| aggregator alone: {} reports over {} trains ({} with an estimate): per wall second / per CPU second (aggregator + Redis) | {:.0}/s / {} | |",
                d.reports,
                d.trains,
                d.train_memory.trains,
                d.reports_per_sec,
                per_cpu(d)
            );
        }
        let h = &self.half_load;
        let _ = writeln!(
            md,
            "| at {:.0}/s (50% of firehose max, {}): freshness p50 / p99 | {:.1} / {:.1} ms | |",
            h.rate,
            batch_with_mean(h.batch, Some(h)),
            h.freshness_p50_ms,
            h.freshness_p99_ms
        );
        let _ = writeln!(
            md,
            "| at {:.0}/s: GetOccupancy p50 / p99 ({} queries) | {:.2} / {:.2} ms | |",
            h.rate, h.query_count, h.query_p50_ms, h.query_p99_ms
        );
        if let Some(tm) = &h.train_memory {
            let _ = writeln!(
                md,
                "| Redis memory per active train: state + estimate keys / used_memory per train | {:.0} B / {:.0} B | |",
                tm.state_and_estimate_bytes, tm.used_memory_per_train_bytes
            );
        }

        let _ = writeln!(md, "\n## Targets\n");
        let _ = writeln!(md, "| target | goal | measured | met |");
        let _ = writeln!(md, "|---|---|---|---|");
        for t in &self.targets {
            let met = match t.met {
                Some(true) => "yes",
                Some(false) => "NO",
                None => "n/a",
            };
            let _ = writeln!(md, "| {} | {} | {} | {met} |", t.what, t.target, t.measured);
        }

        let _ = writeln!(md, "\n## CPU and memory\n");
        let _ = writeln!(
            md,
            "| phase | reports/s | wall s | server CPU s | aggregator CPU s | loadgen process CPU s | Redis CPU s | server peak RSS MiB | loadgen process RSS MiB |"
        );
        let _ = writeln!(md, "|---|---|---|---|---|---|---|---|---|");
        let cell = |v: Option<f64>| v.map_or("n/a".to_owned(), |v| format!("{v:.1}"));
        let _ = writeln!(
            md,
            "| store ceiling (redis-benchmark) | {:.0} | | | | | {} | | |",
            c.xadd_per_sec,
            cell(c.redis_cpu_secs)
        );
        for (name, p) in [
            ("firehose best", self.firehose.best.as_ref()),
            ("sparse best", self.sparse.best.as_ref()),
            ("half load", Some(&self.half_load)),
        ] {
            if let Some(p) = p {
                let _ = writeln!(
                    md,
                    "| {name} ({} streams, {}) | {:.0} | {:.1} | {} | {} | {} | {} | {} | {} |",
                    p.streams,
                    batch_text(p.batch),
                    p.achieved_rate,
                    p.wall_secs,
                    if p.server_process {
                        cell(p.server_cpu_secs)
                    } else {
                        "in-process".to_owned()
                    },
                    if p.aggregator_process {
                        cell(p.aggregator_cpu_secs)
                    } else {
                        "in-process".to_owned()
                    },
                    cell(p.process_cpu_secs),
                    cell(p.redis_cpu_secs),
                    cell(p.server_peak_rss_mib),
                    cell(p.max_rss_mib)
                );
            }
        }
        let _ = writeln!(
            md,
            "| aggregator drain (aggregator alone in the process) | {:.0} | {:.1} | | {} | | {} | | |",
            d.reports_per_sec,
            d.wall_secs,
            cell(d.process_cpu_secs),
            cell(d.redis_cpu_secs)
        );
        for d in [&sc.few, &sc.many] {
            let _ = writeln!(
                md,
                "| aggregator drain, {} trains | {:.0} | {:.1} | | {} | | {} | | |",
                d.trains,
                d.reports_per_sec,
                d.wall_secs,
                cell(d.process_cpu_secs),
                cell(d.redis_cpu_secs)
            );
        }

        let _ = writeln!(md, "\n## Probes\n");
        let _ = writeln!(
            md,
            "| mode | streams | reports per message: most / mean | offered/s | achieved/s | ack p99 ms | freshness p99 ms | max backlog | sustained |"
        );
        let _ = writeln!(md, "|---|---|---|---|---|---|---|---|---|");
        for p in self.firehose.probes.iter().chain(&self.sparse.probes) {
            let verdict = if p.passed {
                "yes".to_owned()
            } else {
                format!("no: {}", p.why.join("; "))
            };
            let _ = writeln!(
                md,
                "| {} | {} | {} / {:.1} | {:.0} | {:.0} | {:.1} | {:.1} | {} | {verdict} |",
                p.mode,
                p.streams,
                p.batch,
                p.mean_batch,
                p.rate,
                p.achieved_rate,
                p.ack_p99_ms,
                p.freshness_p99_ms,
                p.max_backlog
            );
        }
        let _ = writeln!(md, "\nStore ceiling command: `{}`", c.command);
        md
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::bench::observe::TrainMemory;

    pub(crate) fn probe(mode: &str, rate: f64, passed: bool) -> Probe {
        Probe {
            mode: mode.to_owned(),
            rate,
            streams: if mode == "sparse" { 10_000 } else { 8 },
            batch: if mode == "sparse" { 1 } else { 64 },
            mean_batch: if mode == "sparse" { 1.0 } else { 3.2 },
            passed,
            why: if passed {
                Vec::new()
            } else {
                vec!["freshness p99 400 ms >= 250 ms".to_owned()]
            },
            achieved_rate: rate,
            sent: 100,
            accepted: 100,
            ack_p99_ms: 3.0,
            freshness_count: 10,
            freshness_p50_ms: 20.0,
            freshness_p99_ms: 60.0,
            query_count: 100,
            query_p50_ms: 0.4,
            query_p99_ms: 1.5,
            max_backlog: 10,
            wall_secs: 5.0,
            server_process: true,
            server_cpu_secs: Some(1.0),
            server_peak_rss_mib: Some(120.0),
            aggregator_process: true,
            aggregator_cpu_secs: Some(3.0),
            process_cpu_secs: Some(4.0),
            redis_cpu_secs: Some(2.0),
            max_rss_mib: Some(150.0),
            train_memory: Some(TrainMemory {
                trains: 40,
                sampled: 40,
                state_and_estimate_bytes: 1500.0,
                ..TrainMemory::default()
            }),
        }
    }

    fn report() -> BenchReport {
        let firehose = Search {
            streams: 8,
            batch: 64,
            linger_ms: 1.0,
            sustained_rate: 40_000.0,
            best: Some(probe("firehose", 40_000.0, true)),
            probes: vec![
                probe("firehose", 40_000.0, true),
                probe("firehose", 60_000.0, false),
            ],
        };
        let sparse = Search {
            streams: 10_000,
            batch: 1,
            linger_ms: 0.0,
            sustained_rate: 30_000.0,
            best: Some(probe("sparse", 30_000.0, true)),
            probes: vec![probe("sparse", 30_000.0, true)],
        };
        let drain = drained(10, 0.0025);
        let trains_scale = TrainScale {
            few: drained(1_000, 0.0025),
            many: drained(100_000, 0.0050),
            cpu_ratio: Some(0.5),
            wall_ratio: 1.0,
        };
        let half = probe("half-load", 20_000.0, true);
        let ceiling = Ceiling {
            xadd_per_sec: 100_000.0,
            payload_bytes: 120,
            command: "redis-benchmark -P 64".to_owned(),
            tool_version: String::new(),
            redis_cpu_secs: Some(1.0),
        };
        BenchReport {
            version: "0.1.0".to_owned(),
            build_profile: "release".to_owned(),
            started_at: "2026-11-26T09:00:00Z".to_owned(),
            quick: true,
            machine: Machine {
                cores: 2,
                cpu_model: "AMD EPYC".to_owned(),
                kernel: "6.1".to_owned(),
                load_average_at_start: Some(1.5),
                memory_total_mib: None,
            },
            redis_version: "7.0.15".to_owned(),
            entry_bytes: 120,
            targets: targets(100_000.0, &firehose, &sparse, &drain, &trains_scale, &half),
            ratios: Ratios::of(100_000.0, 40_000.0, 30_000.0, 100_000.0),
            ceiling,
            firehose,
            sparse,
            drain,
            trains_scale,
            half_load: half,
        }
    }

    fn drained(trains: u64, cpu_secs: f64) -> Drain {
        Drain {
            reports: 1000,
            trains,
            fill_per_sec: 1.0,
            wall_secs: 0.01,
            reports_per_sec: 100_000.0,
            process_cpu_secs: Some(cpu_secs),
            reports_per_cpu_sec: Some(1000.0 / cpu_secs),
            redis_cpu_secs: (trains > 10).then_some(0.0),
            counted: 1000,
            train_memory: TrainMemory::default(),
        }
    }

    #[test]
    fn targets_are_judged() {
        let r = report();
        let met: Vec<Option<bool>> = r.targets.iter().map(|t| t.met).collect();
        assert_eq!(
            met,
            vec![
                Some(true),
                Some(false),
                Some(true),
                Some(false),
                Some(true),
                Some(true),
                Some(true),
                Some(true)
            ]
        );
        assert_eq!(
            r.targets[0].measured,
            "0.40 (40000/s of 100000/s, batches of up to 64 reports)"
        );
        assert_eq!(r.targets[3].measured, "0.50x (200000/s vs 400000/s)");
        assert!((r.ratios.sparse_over_firehose - 0.75).abs() < 1e-9);
    }

    #[test]
    fn markdown_has_the_numbers_ratios_and_verdicts() {
        let md = report().markdown();
        assert!(md.contains("| store ceiling: redis-benchmark XADD, 120 B payload, -P 64 -c 50 | 100000/s | 1.00 |"), "{md}");
        assert!(
            md.contains("| firehose: highest sustained rate, 8 streams, batches of up to 64 reports (mean 3.2) | 40000/s | 0.40 |"),
            "{md}"
        );
        assert!(
            md.contains("| sparse: highest sustained rate, 10000 streams, one report per message | 30000/s | 0.30 |"),
            "{md}"
        );
        assert!(
            md.contains("The firehose (8 streams) sends batches of up to 64 reports per message over StreamReportBatches"),
            "{md}"
        );
        assert!(md.contains("| firehose | 8 | 64 / 3.2 | 60000 |"), "{md}");
        assert!(md.contains("| sparse sustained (10000 streams) | >= 60000/s (with >= 5000 streams) | 30000/s | NO |"), "{md}");
        assert!(md.contains("no: freshness p99 400 ms >= 250 ms"), "{md}");
        assert!(md.contains("2 cores, AMD EPYC"), "{md}");
        assert!(
            md.contains(
                "| half load (8 streams, batches of up to 64 reports) | 20000 | 5.0 | 1.0 | 3.0 | 4.0 | 2.0 | 120.0 | 150.0 |"
            ),
            "{md}"
        );
        assert!(
            md.contains("the server and the aggregator are processes of their own"),
            "{md}"
        );
        assert!(
            md.contains("| server peak RSS with 10000 streams | server <= 200 MB with 10000 streams | 120 MiB | yes |"),
            "{md}"
        );
    }
}
