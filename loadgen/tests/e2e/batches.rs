//! The load driver's batched streams (`--batch`, `StreamReportBatches`)
//! against the real server: every report acked ACCEPTED and counted once,
//! exactly as on `StreamReports`.

use std::sync::Arc;
use std::time::Duration;

use crowd_loadgen::driver::stats::Stats;
use crowd_loadgen::driver::streams::{self, Outgoing};
use crowd_loadgen::driver::watchers::Freshness;
use crowd_proto::pb::v1::CrowdingLevel;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;

use crate::helpers::*;

/// Reports queued before the stream starts, so it sends full batches.
const QUEUED: usize = 300;
const BATCH: usize = 64;

/// A stream task handed [`QUEUED`] reports at once sends them in full
/// batches of [`BATCH`] (the last one smaller) and matches every ack.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batched_stream_has_every_report_accepted_and_counted() {
    let stack = start_stack().await;
    let channel = Channel::from_shared(stack.grpc_url())
        .unwrap()
        .connect()
        .await
        .expect("connect");
    let stats = Arc::new(Stats::default());
    let (input, queue) = tokio::sync::mpsc::unbounded_channel();
    let intended = Instant::now();
    for i in 0..QUEUED {
        // One device per report: the per-device rate limit is not the point.
        let report = report(
            &format!("batched-{i}"),
            &format!("batch-dev-{i}"),
            &format!("T{}", i % 10),
            (i % 4 + 1) as u32,
            CrowdingLevel::ManySeatsAvailable,
        );
        input
            .send(Outgoing {
                report,
                intended,
                note: None,
            })
            .unwrap();
        stats.sent.add(1);
    }
    drop(input);
    let (ready, opened) = tokio::sync::oneshot::channel();
    let task = streams::spawn(
        channel,
        streams::Batching {
            most: BATCH,
            linger: Duration::ZERO,
        },
        queue,
        ready,
        Arc::new(Freshness::default()),
        stats.clone(),
        CancellationToken::new(),
    );
    tokio::time::timeout(Duration::from_secs(5), opened)
        .await
        .expect("the call opens in time")
        .expect("the call opens");
    tokio::time::timeout(Duration::from_secs(20), task)
        .await
        .expect("every report acked in time")
        .unwrap();
    stack.shutdown().await.unwrap();

    let errors = stats.stream_errors.snapshot();
    assert!(errors.is_empty(), "{errors:?}");
    assert_eq!(
        stats.accepted.get(),
        QUEUED as u64,
        "{:?}",
        stats.reject_reasons.snapshot()
    );
    assert_eq!(
        stats.duplicate.get() + stats.rejected.get() + stats.unacked.get(),
        0
    );
    assert_eq!(stats.out_of_order_acks.get(), 0);
    assert_eq!(stats.ack_latency.summary().count, QUEUED as u64);
    // Everything was queued at once: 64, 64, 64, 64, 44.
    assert_eq!(stats.messages.get(), QUEUED.div_ceil(BATCH) as u64);
}
