//! Accuracy scoring against the simulator truth.
//!
//! [`score`] compares the estimates the service published with the true
//! occupancy of every running train, at the level of whole trains and of
//! single cars: how often the level is exactly right or within one step, how
//! far the percentage is off, how many trains have an estimate at all, and
//! whether the published confidence means something (a calibration table).
//! Shares are fractions in 0..1; percentages are points of nominal capacity.

use std::collections::HashMap;
use std::fmt;

use crowd_proto::level::Level;
use crowd_proto::pb::v1::{EstimateSource, OccupancyEstimate, TripRef};
use serde::Serialize;

use crate::sim::TrainTruth;

/// What to compare.
#[derive(Debug, Clone, PartialEq)]
pub struct ScoreOptions {
    /// Ignore train and car estimates backed by fewer distinct reporters, to
    /// see how good the well-supported estimates are (0 keeps all).
    pub min_reporters: u32,
    /// Number of equal-width confidence buckets in the calibration tables.
    pub calibration_buckets: usize,
}

impl Default for ScoreOptions {
    fn default() -> ScoreOptions {
        ScoreOptions {
            min_reporters: 0,
            calibration_buckets: 5,
        }
    }
}

/// How well the estimates match the truth.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Accuracy {
    /// Trains running.
    pub running: usize,
    /// Running trains with a (kept) estimate.
    pub estimated: usize,
    /// `estimated / running`: share of trains a rider gets an answer for.
    pub coverage: f64,
    /// Headline figure: share of compared cars estimated within one level
    /// (0 when no car was compared).
    pub within_one: f64,
    /// Whole-train estimates against whole-train truth.
    pub trains: LevelAccuracy,
    /// Of those, the ones that leaned on the trains ahead on their stretch
    /// (`source` `CROWD_AND_TRAINS_AHEAD`).
    pub trains_ahead: usize,
    /// Car estimates against the truth of the same car.
    pub cars: LevelAccuracy,
    /// Cars of running trains with a (kept) car estimate, over all cars of
    /// running trains.
    pub car_coverage: f64,
    /// Train estimates grouped by published confidence.
    pub train_calibration: Vec<CalibrationBucket>,
    /// Car estimates grouped by published confidence.
    pub car_calibration: Vec<CalibrationBucket>,
}

/// Agreement of a set of estimates with the truth.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct LevelAccuracy {
    /// Estimates compared.
    pub compared: usize,
    /// Share with exactly the true level.
    pub exact: f64,
    /// Share at most one level off.
    pub within_one: f64,
    /// Mean absolute difference of occupancy percentage, in points.
    pub mean_abs_error: f64,
}

/// Estimates whose confidence falls in `[from, to)` (the last bucket
/// includes 1.0), and how often they were exactly right: a well-calibrated
/// service is right more often when it says it is confident.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CalibrationBucket {
    /// Lowest confidence of the bucket.
    pub from: f64,
    /// Upper bound of the bucket.
    pub to: f64,
    /// Estimates in the bucket.
    pub count: usize,
    /// Their mean published confidence (0 when empty).
    pub mean_confidence: f64,
    /// Share of them with exactly the true level (0 when empty).
    pub exact: f64,
}

/// One comparison: estimated level, true level, percentages, confidence.
#[derive(Debug, Clone, Copy)]
struct Pair {
    estimated: Level,
    truth: Level,
    estimated_pct: f64,
    true_pct: f64,
    confidence: f64,
}

