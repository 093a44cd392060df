//! `loadgen bench`: the end-to-end benchmark runner. In one run on one
//! machine it measures
//!
//! 1. the store's ceiling (`redis-benchmark` XADDs of report size),
//! 2. the highest sustained rate of the whole system, firehose (few
//!    streams) and sparse (thousands of streams), by a step search,
//! 3. the aggregator alone draining a pre-filled stream, and the same
//!    reports over 1,000 trains against over 100,000,
//! 4. freshness and `GetOccupancy` latency at half the sustained rate,
//! 5. CPU and memory of each process, Redis memory per train,
//!
//! then prints the ratios and writes JSON and a markdown table.
//!
//! - [`ceiling`], [`probe`], [`drain`]: the measurements.
//! - [`system`], [`child`]: the system under test of a probe.
//! - [`search`]: the step search over rates (pure).
//! - [`observe`], [`resources`]: reading Redis and `/proc`.
//! - [`report`]: results, targets and their markdown.

pub mod ceiling;
pub mod child;
pub mod drain;
pub mod observe;
pub mod probe;
pub mod report;
pub mod resources;
pub mod search;
pub mod system;

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use chrono::{NaiveDateTime, Utc};

use crowd_proto::domain::DeviceHasher;
use crowd_proto::validate::{Limits, validate_report};

use crate::driver::source::Source;
use probe::{Probe, ProbePlan};
use report::{BenchReport, Ratios, Search};
use search::StepSearch;

/// Flags of `loadgen bench`.
#[derive(Debug, Clone, clap::Args)]
pub struct BenchArgs {
    /// A short run (about a minute): fewer, shorter probes.
    #[arg(long)]
    pub quick: bool,
    /// Where the JSON and markdown results go.
    #[arg(long, default_value = "artifacts/bench")]
    pub out: PathBuf,
    /// Streams of the firehose mode (few streams, many reports each).
    #[arg(long, default_value_t = 8)]
    pub firehose_streams: usize,
    /// Most reports per message in the firehose mode and the half-load
    /// probe (StreamReportBatches, as a relay would send); 1 sends one
    /// report per message over StreamReports. The sparse mode always sends
    /// one: phones report one at a time.
    #[arg(long, default_value_t = 64)]
    pub firehose_batch: usize,
    /// How long a firehose batch waits after its first report for more, as
    /// a relay lingers to send fuller batches (0: sends what is queued).
    #[arg(long, default_value = "1ms", value_parser = crate::driver::arrivals::parse_duration)]
    pub firehose_linger: Duration,
    /// Streams of the sparse mode (default 10000, 5000 with --quick).
    #[arg(long)]
    pub sparse_streams: Option<usize>,
    /// First rate of each step search, reports/s.
    #[arg(long, default_value_t = 10_000.0)]
    pub start_rate: f64,
    /// Length of each probe's sending phase (default 10s, 3s with --quick).
    #[arg(long, value_parser = crate::driver::arrivals::parse_duration)]
    pub probe_duration: Option<Duration>,
    /// Probes per step search (default 7, 4 with --quick).
    #[arg(long)]
    pub max_probes: Option<usize>,
    /// Reports pre-filled for the aggregator drain (default 500000, 100000
    /// with --quick).
    #[arg(long)]
    pub drain_reports: Option<u64>,
    /// Reports of each drain comparing 1,000 trains with 100,000 (default
    /// 300000, 100000 with --quick).
    #[arg(long)]
    pub scale_reports: Option<u64>,
    /// Runs one measurement only and prints what it finds, without writing
    /// the report: to look at one path while changing it. `half-load` runs
    /// at `--start-rate`.
    #[arg(long, value_enum)]
    pub only: Option<Phase>,
}

/// One measurement of the run, for `--only`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Phase {
    /// The store's ceiling (redis-benchmark).
    Ceiling,
    /// The firehose step search.
    Firehose,
    /// The sparse step search.
    Sparse,
    /// The aggregator alone draining a pre-filled stream.
    Drain,
    /// The same drain over 1,000 trains and over 100,000.
    Scale,
    /// One probe at `--start-rate` with queries and memory measured.
    HalfLoad,
}

