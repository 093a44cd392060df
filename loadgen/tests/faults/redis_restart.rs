//! Redis is killed (SIGKILL) under load and restarted on the same port.
//!
//! With `appendfsync always`, every report acknowledged before the kill is
//! still in its stream afterwards and counts exactly once. Without
//! persistence Redis comes back empty: the aggregator recreates its consumer
//! groups (the reads fail with NOGROUP until it does) and counts the new
//! reports.

use std::time::Duration;

use crowd_loadgen::redis_process::{RedisOptions, RedisServer};

use crate::helpers::{
    Aggregator, Ledger, Server, aggregator_config, assert_counted_exactly, connect, exclusive,
    send_all, stored_ids, wait_until, workload,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_aof_always_every_acknowledged_report_survives_a_kill() {
    let _one_at_a_time = exclusive().await;
    let mut redis = RedisServer::start_with(RedisOptions {
        aof_always: true,
        ..RedisOptions::default()
    })
    .expect("redis with an append-only file");
    let url = redis.url();
    let server = Server::start(&url, &[]).await;
    let aggregator = Aggregator::spawn(aggregator_config(&url, &["--lease-ttl-ms", "1000"]));

    let (reports, trips) = workload("aof", 8, 600);
    let total = reports.len() as u64;
    let ledger = Ledger::default();
    let sender = tokio::spawn(send_all(
        server.reports().await,
        reports,
        4,
        ledger.clone(),
        Duration::from_secs(30),
    ));
    wait_until("some reports acknowledged", Duration::from_secs(10), || {
        let n = ledger.acked_count();
        async move { n >= 150 }
    })
    .await;
    redis.kill();
    // Every ack the client holds now was given before the kill.
    let acked_before_kill = ledger.acked();
    // Down long enough that the server's few quick reconnection attempts
    // cannot hide it: some report must get an error and be retried.
    tokio::time::sleep(Duration::from_secs(1)).await;
    redis
        .restart()
        .expect("redis restarts from its append-only file");

    let mut con = connect(&url).await;
    let stored = stored_ids(&mut con).await;
    let lost: Vec<&String> = acked_before_kill
        .iter()
        .filter(|id| !stored.contains(*id))
        .collect();
    assert!(lost.is_empty(), "acknowledged, then lost: {lost:?}");
    assert!(acked_before_kill.len() < total as usize, "killed too late");

    sender.await.expect("sender");
    assert_eq!(ledger.acked_count() as u64, total);
    assert!(
        !ledger.errors().is_empty(),
        "the kill went unnoticed by the client"
    );
    assert_counted_exactly(&mut con, &trips, total, Duration::from_secs(15)).await;
    aggregator.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_persistence_the_aggregator_recreates_its_groups_after_a_restart() {
    let _one_at_a_time = exclusive().await;
    let mut redis = RedisServer::start();
    let url = redis.url();
    let server = Server::start(&url, &[]).await;
    let aggregator = Aggregator::spawn(aggregator_config(&url, &["--lease-ttl-ms", "1000"]));
    let client = server.reports().await;

    let (before, trips) = workload("empty", 4, 40);
    send_all(
        client.clone(),
        before,
        4,
        Ledger::default(),
        Duration::from_secs(10),
    )
    .await;
    let mut con = connect(&url).await;
    assert_counted_exactly(&mut con, &trips, 40, Duration::from_secs(10)).await;

    redis.kill();
    tokio::time::sleep(Duration::from_millis(300)).await;
    redis.restart().expect("redis restarts empty");

    // Same trains, new reports: Redis forgot everything, streams included.
    let (after, _) = workload("empty", 4, 100);
    let after: Vec<_> = after.into_iter().skip(40).collect();
    let ledger = Ledger::default();
    send_all(client, after, 4, ledger.clone(), Duration::from_secs(15)).await;
    assert_eq!(ledger.acked_count(), 60);
    let mut con = connect(&url).await;
    assert_counted_exactly(&mut con, &trips, 60, Duration::from_secs(15)).await;
    aggregator.shutdown().await;
}