/// Compares `estimates` with the `truth` of the running trains. Estimates
/// are matched to trains by (trip_id, start_date), cars by
/// carriage_sequence; estimates of trains not running, estimates with an
/// UNSPECIFIED level and (with `min_reporters`) thinly supported ones are
/// left out. If a trip has several estimates, the first counts.
pub fn score(
    truth: &[TrainTruth],
    estimates: &[OccupancyEstimate],
    opts: &ScoreOptions,
) -> Accuracy {
    let by_trip = index(estimates);
    let mut train_pairs = Vec::new();
    let mut car_pairs = Vec::new();
    let mut estimated = 0;
    let mut trains_ahead = 0;
    let mut cars_running = 0;
    for train in truth {
        cars_running += train.cars.len();
        let Some(est) = by_trip.get(&key(&train.trip)) else {
            continue;
        };
        if let Some(level) = Level::from_number(est.level)
            && est.reporters >= opts.min_reporters
        {
            estimated += 1;
            if est.source == EstimateSource::CrowdAndTrainsAhead as i32 {
                trains_ahead += 1;
            }
            train_pairs.push(Pair {
                estimated: level,
                truth: train.level,
                estimated_pct: f64::from(est.occupancy_percentage),
                true_pct: train.percentage,
                confidence: f64::from(est.confidence),
            });
        }
        for car in &train.cars {
            let car_est = est
                .cars
                .iter()
                .find(|c| c.carriage_sequence == car.carriage_sequence)
                .filter(|c| c.reporters >= opts.min_reporters);
            if let Some((c, level)) = car_est.and_then(|c| Some((c, Level::from_number(c.level)?)))
            {
                car_pairs.push(Pair {
                    estimated: level,
                    truth: car.level,
                    estimated_pct: f64::from(c.occupancy_percentage),
                    true_pct: car.percentage,
                    confidence: f64::from(c.confidence),
                });
            }
        }
    }
    let cars = level_accuracy(&car_pairs);
    Accuracy {
        running: truth.len(),
        estimated,
        coverage: ratio(estimated, truth.len()),
        within_one: cars.within_one,
        trains: level_accuracy(&train_pairs),
        trains_ahead,
        car_coverage: ratio(car_pairs.len(), cars_running),
        cars,
        train_calibration: calibration(&train_pairs, opts.calibration_buckets),
        car_calibration: calibration(&car_pairs, opts.calibration_buckets),
    }
}

/// How many levels the published estimate of `trip` is from its true level
/// (e.g. to measure a swarm's effect on its target); `None` when the train
/// is not running or has no estimate with a level.
pub fn level_error(
    truth: &[TrainTruth],
    estimates: &[OccupancyEstimate],
    trip: &TripRef,
) -> Option<u8> {
    let train = truth.iter().find(|t| key(&t.trip) == key(trip))?;
    let est = index(estimates).get(&key(trip)).copied()?;
    Some(Level::from_number(est.level)?.distance(train.level))
}

fn key(trip: &TripRef) -> (&str, &str) {
    (trip.trip_id.as_str(), trip.start_date.as_str())
}

fn index(estimates: &[OccupancyEstimate]) -> HashMap<(&str, &str), &OccupancyEstimate> {
    let mut by_trip = HashMap::new();
    for est in estimates {
        if let Some(trip) = &est.trip {
            by_trip.entry(key(trip)).or_insert(est);
        }
    }
    by_trip
}

fn ratio(part: usize, whole: usize) -> f64 {
    if whole == 0 {
        0.0
    } else {
        part as f64 / whole as f64
    }
}

fn level_accuracy(pairs: &[Pair]) -> LevelAccuracy {
    let n = pairs.len();
    let count = |max: u8| {
        pairs
            .iter()
            .filter(|p| p.estimated.distance(p.truth) <= max)
            .count()
    };
    let abs_error: f64 = pairs
        .iter()
        .map(|p| (p.estimated_pct - p.true_pct).abs())
        .sum();
    LevelAccuracy {
        compared: n,
        exact: ratio(count(0), n),
        within_one: ratio(count(1), n),
        mean_abs_error: if n == 0 { 0.0 } else { abs_error / n as f64 },
    }
}

fn calibration(pairs: &[Pair], buckets: usize) -> Vec<CalibrationBucket> {
    let buckets = buckets.max(1);
    let width = 1.0 / buckets as f64;
    let mut out: Vec<CalibrationBucket> = (0..buckets)
        .map(|b| CalibrationBucket {
            from: b as f64 * width,
            to: (b + 1) as f64 * width,
            count: 0,
            mean_confidence: 0.0,
            exact: 0.0,
        })
        .collect();
    for p in pairs {
        let c = p.confidence.clamp(0.0, 1.0);
        let b = ((c / width) as usize).min(buckets - 1);
        let bucket = &mut out[b];
        bucket.count += 1;
        bucket.mean_confidence += c;
        if p.estimated == p.truth {
            bucket.exact += 1.0;
        }
    }
    for bucket in &mut out {
        if bucket.count > 0 {
            bucket.mean_confidence /= bucket.count as f64;
            bucket.exact /= bucket.count as f64;
        }
    }
    out
}

