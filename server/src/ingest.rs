//! `ReportService`: reports in, acks out.
//!
//! Each report is validated once, checked against the recent-id memory, and
//! handed to the group-commit writer; its ACCEPTED ack leaves only after Redis
//! confirmed the append. On a stream, acks leave in arrival order while many
//! reports are in flight; a bad report gets REJECTED and the stream goes on,
//! while a store failure ends the stream with UNAVAILABLE (or
//! RESOURCE_EXHAUSTED when overloaded) so that the client retries what is
//! still unacknowledged. A stream silent for too long is ended with
//! DEADLINE_EXCEEDED.
//!
//! `StreamReportBatches` carries the same reports several to a message (a
//! phone's backlog after a tunnel, or a relay), answered by one ack message
//! per batch: the per-message cost (HTTP/2 and gRPC framing, one ack
//! message per report) is most of the server's cost per report, and a
//! batch pays it once. Each report of a batch is still judged on its own.
//! Whatever ends a stream, the reports still being written are settled, so
//! that one whose write failed is forgotten and its resend is stored, not
//! answered DUPLICATE.
//!
//! An ACCEPTED ack also carries the nudge: how many riders are looking at
//! the train ([`Audience`]) and the device's running count of accepted
//! reports ([`Contributions`]), which never holds an ack up for long
//! ([`NUDGE_WAIT`]) nor fails it.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::Arc;
use std::task::Poll;
use std::time::{Duration, Instant};

use chrono::Utc;
use futures::StreamExt;
use futures::stream::FuturesOrdered;
use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status, Streaming};

use crowd_proto::codec;
use crowd_proto::domain::{DeviceHasher, TripKey};
use crowd_proto::layout::Layout;
use crowd_proto::pb::v1::report_service_server::ReportService;
use crowd_proto::pb::v1::{
    AckStatus, CrowdingReport, CrowdingReportBatch, GetContributionsRequest,
    GetContributionsResponse, ReportAck, ReportAckBatch,
};
use crowd_proto::validate::{Limits, validate_report};

use crate::acks::{self, AckBatch, AckItem, AckSender, AckStream};
use crate::audience::Audience;
use crate::contributions::{self, Contributions};
use crate::dedup::RecentIds;
use crate::error::StoreError;
use crate::open_streams::{Held, OpenStreams};
use crate::ratelimit::DeviceLimiter;
use crate::rejects::RejectCounts;
use crate::schedule::Schedule;
use crate::writer::{WriteQueue, WriteResult};

/// Settings of the ingest service.
#[derive(Debug, Clone)]
pub struct IngestConfig {
    /// Bounds every report must respect.
    pub limits: Limits,
    /// Partitioning and stream names.
    pub layout: Layout,
    /// Keyed hash replacing device ids before they are stored.
    pub devices: DeviceHasher,
    /// Longest wait for a report's write outcome (queue wait + pipeline).
    pub ack_timeout: Duration,
    /// Reports of one stream awaiting their ack before reading pauses.
    pub max_inflight: usize,
    /// A stream that sends nothing for this long is ended; `None`: never.
    pub stream_idle: Option<Duration>,
    /// Capacity of the recent report-id memory.
    pub dedup_capacity: usize,
    /// Sustained reports per minute per device; 0 = unlimited.
    pub device_rate_per_min: u32,
    /// Reports per device at once.
    pub device_burst: u32,
    /// Counts of what was refused, shared with the operator service.
    pub rejects: RejectCounts,
    /// The GTFS schedule, when one is loaded: fills in missing route ids and,
    /// in strict mode, refuses trips it does not list.
    pub schedule: Option<Arc<Schedule>>,
    /// Refuse reports for trips that are not in the schedule.
    pub strict_trips: bool,
    /// Who is looking at which train: `helping_riders` of ACCEPTED acks.
    pub audience: Audience,
    /// Each device's running count of accepted reports, in Redis.
    pub contributions: Contributions,
    /// The server-wide cap on open streams, shared with watches.
    pub open_streams: OpenStreams,
}

/// Longest an ACCEPTED ack waits for the device's count once its report is
/// stored: the count is sent at the same time as the report and is normally
/// there first; past this the ack says 0 (the count still happens).
pub const NUDGE_WAIT: Duration = Duration::from_millis(50);

