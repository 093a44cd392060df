//! One scenario of a quality run: a fresh in-process stack, simulated
//! riders streaming reports through a compressed stretch of the day, and
//! accuracy rounds at fixed simulated minutes.
//!
//! Time is compressed by `speed`, and so is the aggregator's memory: its
//! half-life and window are divided by `speed`, so that a report fades over
//! the same stretch of *simulated* time as it would in service.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::Context;
use chrono::{NaiveDateTime, TimeDelta, Timelike, Utc};
use crowd_proto::domain::DeviceHasher;
use crowd_proto::level::Level;
use crowd_proto::pb::v1::occupancy_service_client::OccupancyServiceClient;
use crowd_proto::pb::v1::report_service_client::ReportServiceClient;
use crowd_proto::pb::v1::{AckStatus, GetOccupancyRequest, OccupancyEstimate, TripRef};
use tokio_stream::StreamExt;

use super::tally::{Tally, TargetTrace};
use crate::score::{ScoreOptions, score};
use crate::sim::{Network, Scenario, Simulation, TrainTruth};
use crate::stack::{Stack, StackOptions};

/// Half-life and window of the aggregator in service, in seconds (its
/// defaults: the run measures what is deployed).
pub(crate) const SERVICE_HALF_LIFE_SECS: f64 =
    crowd_aggregator::estimator::DEFAULT_HALF_LIFE_MS as f64 / 1000.0;
pub(crate) const SERVICE_WINDOW_SECS: f64 =
    crowd_aggregator::estimator::DEFAULT_WINDOW_MS as f64 / 1000.0;

/// The stack's device-hashing secret, set rather than inherited from the
/// environment: the warm-up must hash device ids as the server does.
const DEVICE_SECRET: &str = "quality-run";

/// How one scenario is played.
#[derive(Debug, Clone)]
pub struct Plan {
    pub scenario: Scenario,
    pub seed: u64,
    /// Simulated start and end of the scored stretch.
    pub from: NaiveDateTime,
    pub until: NaiveDateTime,
    /// Simulated minutes played before `from`, unscored: the service has
    /// been running all morning, so that its trains and the trains ahead
    /// on each stretch are known when scoring starts.
    pub lead_in_minutes: i64,
    /// Simulated seconds per real second.
    pub speed: f64,
    /// Reports per simulated minute, all riders together.
    pub reports_per_sim_minute: f64,
    /// Simulated minutes between accuracy rounds.
    pub score_every_minutes: i64,
    /// Least distinct reporters for an estimate to be compared.
    pub min_reporters: u32,
    /// Follow this train round by round (the swarm's target).
    pub follow: Option<TripRef>,
    /// Mornings the service saw before this one (see [`super::replay::warm_up`]).
    pub warm_up_days: u32,
}

impl Plan {
    /// When play starts: `from`, less the lead-in.
    pub fn start(&self) -> NaiveDateTime {
        self.from - TimeDelta::minutes(self.lead_in_minutes.max(0))
    }
}

/// What one scenario measured.
#[derive(Debug, Default)]
pub struct Played {
    /// Rounds with estimates backed by at least `min_reporters`.
    pub supported: Tally,
    /// Rounds with every estimate.
    pub all: Tally,
    /// The swarm's target, when the scenario has a swarm.
    pub target: Option<TripRef>,
    /// The followed train, round by round.
    pub trace: TargetTrace,
    /// Acks: accepted, rejected, duplicate.
    pub acks: (u64, u64, u64),
}

/// Acks by status, counted by the ack reader.
#[derive(Debug, Default)]
struct Acks {
    accepted: AtomicU64,
    rejected: AtomicU64,
    duplicate: AtomicU64,
}

/// Plays `plan` against a fresh stack and returns the rounds.
pub async fn play(plan: &Plan) -> anyhow::Result<Played> {
    let half_life = (SERVICE_HALF_LIFE_SECS / plan.speed).round().max(1.0) as u64;
    let window = (SERVICE_WINDOW_SECS / plan.speed).round().max(2.0) as u64;
    let stack = Stack::start(StackOptions {
        aggregator_args: vec![
            "--half-life-secs".into(),
            half_life.to_string(),
            "--window-secs".into(),
            window.to_string(),
        ],
        server_args: vec!["--device-secret".into(), DEVICE_SECRET.into()],
        ..StackOptions::default()
    })
    .await?;
    let result = async {
        remember_earlier_mornings(&stack, plan).await?;
        drive(&stack, plan).await
    }
    .await;
    stack.shutdown().await?;
    result
}

