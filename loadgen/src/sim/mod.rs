//! The rider simulator: trains, passengers and the riders who report.
//!
//! A [`Simulation`] runs a [`Network`]'s timetable, fills its trains with
//! passengers following the demand of the hour, and produces the reports
//! riders would send, each tagged with who sent it and the truth it was
//! about. It is pure and deterministic: no IO, no wall clock, the same seed
//! and the same calls give the same reports.
//!
//! - [`network`]: lines, stations, timetables; [`file`](mod@file) loads one from TOML,
//!   [`sample`] has a built-in one; [`gtfs_export`] writes one as a GTFS feed.
//! - [`demand`] and [`trips`]: who boards and alights where, car by car.
//! - [`riders`]: the reporting population ([`Scenario`]) and perception.
//! - [`truth`]: what the scorer compares estimates with.

pub mod demand;
pub mod file;
pub mod gtfs_export;
pub mod network;
pub mod riders;
pub mod sample;
pub mod trips;
pub mod truth;

use std::collections::BTreeMap;

use chrono::{DateTime, Datelike, NaiveDate, NaiveDateTime, NaiveTime, TimeDelta, Timelike, Utc};
use crowd_proto::level::Level;
use crowd_proto::pb::v1::{CrowdingReport, GeoPoint, TripRef};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rand_distr::{Distribution, Normal};

pub use file::NetworkError;
pub use network::{Direction, Line, Network, Station};
pub use riders::{ReporterKind, Scenario, SwarmSpec};
pub use trips::TripRun;
pub use truth::{CarTruth, TrainTruth};

/// One report a rider sends, with what the simulator knows about it.
#[derive(Debug, Clone, PartialEq)]
pub struct SimReport {
    /// The report exactly as it goes on the wire.
    pub report: CrowdingReport,
    /// Who sent it.
    pub reporter: ReporterKind,
    /// The true level of the car reported on (of the train for car 0).
    pub true_level: Level,
}

/// The swarm's progress.
#[derive(Debug, Clone, Default)]
struct SwarmState {
    /// The train under attack, once chosen.
    target: Option<TripRef>,
    /// Swarm reports sent so far.
    sent: u32,
}

/// A simulated service: trains, their loads and the riders who report.
#[derive(Debug)]
pub struct Simulation {
    /// The network being run.
    network: Network,
    /// The reporting population.
    scenario: Scenario,
    /// Seeds every random stream, so that runs are reproducible.
    seed: u64,
    /// Draws of the reports (train, car, device, perception).
    rng: StdRng,
    /// The simulated clock; `None` before the first `advance_to`.
    now: Option<NaiveDateTime>,
    /// Runs of each service day still needed (today and yesterday, whose
    /// late trains run past midnight).
    days: BTreeMap<NaiveDate, Vec<TripRun>>,
    /// Runs in service at `now`: (day, index in that day's runs).
    running: Vec<(NaiveDate, usize)>,
    /// Until when `running` holds: recomputing it for every report would
    /// scan the whole day's timetable.
    running_until: Option<NaiveDateTime>,
    /// Riders on board of each train of `running` (at least 1): how
    /// reports are spread over the trains.
    on_board: Vec<u64>,
    /// Until when `on_board` holds: the next arrival of a running train at
    /// a stop, where its load changes. Recomputing it for every report
    /// looked up every running train's place in its timetable.
    on_board_until: Option<NaiveDateTime>,
    /// Reports made so far: makes every report id unique.
    reports: u64,
    /// The swarm, when the scenario has one.
    swarm: SwarmState,
}

impl Simulation {
    /// A simulation of `network` with `scenario`'s riders, reproducible from `seed`.
    pub fn new(network: Network, scenario: Scenario, seed: u64) -> Simulation {
        Simulation {
            network,
            scenario,
            seed,
            rng: StdRng::seed_from_u64(mix(seed, 0x5EED)),
            now: None,
            days: BTreeMap::new(),
            running: Vec::new(),
            on_board: Vec::new(),
            on_board_until: None,
            running_until: None,
            reports: 0,
            swarm: SwarmState::default(),
        }
    }

    /// The built-in sample network (see [`sample`]).
    pub fn sample_network() -> Network {
        Network::sample()
    }

