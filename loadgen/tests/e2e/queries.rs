//! Queries through the real server over a socket: estimates are written into
//! a private Redis exactly as the aggregator publishes them, then read back
//! with GetOccupancy, WatchOccupancy and SearchNearby.

use std::time::{Duration, Instant};

use chrono::Utc;
use tonic::Streaming;
use tonic::transport::Channel;

use crowd_loadgen::redis_process::RedisServer;
use crowd_proto::codec;
use crowd_proto::domain::TripKey;
use crowd_proto::layout::{ESTIMATE_FIELD, Layout};
use crowd_proto::pb::v1::occupancy_service_client::OccupancyServiceClient;
use crowd_proto::pb::v1::{
    CarEstimate, CrowdingLevel, EstimateSource, GeoPoint, GetOccupancyRequest, OccupancyEstimate,
    SearchNearbyRequest, TripRef, UsualComparison, WatchOccupancyRequest,
};

use crate::ingest::{TestServer, trip};

/// An update must reach a watcher within this.
const UPDATE_WITHIN: Duration = Duration::from_secs(1);

/// Paris, Châtelet.
const PARIS: (f64, f64) = (48.8584, 2.3470);

/// Publishes estimates into Redis the way the aggregator's commit does.
struct Publisher {
    conn: redis::aio::MultiplexedConnection,
    layout: Layout,
}

impl Publisher {
    async fn new(redis_url: &str, layout: Layout) -> Publisher {
        let conn = redis::Client::open(redis_url)
            .unwrap()
            .get_multiplexed_async_connection()
            .await
            .unwrap();
        Publisher { conn, layout }
    }

    /// SET the estimate, ZADD the train, GEOADD its position, XADD the change.
    async fn publish(&mut self, estimate: &OccupancyEstimate) {
        self.publish_for(estimate, None).await;
    }

    /// [`publish`](Self::publish), the estimate key expiring after `ttl_ms`
    /// (the aggregator's idle TTL) when given.
    async fn publish_for(&mut self, estimate: &OccupancyEstimate, ttl_ms: Option<u64>) {
        let t = estimate.trip.as_ref().unwrap();
        let key = TripKey {
            trip_id: t.trip_id.clone(),
            start_date: t.start_date.clone(),
        };
        let k = self.layout.partition_of(&key);
        let bytes = codec::encode_estimate(estimate);
        let mut pipe = redis::pipe();
        pipe.atomic()
            .cmd("SET")
            .arg(self.layout.estimate(k, &key))
            .arg(&bytes);
        if let Some(ttl_ms) = ttl_ms {
            pipe.arg("PX").arg(ttl_ms);
        }
        pipe.ignore()
            .cmd("ZADD")
            .arg(self.layout.trains(k))
            .arg(Utc::now().timestamp_millis())
            .arg(key.canonical())
            .ignore();
        if let Some(p) = &estimate.position {
            pipe.cmd("GEOADD")
                .arg(self.layout.geo(k))
                .arg(p.longitude)
                .arg(p.latitude)
                .arg(key.canonical())
                .ignore();
        }
        pipe.cmd("XADD")
            .arg(self.layout.updates(k))
            .arg("MAXLEN")
            .arg("~")
            .arg(10_000)
            .arg("*")
            .arg(ESTIMATE_FIELD)
            .arg(&bytes)
            .ignore();
        let () = pipe.query_async(&mut self.conn).await.unwrap();
    }

    /// DEL the estimate and XADD the withdrawal notice (the train, no
    /// level), as the aggregator does when no report counts any more.
    async fn withdraw(&mut self, trip_id: &str) {
        let key = TripKey {
            trip_id: trip_id.into(),
            start_date: trip(trip_id).start_date,
        };
        let k = self.layout.partition_of(&key);
        let notice = OccupancyEstimate {
            trip: Some(trip(trip_id)),
            updated_at: Some(codec::timestamp_from_ms(Utc::now().timestamp_millis())),
            source: EstimateSource::Crowd as i32,
            ..OccupancyEstimate::default()
        };
        let () = redis::pipe()
            .atomic()
            .cmd("DEL")
            .arg(self.layout.estimate(k, &key))
            .ignore()
            .cmd("ZREM")
            .arg(self.layout.geo(k))
            .arg(key.canonical())
            .ignore()
            .cmd("XADD")
            .arg(self.layout.updates(k))
            .arg("*")
            .arg(ESTIMATE_FIELD)
            .arg(codec::encode_estimate(&notice))
            .ignore()
            .query_async(&mut self.conn)
            .await
            .unwrap();
    }
}

