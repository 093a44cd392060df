//! One long-lived report stream per simulated client: `StreamReports` (one
//! report per message), or `StreamReportBatches` with `--batch` above 1.
//!
//! A stream task forwards the reports the generator hands it and matches the
//! acks coming back (one per report, in order) against the reports in
//! flight, recording ack latency from each report's *intended* send time. A
//! failed call is counted by gRPC code, its reports in flight are counted as
//! unacknowledged, and the stream is reopened: one bad stream must not end
//! the run.
//!
//! # Why batches
//!
//! On a firehose (a relay, or a client forwarding many riders' reports over
//! a few streams) the server's cost per report is dominated not by judging
//! and storing it but by the message around it: an HTTP/2 DATA frame, gRPC
//! framing and a decode per report in, and one `ReportAck` message (another
//! frame, another encode, another wake-up of the response task) per report
//! out. `StreamReportBatches` pays those once per batch. The driver does not
//! hold reports back to fill a batch: a stream sends whatever is queued when
//! it gets to run, up to `--batch` reports ([`next_batch`]), so an open-loop
//! schedule still sends each report when it is due and batches form only
//! when several reports are due at once. Both RPCs go through one task
//! (`open` turns either into batches out and ack batches in), so the
//! bookkeeping per report (latency, freshness, status, unacked) is the same
//! whichever RPC carries it.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use crowd_proto::pb::v1::report_service_client::ReportServiceClient;
use crowd_proto::pb::v1::{AckStatus, CrowdingReport, CrowdingReportBatch, ReportAck};
use futures::StreamExt;
use futures::stream::BoxStream;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_stream::wrappers::UnboundedReceiverStream;
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;

use super::stats::{Stats, code_name};
use super::watchers::{Freshness, Note};

/// Pause before reopening a failed stream, so a server that is down is not
/// hammered by thousands of reconnecting streams.
const REOPEN_BACKOFF: Duration = Duration::from_millis(200);

/// How long a finished stream waits for the server to close its side.
const CLOSE_GRACE: Duration = Duration::from_secs(1);

/// Most reports in one `CrowdingReportBatch` the server takes: a larger
/// batch has every report rejected.
pub const MAX_BATCH: usize = 500;

/// A report and the moment the schedule meant it to be sent.
#[derive(Debug)]
pub struct Outgoing {
    pub report: CrowdingReport,
    pub intended: Instant,
    /// Its freshness note, when its train is watched: withdrawn if the
    /// report is not accepted, since no update will ever count it.
    pub note: Option<Note>,
}

/// A report sent on the current call, waiting for its ack.
#[derive(Debug)]
struct InFlight {
    report_id: String,
    intended: Instant,
    note: Option<Note>,
}

/// Starts a stream task. It ends when `input` is closed and every report is
/// acknowledged, or when `stop` fires: reports in flight or still queued
/// then count as unacked, so `sent` always equals acks plus unacked.
///
/// `ready` fires once the first call is open, so the run can start its
/// clock only when every stream can take reports.
///
/// `batching` says how reports are packed into messages (see the module's
/// documentation).
pub fn spawn(
    channel: Channel,
    batching: Batching,
    input: mpsc::UnboundedReceiver<Outgoing>,
    ready: oneshot::Sender<()>,
    freshness: Arc<Freshness>,
    stats: Arc<Stats>,
    stop: CancellationToken,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut stream = StreamTask {
            client: ReportServiceClient::new(channel),
            batching,
            gathering: Gathering::default(),
            input,
            input_open: true,
            pending: VecDeque::new(),
            ready: Some(ready),
            freshness,
            stats,
        };
        stop.run_until_cancelled(stream.run()).await;
        stream.give_up();
        // Reports still queued for a call that never came count as well.
        stream.input.close();
        while stream.input.try_recv().is_ok() {
            stream.stats.unacked.add(1);
        }
    })
}

