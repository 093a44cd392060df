//! The riders' estimate of a whole train combined with what the trains
//! ahead of it said on the same stretch ([`crate::profile`]).
//!
//! Both are treated as the truth plus a normal error: the riders' with the
//! standard error of their weighted percentage (which grows as their
//! reports age or predate the latest stop, since those weigh less) and
//! [`confidence::SYSTEMATIC_ERROR`]; the trains ahead with
//! [`AHEAD_ERROR`]. The combination is their inverse-variance average, and
//! its confidence the probability that the truth lies in its level's band
//! under the combined error, times the riders' agreement.
//! ([`confidence::band_probability`] adds [`confidence::SYSTEMATIC_ERROR`]
//! once more on top, as it does for every estimate; [`AHEAD_ERROR`] was
//! fitted with that, for the calibration of the confident estimates.)

use super::cars::level_of;
use super::{MAX_PERCENTAGE, Summary, confidence};

/// Typical distance, in points, between a train's load on a stretch and
/// the moving average of the trains ahead of it there.
pub const AHEAD_ERROR: f64 = 10.0;

/// Distance, in combined standard errors, beyond which the riders and the
/// trains ahead are taken to disagree about different things.
pub const CONFLICT_SIGMAS: f64 = 2.0;

/// `riders` moved toward `ahead` by their relative precision.
pub(super) fn blend(riders: Summary, ahead: f64) -> Summary {
    if !ahead.is_finite() {
        return riders;
    }
    let ahead = ahead.clamp(0.0, f64::from(MAX_PERCENTAGE));
    let own =
        confidence::std_error(riders.spread, riders.weight).hypot(confidence::SYSTEMATIC_ERROR);
    // A prior far off what the riders say (a train ahead held up, or
    // the one behind a cancelled one) is heard less: its precision falls
    // with the square of the distance beyond [`CONFLICT_SIGMAS`].
    let distance = (riders.pct - ahead).abs() / own.hypot(AHEAD_ERROR);
    let trust_ahead = if distance > CONFLICT_SIGMAS {
        (CONFLICT_SIGMAS / distance).powi(2)
    } else {
        1.0
    };
    let (own_precision, ahead_precision) = (own.powi(-2), trust_ahead * AHEAD_ERROR.powi(-2));
    let precision = own_precision + ahead_precision;
    let pct = (riders.pct * own_precision + ahead * ahead_precision) / precision;
    if !pct.is_finite() {
        return riders;
    }
    let level = level_of(pct);
    let se = precision.sqrt().recip();
    let confidence = confidence::band_probability(level, pct, se) * riders.agreement;
    Summary {
        level,
        percentage: pct.round().clamp(0.0, f64::from(MAX_PERCENTAGE)) as u32,
        pct,
        confidence: confidence.clamp(0.0, 1.0) as f32,
        ..riders
    }
}
