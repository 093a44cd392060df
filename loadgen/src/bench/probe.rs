//! One end-to-end probe: a fresh stack (private Redis, in-process server and
//! aggregator), the open-loop driver at one offered rate, and a sampler of
//! the aggregator's backlog and of this process's memory while it runs.

use std::time::Duration;

use serde::Serialize;
use tokio_util::sync::CancellationToken;

use crowd_proto::layout::Layout;

use super::observe::{self, TrainMemory};
use super::resources::{cpu_seconds, own_memory_mib, peak_memory_mib};
use super::system::System;
use crate::driver::{self, RunArgs, RunSummary};

/// Freshness p99 a sustained rate must keep, milliseconds.
pub const FRESHNESS_P99_MS: f64 = 250.0;
/// How often the backlog and memory are sampled.
const SAMPLE_EVERY: Duration = Duration::from_millis(200);

/// What one probe offers.
#[derive(Debug, Clone)]
pub struct ProbePlan {
    /// `firehose`, `sparse`, `half-load`: names the probe in the results.
    pub mode: &'static str,
    /// Offered reports per second.
    pub rate: f64,
    pub streams: usize,
    /// Most reports per message (the driver's `--batch`): 1 is
    /// `StreamReports`, more is `StreamReportBatches`.
    pub batch: usize,
    /// How long a batch waits for more after its first report.
    pub linger: Duration,
    pub duration: Duration,
    /// WatchOccupancy subscribers measuring freshness.
    pub watchers: usize,
    /// Open-loop GetOccupancy queries per second (0: none).
    pub query_rate: f64,
    /// Measure Redis memory per train at the end.
    pub measure_memory: bool,
}

/// What one probe measured, and whether the rate was sustained.
#[derive(Debug, Clone, Serialize)]
pub struct Probe {
    pub mode: String,
    pub rate: f64,
    pub streams: usize,
    /// Most reports per message (1: one report per message).
    pub batch: usize,
    /// Reports per message actually sent: a stream sends what is queued,
    /// so batches are often smaller than `batch`.
    pub mean_batch: f64,
    /// Sustained: every report acked, generator on schedule, freshness p99
    /// under the bound, aggregator backlog bounded.
    pub passed: bool,
    /// Why not, when it was not.
    pub why: Vec<String>,
    pub achieved_rate: f64,
    pub sent: u64,
    pub accepted: u64,
    pub ack_p99_ms: f64,
    pub freshness_count: u64,
    pub freshness_p50_ms: f64,
    pub freshness_p99_ms: f64,
    pub query_count: u64,
    pub query_p50_ms: f64,
    pub query_p99_ms: f64,
    /// Largest aggregator backlog seen (reports appended, not committed).
    pub max_backlog: u64,
    /// Wall time of the driver (sending + draining), seconds.
    pub wall_secs: f64,
    /// Whether the server ran as a process of its own.
    pub server_process: bool,
    /// CPU seconds of the server process, when it is one.
    pub server_cpu_secs: Option<f64>,
    /// Peak resident memory of the server process, MiB.
    pub server_peak_rss_mib: Option<f64>,
    /// Whether the aggregator ran as a process of its own.
    pub aggregator_process: bool,
    /// CPU seconds of the aggregator process, when it is one.
    pub aggregator_cpu_secs: Option<f64>,
    /// CPU seconds of this process: the load generator (and the aggregator
    /// and the server when they run in-process).
    pub process_cpu_secs: Option<f64>,
    /// CPU seconds of Redis.
    pub redis_cpu_secs: Option<f64>,
    /// Largest resident memory of this process during the probe, MiB.
    pub max_rss_mib: Option<f64>,
    pub train_memory: Option<TrainMemory>,
}

