//! OperatorService and the GTFS schedule, end to end: a server loaded with
//! the committed sample feed (`loadgen/sample-gtfs`) in strict mode, reports
//! through the real server and aggregator, operator calls with and without
//! the API key.

use std::time::Duration;

use tonic::Code;
use tonic::metadata::MetadataValue;
use tonic::transport::Channel;

use crowd_loadgen::stack::{Stack, StackOptions};
use crowd_proto::pb::v1::list_trains_in_area_request::Area;
use crowd_proto::pb::v1::operator_service_client::OperatorServiceClient;
use crowd_proto::pb::v1::{
    AckStatus, BoundingBox, CrowdingLevel, GeoPoint, GetAbuseStatsRequest, GetRouteSummaryRequest,
    ListTrainsInAreaRequest, Polygon,
};

use crate::helpers::{at, eventually, report, reports_client, start_stack_with};

const KEY: &str = "operator-key-0123456789";

/// Stations of the sample line (lat, lon).
const SRC: (f64, f64) = (48.7054, 2.0714);
const MAS: (f64, f64) = (48.7258, 2.2577);
const GDN: (f64, f64) = (48.8809, 2.3553);

fn sample_gtfs() -> String {
    concat!(env!("CARGO_MANIFEST_DIR"), "/sample-gtfs").to_owned()
}

async fn start() -> Stack {
    start_stack_with(StackOptions {
        server_args: vec![
            "--gtfs".into(),
            sample_gtfs(),
            "--gtfs-strict".into(),
            "--operator-keys".into(),
            KEY.into(),
        ],
        ..StackOptions::default()
    })
    .await
}

async fn operator(stack: &Stack) -> OperatorServiceClient<Channel> {
    OperatorServiceClient::connect(stack.grpc_url())
        .await
        .expect("connect")
}

/// The code of a call that must fail.
fn code<T>(result: Result<T, tonic::Status>) -> Code {
    result.map(|_| ()).unwrap_err().code()
}

/// A request carrying `authorization: <value>` when given.
fn with_auth<T>(message: T, authorization: Option<&str>) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    if let Some(value) = authorization {
        let value: MetadataValue<_> = value.parse().unwrap();
        request.metadata_mut().insert("authorization", value);
    }
    request
}

fn bearer() -> String {
    format!("Bearer {KEY}")
}

#[tokio::test]
async fn every_operator_call_needs_a_valid_key() {
    let stack = start().await;
    let mut client = operator(&stack).await;
    for auth in [None, Some("Bearer wrong-key-0123456789"), Some(KEY)] {
        let summary = client
            .get_route_summary(with_auth(
                GetRouteSummaryRequest {
                    route_id: "B".into(),
                },
                auth,
            ))
            .await;
        assert_eq!(code(summary), Code::Unauthenticated, "{auth:?}");
        let area = client
            .list_trains_in_area(with_auth(ListTrainsInAreaRequest::default(), auth))
            .await;
        assert_eq!(code(area), Code::Unauthenticated, "{auth:?}");
        let stats = client
            .get_abuse_stats(with_auth(GetAbuseStatsRequest {}, auth))
            .await;
        assert_eq!(code(stats), Code::Unauthenticated, "{auth:?}");
    }
    let auth = Some(bearer());
    let auth = auth.as_deref();
    let summary = client
        .get_route_summary(with_auth(
            GetRouteSummaryRequest {
                route_id: "B".into(),
            },
            auth,
        ))
        .await
        .expect("a valid key passes")
        .into_inner();
    assert_eq!(summary.route_name, "Line B");
    client
        .get_abuse_stats(with_auth(GetAbuseStatsRequest {}, auth))
        .await
        .expect("a valid key passes");
    // Past the key check, the request itself is validated.
    let area = client
        .list_trains_in_area(with_auth(ListTrainsInAreaRequest::default(), auth))
        .await
        .unwrap_err();
    assert_eq!(area.code(), Code::InvalidArgument);
    stack.shutdown().await.expect("clean shutdown");
}