/// Reports in one `CrowdingReportBatch` at most: a batch is admitted at
/// once, so this bounds the work and the memory one message brings.
pub const MAX_BATCH_REPORTS: usize = 500;

/// Most devices whose rate is tracked at once.
const MAX_TRACKED_DEVICES: usize = 1_000_000;

/// The `ReportService` implementation.
#[derive(Debug, Clone)]
pub struct Ingest {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    config: IngestConfig,
    queue: WriteQueue,
    recent: RecentIds,
    /// Name of each partition's reports stream, made once.
    streams: Vec<Arc<str>>,
    /// Per-report metrics, looked up once: a lookup by name for every
    /// report shows in profiles.
    accepted: metrics::Counter,
    ack_seconds: metrics::Histogram,
    /// `None` when device rates are not limited.
    limiter: Option<DeviceLimiter>,
    /// Fires on server shutdown: streams stop reading and drain their acks.
    shutdown: CancellationToken,
}

/// What became of one report on arrival.
enum Admission {
    /// Answered at once (REJECTED or DUPLICATE).
    Ready(ReportAck),
    /// Being written; the ack waits for the writer.
    Writing {
        report_id: String,
        done: oneshot::Receiver<WriteResult>,
        arrived: Instant,
        nudge: Nudge,
    },
    /// Could not even be queued.
    Failed {
        report_id: String,
        error: StoreError,
    },
}

/// What an ACCEPTED ack needs to tell the rider about their report.
struct Nudge {
    /// The reported train and its route (may be empty).
    trip: TripKey,
    route_id: String,
    /// The device's keyed hash, to take its count back if the write fails.
    device: u64,
    /// The device's running total, once counted; `None`: not counted.
    counted: Option<oneshot::Receiver<u64>>,
    /// The connection that sent the report: not one of its own audience.
    reporter: Option<SocketAddr>,
}

impl Ingest {
    /// The service writing through `queue`; `shutdown` drains its streams.
    pub fn new(config: IngestConfig, queue: WriteQueue, shutdown: CancellationToken) -> Ingest {
        let recent = RecentIds::new(config.dedup_capacity);
        let limiter = (config.device_rate_per_min > 0).then(|| {
            DeviceLimiter::new(
                config.device_rate_per_min,
                config.device_burst,
                MAX_TRACKED_DEVICES,
            )
        });
        let layout = &config.layout;
        let streams = (0..layout.partitions())
            .map(|k| Arc::from(layout.reports(k)))
            .collect();
        Ingest {
            inner: Arc::new(Inner {
                config,
                queue,
                recent,
                streams,
                accepted: metrics::counter!("crowd_server_reports_accepted_total"),
                ack_seconds: metrics::histogram!("crowd_server_ack_seconds"),
                limiter,
                shutdown,
            }),
        }
    }
}

impl Inner {
    /// Validates, deduplicates, rate-limits and queues one report that
    /// arrived over the connection `reporter`.
    fn admit(&self, raw: &CrowdingReport, reporter: Option<SocketAddr>) -> Admission {
        let arrived = Instant::now();
        let now = Utc::now();
        let mut report = match validate_report(raw, &self.config.limits, &self.config.devices, now)
        {
            Ok(report) => report,
            Err(err) => {
                self.config.rejects.rejected(err.metric_label());
                return Admission::Ready(ack(&raw.report_id, AckStatus::Rejected, err.to_string()));
            }
        };
        if let Some(schedule) = &self.config.schedule {
            match schedule.route_of(&report.trip.trip_id) {
                Some(route) if report.route_id.is_empty() => report.route_id = route.to_owned(),
                Some(_) => {}
                None if self.config.strict_trips => {
                    self.config.rejects.rejected("unknown_trip");
                    let reason = format!(
                        "trip.trip_id: `{}` is not in the GTFS schedule",
                        report.trip.trip_id
                    );
                    return Admission::Ready(ack(&report.report_id, AckStatus::Rejected, reason));
                }
                None => {}
            }
        }
        if !self.recent.claim(&report.report_id) {
            self.config.rejects.duplicate();
            return Admission::Ready(ack(&report.report_id, AckStatus::Duplicate, String::new()));
        }
        // After the duplicate check, so that retries of taken reports cost
        // no token; a refused report is forgotten, to be sent again later.
        if let Some(limiter) = &self.limiter
            && !limiter.allow(report.device, arrived)
        {
            self.recent.release(&report.report_id);
            self.config.rejects.rejected("rate_limit");
            let reason = format!(
                "device_id: more than {} reports per minute; slow down",
                self.config.device_rate_per_min
            );
            return Admission::Ready(ack(&report.report_id, AckStatus::Rejected, reason));
        }
        let partition = self.config.layout.partition_of(&report.trip);
        let stream = self.streams[usize::from(partition)].clone();
        match self
            .queue
            .submit(stream, codec::encode_report(&report, now))
        {
            Ok(done) => Admission::Writing {
                report_id: report.report_id,
                done,
                arrived,
                nudge: Nudge {
                    counted: self.config.contributions.count(report.device),
                    trip: report.trip,
                    route_id: report.route_id,
                    device: report.device,
                    reporter,
                },
            },
            Err(error) => {
                self.recent.release(&report.report_id);
                Admission::Failed {
                    report_id: report.report_id,
                    error,
                }
            }
        }
    }