    /// The network being run.
    pub fn network(&self) -> &Network {
        &self.network
    }

    /// The scenario in force.
    pub fn scenario(&self) -> &Scenario {
        &self.scenario
    }

    /// The simulated clock, once set.
    pub fn now(&self) -> Option<NaiveDateTime> {
        self.now
    }

    /// Moves the simulated clock to `t` (local service time), updating trains
    /// and loads. The clock only goes forward: an earlier `t` is ignored.
    ///
    /// A trip belongs to the service day (its `start_date`) on which it
    /// leaves its first stop; trips leaving late may run past midnight.
    pub fn advance_to(&mut self, t: NaiveDateTime) {
        if self.now.is_some_and(|now| t < now) {
            return;
        }
        self.now = Some(t);
        if self.running_until.is_none_or(|until| t >= until) {
            self.find_running(t);
        }
        self.maybe_start_swarm(t);
    }

    /// Every run of service day `date`, with its calls and loads.
    pub fn day_runs(&mut self, date: NaiveDate) -> &[TripRun] {
        self.ensure_day(date);
        &self.days[&date]
    }

    /// Ground truth of every train running now.
    pub fn trains(&self) -> Vec<TrainTruth> {
        let Some(now) = self.now else {
            return Vec::new();
        };
        self.running
            .iter()
            .map(|(d, i)| {
                let run = &self.days[d][*i];
                truth::train_truth(&self.network.lines[run.line], run, *d, now)
            })
            .collect()
    }

    /// The train the swarm picked, once it has started.
    pub fn swarm_target(&self) -> Option<&TripRef> {
        self.swarm.target.as_ref()
    }

    /// One report a rider would send now: picks a running train (weighted by
    /// riders on board), a car (weighted by its load), a rider device on it;
    /// `None` if no train runs. While a swarm is under way its reports come
    /// first.
    ///
    /// `observed_at` is the wall-clock stamp to put in the report (the
    /// driver's intended send time); a skewed-clock device shifts it.
    pub fn sample_report(&mut self, observed_at: DateTime<Utc>) -> Option<SimReport> {
        let now = self.now?;
        if let Some(report) = self.swarm_report(now, observed_at) {
            return Some(report);
        }
        if self.on_board_until.is_none_or(|until| now >= until) {
            self.count_on_board(now);
        }
        let pick = pick_weighted(&mut self.rng, &self.on_board)?;
        let (date, index) = self.running[pick];
        let run = &self.days[&date][index];
        let line = &self.network.lines[run.line];
        let loads = run.loads_at(now).to_vec();
        let car_weights: Vec<u64> = loads.iter().map(|&n| u64::from(n.max(1))).collect();
        let car = pick_weighted(&mut self.rng, &car_weights).unwrap_or(0);

        // A device from the car's pool. The same slot is the same device all
        // ride long, and on every day: commuters take the same train daily,
        // so the service can learn whom to trust.
        let pool = ((f64::from(loads[car]) * self.scenario.app_share).ceil() as u64).max(1);
        let slot = self.rng.random_range(0..pool);
        let device_key = mix(
            mix(self.seed, hash_str(&run.trip_id)),
            (car as u64) << 32 | slot,
        );
        let device_id = format!("d{device_key:016x}");
        let kind = self.scenario.kind_of(unit(mix(device_key, 1)));

        let car_seq = if kind == ReporterKind::Spammer {
            self.rng.random_range(1..=line.cars)
        } else {
            car as u32 + 1
        };
        let truth = truth::train_truth(line, run, date, now);
        let stop_id = match run.whereabouts(now) {
            trips::Whereabouts::AtStop(i) => line.stations[run.calls[i].station].id.clone(),
            trips::Whereabouts::Between(..) => String::new(),
        };
        let car_truth = &truth.cars[car_seq as usize - 1];
        let (level, percentage) = self.perceive(kind, car_truth.level, car_truth.percentage);
        let observed_at = if kind == ReporterKind::SkewedClock {
            observed_at + TimeDelta::seconds(self.scenario.skew_seconds(unit(mix(device_key, 2))))
        } else {
            observed_at
        };
        let position = self.gps_fix(truth.position);
        let report = self.build_report(
            device_id,
            truth.trip.clone(),
            car_seq,
            level,
            percentage,
            observed_at,
            position,
            stop_id,
        );
        Some(SimReport {
            report,
            reporter: kind,
            true_level: car_truth.level,
        })
    }

