//! An aggregator dies in the middle of a batch while another one runs: its
//! partitions move to the survivor within the lease lifetime plus 2 s, and
//! the batch it never committed is counted once, by the survivor.

use std::time::{Duration, Instant};

use crowd_aggregator::AggregatorError;
use crowd_loadgen::redis_process::RedisServer;

use crate::helpers::{
    Aggregator, Ledger, Server, aggregator_config, assert_counted_exactly, connect, exclusive,
    instance_of, lease_holders, send_all, wait_until, workload,
};

const LEASE_TTL: Duration = Duration::from_millis(800);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crashed_aggregators_partitions_move_and_nothing_is_lost_or_doubled() {
    let _one_at_a_time = exclusive().await;
    let redis = RedisServer::start();
    let url = redis.url();
    let mut con = connect(&url).await;
    let server = Server::start(&url, &[]).await;
    let ttl = LEASE_TTL.as_millis().to_string();

    // The doomed aggregator takes every partition before the survivor starts.
    let mut doomed_config = aggregator_config(&url, &["--lease-ttl-ms", &ttl]);
    doomed_config.faults.crash_before_commit_of_batch = Some(3);
    let mut doomed = Aggregator::spawn(doomed_config);
    wait_until(
        "the first aggregator holds every lease",
        Duration::from_secs(5),
        || {
            let mut con = con.clone();
            async move { lease_holders(&mut con).await.iter().all(Option::is_some) }
        },
    )
    .await;
    let holders = lease_holders(&mut con).await;
    let doomed_id = instance_of(holders[0].as_deref().unwrap()).to_owned();
    let survivor = Aggregator::spawn(aggregator_config(&url, &["--lease-ttl-ms", &ttl]));

    let (reports, trips) = workload("crash", 8, 400);
    let total = reports.len() as u64;
    let ledger = Ledger::default();
    let sender = tokio::spawn(send_all(
        server.reports().await,
        reports,
        4,
        ledger.clone(),
        Duration::from_secs(20),
    ));

    let crashed = tokio::time::timeout(Duration::from_secs(10), &mut doomed.handle)
        .await
        .expect("the crash hook fires under load")
        .expect("no panic");
    let crashed_at = Instant::now();
    assert!(
        matches!(crashed, Err(AggregatorError::InjectedCrash)),
        "{crashed:?}"
    );

    // Every partition passes to the survivor within the lease lifetime + 2 s.
    let limit = LEASE_TTL + Duration::from_secs(2);
    wait_until("the survivor holds every lease", limit, || {
        let mut con = con.clone();
        let doomed_id = doomed_id.clone();
        async move {
            lease_holders(&mut con)
                .await
                .iter()
                .all(|h| h.as_deref().is_some_and(|t| instance_of(t) != doomed_id))
        }
    })
    .await;
    assert!(crashed_at.elapsed() <= limit, "{:?}", crashed_at.elapsed());

    sender.await.expect("sender");
    assert_eq!(ledger.acked_count() as u64, total);
    assert_counted_exactly(&mut con, &trips, total, Duration::from_secs(10)).await;
    survivor.shutdown().await;
}
