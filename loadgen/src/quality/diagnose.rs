//! `loadgen quality --offline --diagnose`: where the error of the train
//! estimates comes from.
//!
//! Replays a scenario like [`super::replay`] while remembering, for every
//! report, what the simulator knows about it (the segment the train was on,
//! the true level of the car, the kind of device), and at every accuracy
//! round compares the published estimate of each supported train with
//! oracles that each remove one source of error:
//!
//! - **segment**: the same estimator fed only the reports made since the
//!   train's last stop (staleness removed);
//! - **cars seen now**: the level of the mean *true current* load of the
//!   cars somebody reported on in the window (what sampling cars allows
//!   with perfect riders and no staleness);
//! - **cars seen, segment**: the same over the cars reported on since the
//!   last stop;
//! - **perfect riders**: the estimator fed the same reports with each
//!   level replaced by the car's true level when it was observed (noise
//!   and lies removed, staleness and sampling kept).
//!
//! It changes nothing in the simulator or the scoring; it only prints.

use std::collections::BTreeMap;

use chrono::{NaiveDateTime, TimeDelta};
use crowd_aggregator::estimator::{self, Applied, Params};
use crowd_proto::domain::TripKey;
use crowd_proto::level::Level;
use crowd_proto::pb::store::{StoredReport, TrainState};

use super::play::Plan;
use super::replay::{Event, Model, morning};
use crate::sim::truth::level_of;
use crate::sim::{ReporterKind, TrainTruth};

/// One accepted report with what the simulator knows about it.
#[derive(Debug, Clone)]
struct Logged {
    stored: StoredReport,
    kind: ReporterKind,
    /// Index of the train's last call when it was observed.
    segment: usize,
    /// True percentage of the car reported on when observed.
    true_pct: f64,
}

/// Counts of one oracle.
#[derive(Debug, Default, Clone)]
struct Score {
    n: f64,
    exact: f64,
    within: f64,
    abs: f64,
}

impl Score {
    fn add(&mut self, est: Level, pct: f64, truth: Level, true_pct: f64) {
        self.n += 1.0;
        if est == truth {
            self.exact += 1.0;
        }
        if est.distance(truth) <= 1 {
            self.within += 1.0;
        }
        self.abs += (pct - true_pct).abs();
    }
}

/// The oracles' counts over the rounds.
#[derive(Debug, Default)]
struct Oracles {
    /// One per oracle, the published estimate first.
    scores: Vec<Score>,
    /// Rounds whose truth was within 5 points of a level's edge.
    near_edge: f64,
    /// Sum over rounds of the share of window reports from the current segment.
    fresh_share: f64,
    /// Rounds with no report since the train's last stop.
    no_segment_report: f64,
}

