//! The server's in-memory estimates across a Redis restart: a Redis that
//! comes back empty has forgotten every estimate, so the server must too,
//! and then keep up with what the aggregator publishes anew.

use std::time::Duration;

use crowd_loadgen::redis_process::RedisServer;
use crowd_proto::domain::TripKey;
use crowd_proto::pb::v1::occupancy_service_client::OccupancyServiceClient;
use crowd_proto::pb::v1::{GetOccupancyRequest, OccupancyEstimate, TripRef};
use tonic::transport::Channel;

use crate::helpers::{
    Aggregator, Ledger, Server, aggregator_config, exclusive, send_all, wait_until, workload,
};

fn trip_ref(t: &TripKey) -> TripRef {
    TripRef {
        trip_id: t.trip_id.clone(),
        start_date: t.start_date.clone(),
        route_id: String::new(),
    }
}

/// GetOccupancy of `trips`, or its error.
async fn get(
    client: &mut OccupancyServiceClient<Channel>,
    trips: &[TripKey],
) -> Result<Vec<OccupancyEstimate>, tonic::Status> {
    client
        .get_occupancy(GetOccupancyRequest {
            trips: trips.iter().map(trip_ref).collect(),
        })
        .await
        .map(|r| r.into_inner().estimates)
}

/// Waits until GetOccupancy answers an estimate for every one of `trips`.
async fn until_all_answered(
    what: &str,
    client: &OccupancyServiceClient<Channel>,
    trips: &[TripKey],
) {
    wait_until(what, Duration::from_secs(10), || {
        let mut client = client.clone();
        let trips = trips.to_vec();
        async move {
            get(&mut client, &trips)
                .await
                .is_ok_and(|e| e.len() == trips.len())
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_redis_restarts_empty_no_forgotten_estimate_is_answered() {
    let _one_at_a_time = exclusive().await;
    let mut redis = RedisServer::start();
    let url = redis.url();
    let server = Server::start(&url, &[]).await;
    let mut client = OccupancyServiceClient::new(server.channel().await);
    let aggregator = Aggregator::spawn(aggregator_config(&url, &[]));
    let (reports, trips) = workload("cache", 4, 40);
    send_all(
        server.reports().await,
        reports,
        4,
        Ledger::default(),
        Duration::from_secs(10),
    )
    .await;
    until_all_answered("every train answered", &client, &trips).await;
    // Nothing publishes any more: what the server holds is all there is.
    aggregator.shutdown().await;
    assert_eq!(get(&mut client, &trips).await.expect("answer").len(), 4);

    redis.kill();
    tokio::time::sleep(Duration::from_millis(300)).await;
    redis.restart().expect("redis restarts empty");

    // Every answer from now on reflects the empty Redis.
    let mut answered = 0;
    for _ in 0..200 {
        match get(&mut client, &trips).await {
            Ok(estimates) => {
                assert!(estimates.is_empty(), "forgotten by Redis: {estimates:?}");
                answered += 1;
            }
            Err(status) => assert_eq!(status.code(), tonic::Code::Unavailable, "{status}"),
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(answered > 0, "no answer within 2 s of the restart");

    // New reports, a new aggregator: the server follows again.
    let aggregator = Aggregator::spawn(aggregator_config(&url, &[]));
    let (after, _) = workload("cache", 4, 80);
    send_all(
        server.reports().await,
        after.into_iter().skip(40).collect(),
        4,
        Ledger::default(),
        Duration::from_secs(10),
    )
    .await;
    until_all_answered("trains answered again", &client, &trips).await;
    aggregator.shutdown().await;
}