    /// Waits for the outcome of an admitted report.
    async fn settle(&self, admission: Admission) -> Result<ReportAck, Status> {
        let (report_id, done, arrived, nudge) = match admission {
            Admission::Ready(ack) => return Ok(ack),
            Admission::Failed { report_id, error } => {
                tracing::debug!(%report_id, %error, "report not queued");
                return Err(error.into());
            }
            Admission::Writing {
                report_id,
                done,
                arrived,
                nudge,
            } => (report_id, done, arrived, nudge),
        };
        let outcome = match tokio::time::timeout(self.config.ack_timeout, done).await {
            Ok(Ok(result)) => result,
            Ok(Err(_)) => Err(StoreError::ShuttingDown),
            Err(_) => Err(StoreError::Timeout {
                op: "XADD",
                ms: self.config.ack_timeout.as_millis(),
            }),
        };
        match outcome {
            Ok(()) => {
                self.accepted.increment(1);
                let contributions = match nudge.counted {
                    Some(total) => match tokio::time::timeout(NUDGE_WAIT, total).await {
                        Ok(Ok(total)) => total,
                        _ => 0,
                    },
                    None => 0,
                };
                let helping_riders = self.config.audience.helping(
                    &nudge.trip,
                    &nudge.route_id,
                    nudge.reporter,
                    Instant::now(),
                );
                self.ack_seconds.record(arrived.elapsed().as_secs_f64());
                Ok(ReportAck {
                    helping_riders,
                    contributions,
                    ..ack(&report_id, AckStatus::Accepted, String::new())
                })
            }
            Err(error) => {
                self.recent.release(&report_id);
                if let Some(total) = nudge.counted {
                    // Not stored: take the count back once it is made.
                    let counter = self.config.contributions.clone();
                    tokio::spawn(async move {
                        if total.await.is_ok() {
                            counter.uncount(nudge.device);
                        }
                    });
                }
                metrics::counter!("crowd_server_reports_failed_total").increment(1);
                Err(error.into())
            }
        }
    }

