//! An aggregator joins a running one under load: the partitions spread
//! evenly over both within a few lease renewals, and the hand-over loses or
//! doubles no report.

use std::collections::BTreeMap;
use std::time::Duration;

use crowd_loadgen::redis_process::RedisServer;

use crate::helpers::{
    Aggregator, Ledger, PARTITIONS, Server, aggregator_config, assert_counted_exactly, connect,
    exclusive, instance_of, lease_holders, send_all, wait_until, workload,
};

const LEASE_TTL: Duration = Duration::from_millis(900);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_joining_aggregator_gets_half_the_partitions_and_nothing_is_lost_or_doubled() {
    let _one_at_a_time = exclusive().await;
    let redis = RedisServer::start();
    let url = redis.url();
    let mut con = connect(&url).await;
    let server = Server::start(&url, &[]).await;
    let ttl = LEASE_TTL.as_millis().to_string();

    let first = Aggregator::spawn(aggregator_config(&url, &["--lease-ttl-ms", &ttl]));
    wait_until(
        "the first aggregator holds every lease",
        Duration::from_secs(5),
        || {
            let mut con = con.clone();
            async move { owners(&mut con).await.values().sum::<usize>() == usize::from(PARTITIONS) }
        },
    )
    .await;
    assert_eq!(owners(&mut con).await.len(), 1);

    let (reports, trips) = workload("rebalance", 8, 600);
    let total = reports.len() as u64;
    let ledger = Ledger::default();
    let sender = tokio::spawn(send_all(
        server.reports().await,
        reports,
        4,
        ledger.clone(),
        Duration::from_secs(20),
    ));

    let second = Aggregator::spawn(aggregator_config(&url, &["--lease-ttl-ms", &ttl]));
    // Two renewals of the first (it hands over) and of the second (it takes).
    wait_until(
        "two aggregators hold two partitions each",
        4 * LEASE_TTL,
        || {
            let mut con = con.clone();
            async move {
                let owners = owners(&mut con).await;
                owners.len() == 2 && owners.values().all(|n| *n == usize::from(PARTITIONS) / 2)
            }
        },
    )
    .await;

    sender.await.expect("sender");
    assert_eq!(ledger.acked_count() as u64, total);
    assert_counted_exactly(&mut con, &trips, total, Duration::from_secs(15)).await;

    // The shares stay put once balanced.
    tokio::time::sleep(2 * LEASE_TTL).await;
    let settled = owners(&mut con).await;
    assert_eq!(settled.len(), 2, "{settled:?}");
    assert!(settled.values().all(|n| *n == usize::from(PARTITIONS) / 2));

    first.shutdown().await;
    second.shutdown().await;
}

/// How many partitions each aggregator instance holds.
async fn owners(con: &mut redis::aio::MultiplexedConnection) -> BTreeMap<String, usize> {
    let mut owners = BTreeMap::new();
    for token in lease_holders(con).await.into_iter().flatten() {
        *owners.entry(instance_of(&token).to_owned()).or_default() += 1;
    }
    owners
}
