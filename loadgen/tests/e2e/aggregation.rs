//! The aggregator against a real Redis: reports appended to the partition
//! streams become published estimates, exactly once, across a crash.

use std::time::{Duration, Instant};

use crowd_aggregator::{AggregatorError, Config, decode_train_state, run};
use crowd_loadgen::redis_process::{RedisOptions, RedisServer};
use crowd_proto::codec::{decode_estimate, encode_report};
use crowd_proto::domain::{Position, Report, TripKey};
use crowd_proto::layout::{GROUP, Layout, REPORT_FIELD};
use crowd_proto::level::Level;
use crowd_proto::pb::store::TrainState;
use crowd_proto::pb::v1::OccupancyEstimate;
use redis::aio::MultiplexedConnection;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

const PARTITIONS: u16 = 4;

fn layout() -> Layout {
    Layout::new(PARTITIONS)
}

fn trip(trip_id: &str) -> TripKey {
    TripKey {
        trip_id: trip_id.into(),
        start_date: chrono::Utc::now().format("%Y%m%d").to_string(),
    }
}

/// A report observed a second ago.
fn stored(id: &str, device: u64, trip: &TripKey, car: u32, level: Level) -> Report {
    Report {
        report_id: id.into(),
        device,
        trip: trip.clone(),
        route_id: "B".into(),
        carriage_sequence: car,
        level,
        occupancy_percentage: None,
        observed_at: chrono::Utc::now() - chrono::Duration::seconds(1),
        position: None,
        stop_id: String::new(),
    }
}

/// Appends a report to its partition's stream, as the server does.
async fn append(con: &mut MultiplexedConnection, report: &Report) {
    append_all(con, std::slice::from_ref(report)).await;
}

/// Appends reports in one MULTI/EXEC, so a reader sees all of them or none.
async fn append_all(con: &mut MultiplexedConnection, reports: &[Report]) {
    let mut pipe = redis::pipe();
    pipe.atomic();
    for report in reports {
        pipe.cmd("XADD")
            .arg(layout().reports(layout().partition_of(&report.trip)))
            .arg("*")
            .arg(REPORT_FIELD)
            .arg(encode_report(report, chrono::Utc::now()));
    }
    let _: Vec<String> = pipe.query_async(con).await.expect("XADD");
}

async fn connect(redis: &RedisServer) -> MultiplexedConnection {
    connect_to(&redis.url()).await
}

async fn connect_to(url: &str) -> MultiplexedConnection {
    redis::Client::open(url)
        .expect("url")
        .get_multiplexed_async_connection()
        .await
        .expect("connect")
}

fn config(redis: &RedisServer, extra: &[&str]) -> Config {
    config_for(&redis.url(), extra)
}

fn config_for(url: &str, extra: &[&str]) -> Config {
    let partitions = PARTITIONS.to_string();
    let mut args = vec![
        "crowd-aggregator",
        "--redis-url",
        url,
        "--partitions",
        &partitions,
    ];
    args.extend_from_slice(extra);
    <Config as clap::Parser>::parse_from(args)
}

/// An in-process aggregator and the switch that stops it.
struct Running {
    stop: Option<oneshot::Sender<()>>,
    handle: JoinHandle<Result<(), AggregatorError>>,
}

fn spawn(config: Config) -> Running {
    let (tx, rx) = oneshot::channel::<()>();
    let handle = tokio::spawn(run(config, async move {
        let _ = rx.await;
    }));
    Running {
        stop: Some(tx),
        handle,
    }
}

impl Running {
    async fn shutdown(mut self) -> Result<(), AggregatorError> {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        finish(self.handle).await
    }
}

async fn finish(handle: JoinHandle<Result<(), AggregatorError>>) -> Result<(), AggregatorError> {
    tokio::time::timeout(Duration::from_secs(10), handle)
        .await
        .expect("aggregator stops within 10 s")
        .expect("aggregator task does not panic")
}

async fn get_bytes(con: &mut MultiplexedConnection, key: &str) -> Option<Vec<u8>> {
    redis::cmd("GET")
        .arg(key)
        .query_async(con)
        .await
        .expect("GET")
}

async fn estimate_of(con: &mut MultiplexedConnection, t: &TripKey) -> Option<OccupancyEstimate> {
    let key = layout().estimate(layout().partition_of(t), t);
    get_bytes(con, &key)
        .await
        .map(|b| decode_estimate(&b).expect("a decodable estimate"))
}

async fn state_of(con: &mut MultiplexedConnection, t: &TripKey) -> Option<TrainState> {
    let key = layout().state(layout().partition_of(t), t);
    get_bytes(con, &key)
        .await
        .map(|b| decode_train_state(&b).expect("a decodable state"))
}

