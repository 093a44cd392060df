//! The whole path as riders use it: reports streamed in over gRPC, through
//! Redis and the aggregator, estimates back by query, watch and search.

use std::time::Duration;

use crowd_proto::pb::v1::{
    AckStatus, CrowdingLevel, GeoPoint, GetOccupancyRequest, OccupancyEstimate,
    SearchNearbyRequest, WatchOccupancyRequest,
};
use tokio_stream::StreamExt;

use crate::helpers::*;

/// Reports for three trains: T1 mostly standing (one dissenting rider),
/// T2 empty, T3 full in car 1 and few seats in car 2.
fn rush_reports() -> Vec<crowd_proto::pb::v1::CrowdingReport> {
    use CrowdingLevel::*;
    let mut reports = Vec::new();
    for (i, level) in [StandingRoomOnly, StandingRoomOnly, StandingRoomOnly, Empty]
        .into_iter()
        .enumerate()
    {
        let r = report(
            &format!("t1-{i}"),
            &format!("dev-{i}"),
            "T1",
            (i % 2 + 1) as u32,
            level,
        );
        reports.push(at(r, 48.8566, 2.3522));
    }
    for i in 0..2 {
        let r = report(
            &format!("t2-{i}"),
            &format!("dev-{}", 10 + i),
            "T2",
            1,
            Empty,
        );
        reports.push(at(r, 48.95, 2.60));
    }
    reports.push(report("t3-a", "dev-20", "T3", 1, Full));
    reports.push(report("t3-b", "dev-21", "T3", 1, Full));
    reports.push(report("t3-c", "dev-22", "T3", 2, FewSeatsAvailable));
    reports
}

async fn stream_all(
    stack: &crowd_loadgen::stack::Stack,
    reports: Vec<crowd_proto::pb::v1::CrowdingReport>,
) -> Vec<crowd_proto::pb::v1::ReportAck> {
    let mut client = reports_client(stack).await;
    let n = reports.len();
    let response = client
        .stream_reports(tokio_stream::iter(reports))
        .await
        .expect("stream opens");
    let acks: Vec<_> = response
        .into_inner()
        .take(n)
        .map(|ack| ack.expect("ack"))
        .collect()
        .await;
    acks
}

fn find<'a>(estimates: &'a [OccupancyEstimate], trip_id: &str) -> Option<&'a OccupancyEstimate> {
    estimates
        .iter()
        .find(|e| e.trip.as_ref().is_some_and(|t| t.trip_id == trip_id))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reports_become_estimates_for_query_watch_and_search() {
    let stack = start_stack().await;
    let mut occupancy = occupancy_client(&stack).await;

    // A watcher subscribed before any report sees T1 appear.
    let mut watch = occupancy
        .watch_occupancy(WatchOccupancyRequest {
            trips: vec![trip("T1")],
            route_id: String::new(),
        })
        .await
        .expect("watch opens")
        .into_inner();

    let acks = stream_all(&stack, rush_reports()).await;
    assert_eq!(acks.len(), 9);
    for ack in &acks {
        assert_eq!(ack.status(), AckStatus::Accepted, "{ack:?}");
    }

    // Query: all three trains within a second, with the robust level.
    let request = GetOccupancyRequest {
        trips: vec![trip("T1"), trip("T2"), trip("T3"), trip("UNKNOWN")],
    };
    let estimates = eventually(Duration::from_secs(1), || {
        let mut occupancy = occupancy.clone();
        let request = request.clone();
        async move {
            let got = occupancy.get_occupancy(request).await.ok()?.into_inner();
            let complete = got.estimates.len() == 3
                && find(&got.estimates, "T1").is_some_and(|e| e.reporters == 4)
                && find(&got.estimates, "T3").is_some_and(|e| e.reporters == 3);
            complete.then_some(got.estimates)
        }
    })
    .await
    .expect("estimates for T1, T2, T3 within 1 s");
    assert!(find(&estimates, "UNKNOWN").is_none());

    let t1 = find(&estimates, "T1").unwrap();
    assert_eq!(
        t1.level(),
        CrowdingLevel::StandingRoomOnly,
        "one dissenter must not move the median"
    );
    assert!(t1.confidence > 0.0 && t1.confidence <= 1.0);
    assert_eq!(t1.cars.len(), 2);

    let t2 = find(&estimates, "T2").unwrap();
    assert_eq!(t2.level(), CrowdingLevel::Empty);
    assert_eq!(t2.reporters, 2);

    let t3 = find(&estimates, "T3").unwrap();
    let car = |n: u32| t3.cars.iter().find(|c| c.carriage_sequence == n).unwrap();
    assert_eq!(car(1).level(), CrowdingLevel::Full);
    assert_eq!(car(1).reporters, 2);
    assert_eq!(car(2).level(), CrowdingLevel::FewSeatsAvailable);
    assert!(
        t3.cars.iter().all(|c| c.carriage_sequence != 3),
        "no invented cars"
    );

    // Watch: the first T1 estimate arrives within a second of the reports.
    let update = tokio::time::timeout(Duration::from_secs(1), watch.next())
        .await
        .expect("watch update within 1 s")
        .expect("stream open")
        .expect("estimate");
    assert_eq!(update.trip.unwrap().trip_id, "T1");

    // Search: T1 was reported in central Paris, T2 ~25 km away.
    let nearby = occupancy
        .search_nearby(SearchNearbyRequest {
            center: Some(GeoPoint {
                latitude: 48.857,
                longitude: 2.353,
                accuracy_m: 0.0,
            }),
            radius_m: 2_000.0,
            limit: 10,
        })
        .await
        .expect("search")
        .into_inner()
        .estimates;
    assert_eq!(nearby.len(), 1, "{nearby:?}");
    assert_eq!(nearby[0].trip.as_ref().unwrap().trip_id, "T1");

    stack.shutdown().await.expect("clean shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_report_updates_the_estimate_for_watchers() {
    let stack = start_stack().await;
    let mut occupancy = occupancy_client(&stack).await;

    let acks = stream_all(
        &stack,
        vec![report("w-1", "dev-1", "T9", 1, CrowdingLevel::Empty)],
    )
    .await;
    assert_eq!(acks[0].status(), AckStatus::Accepted);
    let first = eventually(Duration::from_secs(2), || {
        let mut occupancy = occupancy.clone();
        async move {
            let got = occupancy
                .get_occupancy(GetOccupancyRequest {
                    trips: vec![trip("T9")],
                })
                .await
                .ok()?
                .into_inner();
            got.estimates.into_iter().next()
        }
    })
    .await
    .expect("first estimate");
    assert_eq!(first.level(), CrowdingLevel::Empty);

    // Watch sends the current estimate first, then the change.
    let mut watch = occupancy
        .watch_occupancy(WatchOccupancyRequest {
            trips: vec![trip("T9")],
            route_id: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    let current = watch.next().await.unwrap().unwrap();
    assert_eq!(current.level(), CrowdingLevel::Empty);

    // The same rider now finds the car full: their latest report replaces the old one.
    let acks = stream_all(
        &stack,
        vec![report("w-2", "dev-1", "T9", 1, CrowdingLevel::Full)],
    )
    .await;
    assert_eq!(acks[0].status(), AckStatus::Accepted);
    let changed = tokio::time::timeout(Duration::from_secs(1), async {
        loop {
            let e = watch.next().await.unwrap().unwrap();
            if e.level() == CrowdingLevel::Full {
                return e;
            }
        }
    })
    .await
    .expect("update within 1 s");
    assert_eq!(changed.reporters, 1, "one device, one vote");

    stack.shutdown().await.expect("clean shutdown");
}
