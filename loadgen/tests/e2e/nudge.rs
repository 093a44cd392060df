//! The nudge, as riders see it, against a real Redis, server and aggregator:
//! an ACCEPTED ack says how many riders are looking at the train (watchers,
//! live-page viewers, recent queries; each connection once, the reporter's
//! own never) and how many reports the device has made, a count that
//! survives a server restart; other acks say 0 for both. Riders connected
//! to another server of the deployment count too.

use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Streaming;
use tonic::transport::Channel;

use crowd_loadgen::redis_process::RedisServer;
use crowd_loadgen::stack::{Stack, StackOptions};
use crowd_proto::domain::{DeviceHasher, TripKey};
use crowd_proto::layout;
use crowd_proto::pb::v1::occupancy_service_client::OccupancyServiceClient;
use crowd_proto::pb::v1::report_service_client::ReportServiceClient;
use crowd_proto::pb::v1::{
    AckStatus, CrowdingLevel, CrowdingReport, GetContributionsRequest, GetOccupancyRequest,
    OccupancyEstimate, ReportAck, WatchOccupancyRequest,
};

use crate::helpers::{eventually, report, trip};
use crate::ingest::TestServer;

const TRAIN: &str = "NUDGE-1";
const SECRET: &str = "nudge-test-secret";
const WAIT: Duration = Duration::from_secs(10);

async fn start(redis_url: &str) -> Stack {
    Stack::start(StackOptions {
        redis_url: Some(redis_url.to_owned()),
        server_args: vec!["--device-secret".into(), SECRET.into()],
        ..StackOptions::default()
    })
    .await
    .expect("stack starts")
}

/// One rider's app: one connection for everything it does.
struct Rider {
    reports: ReportServiceClient<Channel>,
    occupancy: OccupancyServiceClient<Channel>,
}

impl Rider {
    async fn connect(stack: &Stack) -> Rider {
        let channel = Channel::from_shared(stack.grpc_url())
            .unwrap()
            .connect()
            .await
            .expect("connect");
        Rider {
            reports: ReportServiceClient::new(channel.clone()),
            occupancy: OccupancyServiceClient::new(channel),
        }
    }

    async fn submit(&mut self, report: CrowdingReport) -> ReportAck {
        self.reports
            .submit_report(report)
            .await
            .expect("an ack")
            .into_inner()
    }

    /// Watches the train, or every train of `route_id` when given.
    async fn watch(&mut self, route_id: &str) -> Streaming<OccupancyEstimate> {
        let trips = if route_id.is_empty() {
            vec![trip(TRAIN)]
        } else {
            Vec::new()
        };
        self.occupancy
            .watch_occupancy(WatchOccupancyRequest {
                trips,
                route_id: route_id.into(),
            })
            .await
            .expect("watch opens")
            .into_inner()
    }

    async fn contributions(&mut self, device_id: &str) -> Result<u64, tonic::Status> {
        self.reports
            .get_contributions(GetContributionsRequest {
                device_id: device_id.into(),
            })
            .await
            .map(|r| r.into_inner().contributions)
    }
}

/// Opens the live page's event stream of route B and waits for its first
/// snapshot; the page counts for as long as the socket stays open.
async fn open_page(stack: &Stack) -> TcpStream {
    let mut socket = TcpStream::connect(stack.http_addr()).await.unwrap();
    socket
        .write_all(b"GET /api/events?route_id=B HTTP/1.1\r\nHost: test\r\n\r\n")
        .await
        .unwrap();
    let mut seen = Vec::new();
    let deadline = Instant::now() + WAIT;
    while !String::from_utf8_lossy(&seen).contains("event: snapshot") {
        let mut buf = [0u8; 4096];
        let n = tokio::time::timeout_at(deadline.into(), socket.read(&mut buf))
            .await
            .expect("a snapshot in time")
            .unwrap();
        assert!(
            n > 0,
            "page stream closed: {}",
            String::from_utf8_lossy(&seen)
        );
        seen.extend_from_slice(&buf[..n]);
    }
    socket
}