impl fmt::Display for Accuracy {
    /// One line: coverage, then trains and cars.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "coverage {}/{} ({:.0}%), trains {}, cars {}",
            self.estimated,
            self.running,
            self.coverage * 100.0,
            self.trains,
            self.cars
        )
    }
}

impl fmt::Display for LevelAccuracy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} compared: {:.0}% exact, {:.0}% within one, MAE {:.1} pts",
            self.compared,
            self.exact * 100.0,
            self.within_one * 100.0,
            self.mean_abs_error
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sim::truth::level_of;
    use crate::sim::{CarTruth, Direction};
    use crowd_proto::pb::v1::CarEstimate;

    fn trip(id: &str) -> TripRef {
        TripRef {
            trip_id: id.into(),
            start_date: "20261126".into(),
            route_id: "B".into(),
        }
    }

    fn train(id: &str, cars: &[f64]) -> TrainTruth {
        let percentage = cars.iter().sum::<f64>() / cars.len() as f64;
        TrainTruth {
            trip: trip(id),
            direction: Direction::Outbound,
            position: (48.8, 2.3),
            cars: cars
                .iter()
                .enumerate()
                .map(|(i, &p)| CarTruth {
                    carriage_sequence: i as u32 + 1,
                    on_board: (p * 2.0) as u32,
                    percentage: p,
                    level: level_of(p),
                })
                .collect(),
            on_board: 0,
            percentage,
            level: level_of(percentage),
            last_stop: "A".into(),
            next_stop: None,
            progress: 0.5,
        }
    }

    fn car(seq: u32, pct: u32, confidence: f32, reporters: u32) -> CarEstimate {
        CarEstimate {
            carriage_sequence: seq,
            level: Level::from_percentage(pct).number(),
            occupancy_percentage: pct,
            confidence,
            reporters,
            newest_report_at: None,
        }
    }

    fn estimate(id: &str, pct: u32, confidence: f32, reporters: u32) -> OccupancyEstimate {
        OccupancyEstimate {
            trip: Some(trip(id)),
            level: Level::from_percentage(pct).number(),
            occupancy_percentage: pct,
            confidence,
            reporters,
            ..Default::default()
        }
    }

    /// Three trains running; T1 right, T2 one level off, T3 not estimated,
    /// plus an estimate of a train that is not running.
    fn case() -> (Vec<TrainTruth>, Vec<OccupancyEstimate>) {
        // T1: cars 20 % and 60 % → train 40 %, few seats.
        // T2: cars 80 % and 120 % → train 100 %, crushed.
        // T3: cars 5 % and 5 %.
        let truth = vec![
            train("T1", &[20.0, 60.0]),
            train("T2", &[80.0, 120.0]),
            train("T3", &[5.0, 5.0]),
        ];
        let mut e1 = estimate("T1", 45, 0.9, 6);
        e1.cars = vec![car(1, 20, 0.9, 3), car(2, 75, 0.3, 3)];
        let mut e2 = estimate("T2", 90, 0.3, 2);
        e2.cars = vec![car(2, 150, 0.1, 1)];
        let stray = estimate("T9", 50, 0.9, 9);
        (truth, vec![e1, e2, stray])
    }

    #[test]
    fn trains_and_cars_are_scored_by_hand() {
        let (truth, estimates) = case();
        let a = score(&truth, &estimates, &ScoreOptions::default());
        assert_eq!(a.running, 3);
        assert_eq!(a.estimated, 2);
        assert!((a.coverage - 2.0 / 3.0).abs() < 1e-12);
        // Trains: T1 few seats = few seats (|45-40| = 5);
        // T2 standing vs crushed, one off (|90-100| = 10).
        assert_eq!(a.trains.compared, 2);
        assert_eq!(a.trains.exact, 0.5);
        assert_eq!(a.trains.within_one, 1.0);
        assert_eq!(a.trains.mean_abs_error, 7.5);
        // Cars: T1c1 many seats = many seats (0 pts); T1c2 standing vs few
        // seats, one off (15 pts); T2c2 not boarding vs crushed, two off
        // (30 pts). T2c1 has no estimate.
        assert_eq!(a.cars.compared, 3);
        assert!((a.cars.exact - 1.0 / 3.0).abs() < 1e-12);
        assert!((a.cars.within_one - 2.0 / 3.0).abs() < 1e-12);
        assert_eq!(a.cars.mean_abs_error, 15.0);
        assert_eq!(a.within_one, a.cars.within_one);
        assert_eq!(a.car_coverage, 0.5);
        assert_eq!(a.trains_ahead, 0);
    }

    #[test]
    fn estimates_leaning_on_the_trains_ahead_are_counted() {
        let (truth, mut estimates) = case();
        for e in &mut estimates {
            e.source = EstimateSource::CrowdAndTrainsAhead as i32;
        }
        let a = score(&truth, &estimates, &ScoreOptions::default());
        // Two compared; the estimate of a train not running is not.
        assert_eq!(a.trains_ahead, 2);
    }

    #[test]
    fn min_reporters_keeps_only_supported_estimates() {
        let (truth, estimates) = case();
        let opts = ScoreOptions {
            min_reporters: 3,
            ..ScoreOptions::default()
        };
        let a = score(&truth, &estimates, &opts);
        // T2 (2 reporters) and its car (1) drop out.
        assert_eq!(a.estimated, 1);
        assert_eq!(a.trains.compared, 1);
        assert_eq!(a.trains.exact, 1.0);
        assert_eq!(a.cars.compared, 2);
        assert_eq!(a.cars.exact, 0.5);
        assert_eq!(a.cars.mean_abs_error, 7.5);
    }

    #[test]
    fn calibration_groups_by_confidence() {
        let (truth, estimates) = case();
        let a = score(&truth, &estimates, &ScoreOptions::default());
        let t = &a.train_calibration;
        assert_eq!(t.len(), 5);
        // T2 at 0.3 (wrong) in [0.2, 0.4); T1 at 0.9 (right) in [0.8, 1.0].
        assert_eq!((t[1].count, t[1].exact), (1, 0.0));
        assert_eq!((t[4].count, t[4].exact), (1, 1.0));
        assert!((t[4].mean_confidence - 0.9).abs() < 1e-6);
        assert_eq!(t[0].count + t[2].count + t[3].count, 0);
        let c = &a.car_calibration;
        // Cars: 0.9 right, 0.3 wrong, 0.1 wrong.
        assert_eq!((c[0].count, c[0].exact), (1, 0.0));
        assert_eq!((c[1].count, c[1].exact), (1, 0.0));
        assert_eq!((c[4].count, c[4].exact), (1, 1.0));
    }

    #[test]
    fn nothing_running_or_nothing_estimated_scores_zero_without_dividing_by_zero() {
        let a = score(&[], &[], &ScoreOptions::default());
        assert_eq!((a.running, a.coverage, a.within_one), (0, 0.0, 0.0));
        assert_eq!(a.trains, LevelAccuracy::default());
        let (truth, _) = case();
        let a = score(&truth, &[], &ScoreOptions::default());
        assert_eq!((a.running, a.estimated, a.coverage), (3, 0, 0.0));
        assert!(
            serde_json::to_string(&a)
                .unwrap()
                .contains("\"coverage\":0.0")
        );
    }

    #[test]
    fn unspecified_levels_and_duplicates_do_not_count_twice() {
        let (truth, _) = case();
        let mut blank = estimate("T1", 45, 0.9, 6);
        blank.level = 0;
        let second = estimate("T1", 5, 0.9, 6);
        let a = score(&truth, &[blank, second], &ScoreOptions::default());
        assert_eq!(a.estimated, 0);
        assert_eq!(a.trains.compared, 0);
    }

    #[test]
    fn level_error_measures_one_train() {
        let (truth, estimates) = case();
        assert_eq!(level_error(&truth, &estimates, &trip("T1")), Some(0));
        assert_eq!(level_error(&truth, &estimates, &trip("T2")), Some(1));
        assert_eq!(level_error(&truth, &estimates, &trip("T3")), None);
        assert_eq!(level_error(&truth, &estimates, &trip("T9")), None);
    }

    #[test]
    fn display_is_one_readable_line() {
        let (truth, estimates) = case();
        let a = score(&truth, &estimates, &ScoreOptions::default());
        assert_eq!(
            a.to_string(),
            "coverage 2/3 (67%), trains 2 compared: 50% exact, 100% within one, MAE 7.5 pts, \
             cars 3 compared: 33% exact, 67% within one, MAE 15.0 pts"
        );
    }
}
