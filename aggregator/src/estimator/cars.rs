//! The train's level as the level of the mean of its cars.
//!
//! A train's load is the mean of its cars' loads (cars have the same
//! capacity), and its level is the level of that mean. Riders do not see
//! the mean: each reports the car they ride in, and they ride (and report)
//! in each car in proportion to how full it is. So the median rider
//! describes the fuller cars, and a median of levels is not the level of a
//! mean (cars at 65 % and 75 % are "few seats" and "standing", the train
//! at 70 % is "standing"). Estimating each car from its own riders and
//! averaging the cars undoes both: every car counts once however many ride
//! in it, and percentages average where levels do not.
//!
//! - **Each car** is the robust centre of its riders' votes (one vote per
//!   device, its latest; the weighted median level, the mean percentage
//!   within one level of it), pulled toward the train's rider consensus
//!   with the weight of [`CAR_PRIOR_WEIGHT`] fresh reports: a car one stale
//!   or doubtful report speaks for stays near what the train's other riders
//!   say.
//! - **The train** is the mean of its reported cars (a report about the
//!   whole train, car 0, counts as one more car).
//! - **No single device and no crowd of newcomers moves it far.** A mean
//!   can be dragged by one car, so the mean's level is kept only when it
//!   is within [`MAX_ROBUST_SHIFT`] of the level of the same mean without
//!   the single most influential device, without a burst of fresh devices
//!   ([`super::burst`]) and, when newcomers are many enough for their cap
//!   to bind and anybody established reports on the train, without the
//!   newcomers; otherwise the train keeps the weighted median of its
//!   riders, which a minority cannot move. (Requiring the very same level
//!   cost 2–4 points of exact level on the simulator, seeds 11–13: with
//!   three or four cars reported, the level of their mean often hangs on
//!   one rider, honest as a rule. One level is what the quality bar allows
//!   a swarm.)
//! - **Confidence** is, as for the median, the probability that the true
//!   percentage lies in the published level's band, here with the
//!   standard error of the mean of cars and [`CAR_SYSTEMATIC_ERROR`] on
//!   top of [`confidence::SYSTEMATIC_ERROR`].

use crowd_proto::level::Level;

use super::{Summary, Vote, confidence, summarize};

/// Weight, in fresh reports of trust 1, of the train's rider consensus as
/// the starting point of each car's estimate.
/// (Fitted on the simulator: 0.1 beats 0.5 by two points of exact level;
/// the rider consensus overstates uneven trains, so it makes a poor
/// starting point for their emptier cars.)
pub const CAR_PRIOR_WEIGHT: f64 = 0.1;

/// Votes further than this many levels from the train's rider consensus do
/// not count toward its cars: cars of one train differ by about a level
/// either way (riders crowd near the platform entrances) and honest riders
/// misjudge by one, so a car reported three levels off the rest of the
/// train is a liar or a spammer (without this, 10 % of liars saying FULL
/// cost the mean of cars eight points of exact level).
pub const MAX_CAR_LEVELS: u8 = 2;

/// Levels by which the mean of cars may differ from the same mean without
/// its single most influential device and without newcomers that are many
/// (or a burst): within it, the mean stands; beyond it, the train keeps
/// the weighted median of its riders.
pub const MAX_ROBUST_SHIFT: u8 = 1;

/// Error of the mean of cars no number of reports removes, in points, on
/// top of its standard error (and of [`confidence::SYSTEMATIC_ERROR`]):
/// the cars nobody reported on, and loads that changed at a stop nobody
/// reported from. Fitted on the simulator (seeds 11 and 12): with 5
/// points the estimates at confidence 0.8 or more were right 86 % of the
/// time on seed 11, with 6 all of the few that reach it are.
pub const CAR_SYSTEMATIC_ERROR: f64 = 6.0;

/// One car's votes and estimate.
struct Car<'v, 'a> {
    car: u32,
    votes: Vec<(&'v Vote<'a>, f64)>,
    pct: f64,
    /// Variance of `pct`, in points².
    variance: f64,
}

