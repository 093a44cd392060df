//! Raw reports do not stay in Redis: with `--retention-secs`, entries older
//! than that are trimmed from the partition streams as new ones arrive,
//! whatever the length cap. (Retention is a privacy bound, tested here with
//! the other operating limits.)

use std::time::Duration;

use crowd_loadgen::redis_process::RedisServer;

use crate::helpers::{Ledger, Server, connect, exclusive, layout, send_all, trip_key, workload};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reports_older_than_the_retention_are_trimmed() {
    let _one_at_a_time = exclusive().await;
    let redis = RedisServer::start();
    let url = redis.url();
    let server = Server::start(&url, &["--retention-secs", "1"]).await;
    let client = server.reports().await;
    // One train, so one stream; enough entries to fill several stream nodes
    // (trimming with `~` drops whole nodes of 100 entries).
    let (old, _) = workload("keep", 1, 400);
    send_all(
        client.clone(),
        old,
        8,
        Ledger::default(),
        Duration::from_secs(10),
    )
    .await;
    let stream = layout().reports(layout().partition_of(&trip_key("keep-T0")));
    let con = connect(&url).await;
    let xlen = |mut con: redis::aio::MultiplexedConnection, key: String| async move {
        redis::cmd("XLEN")
            .arg(key)
            .query_async::<u64>(&mut con)
            .await
            .expect("XLEN")
    };
    assert_eq!(xlen(con.clone(), stream.clone()).await, 400);

    tokio::time::sleep(Duration::from_millis(1500)).await;
    let (new, _) = workload("keep", 1, 401);
    send_all(
        client,
        new.into_iter().skip(400).collect(),
        1,
        Ledger::default(),
        Duration::from_secs(5),
    )
    .await;
    let left = xlen(con, stream).await;
    assert!(left <= 101, "{left} entries left after trimming");
}
