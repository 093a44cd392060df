//! Ingest through the real server over a socket into a private Redis: every
//! kind of bad report is rejected with the field named while the stream goes
//! on, accepted reports really are in their partition stream, duplicates are
//! recognised, and a Redis outage gives a prompt UNAVAILABLE, never a hang.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use chrono::Utc;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Streaming;
use tonic::transport::Channel;

use crowd_loadgen::redis_process::RedisServer;
use crowd_proto::codec;
use crowd_proto::domain::TripKey;
use crowd_proto::layout::{Layout, REPORT_FIELD};
use crowd_proto::pb::store::StoredReport;
use crowd_proto::pb::v1::report_service_client::ReportServiceClient;
use crowd_proto::pb::v1::{AckStatus, CrowdingLevel, CrowdingReport, GeoPoint, ReportAck, TripRef};
use crowd_server::Config;
use crowd_server::health::protocol::HealthCheckRequest;
use crowd_server::health::protocol::health_check_response::ServingStatus;
use crowd_server::health::protocol::health_client::HealthClient;

/// Longest wait for any single answer in these tests.
const WAIT: Duration = Duration::from_secs(5);

/// A server started in-process on port 0 against `redis_url`.
pub(crate) struct TestServer {
    pub grpc: SocketAddr,
    pub config: Config,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<Result<(), crowd_server::ServerError>>>,
}

impl TestServer {
    /// Starts the server and waits until it reports SERVING.
    pub async fn start(redis_url: &str) -> TestServer {
        let server = TestServer::start_unchecked(Config::for_redis(redis_url)).await;
        server.wait_for_health(ServingStatus::Serving).await;
        server
    }

    /// Starts the server without waiting for Redis.
    pub async fn start_unchecked(config: Config) -> TestServer {
        let grpc = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let http = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = grpc.local_addr().unwrap();
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(crowd_server::run(config.clone(), grpc, http, async {
            let _ = stopped.await;
        }));
        TestServer {
            grpc: addr,
            config,
            stop: Some(stop),
            task: Some(task),
        }
    }

    pub async fn channel(&self) -> Channel {
        Channel::from_shared(format!("http://{}", self.grpc))
            .unwrap()
            .connect_timeout(WAIT)
            .connect()
            .await
            .unwrap()
    }

    pub async fn reports(&self) -> ReportServiceClient<Channel> {
        ReportServiceClient::new(self.channel().await)
    }

    /// The overall gRPC health status.
    pub async fn health(&self) -> ServingStatus {
        let mut client = HealthClient::new(self.channel().await);
        let reply = client
            .check(HealthCheckRequest {
                service: String::new(),
            })
            .await
            .unwrap();
        reply.into_inner().status()
    }