/// What one stream task owns.
struct StreamTask {
    client: ReportServiceClient<Channel>,
    batching: Batching,
    /// The batch being gathered.
    gathering: Gathering<Outgoing>,
    input: mpsc::UnboundedReceiver<Outgoing>,
    /// False once the generator is done with this stream.
    input_open: bool,
    /// Reports sent on the current call and not yet acknowledged, oldest
    /// first.
    pending: VecDeque<InFlight>,
    /// Fired when the first call opens.
    ready: Option<oneshot::Sender<()>>,
    freshness: Arc<Freshness>,
    stats: Arc<Stats>,
}

impl StreamTask {
    async fn run(&mut self) {
        while self.input_open || !self.pending.is_empty() {
            if let Err(failure) = self.call().await {
                self.stats.stream_errors.add(&failure.category());
                self.give_up();
                tokio::time::sleep(REOPEN_BACKOFF).await;
            }
        }
    }

    /// One call, until the input is drained (`Ok`) or the call fails.
    async fn call(&mut self) -> Result<(), Failure> {
        let (requests, outbound) = mpsc::unbounded_channel();
        // Unbounded on purpose: the generator's pace is the load, and waiting
        // here while acks pile up could deadlock both directions of the call.
        let mut requests = Some(requests);
        let mut acks = open(&mut self.client, self.batching.most, outbound)
            .await
            .map_err(Failure::Status)?;
        if let Some(ready) = self.ready.take() {
            let _ = ready.send(());
        }
        loop {
            if !self.input_open && self.pending.is_empty() {
                // Half-close and let the server end the call cleanly.
                drop(requests.take());
                let _ = tokio::time::timeout(CLOSE_GRACE, acks.next()).await;
                return Ok(());
            }
            tokio::select! {
                next = next_batch(&mut self.input, &mut self.gathering, self.batching), if self.input_open => match next {
                    Some(batch) => {
                        let reports = batch
                            .into_iter()
                            .map(|out| {
                                self.pending.push_back(InFlight {
                                    report_id: out.report.report_id.clone(),
                                    intended: out.intended,
                                    note: out.note,
                                });
                                out.report
                            })
                            .collect();
                        self.stats.messages.add(1);
                        if let Some(requests) = &requests {
                            // The receiver lives in the call: a send error means
                            // the call is over and `acks` will say why.
                            let _ = requests.send(reports);
                        }
                    }
                    None => self.input_open = false,
                },
                acked = acks.next() => match acked {
                    Some(Ok(acked)) => {
                        for ack in acked {
                            self.on_ack(ack);
                        }
                    }
                    Some(Err(status)) => return Err(Failure::Status(status)),
                    None => return Err(Failure::Ended),
                },
            }
        }
    }

    fn on_ack(&mut self, ack: ReportAck) {
        let position = match self.pending.front() {
            Some(front) if front.report_id == ack.report_id => Some(0),
            _ => self
                .pending
                .iter()
                .position(|sent| sent.report_id == ack.report_id),
        };
        let Some(position) = position else {
            self.stats.out_of_order_acks.add(1);
            return;
        };
        if position > 0 {
            self.stats.out_of_order_acks.add(1);
        }
        let Some(sent) = self.pending.remove(position) else {
            return;
        };
        let latency = sent.intended.elapsed();
        self.stats.ack_latency.record(latency);
        self.stats.ack_latency_interval.record(latency);
        let status = AckStatus::try_from(ack.status);
        if status != Ok(AckStatus::Accepted)
            && let Some(note) = &sent.note
        {
            self.freshness.forget(note);
        }
        match status {
            Ok(AckStatus::Accepted) => self.stats.accepted.add(1),
            Ok(AckStatus::Duplicate) => self.stats.duplicate.add(1),
            Ok(AckStatus::Rejected) => {
                self.stats.rejected.add(1);
                self.stats.reject_reasons.add(&reason_category(&ack.reason));
            }
            _ => {
                self.stats.rejected.add(1);
                self.stats.reject_reasons.add("(unspecified ack status)");
            }
        }
    }

    /// Counts every report in flight as never acknowledged.
    fn give_up(&mut self) {
        self.stats.unacked.add(self.pending.len() as u64);
        self.pending.clear();
    }
}

