//! Pure bookkeeping of a quality run: accuracy rounds added up into one
//! set of numbers, the swarm's target followed round by round, and the
//! verdict against the quality bar.

use std::collections::BTreeMap;
use std::fmt;

use crowd_proto::level::Level;
use serde::Serialize;

use crate::score::{Accuracy, LevelAccuracy};

/// Confidence from which an estimate counts as "confident" in the
/// calibration figure.
pub const CONFIDENT: f64 = 0.8;

/// Running sums of one kind of comparison (trains or cars) over rounds.
#[derive(Debug, Clone, Default, PartialEq)]
struct Sums {
    compared: f64,
    exact: f64,
    within_one: f64,
    abs_error: f64,
}

impl Sums {
    fn add(&mut self, a: &LevelAccuracy) {
        let n = a.compared as f64;
        self.compared += n;
        self.exact += a.exact * n;
        self.within_one += a.within_one * n;
        self.abs_error += a.mean_abs_error * n;
    }

    fn figures(&self) -> Figures {
        let of = |x: f64| {
            if self.compared == 0.0 {
                0.0
            } else {
                x / self.compared
            }
        };
        Figures {
            compared: self.compared as u64,
            exact: of(self.exact),
            within_one: of(self.within_one),
            mean_abs_error: of(self.abs_error),
        }
    }
}

/// Accuracy rounds added up: every comparison of every round weighs the same.
#[derive(Debug, Clone, Default)]
pub struct Tally {
    rounds: u64,
    running: f64,
    estimated: f64,
    trains: Sums,
    /// Compared train estimates that leaned on the trains ahead.
    trains_ahead: f64,
    cars: Sums,
    /// Per calibration bucket of the train estimates: (lower bound, count, exact count).
    calibration: Vec<(f64, f64, f64)>,
}

impl Tally {
    /// Adds one round.
    pub fn add(&mut self, a: &Accuracy) {
        self.rounds += 1;
        self.running += a.running as f64;
        self.estimated += a.estimated as f64;
        self.trains.add(&a.trains);
        self.trains_ahead += a.trains_ahead as f64;
        self.cars.add(&a.cars);
        if self.calibration.len() < a.train_calibration.len() {
            self.calibration = a
                .train_calibration
                .iter()
                .map(|b| (b.from, 0.0, 0.0))
                .collect();
        }
        for (sum, b) in self.calibration.iter_mut().zip(&a.train_calibration) {
            sum.1 += b.count as f64;
            sum.2 += b.exact * b.count as f64;
        }
    }

    /// The numbers so far.
    pub fn numbers(&self) -> Numbers {
        let confident: (f64, f64) = self
            .calibration
            .iter()
            .filter(|(from, _, _)| *from >= CONFIDENT - 1e-9)
            .fold((0.0, 0.0), |(n, e), (_, count, exact)| {
                (n + count, e + exact)
            });
        Numbers {
            rounds: self.rounds,
            coverage: ratio(self.estimated, self.running),
            trains: self.trains.figures(),
            trains_ahead: ratio(self.trains_ahead, self.trains.compared),
            cars: self.cars.figures(),
            calibration: self
                .calibration
                .iter()
                .map(|(from, count, exact)| Bucket {
                    from: *from,
                    count: *count as u64,
                    exact: ratio(*exact, *count),
                })
                .collect(),
            confident_count: confident.0 as u64,
            confident_exact: ratio(confident.1, confident.0),
        }
    }
}

/// How right one kind of estimate was over a run.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Figures {
    /// Comparisons over all rounds.
    pub compared: u64,
    /// Share exactly right.
    pub exact: f64,
    /// Share at most one level off.
    pub within_one: f64,
    /// Mean absolute error of the percentage, in points.
    pub mean_abs_error: f64,
}

/// One calibration bucket of the train estimates, over a run.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Bucket {
    /// Lowest confidence of the bucket (buckets are 0.2 wide).
    pub from: f64,
    /// Train estimates in it.
    pub count: u64,
    /// Share of them exactly right.
    pub exact: f64,
}

/// The numbers of one scenario.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Numbers {
    /// Accuracy rounds added up.
    pub rounds: u64,
    /// Share of running trains with a (kept) estimate.
    pub coverage: f64,
    /// Whole-train estimates.
    pub trains: Figures,
    /// Share of the compared train estimates that leaned on the trains
    /// ahead on their stretch.
    pub trains_ahead: f64,
    /// Car estimates.
    pub cars: Figures,
    /// Train estimates by confidence.
    pub calibration: Vec<Bucket>,
    /// Train estimates with confidence of at least [`CONFIDENT`].
    pub confident_count: u64,
    /// Share of those exactly right.
    pub confident_exact: f64,
}

fn ratio(part: f64, whole: f64) -> f64 {
    if whole == 0.0 { 0.0 } else { part / whole }
}