#[tokio::test]
async fn strict_schedule_route_summary_and_areas() {
    let stack = start().await;
    let mut reports = reports_client(&stack).await;

    // Strict mode: a trip the feed does not list is refused, a listed one accepted.
    let ack = reports
        .submit_report(report(
            "op-x",
            "op-dev-x",
            "NOT-A-TRIP",
            1,
            CrowdingLevel::Full,
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(ack.status, AckStatus::Rejected as i32);
    assert_eq!(
        ack.reason,
        "trip.trip_id: `NOT-A-TRIP` is not in the GTFS schedule"
    );

    // Three trains at three stations; trip-id order is not route order.
    let trains = [("B-0-0700", GDN), ("B-0-0800", MAS), ("B-0-0900", SRC)];
    for (i, (trip, (lat, lon))) in trains.iter().enumerate() {
        let mut r = at(
            report(
                &format!("op-{i}"),
                &format!("op-dev-{i}"),
                trip,
                2,
                CrowdingLevel::FewSeatsAvailable,
            ),
            *lat,
            *lon,
        );
        // The schedule fills in the route.
        r.trip.as_mut().unwrap().route_id.clear();
        let ack = reports.submit_report(r).await.unwrap().into_inner();
        assert_eq!(ack.status, AckStatus::Accepted as i32, "{}", ack.reason);
    }

    let mut client = operator(&stack).await;
    let auth = bearer();
    let summary = eventually(Duration::from_secs(10), || {
        let mut client = client.clone();
        let auth = auth.clone();
        async move {
            let s = client
                .get_route_summary(with_auth(
                    GetRouteSummaryRequest {
                        route_id: "B".into(),
                    },
                    Some(&auth),
                ))
                .await
                .ok()?
                .into_inner();
            (s.trains.len() == 3 && s.trains.iter().all(|t| t.progress.is_some())).then_some(s)
        }
    })
    .await
    .expect("three trains on route B");
    assert_eq!(summary.route_id, "B");
    assert_eq!(summary.route_name, "Line B");
    let order: Vec<_> = summary
        .trains
        .iter()
        .map(|t| {
            t.estimate
                .as_ref()
                .unwrap()
                .trip
                .as_ref()
                .unwrap()
                .trip_id
                .as_str()
        })
        .collect();
    assert_eq!(order, ["B-0-0900", "B-0-0800", "B-0-0700"]);
    let stops: Vec<_> = summary
        .trains
        .iter()
        .map(|t| t.nearest_stop_id.as_str())
        .collect();
    assert_eq!(stops, ["SRC", "MAS", "GDN"]);
    let progress: Vec<f64> = summary.trains.iter().map(|t| t.progress.unwrap()).collect();
    assert!(progress[0] < 0.01 && progress[2] > 0.5, "{progress:?}");
    assert!(progress.windows(2).all(|w| w[0] < w[1]), "{progress:?}");

    // A box around Massy-Palaiseau and a triangle around Gare du Nord.
    let area = |area| ListTrainsInAreaRequest {
        area: Some(area),
        limit: 0,
    };
    let in_box = client
        .list_trains_in_area(with_auth(
            area(Area::Bbox(BoundingBox {
                min_latitude: 48.70,
                min_longitude: 2.20,
                max_latitude: 48.75,
                max_longitude: 2.30,
            })),
            Some(&auth),
        ))
        .await
        .expect("bbox")
        .into_inner();
    let ids: Vec<_> = in_box
        .estimates
        .iter()
        .map(|e| e.trip.as_ref().unwrap().trip_id.as_str())
        .collect();
    assert_eq!(ids, ["B-0-0800"]);
    let point = |latitude, longitude| GeoPoint {
        latitude,
        longitude,
        accuracy_m: 0.0,
    };
    let in_triangle = client
        .list_trains_in_area(with_auth(
            area(Area::Polygon(Polygon {
                points: vec![point(48.87, 2.34), point(48.89, 2.34), point(48.88, 2.37)],
            })),
            Some(&auth),
        ))
        .await
        .expect("polygon")
        .into_inner();
    assert_eq!(in_triangle.estimates.len(), 1);
    assert_eq!(
        in_triangle.estimates[0].trip.as_ref().unwrap().trip_id,
        "B-0-0700"
    );

    // Bad areas name the field.
    let invalid = |request| {
        let mut client = client.clone();
        let auth = auth.clone();
        async move {
            let status = client
                .list_trains_in_area(with_auth(request, Some(&auth)))
                .await
                .unwrap_err();
            assert_eq!(status.code(), Code::InvalidArgument);
            status.message().to_owned()
        }
    };
    assert_eq!(
        invalid(area(Area::Bbox(BoundingBox {
            min_latitude: 49.0,
            min_longitude: 2.0,
            max_latitude: 48.0,
            max_longitude: 3.0,
        })))
        .await,
        "bbox.min_latitude: 49 > bbox.max_latitude 48"
    );
    assert_eq!(
        invalid(area(Area::Bbox(BoundingBox {
            min_latitude: 48.0,
            min_longitude: 2.0,
            max_latitude: 48.5,
            max_longitude: 200.0,
        })))
        .await,
        "bbox.max_longitude: 200 is not a longitude in [-180, 180]"
    );
    assert_eq!(
        invalid(area(Area::Polygon(Polygon {
            points: vec![point(48.0, 2.0), point(48.1, 2.1)],
        })))
        .await,
        "polygon.points: 2 distinct points; a polygon needs at least 3"
    );

    // The refusal is in the abuse stats.
    let stats = client
        .get_abuse_stats(with_auth(GetAbuseStatsRequest {}, Some(&auth)))
        .await
        .unwrap()
        .into_inner();
    let unknown = stats
        .rejects
        .iter()
        .find(|r| r.reason == "unknown_trip")
        .expect("unknown_trip counted");
    assert_eq!(unknown.count, 1);
    assert!(stats.since.is_some());

    // Distrusted devices, as the aggregators score them in the shared hash.
    let mut redis = redis::Client::open(stack.redis_url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let _: () = redis::cmd("HSET")
        .arg(crowd_proto::layout::REPUTATION)
        .arg(&[
            "00000000000000aa",
            "-12",
            "00000000000000bb",
            "3.5",
            "00000000000000cc",
            "-2.25",
        ])
        .query_async(&mut redis)
        .await
        .unwrap();
    let stats = client
        .get_abuse_stats(with_auth(GetAbuseStatsRequest {}, Some(&auth)))
        .await
        .unwrap()
        .into_inner();
    let flagged: Vec<_> = stats
        .flagged_devices
        .iter()
        .map(|d| (d.device.as_str(), d.score))
        .collect();
    assert_eq!(
        flagged,
        [("00000000000000aa", -12.0), ("00000000000000cc", -2.25)]
    );
    assert!(stats.reputation_complete);
    assert!(stats.reputation_scanned >= 3);
    stack.shutdown().await.expect("clean shutdown");
}

#[tokio::test]
async fn a_malformed_gtfs_feed_stops_the_server_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    for entry in std::fs::read_dir(sample_gtfs()).unwrap() {
        let path = entry.unwrap().path();
        std::fs::copy(&path, dir.path().join(path.file_name().unwrap())).unwrap();
    }
    std::fs::write(
        dir.path().join("stops.txt"),
        "stop_id,stop_name,stop_lat,stop_lon\nSRC,Somewhere,north,2.0\n",
    )
    .unwrap();
    let stack = start_stack_with(StackOptions {
        server_args: vec!["--gtfs".into(), dir.path().display().to_string()],
        ..StackOptions::default()
    })
    .await;
    let error = stack.shutdown().await.unwrap_err().to_string();
    assert!(error.contains("GTFS feed"), "{error}");
    assert!(error.contains("stops.txt line 2"), "{error}");
}

#[tokio::test]
async fn without_strict_mode_unknown_trips_are_accepted() {
    let stack = start_stack_with(StackOptions {
        server_args: vec!["--gtfs".into(), sample_gtfs()],
        ..StackOptions::default()
    })
    .await;
    let ack = reports_client(&stack)
        .await
        .submit_report(report(
            "lenient-1",
            "lenient-dev",
            "NOT-A-TRIP",
            1,
            CrowdingLevel::Full,
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(ack.status, AckStatus::Accepted as i32, "{}", ack.reason);
    stack.shutdown().await.expect("clean shutdown");
}

#[tokio::test]
async fn trains_with_suspicious_reports_are_listed_in_the_abuse_stats() {
    let stack = start().await;
    let mut reports = reports_client(&stack).await;
    let trip = "B-0-0700";
    // Two riders agree the train is at Gare du Nord...
    for i in 0..2 {
        let r = at(
            report(
                &format!("sus-{i}"),
                &format!("sus-dev-{i}"),
                trip,
                1,
                CrowdingLevel::Full,
            ),
            GDN.0,
            GDN.1,
        );
        let ack = reports.submit_report(r).await.unwrap().into_inner();
        assert_eq!(ack.status, AckStatus::Accepted as i32, "{}", ack.reason);
    }
    // ...a third says it is 20 km away, and a fourth sends a report it
    // observed five minutes ago.
    let far = at(
        report("sus-far", "sus-dev-far", trip, 1, CrowdingLevel::Empty),
        SRC.0,
        SRC.1,
    );
    let mut late = report("sus-late", "sus-dev-late", trip, 1, CrowdingLevel::Empty);
    let then = chrono::Utc::now() - chrono::Duration::minutes(5);
    late.observed_at = Some(prost_types::Timestamp {
        seconds: then.timestamp(),
        nanos: 0,
    });
    for r in [far, late] {
        let ack = reports.submit_report(r).await.unwrap().into_inner();
        assert_eq!(ack.status, AckStatus::Accepted as i32, "{}", ack.reason);
    }

    let client = operator(&stack).await;
    let auth = bearer();
    let flagged = eventually(Duration::from_secs(10), || {
        let mut client = client.clone();
        let auth = auth.clone();
        async move {
            let stats = client
                .get_abuse_stats(with_auth(GetAbuseStatsRequest {}, Some(&auth)))
                .await
                .ok()?
                .into_inner();
            let train = stats.flagged_trains.into_iter().next()?;
            (train.flags.len() == 2).then_some(train)
        }
    })
    .await
    .expect("the train is flagged for both reasons");
    assert_eq!(flagged.trip.as_ref().unwrap().trip_id, trip);
    let mut flags: Vec<(&str, u64)> = flagged
        .flags
        .iter()
        .map(|f| (f.reason.as_str(), f.count))
        .collect();
    flags.sort();
    assert_eq!(flags, [("far_from_train", 1), ("late_arrival", 1)]);
    assert!(flagged.last_flagged_at.is_some());
    stack.shutdown().await.expect("clean shutdown");
}