/// The acks of one call, a message's worth at a time: one ack on
/// `StreamReports`, a batch's on `StreamReportBatches`.
type Acks = BoxStream<'static, Result<Vec<ReportAck>, tonic::Status>>;

/// Opens a call that takes the reports of `outbound` (each message sent at
/// once, as one `CrowdingReportBatch` when `batch` > 1, else report by
/// report on `StreamReports`) and returns its acks.
async fn open(
    client: &mut ReportServiceClient<Channel>,
    batch: usize,
    outbound: mpsc::UnboundedReceiver<Vec<CrowdingReport>>,
) -> Result<Acks, tonic::Status> {
    let outbound = UnboundedReceiverStream::new(outbound);
    if batch > 1 {
        let requests = outbound.map(|reports| CrowdingReportBatch { reports });
        let acks = client.stream_report_batches(requests).await?.into_inner();
        Ok(acks.map(|acked| acked.map(|batch| batch.acks)).boxed())
    } else {
        let requests = outbound.flat_map(futures::stream::iter);
        let acks = client.stream_reports(requests).await?.into_inner();
        Ok(acks.map(|acked| acked.map(|ack| vec![ack])).boxed())
    }
}

/// How a stream packs reports into messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Batching {
    /// Most reports per message: 1 means `StreamReports`, more
    /// `StreamReportBatches`.
    pub most: usize,
    /// How long a batch waits after its first report for more (0: it takes
    /// what is queued and leaves).
    pub linger: Duration,
}

/// A batch being gathered: kept outside [`next_batch`]'s future so that
/// nothing gathered is lost when the wait is cancelled (by an ack arriving).
#[derive(Debug)]
pub struct Gathering<T> {
    reports: Vec<T>,
    /// When the batch leaves, however full: `linger` after its first report.
    until: Option<Instant>,
}

impl<T> Default for Gathering<T> {
    fn default() -> Self {
        Gathering {
            reports: Vec::new(),
            until: None,
        }
    }
}

/// Waits for the next report, then takes whatever else is queued, `max` at
/// most, waiting up to `linger` after the first report for more (0: not at
/// all, so a batch never delays a report). `None` once `input` is closed
/// and nothing is gathered. Cancel-safe: what was gathered stays in
/// `gathering` for the next call.
pub async fn next_batch<T>(
    input: &mut mpsc::UnboundedReceiver<T>,
    gathering: &mut Gathering<T>,
    batching: Batching,
) -> Option<Vec<T>> {
    let Batching { most: max, linger } = batching;
    let max = max.max(1);
    while gathering.reports.len() < max {
        let room = max - gathering.reports.len();
        match gathering.until {
            None => {
                if input.recv_many(&mut gathering.reports, room).await == 0 {
                    return None;
                }
                if linger.is_zero() {
                    break;
                }
                gathering.until = Some(Instant::now() + linger);
            }
            Some(until) => {
                let more = input.recv_many(&mut gathering.reports, room);
                match tokio::time::timeout_at(until, more).await {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {}
                }
            }
        }
    }
    gathering.until = None;
    Some(std::mem::take(&mut gathering.reports))
}

/// Why a call ended before the driver was done with it.
#[derive(Debug)]
enum Failure {
    /// The call failed with a gRPC status.
    Status(tonic::Status),
    /// The server closed the stream cleanly while the driver still had
    /// reports to send or acks to wait for (e.g. the server shutting down).
    Ended,
}

impl Failure {
    /// The name it is counted under in the summary.
    fn category(&self) -> String {
        match self {
            Failure::Status(status) => code_name(status),
            Failure::Ended => "ended by server".to_owned(),
        }
    }
}