/// Gives the stack's aggregator what the service would know of its riders
/// after `plan.warm_up_days` mornings: the pure model learns it from a
/// replay of those mornings with the server's device hashing, and it is
/// written into the shared reputation scores before the first report. A
/// stacked warm-up would take as long as the morning itself again, and
/// what is kept, each device's score, is the model's either way.
async fn remember_earlier_mornings(stack: &Stack, plan: &Plan) -> anyhow::Result<()> {
    if plan.warm_up_days == 0 {
        return Ok(());
    }
    let hasher = DeviceHasher::new(DEVICE_SECRET);
    let learnt = super::replay::warm_up(plan, &hasher);
    let client = redis::Client::open(stack.redis_url()).context("redis url")?;
    let mut con = client
        .get_multiplexed_async_connection()
        .await
        .context("connecting to redis")?;
    crowd_aggregator::save_reputation(&mut con, &learnt)
        .await
        .context("saving the warm-up's reputation")?;
    Ok(())
}

async fn drive(stack: &Stack, plan: &Plan) -> anyhow::Result<Played> {
    let mut sim = Simulation::new(Network::sample(), plan.scenario.clone(), plan.seed);
    sim.advance_to(plan.start());

    let mut reports = ReportServiceClient::connect(stack.grpc_url()).await?;
    let mut occupancy = OccupancyServiceClient::connect(stack.grpc_url()).await?;
    let (tx, rx) = tokio::sync::mpsc::channel(4096);
    let mut ack_stream = reports
        .stream_reports(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await?
        .into_inner();
    let acks = Arc::new(Acks::default());
    let counting = acks.clone();
    let reader = tokio::spawn(async move {
        while let Some(Ok(ack)) = ack_stream.next().await {
            let counter = match ack.status() {
                AckStatus::Accepted => &counting.accepted,
                AckStatus::Duplicate => &counting.duplicate,
                _ => &counting.rejected,
            };
            counter.fetch_add(1, Ordering::Relaxed);
        }
    });

    let per_real_second = plan.reports_per_sim_minute * plan.speed / 60.0;
    let mut played = Played::default();
    let began = tokio::time::Instant::now();
    let mut tick = tokio::time::interval(Duration::from_millis(20));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last = began;
    let mut owed = 0.0;
    let mut next_round = plan.from + TimeDelta::minutes(plan.score_every_minutes.max(1));
    loop {
        tick.tick().await;
        let now = tokio::time::Instant::now();
        let sim_now = plan.start()
            + TimeDelta::milliseconds(
                (now.duration_since(began).as_secs_f64() * plan.speed * 1000.0) as i64,
            );
        if sim_now >= plan.until {
            break;
        }
        sim.advance_to(sim_now);
        owed += per_real_second * now.duration_since(last).as_secs_f64();
        last = now;
        while owed >= 1.0 {
            owed -= 1.0;
            if let Some(report) = sim.sample_report(Utc::now()) {
                tx.send(report.report)
                    .await
                    .context("report stream closed")?;
            }
        }
        if played.target.is_none() {
            played.target = sim.swarm_target().cloned();
        }
        if sim_now >= next_round {
            next_round += TimeDelta::minutes(plan.score_every_minutes.max(1));
            let truths = sim.trains();
            if truths.is_empty() {
                continue;
            }
            let trips = truths.iter().map(|t| t.trip.clone()).collect();
            let estimates = occupancy
                .get_occupancy(GetOccupancyRequest { trips })
                .await?
                .into_inner()
                .estimates;
            played.round(plan, &truths, &estimates, sim_now);
        }
    }
    drop(tx);
    let _ = tokio::time::timeout(Duration::from_secs(5), reader).await;
    played.acks = (
        acks.accepted.load(Ordering::Relaxed),
        acks.rejected.load(Ordering::Relaxed),
        acks.duplicate.load(Ordering::Relaxed),
    );
    Ok(played)
}

impl Played {
    /// Adds one accuracy round: the `estimates` published at `sim_now`
    /// against the `truths` of the trains running then.
    pub(crate) fn round(
        &mut self,
        plan: &Plan,
        truths: &[TrainTruth],
        estimates: &[OccupancyEstimate],
        sim_now: NaiveDateTime,
    ) {
        let supported = ScoreOptions {
            min_reporters: plan.min_reporters,
            ..ScoreOptions::default()
        };
        self.supported.add(&score(truths, estimates, &supported));
        self.all
            .add(&score(truths, estimates, &ScoreOptions::default()));
        let follow = plan.follow.as_ref().or(self.target.as_ref());
        if let Some(trip) = follow
            && let Some(truth) = truths.iter().find(|t| same_trip(&t.trip, trip))
        {
            let estimated = estimates
                .iter()
                .find(|e| e.trip.as_ref().is_some_and(|t| same_trip(t, trip)))
                .and_then(|e| Level::from_number(e.level));
            self.trace
                .record(minute_of_day(sim_now), estimated, truth.level);
        }
    }
}

/// Minutes since midnight of a simulated time.
pub fn minute_of_day(t: NaiveDateTime) -> i64 {
    i64::from(t.time().num_seconds_from_midnight() / 60)
}

fn same_trip(a: &TripRef, b: &TripRef) -> bool {
    a.trip_id == b.trip_id && a.start_date == b.start_date
}