/// The settings of one run, defaults resolved.
#[derive(Debug, Clone)]
struct Settings {
    sparse_streams: usize,
    probe_duration: Duration,
    max_probes: usize,
    drain_reports: u64,
    scale_reports: u64,
    ceiling_requests: u64,
    query_rate: f64,
    watchers: usize,
}

impl BenchArgs {
    fn settings(&self) -> Settings {
        let quick = self.quick;
        Settings {
            sparse_streams: self
                .sparse_streams
                .unwrap_or(if quick { 5_000 } else { 10_000 }),
            probe_duration: self.probe_duration.unwrap_or(Duration::from_secs(if quick {
                3
            } else {
                10
            })),
            max_probes: self.max_probes.unwrap_or(if quick { 4 } else { 7 }),
            drain_reports: self
                .drain_reports
                .unwrap_or(if quick { 100_000 } else { 500_000 }),
            scale_reports: self
                .scale_reports
                .unwrap_or(if quick { 100_000 } else { 300_000 }),
            ceiling_requests: if quick { 300_000 } else { 2_000_000 },
            query_rate: if quick { 200.0 } else { 500.0 },
            watchers: 4,
        }
    }
}

/// Reports per message of the sparse mode: phones send theirs one at a
/// time, over `StreamReports`.
const SPARSE_BATCH: usize = 1;

/// Trains of the aggregator drain: a rush hour on a large network.
const DRAIN_TRAINS: u64 = 500;
/// Trains of the few-trains and many-trains drains compared.
const SCALE_TRAINS: (u64, u64) = (1_000, 100_000);
/// Length each reports stream is trimmed to, as the server does by default.
const STREAM_MAXLEN: u64 = 1_000_000;

/// Runs every measurement, writes the results under `--out` and returns
/// them; with `--only`, runs that one and returns `None`.
pub async fn run(args: BenchArgs) -> anyhow::Result<Option<BenchReport>> {
    anyhow::ensure!(
        (1..=crate::driver::streams::MAX_BATCH).contains(&args.firehose_batch),
        "--firehose-batch must be from 1 to {} (got {})",
        crate::driver::streams::MAX_BATCH,
        args.firehose_batch
    );
    let settings = args.settings();
    if let Some(phase) = args.only {
        run_phase(phase, &args, &settings).await?;
        return Ok(None);
    }
    let started_at = Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let machine = resources::Machine::detect();
    let build_profile = if cfg!(debug_assertions) {
        "debug"
    } else {
        "release"
    };
    if build_profile == "debug" {
        eprintln!("bench: this is a debug build; its numbers mean little (use --release)");
    }
    eprintln!(
        "bench: {} cores, {}, load average {:?}",
        machine.cores, machine.cpu_model, machine.load_average_at_start
    );

    let entry_bytes = real_entry_bytes()?;
    eprintln!("bench: store ceiling (redis-benchmark, {entry_bytes} B entries)...");
    let requests = settings.ceiling_requests;
    let ceiling =
        tokio::task::spawn_blocking(move || ceiling::measure(entry_bytes, requests, STREAM_MAXLEN))
            .await??;
    eprintln!("bench:   {:.0} XADD/s", ceiling.xadd_per_sec);

    let firehose = step_search(
        "firehose",
        args.firehose_streams,
        args.firehose_batch,
        args.firehose_linger,
        args.start_rate,
        &settings,
    )
    .await?;
    let sparse = step_search(
        "sparse",
        settings.sparse_streams,
        SPARSE_BATCH,
        Duration::ZERO,
        args.start_rate,
        &settings,
    )
    .await?;

    eprintln!(
        "bench: aggregator alone, draining {} reports...",
        settings.drain_reports
    );
    let drain = drain::measure(settings.drain_reports, DRAIN_TRAINS).await?;
    eprintln!(
        "bench:   {:.0} reports/s, {} per CPU second, {} of {} counted",
        drain.reports_per_sec,
        drain
            .reports_per_cpu_sec
            .map_or("n/a".to_owned(), |r| format!("{r:.0}")),
        drain.counted,
        drain.reports
    );

    let (few, many) = SCALE_TRAINS;
    eprintln!(
        "bench: aggregator alone, {} reports over {few} trains, then over {many}...",
        settings.scale_reports
    );
    let trains_scale = drain::scale(settings.scale_reports, few, many).await?;
    for d in [&trains_scale.few, &trains_scale.many] {
        eprintln!(
            "bench:   {} trains ({} with an estimate): {:.0} reports/s, {} per CPU second (aggregator + Redis)",
            d.trains,
            d.train_memory.trains,
            d.reports_per_sec,
            d.reports_per_total_cpu_sec()
                .map_or("n/a".to_owned(), |r| format!("{r:.0}"))
        );
    }

    let half_rate = (firehose.sustained_rate / 2.0).max(100.0);
    eprintln!("bench: half load, {half_rate:.0}/s with queries...");
    let half_load = probe::run(&half_load_plan(half_rate, &args, &settings)).await?;
    log_probe(&half_load);

    let redis_version = redis_version().unwrap_or_default();
    let ratios = Ratios::of(
        ceiling.xadd_per_sec,
        firehose.sustained_rate,
        sparse.sustained_rate,
        drain.reports_per_sec,
    );
    let targets = report::targets(
        ceiling.xadd_per_sec,
        &firehose,
        &sparse,
        &drain,
        &trains_scale,
        &half_load,
    );
    let report = BenchReport {
        version: env!("CARGO_PKG_VERSION").to_owned(),
        build_profile: build_profile.to_owned(),
        started_at,
        quick: args.quick,
        machine,
        redis_version,
        entry_bytes,
        ceiling,
        firehose,
        sparse,
        drain,
        trains_scale,
        half_load,
        ratios,
        targets,
    };
    write(&report, &args.out)?;
    Ok(Some(report))
}