impl Oracles {
    /// Scores every supported train estimate of one round against the oracles.
    fn round(
        &mut self,
        plan: &Plan,
        params: &Params,
        truths: &[TrainTruth],
        model: &Model,
        logs: &BTreeMap<String, Vec<Logged>>,
        now_ms: i64,
    ) {
        for truth in truths {
            let key = truth_key(&truth.trip);
            let Some(est) = model.published.get(&key) else {
                continue;
            };
            if est.reporters < plan.min_reporters {
                continue;
            }
            let Some(level) = Level::from_number(est.level) else {
                continue;
            };
            let pct = truth.percentage;
            let tl = truth.level;
            let edge = [10.0, 40.0, 70.0, 100.0, 130.0, 150.0]
                .iter()
                .any(|e| (pct - e).abs() < 5.0);
            if edge {
                self.near_edge += 1.0;
            }
            self.scores[0].add(level, f64::from(est.occupancy_percentage), tl, pct);
            let log = logs.get(&key).map(Vec::as_slice).unwrap_or(&[]);
            let oldest = now_ms - params.window_ms;
            let in_window: Vec<&Logged> = log
                .iter()
                .filter(|l| l.stored.observed_at_ms >= oldest && l.stored.observed_at_ms <= now_ms)
                .collect();
            let current = segment_of(&truth.last_stop, (truth.progress * 1000.0) as usize);
            let seg: Vec<&Logged> = in_window
                .iter()
                .copied()
                .filter(|l| l.segment == current)
                .collect();
            self.fresh_share += seg.len() as f64 / in_window.len().max(1) as f64;
            if seg.is_empty() {
                self.no_segment_report += 1.0;
            }
            let by_estimator = |reports: &[&Logged], perfect: bool| {
                let mut s = TrainState::default();
                for l in reports {
                    let mut r = l.stored.clone();
                    if perfect {
                        r.level = level_of(l.true_pct).number() as u32;
                        r.occupancy_percentage = None;
                    }
                    estimator::apply(&mut s, &r, params);
                }
                estimator::estimate(&s, now_ms, params, &model.reputation)
            };
            let cars_mean = |reports: &[&Logged]| {
                let mut cars: Vec<u32> = reports
                    .iter()
                    .map(|l| l.stored.carriage_sequence)
                    .filter(|c| *c >= 1 && (*c as usize) <= truth.cars.len())
                    .collect();
                cars.sort_unstable();
                cars.dedup();
                if cars.is_empty() {
                    return None;
                }
                let m = cars
                    .iter()
                    .map(|c| truth.cars[*c as usize - 1].percentage)
                    .sum::<f64>()
                    / cars.len() as f64;
                Some(m)
            };
            for (i, reports) in [(2, &in_window), (3, &seg)] {
                match cars_mean(reports) {
                    Some(m) => self.scores[i].add(level_of(m), m, tl, pct),
                    None => self.scores[i].add(level, f64::from(est.occupancy_percentage), tl, pct),
                }
            }
            // The estimator fed fewer reports (segment only) or perfect ones.
            for (i, reports, perfect) in [(1, &seg, false), (4, &in_window, true), (5, &seg, true)]
            {
                match by_estimator(reports, perfect) {
                    Some(e) => self.scores[i].add(
                        Level::from_number(e.level).unwrap_or(level),
                        f64::from(e.occupancy_percentage),
                        tl,
                        pct,
                    ),
                    None => self.scores[i].add(level, f64::from(est.occupancy_percentage), tl, pct),
                }
            }
            for (i, honest_only, mode) in [(6, true, 1), (7, true, 0), (8, false, 1), (9, true, 2)]
            {
                let mut per_car: BTreeMap<u32, (f64, f64)> = BTreeMap::new();
                for l in &in_window {
                    if honest_only
                        && matches!(
                            l.kind,
                            ReporterKind::Liar | ReporterKind::Spammer | ReporterKind::Swarm
                        )
                    {
                        continue;
                    }
                    let w = match mode {
                        0 => (-((now_ms - l.stored.observed_at_ms) as f64
                            / params.half_life_ms as f64))
                            .exp2(),
                        1 => {
                            if l.segment == current {
                                1.0
                            } else {
                                continue;
                            }
                        }
                        _ => {
                            if l.segment == current {
                                1.0
                            } else {
                                0.05 * (-((now_ms - l.stored.observed_at_ms) as f64
                                    / params.half_life_ms as f64))
                                    .exp2()
                            }
                        }
                    };
                    let p = l.stored.occupancy_percentage.map_or_else(
                        || {
                            Level::from_number(l.stored.level as i32)
                                .map_or(50.0, |x| f64::from(x.typical_percentage()))
                        },
                        f64::from,
                    );
                    let e = per_car.entry(l.stored.carriage_sequence).or_default();
                    e.0 += w * p;
                    e.1 += w;
                }
                if per_car.is_empty() {
                    self.scores[i].add(level, f64::from(est.occupancy_percentage), tl, pct);
                } else {
                    let m =
                        per_car.values().map(|(s, n)| s / n).sum::<f64>() / per_car.len() as f64;
                    self.scores[i].add(level_of(m), m, tl, pct);
                }
            }
        }
    }
}