    /// Recomputes which runs are in service at `t`, and until when that
    /// holds (the next start or end of a run, or midnight at the latest).
    fn find_running(&mut self, t: NaiveDateTime) {
        let today = t.date();
        let yesterday = today.pred_opt().unwrap_or(today);
        self.days.retain(|d, _| *d >= yesterday);
        for day in [yesterday, today] {
            self.ensure_day(day);
        }
        let mut until = today.succ_opt().unwrap_or(today).and_time(NaiveTime::MIN);
        self.running.clear();
        for (d, runs) in &self.days {
            for (i, run) in runs.iter().enumerate() {
                if run.running_at(t) {
                    self.running.push((*d, i));
                    until = until.min(run.end());
                } else if run.start() > t {
                    until = until.min(run.start());
                }
            }
        }
        self.running_until = Some(until);
        self.on_board_until = None;
    }

    /// Counts the riders on board of each running train at `now`, and
    /// until when the counts hold.
    fn count_on_board(&mut self, now: NaiveDateTime) {
        let mut until = self.running_until.unwrap_or(now);
        self.on_board.clear();
        for (d, i) in &self.running {
            let run = &self.days[d][*i];
            if let Some(next) = run.calls.iter().find(|c| c.arrival > now) {
                until = until.min(next.arrival);
            }
            let riders: u32 = run.loads_at(now).iter().sum();
            self.on_board.push(u64::from(riders.max(1)));
        }
        self.on_board_until = Some(until);
    }

    fn ensure_day(&mut self, date: NaiveDate) {
        if self.days.contains_key(&date) {
            return;
        }
        self.running_until = None;
        let mut runs = Vec::new();
        for (li, line) in self.network.lines.iter().enumerate() {
            for dep in line.departures(date) {
                let trip_seed = mix(
                    mix(self.seed, date_key(date)),
                    mix(hash_str(&line.id), hash_str(&dep.trip_id)),
                );
                let mut rng = StdRng::seed_from_u64(trip_seed);
                runs.push(TripRun::simulate(li, line, &dep, &mut rng));
            }
        }
        self.days.insert(date, runs);
    }

    /// Starts the swarm the first time the clock reaches its minute with a
    /// train running; it targets the train whose true level is furthest
    /// from the lie (the first such in running order).
    fn maybe_start_swarm(&mut self, t: NaiveDateTime) {
        let Some(spec) = self.scenario.swarm else {
            return;
        };
        if self.swarm.target.is_some() || t.num_seconds_from_midnight() < spec.at_minute * 60 {
            return;
        }
        let mut best: Option<(u8, TripRef)> = None;
        for train in self.trains() {
            let d = train.level.distance(spec.lie);
            if best.as_ref().is_none_or(|(bd, _)| d > *bd) {
                best = Some((d, train.trip));
            }
        }
        self.swarm.target = best.map(|(_, trip)| trip);
    }

    fn swarm_report(
        &mut self,
        now: NaiveDateTime,
        observed_at: DateTime<Utc>,
    ) -> Option<SimReport> {
        let spec = self.scenario.swarm?;
        let target = self.swarm.target.clone()?;
        if self.swarm.sent >= spec.size * spec.reports_per_device.max(1) {
            return None;
        }
        let (date, index) = *self.running.iter().find(|(d, i)| {
            let run = &self.days[d][*i];
            run.trip_id == target.trip_id && d.format("%Y%m%d").to_string() == target.start_date
        })?;
        let run = &self.days[&date][index];
        let line = &self.network.lines[run.line];
        let truth = truth::train_truth(line, run, date, now);
        let n = self.swarm.sent;
        self.swarm.sent += 1;
        let device = n / spec.reports_per_device.max(1);
        let device_id = format!("s{:016x}", mix(mix(self.seed, 0x5A4A), u64::from(device)));
        let car_seq = 1 + device % line.cars;
        let true_level = truth.cars[car_seq as usize - 1].level;
        let position = self.gps_fix(truth.position);
        let report = self.build_report(
            device_id,
            truth.trip,
            car_seq,
            spec.lie,
            None,
            observed_at,
            position,
            String::new(),
        );
        Some(SimReport {
            report,
            reporter: ReporterKind::Swarm,
            true_level,
        })
    }