    /// Admits every report of a batch at once and settles them in order:
    /// one ack message for the batch, or, when a write fails, one with the
    /// acks before the failure, then the failure (which ends the stream).
    /// Every report is settled even then, so that failed ones are forgotten
    /// and can be sent again.
    fn admit_batch(
        self: &Arc<Self>,
        batch: CrowdingReportBatch,
        reporter: Option<SocketAddr>,
    ) -> impl Future<Output = AckBatch<ReportAckBatch>> + Send + use<> {
        let reports = batch.reports;
        let admissions: Result<Vec<Admission>, ReportAckBatch> = if reports.len()
            > MAX_BATCH_REPORTS
        {
            let reason = format!(
                "reports: {} in one batch, at most {MAX_BATCH_REPORTS}; send them in smaller batches",
                reports.len()
            );
            let acks = reports
                .iter()
                .map(|r| {
                    self.config.rejects.rejected("batch_too_large");
                    ack(&r.report_id, AckStatus::Rejected, reason.clone())
                })
                .collect();
            Err(ReportAckBatch { acks })
        } else {
            Ok(reports.iter().map(|r| self.admit(r, reporter)).collect())
        };
        let this = self.clone();
        async move {
            let admissions = match admissions {
                Ok(admissions) => admissions,
                Err(rejected) => return vec![Ok(rejected)],
            };
            let mut acks = Vec::with_capacity(admissions.len());
            let mut failure = None;
            for admission in admissions {
                match this.settle(admission).await {
                    Ok(ack) if failure.is_none() => acks.push(ack),
                    Ok(_) => {}
                    Err(status) => {
                        failure.get_or_insert(status);
                    }
                }
            }
            match failure {
                Some(status) if acks.is_empty() => vec![Err(status)],
                Some(status) => vec![Ok(ReportAckBatch { acks }), Err(status)],
                None => vec![Ok(ReportAckBatch { acks })],
            }
        }
    }

    /// Serves one report stream until the client closes it, a store error
    /// ends it, or shutdown drains it. `admit` turns each request message
    /// into the number of reports it holds and the future of its response
    /// messages; at most `max_inflight` reports await their acks at once.
    async fn pump<M, T, F, I>(
        self: Arc<Self>,
        mut inbound: Streaming<M>,
        tx: AckSender<T>,
        admit: impl Fn(&Arc<Self>, M) -> (usize, F),
    ) where
        M: prost::Message + Default + Send + 'static,
        T: Send + 'static,
        F: Future<Output = I> + Send + 'static,
        I: IntoIterator<Item = AckItem<T>> + Send + 'static,
    {
        let mut pending = FuturesOrdered::new();
        // Reports of each pending message, oldest first, and their sum.
        let mut sizes = VecDeque::new();
        let mut in_flight = 0;
        let mut reading = true;
        // The stream failed, or its client went away: nothing more to say.
        let mut over = false;
        // How the stream ends once the pending acks are out; `None` = OK.
        let mut end: Option<Status> = None;
        let idle = self.config.stream_idle;
        let far = Duration::from_secs(365 * 24 * 3600);
        let silence = tokio::time::sleep(idle.unwrap_or(far));
        tokio::pin!(silence);
        loop {
            if !reading && pending.is_empty() {
                break;
            }
            tokio::select! {
                biased;
                (done, batch) = ready_acks(&mut pending), if !pending.is_empty() => {
                    in_flight -= sizes.drain(..done).sum::<usize>();
                    let failed = batch.last().is_some_and(Result::is_err);
                    if tx.send(batch).await.is_err() || failed {
                        over = true;
                        break;
                    }
                    // Waiting for our acks is not the client's silence.
                    if let Some(idle) = idle {
                        silence.as_mut().reset(tokio::time::Instant::now() + idle);
                    }
                }
                message = inbound.message(), if reading && in_flight < self.config.max_inflight => {
                    match message {
                        Ok(Some(raw)) => {
                            if let Some(idle) = idle {
                                silence.as_mut().reset(tokio::time::Instant::now() + idle);
                            }
                            let (reports, acks) = admit(&self, raw);
                            sizes.push_back(reports);
                            in_flight += reports;
                            pending.push_back(acks);
                        }
                        Ok(None) => reading = false,
                        Err(status) => {
                            // E.g. an oversized message: say so after the
                            // acks already owed.
                            tracing::debug!(%status, "report stream broke");
                            reading = false;
                            end = Some(status);
                        }
                    }
                }
                () = &mut silence, if reading && idle.is_some() => {
                    reading = false;
                    end = Some(Status::deadline_exceeded(format!(
                        "no report for {} s; open a new stream when there is one to send",
                        idle.unwrap_or_default().as_secs()
                    )));
                }
                _ = self.shutdown.cancelled(), if reading => {
                    reading = false;
                    end = Some(Status::unavailable(
                        "server shutting down; resend unacknowledged reports",
                    ));
                }
                _ = tx.closed() => {
                    over = true;
                    break;
                }
            }
        }
        if !pending.is_empty() {
            // The stream ended with reports still being written: settle
            // them anyway, so that a failed one is forgotten and its resend
            // on another stream is not taken for a duplicate.
            tokio::spawn(async move { pending.for_each(|_| async {}).await });
        }
        if let (false, Some(status)) = (over, end) {
            let _ = tx.send(vec![Err(status)]).await;
        }
    }
}