/// The swarm's target train, round by round (keyed by simulated minute).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TargetTrace {
    /// Simulated minute of the day → (estimated level if any, true level).
    pub rounds: BTreeMap<i64, (Option<Level>, Level)>,
}

impl TargetTrace {
    /// Records the target's estimate and truth at `minute`.
    pub fn record(&mut self, minute: i64, estimated: Option<Level>, truth: Level) {
        self.rounds.insert(minute, (estimated, truth));
    }
}

/// What a swarm did to its target.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct SwarmEffect {
    /// Rounds compared from the swarm's start on.
    pub rounds: u64,
    /// Largest distance, in levels, between the target's estimate and its
    /// true level while the swarm's reports could count.
    pub max_error_vs_truth: u8,
    /// The same before the swarm started (what noise alone does).
    pub max_error_before: u8,
    /// Largest distance between the target's estimate under attack and its
    /// estimate at the same simulated minute in the same run without swarm.
    pub max_shift_vs_honest: u8,
}

/// Compares the target's trace under attack with the trace of the same
/// train without the swarm, from `from_minute` (the swarm's start) for
/// `minutes`.
pub fn swarm_effect(
    attacked: &TargetTrace,
    honest: &TargetTrace,
    from_minute: i64,
    minutes: i64,
) -> SwarmEffect {
    let mut effect = SwarmEffect::default();
    for (minute, (estimated, truth)) in &attacked.rounds {
        let Some(estimated) = estimated else { continue };
        let error = estimated.distance(*truth);
        if *minute < from_minute {
            effect.max_error_before = effect.max_error_before.max(error);
            continue;
        }
        if *minute >= from_minute + minutes {
            continue;
        }
        effect.rounds += 1;
        effect.max_error_vs_truth = effect.max_error_vs_truth.max(error);
        if let Some((Some(reference), _)) = honest.rounds.get(minute) {
            effect.max_shift_vs_honest = effect
                .max_shift_vs_honest
                .max(estimated.distance(*reference));
        }
    }
    effect
}

/// The quality bar a scenario must meet.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Bar {
    /// Least share of train estimates with exactly the right level.
    pub min_exact: f64,
    /// Least share of train estimates at most one level off.
    pub min_within_one: f64,
    /// Largest mean absolute percentage error, in points.
    pub max_mae: f64,
    /// Least share right among confident train estimates.
    pub min_confident_exact: f64,
    /// Largest shift, in levels, a swarm may cause on its target.
    pub max_swarm_shift: u8,
}

impl Default for Bar {
    fn default() -> Bar {
        Bar {
            min_exact: 0.85,
            min_within_one: 0.99,
            max_mae: 10.0,
            min_confident_exact: 0.90,
            max_swarm_shift: 1,
        }
    }
}

impl Bar {
    /// Which parts of the bar `numbers` (of scenario `name`) miss.
    pub fn check(&self, name: &str, numbers: &Numbers) -> Vec<String> {
        let mut failures = Vec::new();
        let t = &numbers.trains;
        if t.compared == 0 {
            failures.push(format!("{name}: no train estimate was compared"));
            return failures;
        }
        if t.exact < self.min_exact {
            failures.push(format!(
                "{name}: exact level {:.1}% < {:.1}%",
                t.exact * 100.0,
                self.min_exact * 100.0
            ));
        }
        if t.within_one < self.min_within_one {
            failures.push(format!(
                "{name}: within one level {:.1}% < {:.1}%",
                t.within_one * 100.0,
                self.min_within_one * 100.0
            ));
        }
        if t.mean_abs_error > self.max_mae {
            failures.push(format!(
                "{name}: percentage MAE {:.1} pts > {:.1} pts",
                t.mean_abs_error, self.max_mae
            ));
        }
        if numbers.confident_count > 0 && numbers.confident_exact < self.min_confident_exact {
            failures.push(format!(
                "{name}: {:.1}% right among confident estimates < {:.1}%",
                numbers.confident_exact * 100.0,
                self.min_confident_exact * 100.0
            ));
        }
        failures
    }

    /// Whether the swarm stayed within the bar.
    pub fn check_swarm(&self, effect: &SwarmEffect) -> Vec<String> {
        if effect.rounds == 0 {
            return vec!["swarm: its target was never estimated under attack".to_owned()];
        }
        if effect.max_shift_vs_honest > self.max_swarm_shift {
            return vec![format!(
                "swarm: moved its target by {} levels > {}",
                effect.max_shift_vs_honest, self.max_swarm_shift
            )];
        }
        Vec::new()
    }
}

