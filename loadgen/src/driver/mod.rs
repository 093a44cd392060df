//! The open-loop load driver behind `loadgen run`.
//!
//! A generator follows a Poisson arrival schedule, takes each report from
//! the rider simulator and hands it to one of many `StreamReports` streams
//! (`StreamReportBatches` with `--batch`, see [`streams`]);
//! latencies are measured from each report's intended send time, so a slow
//! server cannot hide behind a slowed-down generator. Watchers measure how
//! fresh live updates are, a query generator measures `GetOccupancy`, and
//! accuracy rounds compare estimates with the simulator's truth.
//!
//! - [`arrivals`]: schedules and Poisson arrival times (pure).
//! - [`connect`]: connections to the target.
//! - [`source`]: the simulator on a clock tied to the run.
//! - [`generator`]: the sending loop.
//! - [`streams`], [`watchers`], [`queries`], [`scoring`]: the clients.
//! - [`stats`], [`progress`], [`summary`], [`assert`](mod@assert): measuring and
//!   judging.

pub mod arrivals;
pub mod assert;
pub mod connect;
pub mod generator;
pub mod progress;
pub mod queries;
pub mod scoring;
pub mod source;
pub mod stats;
pub mod streams;
pub mod summary;
pub mod watchers;

mod args;

use std::sync::{Arc, RwLock};
use std::time::Duration;

use chrono::{NaiveDateTime, Utc};
use crowd_proto::pb::v1::occupancy_service_client::OccupancyServiceClient;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

pub use args::RunArgs;
pub use assert::Thresholds;
pub use summary::RunSummary;

use generator::Generator;
use source::Source;
use stats::Stats;
use watchers::Freshness;

/// Time between spawning the clients and the first scheduled report, so the
/// first arrivals are not late because tasks were still starting.
const LEAD_IN: Duration = Duration::from_millis(100);

/// Runs a load test as configured and returns what it measured.
///
/// Errors are for runs that could not happen (bad configuration, target
/// unreachable); a run that happened but missed its thresholds returns a
/// summary whose [`RunSummary::failures`] say which.
pub async fn run(args: RunArgs) -> anyhow::Result<RunSummary> {
    let plan = args.plan()?;
    let network = match &args.network {
        Some(path) => crate::sim::Network::from_file(path)?,
        None => crate::sim::Network::sample(),
    };
    let channels = connect::connect(
        &args.target,
        connect::connection_count(args.connections, args.streams),
        args.connect_timeout,
    )
    .await?;
    let today = Utc::now().date_naive();
    let source = Source::new(
        network,
        args.scenario.scenario(),
        args.seed,
        NaiveDateTime::new(today, args.sim_start),
        args.sim_speed,
    );
    let stats = Arc::new(Stats::default());
    let freshness = Arc::new(Freshness::default());
    let scores = Arc::new(scoring::Scores::default());
    let running = Arc::new(RwLock::new(source.running_trips()));
    let stop = CancellationToken::new();
    let channel = |i: usize| channels[i % channels.len()].clone();

    let mut senders = Vec::with_capacity(args.streams);
    let mut streams = Vec::with_capacity(args.streams);
    let mut ready = Vec::with_capacity(args.streams);
    for i in 0..args.streams {
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        let (opened, opened_rx) = tokio::sync::oneshot::channel();
        senders.push(tx);
        ready.push(opened_rx);
        streams.push(streams::spawn(
            channel(i),
            streams::Batching {
                most: args.batch,
                linger: args.linger,
            },
            rx,
            opened,
            freshness.clone(),
            stats.clone(),
            stop.clone(),
        ));
    }
    // Start the clock only once every stream can take reports: opening
    // thousands of calls is not part of the load being measured.
    let opening = futures::future::join_all(ready);
    if tokio::time::timeout(args.connect_timeout, opening)
        .await
        .is_err()
    {
        stop.cancel();
        anyhow::bail!(
            "{} {} streams did not all open within {:?}; errors: {:?}",
            args.streams,
            if args.batch > 1 {
                "StreamReportBatches"
            } else {
                "StreamReports"
            },
            args.connect_timeout,
            stats.stream_errors.snapshot()
        );
    }

    let mut helpers = Vec::new();
    for index in 0..args.watchers {
        let share = watchers::Share {
            index,
            of: args.watchers,
            per_watcher: args.watch_trips,
            running: running.clone(),
        };
        helpers.push(watchers::spawn(
            channel(index),
            share,
            freshness.clone(),
            stats.clone(),
            stop.clone(),
        ));
    }

    let start = Instant::now() + LEAD_IN;
    let start_utc = Utc::now() + LEAD_IN;
    if args.query_rate > 0.0 {
        let plan = queries::QueryPlan {
            rate: args.query_rate,
            duration: plan.duration,
            seed: args.seed.wrapping_add(1),
            start,
        };
        helpers.push(queries::spawn(
            &args.target,
            args.connect_timeout,
            running.clone(),
            plan,
            stats.clone(),
            stop.clone(),
        )?);
    }
    if !args.score_every.is_zero() {
        helpers.push(scoring::spawn(
            channel(2),
            source.clone(),
            args.score_every,
            scores.clone(),
            stats.clone(),
            stop.clone(),
        ));
    }
    let progress_stop = CancellationToken::new();
    let progress =
        (!args.quiet).then(|| progress::spawn(stats.clone(), start, progress_stop.clone()));

    let generator = Generator {
        arrivals: arrivals::Arrivals::new(plan.schedule.clone(), plan.duration, args.seed)?,
        start,
        start_utc,
        late_after: Duration::from_secs_f64(args.late_ms / 1000.0),
        source: source.clone(),
        senders,
        running: running.clone(),
        freshness: freshness.clone(),
        stats: stats.clone(),
    };
    tokio::task::spawn_blocking(move || generator.run()).await?;

    // Drain: streams end once every report is acked; watchers get until the
    // deadline to see the last reports.
    let deadline = Instant::now() + args.drain;
    let mut all_acked = tokio::spawn(futures::future::join_all(streams));
    let drained = tokio::time::timeout_at(deadline, &mut all_acked)
        .await
        .is_ok();
    while args.watchers > 0 && freshness.waiting() > 0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut client = OccupancyServiceClient::new(channel(0));
    scoring::score_once(&mut client, &source, &scores, &stats).await;
    stop.cancel();
    if !drained {
        let _ = all_acked.await;
    }
    for task in helpers {
        let _ = task.await;
    }
    progress_stop.cancel();
    if let Some(progress) = progress {
        let _ = progress.await;
    }

    let summary = summarize(&args, &plan, &stats, &freshness, &scores)?;
    if let Some(path) = &args.json {
        summary.write_json(path)?;
    }
    Ok(summary)
}

