//! Confidence as a probability: how likely the published level is right.
//!
//! The estimate's percentage is treated as the truth plus an error of
//! standard deviation `se = spread / √W`, where `spread` is the weighted
//! root-mean-square distance of the reported percentages from the
//! published one (at least
//! [`MIN_SPREAD`]: one rider's judgement is never better than that) and `W`
//! the total weight of the reports, which a fresh report of a device of
//! trust 1 raises by 1 and older or doubtful ones by less. The confidence is
//! the probability, under that normal error, that the truth lies in the
//! published level's band:
//!
//! `confidence = Φ((upper − p) / σ) + Φ((p − lower) / σ) − 1`,
//! `σ = √(se² + e²)` with `e` = [`SYSTEMATIC_ERROR`]
//!
//! (an open-ended band has no edge on that side), times the share of the
//! weight within one level of the published one. So it rises with more,
//! fresher, more trusted and more agreeing reports, and it falls near a band
//! edge, where a few points of error change the level. The loadgen quality
//! run checks the calibration: among estimates at confidence ≥ 0.8, the
//! share with the right level.

use crowd_proto::level::Level;

/// Least spread of reported percentages, in points: a rider giving a level
/// only places the car within a 30-point band (σ ≈ 9), and riders misjudge.
pub const MIN_SPREAD: f64 = 12.0;

/// Error no number of reports removes, in points: the load changes between
/// a report and its reading, and cars nobody reported on are not seen.
///
/// Fitted on the simulator (`loadgen quality --offline`, seed 11) so that
/// the confidence buckets are honest: with 9 points, about nine in ten
/// train estimates at confidence ≥ 0.8 have the right level (12 points
/// kept every estimate below 0.8 although those at 0.6–0.8 were right nine
/// times in ten; 7 points let the top bucket fall below nine in ten).
pub const SYSTEMATIC_ERROR: f64 = 9.0;

/// Standard error of a weighted mean percentage.
pub fn std_error(spread: f64, weight: f64) -> f64 {
    let spread = if spread.is_finite() {
        spread.max(MIN_SPREAD)
    } else {
        MIN_SPREAD
    };
    if weight.is_finite() && weight > 0.0 {
        spread / weight.sqrt()
    } else {
        f64::INFINITY
    }
}

/// Probability that the true percentage lies in `level`'s band when the
/// estimate is `percentage` with standard error `se`.
pub fn band_probability(level: Level, percentage: f64, se: f64) -> f64 {
    if !percentage.is_finite() || se.is_nan() {
        return 0.0;
    }
    if se <= 0.0 {
        return if Level::from_percentage(percentage.max(0.0) as u32) == level {
            1.0
        } else {
            0.0
        };
    }
    let se = se.hypot(SYSTEMATIC_ERROR);
    let (lower, upper) = band(level);
    let below = lower.map_or(1.0, |l| phi((percentage - l) / se));
    let above = upper.map_or(1.0, |u| phi((u - percentage) / se));
    (below + above - 1.0).clamp(0.0, 1.0)
}

/// The band of a level, in percentage points: `None` for an open end.
pub(super) fn band(level: Level) -> (Option<f64>, Option<f64>) {
    match level {
        Level::Empty => (None, Some(10.0)),
        Level::ManySeats => (Some(10.0), Some(40.0)),
        Level::FewSeats => (Some(40.0), Some(70.0)),
        Level::StandingRoom => (Some(70.0), Some(100.0)),
        Level::Crushed => (Some(100.0), Some(130.0)),
        Level::Full => (Some(130.0), Some(150.0)),
        Level::NotAccepting => (Some(150.0), None),
    }
}

/// The standard normal distribution function.
fn phi(x: f64) -> f64 {
    if x.is_nan() {
        return 0.5;
    }
    0.5 * (1.0 + erf(x / std::f64::consts::SQRT_2))
}

/// The error function, to within 1.5e-7 (Abramowitz & Stegun 7.1.26).
fn erf(x: f64) -> f64 {
    let sign = if x < 0.0 { -1.0 } else { 1.0 };
    let x = x.abs();
    let t = 1.0 / (1.0 + 0.327_591_1 * x);
    let poly = t
        * (0.254_829_592
            + t * (-0.284_496_736
                + t * (1.421_413_741 + t * (-1.453_152_027 + t * 1.061_405_429))));
    sign * (1.0 - poly * (-x * x).exp())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_error_function_matches_known_values() {
        assert!(erf(0.0).abs() < 1e-7);
        assert!((erf(1.0) - 0.842_700_79).abs() < 1e-6);
        assert!((erf(-2.0) + 0.995_322_27).abs() < 1e-6);
        assert!((phi(1.959_964) - 0.975).abs() < 1e-5);
    }

    #[test]
    fn confidence_is_high_mid_band_and_half_at_an_edge() {
        // Even with a tiny error, the systematic error keeps it below 1.
        let sure = band_probability(Level::FewSeats, 55.0, 3.0);
        assert!(sure > 0.75 && sure < 0.99, "{sure}");
        let edge = band_probability(Level::FewSeats, 40.0, 3.0);
        assert!((edge - 0.5).abs() < 0.01, "{edge}");
        let outside = band_probability(Level::FewSeats, 30.0, 3.0);
        assert!(outside < 0.25, "{outside}");
        let vague = band_probability(Level::FewSeats, 55.0, 30.0);
        assert!(vague < 0.4, "{vague}");
        // Open-ended bands lose nothing on their open side.
        let empty = band_probability(Level::Empty, 0.0, 3.0);
        assert!(empty > 0.75, "{empty}");
        assert!(band_probability(Level::NotAccepting, 300.0, 3.0) > 0.99);
    }

    #[test]
    fn more_weight_means_a_smaller_error() {
        assert!(std_error(20.0, 4.0) < std_error(20.0, 1.0));
        assert_eq!(std_error(1.0, 1.0), MIN_SPREAD);
        assert_eq!(std_error(f64::NAN, 4.0), MIN_SPREAD / 2.0);
        assert!(std_error(20.0, 0.0).is_infinite());
        assert!(band_probability(Level::Full, 140.0, f64::INFINITY) < 1e-6);
        assert_eq!(band_probability(Level::Full, f64::NAN, 1.0), 0.0);
    }
}
