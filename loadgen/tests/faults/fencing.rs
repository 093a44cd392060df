//! Two aggregators fight over the partitions: the first one freezes between
//! reading a batch and committing it, its leases lapse, the second takes over
//! and counts that batch itself. When the first one wakes up, its commit is
//! refused by the fencing token, so its stale state never overwrites the
//! successor's and every report still counts once.

use std::time::{Duration, Instant};

use crowd_loadgen::redis_process::RedisServer;

use crate::helpers::{
    Aggregator, Ledger, Server, aggregator_config, assert_counted_exactly, connect, counted,
    exclusive, instance_of, lease_holders, send_all, wait_until, workload,
};

const LEASE_TTL: Duration = Duration::from_millis(600);
const STALL: Duration = Duration::from_millis(3000);

/// The process-wide count of fenced commits.
fn fenced_commits() -> u64 {
    crowd_proto::metrics::render()
        .lines()
        .find_map(|l| l.strip_prefix("crowd_aggregator_commits_fenced_total "))
        .and_then(|v| v.trim().parse::<f64>().ok())
        .map_or(0, |v| v as u64)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stale_owners_commit_is_fenced_and_counts_stay_exact() {
    let _one_at_a_time = exclusive().await;
    let redis = RedisServer::start();
    let url = redis.url();
    let mut con = connect(&url).await;
    let server = Server::start(&url, &[]).await;
    let ttl = LEASE_TTL.as_millis().to_string();
    let fenced_before = fenced_commits();

    let mut stale_config = aggregator_config(&url, &["--lease-ttl-ms", &ttl]);
    stale_config.faults.stall_before_commit_of_batch = Some((1, STALL));
    let stale = Aggregator::spawn(stale_config);
    wait_until(
        "the first aggregator holds every lease",
        Duration::from_secs(5),
        || {
            let mut con = con.clone();
            async move { lease_holders(&mut con).await.iter().all(Option::is_some) }
        },
    )
    .await;
    let stale_id = instance_of(lease_holders(&mut con).await[0].as_deref().unwrap()).to_owned();
    let successor = Aggregator::spawn(aggregator_config(&url, &["--lease-ttl-ms", &ttl]));

    // The first batch: read by the stale owner, which then freezes.
    let (first, trips) = workload("fence", 8, 80);
    let ledger = Ledger::default();
    let frozen_at = Instant::now();
    send_all(
        server.reports().await,
        first,
        4,
        ledger.clone(),
        Duration::from_secs(5),
    )
    .await;

    wait_until("the successor takes every partition", STALL, || {
        let mut con = con.clone();
        let stale_id = stale_id.clone();
        async move {
            lease_holders(&mut con)
                .await
                .iter()
                .all(|h| h.as_deref().is_some_and(|t| instance_of(t) != stale_id))
        }
    })
    .await;

    // More reports, counted by the successor while the stale owner sleeps.
    let more: Vec<_> = (0..40)
        .map(|i| {
            crate::helpers::report(
                &format!("fence-late-{i}"),
                &format!("fence-late-d{i}"),
                &format!("fence-T{}", i % 8),
            )
        })
        .collect();
    send_all(
        server.reports().await,
        more,
        4,
        ledger.clone(),
        Duration::from_secs(5),
    )
    .await;
    let total = ledger.acked_count() as u64;
    assert_eq!(total, 120);
    wait_until("the successor counts everything", STALL, || {
        let mut con = con.clone();
        let trips = trips.clone();
        async move { counted(&mut con, &trips).await >= total }
    })
    .await;
    assert!(
        frozen_at.elapsed() < STALL,
        "the successor was too slow to prove anything"
    );

    // The stale owner wakes up and tries to commit what it read.
    tokio::time::sleep(STALL.saturating_sub(frozen_at.elapsed()) + Duration::from_millis(700))
        .await;
    assert_eq!(
        counted(&mut con, &trips).await,
        total,
        "a stale commit overwrote the successor's state"
    );
    assert!(
        fenced_commits() > fenced_before,
        "the stale owner's commit was not refused by the fence"
    );
    assert_counted_exactly(&mut con, &trips, total, Duration::from_secs(5)).await;
    successor.shutdown().await;
    stale.shutdown().await;
}