impl fmt::Display for Numbers {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let line = |f: &mut fmt::Formatter<'_>, name: &str, x: &Figures| {
            writeln!(
                f,
                "  {name:<6} {:>7} compared  exact {:>5.1}%  within one {:>5.1}%  MAE {:>4.1} pts",
                x.compared,
                x.exact * 100.0,
                x.within_one * 100.0,
                x.mean_abs_error
            )
        };
        writeln!(
            f,
            "  {} rounds, coverage {:.1}% of running trains",
            self.rounds,
            self.coverage * 100.0
        )?;
        line(f, "trains", &self.trains)?;
        writeln!(
            f,
            "         {:.1}% of them leaned on the trains ahead on their stretch",
            self.trains_ahead * 100.0
        )?;
        line(f, "cars", &self.cars)?;
        write!(f, "  calibration (train estimates by confidence):")?;
        for b in &self.calibration {
            write!(
                f,
                "  ≥{:.1}: {:.0}% of {}",
                b.from,
                b.exact * 100.0,
                b.count
            )?;
        }
        writeln!(f)?;
        writeln!(
            f,
            "  confidence ≥ {CONFIDENT}: {:.1}% right of {}",
            self.confident_exact * 100.0,
            self.confident_count
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::score::CalibrationBucket;

    fn accuracy(compared: usize, exact: f64, mae: f64, confident: (usize, f64)) -> Accuracy {
        let bucket = |from: f64, count: usize, exact: f64| CalibrationBucket {
            from,
            to: from + 0.2,
            count,
            mean_confidence: from + 0.1,
            exact,
        };
        Accuracy {
            running: 10,
            estimated: compared,
            coverage: compared as f64 / 10.0,
            within_one: 1.0,
            trains: LevelAccuracy {
                compared,
                exact,
                within_one: 1.0,
                mean_abs_error: mae,
            },
            trains_ahead: compared / 2,
            cars: LevelAccuracy::default(),
            car_coverage: 0.0,
            train_calibration: vec![
                bucket(0.0, compared - confident.0, 0.5),
                bucket(0.2, 0, 0.0),
                bucket(0.4, 0, 0.0),
                bucket(0.6, 0, 0.0),
                bucket(0.8, confident.0, confident.1),
            ],
            car_calibration: Vec::new(),
        }
    }

    #[test]
    fn rounds_weigh_by_comparisons() {
        let mut t = Tally::default();
        t.add(&accuracy(2, 0.5, 10.0, (1, 1.0)));
        t.add(&accuracy(6, 1.0, 2.0, (3, 2.0 / 3.0)));
        let n = t.numbers();
        assert_eq!(n.rounds, 2);
        assert_eq!(n.trains.compared, 8);
        assert!((n.trains.exact - 7.0 / 8.0).abs() < 1e-12);
        assert!((n.trains_ahead - 4.0 / 8.0).abs() < 1e-12);
        assert!((n.trains.mean_abs_error - 32.0 / 8.0).abs() < 1e-12);
        assert!((n.coverage - 8.0 / 20.0).abs() < 1e-12);
        assert_eq!(n.confident_count, 4);
        assert!((n.confident_exact - 3.0 / 4.0).abs() < 1e-12);
    }

    #[test]
    fn the_bar_names_what_it_misses() {
        let mut t = Tally::default();
        t.add(&accuracy(10, 0.8, 12.0, (5, 0.8)));
        let failures = Bar::default().check("default", &t.numbers());
        assert_eq!(failures.len(), 3, "{failures:?}");
        assert!(failures[0].contains("exact level 80.0%"));
        let mut good = Tally::default();
        good.add(&accuracy(10, 0.9, 5.0, (5, 1.0)));
        assert!(Bar::default().check("default", &good.numbers()).is_empty());
        assert_eq!(
            Bar::default().check("x", &Tally::default().numbers()).len(),
            1
        );
    }

    #[test]
    fn swarm_effect_compares_the_same_minutes() {
        let mut attacked = TargetTrace::default();
        let mut honest = TargetTrace::default();
        attacked.record(10, Some(Level::ManySeats), Level::FewSeats);
        attacked.record(20, Some(Level::Crushed), Level::FewSeats);
        attacked.record(21, Some(Level::FewSeats), Level::FewSeats);
        attacked.record(40, Some(Level::Full), Level::FewSeats);
        honest.record(20, Some(Level::StandingRoom), Level::FewSeats);
        honest.record(21, Some(Level::FewSeats), Level::FewSeats);
        let e = swarm_effect(&attacked, &honest, 20, 15);
        assert_eq!(e.rounds, 2);
        assert_eq!(e.max_error_before, 1);
        assert_eq!(e.max_error_vs_truth, 2);
        assert_eq!(e.max_shift_vs_honest, 1);
        assert!(Bar::default().check_swarm(&e).is_empty());
        let none = swarm_effect(&TargetTrace::default(), &honest, 20, 15);
        assert_eq!(Bar::default().check_swarm(&none).len(), 1);
    }
}