/// The probe at `rate` with queries, watchers and memory measured.
fn half_load_plan(rate: f64, args: &BenchArgs, settings: &Settings) -> ProbePlan {
    ProbePlan {
        mode: "half-load",
        rate,
        streams: args.firehose_streams,
        batch: args.firehose_batch,
        linger: args.firehose_linger,
        duration: settings.probe_duration.max(Duration::from_secs(5)),
        watchers: settings.watchers,
        query_rate: settings.query_rate,
        measure_memory: true,
    }
}

/// Runs one measurement and logs what it finds.
async fn run_phase(phase: Phase, args: &BenchArgs, settings: &Settings) -> anyhow::Result<()> {
    match phase {
        Phase::Ceiling => {
            let entry_bytes = real_entry_bytes()?;
            let requests = settings.ceiling_requests;
            let ceiling = tokio::task::spawn_blocking(move || {
                ceiling::measure(entry_bytes, requests, STREAM_MAXLEN)
            })
            .await??;
            eprintln!("bench:   {:.0} XADD/s", ceiling.xadd_per_sec);
        }
        Phase::Firehose => {
            let s = step_search(
                "firehose",
                args.firehose_streams,
                args.firehose_batch,
                args.firehose_linger,
                args.start_rate,
                settings,
            )
            .await?;
            eprintln!("bench:   firehose sustained {:.0}/s", s.sustained_rate);
        }
        Phase::Sparse => {
            let s = step_search(
                "sparse",
                settings.sparse_streams,
                SPARSE_BATCH,
                Duration::ZERO,
                args.start_rate,
                settings,
            )
            .await?;
            eprintln!("bench:   sparse sustained {:.0}/s", s.sustained_rate);
        }
        Phase::Drain => {
            let d = drain::measure(settings.drain_reports, DRAIN_TRAINS).await?;
            eprintln!(
                "bench:   drain {:.0} reports/s, {} per CPU second, {} of {} counted",
                d.reports_per_sec,
                d.reports_per_cpu_sec
                    .map_or("n/a".to_owned(), |r| format!("{r:.0}")),
                d.counted,
                d.reports
            );
        }
        Phase::Scale => {
            let (few, many) = SCALE_TRAINS;
            let scale = drain::scale(settings.scale_reports, few, many).await?;
            for d in [&scale.few, &scale.many] {
                eprintln!(
                    "bench:   {} trains: {:.0} reports/s, {} per CPU second (aggregator + Redis; CPU s {} + {}), {:.0} B of Redis per train (state + estimate)",
                    d.trains,
                    d.reports_per_sec,
                    d.reports_per_total_cpu_sec()
                        .map_or("n/a".to_owned(), |r| format!("{r:.0}")),
                    d.process_cpu_secs
                        .map_or("n/a".to_owned(), |s| format!("{s:.2}")),
                    d.redis_cpu_secs
                        .map_or("n/a".to_owned(), |s| format!("{s:.2}")),
                    d.train_memory.state_and_estimate_bytes
                );
            }
        }
        Phase::HalfLoad => {
            let plan = half_load_plan(args.start_rate, args, settings);
            let probe = probe::run(&plan).await?;
            log_probe(&probe);
            let reports = probe.achieved_rate * plan.duration.as_secs_f64();
            let per_report = |cpu: Option<f64>| {
                cpu.filter(|_| reports > 0.0)
                    .map_or("n/a".to_owned(), |s| format!("{:.1}", s / reports * 1e6))
            };
            eprintln!(
                "bench:   CPU per report: server {} µs, aggregator {} µs, load generator {} µs, Redis {} µs",
                per_report(probe.server_cpu_secs),
                per_report(probe.aggregator_cpu_secs),
                per_report(probe.process_cpu_secs),
                per_report(probe.redis_cpu_secs)
            );
            eprintln!(
                "bench:   GetOccupancy p50 {:.2} ms, p99 {:.2} ms",
                probe.query_p50_ms, probe.query_p99_ms
            );
            if let Some(m) = &probe.train_memory {
                eprintln!(
                    "bench:   {:.0} B of Redis per train (state + estimate), {} trains",
                    m.state_and_estimate_bytes, m.trains
                );
            }
            eprintln!(
                "bench:   server peak RSS {} MiB",
                probe
                    .server_peak_rss_mib
                    .map_or("n/a".to_owned(), |m| format!("{m:.0}"))
            );
        }
    }
    Ok(())
}