/// The estimate of one car from `votes`, pulled toward `prior`: its
/// percentage and the variance of it.
fn car_estimate(votes: &[(&Vote<'_>, f64)], scale: f64, prior: f64) -> Option<(f64, f64)> {
    let s = summarize(votes.iter().copied(), Some(scale))?;
    let w = s.weight + CAR_PRIOR_WEIGHT;
    let pct = (s.weight * s.pct + CAR_PRIOR_WEIGHT * prior) / w;
    let spread = s.spread.max(confidence::MIN_SPREAD);
    let variance = spread * spread / w;
    pct.is_finite().then_some((pct, variance))
}

fn cars_of<'v, 'a>(votes: &[(&'v Vote<'a>, f64)], scale: f64, prior: f64) -> Vec<Car<'v, 'a>> {
    let mut sorted: Vec<(&Vote<'_>, f64)> = votes.to_vec();
    sorted.sort_by_key(|(v, _)| (v.obs.carriage_sequence, v.obs.device));
    let mut cars: Vec<Car<'_, '_>> = Vec::new();
    for (v, f) in sorted {
        match cars.last_mut() {
            Some(c) if c.car == v.obs.carriage_sequence => c.votes.push((v, f)),
            _ => cars.push(Car {
                car: v.obs.carriage_sequence,
                votes: vec![(v, f)],
                pct: 0.0,
                variance: 0.0,
            }),
        }
    }
    cars.retain_mut(|c| match car_estimate(&c.votes, scale, prior) {
        Some((pct, variance)) => {
            c.pct = pct;
            c.variance = variance;
            true
        }
        None => false,
    });
    cars
}

/// The mean of the cars' estimates and its variance.
fn mean_of(cars: &[Car<'_, '_>]) -> Option<(f64, f64)> {
    if cars.is_empty() {
        return None;
    }
    let n = cars.len() as f64;
    let mean = cars.iter().map(|c| c.pct).sum::<f64>() / n;
    let variance = cars.iter().map(|c| c.variance).sum::<f64>() / (n * n);
    Some((mean, variance))
}

/// The mean of the cars without the one device that moves it most.
fn without_most_influential(cars: &[Car<'_, '_>], scale: f64, prior: f64) -> Option<f64> {
    let (mean, _) = mean_of(cars)?;
    let n = cars.len() as f64;
    let total = mean * n;
    let mut best: Option<(f64, f64)> = None;
    for car in cars {
        for i in 0..car.votes.len() {
            let without = if car.votes.len() == 1 {
                if cars.len() == 1 {
                    continue;
                }
                (total - car.pct) / (n - 1.0)
            } else {
                let mut rest = car.votes.clone();
                rest.remove(i);
                match car_estimate(&rest, scale, prior) {
                    Some((pct, _)) => (total - car.pct + pct) / n,
                    None => continue,
                }
            };
            let moved = (without - mean).abs();
            if best.is_none_or(|(m, _)| moved > m) {
                best = Some((moved, without));
            }
        }
    }
    Some(best.map_or(mean, |(_, without)| without))
}

/// The level a fractional percentage falls in (99.6 % is still standing).
pub(super) fn level_of(pct: f64) -> Level {
    Level::from_percentage(pct.clamp(0.0, f64::from(u32::MAX)).floor() as u32)
}

/// The train's summary from its cars, or `riders` (the weighted median of
/// its riders) when the mean of the cars is not robust to one device or to
/// the newcomers.
pub(super) fn train_from_cars(votes: &[(&Vote<'_>, f64)], scale: f64, riders: Summary) -> Summary {
    let prior = riders.pct;
    let near: Vec<(&Vote<'_>, f64)> = votes
        .iter()
        .filter(|(v, _)| v.level.distance(riders.level) <= MAX_CAR_LEVELS)
        .copied()
        .collect();
    let votes = &near[..];
    let cars = cars_of(votes, scale, prior);
    let Some((mean, variance)) = mean_of(&cars) else {
        return riders;
    };
    let level = level_of(mean);
    // Newcomers are left out of the check when they are many (their cap
    // binds) and there is anybody established to go by; a burst of them
    // always, when anybody else reports.
    let established = votes.iter().any(|(v, _)| !v.newcomer);
    let others = votes.iter().any(|(v, _)| !v.in_burst);
    let robust_votes: Vec<(&Vote<'_>, f64)> = votes
        .iter()
        .filter(|(v, _)| !(others && v.in_burst))
        .filter(|(v, _)| !(established && scale < 1.0 && v.newcomer))
        .copied()
        .collect();
    let robust_cars = cars_of(&robust_votes, scale, prior);
    let robust = without_most_influential(&robust_cars, scale, prior);
    if robust.is_none_or(|r| level_of(r).distance(level) > MAX_ROBUST_SHIFT) {
        return riders;
    }
    let se = variance.sqrt().hypot(CAR_SYSTEMATIC_ERROR);
    let confidence = confidence::band_probability(level, mean, se) * riders.agreement;
    Summary {
        level,
        percentage: mean.round().clamp(0.0, f64::from(super::MAX_PERCENTAGE)) as u32,
        pct: mean,
        confidence: confidence.clamp(0.0, 1.0) as f32,
        ..riders
    }
}
