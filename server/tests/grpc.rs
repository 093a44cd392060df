//! The server's gRPC surface without Redis: it starts anyway, says
//! NOT_SERVING, answers UNAVAILABLE instead of hanging, lets tools discover
//! its API by reflection, and stops promptly.

use std::time::{Duration, Instant};

use tokio::sync::oneshot;
use tokio_stream::StreamExt;
use tonic::transport::Channel;
use tonic_reflection::pb::v1::ServerReflectionRequest;
use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;

use crowd_proto::pb::v1::occupancy_service_client::OccupancyServiceClient;
use crowd_proto::pb::v1::report_service_client::ReportServiceClient;
use crowd_proto::pb::v1::{CrowdingReport, GetOccupancyRequest, TripRef};
use crowd_server::Config;
use crowd_server::health::protocol::HealthCheckRequest;
use crowd_server::health::protocol::health_check_response::ServingStatus;
use crowd_server::health::protocol::health_client::HealthClient;

/// A Redis URL on which nothing listens.
async fn dead_redis_url() -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    drop(listener);
    format!("redis://127.0.0.1:{port}")
}

#[tokio::test]
async fn without_redis_the_server_runs_reports_not_serving_and_fails_fast() {
    let grpc = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let http = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = grpc.local_addr().unwrap();
    let (stop, stopped) = oneshot::channel::<()>();
    let server = tokio::spawn(crowd_server::run(
        Config::for_redis(dead_redis_url().await),
        grpc,
        http,
        async {
            let _ = stopped.await;
        },
    ));
    let channel = Channel::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap();

    // Reflection lists the API and the health service.
    let mut reflection = ServerReflectionClient::new(channel.clone());
    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut replies = reflection
        .server_reflection_info(tokio_stream::iter([request]))
        .await
        .unwrap()
        .into_inner();
    let reply = replies.next().await.unwrap().unwrap();
    let Some(MessageResponse::ListServicesResponse(list)) = reply.message_response else {
        panic!("unexpected reflection reply {reply:?}");
    };
    let mut names: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
    names.sort();
    for expected in [
        "crowd.v1.OccupancyService",
        "crowd.v1.OperatorService",
        "crowd.v1.ReportService",
        "grpc.health.v1.Health",
    ] {
        assert!(
            names.iter().any(|n| n == expected),
            "{expected} not in {names:?}"
        );
    }

    let mut health = HealthClient::new(channel.clone());
    let status = health
        .check(HealthCheckRequest {
            service: "crowd.v1.ReportService".into(),
        })
        .await
        .unwrap()
        .into_inner()
        .status();
    assert_eq!(status, ServingStatus::NotServing);

    let started = Instant::now();
    let report = CrowdingReport {
        report_id: "r1".into(),
        device_id: "d1".into(),
        trip: Some(TripRef {
            trip_id: "T1".into(),
            start_date: chrono::Utc::now().format("%Y%m%d").to_string(),
            route_id: String::new(),
        }),
        level: 2,
        observed_at: Some(prost_types::Timestamp {
            seconds: chrono::Utc::now().timestamp(),
            nanos: 0,
        }),
        ..Default::default()
    };
    let err = ReportServiceClient::new(channel.clone())
        .submit_report(report)
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unavailable, "{err}");
    let err = OccupancyServiceClient::new(channel)
        .get_occupancy(GetOccupancyRequest {
            trips: vec![TripRef {
                trip_id: "T1".into(),
                start_date: "20261126".into(),
                route_id: String::new(),
            }],
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unavailable, "{err}");
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "took {:?}",
        started.elapsed()
    );

    let started = Instant::now();
    stop.send(()).unwrap();
    tokio::time::timeout(Duration::from_secs(5), server)
        .await
        .expect("server did not stop")
        .unwrap()
        .unwrap();
    assert!(started.elapsed() < Duration::from_secs(3));
}
