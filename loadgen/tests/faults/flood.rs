//! Abusive clients: a device sending at 100 times its rate limit is refused
//! while other devices on the same server are served as usual, and a 10 MB
//! message is cut off with OUT_OF_RANGE, on a stream and on a unary call,
//! without hurting the next caller. (The single-stream rate-limit rules
//! themselves are covered by the e2e ingest tests.)

use std::time::{Duration, Instant};

use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

use crowd_loadgen::redis_process::RedisServer;
use crowd_proto::pb::v1::AckStatus;

use crate::helpers::{Server, exclusive, report};

/// Reports per minute one device may send, and its burst.
const RATE_PER_MIN: u32 = 60;
const BURST: u32 = 10;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_at_100x_its_rate_is_refused_and_others_are_unaffected() {
    let _one_at_a_time = exclusive().await;
    let redis = RedisServer::start();
    let rate = RATE_PER_MIN.to_string();
    let burst = BURST.to_string();
    let server = Server::start(
        &redis.url(),
        &["--device-rate-per-min", &rate, "--device-burst", &burst],
    )
    .await;

    // The flooder: 100 reports a second (100 × 1/s) for 2 s on one stream.
    let mut flood_client = server.reports().await;
    let flooder = tokio::spawn(async move {
        let (tx, rx) = mpsc::channel(256);
        let mut acks = flood_client
            .stream_reports(ReceiverStream::new(rx))
            .await
            .expect("stream opens")
            .into_inner();
        let sending = tokio::spawn(async move {
            let mut ticker = tokio::time::interval(Duration::from_millis(10));
            for i in 0..200 {
                ticker.tick().await;
                let r = report(&format!("flood-{i}"), "flooder", "FLOOD-T1");
                tx.send(r).await.expect("the flood stream stays open");
            }
        });
        let (mut accepted, mut refused) = (0u32, 0u32);
        while accepted + refused < 200 {
            let ack = acks
                .message()
                .await
                .expect("the stream survives the flood")
                .expect("an ack per report");
            match AckStatus::try_from(ack.status).unwrap() {
                AckStatus::Accepted => accepted += 1,
                AckStatus::Rejected => {
                    assert!(ack.reason.contains("slow down"), "{ack:?}");
                    refused += 1;
                }
                AckStatus::Duplicate | AckStatus::Unspecified => panic!("{ack:?}"),
            }
        }
        sending.await.expect("sender");
        (accepted, refused)
    });

    // Ten ordinary riders report at their own pace meanwhile.
    let mut riders = Vec::new();
    for d in 0..10 {
        let mut client = server.reports().await;
        riders.push(tokio::spawn(async move {
            let mut slowest = Duration::ZERO;
            for i in 0..5 {
                let started = Instant::now();
                let ack = client
                    .submit_report(report(
                        &format!("calm-{d}-{i}"),
                        &format!("calm-{d}"),
                        "FLOOD-T1",
                    ))
                    .await
                    .expect("ordinary riders are served")
                    .into_inner();
                assert_eq!(ack.status, AckStatus::Accepted as i32, "{ack:?}");
                slowest = slowest.max(started.elapsed());
                tokio::time::sleep(Duration::from_millis(400)).await;
            }
            slowest
        }));
    }

    let (accepted, refused) = flooder.await.expect("flooder");
    // Burst, plus what 2-3 s of sustained rate allows.
    assert!(accepted <= BURST + 4, "the flooder got {accepted} through");
    assert!(refused >= 200 - BURST - 4, "{refused}");
    for rider in riders {
        let slowest = rider.await.expect("rider");
        assert!(
            slowest < Duration::from_millis(500),
            "a rider waited {slowest:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_10_mb_message_is_cut_off_and_the_server_goes_on() {
    let _one_at_a_time = exclusive().await;
    let redis = RedisServer::start();
    let server = Server::start(&redis.url(), &[]).await;
    let mut client = server.reports().await;
    let mut huge = report("huge", "big-device", "FLOOD-T2");
    huge.stop_id = "S".repeat(10 * 1024 * 1024);

    let err = client
        .submit_report(huge.clone())
        .await
        .expect_err("a 10 MB report is refused");
    assert_eq!(err.code(), tonic::Code::OutOfRange, "{err}");

    let (tx, rx) = mpsc::channel(4);
    let mut acks = client
        .stream_reports(ReceiverStream::new(rx))
        .await
        .expect("stream opens")
        .into_inner();
    tx.send(huge).await.expect("send");
    let end = tokio::time::timeout(Duration::from_secs(5), acks.message())
        .await
        .expect("the stream is cut off promptly")
        .expect_err("the stream ends with a status");
    assert_eq!(end.code(), tonic::Code::OutOfRange, "{end}");

    let ack = client
        .submit_report(report("normal", "big-device", "FLOOD-T2"))
        .await
        .expect("the next report is served")
        .into_inner();
    assert_eq!(ack.status, AckStatus::Accepted as i32, "{ack:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_endless_stream_is_cut_off() {
    let _one_at_a_time = exclusive().await;
    let redis = RedisServer::start();
    let server = Server::start(&redis.url(), &["--stream-idle-secs", "1"]).await;
    let mut client = server.reports().await;
    let (tx, rx) = mpsc::channel(4);
    let mut acks = client
        .stream_reports(ReceiverStream::new(rx))
        .await
        .expect("stream opens")
        .into_inner();
    tx.send(report("idle-1", "idle-device", "FLOOD-T3"))
        .await
        .expect("send");
    let ack = acks.message().await.expect("an ack").expect("an ack");
    assert_eq!(ack.status, AckStatus::Accepted as i32, "{ack:?}");

    // Then nothing, with the stream left open.
    let silent_at = Instant::now();
    let end = tokio::time::timeout(Duration::from_secs(5), acks.message())
        .await
        .expect("the silent stream is cut off")
        .expect_err("it ends with a status");
    let after = silent_at.elapsed();
    assert_eq!(end.code(), tonic::Code::DeadlineExceeded, "{end}");
    assert!(
        after >= Duration::from_millis(900) && after < Duration::from_secs(3),
        "cut off after {after:?}"
    );
    drop(tx);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn past_the_open_stream_cap_new_streams_are_refused_until_one_closes() {
    use crowd_proto::pb::v1::WatchOccupancyRequest;
    use crowd_proto::pb::v1::occupancy_service_client::OccupancyServiceClient;

    let _one_at_a_time = exclusive().await;
    let redis = RedisServer::start();
    let server = Server::start(&redis.url(), &["--max-open-streams", "2"]).await;
    let watch = || WatchOccupancyRequest {
        trips: Vec::new(),
        route_id: "F".into(),
    };
    // Two clients on two connections fill the server.
    let mut first = OccupancyServiceClient::new(server.channel().await);
    let mut second = OccupancyServiceClient::new(server.channel().await);
    let watching = first.watch_occupancy(watch()).await.expect("first watch");
    let (tx, rx) = mpsc::channel(4);
    let reporting = server
        .reports()
        .await
        .stream_reports(ReceiverStream::new(rx))
        .await
        .expect("report stream");
    let refused = second.watch_occupancy(watch()).await.unwrap_err();
    assert_eq!(
        refused.code(),
        tonic::Code::ResourceExhausted,
        "{refused:?}"
    );
    assert!(
        refused.message().contains("limit of 2 open streams"),
        "{refused:?}"
    );
    // A unary report is not a stream: still served.
    let ack = server
        .reports()
        .await
        .submit_report(report("cap-1", "cap-dev", "CAP"))
        .await
        .expect("unary call")
        .into_inner();
    assert_eq!(ack.status, AckStatus::Accepted as i32, "{}", ack.reason);

    // The report stream ends: its place is free again.
    drop(tx);
    let mut acks = reporting.into_inner();
    while acks.message().await.expect("clean end").is_some() {}
    drop(acks);
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        match second.watch_occupancy(watch()).await {
            Ok(_) => break,
            Err(status) if status.code() == tonic::Code::ResourceExhausted => {
                assert!(Instant::now() < deadline, "the place was never given back");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err(status) => panic!("{status:?}"),
        }
    }
    drop(watching);
}
