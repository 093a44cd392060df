//! One scenario of a quality run without a stack: the simulator's reports go
//! through the same validation, the same pure estimator and the same
//! reputation model as in service, in simulated time, in one thread.
//!
//! It answers in seconds what [`super::play`] answers in minutes, and the same
//! seed gives the same numbers on any machine, which makes it the tool to
//! tune the estimator with; the stacked run stays the reference, because it
//! also exercises the server, Redis and the worker's batching.
//!
//! The replay keeps the compression of the stacked run: wall-clock stamps
//! run `speed` times slower than simulated time and the estimator's
//! half-life and window are divided by `speed`, so devices with skewed
//! clocks (whose skew is in wall-clock time) behave as they do there.
//! Estimates are computed after each simulated second for the trains that
//! got reports in it, like the worker publishes after each batch, and the
//! accuracy rounds read the last published ones.
//!
//! The mornings before it are played the same way, unscored ([`warm_up`]),
//! and only the device scores they taught the model are kept: the stacked
//! run is given them too.

use std::collections::BTreeMap;

use chrono::{DateTime, NaiveDateTime, TimeDelta, Utc};
use crowd_aggregator::estimator::{self, Applied, Params};
use crowd_aggregator::profile::Profiles;
use crowd_aggregator::reputation::{Reputation, judge};
use crowd_proto::codec::report_to_stored;
use crowd_proto::domain::DeviceHasher;
use crowd_proto::domain::TripKey;
use crowd_proto::pb::store::{StoredReport, TrainState};
use crowd_proto::pb::v1::OccupancyEstimate;
use crowd_proto::validate::{Limits, validate_report};

use super::play::{Plan, Played, SERVICE_HALF_LIFE_SECS, SERVICE_WINDOW_SECS};
use crate::sim::{Network, SimReport, Simulation};

/// Simulated milliseconds per replay step (one aggregator batch).
const STEP_MS: i64 = 1_000;

/// Device ids are hashed with this secret in a replay.
const REPLAY_SECRET: &str = "quality-replay";

/// Plays `plan` through the pure estimator and returns the rounds.
pub fn replay(plan: &Plan) -> Played {
    let mut played = Played::default();
    let mut next_round = plan.from + TimeDelta::minutes(plan.score_every_minutes.max(1));
    morning(plan, |t, event, sim, model| match event {
        Event::Applied { applied, .. } => match applied {
            Applied::Counted => played.acks.0 += 1,
            Applied::Duplicate => played.acks.2 += 1,
            Applied::Rejected => played.acks.1 += 1,
        },
        Event::Invalid => played.acks.1 += 1,
        Event::Published => {
            if played.target.is_none() {
                played.target = sim.swarm_target().cloned();
            }
            if t < next_round {
                return;
            }
            next_round += TimeDelta::minutes(plan.score_every_minutes.max(1));
            let truths = sim.trains();
            if truths.is_empty() {
                return;
            }
            let estimates: Vec<OccupancyEstimate> = model.published.values().cloned().collect();
            played.round(plan, &truths, &estimates, t);
        }
    });
    played
}

/// Plays `plan`'s morning through a fresh model that knows the riders of
/// the mornings before ([`warm_up`]); `on` hears of it as [`steps`] goes.
pub(super) fn morning(plan: &Plan, on: impl FnMut(NaiveDateTime, Event<'_>, &Simulation, &Model)) {
    let (params, wall) = compressed(plan);
    let hasher = DeviceHasher::new(REPLAY_SECRET);
    let mut model = Model::new(params);
    model.reputation = warm_up(plan, &hasher);
    let mut sim = Simulation::new(Network::sample(), plan.scenario.clone(), plan.seed);
    steps(plan, &mut sim, &mut model, &hasher, &wall, on);
}

/// What the service learnt of its riders on the `plan.warm_up_days`
/// mornings before `plan`'s: the same stretch of each day, with the same
/// riders and devices (a rider takes the same train every day) but no
/// swarm, played through the pure model with device ids hashed by
/// `hasher`. Only the reputation is kept: trains, profiles and estimates of
/// earlier days would have expired by the next morning.
pub fn warm_up(plan: &Plan, hasher: &DeviceHasher) -> Reputation {
    let (params, wall) = compressed(plan);
    let mut reputation = Reputation::new();
    for days_before in (1..=i64::from(plan.warm_up_days)).rev() {
        let shift = TimeDelta::days(days_before);
        let mut scenario = plan.scenario.clone();
        scenario.swarm = None;
        let mut sim = Simulation::new(Network::sample(), scenario.clone(), plan.seed);
        let day = Plan {
            scenario,
            from: plan.from - shift,
            until: plan.until - shift,
            ..plan.clone()
        };
        let mut model = Model::new(params);
        model.reputation = reputation;
        steps(&day, &mut sim, &mut model, hasher, &wall, |_, _, _, _| {});
        reputation = model.reputation;
    }
    reputation
}

/// What [`steps`] tells its caller as it goes.
pub(super) enum Event<'a> {
    /// A report passed validation and was applied.
    Applied {
        sent: &'a SimReport,
        stored: &'a StoredReport,
        applied: Applied,
    },
    /// A report failed validation.
    Invalid,
    /// The second ended: the trains its reports touched were published.
    Published,
}

