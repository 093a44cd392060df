//! Shared helpers: a whole stack per test and builders of realistic reports.

use std::time::{Duration, Instant};

use crowd_loadgen::stack::{Stack, StackOptions};
use crowd_proto::pb::v1::occupancy_service_client::OccupancyServiceClient;
use crowd_proto::pb::v1::report_service_client::ReportServiceClient;
use crowd_proto::pb::v1::{CrowdingLevel, CrowdingReport, GeoPoint, TripRef};
use tonic::transport::Channel;

/// Today's service date, as riders' phones would send it.
pub fn today() -> String {
    chrono::Utc::now().format("%Y%m%d").to_string()
}

pub fn trip(trip_id: &str) -> TripRef {
    TripRef {
        trip_id: trip_id.into(),
        start_date: today(),
        route_id: "B".into(),
    }
}

/// A valid report observed a second ago.
pub fn report(
    report_id: &str,
    device: &str,
    trip_id: &str,
    car: u32,
    level: CrowdingLevel,
) -> CrowdingReport {
    let now = chrono::Utc::now() - chrono::Duration::seconds(1);
    CrowdingReport {
        report_id: report_id.into(),
        device_id: device.into(),
        trip: Some(trip(trip_id)),
        carriage_sequence: car,
        level: level as i32,
        occupancy_percentage: None,
        observed_at: Some(prost_types::Timestamp {
            seconds: now.timestamp(),
            nanos: now.timestamp_subsec_nanos() as i32,
        }),
        position: None,
        stop_id: String::new(),
    }
}

/// The same report with a position.
pub fn at(mut report: CrowdingReport, latitude: f64, longitude: f64) -> CrowdingReport {
    report.position = Some(GeoPoint {
        latitude,
        longitude,
        accuracy_m: 15.0,
    });
    report
}

pub async fn start_stack() -> Stack {
    start_stack_with(StackOptions::default()).await
}

pub async fn start_stack_with(options: StackOptions) -> Stack {
    Stack::start(options).await.expect("stack starts")
}

pub async fn reports_client(stack: &Stack) -> ReportServiceClient<Channel> {
    ReportServiceClient::connect(stack.grpc_url())
        .await
        .expect("connect")
}

pub async fn occupancy_client(stack: &Stack) -> OccupancyServiceClient<Channel> {
    OccupancyServiceClient::connect(stack.grpc_url())
        .await
        .expect("connect")
}

/// Polls `check` every 20 ms until it returns `Some` or `timeout` passes.
pub async fn eventually<T, F, Fut>(timeout: Duration, mut check: F) -> Option<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = check().await {
            return Some(value);
        }
        if Instant::now() > deadline {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
