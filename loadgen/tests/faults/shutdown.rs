//! Shutdown (what SIGTERM triggers) of a busy server: 100 open report
//! streams sending continuously and 100 watchers. Every report sent before
//! the signal gets its ack or its stream ends with an error status, every
//! accepted report is in Redis, every watch ends, and the server exits
//! within its drain deadline.

use std::time::{Duration, Instant};

use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

use crowd_loadgen::redis_process::RedisServer;
use crowd_proto::pb::v1::occupancy_service_client::OccupancyServiceClient;
use crowd_proto::pb::v1::{AckStatus, TripRef, WatchOccupancyRequest};

use crate::helpers::{Server, connect, exclusive, report, stored_ids, today};

const STREAMS: usize = 100;
const WATCHERS: usize = 100;
const DRAIN: Duration = Duration::from_secs(3);

/// What one report stream saw.
struct StreamOutcome {
    sent: Vec<String>,
    accepted: Vec<String>,
    /// The status that ended the stream, if it was an error.
    error: Option<tonic::Status>,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_answers_every_sent_report_and_ends_every_call_in_time() {
    let _one_at_a_time = exclusive().await;
    let redis = RedisServer::start();
    let drain = DRAIN.as_secs().to_string();
    let server = Server::start(&redis.url(), &["--drain-timeout-secs", &drain]).await;
    // A few connections, as many phones behind a load balancer would share.
    let mut channels = Vec::new();
    for _ in 0..4 {
        channels.push(server.channel().await);
    }

    let mut watchers = Vec::new();
    for i in 0..WATCHERS {
        let mut client = OccupancyServiceClient::new(channels[i % channels.len()].clone());
        let mut watch = client
            .watch_occupancy(WatchOccupancyRequest {
                trips: vec![TripRef {
                    trip_id: format!("drain-T{}", i % 10),
                    start_date: today(),
                    route_id: String::new(),
                }],
                route_id: String::new(),
            })
            .await
            .expect("watch opens")
            .into_inner();
        watchers.push(tokio::spawn(async move {
            // Until the stream ends, one way or the other.
            loop {
                match watch.message().await {
                    Ok(Some(_)) => {}
                    Ok(None) | Err(_) => return,
                }
            }
        }));
    }

    let mut streams = Vec::new();
    for i in 0..STREAMS {
        let mut client = crowd_proto::pb::v1::report_service_client::ReportServiceClient::new(
            channels[i % channels.len()].clone(),
        );
        let (tx, rx) = mpsc::channel(16);
        let mut acks = client
            .stream_reports(ReceiverStream::new(rx))
            .await
            .expect("stream opens")
            .into_inner();
        streams.push(tokio::spawn(async move {
            let mut outcome = StreamOutcome {
                sent: Vec::new(),
                accepted: Vec::new(),
                error: None,
            };
            let mut n = 0;
            let mut ticker = tokio::time::interval(Duration::from_millis(50));
            loop {
                tokio::select! {
                    _ = ticker.tick(), if n < 10_000 => {
                        let id = format!("drain-s{i}-r{n}");
                        n += 1;
                        let r = report(&id, &format!("drain-d{i}"), &format!("drain-T{}", i % 10));
                        // A full or closed channel means the server stopped reading.
                        if tx.try_send(r).is_ok() {
                            outcome.sent.push(id);
                        }
                    }
                    ack = acks.message() => match ack {
                        Ok(Some(ack)) => {
                            assert_eq!(ack.status, AckStatus::Accepted as i32, "{ack:?}");
                            outcome.accepted.push(ack.report_id);
                        }
                        Ok(None) => return outcome,
                        Err(status) => {
                            outcome.error = Some(status);
                            return outcome;
                        }
                    },
                }
            }
        }));
    }

    // Let traffic flow, then signal.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let took = server.stop_within(DRAIN + Duration::from_secs(2)).await;
    assert!(
        took <= DRAIN + Duration::from_millis(500),
        "drain took {took:?}"
    );
    let signalled = Instant::now();

    let mut accepted = Vec::new();
    for stream in streams {
        let outcome = tokio::time::timeout(Duration::from_secs(2), stream)
            .await
            .expect("a report stream outlived the server")
            .expect("stream task");
        // Acks come in order: everything acked is a prefix of what was sent.
        assert_eq!(
            outcome.accepted[..],
            outcome.sent[..outcome.accepted.len()],
            "acks out of order"
        );
        if outcome.accepted.len() < outcome.sent.len() {
            let status = outcome.error.as_ref().unwrap_or_else(|| {
                panic!(
                    "{} reports neither acked nor answered with an error",
                    outcome.sent.len() - outcome.accepted.len()
                )
            });
            // UNAVAILABLE from the server; or, when the client was still
            // sending as the server closed the connection, the reset of
            // that connection (a socket closed with unread data is reset,
            // and the client may lose the status it had not read yet).
            // Either way the client knows these reports were not taken.
            let reset = status.code() == tonic::Code::Unknown
                && status.message().starts_with("h2 protocol error");
            assert!(
                status.code() == tonic::Code::Unavailable || reset,
                "{status}"
            );
        }
        accepted.extend(outcome.accepted);
    }
    for watcher in watchers {
        tokio::time::timeout(Duration::from_secs(2), watcher)
            .await
            .expect("a watch outlived the server")
            .expect("watch task");
    }
    assert!(signalled.elapsed() < Duration::from_secs(3));
    assert!(
        accepted.len() >= STREAMS,
        "too little traffic: {}",
        accepted.len()
    );

    // Every ACCEPTED report is in Redis.
    let mut con = connect(&redis.url()).await;
    let stored = stored_ids(&mut con).await;
    let missing: Vec<&String> = accepted.iter().filter(|id| !stored.contains(*id)).collect();
    assert!(missing.is_empty(), "accepted but not stored: {missing:?}");
}