/// Polls until `done` holds for the train's state, or fails after `timeout`.
async fn wait_for_state(
    con: &mut MultiplexedConnection,
    t: &TripKey,
    timeout: Duration,
    done: impl Fn(&TrainState) -> bool,
) -> TrainState {
    let deadline = Instant::now() + timeout;
    loop {
        let state = state_of(con, t).await;
        match state {
            Some(s) if done(&s) => return s,
            other if Instant::now() >= deadline => {
                panic!("state of {t} not reached within {timeout:?}: {other:?}")
            }
            _ => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
}

/// Entries of the partition's reports stream delivered but not acknowledged.
async fn pending(con: &mut MultiplexedConnection, t: &TripKey) -> i64 {
    let key = layout().reports(layout().partition_of(t));
    let summary: redis::Value = redis::cmd("XPENDING")
        .arg(key)
        .arg(GROUP)
        .query_async(con)
        .await
        .expect("XPENDING");
    match summary {
        redis::Value::Array(items) => match items.first() {
            Some(redis::Value::Int(n)) => *n,
            other => panic!("unexpected XPENDING count {other:?}"),
        },
        other => panic!("unexpected XPENDING reply {other:?}"),
    }
}

#[tokio::test]
async fn reports_become_published_estimates() {
    let redis = RedisServer::start();
    let mut con = connect(&redis).await;
    let busy = trip("AGG-BUSY");
    let quiet = trip("AGG-QUIET");
    for (i, device) in [1u64, 2, 3].into_iter().enumerate() {
        append(
            &mut con,
            &stored(&format!("b{i}"), device, &busy, 1, Level::Full),
        )
        .await;
    }
    append(&mut con, &stored("b9", 4, &busy, 2, Level::FewSeats)).await;
    let mut located = stored("q1", 5, &quiet, 0, Level::Empty);
    located.position = Some(Position {
        latitude: 48.85,
        longitude: 2.35,
        accuracy_m: 10.0,
    });
    append(&mut con, &located).await;

    let aggregator = spawn(config(&redis, &[]));
    wait_for_state(&mut con, &busy, Duration::from_secs(5), |s| {
        s.reports_counted == 4
    })
    .await;
    wait_for_state(&mut con, &quiet, Duration::from_secs(5), |s| {
        s.reports_counted == 1
    })
    .await;

    let est = estimate_of(&mut con, &busy).await.expect("busy estimate");
    assert_eq!(est.level, Level::Full.number());
    assert_eq!(est.reporters, 4);
    let cars: Vec<(u32, i32, u32)> = est
        .cars
        .iter()
        .map(|c| (c.carriage_sequence, c.level, c.reporters))
        .collect();
    assert_eq!(
        cars,
        vec![
            (1, Level::Full.number(), 3),
            (2, Level::FewSeats.number(), 1)
        ]
    );
    assert_eq!(est.trip.as_ref().map(|t| t.route_id.as_str()), Some("B"));

    let est = estimate_of(&mut con, &quiet).await.expect("quiet estimate");
    assert_eq!(est.level, Level::Empty.number());
    assert_eq!(est.reporters, 1);
    assert!(est.cars.is_empty(), "car 0 is the whole train: {est:?}");
    let position = est.position.expect("a position");
    assert_eq!((position.latitude, position.longitude), (48.85, 2.35));

    // Indexes and the updates stream follow the estimates.
    let k = layout().partition_of(&quiet);
    let near: Vec<String> = redis::cmd("GEOSEARCH")
        .arg(layout().geo(k))
        .arg("FROMLONLAT")
        .arg(2.35)
        .arg(48.85)
        .arg("BYRADIUS")
        .arg(1)
        .arg("km")
        .query_async(&mut con)
        .await
        .expect("GEOSEARCH");
    assert_eq!(near, vec![quiet.canonical()]);
    for t in [&busy, &quiet] {
        let k = layout().partition_of(t);
        let updates: i64 = redis::cmd("XLEN")
            .arg(layout().updates(k))
            .query_async(&mut con)
            .await
            .expect("XLEN");
        assert!(updates >= 1, "no update for {t}");
        let score: Option<f64> = redis::cmd("ZSCORE")
            .arg(layout().trains(k))
            .arg(t.canonical())
            .query_async(&mut con)
            .await
            .expect("ZSCORE");
        assert!(score.is_some(), "{t} missing from the trains index");
        assert_eq!(pending(&mut con, t).await, 0);
    }

    aggregator.shutdown().await.expect("clean shutdown");
    // Leases are handed back on shutdown.
    for k in layout().all() {
        let lease: Option<String> = redis::cmd("GET")
            .arg(layout().lease(k))
            .query_async(&mut con)
            .await
            .expect("GET lease");
        assert_eq!(lease, None, "lease of partition {k} kept after shutdown");
    }
}

/// The aggregator reads its streams on a connection of its own: it logs in
/// and selects the database the URL names, as every other connection does.
/// (Without a login, the only command allowed is `PING`.)
#[tokio::test]
async fn an_aggregator_logs_in_and_selects_the_database_of_its_url() {
    let redis = RedisServer::start_with(RedisOptions {
        extra_args: [
            "--user", "default", "on", "nopass", "-@all", "+ping", "--user", "crowd", "on",
            ">s3cret", "~*", "&*", "+@all",
        ]
        .map(String::from)
        .to_vec(),
        ..RedisOptions::default()
    })
    .expect("redis-server starts");
    let url_of = |db: u32| format!("redis://crowd:s3cret@127.0.0.1:{}/{db}", redis.port());
    let url = url_of(3);
    let mut con = connect_to(&url).await;
    let t = trip("AGG-DB3");
    for device in 1..=3u64 {
        let r = stored(&format!("db{device}"), device, &t, 1, Level::Full);
        append(&mut con, &r).await;
    }
    let aggregator = spawn(config_for(&url, &[]));
    wait_for_state(&mut con, &t, Duration::from_secs(5), |s| {
        s.reports_counted == 3
    })
    .await;
    assert_eq!(pending(&mut con, &t).await, 0);
    let mut default_db = connect_to(&url_of(0)).await;
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg("*")
        .query_async(&mut default_db)
        .await
        .expect("KEYS");
    assert!(keys.is_empty(), "written outside database 3: {keys:?}");
    aggregator.shutdown().await.expect("clean shutdown");
}

#[tokio::test]
async fn every_report_counts_exactly_once_across_a_crash() {
    let redis = RedisServer::start();
    let mut con = connect(&redis).await;
    let t = trip("AGG-CRASH");

    // Batch 1: committed before the crash.
    for device in 1..=3u64 {
        append(
            &mut con,
            &stored(&format!("a{device}"), device, &t, 1, Level::StandingRoom),
        )
        .await;
    }
    let mut crashing = config(&redis, &["--lease-ttl-ms", "1000"]);
    crashing.faults.crash_before_commit_of_batch = Some(2);
    let first = spawn(crashing);
    wait_for_state(&mut con, &t, Duration::from_secs(5), |s| {
        s.reports_counted == 3
    })
    .await;

    // Batch 2: read and applied, never committed.
    let batch2: Vec<Report> = (4..=5u64)
        .map(|device| stored(&format!("a{device}"), device, &t, 2, Level::StandingRoom))
        .collect();
    append_all(&mut con, &batch2).await;
    let result = finish(first.handle).await;
    assert!(
        matches!(result, Err(AggregatorError::InjectedCrash)),
        "{result:?}"
    );
    let state = state_of(&mut con, &t).await.expect("committed state");
    assert_eq!(state.reports_counted, 3, "the crashed batch must not count");
    assert_eq!(pending(&mut con, &t).await, 2);

    // More reports, including retries of a committed and of an uncommitted one.
    append(&mut con, &stored("a6", 6, &t, 3, Level::StandingRoom)).await;
    append(&mut con, &stored("a1", 1, &t, 1, Level::StandingRoom)).await;
    append(&mut con, &stored("a4", 4, &t, 2, Level::StandingRoom)).await;

    // A fresh aggregator takes over once the crashed one's lease lapses.
    let second = spawn(config(&redis, &["--lease-ttl-ms", "1000"]));
    wait_for_state(&mut con, &t, Duration::from_secs(8), |s| {
        s.reports_counted >= 6
    })
    .await;
    // Give a double count the time to show up.
    tokio::time::sleep(Duration::from_millis(700)).await;
    let state = state_of(&mut con, &t).await.expect("state");
    assert_eq!(state.reports_counted, 6);
    let est = estimate_of(&mut con, &t).await.expect("estimate");
    assert_eq!(est.reporters, 6);
    assert_eq!(est.level, Level::StandingRoom.number());
    assert_eq!(pending(&mut con, &t).await, 0);
    second.shutdown().await.expect("clean shutdown");
}

#[tokio::test]
async fn a_report_id_sent_twice_counts_once() {
    let redis = RedisServer::start();
    let mut con = connect(&redis).await;
    let t = trip("AGG-DUP");
    let report = stored("dup", 1, &t, 1, Level::Crushed);
    append(&mut con, &report).await;
    append(&mut con, &report).await;
    append(&mut con, &stored("other", 2, &t, 1, Level::Crushed)).await;

    let aggregator = spawn(config(&redis, &[]));
    wait_for_state(&mut con, &t, Duration::from_secs(5), |s| {
        s.reports_counted >= 2
    })
    .await;

    // The same id again in a later batch, then a new report to know it was read.
    append(&mut con, &report).await;
    append(&mut con, &stored("third", 3, &t, 1, Level::Crushed)).await;
    let state = wait_for_state(&mut con, &t, Duration::from_secs(5), |s| {
        s.observations.iter().any(|o| o.device == 3)
    })
    .await;
    assert_eq!(state.reports_counted, 3);
    let est = estimate_of(&mut con, &t).await.expect("estimate");
    assert_eq!(est.reporters, 3);
    assert_eq!(pending(&mut con, &t).await, 0);
    aggregator.shutdown().await.expect("clean shutdown");
}

/// Polls `check` every 50 ms until it holds, or fails after `timeout`.
async fn eventually<F, Fut>(what: &str, timeout: Duration, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + timeout;
    while !check().await {
        assert!(Instant::now() < deadline, "{what} not within {timeout:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn a_fenced_owner_cannot_commit_and_its_successor_replays() {
    let redis = RedisServer::start();
    let mut con = connect(&redis).await;
    let t = trip("AGG-FENCE");
    let k = layout().partition_of(&t);
    append(&mut con, &stored("f1", 1, &t, 1, Level::ManySeats)).await;
    let aggregator = spawn(config(&redis, &["--lease-ttl-ms", "600"]));
    wait_for_state(&mut con, &t, Duration::from_secs(5), |s| {
        s.reports_counted == 1
    })
    .await;

    // Someone else takes the partition: nothing more may be committed.
    let _: () = redis::cmd("SET")
        .arg(layout().lease(k))
        .arg("intruder:1")
        .query_async(&mut con)
        .await
        .expect("SET lease");
    append(&mut con, &stored("f2", 2, &t, 1, Level::ManySeats)).await;
    tokio::time::sleep(Duration::from_millis(800)).await;
    let state = state_of(&mut con, &t).await.expect("state");
    assert_eq!(state.reports_counted, 1, "committed without the lease");

    // The lease is free again: the aggregator takes it back and catches up.
    let _: () = redis::cmd("DEL")
        .arg(layout().lease(k))
        .query_async(&mut con)
        .await
        .expect("DEL lease");
    append(&mut con, &stored("f3", 3, &t, 1, Level::ManySeats)).await;
    wait_for_state(&mut con, &t, Duration::from_secs(5), |s| {
        s.reports_counted >= 3
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let state = state_of(&mut con, &t).await.expect("state");
    assert_eq!(state.reports_counted, 3);
    let lease: String = redis::cmd("GET")
        .arg(layout().lease(k))
        .query_async(&mut con)
        .await
        .expect("GET lease");
    assert!(!lease.starts_with("intruder"), "{lease}");
    assert_eq!(pending(&mut con, &t).await, 0);
    aggregator.shutdown().await.expect("clean shutdown");
}

#[tokio::test]
async fn partitions_move_to_the_other_aggregator_without_loss_or_double_count() {
    let redis = RedisServer::start();
    let mut con = connect(&redis).await;
    let trains: Vec<TripKey> = (0..8).map(|i| trip(&format!("AGG-HAND-{i}"))).collect();
    let round1: Vec<Report> = trains
        .iter()
        .enumerate()
        .map(|(i, t)| stored(&format!("h1-{i}"), 1, t, 1, Level::FewSeats))
        .collect();
    append_all(&mut con, &round1).await;

    let args = ["--lease-ttl-ms", "900"];
    let a = spawn(config(&redis, &args));
    let b = spawn(config(&redis, &args));
    for t in &trains {
        wait_for_state(&mut con, t, Duration::from_secs(5), |s| {
            s.reports_counted == 1
        })
        .await;
    }

    // One stops cleanly while reports keep coming; the other takes over.
    let round2: Vec<Report> = trains
        .iter()
        .enumerate()
        .map(|(i, t)| stored(&format!("h2-{i}"), 2, t, 2, Level::FewSeats))
        .collect();
    append_all(&mut con, &round2[..4]).await;
    a.shutdown().await.expect("clean shutdown");
    append_all(&mut con, &round2[4..]).await;
    for t in &trains {
        wait_for_state(&mut con, t, Duration::from_secs(5), |s| {
            s.reports_counted >= 2
        })
        .await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    for t in &trains {
        let state = state_of(&mut con, t).await.expect("state");
        assert_eq!(state.reports_counted, 2, "{t}");
        let est = estimate_of(&mut con, t).await.expect("estimate");
        assert_eq!(est.reporters, 2, "{t}");
        assert_eq!(pending(&mut con, t).await, 0, "{t}");
    }
    b.shutdown().await.expect("clean shutdown");
}

#[tokio::test]
async fn undecodable_entries_go_to_the_dead_letter_stream() {
    let redis = RedisServer::start();
    let mut con = connect(&redis).await;
    let t = trip("AGG-GARBAGE");
    let k = layout().partition_of(&t);
    let key = layout().reports(k);
    let mut ids = Vec::new();
    for (field, value) in [(REPORT_FIELD, &[0xffu8, 0xff, 0xff][..]), ("x", b"y")] {
        let id: String = redis::cmd("XADD")
            .arg(&key)
            .arg("*")
            .arg(field)
            .arg(value)
            .query_async(&mut con)
            .await
            .expect("XADD");
        ids.push(id);
    }
    append(&mut con, &stored("ok", 1, &t, 1, Level::Empty)).await;

    let aggregator = spawn(config(&redis, &[]));
    wait_for_state(&mut con, &t, Duration::from_secs(5), |s| {
        s.reports_counted == 1
    })
    .await;
    eventually("no pending entry", Duration::from_secs(2), || {
        let mut con = con.clone();
        let t = t.clone();
        async move { pending(&mut con, &t).await == 0 }
    })
    .await;
    assert_eq!(
        estimate_of(&mut con, &t).await.map(|e| e.level),
        Some(Level::Empty.number())
    );
    let dead = dead_letters(&mut con, k).await;
    assert_eq!(dead.len(), 2, "{dead:?}");
    assert_eq!(dead[0].0, ids[0]);
    assert!(dead[0].1.starts_with("undecodable: "), "{dead:?}");
    assert_eq!(dead[0].2, vec![0xff, 0xff, 0xff], "the payload is kept");
    assert_eq!(dead[1].0, ids[1]);
    assert!(dead[1].1.starts_with("missing: "), "{dead:?}");
    aggregator.shutdown().await.expect("clean shutdown");
}

#[tokio::test]
async fn an_entry_redelivered_too_often_is_set_aside_instead_of_retried_forever() {
    let redis = RedisServer::start();
    let mut con = connect(&redis).await;
    let t = trip("AGG-TIRED");
    let k = layout().partition_of(&t);
    let key = layout().reports(k);
    append(&mut con, &stored("tired", 1, &t, 1, Level::Full)).await;
    // Deliver it six times to the partition's consumer without committing,
    // as six owners that each failed before their commit would have.
    let _: () = redis::cmd("XGROUP")
        .arg("CREATE")
        .arg(&key)
        .arg(GROUP)
        .arg("0")
        .query_async(&mut con)
        .await
        .expect("XGROUP CREATE");
    for from in [">", "0", "0", "0", "0", "0"] {
        let _: redis::Value = redis::cmd("XREADGROUP")
            .arg("GROUP")
            .arg(GROUP)
            .arg(crowd_proto::layout::CONSUMER)
            .arg("STREAMS")
            .arg(&key)
            .arg(from)
            .query_async(&mut con)
            .await
            .expect("XREADGROUP");
    }
    append(&mut con, &stored("fresh", 2, &t, 1, Level::Empty)).await;

    let aggregator = spawn(config(&redis, &["--max-deliveries", "5"]));
    wait_for_state(&mut con, &t, Duration::from_secs(5), |s| {
        s.reports_counted == 1
    })
    .await;
    eventually("no pending entry", Duration::from_secs(2), || {
        let mut con = con.clone();
        let t = t.clone();
        async move { pending(&mut con, &t).await == 0 }
    })
    .await;
    let dead = dead_letters(&mut con, k).await;
    assert_eq!(dead.len(), 1, "{dead:?}");
    assert!(
        dead[0].1.starts_with("redelivered: delivered 7 times"),
        "{dead:?}"
    );
    assert_eq!(
        estimate_of(&mut con, &t).await.map(|e| e.level),
        Some(Level::Empty.number()),
        "only the fresh report counts"
    );
    aggregator.shutdown().await.expect("clean shutdown");
}

/// (original entry id, reason, payload) of partition `k`'s dead letters.
async fn dead_letters(con: &mut MultiplexedConnection, k: u16) -> Vec<(String, String, Vec<u8>)> {
    let reply: redis::streams::StreamRangeReply = redis::cmd("XRANGE")
        .arg(layout().dead(k))
        .arg("-")
        .arg("+")
        .query_async(con)
        .await
        .expect("XRANGE dead");
    reply
        .ids
        .iter()
        .map(|e| {
            (
                e.get("id").expect("id"),
                e.get("reason").expect("reason"),
                e.get("r").expect("r"),
            )
        })
        .collect()
}

#[tokio::test]
async fn idle_trains_expire_from_estimates_and_indexes() {
    let redis = RedisServer::start();
    let mut con = connect(&redis).await;
    let t = trip("AGG-IDLE");
    let k = layout().partition_of(&t);
    let mut report = stored("i1", 1, &t, 1, Level::Full);
    report.position = Some(Position {
        latitude: 45.76,
        longitude: 4.83,
        accuracy_m: 20.0,
    });
    append(&mut con, &report).await;

    let aggregator = spawn(config(&redis, &["--train-idle-secs", "1"]));
    eventually("an estimate", Duration::from_secs(5), || {
        let mut con = con.clone();
        let t = t.clone();
        async move { estimate_of(&mut con, &t).await.is_some() }
    })
    .await;
    eventually("expiry", Duration::from_secs(6), || {
        let mut con = con.clone();
        let t = t.clone();
        async move {
            let indexed: i64 = redis::pipe()
                .cmd("ZCARD")
                .arg(layout().trains(k))
                .cmd("ZCARD")
                .arg(layout().geo(k))
                .query_async::<(i64, i64)>(&mut con)
                .await
                .map(|(a, b)| a + b)
                .expect("ZCARD");
            indexed == 0
                && estimate_of(&mut con, &t).await.is_none()
                && state_of(&mut con, &t).await.is_none()
        }
    })
    .await;
    aggregator.shutdown().await.expect("clean shutdown");
}

#[tokio::test]
async fn estimates_without_fresh_reports_fade_out() {
    let redis = RedisServer::start();
    let mut con = connect(&redis).await;
    let t = trip("AGG-FADE");
    let k = layout().partition_of(&t);
    let mut report = stored("old", 1, &t, 1, Level::Full);
    report.position = Some(Position {
        latitude: 43.6,
        longitude: 1.44,
        accuracy_m: 8.0,
    });
    append(&mut con, &report).await;

    let args = ["--half-life-secs", "6", "--window-secs", "2"];
    let aggregator = spawn(config(&redis, &args));
    let first = {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            if let Some(est) = estimate_of(&mut con, &t).await {
                break est;
            }
            assert!(Instant::now() < deadline, "no estimate within 5 s");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };
    assert_eq!(first.level, Level::Full.number());
    assert_eq!(geo_members(&mut con, k).await, 1);

    // The only report leaves the 2 s window: the estimate is withdrawn
    // although nobody reported since, while the state (and its ledger) stays.
    eventually("withdrawal", Duration::from_secs(5), || {
        let mut con = con.clone();
        let t = t.clone();
        async move { estimate_of(&mut con, &t).await.is_none() }
    })
    .await;
    let state = state_of(&mut con, &t).await.expect("state kept");
    assert_eq!(state.reports_counted, 1);
    assert!(state.observations.is_empty(), "{state:?}");
    assert_eq!(
        geo_members(&mut con, k).await,
        0,
        "a withdrawn train stays findable"
    );
    // Watchers are told: the last change of the train has no level.
    let changes: redis::streams::StreamRangeReply = redis::cmd("XRANGE")
        .arg(layout().updates(k))
        .arg("-")
        .arg("+")
        .query_async(&mut con)
        .await
        .expect("XRANGE updates");
    let last = changes
        .ids
        .iter()
        .map(|e| decode_estimate(&e.get::<Vec<u8>>("e").expect("field e")).expect("decodable"))
        .rfind(|e| e.trip.as_ref().is_some_and(|r| r.trip_id == t.trip_id))
        .expect("changes of the train");
    assert_eq!(last.level, 0, "{last:?}");
    assert_eq!(last.reporters, 0);
    assert!(last.cars.is_empty());
    aggregator.shutdown().await.expect("clean shutdown");
}

async fn geo_members(con: &mut MultiplexedConnection, k: u16) -> i64 {
    redis::cmd("ZCARD")
        .arg(layout().geo(k))
        .query_async(con)
        .await
        .expect("ZCARD")
}

#[tokio::test]
async fn the_aggregator_rides_out_a_redis_restart() {
    let mut redis = RedisServer::start_with(RedisOptions {
        aof_always: true,
        ..RedisOptions::default()
    })
    .expect("redis with an append-only file");
    let mut con = connect(&redis).await;
    let t = trip("AGG-RESTART");
    append(&mut con, &stored("before", 1, &t, 1, Level::FewSeats)).await;
    let aggregator = spawn(config(&redis, &["--lease-ttl-ms", "1000"]));
    wait_for_state(&mut con, &t, Duration::from_secs(5), |s| {
        s.reports_counted == 1
    })
    .await;

    redis.kill();
    tokio::time::sleep(Duration::from_millis(700)).await;
    redis.restart().expect("redis restarts");
    let mut con = connect(&redis).await;
    append(&mut con, &stored("after", 2, &t, 1, Level::FewSeats)).await;
    wait_for_state(&mut con, &t, Duration::from_secs(10), |s| {
        s.reports_counted >= 2
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let state = state_of(&mut con, &t).await.expect("state");
    assert_eq!(state.reports_counted, 2);
    assert_eq!(pending(&mut con, &t).await, 0);
    assert!(
        !aggregator.handle.is_finished(),
        "gave up on a transient error"
    );
    aggregator.shutdown().await.expect("clean shutdown");
}

#[tokio::test]
async fn device_reputation_is_learnt_and_shared_through_redis() {
    let redis = RedisServer::start();
    let mut con = connect(&redis).await;
    let t = trip("AGG-TRUST");
    // Two riders agree; a third agrees with them, a fourth contradicts them.
    for (device, level) in [
        (1, Level::Full),
        (2, Level::Full),
        (3, Level::Full),
        (4, Level::Empty),
    ] {
        append(
            &mut con,
            &stored(&format!("t{device}"), device, &t, 1, level),
        )
        .await;
    }
    let aggregator = spawn(config(&redis, &[]));
    wait_for_state(&mut con, &t, Duration::from_secs(5), |s| {
        s.reports_counted == 4
    })
    .await;
    aggregator.shutdown().await.expect("clean shutdown");

    let scores: Vec<Option<f64>> = redis::cmd("HMGET")
        .arg(crowd_proto::layout::REPUTATION)
        .arg(format!("{:016x}", 1u64))
        .arg(format!("{:016x}", 3u64))
        .arg(format!("{:016x}", 4u64))
        .query_async(&mut con)
        .await
        .expect("HMGET");
    // The first rider had nobody to agree with: not judged.
    assert_eq!(scores[0], None);
    assert!(scores[1].is_some_and(|s| s > 0.0), "{scores:?}");
    assert!(scores[2].is_some_and(|s| s < 0.0), "{scores:?}");
}

#[tokio::test]
async fn a_saved_reputation_is_what_the_aggregator_weighs() {
    use crowd_aggregator::reputation::{MAX_SCORE, Reputation};

    let redis = RedisServer::start();
    let mut con = connect(&redis).await;
    // Device 1 earned its standing elsewhere (another service's mornings,
    // as in `loadgen quality`); devices 2, 3 and 4 are new.
    let mut learnt = Reputation::new();
    learnt.remember(1, MAX_SCORE);
    crowd_aggregator::save_reputation(&mut con, &learnt)
        .await
        .expect("saved");
    let t = trip("AGG-SAVED");
    let mut reports = vec![stored("v1", 1, &t, 1, Level::Empty)];
    reports.extend((2..=4).map(|d| stored(&format!("v{d}"), d, &t, 1, Level::Full)));
    append_all(&mut con, &reports).await;
    let aggregator = spawn(config(&redis, &[]));
    wait_for_state(&mut con, &t, Duration::from_secs(5), |s| {
        s.reports_counted == 4
    })
    .await;
    let estimate = estimate_of(&mut con, &t).await.expect("an estimate");
    aggregator.shutdown().await.expect("clean shutdown");
    // Four newcomers would make it FULL, three against one; the rider with
    // standing outweighs the fresh devices together.
    let level = Level::from_number(estimate.level).expect("a level");
    assert!(level.distance(Level::Empty) <= 1, "{estimate:?}");
}

#[tokio::test]
async fn estimates_say_how_they_compare_with_the_usual_and_feed_the_baseline() {
    use crowd_aggregator::baseline::hour_of_week;
    use crowd_proto::pb::store::BaselineCell;
    use crowd_proto::pb::v1::UsualComparison;
    use prost::Message;

    let redis = RedisServer::start();
    let mut con = connect(&redis).await;
    // Route B is usually a quarter full at this hour (and the next, should
    // the test straddle an hour).
    let now_ms = chrono::Utc::now().timestamp_millis();
    let hours = [hour_of_week(now_ms, 0), hour_of_week(now_ms + 3_600_000, 0)];
    let usual = BaselineCell {
        hour_of_week: 0,
        mean: 25.0,
        deviation: 5.0,
        samples: 40,
    };
    for hour in hours {
        let cell = BaselineCell {
            hour_of_week: hour,
            ..usual
        };
        let _: () = redis::cmd("HSET")
            .arg(crowd_proto::layout::baseline("B"))
            .arg(hour)
            .arg(cell.encode_to_vec())
            .query_async(&mut con)
            .await
            .expect("HSET baseline");
    }
    // A crowded train of route B, and one of a route with no history.
    let busy = trip("AGG-BUSY");
    let mut fresh = Vec::new();
    for device in 1..=4 {
        append(
            &mut con,
            &stored(&format!("busy-{device}"), device, &busy, 1, Level::Full),
        )
        .await;
        let mut other = stored(
            &format!("new-{device}"),
            device,
            &trip("AGG-NEWROUTE"),
            1,
            Level::Full,
        );
        other.route_id = "NEW".into();
        fresh.push(other);
    }
    append_all(&mut con, &fresh).await;

    let aggregator = spawn(config(&redis, &[]));
    eventually("both estimates", Duration::from_secs(5), || {
        let mut con = con.clone();
        async move {
            estimate_of(&mut con, &trip("AGG-BUSY")).await.is_some()
                && estimate_of(&mut con, &trip("AGG-NEWROUTE")).await.is_some()
        }
    })
    .await;
    let busy_estimate = estimate_of(&mut con, &busy).await.unwrap();
    assert_eq!(
        busy_estimate.usual_comparison,
        UsualComparison::Busier as i32,
        "{busy_estimate:?}"
    );
    let new_route = estimate_of(&mut con, &trip("AGG-NEWROUTE")).await.unwrap();
    assert_eq!(
        new_route.usual_comparison,
        UsualComparison::Unspecified as i32
    );
    aggregator.shutdown().await.expect("clean shutdown");

    // Confident estimates were recorded into the baselines, written back at
    // the latest on shutdown.
    let cells: std::collections::HashMap<u32, Vec<u8>> = redis::cmd("HGETALL")
        .arg(crowd_proto::layout::baseline("B"))
        .query_async(&mut con)
        .await
        .expect("HGETALL");
    let recorded: u32 = cells
        .values()
        .map(|b| BaselineCell::decode(b.as_slice()).unwrap().samples)
        .sum();
    if busy_estimate.confidence >= crowd_aggregator::baseline::MIN_CONFIDENCE {
        assert_eq!(recorded, 81, "one more sample on top of the 2 × 40");
    } else {
        assert_eq!(recorded, 80);
    }
    let new_cells: std::collections::HashMap<u32, Vec<u8>> = redis::cmd("HGETALL")
        .arg(crowd_proto::layout::baseline("NEW"))
        .query_async(&mut con)
        .await
        .expect("HGETALL");
    assert!(new_cells.len() <= 1, "{new_cells:?}");
}

#[tokio::test]
async fn a_device_on_many_trains_or_jumping_is_flagged_on_its_trains() {
    let redis = RedisServer::start();
    let mut con = connect(&redis).await;
    let trains: Vec<TripKey> = (0..3).map(|i| trip(&format!("AGG-MANY-{i}"))).collect();
    // Device 7 reports on three trains within seconds: no rider can.
    let everywhere: Vec<Report> = trains
        .iter()
        .enumerate()
        .map(|(i, t)| stored(&format!("many-{i}"), 7, t, 1, Level::Full))
        .collect();
    append_all(&mut con, &everywhere).await;
    // Device 8 is in Paris, then 400 km away a second later, on one train.
    let jumper = trip("AGG-JUMP");
    let mut here = stored("jump-1", 8, &jumper, 1, Level::Empty);
    here.position = Some(Position {
        latitude: 48.8809,
        longitude: 2.3553,
        accuracy_m: 10.0,
    });
    let mut there = stored("jump-2", 8, &jumper, 2, Level::Empty);
    there.observed_at = here.observed_at + chrono::Duration::seconds(1);
    there.position = Some(Position {
        latitude: 45.76,
        longitude: 4.83,
        accuracy_m: 10.0,
    });
    append_all(&mut con, &[here, there]).await;

    let aggregator = spawn(config(&redis, &[]));
    let flags_of = |t: TripKey| {
        let mut con = con.clone();
        async move {
            let k = layout().partition_of(&t);
            let flags: std::collections::HashMap<String, u64> = redis::cmd("HGETALL")
                .arg(layout().abuse(k, &t))
                .query_async(&mut con)
                .await
                .expect("HGETALL abuse");
            flags
        }
    };
    // Whichever of its reports is judged third (partitions are read in
    // their own order) is flagged, and only that one.
    eventually(
        "one of the trains is flagged",
        Duration::from_secs(5),
        || {
            let trains = trains.clone();
            async move {
                let mut many = 0;
                for t in trains {
                    many += flags_of(t).await.get("many_trains").copied().unwrap_or(0);
                }
                many == 1
            }
        },
    )
    .await;
    eventually("the jump is flagged", Duration::from_secs(5), || {
        let t = jumper.clone();
        async move { flags_of(t).await.get("position_jump") == Some(&1) }
    })
    .await;
    let mut many = 0;
    for t in &trains {
        many += flags_of(t.clone())
            .await
            .get("many_trains")
            .copied()
            .unwrap_or(0);
    }
    assert_eq!(many, 1, "flagged once, not once per read");
    aggregator.shutdown().await.expect("clean shutdown");
}

#[tokio::test]
async fn a_new_owner_keeps_fading_the_estimates_it_inherits() {
    let redis = RedisServer::start();
    let mut con = connect(&redis).await;
    let t = trip("AGG-INHERIT");
    append(&mut con, &stored("inherited", 1, &t, 1, Level::Full)).await;
    let args = ["--half-life-secs", "6", "--window-secs", "3"];
    let first = spawn(config(&redis, &args));
    eventually("an estimate", Duration::from_secs(5), || {
        let mut con = con.clone();
        let t = t.clone();
        async move { estimate_of(&mut con, &t).await.is_some() }
    })
    .await;
    first.shutdown().await.expect("clean shutdown");

    // Nobody reports again: the next owner withdraws the estimate when its
    // report leaves the window (the key itself would live for an hour).
    let second = spawn(config(&redis, &args));
    eventually(
        "withdrawal by the new owner",
        Duration::from_secs(8),
        || {
            let mut con = con.clone();
            let t = t.clone();
            async move { estimate_of(&mut con, &t).await.is_none() }
        },
    )
    .await;
    assert_eq!(state_of(&mut con, &t).await.unwrap().reports_counted, 1);
    second.shutdown().await.expect("clean shutdown");
}

#[tokio::test]
async fn a_train_leans_on_what_the_train_ahead_said_on_its_stretch() {
    use crowd_aggregator::estimator::{self, Params, UniformTrust, stop_hash};
    use crowd_aggregator::profile::{Cell, Stretch};
    use crowd_proto::pb::store::ProfileCell;
    use prost::Message;

    let redis = RedisServer::start();
    let mut con = connect(&redis).await;
    let now = chrono::Utc::now();
    // The train ahead on route B left stop Y for Z crushed (130 %), as
    // another aggregator recorded.
    let stretch = Stretch {
        previous: stop_hash("Y"),
        latest: stop_hash("Z"),
    };
    let ahead = Cell::new(0xa4ead, 130.0, now.timestamp_millis());
    let _: () = redis::cmd("HSET")
        .arg(crowd_proto::layout::profile("B"))
        .arg(stretch.field())
        .arg(ahead.to_stored().encode_to_vec())
        .query_async(&mut con)
        .await
        .expect("HSET profile");

    // This train's riders: one at Y, three before it reached Z, one at Z;
    // all say few seats.
    let behind = trip("AGG-BEHIND");
    let at = |secs: i64, stop: &str, id: &str, device: u64| {
        let mut r = stored(id, device, &behind, 1 + device as u32 % 8, Level::FewSeats);
        r.observed_at = now - chrono::Duration::seconds(secs);
        r.stop_id = stop.into();
        r
    };
    let reports = vec![
        at(12, "Y", "y", 1),
        at(9, "", "a", 2),
        at(9, "", "b", 3),
        at(9, "", "c", 4),
        at(6, "Z", "z", 5),
    ];
    append_all(&mut con, &reports).await;

    let aggregator = spawn(config(&redis, &[]));
    eventually("an estimate", Duration::from_secs(5), || {
        let mut con = con.clone();
        let behind = behind.clone();
        async move { estimate_of(&mut con, &behind).await.is_some() }
    })
    .await;
    let published = estimate_of(&mut con, &behind).await.expect("an estimate");
    aggregator.shutdown().await.expect("clean shutdown");

    // Its riders alone, at the same instant, say few seats; the train
    // ahead pulls the published estimate well up.
    let state = state_of(&mut con, &behind).await.expect("a state");
    let at_ms = published
        .updated_at
        .as_ref()
        .map_or(0, |t| t.seconds * 1000 + i64::from(t.nanos) / 1_000_000);
    let alone =
        estimator::estimate(&state, at_ms, &Params::default(), &UniformTrust).expect("an estimate");
    assert_eq!(alone.level, Level::FewSeats.number(), "{alone:?}");
    assert!(
        published.occupancy_percentage > alone.occupancy_percentage + 15,
        "{} vs {} alone",
        published.occupancy_percentage,
        alone.occupancy_percentage
    );
    assert_eq!(
        published.source,
        crowd_proto::pb::v1::EstimateSource::CrowdAndTrainsAhead as i32
    );

    // What its own riders said is now the stretch's latest, written back
    // at the latest on shutdown; the train ahead went into the average.
    let bytes: Vec<u8> = redis::cmd("HGET")
        .arg(crowd_proto::layout::profile("B"))
        .arg(stretch.field())
        .query_async(&mut con)
        .await
        .expect("HGET profile");
    let cell = Cell::from_stored(&ProfileCell::decode(bytes.as_slice()).expect("a cell"))
        .expect("finite numbers");
    assert_ne!(cell.trip, ahead.trip);
    assert_eq!(cell.earlier.map(|(p, _)| p), Some(130.0));
    assert!(cell.percentage < 70.0, "{cell:?}");
    let ttl: i64 = redis::cmd("TTL")
        .arg(crowd_proto::layout::profile("B"))
        .query_async(&mut con)
        .await
        .expect("TTL");
    assert!(ttl > 0, "the profile expires: {ttl}");
}