/// Finds the highest sustained rate of one mode.
async fn step_search(
    mode: &'static str,
    streams: usize,
    batch: usize,
    linger: Duration,
    start_rate: f64,
    settings: &Settings,
) -> anyhow::Result<Search> {
    eprintln!(
        "bench: {mode} step search ({streams} streams, {})...",
        report::batch_text(batch)
    );
    let mut search = StepSearch::new(start_rate, 2.0, 0.15, settings.max_probes);
    let mut probes: Vec<Probe> = Vec::new();
    while let Some(rate) = search.next_rate() {
        let probe = probe::run(&ProbePlan {
            mode,
            rate: rate.round(),
            streams,
            batch,
            linger,
            duration: settings.probe_duration,
            watchers: settings.watchers,
            query_rate: 0.0,
            measure_memory: false,
        })
        .await?;
        log_probe(&probe);
        search.record(rate, probe.passed);
        probes.push(probe);
    }
    let sustained_rate = search.best().unwrap_or(0.0);
    let best = probes
        .iter()
        .rfind(|p| p.passed && (p.rate - sustained_rate.round()).abs() < 1.0)
        .cloned();
    Ok(Search {
        streams,
        batch,
        linger_ms: linger.as_secs_f64() * 1000.0,
        sustained_rate: sustained_rate.round(),
        best,
        probes,
    })
}

