//! The same workload on a local 3-master Redis Cluster (started by
//! `scripts/redis-cluster.sh`) with two servers and two aggregators gives the
//! same estimates as on one Redis with one server and one aggregator, counts
//! every acknowledged report exactly once, and spreads the partitions over
//! both aggregators.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crowd_loadgen::redis_process::RedisServer;
use crowd_proto::connection::{Connection, Options, Target};
use crowd_proto::domain::TripKey;
use crowd_proto::pb::v1::occupancy_service_client::OccupancyServiceClient;
use crowd_proto::pb::v1::{
    CrowdingLevel, CrowdingReport, GetOccupancyRequest, OccupancyEstimate, TripRef,
};

use crate::helpers::{
    Aggregator, Ledger, Server, aggregator_config, counted, exclusive, instance_of, lease_holders,
    report, send_all, trip_key, wait_until,
};

const TRAINS: usize = 12;
const REPORTS: usize = 240;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_three_master_cluster_with_two_servers_and_two_aggregators_estimates_like_one_redis() {
    let _one_at_a_time = exclusive().await;

    let single = RedisServer::start();
    let reference = run(&single.url(), 1).await;
    drop(single);

    let cluster = Cluster::start();
    let clustered = run(&cluster.url, 2).await;

    assert_eq!(reference.len(), TRAINS, "every train has an estimate");
    let levels: BTreeSet<i32> = reference.values().map(|e| e.level).collect();
    assert!(levels.len() >= 3, "the workload spans levels: {levels:?}");
    assert_eq!(
        clustered.keys().collect::<Vec<_>>(),
        reference.keys().collect::<Vec<_>>()
    );
    for (trip, want) in &reference {
        let got = &clustered[trip];
        assert_eq!(summary(got), summary(want), "{trip}");
        assert!(
            (got.confidence - want.confidence).abs() <= 0.05,
            "{trip}: confidence {} vs {}",
            got.confidence,
            want.confidence
        );
    }
}

/// (carriage, level, percentage, reporters) of one car.
type CarSummary = (u32, i32, u32, u32);

/// What must be equal between the runs: levels, percentages and reporters
/// of the train and of every car (confidence fades with the seconds between
/// the runs, so it is compared with a tolerance).
fn summary(e: &OccupancyEstimate) -> (i32, u32, u32, Vec<CarSummary>) {
    (
        e.level,
        e.occupancy_percentage,
        e.reporters,
        e.cars
            .iter()
            .map(|c| {
                (
                    c.carriage_sequence,
                    c.level,
                    c.occupancy_percentage,
                    c.reporters,
                )
            })
            .collect(),
    )
}

/// Sends the workload through `servers` servers (alternating) to Redis at
/// `url` with as many aggregators, waits until every acknowledged report is
/// counted exactly once, and returns each train's estimate as the servers
/// answer it (both servers must agree).
async fn run(url: &str, servers: usize) -> BTreeMap<String, OccupancyEstimate> {
    let mut con = audit_connection(url).await;
    let fleet: Vec<Server> =
        futures::future::join_all((0..servers).map(|_| Server::start(url, &[]))).await;
    // Order of reports must not matter: reputation (learnt in arrival order)
    // is off, so both runs weigh every device the same.
    let aggregators: Vec<Aggregator> = (0..servers)
        .map(|_| Aggregator::spawn(aggregator_config(url, &["--reputation", "false"])))
        .collect();

    let (reports, trips) = workload();
    let ledger = Ledger::default();
    let mut senders = Vec::new();
    for (i, server) in fleet.iter().enumerate() {
        let share: Vec<CrowdingReport> = reports.iter().skip(i).step_by(servers).cloned().collect();
        senders.push(tokio::spawn(send_all(
            server.reports().await,
            share,
            4,
            ledger.clone(),
            Duration::from_secs(30),
        )));
    }
    for sender in senders {
        sender.await.expect("sender");
    }
    assert_eq!(ledger.acked_count(), REPORTS);
    assert_counted(&mut con, &trips, REPORTS as u64).await;

    if servers > 1 {
        wait_until(
            "both aggregators hold partitions",
            Duration::from_secs(10),
            || {
                let mut con = con.clone();
                async move {
                    let holders: BTreeSet<String> = lease_holders(&mut con)
                        .await
                        .into_iter()
                        .flatten()
                        .map(|t| instance_of(&t).to_owned())
                        .collect();
                    holders.len() == 2
                }
            },
        )
        .await;
    }

    let mut answers = Vec::new();
    for server in &fleet {
        let mut client = OccupancyServiceClient::new(server.channel().await);
        let response = client
            .get_occupancy(GetOccupancyRequest {
                trips: trips.iter().map(trip_ref).collect(),
            })
            .await
            .expect("GetOccupancy")
            .into_inner();
        let by_trip: BTreeMap<String, OccupancyEstimate> = response
            .estimates
            .into_iter()
            .map(|e| (e.trip.as_ref().expect("trip").trip_id.clone(), e))
            .collect();
        answers.push(by_trip);
    }
    for other in &answers[1..] {
        let a: Vec<_> = answers[0].values().map(summary).collect();
        let b: Vec<_> = other.values().map(summary).collect();
        assert_eq!(a, b, "servers disagree");
    }
    for aggregator in aggregators {
        aggregator.shutdown().await;
    }
    answers.swap_remove(0)
}