/// Every response at the head of `pending` that is ready now, in order, up
/// to and including the first error (which ends the stream), with the
/// number of messages they answer; waits for the first.
async fn ready_acks<F, T>(pending: &mut FuturesOrdered<F>) -> (usize, AckBatch<T>)
where
    F: Future<Output: IntoIterator<Item = AckItem<T>>>,
{
    std::future::poll_fn(|cx| {
        let mut batch = AckBatch::new();
        let mut done = 0;
        while let Poll::Ready(Some(items)) = pending.poll_next_unpin(cx) {
            done += 1;
            batch.extend(items);
            if batch.last().is_some_and(Result::is_err) {
                break;
            }
        }
        if done == 0 {
            Poll::Pending
        } else {
            Poll::Ready((done, batch))
        }
    })
    .await
}

fn ack(report_id: &str, status: AckStatus, reason: String) -> ReportAck {
    ReportAck {
        report_id: report_id.to_owned(),
        status: status as i32,
        reason,
        helping_riders: 0,
        contributions: 0,
    }
}

impl Ingest {
    /// Opens a report stream under the open-stream cap and starts its pump
    /// (see [`Inner::pump`] for `admit`).
    fn open_stream<M, T, F, I>(
        &self,
        request: Request<Streaming<M>>,
        admit: impl Fn(&Arc<Inner>, M, Option<SocketAddr>) -> (usize, F) + Send + 'static,
    ) -> Result<Response<Held<AckStream<T>>>, Status>
    where
        M: prost::Message + Default + Send + 'static,
        T: Send + 'static,
        F: Future<Output = I> + Send + 'static,
        I: IntoIterator<Item = AckItem<T>> + Send + 'static,
    {
        if self.inner.shutdown.is_cancelled() {
            return Err(StoreError::ShuttingDown.into());
        }
        let place = self.inner.config.open_streams.open()?;
        let (tx, rx) = acks::channel();
        let reporter = request.remote_addr();
        let pump = self
            .inner
            .clone()
            .pump(request.into_inner(), tx, move |inner, message| {
                admit(inner, message, reporter)
            });
        tokio::spawn(pump);
        Ok(Response::new(place.hold(rx)))
    }
}

#[tonic::async_trait]
impl ReportService for Ingest {
    type StreamReportsStream = Held<AckStream>;

    async fn stream_reports(
        &self,
        request: Request<Streaming<CrowdingReport>>,
    ) -> Result<Response<Self::StreamReportsStream>, Status> {
        self.open_stream(request, |inner, raw, reporter| {
            let admission = inner.admit(&raw, reporter);
            let inner = inner.clone();
            (
                1,
                async move { std::iter::once(inner.settle(admission).await) },
            )
        })
    }

    type StreamReportBatchesStream = Held<AckStream<ReportAckBatch>>;

    async fn stream_report_batches(
        &self,
        request: Request<Streaming<CrowdingReportBatch>>,
    ) -> Result<Response<Self::StreamReportBatchesStream>, Status> {
        self.open_stream(request, |inner, batch, reporter| {
            (batch.reports.len(), inner.admit_batch(batch, reporter))
        })
    }

    async fn submit_report(
        &self,
        request: Request<CrowdingReport>,
    ) -> Result<Response<ReportAck>, Status> {
        let admission = self.inner.admit(request.get_ref(), request.remote_addr());
        self.inner.settle(admission).await.map(Response::new)
    }

    async fn get_contributions(
        &self,
        request: Request<GetContributionsRequest>,
    ) -> Result<Response<GetContributionsResponse>, Status> {
        let device_id = &request.get_ref().device_id;
        contributions::check_device_id(device_id).map_err(Status::invalid_argument)?;
        let device = self.inner.config.devices.hash(device_id);
        let contributions = self.inner.config.contributions.get(device).await?;
        Ok(Response::new(GetContributionsResponse { contributions }))
    }
}