/// Runs one probe on a fresh stack.
pub async fn run(plan: &ProbePlan) -> anyhow::Result<Probe> {
    let partitions = crowd_proto::layout::DEFAULT_PARTITIONS;
    let system = System::start(partitions).await?;
    let server_pid = system.server_pid();
    let layout = Layout::new(partitions);
    let client = redis::Client::open(system.redis_url())?;
    let mut con = client.get_multiplexed_async_connection().await?;
    let redis_pid = super::resources::redis_info(&mut con)
        .await?
        .get("process_id")
        .and_then(|p| p.parse().ok());

    let stop = CancellationToken::new();
    let sampler = tokio::spawn(sample(con.clone(), layout, stop.clone()));
    let process_before = cpu_seconds(None);
    let redis_before = cpu_seconds(redis_pid);
    let server_before = server_pid.and_then(|p| cpu_seconds(Some(p)));
    let aggregator_pid = system.aggregator_pid();
    let aggregator_before = aggregator_pid.and_then(|p| cpu_seconds(Some(p)));
    let started = std::time::Instant::now();
    let args = RunArgs::from_flags(driver_flags(plan, &system.grpc_url()))?;
    let summary = driver::run(args).await;
    let wall_secs = started.elapsed().as_secs_f64();
    let process_cpu_secs = delta(process_before, cpu_seconds(None));
    let redis_cpu_secs = delta(redis_before, cpu_seconds(redis_pid));
    let server_cpu_secs = delta(server_before, server_pid.and_then(|p| cpu_seconds(Some(p))));
    let server_peak_rss_mib = server_pid.and_then(|p| peak_memory_mib(Some(p)));
    let aggregator_cpu_secs = delta(
        aggregator_before,
        aggregator_pid.and_then(|p| cpu_seconds(Some(p))),
    );
    stop.cancel();
    let (max_backlog, max_rss_mib) = sampler.await?;
    let train_memory = if plan.measure_memory {
        Some(observe::train_memory(&mut con, &layout).await?)
    } else {
        None
    };
    system.shutdown().await?;
    let summary = summary?;
    let why = verdict(&summary, max_backlog, plan.rate);
    Ok(Probe {
        mode: plan.mode.to_owned(),
        rate: plan.rate,
        streams: plan.streams,
        batch: plan.batch,
        mean_batch: summary.mean_batch(),
        passed: why.is_empty(),
        why,
        achieved_rate: summary.achieved_rate,
        sent: summary.sent,
        accepted: summary.accepted,
        ack_p99_ms: summary.ack_latency.p99_ms,
        freshness_count: summary.freshness.count,
        freshness_p50_ms: summary.freshness.p50_ms,
        freshness_p99_ms: summary.freshness.p99_ms,
        query_count: summary.queries.count,
        query_p50_ms: summary.queries.p50_ms,
        query_p99_ms: summary.queries.p99_ms,
        max_backlog,
        wall_secs,
        server_process: server_pid.is_some(),
        server_cpu_secs,
        server_peak_rss_mib,
        aggregator_process: aggregator_pid.is_some(),
        aggregator_cpu_secs,
        process_cpu_secs,
        redis_cpu_secs,
        max_rss_mib,
        train_memory,
    })
}

fn driver_flags(plan: &ProbePlan, target: &str) -> Vec<String> {
    let flags = [
        ("--target", target.to_owned()),
        ("--rate", format!("{:.0}", plan.rate)),
        ("--duration", format!("{}ms", plan.duration.as_millis())),
        ("--streams", plan.streams.to_string()),
        ("--batch", plan.batch.to_string()),
        (
            "--linger",
            format!("{}ms", plan.linger.as_secs_f64() * 1000.0),
        ),
        ("--watchers", plan.watchers.to_string()),
        ("--watch-trips", "3".to_owned()),
        ("--query-rate", plan.query_rate.to_string()),
        ("--score-every", "0".to_owned()),
        ("--scenario", "honest".to_owned()),
        ("--connect-timeout", "60s".to_owned()),
        ("--drain", "3s".to_owned()),
    ];
    let mut out: Vec<String> = flags
        .into_iter()
        .flat_map(|(flag, value)| [flag.to_owned(), value])
        .collect();
    out.push("--quiet".to_owned());
    out
}

