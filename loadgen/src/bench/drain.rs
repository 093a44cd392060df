//! The aggregator alone: a partition stream pre-filled with encoded reports
//! (pipelined `XADD`s, before any aggregator runs), then one aggregator timed
//! from its start until every entry is delivered and acknowledged, i.e.
//! committed. Its ledgers then prove each report counted exactly once.

use std::time::{Duration, Instant};

use anyhow::Context;
use chrono::{DateTime, Utc};
use redis::aio::MultiplexedConnection;
use redis::streams::StreamInfoGroupsReply;
use serde::Serialize;
use tokio_util::sync::CancellationToken;

use crowd_proto::codec::encode_report;
use crowd_proto::domain::{Position, Report, TripKey};
use crowd_proto::layout::{GROUP, Layout, REPORT_FIELD};
use crowd_proto::level::Level;

use super::observe::{self, TrainMemory};
use super::resources::{cpu_seconds, redis_info};
use crate::redis_process::RedisServer;

/// Reports per fill pipeline.
const FILL_CHUNK: u64 = 5_000;
/// Longest wait for the aggregator to drain the stream.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(300);

/// What draining the stream took.
#[derive(Debug, Clone, Serialize)]
pub struct Drain {
    pub reports: u64,
    pub trains: u64,
    /// Reports per second the runner appended while filling (pipelined).
    pub fill_per_sec: f64,
    /// Aggregator start to everything acknowledged, seconds.
    pub wall_secs: f64,
    pub reports_per_sec: f64,
    /// CPU seconds of this process while draining: the aggregator (and the
    /// runner's cheap progress polls).
    pub process_cpu_secs: Option<f64>,
    /// Reports per CPU second of the aggregator: its rate per core.
    pub reports_per_cpu_sec: Option<f64>,
    pub redis_cpu_secs: Option<f64>,
    /// Sum of the train states' ledgers after the drain (must be `reports`).
    pub counted: u64,
    pub train_memory: TrainMemory,
}

/// Fills one partition with `reports` reports on `trains` trains and times
/// one aggregator draining it.
pub async fn measure(reports: u64, trains: u64) -> anyhow::Result<Drain> {
    let redis =
        tokio::task::spawn_blocking(|| RedisServer::start_with(Default::default())).await??;
    let layout = Layout::new(1);
    let client = redis::Client::open(redis.url())?;
    let mut con = client.get_multiplexed_async_connection().await?;
    let redis_pid: Option<u32> = redis_info(&mut con)
        .await?
        .get("process_id")
        .and_then(|p| p.parse().ok());

    let now = Utc::now();
    let stream = layout.reports(0);
    let fill_started = Instant::now();
    let mut i = 0;
    while i < reports {
        let mut pipe = redis::pipe();
        for j in i..(i + FILL_CHUNK).min(reports) {
            pipe.cmd("XADD")
                .arg(&stream)
                .arg("*")
                .arg(REPORT_FIELD)
                .arg(encode_synthetic(j, trains, now))
                .ignore();
        }
        pipe.query_async::<()>(&mut con).await?;
        i += FILL_CHUNK;
    }
    let fill_secs = fill_started.elapsed().as_secs_f64();

    let config = aggregator_config(&redis.url())?;
    let stop = CancellationToken::new();
    let process_before = cpu_seconds(None);
    let redis_before = cpu_seconds(redis_pid);
    let started = Instant::now();
    let aggregator = tokio::spawn(crowd_aggregator::run(
        config,
        stop.clone().cancelled_owned(),
    ));
    let drained = wait_drained(&mut con, &stream, reports, started).await;
    let wall_secs = started.elapsed().as_secs_f64();
    let process_cpu_secs = process_before.zip(cpu_seconds(None)).map(|(b, a)| a - b);
    let redis_cpu_secs = redis_before.zip(cpu_seconds(redis_pid)).map(|(b, a)| a - b);
    stop.cancel();
    aggregator.await??;
    drained?;
    let counted = observe::reports_counted(&mut con, &layout).await?;
    let train_memory = observe::train_memory(&mut con, &layout).await?;
    drop(redis);
    Ok(Drain {
        reports,
        trains,
        fill_per_sec: reports as f64 / fill_secs.max(1e-9),
        wall_secs,
        reports_per_sec: reports as f64 / wall_secs.max(1e-9),
        process_cpu_secs,
        reports_per_cpu_sec: process_cpu_secs
            .filter(|s| *s > 0.0)
            .map(|s| reports as f64 / s),
        redis_cpu_secs,
        counted,
        train_memory,
    })
}

impl Drain {
    /// Reports per CPU second of the aggregator and Redis together: the
    /// whole cost of aggregating, whichever side of the connection it
    /// falls on (many trains shift work into Redis: state loads, commits).
    pub fn reports_per_total_cpu_sec(&self) -> Option<f64> {
        let cpu = self.process_cpu_secs? + self.redis_cpu_secs?;
        (cpu > 0.0).then(|| self.reports as f64 / cpu)
    }
}