fn estimate(
    trip_id: &str,
    route_id: &str,
    level: CrowdingLevel,
    at: (f64, f64),
) -> OccupancyEstimate {
    let now = codec::timestamp_from_ms(Utc::now().timestamp_millis());
    let mut trip = trip(trip_id);
    trip.route_id = route_id.into();
    OccupancyEstimate {
        trip: Some(trip),
        level: level as i32,
        occupancy_percentage: 85,
        confidence: 0.75,
        reporters: 4,
        updated_at: Some(now),
        cars: vec![CarEstimate {
            carriage_sequence: 2,
            level: level as i32,
            occupancy_percentage: 90,
            confidence: 0.6,
            reporters: 2,
            newest_report_at: Some(now),
        }],
        position: Some(GeoPoint {
            latitude: at.0,
            longitude: at.1,
            accuracy_m: 0.0,
        }),
        newest_report_at: Some(now),
        source: EstimateSource::Crowd as i32,
        usual_comparison: UsualComparison::Busier as i32,
    }
}

/// A point `north_m` metres north of `from`.
fn north_of(from: (f64, f64), north_m: f64) -> (f64, f64) {
    (from.0 + north_m / 111_195.0, from.1)
}

async fn client(server: &TestServer) -> OccupancyServiceClient<Channel> {
    OccupancyServiceClient::new(server.channel().await)
}

async fn next(watch: &mut Streaming<OccupancyEstimate>, within: Duration) -> OccupancyEstimate {
    tokio::time::timeout(within, watch.message())
        .await
        .expect("no estimate in time")
        .expect("watch failed")
        .expect("watch ended")
}

