//! `StreamReportBatches` through the real server into a private Redis: one
//! ack message per batch, each report judged on its own and in order, an
//! oversized batch refused report by report while the stream goes on, and a
//! store failure that leaves every unacknowledged report free to be sent
//! again (on either kind of stream).

use std::time::{Duration, Instant};

use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Streaming;
use tonic::transport::Channel;

use crowd_loadgen::redis_process::RedisServer;
use crowd_proto::layout::Layout;
use crowd_proto::pb::v1::report_service_client::ReportServiceClient;
use crowd_proto::pb::v1::{AckStatus, CrowdingReport, CrowdingReportBatch, ReportAckBatch};
use crowd_server::health::protocol::health_check_response::ServingStatus;

use super::ingest::{TestServer, good, stored_report_ids, trip};

/// Longest wait for any single answer in these tests.
const WAIT: Duration = Duration::from_secs(5);

/// One open StreamReportBatches call.
struct BatchStream {
    tx: mpsc::Sender<CrowdingReportBatch>,
    acks: Streaming<ReportAckBatch>,
}

impl BatchStream {
    async fn open(client: &mut ReportServiceClient<Channel>) -> BatchStream {
        let (tx, rx) = mpsc::channel(8);
        let acks = client
            .stream_report_batches(ReceiverStream::new(rx))
            .await
            .unwrap()
            .into_inner();
        BatchStream { tx, acks }
    }

    async fn send(&self, reports: Vec<CrowdingReport>) {
        self.tx.send(CrowdingReportBatch { reports }).await.unwrap();
    }

    /// The next ack batch, or the status that ended the stream.
    async fn next(&mut self) -> Result<ReportAckBatch, tonic::Status> {
        tokio::time::timeout(WAIT, self.acks.message())
            .await
            .expect("no ack batch in time")
            .map(|acks| acks.expect("stream ended without a status"))
    }
}