/// Collects the final numbers and judges validity and thresholds.
fn summarize(
    args: &RunArgs,
    plan: &args::Plan,
    stats: &Stats,
    freshness: &Freshness,
    scores: &scoring::Scores,
) -> anyhow::Result<RunSummary> {
    let secs = plan.duration.as_secs_f64();
    let acks = stats.accepted.get() + stats.duplicate.get() + stats.rejected.get();
    let generator_lag = stats.generator_lag.summary();
    let validity = assert::Validity {
        late_ms: args.late_ms,
        max_lag_p99_ms: args.max_lag_p99_ms,
        max_late_fraction: args.max_late_fraction,
    };
    let dispatched = stats.sent.get() + stats.no_report.get();
    let invalid_reasons = validity.check(&generator_lag, stats.late.get(), dispatched);
    let mut summary = RunSummary {
        version: env!("CARGO_PKG_VERSION").to_owned(),
        config: serde_json::to_value(args)?,
        valid: invalid_reasons.is_empty(),
        invalid_reasons,
        duration_secs: secs,
        offered_rate: plan.schedule.expected_count(plan.duration) / secs,
        achieved_rate: acks as f64 / secs,
        sent: stats.sent.get(),
        messages: stats.messages.get(),
        no_report: stats.no_report.get(),
        accepted: stats.accepted.get(),
        duplicate: stats.duplicate.get(),
        rejected: stats.rejected.get(),
        unacked: stats.unacked.get(),
        out_of_order_acks: stats.out_of_order_acks.get(),
        rejected_by_reason: stats.reject_reasons.snapshot(),
        stream_errors: stats.stream_errors.snapshot(),
        ack_latency: stats.ack_latency.summary(),
        generator_lag,
        late: stats.late.get(),
        freshness: stats.freshness.summary(),
        freshness_unresolved: freshness.unresolved(),
        watch_errors: stats.watch_errors.snapshot(),
        queries: stats.query_latency.summary(),
        query_errors: stats.query_errors.snapshot(),
        accuracy: scores.latest(),
        accuracy_rounds: scores.rounds(),
        failures: Vec::new(),
    };
    summary.failures = args.thresholds.check(&summary);
    Ok(summary)
}