fn delta(before: Option<f64>, after: Option<f64>) -> Option<f64> {
    before.zip(after).map(|(b, a)| a - b)
}

/// Samples the backlog and this process's memory until `stop`; returns
/// their largest values.
async fn sample(
    mut con: redis::aio::MultiplexedConnection,
    layout: Layout,
    stop: CancellationToken,
) -> (u64, Option<f64>) {
    let mut max_backlog = 0;
    let mut max_rss: Option<f64> = None;
    loop {
        if let Ok(b) = observe::backlog(&mut con, &layout).await {
            max_backlog = max_backlog.max(b);
        }
        if let (Some(rss), _) = own_memory_mib() {
            max_rss = Some(max_rss.map_or(rss, |m| m.max(rss)));
        }
        tokio::select! {
            () = tokio::time::sleep(SAMPLE_EVERY) => {}
            () = stop.cancelled() => return (max_backlog, max_rss),
        }
    }
}

/// Why a run at `rate` does not count as sustained (empty: it does).
pub fn verdict(summary: &RunSummary, max_backlog: u64, rate: f64) -> Vec<String> {
    let mut why = Vec::new();
    if !summary.valid {
        why.push(format!(
            "load generator fell behind ({})",
            summary.invalid_reasons.join("; ")
        ));
    }
    if summary.unacked > 0 || summary.error_count() > 0 {
        why.push(format!(
            "{} unacked, {} stream/watch/query errors",
            summary.unacked,
            summary.error_count()
        ));
    }
    if summary.sent > 0 && (summary.accepted as f64) < 0.99 * summary.sent as f64 {
        why.push(format!(
            "only {} of {} accepted",
            summary.accepted, summary.sent
        ));
    }
    if summary.freshness.count == 0 {
        why.push("no freshness measured".to_owned());
    } else if summary.freshness.p99_ms >= FRESHNESS_P99_MS {
        why.push(format!(
            "freshness p99 {:.0} ms >= {FRESHNESS_P99_MS:.0} ms",
            summary.freshness.p99_ms
        ));
    }
    let bound = backlog_bound(rate);
    if max_backlog > bound {
        why.push(format!(
            "aggregator backlog reached {max_backlog} reports (> {bound})"
        ));
    }
    why
}

/// The backlog a keeping-up aggregator stays under: half a second of
/// reports, plus room for a few batches in hand.
pub fn backlog_bound(rate: f64) -> u64 {
    (rate * 0.5) as u64 + 2_000
}

#[cfg(test)]
mod tests {
    use super::*;

    fn healthy() -> RunSummary {
        let mut s = RunSummary::empty_for_tests();
        s.sent = 1000;
        s.accepted = 1000;
        s.freshness.count = 50;
        s.freshness.p99_ms = 40.0;
        s
    }

    #[test]
    fn a_healthy_run_is_sustained() {
        assert!(verdict(&healthy(), 100, 10_000.0).is_empty());
    }

    #[test]
    fn each_failure_is_named() {
        let mut s = healthy();
        s.freshness.p99_ms = 300.0;
        let why = verdict(&s, 100, 10_000.0);
        assert_eq!(why, vec!["freshness p99 300 ms >= 250 ms"]);

        let mut s = healthy();
        s.valid = false;
        s.invalid_reasons.push("lag p99 80 ms".into());
        s.unacked = 3;
        let why = verdict(&s, backlog_bound(10_000.0) + 1, 10_000.0);
        assert_eq!(why.len(), 3, "{why:?}");
        assert!(why[0].contains("load generator fell behind (lag p99 80 ms)"));
        assert!(why[1].starts_with("3 unacked"));
        assert!(why[2].starts_with("aggregator backlog reached 7001"));

        let mut s = healthy();
        s.freshness.count = 0;
        s.accepted = 900;
        assert_eq!(
            verdict(&s, 0, 1.0),
            vec!["only 900 of 1000 accepted", "no freshness measured"]
        );
    }
}