/// Replays `plan` and prints the oracles' numbers.
pub fn diagnose(plan: &Plan, name: &str) {
    let (params, wall) = super::replay::compressed(plan);
    let mut logs: BTreeMap<String, Vec<Logged>> = BTreeMap::new();
    // The trains' truths, taken once per simulated second.
    let mut truths: (Option<NaiveDateTime>, Vec<TrainTruth>) = (None, Vec::new());
    let mut next_round = plan.from + TimeDelta::minutes(1);
    let names = [
        "published",
        "segment only",
        "cars seen now (window)",
        "cars seen now (segment)",
        "perfect riders",
        "perfect riders, segment",
        "per-car mean, segment",
        "per-car mean, window decayed",
        "per-car mean, segment, all kinds",
        "per-car mean, seg+prev decayed",
    ];
    let mut oracles = Oracles {
        scores: vec![Score::default(); names.len()],
        ..Oracles::default()
    };
    morning(plan, |t, event, sim, model| {
        if truths.0 != Some(t) {
            truths = (Some(t), sim.trains());
        }
        let truths = &truths.1;
        let now_ms = wall(t).timestamp_millis();
        let (sent, stored) = match event {
            Event::Applied {
                sent,
                stored,
                applied: Applied::Counted,
            } => (sent, stored),
            Event::Applied { .. } | Event::Invalid => return,
            Event::Published => {
                if t >= next_round {
                    next_round += TimeDelta::minutes(1);
                    oracles.round(plan, &params, truths, model, &logs, now_ms);
                }
                return;
            }
        };
        if let Some(truth) = truths
            .iter()
            .find(|x| x.trip.trip_id == stored.trip_id && x.trip.start_date == stored.start_date)
        {
            let segment = (truth.progress * 1000.0) as usize;
            let segment = segment_of(&truth.last_stop, segment);
            let car = stored.carriage_sequence as usize;
            let true_pct = if car >= 1 && car <= truth.cars.len() {
                truth.cars[car - 1].percentage
            } else {
                truth.percentage
            };
            let key = TripKey {
                trip_id: stored.trip_id.clone(),
                start_date: stored.start_date.clone(),
            }
            .canonical();
            logs.entry(key).or_default().push(Logged {
                stored: stored.clone(),
                kind: sent.reporter,
                segment,
                true_pct,
            });
        }
    });
    let Oracles {
        scores,
        near_edge,
        fresh_share,
        no_segment_report,
    } = oracles;
    let n = scores[0].n.max(1.0);
    println!(
        "diagnosis of {name} (seed {}), {} supported estimates:",
        plan.seed, scores[0].n
    );
    for (name, s) in names.iter().zip(&scores) {
        println!(
            "  {name:<28} exact {:>5.1}%  within one {:>5.1}%  MAE {:>5.1}",
            100.0 * s.exact / s.n.max(1.0),
            100.0 * s.within / s.n.max(1.0),
            s.abs / s.n.max(1.0)
        );
    }
    println!(
        "  truth within 5 pts of a band edge: {:.1}%; share of window reports from the current segment: {:.1}%; no report in segment: {:.1}%",
        100.0 * near_edge / n,
        100.0 * fresh_share / n,
        100.0 * no_segment_report / n
    );
}

fn truth_key(trip: &crowd_proto::pb::v1::TripRef) -> String {
    crowd_proto::domain::TripKey {
        trip_id: trip.trip_id.clone(),
        start_date: trip.start_date.clone(),
    }
    .canonical()
}

/// The segment a train is on, from its last stop (the sample line calls at
/// each station once per run).
fn segment_of(last_stop: &str, _progress: usize) -> usize {
    last_stop.bytes().fold(0usize, |h, b| {
        h.wrapping_mul(31).wrapping_add(usize::from(b))
    })
}