/// The same reports spread over few and over many trains, each drained by
/// one aggregator: whether the aggregator's cost per report holds up when
/// the network is large (state loads, commits and memory per train).
#[derive(Debug, Clone, Serialize)]
pub struct TrainScale {
    pub few: Drain,
    pub many: Drain,
    /// Reports per CPU second (aggregator + Redis) with many trains over
    /// that with few.
    pub cpu_ratio: Option<f64>,
    /// Reports per wall second with many trains over that with few.
    pub wall_ratio: f64,
}

/// Drains `reports` reports spread over `few` trains, then over `many`.
pub async fn scale(reports: u64, few: u64, many: u64) -> anyhow::Result<TrainScale> {
    let few = measure(reports, few).await?;
    let many = measure(reports, many).await?;
    let cpu_ratio = few
        .reports_per_total_cpu_sec()
        .zip(many.reports_per_total_cpu_sec())
        .map(|(f, m)| m / f);
    let wall_ratio = many.reports_per_sec / few.reports_per_sec.max(1e-9);
    Ok(TrainScale {
        few,
        many,
        cpu_ratio,
        wall_ratio,
    })
}

/// Polls the group until all `reports` entries were read and acknowledged.
async fn wait_drained(
    con: &mut MultiplexedConnection,
    stream: &str,
    reports: u64,
    started: Instant,
) -> anyhow::Result<()> {
    loop {
        let groups: redis::RedisResult<StreamInfoGroupsReply> = redis::cmd("XINFO")
            .arg("GROUPS")
            .arg(stream)
            .query_async(con)
            .await;
        let done = groups
            .ok()
            .and_then(|g| g.groups.into_iter().find(|g| g.name == GROUP))
            .is_some_and(|g| g.pending == 0 && g.entries_read.is_some_and(|r| r as u64 >= reports));
        if done {
            return Ok(());
        }
        anyhow::ensure!(
            started.elapsed() < DRAIN_TIMEOUT,
            "the aggregator did not drain {reports} reports within {DRAIN_TIMEOUT:?}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Report `i` as the server would have stored it: received a few seconds
/// after it was observed (a report held back for minutes is flagged late,
/// which is the abuse path, not the one measured here).
fn encode_synthetic(i: u64, trains: u64, now: DateTime<Utc>) -> Vec<u8> {
    let report = synthetic_report(i, trains, now);
    let received = report.observed_at + chrono::Duration::milliseconds((i % 5_000) as i64);
    encode_report(&report, received)
}

/// Riders of the drain's rush hour, spread evenly over its trains.
const RIDERS: u64 = 50_000;
/// Riders per train at least, so that every train has several reporters
/// however many trains there are.
const MIN_RIDERS_PER_TRAIN: u64 = 4;

/// Report `i` of a rush hour: `trains` trains of 8 cars, each with its own
/// riders (50,000 in all, at least 4 per train), observed over the last
/// five minutes, with positions a few metres apart. A rider stays on one
/// train and in one car, as riders do: a device seen on many trains at once
/// is flagged and down-weighted, which is the abuse path, not the one
/// measured here.
fn synthetic_report(i: u64, trains: u64, now: DateTime<Utc>) -> Report {
    let trains = trains.max(1);
    let per_train = (RIDERS / trains).max(MIN_RIDERS_PER_TRAIN);
    let train = splitmix(i) % trains;
    let seat = splitmix(i ^ 0xaaaa) % per_train;
    let rider = train * per_train + seat;
    Report {
        report_id: format!("drain-{i}"),
        device: splitmix(rider),
        trip: TripKey {
            trip_id: format!("T{train:05}"),
            start_date: now.format("%Y%m%d").to_string(),
        },
        route_id: "B".to_owned(),
        carriage_sequence: (seat % 8) as u32 + 1,
        level: Level::ALL[(splitmix(i ^ 0x5555) % 4) as usize + 1],
        occupancy_percentage: None,
        observed_at: now - chrono::Duration::milliseconds((i % 300_000) as i64),
        position: Some(Position {
            latitude: 48.85 + (train % 1_000) as f64 * 1e-4 + (i % 10) as f64 * 1e-6,
            longitude: 2.35,
            accuracy_m: 15.0,
        }),
        stop_id: String::new(),
    }
}

/// A well-mixed 64-bit function of `x` (SplitMix64's finalizer).
fn splitmix(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// The aggregator's configuration for a one-partition drain.
fn aggregator_config(redis_url: &str) -> anyhow::Result<crowd_aggregator::Config> {
    use clap::Parser;
    crowd_aggregator::Config::try_parse_from([
        "crowd-aggregator",
        "--redis-url",
        redis_url,
        "--partitions",
        "1",
    ])
    .context("aggregator flags")
}