/// A reject reason with its numbers blanked (`"carriage_sequence: 40 > 32"`
/// → `"carriage_sequence: # > #"`), so that reasons group by cause, not by
/// value, and the summary stays short.
pub fn reason_category(reason: &str) -> String {
    let reason = reason.trim();
    if reason.is_empty() {
        return "(no reason)".to_owned();
    }
    let mut category = String::with_capacity(reason.len());
    let mut in_number = false;
    for c in reason.chars() {
        let digit = c.is_ascii_digit() || (in_number && c == '.');
        if !digit {
            category.push(c);
        } else if !in_number {
            category.push('#');
        }
        in_number = digit;
    }
    category
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reasons_group_by_cause_not_value() {
        assert_eq!(
            reason_category("carriage_sequence: 40 > 32"),
            "carriage_sequence: # > #"
        );
        assert_eq!(
            reason_category("observed_at: 3.5h in the past"),
            "observed_at: #h in the past"
        );
        assert_eq!(reason_category("rate limited"), "rate limited");
        assert_eq!(reason_category("  "), "(no reason)");
    }

    /// Batches of at most `most` reports that do not linger.
    fn at_once(most: usize) -> Batching {
        Batching {
            most,
            linger: Duration::ZERO,
        }
    }

    #[tokio::test]
    async fn a_batch_takes_what_is_queued_up_to_the_limit() {
        let (tx, mut rx) = mpsc::unbounded_channel();
        let mut g = Gathering::default();
        for i in 0..5 {
            tx.send(i).unwrap();
        }
        assert_eq!(
            next_batch(&mut rx, &mut g, at_once(2)).await,
            Some(vec![0, 1])
        );
        assert_eq!(
            next_batch(&mut rx, &mut g, at_once(2)).await,
            Some(vec![2, 3])
        );
        // One queued: sent alone, not held back to fill the batch.
        assert_eq!(
            next_batch(&mut rx, &mut g, at_once(64)).await,
            Some(vec![4])
        );
        tx.send(5).unwrap();
        assert_eq!(
            next_batch(&mut rx, &mut g, at_once(64)).await,
            Some(vec![5])
        );
        // A batch of 1 (and a nonsensical 0) is one report per message.
        tx.send(6).unwrap();
        tx.send(7).unwrap();
        assert_eq!(next_batch(&mut rx, &mut g, at_once(1)).await, Some(vec![6]));
        assert_eq!(next_batch(&mut rx, &mut g, at_once(0)).await, Some(vec![7]));
        drop(tx);
        assert_eq!(next_batch(&mut rx, &mut g, at_once(64)).await, None);
    }

    #[tokio::test]
    async fn a_batch_waits_for_the_first_report_only() {
        let (tx, mut rx) = mpsc::unbounded_channel();
        let mut g = Gathering::default();
        let sender = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(10)).await;
            tx.send(1).unwrap();
            tokio::time::sleep(Duration::from_millis(10)).await;
            tx.send(2).unwrap();
        });
        assert_eq!(
            next_batch(&mut rx, &mut g, at_once(64)).await,
            Some(vec![1])
        );
        assert_eq!(
            next_batch(&mut rx, &mut g, at_once(64)).await,
            Some(vec![2])
        );
        assert_eq!(next_batch(&mut rx, &mut g, at_once(64)).await, None);
        sender.await.unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn a_lingering_batch_waits_for_more_and_keeps_them_when_cancelled() {
        let (tx, mut rx) = mpsc::unbounded_channel();
        let mut g = Gathering::default();
        let linger = Duration::from_millis(5);
        let sender = tokio::spawn(async move {
            for i in 0..3 {
                tx.send(i).unwrap();
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
            tx.send(3).unwrap();
        });
        // Cancelled after 3 ms, with two gathered: they are kept.
        let waited = tokio::time::timeout(
            Duration::from_millis(3),
            next_batch(&mut rx, &mut g, Batching { most: 64, linger }),
        )
        .await;
        assert!(waited.is_err());
        assert_eq!(g.reports, [0, 1]);
        // The third comes within the 5 ms after the first; then it leaves.
        assert_eq!(
            next_batch(&mut rx, &mut g, Batching { most: 64, linger }).await,
            Some(vec![0, 1, 2])
        );
        // A full batch leaves at once.
        assert_eq!(
            next_batch(&mut rx, &mut g, Batching { most: 1, linger }).await,
            Some(vec![3])
        );
        sender.await.unwrap();
        assert_eq!(
            next_batch(&mut rx, &mut g, Batching { most: 64, linger }).await,
            None
        );
    }
}
