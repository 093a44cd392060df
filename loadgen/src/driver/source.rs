//! Where the driver's reports and truth come from: the rider simulator,
//! run on a simulated clock tied to the load schedule.
//!
//! Real time `offset` since the start of the run is simulated time
//! `sim_start + offset × speed`, so a short load test can cover a rush hour.
//! Reports are stamped with the real intended send time, which is what the
//! server checks `observed_at` against.

use std::sync::{Arc, Mutex, MutexGuard, RwLock};
use std::time::Duration;

use chrono::{DateTime, NaiveDateTime, TimeDelta, Utc};
use crowd_proto::pb::v1::{CrowdingReport, TripRef};

use crate::sim::{Network, Scenario, Simulation, TrainTruth};

/// The simulator, shared between the generator (which advances it) and the
/// accuracy rounds (which read its truth).
#[derive(Debug, Clone)]
pub struct Source {
    sim: Arc<Mutex<Simulation>>,
    sim_start: NaiveDateTime,
    speed: f64,
    /// Prefix of every report id, unique per run: the same seed replays the
    /// same riders, but a second run against the same server must not be
    /// acknowledged as DUPLICATE of the first.
    run_tag: String,
}

impl Source {
    /// `network` with `scenario`, its clock at `sim_start`.
    pub fn new(
        network: Network,
        scenario: Scenario,
        seed: u64,
        sim_start: NaiveDateTime,
        speed: f64,
    ) -> Source {
        let mut sim = Simulation::new(network, scenario, seed);
        sim.advance_to(sim_start);
        Source {
            sim: Arc::new(Mutex::new(sim)),
            sim_start,
            speed,
            run_tag: format!("{:x}", Utc::now().timestamp_millis()),
        }
    }

    /// The simulated time `offset` into the run.
    pub fn sim_time(&self, offset: Duration) -> NaiveDateTime {
        let millis = (offset.as_secs_f64() * self.speed * 1000.0) as i64;
        self.sim_start + TimeDelta::milliseconds(millis)
    }

    /// The report of a random rider `offset` into the run, observed at
    /// `observed_at`; `None` when no train is running then.
    pub fn report(&self, offset: Duration, observed_at: DateTime<Utc>) -> Option<CrowdingReport> {
        let at = self.sim_time(offset);
        let mut sim = self.lock();
        sim.advance_to(at);
        let mut report = sim.sample_report(observed_at)?.report;
        report.report_id = format!("{}-{}", self.run_tag, report.report_id);
        Some(report)
    }

    /// The truth of every running train.
    pub fn truths(&self) -> Vec<TrainTruth> {
        self.lock().trains()
    }

    /// The trains running now.
    pub fn running_trips(&self) -> Vec<TripRef> {
        self.truths().into_iter().map(|truth| truth.trip).collect()
    }

    fn lock(&self) -> MutexGuard<'_, Simulation> {
        self.sim.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The trains currently running in the simulation, refreshed by the
/// generator, so queries and watchers ask about trains that exist.
pub type RunningTrips = Arc<RwLock<Vec<TripRef>>>;

/// `--scenario`: which riders the simulator plays.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ScenarioName {
    /// Only honest riders with accurate clocks.
    Honest,
    /// Some noisy and hostile riders, a few skewed clocks.
    Default,
    /// More hostile riders, clocks ahead of the server, a swarm.
    Adversarial,
}

impl ScenarioName {
    pub fn scenario(self) -> Scenario {
        match self {
            ScenarioName::Honest => Scenario::honest(),
            ScenarioName::Default => Scenario::default(),
            ScenarioName::Adversarial => Scenario::adversarial(),
        }
    }
}