    /// Polls health until it is `want`; panics after a few seconds.
    pub async fn wait_for_health(&self, want: ServingStatus) {
        let deadline = Instant::now() + WAIT;
        loop {
            let now = self.health().await;
            if now == want {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "health stayed {now:?}, want {want:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Triggers shutdown and waits for `run` to return.
    pub async fn stop(mut self) -> Duration {
        let started = Instant::now();
        let _ = self.stop.take().unwrap().send(());
        let task = self.task.take().unwrap();
        tokio::time::timeout(Duration::from_secs(15), task)
            .await
            .expect("server did not stop within its drain deadline")
            .unwrap()
            .unwrap();
        started.elapsed()
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(task) = &self.task {
            task.abort();
        }
    }
}

pub(crate) fn trip(trip_id: &str) -> TripRef {
    TripRef {
        trip_id: trip_id.into(),
        start_date: Utc::now().format("%Y%m%d").to_string(),
        route_id: "B".into(),
    }
}

fn timestamp(at: chrono::DateTime<Utc>) -> prost_types::Timestamp {
    codec::timestamp_from_ms(at.timestamp_millis())
}

/// A valid report, observed a few seconds ago.
pub(crate) fn good(report_id: &str) -> CrowdingReport {
    CrowdingReport {
        report_id: report_id.into(),
        device_id: "device-1".into(),
        trip: Some(trip("T100")),
        carriage_sequence: 3,
        level: CrowdingLevel::StandingRoomOnly as i32,
        occupancy_percentage: Some(80),
        observed_at: Some(timestamp(Utc::now() - chrono::Duration::seconds(5))),
        position: Some(GeoPoint {
            latitude: 48.85,
            longitude: 2.35,
            accuracy_m: 12.0,
        }),
        stop_id: "STOP_1".into(),
    }
}

/// One open StreamReports call.
struct ReportStream {
    tx: mpsc::Sender<CrowdingReport>,
    acks: Streaming<ReportAck>,
}

impl ReportStream {
    async fn open(client: &mut ReportServiceClient<Channel>) -> ReportStream {
        let (tx, rx) = mpsc::channel(64);
        let acks = client
            .stream_reports(ReceiverStream::new(rx))
            .await
            .unwrap()
            .into_inner();
        ReportStream { tx, acks }
    }

    async fn send(&self, report: CrowdingReport) {
        self.tx.send(report).await.unwrap();
    }

    /// The next ack, or the status that ended the stream.
    async fn next(&mut self) -> Result<ReportAck, tonic::Status> {
        tokio::time::timeout(WAIT, self.acks.message())
            .await
            .expect("no ack in time")
            .map(|ack| ack.expect("stream ended without a status"))
    }
}

fn status(ack: &ReportAck) -> AckStatus {
    AckStatus::try_from(ack.status).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_reports_are_rejected_by_field_and_the_stream_goes_on() {
    let redis = RedisServer::start();
    let server = TestServer::start(&redis.url()).await;
    let mut client = server.reports().await;
    let mut stream = ReportStream::open(&mut client).await;

    type Mutation = Box<dyn Fn(&mut CrowdingReport)>;
    let past = Utc::now() - chrono::Duration::milliseconds(3 * 3600 * 1000 + 500);
    let future = Utc::now() + chrono::Duration::milliseconds(600 * 1000 + 500);
    let cases: Vec<(&str, Mutation, String)> = vec![
        (
            "empty report_id",
            Box::new(|r| r.report_id.clear()),
            "report_id: empty".into(),
        ),
        (
            "oversized report_id",
            Box::new(|r| r.report_id = "x".repeat(65)),
            "report_id: 65 bytes > 64".into(),
        ),
        (
            "illegal character in report_id",
            Box::new(|r| r.report_id = "report 1".into()),
            "report_id: illegal character ' ' at byte 6 (allowed: visible ASCII, no spaces)".into(),
        ),
        (
            "empty device_id",
            Box::new(|r| r.device_id.clear()),
            "device_id: empty".into(),
        ),
        (
            "missing trip",
            Box::new(|r| r.trip = None),
            "trip: missing".into(),
        ),
        (
            "start_date not a real date",
            Box::new(|r| r.trip.as_mut().unwrap().start_date = "20261332".into()),
            "trip.start_date: \"20261332\" is not a real YYYYMMDD date".into(),
        ),
        (
            "level UNSPECIFIED",
            Box::new(|r| r.level = 0),
            "level: UNSPECIFIED; say how crowded it is (EMPTY..NOT_ACCEPTING_PASSENGERS)".into(),
        ),
        (
            "level 9",
            Box::new(|r| r.level = 9),
            "level: unknown value 9 (expected 1..7)".into(),
        ),
        (
            "carriage_sequence 40",
            Box::new(|r| r.carriage_sequence = 40),
            "carriage_sequence: 40 > 32".into(),
        ),
        (
            "percentage 201",
            Box::new(|r| r.occupancy_percentage = Some(201)),
            "occupancy_percentage: 201 > 200".into(),
        ),
        (
            "observed 3 h ago",
            Box::new(move |r| r.observed_at = Some(timestamp(past))),
            "observed_at: 3h 0m in the past (max 30m)".into(),
        ),
        (
            "observed 10 min ahead",
            Box::new(move |r| r.observed_at = Some(timestamp(future))),
            "observed_at: 10m in the future (max 2m); check the device clock".into(),
        ),
        (
            "latitude NaN",
            Box::new(|r| r.position.as_mut().unwrap().latitude = f64::NAN),
            "position.latitude: NaN is not in -90..90".into(),
        ),
        (
            "longitude 200",
            Box::new(|r| r.position.as_mut().unwrap().longitude = 200.0),
            "position.longitude: 200 is not in -180..180".into(),
        ),
        (
            "accuracy -1",
            Box::new(|r| r.position.as_mut().unwrap().accuracy_m = -1.0),
            "position.accuracy_m: -1 must be a finite number >= 0".into(),
        ),
    ];

    for (i, (name, mutate, reason)) in cases.iter().enumerate() {
        let mut bad = good(&format!("bad-{i}"));
        mutate(&mut bad);
        let bad_id = bad.report_id.clone();
        stream.send(bad).await;
        stream.send(good(&format!("good-after-{i}"))).await;

        let ack = stream
            .next()
            .await
            .unwrap_or_else(|s| panic!("{name}: stream ended: {s}"));
        assert_eq!(status(&ack), AckStatus::Rejected, "{name}: {ack:?}");
        assert_eq!(ack.reason, *reason, "{name}");
        assert_eq!(ack.report_id, bad_id, "{name}");

        let ack = stream
            .next()
            .await
            .unwrap_or_else(|s| panic!("{name}: stream ended: {s}"));
        assert_eq!(status(&ack), AckStatus::Accepted, "after {name}: {ack:?}");
        assert_eq!(ack.report_id, format!("good-after-{i}"));
    }
    drop(stream);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn accepted_reports_are_in_their_partition_stream() {
    let redis = RedisServer::start();
    let server = TestServer::start(&redis.url()).await;
    let mut client = server.reports().await;
    let mut stream = ReportStream::open(&mut client).await;

    let trips = ["T1", "T2", "T3", "RER:B:42"];
    let mut sent = Vec::new();
    for (i, trip_id) in trips.iter().cycle().take(40).enumerate() {
        let mut report = good(&format!("r-{i}"));
        report.trip = Some(trip(trip_id));
        report.carriage_sequence = (i % 8) as u32;
        report.device_id = format!("device-{}", i % 5);
        sent.push(report.clone());
        stream.send(report).await;
    }
    for report in &sent {
        let ack = stream.next().await.unwrap();
        assert_eq!(
            ack.report_id, report.report_id,
            "acks come in arrival order"
        );
        assert_eq!(status(&ack), AckStatus::Accepted, "{ack:?}");
    }

    let layout = Layout::new(server.config.partitions);
    let devices = server.config.device_hasher();
    let mut found = 0;
    for (k, stored) in stored_reports(&redis.url(), layout).await {
        let original = sent
            .iter()
            .find(|r| r.report_id == stored.report_id)
            .expect("only sent reports are stored");
        let t = original.trip.as_ref().unwrap();
        let key = TripKey {
            trip_id: t.trip_id.clone(),
            start_date: t.start_date.clone(),
        };
        assert_eq!(
            layout.partition_of(&key),
            k,
            "{} in the wrong partition",
            stored.report_id
        );
        assert_eq!(stored.trip_id, t.trip_id);
        assert_eq!(stored.start_date, t.start_date);
        assert_eq!(stored.route_id, "B");
        assert_eq!(stored.carriage_sequence, original.carriage_sequence);
        assert_eq!(stored.level, CrowdingLevel::StandingRoomOnly as u32);
        assert_eq!(stored.occupancy_percentage, Some(80));
        assert_eq!(stored.device, devices.hash(&original.device_id));
        assert_eq!(
            stored.observed_at_ms,
            codec::timestamp_to_ms(original.observed_at.as_ref().unwrap())
        );
        assert!(stored.received_at_ms >= stored.observed_at_ms);
        assert_eq!(stored.position.unwrap().latitude, 48.85);
        found += 1;
    }
    assert_eq!(found, sent.len());
    drop(stream);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_report_id_seen_before_is_a_duplicate_and_written_once() {
    let redis = RedisServer::start();
    let server = TestServer::start(&redis.url()).await;
    let mut client = server.reports().await;
    let mut stream = ReportStream::open(&mut client).await;

    stream.send(good("same-id")).await;
    assert_eq!(status(&stream.next().await.unwrap()), AckStatus::Accepted);
    stream.send(good("same-id")).await;
    let ack = stream.next().await.unwrap();
    assert_eq!(status(&ack), AckStatus::Duplicate);
    assert_eq!(ack.report_id, "same-id");
    // Also across calls.
    let ack = client
        .submit_report(good("same-id"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(status(&ack), AckStatus::Duplicate);

    let layout = Layout::new(server.config.partitions);
    let t = trip("T100");
    let k = layout.partition_of(&TripKey {
        trip_id: t.trip_id,
        start_date: t.start_date,
    });
    let mut conn = redis::Client::open(redis.url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let len: u64 = redis::cmd("XLEN")
        .arg(layout.reports(k))
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(len, 1);
    drop(stream);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn submit_report_answers_each_report() {
    let redis = RedisServer::start();
    let server = TestServer::start(&redis.url()).await;
    let mut client = server.reports().await;

    let ack = client
        .submit_report(good("unary-1"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(status(&ack), AckStatus::Accepted);
    assert_eq!(ack.report_id, "unary-1");
    assert!(ack.reason.is_empty());

    let mut bad = good("unary-2");
    bad.carriage_sequence = 40;
    let ack = client.submit_report(bad).await.unwrap().into_inner();
    assert_eq!(status(&ack), AckStatus::Rejected);
    assert_eq!(ack.reason, "carriage_sequence: 40 > 32");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_outage_gives_prompt_unavailable_and_recovers() {
    let mut redis = RedisServer::start();
    let server = TestServer::start(&redis.url()).await;
    let mut client = server.reports().await;
    assert_eq!(
        status(
            &client
                .submit_report(good("before"))
                .await
                .unwrap()
                .into_inner()
        ),
        AckStatus::Accepted
    );

    redis.kill();
    let started = Instant::now();
    let err = client.submit_report(good("during-1")).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unavailable, "{err}");
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "took {:?}",
        started.elapsed()
    );

    // On a stream, the store failure ends the stream with UNAVAILABLE.
    let started = Instant::now();
    let mut stream = ReportStream::open(&mut client).await;
    stream.send(good("during-2")).await;
    let err = stream.next().await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unavailable, "{err}");
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "took {:?}",
        started.elapsed()
    );

    server.wait_for_health(ServingStatus::NotServing).await;

    // Redis comes back: the server follows by itself, and the retried
    // report (same id) is accepted.
    redis.restart().unwrap();
    server.wait_for_health(ServingStatus::Serving).await;
    let deadline = Instant::now() + WAIT;
    loop {
        match client.submit_report(good("during-1")).await {
            Ok(ack) => {
                assert_eq!(status(&ack.into_inner()), AckStatus::Accepted);
                break;
            }
            Err(e) if Instant::now() < deadline => {
                assert_eq!(e.code(), tonic::Code::Unavailable, "{e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => panic!("still failing after Redis came back: {e}"),
        }
    }
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_redis_times_out_instead_of_hanging() {
    let redis = RedisServer::start();
    let server = TestServer::start(&redis.url()).await;
    let mut client = server.reports().await;
    redis.pause();
    let started = Instant::now();
    let err = client.submit_report(good("frozen")).await.unwrap_err();
    let took = started.elapsed();
    redis.resume();
    assert_eq!(err.code(), tonic::Code::Unavailable, "{err}");
    assert!(took < Duration::from_secs(3), "took {took:?}");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_server_starts_while_redis_is_down() {
    let mut redis = RedisServer::start();
    let url = redis.url();
    redis.kill();
    let server = TestServer::start_unchecked(Config::for_redis(&url)).await;
    let mut client = server.reports().await;
    let err = client.submit_report(good("early")).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unavailable, "{err}");
    assert_eq!(server.health().await, ServingStatus::NotServing);

    redis.restart().unwrap();
    server.wait_for_health(ServingStatus::Serving).await;
    let ack = client
        .submit_report(good("early"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(status(&ack), AckStatus::Accepted);
    server.stop().await;
}

/// Every report stored in the partitions' reports streams, with the
/// partition it was found in.
async fn stored_reports(redis_url: &str, layout: Layout) -> Vec<(u16, StoredReport)> {
    let mut conn = redis::Client::open(redis_url)
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let mut stored = Vec::new();
    for k in layout.all() {
        let entries: redis::streams::StreamRangeReply = redis::cmd("XRANGE")
            .arg(layout.reports(k))
            .arg("-")
            .arg("+")
            .query_async(&mut conn)
            .await
            .unwrap();
        for entry in entries.ids {
            let bytes: Vec<u8> = entry.get(REPORT_FIELD).expect("field r");
            stored.push((k, codec::decode_report(&bytes).unwrap()));
        }
    }
    stored
}

/// Report ids stored in any partition's reports stream, sorted.
pub(crate) async fn stored_report_ids(redis_url: &str, layout: Layout) -> Vec<String> {
    let mut ids: Vec<String> = stored_reports(redis_url, layout)
        .await
        .into_iter()
        .map(|(_, report)| report.report_id)
        .collect();
    ids.sort();
    ids
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_acks_in_flight_reports_and_ends_open_streams() {
    let redis = RedisServer::start();
    let server = TestServer::start(&redis.url()).await;
    let layout = Layout::new(server.config.partitions);
    let mut client = server.reports().await;
    let mut stream = ReportStream::open(&mut client).await;
    for i in 0..20 {
        stream.send(good(&format!("drain-{i:02}"))).await;
    }
    let first = stream.next().await.unwrap();
    assert_eq!(first.report_id, "drain-00");
    let stopping = tokio::spawn(server.stop());
    // How many of the other reports reached the server before it stopped
    // reading depends on scheduling; what must hold is that acks come in
    // order, every one is ACCEPTED, and then the stream ends with a status.
    let mut acked = vec![first.report_id];
    let end = loop {
        match stream.next().await {
            Ok(ack) => {
                assert_eq!(status(&ack), AckStatus::Accepted);
                assert_eq!(ack.report_id, format!("drain-{:02}", acked.len()));
                acked.push(ack.report_id);
            }
            Err(status) => break status,
        }
    };
    assert_eq!(end.code(), tonic::Code::Unavailable, "{end}");
    let took = stopping.await.unwrap();
    assert!(took < Duration::from_secs(10), "shutdown took {took:?}");
    // Never silence: every report the server stored was acknowledged, and
    // every acknowledged report is stored.
    assert_eq!(stored_report_ids(&redis.url(), layout).await, acked);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_message_ends_the_stream_with_a_status_after_owed_acks() {
    let redis = RedisServer::start();
    let server = TestServer::start(&redis.url()).await;
    let mut client = server.reports().await;
    let mut stream = ReportStream::open(&mut client).await;
    stream.send(good("fits")).await;
    let mut huge = good("huge");
    huge.stop_id = "S".repeat(server.config.max_message_bytes + 1);
    stream.send(huge).await;

    let ack = stream.next().await.unwrap();
    assert_eq!(
        (ack.report_id.as_str(), status(&ack)),
        ("fits", AckStatus::Accepted)
    );
    let err = stream.next().await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::OutOfRange, "{err}");
    assert!(err.message().contains("too large"), "{err}");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flooding_device_is_limited_and_others_are_not() {
    let redis = RedisServer::start();
    let mut config = Config::for_redis(redis.url());
    config.device_rate_per_min = 2;
    config.device_burst = 3;
    let server = TestServer::start_unchecked(config).await;
    server.wait_for_health(ServingStatus::Serving).await;
    let mut client = server.reports().await;
    let mut stream = ReportStream::open(&mut client).await;
    for i in 0..5 {
        stream.send(good(&format!("flood-{i}"))).await;
    }
    let mut other = good("calm-1");
    other.device_id = "device-2".into();
    stream.send(other).await;

    for i in 0..3 {
        let ack = stream.next().await.unwrap();
        assert_eq!(
            (ack.report_id.clone(), status(&ack)),
            (format!("flood-{i}"), AckStatus::Accepted)
        );
    }
    for i in 3..5 {
        let ack = stream.next().await.unwrap();
        assert_eq!(ack.report_id, format!("flood-{i}"));
        assert_eq!(status(&ack), AckStatus::Rejected);
        assert_eq!(
            ack.reason,
            "device_id: more than 2 reports per minute; slow down"
        );
    }
    let ack = stream.next().await.unwrap();
    assert_eq!(
        (ack.report_id.as_str(), status(&ack)),
        ("calm-1", AckStatus::Accepted)
    );
    drop(stream);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_write_queue_answers_resource_exhausted_at_once() {
    let redis = RedisServer::start();
    let mut config = Config::for_redis(redis.url());
    config.write_queue = 1;
    config.writers = 1;
    let server = TestServer::start_unchecked(config).await;
    server.wait_for_health(ServingStatus::Serving).await;
    let client = server.reports().await;
    redis.pause();

    // The writer holds the first report in a stuck pipeline, the second
    // fills the queue, the third finds no room.
    let mut first = client.clone();
    let first = tokio::spawn(async move { first.submit_report(good("q-1")).await });
    tokio::time::sleep(Duration::from_millis(150)).await;
    let mut second = client.clone();
    let second = tokio::spawn(async move { second.submit_report(good("q-2")).await });
    tokio::time::sleep(Duration::from_millis(150)).await;
    let started = Instant::now();
    let err = client.clone().submit_report(good("q-3")).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::ResourceExhausted, "{err}");
    assert!(started.elapsed() < Duration::from_millis(500));

    let err = first.await.unwrap().unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unavailable, "{err}");
    redis.resume();
    // The queued report is settled either way, never left hanging.
    let _ = tokio::time::timeout(WAIT, second)
        .await
        .expect("second report hung");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acks_keep_arrival_order_when_answers_are_ready_at_different_times() {
    let redis = RedisServer::start();
    let server = TestServer::start(&redis.url()).await;
    let mut client = server.reports().await;
    let mut stream = ReportStream::open(&mut client).await;

    // More than the reports one stream may have in flight (256), mixing
    // answers ready at once (REJECTED, DUPLICATE) with ones that wait for
    // their write: acks leave in batches, and still in arrival order.
    let expected: Vec<(String, AckStatus)> = (0..600)
        .map(|i| match i {
            i if i % 7 == 3 => (format!("r-{i}"), AckStatus::Rejected),
            i if i > 1 && i % 11 == 5 => ("r-1".to_owned(), AckStatus::Duplicate),
            i => (format!("r-{i}"), AckStatus::Accepted),
        })
        .collect();
    let reports: Vec<CrowdingReport> = expected
        .iter()
        .enumerate()
        .map(|(i, (id, status))| {
            let mut report = good(id);
            report.device_id = format!("device-{i}");
            if *status == AckStatus::Rejected {
                report.carriage_sequence = 99;
            }
            report
        })
        .collect();
    let sending = {
        let tx = stream.tx.clone();
        tokio::spawn(async move {
            for report in reports {
                tx.send(report).await.unwrap();
            }
        })
    };
    for (id, want) in &expected {
        let ack = stream.next().await.unwrap();
        assert_eq!(&ack.report_id, id, "acks come in arrival order");
        assert_eq!(status(&ack), *want, "{ack:?}");
        if *want == AckStatus::Rejected {
            assert!(ack.reason.starts_with("carriage_sequence"), "{ack:?}");
        }
    }
    sending.await.unwrap();
    let accepted = expected
        .iter()
        .filter(|(_, s)| *s == AckStatus::Accepted)
        .count();
    assert_eq!(
        stored_report_ids(&redis.url(), Layout::new(server.config.partitions))
            .await
            .len(),
        accepted
    );
    drop(stream);
    server.stop().await;
}