fn statuses(batch: &ReportAckBatch) -> Vec<(String, AckStatus)> {
    batch
        .acks
        .iter()
        .map(|a| (a.report_id.clone(), AckStatus::try_from(a.status).unwrap()))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_is_answered_by_one_ack_batch_report_by_report() {
    let redis = RedisServer::start();
    let server = TestServer::start(&redis.url()).await;
    let mut client = server.reports().await;
    let mut stream = BatchStream::open(&mut client).await;

    // 40 reports on four trains, one of them bad and one sent twice.
    let mut batch: Vec<CrowdingReport> = (0..40)
        .map(|i| {
            let mut report = good(&format!("b-{i}"));
            report.trip = Some(trip(["T1", "T2", "T3", "T4"][i % 4]));
            report.device_id = format!("device-{}", i % 7);
            report
        })
        .collect();
    batch[7].carriage_sequence = 40;
    batch[21].report_id = "b-3".into();
    stream.send(batch.clone()).await;
    let acks = stream.next().await.unwrap();
    let expected: Vec<(String, AckStatus)> = batch
        .iter()
        .enumerate()
        .map(|(i, r)| {
            let status = match i {
                7 => AckStatus::Rejected,
                21 => AckStatus::Duplicate,
                _ => AckStatus::Accepted,
            };
            (r.report_id.clone(), status)
        })
        .collect();
    assert_eq!(statuses(&acks), expected, "one ack per report, in order");
    assert_eq!(acks.acks[7].reason, "carriage_sequence: 40 > 32");
    assert!(acks.acks[0].contributions >= 1, "the nudge is there too");

    // An empty batch gets an empty answer; a batch over the limit is refused
    // report by report, and the stream goes on.
    stream.send(Vec::new()).await;
    assert!(stream.next().await.unwrap().acks.is_empty());
    let oversized: Vec<CrowdingReport> = (0..501).map(|i| good(&format!("o-{i}"))).collect();
    stream.send(oversized).await;
    let refused = stream.next().await.unwrap();
    assert_eq!(refused.acks.len(), 501);
    for ack in &refused.acks {
        assert_eq!(AckStatus::try_from(ack.status), Ok(AckStatus::Rejected));
        assert_eq!(
            ack.reason,
            "reports: 501 in one batch, at most 500; send them in smaller batches"
        );
    }
    stream.send(vec![good("after")]).await;
    assert_eq!(
        statuses(&stream.next().await.unwrap()),
        [("after".to_owned(), AckStatus::Accepted)]
    );

    let mut accepted: Vec<String> = expected
        .into_iter()
        .filter(|(_, s)| *s == AckStatus::Accepted)
        .map(|(id, _)| id)
        .chain(["after".to_owned()])
        .collect();
    accepted.sort();
    let layout = Layout::new(server.config.partitions);
    assert_eq!(stored_report_ids(&redis.url(), layout).await, accepted);
    drop(stream);
    server.stop().await;
}

/// Resends `reports` one by one until Redis takes them, and returns their
/// statuses: a report whose write failed must not come back DUPLICATE.
async fn resend(
    client: &mut ReportServiceClient<Channel>,
    reports: &[CrowdingReport],
) -> Vec<AckStatus> {
    let deadline = Instant::now() + WAIT;
    let mut statuses = Vec::new();
    for report in reports {
        loop {
            match client.submit_report(report.clone()).await {
                Ok(ack) => {
                    statuses.push(AckStatus::try_from(ack.into_inner().status).unwrap());
                    break;
                }
                Err(e) if Instant::now() < deadline => {
                    assert_eq!(e.code(), tonic::Code::Unavailable, "{e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(e) => panic!("still failing after Redis came back: {e}"),
            }
        }
    }
    statuses
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_failure_leaves_every_unacknowledged_report_free_to_resend() {
    let mut redis = RedisServer::start();
    let server = TestServer::start(&redis.url()).await;
    let mut client = server.reports().await;
    // From many devices, so that the resends stay within each one's rate.
    let report = |id: String, i: usize| CrowdingReport {
        device_id: format!("device-{i}"),
        ..good(&id)
    };
    let batch: Vec<CrowdingReport> = (0..20).map(|i| report(format!("f-{i}"), i)).collect();
    let single: Vec<CrowdingReport> = (20..40).map(|i| report(format!("s-{i}"), i)).collect();

    redis.kill();
    // A batch: at most some of its acks, then UNAVAILABLE.
    let mut stream = BatchStream::open(&mut client).await;
    stream.send(batch.clone()).await;
    let mut acked = 0;
    let err = loop {
        match stream.next().await {
            Ok(acks) => acked += acks.acks.len(),
            Err(err) => break err,
        }
    };
    assert_eq!(err.code(), tonic::Code::Unavailable, "{err}");
    assert_eq!(acked, 0, "nothing was stored");
    // A report stream with many reports in flight: UNAVAILABLE at the first.
    let (tx, rx) = mpsc::channel(single.len());
    let mut acks = client
        .stream_reports(ReceiverStream::new(rx))
        .await
        .unwrap()
        .into_inner();
    for report in &single {
        tx.send(report.clone()).await.unwrap();
    }
    let err = tokio::time::timeout(WAIT, acks.message())
        .await
        .expect("no answer in time")
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unavailable, "{err}");

    redis.restart().unwrap();
    server.wait_for_health(ServingStatus::Serving).await;
    let everything: Vec<CrowdingReport> = batch.iter().chain(&single).cloned().collect();
    let statuses = resend(&mut client, &everything).await;
    // DUPLICATE says "stored already": a write still queued when Redis
    // went away may have gone through once it came back. What must never
    // be is a DUPLICATE for a report that is not stored.
    let layout = Layout::new(server.config.partitions);
    let stored = stored_report_ids(&redis.url(), layout).await;
    for (report, status) in everything.iter().zip(&statuses) {
        assert!(
            matches!(status, AckStatus::Accepted | AckStatus::Duplicate),
            "{}: {status:?}",
            report.report_id
        );
        assert!(
            stored.binary_search(&report.report_id).is_ok(),
            "{} answered {status:?} on resend but not stored",
            report.report_id
        );
    }
    server.stop().await;
}
