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
//! An ACCEPTED ack also carries the nudge: how many riders are looking at
//! the train ([`Audience`]) and the device's running count of accepted
//! reports ([`Contributions`]), which never holds an ack up for long
//! ([`NUDGE_WAIT`]) nor fails it.

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
    AckStatus, CrowdingReport, GetContributionsRequest, GetContributionsResponse, ReportAck,
};
use crowd_proto::validate::{Limits, validate_report};

use crate::acks::{self, AckBatch, AckSender, AckStream};
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

    /// Serves one report stream until the client closes it, a store error
    /// ends it, or shutdown drains it.
    async fn pump(
        self: Arc<Self>,
        mut inbound: Streaming<CrowdingReport>,
        reporter: Option<SocketAddr>,
        tx: AckSender,
    ) {
        let mut pending = FuturesOrdered::new();
        let mut reading = true;
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
                batch = ready_acks(&mut pending), if !pending.is_empty() => {
                    let failed = batch.last().is_some_and(Result::is_err);
                    if tx.send(batch).await.is_err() || failed {
                        return;
                    }
                    // Waiting for our acks is not the client's silence.
                    if let Some(idle) = idle {
                        silence.as_mut().reset(tokio::time::Instant::now() + idle);
                    }
                }
                message = inbound.message(), if reading && pending.len() < self.config.max_inflight => {
                    match message {
                        Ok(Some(raw)) => {
                            if let Some(idle) = idle {
                                silence.as_mut().reset(tokio::time::Instant::now() + idle);
                            }
                            let admission = self.admit(&raw, reporter);
                            let this = self.clone();
                            pending.push_back(async move { this.settle(admission).await });
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
                _ = tx.closed() => return,
            }
        }
        if let Some(status) = end {
            let _ = tx.send(vec![Err(status)]).await;
        }
    }
}

/// Every ack at the head of `pending` that is ready now, in order, up to and
/// including the first error (which ends the stream); waits for the first.
async fn ready_acks<F>(pending: &mut FuturesOrdered<F>) -> AckBatch
where
    F: Future<Output = Result<ReportAck, Status>>,
{
    std::future::poll_fn(|cx| {
        let mut batch = AckBatch::new();
        while let Poll::Ready(Some(result)) = pending.poll_next_unpin(cx) {
            let failed = result.is_err();
            batch.push(result);
            if failed {
                break;
            }
        }
        if batch.is_empty() {
            Poll::Pending
        } else {
            Poll::Ready(batch)
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

#[tonic::async_trait]
impl ReportService for Ingest {
    type StreamReportsStream = Held<AckStream>;

    async fn stream_reports(
        &self,
        request: Request<Streaming<CrowdingReport>>,
    ) -> Result<Response<Self::StreamReportsStream>, Status> {
        if self.inner.shutdown.is_cancelled() {
            return Err(StoreError::ShuttingDown.into());
        }
        let place = self.inner.config.open_streams.open()?;
        let (tx, rx) = acks::channel();
        let reporter = request.remote_addr();
        tokio::spawn(self.inner.clone().pump(request.into_inner(), reporter, tx));
        Ok(Response::new(place.hold(rx)))
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
