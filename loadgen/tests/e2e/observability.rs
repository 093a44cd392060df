//! Prometheus metrics of the server (on its HTTP listener) and of the
//! aggregator (`--metrics-addr`): after some traffic, every documented
//! series is there.

use std::time::Duration;

use crowd_loadgen::stack::StackOptions;
use crowd_proto::pb::v1::{AckStatus, CrowdingLevel, WatchOccupancyRequest};

use crate::feed::http_get;
use crate::helpers::{at, eventually, occupancy_client, report, reports_client, start_stack_with};

/// A loopback address that was free a moment ago.
fn free_addr() -> std::net::SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
}

/// The sample lines of `name` (with any labels) in a Prometheus exposition.
fn series<'a>(text: &'a str, name: &str) -> Vec<&'a str> {
    text.lines()
        .filter(|l| {
            l.strip_prefix(name)
                .is_some_and(|rest| rest.starts_with(' ') || rest.starts_with('{'))
        })
        .collect()
}

#[tokio::test]
async fn metrics_expose_the_documented_series_after_traffic() {
    let aggregator_metrics = free_addr();
    let mut stack = start_stack_with(StackOptions {
        aggregator_args: vec!["--metrics-addr".into(), aggregator_metrics.to_string()],
        ..StackOptions::default()
    })
    .await;
    let mut watch = occupancy_client(&stack)
        .await
        .watch_occupancy(WatchOccupancyRequest {
            trips: vec![crate::helpers::trip("METRICS-1")],
            route_id: String::new(),
        })
        .await
        .expect("watch")
        .into_inner();
    let mut reports = reports_client(&stack).await;
    let ack = reports
        .submit_report(at(
            report("m-1", "m-dev", "METRICS-1", 2, CrowdingLevel::Full),
            48.86,
            2.35,
        ))
        .await
        .expect("report")
        .into_inner();
    assert_eq!(ack.status, AckStatus::Accepted as i32);
    let ack = reports
        .submit_report(report("m-2", "m-dev", "METRICS-1", 40, CrowdingLevel::Full))
        .await
        .expect("report")
        .into_inner();
    assert_eq!(ack.status, AckStatus::Rejected as i32);
    // The watcher sees the estimate, so the server saw the change.
    tokio::time::timeout(Duration::from_secs(10), watch.message())
        .await
        .expect("an estimate in time")
        .expect("watch stream")
        .expect("an estimate");

    let http = stack.http_addr();
    let server = http_get(http, "/metrics").await;
    assert_eq!(server.status, 200);
    assert!(server.headers.contains("text/plain"), "{}", server.headers);
    let text = server.text();
    for name in [
        "crowd_server_reports_accepted_total",
        "crowd_server_ack_seconds_bucket",
        "crowd_server_write_batch_size_bucket",
        "crowd_server_write_queue_depth",
        "crowd_server_watchers",
        "crowd_server_watch_changes_total",
        "crowd_server_estimate_age_seconds_bucket",
    ] {
        assert!(!series(&text, name).is_empty(), "{name} missing:\n{text}");
    }
    assert!(
        text.contains("# HELP crowd_server_ack_seconds Arrival of a report"),
        "{text}"
    );
    assert!(
        text.contains("crowd_server_reports_rejected_total{reason=\"carriage_sequence\"}"),
        "{text}"
    );
    // Every call is timed, by method: the two reports and the watch (at
    // least: the registry is the test process's, shared with other tests).
    for (method, made) in [("SubmitReport", 2), ("WatchOccupancy", 1)] {
        let count = format!("crowd_server_rpc_seconds_count{{method=\"{method}\"}}");
        let calls = series(&text, "crowd_server_rpc_seconds_count")
            .into_iter()
            .find_map(|l| l.strip_prefix(count.as_str()))
            .unwrap_or_else(|| panic!("{count} missing:\n{text}"));
        let calls: u64 = calls.trim().parse().expect("a count");
        assert!(calls >= made, "{count} {calls}, made {made}");
    }

    // The aggregator's own endpoint, with its lag per partition.
    let aggregated = eventually(Duration::from_secs(5), || async {
        let text = http_get(aggregator_metrics, "/metrics").await.text();
        (!series(&text, "crowd_aggregator_lag_seconds").is_empty()).then_some(text)
    })
    .await
    .expect("aggregator metrics");
    assert!(
        series(&aggregated, "crowd_aggregator_lag_seconds")
            .iter()
            .any(|l| l.starts_with("crowd_aggregator_lag_seconds{partition=\"")),
        "{aggregated}"
    );
    for name in [
        "crowd_aggregator_reports_applied_total",
        "crowd_aggregator_batch_size_bucket",
        "crowd_aggregator_partitions_owned",
    ] {
        assert!(
            !series(&aggregated, name).is_empty(),
            "{name} missing:\n{aggregated}"
        );
    }

    // Redis errors are counted by command.
    stack.redis().expect("private redis").kill();
    let feed = http_get(http, "/gtfs-rt/vehicle-positions").await;
    assert_eq!(feed.status, 503, "{}", feed.text());
    let text = http_get(http, "/metrics").await.text();
    assert!(
        text.contains("crowd_server_redis_errors_total{op=\"ZRANGE\"}"),
        "{text}"
    );
    stack.redis().unwrap().restart().expect("redis restarts");
    stack.shutdown().await.expect("clean shutdown");
}
