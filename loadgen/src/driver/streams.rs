//! One long-lived `StreamReports` call per simulated client.
//!
//! A stream task forwards the reports the generator hands it and matches the
//! acks coming back (one per report, in order) against the reports in
//! flight, recording ack latency from each report's *intended* send time. A
//! failed call is counted by gRPC code, its reports in flight are counted as
//! unacknowledged, and the stream is reopened: one bad stream must not end
//! the run.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use crowd_proto::pb::v1::report_service_client::ReportServiceClient;
use crowd_proto::pb::v1::{AckStatus, CrowdingReport, ReportAck};
use futures::StreamExt;
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
pub fn spawn(
    channel: Channel,
    input: mpsc::UnboundedReceiver<Outgoing>,
    ready: oneshot::Sender<()>,
    freshness: Arc<Freshness>,
    stats: Arc<Stats>,
    stop: CancellationToken,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut stream = StreamTask {
            client: ReportServiceClient::new(channel),
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

    /// One `StreamReports` call, until the input is drained (`Ok`) or the
    /// call fails.
    async fn call(&mut self) -> Result<(), Failure> {
        let (requests, outbound) = mpsc::unbounded_channel();
        // Unbounded on purpose: the generator's pace is the load, and waiting
        // here while acks pile up could deadlock both directions of the call.
        let mut requests = Some(requests);
        let mut acks = self
            .client
            .stream_reports(UnboundedReceiverStream::new(outbound))
            .await
            .map_err(Failure::Status)?
            .into_inner();
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
                next = self.input.recv(), if self.input_open => match next {
                    Some(out) => {
                        self.pending.push_back(InFlight {
                            report_id: out.report.report_id.clone(),
                            intended: out.intended,
                            note: out.note,
                        });
                        if let Some(requests) = &requests {
                            // The receiver lives in the call: a send error means
                            // the call is over and `acks` will say why.
                            let _ = requests.send(out.report);
                        }
                    }
                    None => self.input_open = false,
                },
                ack = acks.next() => match ack {
                    Some(Ok(ack)) => self.on_ack(ack),
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

/// Why a `StreamReports` call ended before the driver was done with it.
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
}