fn log_probe(p: &Probe) {
    let batches = if p.batch > 1 {
        format!(" ({:.1} reports per batch)", p.mean_batch)
    } else {
        String::new()
    };
    let rss = p
        .server_peak_rss_mib
        .map(|m| format!(", server peak RSS {m:.0} MiB"))
        .unwrap_or_default();
    eprintln!(
        "bench:   {} {:.0}/s offered, {:.0}/s acked{batches}, ack p99 {:.1} ms, freshness p99 {:.1} ms, backlog max {}{rss}: {}",
        p.mode,
        p.rate,
        p.achieved_rate,
        p.ack_p99_ms,
        p.freshness_p99_ms,
        p.max_backlog,
        if p.passed {
            "sustained".to_owned()
        } else {
            p.why.join("; ")
        }
    );
}

/// The size of a real stream entry: a simulated rider's report, validated
/// and encoded as the server stores it.
fn real_entry_bytes() -> anyhow::Result<usize> {
    let today = Utc::now().date_naive();
    let start = NaiveDateTime::new(
        today,
        chrono::NaiveTime::from_hms_opt(7, 30, 0).context("valid time")?,
    );
    let source = Source::new(
        crate::sim::Network::sample(),
        crate::sim::Scenario::honest(),
        1,
        start,
        1.0,
    );
    let now = Utc::now();
    let raw = source
        .report(Duration::ZERO, now)
        .context("no simulated train runs at 07:30")?;
    let report = validate_report(&raw, &Limits::default(), &DeviceHasher::new("bench"), now)
        .map_err(|e| anyhow::anyhow!("simulated report rejected: {e}"))?;
    Ok(crowd_proto::codec::encode_report(&report, now).len())
}

/// `redis-server --version`, e.g. `v=7.0.15`.
fn redis_version() -> Option<String> {
    let out = std::process::Command::new("redis-server")
        .arg("--version")
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    text.split_whitespace()
        .find_map(|w| w.strip_prefix("v="))
        .map(str::to_owned)
}

/// Writes `bench.json` and `bench.md` under `dir`.
fn write(report: &BenchReport, dir: &std::path::Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let json = dir.join("bench.json");
    std::fs::write(&json, serde_json::to_string_pretty(report)? + "\n")
        .with_context(|| format!("writing {}", json.display()))?;
    let md = dir.join("bench.md");
    std::fs::write(&md, report.markdown()).with_context(|| format!("writing {}", md.display()))?;
    eprintln!("bench: wrote {} and {}", json.display(), md.display());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quick_settings_are_smaller() {
        let parse = |flags: &[&str]| {
            #[derive(clap::Parser)]
            struct Cli {
                #[command(flatten)]
                args: BenchArgs,
            }
            <Cli as clap::Parser>::parse_from(std::iter::once("bench").chain(flags.iter().copied()))
                .args
                .settings()
        };
        let full = parse(&[]);
        let quick = parse(&["--quick"]);
        assert_eq!(full.sparse_streams, 10_000);
        assert_eq!(quick.sparse_streams, 5_000);
        assert!(quick.probe_duration < full.probe_duration);
        assert!(quick.drain_reports < full.drain_reports);
        assert!(quick.scale_reports < full.scale_reports);
        assert_eq!(parse(&["--sparse-streams", "6000"]).sparse_streams, 6_000);
    }

    #[test]
    fn the_firehose_and_its_half_load_are_batched_by_default() {
        #[derive(clap::Parser)]
        struct Cli {
            #[command(flatten)]
            args: BenchArgs,
        }
        let parse = |flags: &[&str]| {
            <Cli as clap::Parser>::parse_from(std::iter::once("bench").chain(flags.iter().copied()))
                .args
        };
        let args = parse(&[]);
        assert_eq!(args.firehose_batch, 64);
        let plan = half_load_plan(1000.0, &args, &args.settings());
        assert_eq!((plan.streams, plan.batch), (8, 64));
        let args = parse(&["--firehose-batch", "1"]);
        assert_eq!(half_load_plan(1000.0, &args, &args.settings()).batch, 1);
    }

    #[test]
    fn a_real_entry_has_a_plausible_size() {
        let n = real_entry_bytes().unwrap();
        assert!((40..400).contains(&n), "{n}");
    }
}
