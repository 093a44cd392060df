//! Redis freezes (SIGSTOP) for a few seconds under load: every report gets
//! an answer within a second (UNAVAILABLE, or RESOURCE_EXHAUSTED once the
//! bounded write queue is full), nothing hangs, and after Redis resumes the
//! retried reports are all accepted and counted once.

use std::time::{Duration, Instant};

use futures::future::join_all;

use crowd_loadgen::redis_process::RedisServer;

use crate::helpers::{
    Aggregator, Ledger, Server, aggregator_config, assert_counted_exactly, connect, exclusive,
    send_all, workload,
};

/// Reports fired at once while Redis is frozen: more than the server holds.
const BURST: usize = 400;
/// The server's bound on reports in flight: write queue + writers × batch.
const HELD: usize = 64 + 2 * 32;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_redis_gets_prompt_errors_bounded_queues_and_full_recovery() {
    let _one_at_a_time = exclusive().await;
    let redis = RedisServer::start();
    let url = redis.url();
    let server = Server::start(
        &url,
        &[
            "--redis-timeout-ms",
            "300",
            "--write-queue",
            "64",
            "--writers",
            "2",
            "--write-batch",
            "32",
        ],
    )
    .await;
    let aggregator = Aggregator::spawn(aggregator_config(&url, &["--lease-ttl-ms", "2000"]));
    let client = server.reports().await;
    let (reports, trips) = workload("pause", 8, 200 + BURST);
    let (warmup, during) = reports.split_at(200);
    let ledger = Ledger::default();
    send_all(
        client.clone(),
        warmup.to_vec(),
        4,
        ledger.clone(),
        Duration::from_secs(10),
    )
    .await;

    redis.pause();
    let frozen_at = Instant::now();
    let answers = join_all(during.iter().cloned().map(|r| {
        let mut client = client.clone();
        async move {
            let started = Instant::now();
            let answer = tokio::time::timeout(Duration::from_secs(3), client.submit_report(r))
                .await
                .expect("no answer within 3 s: the call hangs");
            (started.elapsed(), answer.map(|a| a.into_inner()))
        }
    }))
    .await;
    let slowest = answers.iter().map(|(t, _)| *t).max().unwrap_or_default();
    let mut exhausted = 0;
    for (_, answer) in &answers {
        let status = answer.as_ref().expect_err("accepted while Redis is frozen");
        match status.code() {
            tonic::Code::Unavailable => {}
            tonic::Code::ResourceExhausted => exhausted += 1,
            other => panic!("unexpected {other:?}: {status}"),
        }
    }
    assert!(
        slowest < Duration::from_secs(1),
        "slowest answer {slowest:?}"
    );
    assert!(
        exhausted >= BURST - HELD - 100,
        "the server held {} reports for a frozen Redis",
        BURST - exhausted
    );

    // Frozen for ~3 s in all, then back: retries (same ids) go through.
    tokio::time::sleep(Duration::from_secs(3).saturating_sub(frozen_at.elapsed())).await;
    redis.resume();
    send_all(
        client,
        during.to_vec(),
        8,
        ledger.clone(),
        Duration::from_secs(10),
    )
    .await;
    let total = (200 + BURST) as u64;
    assert_eq!(ledger.acked_count() as u64, total);
    let mut con = connect(&url).await;
    assert_counted_exactly(&mut con, &trips, total, Duration::from_secs(15)).await;
    aggregator.shutdown().await;
}