/// Steps `sim` and `model` through `plan`'s stretch of the day, one
/// simulated second (one aggregator batch) at a time: the second's reports
/// are validated and applied, then the trains they touched are published;
/// `on` hears of each (with the simulated second) as it happens.
fn steps(
    plan: &Plan,
    sim: &mut Simulation,
    model: &mut Model,
    hasher: &DeviceHasher,
    wall: &impl Fn(NaiveDateTime) -> DateTime<Utc>,
    mut on: impl FnMut(NaiveDateTime, Event<'_>, &Simulation, &Model),
) {
    let limits = Limits::default();
    sim.advance_to(plan.start());
    let per_step = plan.reports_per_sim_minute * STEP_MS as f64 / 60_000.0;
    let mut owed = 0.0;
    let mut t = plan.start();
    loop {
        t += TimeDelta::milliseconds(STEP_MS);
        // Like the stacked run: nothing at or after the end.
        if t >= plan.until {
            break;
        }
        sim.advance_to(t);
        let now = wall(t);
        let now_ms = now.timestamp_millis();
        owed += per_step;
        while owed >= 1.0 {
            owed -= 1.0;
            let Some(sent) = sim.sample_report(now) else {
                continue;
            };
            let Ok(report) = validate_report(&sent.report, &limits, hasher, now) else {
                on(t, Event::Invalid, sim, model);
                continue;
            };
            let stored = report_to_stored(&report, now);
            let applied = model.apply(&stored, now_ms);
            let event = Event::Applied {
                sent: &sent,
                stored: &stored,
                applied,
            };
            on(t, event, sim, model);
        }
        model.publish(now_ms);
        on(t, Event::Published, sim, model);
    }
}

/// The aggregator's model in one thread: train states, device reputation
/// and the estimates published after each step, as the worker keeps them.
#[derive(Debug)]
pub(super) struct Model {
    pub(super) params: Params,
    /// Each train's state, by canonical trip key.
    pub(super) trains: BTreeMap<String, TrainState>,
    /// The latest published estimate of each train.
    pub(super) published: BTreeMap<String, OccupancyEstimate>,
    pub(super) reputation: Reputation,
    /// What the trains ahead said on each stretch.
    profiles: Profiles,
    /// Trains counted into since the last [`Model::publish`].
    touched: Vec<String>,
}

impl Model {
    pub(super) fn new(params: Params) -> Model {
        Model {
            params,
            trains: BTreeMap::new(),
            published: BTreeMap::new(),
            reputation: Reputation::new(),
            profiles: Profiles::default(),
            touched: Vec::new(),
        }
    }

    /// Judges `report` against its train, folds it in and, when it counts,
    /// records the verdict in the device's reputation.
    pub(super) fn apply(&mut self, report: &StoredReport, now_ms: i64) -> Applied {
        let key = TripKey {
            trip_id: report.trip_id.clone(),
            start_date: report.start_date.clone(),
        }
        .canonical();
        let state = self.trains.entry(key.clone()).or_default();
        let verdict = judge(state, report, now_ms, &self.params, &self.reputation);
        let applied = estimator::apply(state, report, &self.params);
        if applied == Applied::Counted {
            if let Some(v) = verdict {
                self.reputation.record(report.device, v);
            }
            self.touched.push(key);
        }
        applied
    }

    /// Publishes (or withdraws) the estimate of every train counted into
    /// since the last call, as the worker does after a batch.
    pub(super) fn publish(&mut self, now_ms: i64) {
        self.touched.sort_unstable();
        self.touched.dedup();
        for key in self.touched.drain(..) {
            let Some(state) = self.trains.get_mut(&key) else {
                continue;
            };
            estimator::prune(state, now_ms, &self.params);
            let estimate = self
                .profiles
                .estimate(state, now_ms, &self.params, &self.reputation);
            match estimator::pace::publish(state, estimate, now_ms, &self.params) {
                Some(e) => self.published.insert(key, e),
                None => self.published.remove(&key),
            };
        }
    }
}

/// The estimator's parameters and the wall clock of a replay of `plan`:
/// half-life and window divided by its speed, wall-clock stamps running
/// that much slower than simulated time from an arbitrary fixed origin (so
/// the same seed gives the same numbers whenever it runs).
pub(super) fn compressed(plan: &Plan) -> (Params, impl Fn(NaiveDateTime) -> DateTime<Utc>) {
    let speed = if plan.speed.is_finite() && plan.speed > 0.0 {
        plan.speed
    } else {
        1.0
    };
    let params = Params {
        half_life_ms: (SERVICE_HALF_LIFE_SECS / speed * 1000.0).round().max(1.0) as i64,
        window_ms: (SERVICE_WINDOW_SECS / speed * 1000.0).round().max(2.0) as i64,
        ..Params::default()
    };
    let origin = DateTime::<Utc>::from_timestamp(1_795_000_000, 0).unwrap_or_default();
    let from = plan.from;
    let wall = move |t: NaiveDateTime| {
        let sim_ms = (t - from).num_milliseconds() as f64;
        origin + TimeDelta::milliseconds((sim_ms / speed) as i64)
    };
    (params, wall)
}

#[cfg(test)]
mod tests {
    use chrono::NaiveDate;

    use super::*;
    use crate::sim::Scenario;

    fn plan(minutes: i64) -> Plan {
        let from = NaiveDate::from_ymd_opt(2026, 11, 26)
            .and_then(|d| d.and_hms_opt(7, 45, 0))
            .expect("a valid time");
        Plan {
            scenario: Scenario::default(),
            seed: 11,
            from,
            until: from + TimeDelta::minutes(minutes),
            speed: 30.0,
            reports_per_sim_minute: 160.0,
            score_every_minutes: 1,
            min_reporters: 3,
            follow: None,
            warm_up_days: 0,
            lead_in_minutes: 0,
        }
    }

    #[test]
    fn a_replay_scores_every_minute_and_repeats_itself() {
        let a = replay(&plan(6));
        let numbers = a.all.numbers();
        assert_eq!(numbers.rounds, 5);
        assert!(numbers.trains.compared > 0, "{numbers:?}");
        assert!(a.acks.0 > 700, "{:?}", a.acks);
        let b = replay(&plan(6));
        assert_eq!(b.all.numbers(), numbers);
        assert_eq!(b.supported.numbers(), a.supported.numbers());
        assert_eq!(b.acks, a.acks);
    }

    #[test]
    fn a_lead_in_is_played_but_not_scored() {
        let cold = replay(&plan(6));
        let led = replay(&Plan {
            lead_in_minutes: 10,
            ..plan(6)
        });
        let (c, l) = (cold.all.numbers(), led.all.numbers());
        assert_eq!(l.rounds, c.rounds, "the same minutes are scored");
        assert!(led.acks.0 > cold.acks.0 + 1_000, "{:?}", led.acks);
        // Trains reported on before the scored hour are estimated from its
        // first minute.
        assert!(l.coverage > c.coverage, "{l:?} vs {c:?}");
    }

    #[test]
    fn a_warm_up_morning_gives_the_regular_riders_standing() {
        use crowd_aggregator::reputation::ESTABLISHED_SCORE;

        let hasher = DeviceHasher::new(REPLAY_SECRET);
        assert!(warm_up(&plan(20), &hasher).is_empty());
        let warm = |minutes| Plan {
            warm_up_days: 1,
            ..plan(minutes)
        };
        let learnt = warm_up(&warm(20), &hasher);
        let established = learnt
            .scores()
            .filter(|(_, score)| *score >= ESTABLISHED_SCORE)
            .count();
        assert!(established >= 10, "{established} of {}", learnt.len());
        // The same riders come back the next morning, and are weighed so.
        let (cold, warm) = (replay(&plan(20)), replay(&warm(20)));
        assert_eq!(cold.acks, warm.acks);
        assert_ne!(cold.all.numbers(), warm.all.numbers());
    }
}
