//! Redis drops the connections of the server and of the aggregator
//! (`CLIENT KILL TYPE normal`) again and again under load: both reconnect
//! by themselves, the client retries what was not acknowledged with the same
//! report ids, and every report counts exactly once although some of them
//! were written twice.

use std::time::Duration;

use crowd_loadgen::redis_process::RedisServer;

use crate::helpers::{
    Aggregator, Ledger, Server, aggregator_config, assert_counted_exactly, connect, exclusive,
    send_all, workload,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_redis_connections_reconnect_without_loss_or_double_count() {
    let _one_at_a_time = exclusive().await;
    let redis = RedisServer::start();
    let url = redis.url();
    let server = Server::start(&url, &[]).await;
    let aggregator = Aggregator::spawn(aggregator_config(&url, &["--lease-ttl-ms", "1500"]));

    let (reports, trips) = workload("kill", 8, 800);
    let total = reports.len() as u64;
    let ledger = Ledger::default();
    let sender = tokio::spawn(send_all(
        server.reports().await,
        reports,
        4,
        ledger.clone(),
        Duration::from_secs(30),
    ));

    // The killer's own connection is spared (SKIPME is on by default).
    let mut killer = connect(&url).await;
    let mut killed = 0;
    for _ in 0..6 {
        tokio::time::sleep(Duration::from_millis(250)).await;
        let n: i64 = redis::cmd("CLIENT")
            .arg("KILL")
            .arg("TYPE")
            .arg("normal")
            .query_async(&mut killer)
            .await
            .expect("CLIENT KILL");
        killed += n;
    }
    assert!(killed >= 6, "only {killed} connections killed");

    sender.await.expect("sender");
    assert_eq!(ledger.acked_count() as u64, total);
    let mut con = connect(&url).await;
    assert_counted_exactly(&mut con, &trips, total, Duration::from_secs(15)).await;
    aggregator.shutdown().await;
}