fn trip_id(e: &OccupancyEstimate) -> &str {
    &e.trip.as_ref().unwrap().trip_id
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn get_occupancy_returns_known_trips_and_omits_unknown_ones() {
    let redis = RedisServer::start();
    let server = TestServer::start(&redis.url()).await;
    let mut publisher = Publisher::new(&redis.url(), Layout::new(server.config.partitions)).await;
    let t1 = estimate("T1", "B", CrowdingLevel::Full, PARIS);
    let t2 = estimate("T2", "A", CrowdingLevel::ManySeatsAvailable, PARIS);
    publisher.publish(&t1).await;
    publisher.publish(&t2).await;

    let reply = client(&server)
        .await
        .get_occupancy(GetOccupancyRequest {
            trips: vec![trip("T1"), trip("T9"), trip("T2")],
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(reply.estimates, vec![t1, t2]);

    let none = client(&server)
        .await
        .get_occupancy(GetOccupancyRequest {
            trips: vec![trip("unknown")],
        })
        .await
        .unwrap()
        .into_inner();
    assert!(none.estimates.is_empty());
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_sends_the_current_estimate_then_each_change() {
    let redis = RedisServer::start();
    let server = TestServer::start(&redis.url()).await;
    let mut publisher = Publisher::new(&redis.url(), Layout::new(server.config.partitions)).await;
    let first = estimate("T1", "B", CrowdingLevel::FewSeatsAvailable, PARIS);
    publisher.publish(&first).await;

    let mut watch = client(&server)
        .await
        .watch_occupancy(WatchOccupancyRequest {
            trips: vec![trip("T1")],
            route_id: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(next(&mut watch, UPDATE_WITHIN).await, first);

    // A change of another train is not sent; the next change of T1 is.
    publisher
        .publish(&estimate("T2", "B", CrowdingLevel::Empty, PARIS))
        .await;
    let changed = estimate("T1", "B", CrowdingLevel::CrushedStandingRoomOnly, PARIS);
    publisher.publish(&changed).await;
    assert_eq!(next(&mut watch, UPDATE_WITHIN).await, changed);

    let again = estimate("T1", "B", CrowdingLevel::Full, PARIS);
    publisher.publish(&again).await;
    assert_eq!(next(&mut watch, UPDATE_WITHIN).await, again);

    // Shutdown closes the watch instead of waiting for the client.
    let stopped = tokio::spawn(server.stop());
    let end = tokio::time::timeout(Duration::from_secs(5), watch.message())
        .await
        .expect("watch still open after shutdown");
    assert!(!matches!(end, Ok(Some(_))), "{end:?}");
    stopped.await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_route_watch_covers_every_train_of_the_route() {
    let redis = RedisServer::start();
    let server = TestServer::start(&redis.url()).await;
    let mut publisher = Publisher::new(&redis.url(), Layout::new(server.config.partitions)).await;
    // Enough trains that the route spans several partitions.
    let mut on_route: Vec<OccupancyEstimate> = (0..6)
        .map(|i| estimate(&format!("B{i}"), "B", CrowdingLevel::Empty, PARIS))
        .collect();
    for e in &on_route {
        publisher.publish(e).await;
    }
    publisher
        .publish(&estimate("A1", "A", CrowdingLevel::Full, PARIS))
        .await;

    let mut watch = client(&server)
        .await
        .watch_occupancy(WatchOccupancyRequest {
            trips: vec![],
            route_id: "B".into(),
        })
        .await
        .unwrap()
        .into_inner();
    let mut initial = Vec::new();
    for _ in 0..on_route.len() {
        initial.push(next(&mut watch, UPDATE_WITHIN).await);
    }
    initial.sort_by(|a, b| trip_id(a).cmp(trip_id(b)));
    on_route.sort_by(|a, b| trip_id(a).cmp(trip_id(b)));
    assert_eq!(initial, on_route);

    // Another route's change is filtered out; a new train of the route shows up.
    publisher
        .publish(&estimate("A1", "A", CrowdingLevel::Empty, PARIS))
        .await;
    let newcomer = estimate("B9", "B", CrowdingLevel::StandingRoomOnly, PARIS);
    publisher.publish(&newcomer).await;
    assert_eq!(next(&mut watch, UPDATE_WITHIN).await, newcomer);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn search_nearby_finds_trains_near_the_point_nearest_first() {
    let redis = RedisServer::start();
    let server = TestServer::start(&redis.url()).await;
    let mut publisher = Publisher::new(&redis.url(), Layout::new(server.config.partitions)).await;
    let near = estimate("NEAR", "B", CrowdingLevel::Full, north_of(PARIS, 200.0));
    let closer = estimate("CLOSER", "C", CrowdingLevel::Empty, north_of(PARIS, 50.0));
    let town = estimate("TOWN", "D", CrowdingLevel::Empty, north_of(PARIS, 5_000.0));
    let far = estimate("FAR", "A", CrowdingLevel::Empty, north_of(PARIS, 100_000.0));
    for e in [&near, &closer, &town, &far] {
        publisher.publish(e).await;
    }
    let center = Some(GeoPoint {
        latitude: PARIS.0,
        longitude: PARIS.1,
        accuracy_m: 0.0,
    });

    let mut client = client(&server).await;
    let search = |radius_m: f64, limit: u32| SearchNearbyRequest {
        center,
        radius_m,
        limit,
    };
    let found = client
        .search_nearby(search(1_000.0, 0))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(found.estimates, vec![closer.clone(), near.clone()]);

    let found = client
        .search_nearby(search(50_000.0, 0))
        .await
        .unwrap()
        .into_inner();
    let ids: Vec<&str> = found.estimates.iter().map(trip_id).collect();
    assert_eq!(
        ids,
        ["CLOSER", "NEAR", "TOWN"],
        "the train 100 km away is not near"
    );

    let found = client
        .search_nearby(search(50_000.0, 1))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(found.estimates, vec![closer]);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_query_arguments_name_the_field() {
    let redis = RedisServer::start();
    let server = TestServer::start(&redis.url()).await;
    let mut client = client(&server).await;
    let invalid = |status: tonic::Status, prefix: &str| {
        assert_eq!(status.code(), tonic::Code::InvalidArgument, "{status}");
        assert!(
            status.message().starts_with(prefix),
            "{:?} does not start with {prefix:?}",
            status.message()
        );
    };

    let mut bad = trip("T1");
    bad.start_date = "2026-11-26".into();
    let err = client
        .get_occupancy(GetOccupancyRequest {
            trips: vec![trip("T0"), trip("T1"), bad],
        })
        .await
        .unwrap_err();
    invalid(
        err,
        "trips[2].trip.start_date: \"2026-11-26\" is not a real YYYYMMDD date",
    );

    let err = client
        .get_occupancy(GetOccupancyRequest {
            trips: vec![TripRef {
                trip_id: String::new(),
                start_date: "20261126".into(),
                route_id: String::new(),
            }],
        })
        .await
        .unwrap_err();
    invalid(err, "trips[0].trip.trip_id: empty");

    let err = client
        .watch_occupancy(WatchOccupancyRequest::default())
        .await
        .unwrap_err();
    invalid(err, "trips: empty");

    let center = |latitude, longitude| {
        Some(GeoPoint {
            latitude,
            longitude,
            accuracy_m: 0.0,
        })
    };
    let cases = [
        (
            SearchNearbyRequest {
                center: center(91.0, 2.0),
                radius_m: 500.0,
                limit: 0,
            },
            "center.latitude: 91",
        ),
        (
            SearchNearbyRequest {
                center: center(48.0, 2.0),
                radius_m: 0.0,
                limit: 0,
            },
            "radius_m: 0",
        ),
        (
            SearchNearbyRequest {
                center: center(48.0, 2.0),
                radius_m: 50_001.0,
                limit: 0,
            },
            "radius_m: 50001",
        ),
        (
            SearchNearbyRequest {
                center: center(48.0, 2.0),
                radius_m: 500.0,
                limit: 201,
            },
            "limit: 201 > 200",
        ),
        (
            SearchNearbyRequest {
                center: None,
                radius_m: 500.0,
                limit: 0,
            },
            "center: missing",
        ),
    ];
    for (request, prefix) in cases {
        invalid(client.search_nearby(request).await.unwrap_err(), prefix);
    }
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watch_survives_a_redis_restart() {
    let mut redis = RedisServer::start();
    let server = TestServer::start(&redis.url()).await;
    let layout = Layout::new(server.config.partitions);
    let mut publisher = Publisher::new(&redis.url(), layout).await;
    let first = estimate("T1", "B", CrowdingLevel::Empty, PARIS);
    publisher.publish(&first).await;
    let mut watch = client(&server)
        .await
        .watch_occupancy(WatchOccupancyRequest {
            trips: vec![trip("T1")],
            route_id: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(next(&mut watch, UPDATE_WITHIN).await, first);

    redis.kill();
    tokio::time::sleep(Duration::from_millis(300)).await;
    redis.restart().unwrap();
    server
        .wait_for_health(
            crowd_server::health::protocol::health_check_response::ServingStatus::Serving,
        )
        .await;

    // Publish until the tail has reconnected and the change arrives.
    let later = estimate("T1", "B", CrowdingLevel::Full, PARIS);
    let mut publisher = Publisher::new(&redis.url(), layout).await;
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        publisher.publish(&later).await;
        match tokio::time::timeout(Duration::from_millis(500), watch.message()).await {
            Ok(message) => {
                let got = message.expect("watch failed").expect("watch ended");
                assert_eq!(got, later);
                break;
            }
            Err(_) => assert!(Instant::now() < deadline, "no change after Redis came back"),
        }
    }
    server.stop().await;
}

/// The estimates GetOccupancy answers for `trip_ids`.
async fn get(
    client: &mut OccupancyServiceClient<Channel>,
    trip_ids: &[&str],
) -> Vec<OccupancyEstimate> {
    client
        .get_occupancy(GetOccupancyRequest {
            trips: trip_ids.iter().map(|t| trip(t)).collect(),
        })
        .await
        .expect("GetOccupancy")
        .into_inner()
        .estimates
}

/// Asks for `trip_id` until the answer is `want`, failing after
/// `within`; returns how long it took.
async fn until_answered(
    client: &mut OccupancyServiceClient<Channel>,
    trip_id: &str,
    want: &[OccupancyEstimate],
    within: Duration,
) -> Duration {
    let start = Instant::now();
    loop {
        let got = get(client, &[trip_id]).await;
        if got == want {
            return start.elapsed();
        }
        assert!(
            start.elapsed() < within,
            "{trip_id}: still {got:?} after {within:?}, want {want:?}"
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_query_right_after_an_update_sees_it_and_never_goes_back() {
    let redis = RedisServer::start();
    let server = TestServer::start(&redis.url()).await;
    let mut publisher = Publisher::new(&redis.url(), Layout::new(server.config.partitions)).await;
    let mut client = client(&server).await;
    let mut current = estimate("T1", "B", CrowdingLevel::Empty, PARIS);
    publisher.publish(&current).await;
    // The first answer comes from Redis and is kept.
    assert_eq!(get(&mut client, &["T1"]).await, vec![current.clone()]);

    let levels = [
        CrowdingLevel::ManySeatsAvailable,
        CrowdingLevel::FewSeatsAvailable,
        CrowdingLevel::StandingRoomOnly,
        CrowdingLevel::Full,
    ];
    for level in levels {
        let previous = current;
        current = estimate("T1", "B", level, PARIS);
        publisher.publish(&current).await;
        // Until the tail brings the change, the previous estimate; then
        // the new one, as soon as watchers get it, and never the old again.
        let start = Instant::now();
        let mut seen_new = false;
        while start.elapsed() < Duration::from_millis(200) {
            let got = get(&mut client, &["T1"]).await;
            if seen_new {
                assert_eq!(got, vec![current.clone()], "went back after {level:?}");
            } else if got == vec![current.clone()] {
                seen_new = true;
                assert!(start.elapsed() < UPDATE_WITHIN);
            } else {
                assert_eq!(got, vec![previous.clone()]);
            }
        }
        assert!(seen_new, "{level:?} never answered");
    }
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_withdrawn_estimate_disappears_and_a_new_one_comes_back() {
    let redis = RedisServer::start();
    let server = TestServer::start(&redis.url()).await;
    let mut publisher = Publisher::new(&redis.url(), Layout::new(server.config.partitions)).await;
    let mut client = client(&server).await;
    let t1 = estimate("T1", "B", CrowdingLevel::Full, PARIS);
    let t2 = estimate("T2", "B", CrowdingLevel::Empty, PARIS);
    publisher.publish(&t1).await;
    publisher.publish(&t2).await;
    assert_eq!(get(&mut client, &["T1", "T2"]).await, vec![t1, t2.clone()]);

    publisher.withdraw("T1").await;
    until_answered(&mut client, "T1", &[], UPDATE_WITHIN).await;
    assert_eq!(get(&mut client, &["T1", "T2"]).await, vec![t2]);

    // Published again, the train is back.
    let again = estimate("T1", "B", CrowdingLevel::StandingRoomOnly, PARIS);
    publisher.publish(&again).await;
    until_answered(&mut client, "T1", &[again], UPDATE_WITHIN).await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_estimate_is_not_answered_after_its_key_expired() {
    let redis = RedisServer::start();
    let mut config = crowd_server::Config::for_redis(redis.url());
    // The shortest idle TTL the aggregator allows: 1 s.
    config.train_idle_secs = 1;
    let server = TestServer::start_unchecked(config).await;
    server
        .wait_for_health(
            crowd_server::health::protocol::health_check_response::ServingStatus::Serving,
        )
        .await;
    let mut publisher = Publisher::new(&redis.url(), Layout::new(server.config.partitions)).await;
    let mut client = client(&server).await;
    // Kept by the tail (published after the server started) and by a fill.
    let tailed = estimate("TAILED", "B", CrowdingLevel::Full, PARIS);
    publisher.publish_for(&tailed, Some(1000)).await;
    until_answered(&mut client, "TAILED", &[tailed], UPDATE_WITHIN).await;
    let filled = estimate("FILLED", "B", CrowdingLevel::Full, PARIS);
    publisher.publish_for(&filled, Some(1000)).await;
    assert_eq!(get(&mut client, &["FILLED"]).await, vec![filled]);

    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert!(
        get(&mut client, &["TAILED", "FILLED"]).await.is_empty(),
        "an estimate outlived its key"
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_servers_agree_after_every_change() {
    let redis = RedisServer::start();
    let a = TestServer::start(&redis.url()).await;
    let b = TestServer::start(&redis.url()).await;
    let mut publisher = Publisher::new(&redis.url(), Layout::new(a.config.partitions)).await;
    let (mut ca, mut cb) = (client(&a).await, client(&b).await);
    let first = estimate("T1", "B", CrowdingLevel::Empty, PARIS);
    publisher.publish(&first).await;
    assert_eq!(get(&mut ca, &["T1"]).await, vec![first.clone()]);
    assert_eq!(get(&mut cb, &["T1"]).await, vec![first]);

    for level in [CrowdingLevel::Full, CrowdingLevel::FewSeatsAvailable] {
        let next = estimate("T1", "B", level, PARIS);
        publisher.publish(&next).await;
        let want = vec![next];
        until_answered(&mut ca, "T1", &want, UPDATE_WITHIN).await;
        until_answered(&mut cb, "T1", &want, UPDATE_WITHIN).await;
    }
    publisher.withdraw("T1").await;
    until_answered(&mut ca, "T1", &[], UPDATE_WITHIN).await;
    until_answered(&mut cb, "T1", &[], UPDATE_WITHIN).await;
    a.stop().await;
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changes_trimmed_before_the_tail_read_them_are_not_missed() {
    let redis = RedisServer::start();
    let server = TestServer::start(&redis.url()).await;
    let layout = Layout::new(server.config.partitions);
    let mut publisher = Publisher::new(&redis.url(), layout).await;
    let mut client = client(&server).await;
    let old = estimate("T1", "B", CrowdingLevel::Empty, PARIS);
    publisher.publish(&old).await;
    until_answered(&mut client, "T1", &[old], UPDATE_WITHIN).await;

    // In one transaction: T1 changes, then 3,000 changes of other trains
    // of its partition push T1's out of a stream capped at 1,500 before the
    // tail can read it.
    let t1 = TripKey {
        trip_id: "T1".into(),
        start_date: trip("T1").start_date,
    };
    let k = layout.partition_of(&t1);
    let new = estimate("T1", "B", CrowdingLevel::Full, PARIS);
    let mut pipe = redis::pipe();
    pipe.atomic()
        .cmd("SET")
        .arg(layout.estimate(k, &t1))
        .arg(codec::encode_estimate(&new))
        .ignore()
        .cmd("XADD")
        .arg(layout.updates(k))
        .arg("*")
        .arg(ESTIMATE_FIELD)
        .arg(codec::encode_estimate(&new))
        .ignore();
    let filler = codec::encode_estimate(&estimate("OTHER", "B", CrowdingLevel::Empty, PARIS));
    for _ in 0..3000 {
        pipe.cmd("XADD")
            .arg(layout.updates(k))
            .arg("MAXLEN")
            .arg(1500)
            .arg("*")
            .arg(ESTIMATE_FIELD)
            .arg(&filler)
            .ignore();
    }
    let mut con = redis::Client::open(redis.url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let () = pipe.query_async(&mut con).await.unwrap();
    until_answered(&mut client, "T1", &[new], UPDATE_WITHIN).await;
    server.stop().await;
}