    /// The level (and sometimes percentage) a device of `kind` reports about
    /// a car at `percentage`. A rider who gives a percentage derives the
    /// level from it, as the app does.
    fn perceive(
        &mut self,
        kind: ReporterKind,
        truth: Level,
        percentage: f64,
    ) -> (Level, Option<u32>) {
        let sd = match kind {
            ReporterKind::Honest | ReporterKind::SkewedClock => 8.0,
            ReporterKind::Noisy => 20.0,
            ReporterKind::Liar | ReporterKind::Spammer | ReporterKind::Swarm => {
                return (riders::perceive(kind, truth, &mut self.rng), None);
            }
        };
        if self
            .rng
            .random_bool(self.scenario.percentage_share.clamp(0.0, 1.0))
        {
            let noise = Normal::new(0.0, sd).map_or(0.0, |n| n.sample(&mut self.rng));
            let p = (percentage + noise).round().clamp(0.0, 200.0) as u32;
            (Level::from_percentage(p), Some(p))
        } else {
            (riders::perceive(kind, truth, &mut self.rng), None)
        }
    }

    /// A phone's fix near `at`: 10–50 m accuracy, an error of about half that.
    fn gps_fix(&mut self, at: (f64, f64)) -> GeoPoint {
        let accuracy: f64 = self.rng.random_range(10.0..50.0);
        let noise = Normal::new(0.0, accuracy / 2.0).expect("positive sd");
        let (north, east) = (noise.sample(&mut self.rng), noise.sample(&mut self.rng));
        let lat = at.0 + north / 111_320.0;
        let lon = at.1 + east / (111_320.0 * at.0.to_radians().cos().max(0.01));
        GeoPoint {
            latitude: lat.clamp(-90.0, 90.0),
            longitude: lon.clamp(-180.0, 180.0),
            accuracy_m: accuracy as f32,
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn build_report(
        &mut self,
        device_id: String,
        trip: TripRef,
        carriage_sequence: u32,
        level: Level,
        occupancy_percentage: Option<u32>,
        observed_at: DateTime<Utc>,
        position: GeoPoint,
        stop_id: String,
    ) -> CrowdingReport {
        self.reports += 1;
        CrowdingReport {
            report_id: format!("{device_id}-{}", self.reports),
            device_id,
            trip: Some(trip),
            carriage_sequence,
            level: level.number(),
            occupancy_percentage,
            observed_at: Some(prost_types::Timestamp {
                seconds: observed_at.timestamp(),
                nanos: observed_at.timestamp_subsec_nanos() as i32,
            }),
            position: Some(position),
            stop_id,
        }
    }
}

/// Picks an index with probability proportional to its weight; `None` when
/// there is nothing to pick.
fn pick_weighted(rng: &mut impl Rng, weights: &[u64]) -> Option<usize> {
    let total: u64 = weights.iter().sum();
    if total == 0 {
        return None;
    }
    let mut x = rng.random_range(0..total);
    for (i, &w) in weights.iter().enumerate() {
        if x < w {
            return Some(i);
        }
        x -= w;
    }
    None
}

/// Mixes two numbers into a well-spread one (SplitMix64 finaliser): derives
/// independent, reproducible seeds and device ids.
fn mix(a: u64, b: u64) -> u64 {
    let mut z = a ^ b.wrapping_add(0x9E37_79B9_7F4A_7C15).rotate_left(17);
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// FNV-1a: a string hash that is the same on every build and platform.
fn hash_str(s: &str) -> u64 {
    s.bytes().fold(0xCBF2_9CE4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01B3)
    })
}

/// A number per service day, for seeding.
fn date_key(d: NaiveDate) -> u64 {
    d.num_days_from_ce() as u64
}

/// A uniform number in 0..1 from the top 53 bits of `x`.
fn unit(x: u64) -> f64 {
    (x >> 11) as f64 / (1u64 << 53) as f64
}

#[cfg(test)]
mod tests;