fn status(ack: &ReportAck) -> AckStatus {
    AckStatus::try_from(ack.status).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn accepted_acks_tell_riders_who_they_help_and_how_much_they_gave() {
    let redis = RedisServer::start();
    let stack = start(&redis.url()).await;

    // Someone reported the train before, so it has an estimate to query.
    let mut seeder = Rider::connect(&stack).await;
    let ack = seeder
        .submit(report("seed-1", "seeder", TRAIN, 2, CrowdingLevel::Full))
        .await;
    assert_eq!(status(&ack), AckStatus::Accepted, "{ack:?}");
    assert_eq!(ack.helping_riders, 0, "nobody is looking yet");
    assert_eq!(ack.contributions, 1);

    // Rider C asks for the train (until the aggregator has published it),
    // and also watches it over the same connection: one rider.
    let mut querier = Rider::connect(&stack).await;
    let found = eventually(WAIT, || {
        let mut occupancy = querier.occupancy.clone();
        async move {
            let reply = occupancy
                .get_occupancy(GetOccupancyRequest {
                    trips: vec![trip(TRAIN)],
                })
                .await
                .ok()?
                .into_inner();
            (!reply.estimates.is_empty()).then_some(())
        }
    })
    .await;
    assert!(found.is_some(), "the train's estimate was never published");
    let _querier_watch = querier.watch("").await;

    // Rider A watches the train, rider B its whole route, P has the live
    // page of the route open.
    let mut a = Rider::connect(&stack).await;
    let watch_a = a.watch("").await;
    let mut b = Rider::connect(&stack).await;
    let _watch_b = b.watch("B").await;
    let page = open_page(&stack).await;

    // Rider R reports from the train, while watching it too: R's own
    // connection is not among the riders R helps.
    let mut reporter = Rider::connect(&stack).await;
    let _reporter_watch = reporter.watch("").await;
    let ack = reporter
        .submit(report(
            "r-1",
            "rider-r",
            TRAIN,
            3,
            CrowdingLevel::StandingRoomOnly,
        ))
        .await;
    assert_eq!(status(&ack), AckStatus::Accepted, "{ack:?}");
    assert_eq!(ack.helping_riders, 4, "A, B, C and the page: {ack:?}");
    assert_eq!(ack.contributions, 1);

    // The count runs on, over a report stream too.
    let (tx, rx) = mpsc::channel(8);
    let mut acks = reporter
        .reports
        .stream_reports(ReceiverStream::new(rx))
        .await
        .unwrap()
        .into_inner();
    for (i, id) in ["r-2", "r-3"].into_iter().enumerate() {
        tx.send(report(id, "rider-r", TRAIN, 3, CrowdingLevel::Full))
            .await
            .unwrap();
        let ack = tokio::time::timeout(WAIT, acks.message())
            .await
            .expect("ack in time")
            .unwrap()
            .unwrap();
        assert_eq!(status(&ack), AckStatus::Accepted, "{ack:?}");
        assert_eq!(ack.contributions, i as u64 + 2, "{ack:?}");
        assert_eq!(ack.helping_riders, 4, "{ack:?}");
    }

    // Neither a duplicate nor a rejected report counts, and their acks say
    // nothing about the audience.
    tx.send(report("r-3", "rider-r", TRAIN, 3, CrowdingLevel::Full))
        .await
        .unwrap();
    tx.send(report("r-bad", "rider-r", TRAIN, 40, CrowdingLevel::Full))
        .await
        .unwrap();
    for want in [AckStatus::Duplicate, AckStatus::Rejected] {
        let ack = acks.message().await.unwrap().unwrap();
        assert_eq!(status(&ack), want, "{ack:?}");
        assert_eq!((ack.helping_riders, ack.contributions), (0, 0), "{ack:?}");
    }
    drop(tx);
    assert_eq!(reporter.contributions("rider-r").await.unwrap(), 3);

    // The count is one Redis key per device hash, kept 30 days after the
    // last report.
    let key = layout::contributions(DeviceHasher::new(SECRET).hash("rider-r"));
    let mut conn = redis::Client::open(redis.url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let (count, ttl): (u64, i64) = redis::pipe()
        .cmd("GET")
        .arg(&key)
        .cmd("TTL")
        .arg(&key)
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(count, 3, "{key}");
    let month = layout::CONTRIBUTIONS_TTL_SECS as i64;
    assert!((month - 60..=month).contains(&ttl), "TTL {ttl} of {key}");

    // Reported from another connection, R counts too: A, B, C, P, R.
    let mut probes = 0;
    let mut probe = async |seeder: &mut Rider| {
        probes += 1;
        let id = format!("probe-{probes}");
        let ack = seeder
            .submit(report(&id, &id, TRAIN, 1, CrowdingLevel::Full))
            .await;
        assert_eq!(status(&ack), AckStatus::Accepted, "{ack:?}");
        ack.helping_riders
    };
    assert_eq!(probe(&mut seeder).await, 5);
    // A watcher who leaves stops counting, and so does a closed page.
    drop(watch_a);
    let deadline = Instant::now() + WAIT;
    loop {
        match probe(&mut seeder).await {
            4 => break,
            5 => assert!(Instant::now() < deadline, "rider A still counted"),
            n => panic!("{n} riders"),
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    drop(page);
    let deadline = Instant::now() + WAIT;
    loop {
        match probe(&mut seeder).await {
            3 => break,
            4 => assert!(Instant::now() < deadline, "the closed page still counted"),
            n => panic!("{n} riders"),
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // Bad arguments are named; a device never seen has made 0 reports.
    let err = reporter.contributions("").await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    assert_eq!(err.message(), "device_id: empty");
    let err = reporter.contributions("a b").await.unwrap_err();
    assert!(
        err.message()
            .starts_with("device_id: illegal character ' '"),
        "{err}"
    );
    assert_eq!(reporter.contributions("never-seen").await.unwrap(), 0);

    // A new server process (same Redis) knows the count; its audience is
    // its own and starts empty.
    drop((a, b, querier, reporter, seeder));
    stack.shutdown().await.expect("clean shutdown");
    let stack = start(&redis.url()).await;
    let mut reporter = Rider::connect(&stack).await;
    assert_eq!(reporter.contributions("rider-r").await.unwrap(), 3);
    let ack = reporter
        .submit(report("r-4", "rider-r", TRAIN, 3, CrowdingLevel::Full))
        .await;
    assert_eq!(status(&ack), AckStatus::Accepted, "{ack:?}");
    assert_eq!(ack.contributions, 4);
    assert_eq!(ack.helping_riders, 0);
    drop(reporter);
    stack.shutdown().await.expect("clean shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn riders_of_other_servers_count_too() {
    let redis = RedisServer::start();
    let stack = start(&redis.url()).await;
    let other = TestServer::start(&redis.url()).await;

    // W watches the train and V the route, both on the other server.
    let channel = other.channel().await;
    let mut w = OccupancyServiceClient::new(channel.clone());
    let watch_w = w
        .watch_occupancy(WatchOccupancyRequest {
            trips: vec![trip(TRAIN)],
            route_id: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    let mut v = OccupancyServiceClient::new(other.channel().await);
    let _watch_v = v
        .watch_occupancy(WatchOccupancyRequest {
            trips: Vec::new(),
            route_id: "B".into(),
        })
        .await
        .unwrap()
        .into_inner();

    // R reports to the first server until the exchange has carried them.
    let mut reporter = Rider::connect(&stack).await;
    let mut sent = 0;
    let mut helping_until = async |want: u32, what: &str| {
        let deadline = Instant::now() + WAIT;
        loop {
            sent += 1;
            // A new device each time, below any rate limit.
            let id = format!("r-{sent}");
            let ack = reporter
                .submit(report(&id, &id, TRAIN, 1, CrowdingLevel::Full))
                .await;
            assert_eq!(status(&ack), AckStatus::Accepted, "{ack:?}");
            if ack.helping_riders == want {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{what}: {} riders, want {want}",
                ack.helping_riders
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    };
    helping_until(2, "riders of the other server").await;
    drop(watch_w);
    helping_until(1, "after W left").await;
    // A server that stops withdraws its riders at once.
    drop((w, v));
    other.stop().await;
    helping_until(0, "after the other server stopped").await;
    drop(reporter);
    stack.shutdown().await.expect("clean shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_count_that_fails_never_fails_the_report() {
    let redis = RedisServer::start();
    let stack = start(&redis.url()).await;
    let mut conn = redis::Client::open(redis.url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    // A counter Redis refuses to increment (WRONGTYPE).
    let key = layout::contributions(DeviceHasher::new(SECRET).hash("broken"));
    let () = redis::cmd("HSET")
        .arg(&key)
        .arg("not")
        .arg("a counter")
        .query_async(&mut conn)
        .await
        .unwrap();

    let mut rider = Rider::connect(&stack).await;
    let ack = rider
        .submit(report("b-1", "broken", TRAIN, 1, CrowdingLevel::Full))
        .await;
    assert_eq!(status(&ack), AckStatus::Accepted, "{ack:?}");
    assert_eq!(ack.contributions, 0, "{ack:?}");
    let t = trip(TRAIN);
    let layout = layout::Layout::new(layout::DEFAULT_PARTITIONS);
    let stream = layout.reports(layout.partition_of(&TripKey {
        trip_id: t.trip_id,
        start_date: t.start_date,
    }));
    let stored: u64 = redis::cmd("XLEN")
        .arg(&stream)
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(stored, 1, "the report is stored all the same");

    // Other devices are counted as usual.
    let ack = rider
        .submit(report("f-1", "fine", TRAIN, 1, CrowdingLevel::Full))
        .await;
    assert_eq!((status(&ack), ack.contributions), (AckStatus::Accepted, 1));
    drop(rider);
    stack.shutdown().await.expect("clean shutdown");
}