/// `REPORTS` reports on `TRAINS` trains, one device each, with levels and
/// cars varying so that trains and cars get different estimates.
fn workload() -> (Vec<CrowdingReport>, Vec<TripKey>) {
    let levels = [
        CrowdingLevel::ManySeatsAvailable,
        CrowdingLevel::FewSeatsAvailable,
        CrowdingLevel::StandingRoomOnly,
        CrowdingLevel::CrushedStandingRoomOnly,
    ];
    let trips: Vec<String> = (0..TRAINS).map(|i| format!("cluster-T{i}")).collect();
    let reports = (0..REPORTS)
        .map(|i| {
            let train = i % TRAINS;
            let mut r = report(
                &format!("cluster-r{i}"),
                &format!("cluster-d{i}"),
                &trips[train],
            );
            r.carriage_sequence = 1 + (i / TRAINS % 4) as u32;
            // Mostly the train's level, with some riders one level off.
            let off = usize::from(i % 5 == 0);
            r.level =
                levels[(train + r.carriage_sequence as usize / 2 + off) % levels.len()] as i32;
            r
        })
        .collect();
    (reports, trips.iter().map(|t| trip_key(t)).collect())
}

fn trip_ref(t: &TripKey) -> TripRef {
    TripRef {
        trip_id: t.trip_id.clone(),
        start_date: t.start_date.clone(),
        route_id: String::new(),
    }
}

/// A connection that works on one node or a cluster.
async fn audit_connection(url: &str) -> Connection {
    Target::parse(url, false)
        .expect("url")
        .connect(Options {
            connect_timeout: Duration::from_secs(5),
            response_timeout: Duration::from_secs(10),
            retries: 1,
        })
        .await
        .expect("connect to redis")
}

/// Waits until the trains' `reports_counted` reach `want`, then checks that
/// they stay there (nothing counted twice).
async fn assert_counted(con: &mut Connection, trips: &[TripKey], want: u64) {
    wait_until("every report counted", Duration::from_secs(20), || {
        let mut con = con.clone();
        async move { counted(&mut con, trips).await >= want }
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(counted(con, trips).await, want, "counted more than once");
}

/// A local 3-master cluster from `scripts/redis-cluster.sh`, stopped on drop.
struct Cluster {
    url: String,
    dir: tempfile::TempDir,
}

impl Cluster {
    fn start() -> Cluster {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/redis-cluster.sh");
        let mut last_error = String::new();
        for _ in 0..5 {
            let dir = tempfile::tempdir().expect("temp dir");
            // Node ports and their bus ports (+10000) stay below the
            // ephemeral range, so a client socket cannot hold them.
            let base = 10_000 + rand::random_range(0..12_000u16);
            let out = Command::new("bash")
                .arg(&script)
                .arg("start")
                .arg(base.to_string())
                .arg(dir.path())
                .output()
                .expect("run scripts/redis-cluster.sh");
            let stdout = String::from_utf8_lossy(&out.stdout);
            if let (true, Some(url)) = (
                out.status.success(),
                stdout.lines().find_map(|l| l.strip_prefix("REDIS_URL=")),
            ) {
                return Cluster {
                    url: url.to_owned(),
                    dir,
                };
            }
            last_error = format!("{stdout}{}", String::from_utf8_lossy(&out.stderr));
            stop(&script, dir.path());
        }
        panic!("cannot start a Redis Cluster: {last_error}");
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let script: PathBuf =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/redis-cluster.sh");
        stop(&script, self.dir.path());
    }
}

fn stop(script: &Path, dir: &Path) {
    let _ = Command::new("bash")
        .arg(script)
        .arg("stop")
        .arg(dir)
        .status();
}
