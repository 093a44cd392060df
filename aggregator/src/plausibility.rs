//! Plausibility of one report: does it look like it came from a rider on
//! that train, at that moment? Pure functions, no IO, time passed in.
//!
//! Two clues, each a factor in 0..1 on the report's weight:
//!
//! - **Where.** The train is where its riders' recent position fixes agree
//!   it is (the coordinate-wise median of other devices' fixes from the last
//!   sixth of a half-life, at least two of them). A report whose own fix is
//!   farther than [`TOLERANCE_M`] plus twice its stated accuracy from there
//!   keeps `(tolerance / distance)²` of its weight (at least
//!   [`MIN_FACTOR`]): 4 km off with a 2 km tolerance keeps a quarter, 20 km
//!   off keeps 2 %. With no consensus yet, nothing is judged.
//! - **When.** A report that reached the server long after it was observed
//!   (received − observed) is stale by the time anyone reads it, and old
//!   reports are what a replaying or backdating client sends. Beyond a grace
//!   of a sixth of a half-life (a phone in a tunnel), it loses half its
//!   weight per half-life of delay, on top of the ordinary age decay.
//!
//! The reference window and the grace scale with the half-life, so a
//! compressed simulation (shorter half-life) judges like service does.

use geo::{Distance, Haversine, Point};

use crowd_proto::pb::store::{Fix, Position, StoredReport};

/// Distance from the train's consensus position within which any fix is
/// plausible, before accuracy: a long train plus GPS trouble in a station.
pub const TOLERANCE_M: f64 = 2_000.0;
/// Stated accuracies above this are treated as this (a fix that vague says
/// nothing about where the rider is).
const MAX_ACCURACY_M: f64 = 2_000.0;
/// The least a report keeps of its weight for being implausible.
pub const MIN_FACTOR: f64 = 0.02;
/// Fixes kept per train to find where it is.
pub const MAX_FIXES: usize = 16;
/// Fixes (from other devices) needed before a position is judged.
const MIN_REFERENCE_FIXES: usize = 2;

/// Why a report lost weight.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Flag {
    /// Its position is far from where the train's riders say it is.
    FarFromTrain,
    /// It arrived long after it was observed.
    LateArrival,
}

impl Flag {
    /// The metric label of the flag.
    pub fn label(self) -> &'static str {
        match self {
            Flag::FarFromTrain => "far_from_train",
            Flag::LateArrival => "late_arrival",
        }
    }
}

/// The verdict on one report.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Assessment {
    /// Share of its weight the report keeps, in `MIN_FACTOR..=1`.
    pub factor: f64,
    /// The clues that cost it weight (at most one of each).
    pub far: bool,
    pub late: bool,
}

impl Assessment {
    /// The flags raised.
    pub fn flags(&self) -> impl Iterator<Item = Flag> {
        [
            self.far.then_some(Flag::FarFromTrain),
            self.late.then_some(Flag::LateArrival),
        ]
        .into_iter()
        .flatten()
    }
}

/// Judges `report` against the train's recent `fixes`, with `half_life_ms`
/// setting the time scales.
pub fn assess(report: &StoredReport, fixes: &[Fix], half_life_ms: i64) -> Assessment {
    let half_life_ms = half_life_ms.max(1);
    let recent_ms = (half_life_ms / 6).max(1);
    let reference = report
        .position
        .as_ref()
        .and_then(|_| reference_position(fixes, report.device, report.observed_at_ms, recent_ms));
    let where_factor = match (report.position.as_ref(), reference) {
        (Some(p), Some(r)) => distance_factor(p, r),
        _ => 1.0,
    };
    let when_factor = delay_factor(
        report.observed_at_ms,
        report.received_at_ms,
        recent_ms,
        half_life_ms,
    );
    Assessment {
        factor: (where_factor * when_factor).clamp(MIN_FACTOR, 1.0),
        far: where_factor < 1.0,
        late: when_factor < 1.0,
    }
}

/// The share of weight kept by a fix at `p` when the train is at
/// `reference` (latitude, longitude).
pub fn distance_factor(p: &Position, reference: (f64, f64)) -> f64 {
    if !valid(p.latitude, p.longitude) {
        return 1.0;
    }
    let accuracy = f64::from(p.accuracy_m);
    let accuracy = if accuracy.is_finite() {
        accuracy.clamp(0.0, MAX_ACCURACY_M)
    } else {
        MAX_ACCURACY_M
    };
    let tolerance = TOLERANCE_M + 2.0 * accuracy;
    let d = Haversine.distance(
        Point::new(p.longitude, p.latitude),
        Point::new(reference.1, reference.0),
    );
    if !d.is_finite() || d <= tolerance {
        return 1.0;
    }
    (tolerance / d).powi(2).clamp(MIN_FACTOR, 1.0)
}

/// The share of weight kept by a report received `received − observed`
/// after it was observed: 1 within `grace_ms`, then half per half-life.
pub fn delay_factor(observed_ms: i64, received_ms: i64, grace_ms: i64, half_life_ms: i64) -> f64 {
    let late_ms = received_ms
        .saturating_sub(observed_ms)
        .saturating_sub(grace_ms.max(0));
    if late_ms <= 0 {
        return 1.0;
    }
    let half_lives = late_ms as f64 / half_life_ms.max(1) as f64;
    0.5f64.powf(half_lives).clamp(MIN_FACTOR, 1.0)
}

/// Where the train is by its riders' consensus at `at_ms`: the
/// coordinate-wise median of fixes from devices other than `exclude`
/// observed within `recent_ms` of `at_ms`; `None` with fewer than two.
pub fn reference_position(
    fixes: &[Fix],
    exclude: u64,
    at_ms: i64,
    recent_ms: i64,
) -> Option<(f64, f64)> {
    let near: Vec<&Fix> = fixes
        .iter()
        .filter(|f| f.device != exclude && valid(f.latitude, f.longitude))
        .filter(|f| f.observed_at_ms.abs_diff(at_ms) <= recent_ms.unsigned_abs())
        .collect();
    if near.len() < MIN_REFERENCE_FIXES {
        return None;
    }
    let mut lats: Vec<f64> = near.iter().map(|f| f.latitude).collect();
    let mut lons: Vec<f64> = near.iter().map(|f| f.longitude).collect();
    Some((median(&mut lats), median(&mut lons)))
}

/// Remembers the fix of `report`, keeping the [`MAX_FIXES`] most recent.
pub fn remember_fix(fixes: &mut Vec<Fix>, report: &StoredReport) {
    let Some(p) = report.position.as_ref() else {
        return;
    };
    if !valid(p.latitude, p.longitude) {
        return;
    }
    fixes.push(Fix {
        device: report.device,
        latitude: p.latitude,
        longitude: p.longitude,
        observed_at_ms: report.observed_at_ms,
    });
    if fixes.len() > MAX_FIXES {
        fixes.sort_by_key(|f| std::cmp::Reverse(f.observed_at_ms));
        fixes.truncate(MAX_FIXES);
    }
}

fn valid(lat: f64, lon: f64) -> bool {
    lat.is_finite()
        && lon.is_finite()
        && (-90.0..=90.0).contains(&lat)
        && (-180.0..=180.0).contains(&lon)
}

fn median(xs: &mut [f64]) -> f64 {
    xs.sort_by(f64::total_cmp);
    let mid = xs.len() / 2;
    if xs.len().is_multiple_of(2) {
        (xs[mid - 1] + xs[mid]) / 2.0
    } else {
        xs[mid]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const T: i64 = 1_795_000_000_000;
    const HALF_LIFE: i64 = 180_000;
    /// Châtelet-Les Halles.
    const CHL: (f64, f64) = (48.8618, 2.3469);

    fn fix(device: u64, at: (f64, f64), t: i64) -> Fix {
        Fix {
            device,
            latitude: at.0,
            longitude: at.1,
            observed_at_ms: t,
        }
    }

    fn report_at(
        device: u64,
        at: Option<(f64, f64)>,
        observed: i64,
        received: i64,
    ) -> StoredReport {
        StoredReport {
            device,
            observed_at_ms: observed,
            received_at_ms: received,
            position: at.map(|(lat, lon)| Position {
                latitude: lat,
                longitude: lon,
                accuracy_m: 20.0,
            }),
            ..StoredReport::default()
        }
    }

    /// Two riders at Châtelet, just now.
    fn riders_at_chatelet() -> Vec<Fix> {
        vec![fix(1, CHL, T - 5_000), fix(2, (48.8620, 2.3471), T - 2_000)]
    }

    #[test]
    fn a_fix_on_the_train_keeps_its_weight() {
        let r = report_at(9, Some((48.8625, 2.3480)), T, T);
        let a = assess(&r, &riders_at_chatelet(), HALF_LIFE);
        assert_eq!(a.factor, 1.0);
        assert_eq!(a.flags().count(), 0);
    }

    #[test]
    fn a_fix_far_from_the_train_counts_less_the_farther_it_is() {
        // Gare du Nord is ~2.2 km away: within tolerance (2 km + 40 m)? No:
        // just beyond, so it loses a little.
        let gdn = assess(
            &report_at(9, Some((48.8809, 2.3553)), T, T),
            &riders_at_chatelet(),
            HALF_LIFE,
        );
        // Saint-Rémy is ~30 km away.
        let src = assess(
            &report_at(9, Some((48.7054, 2.0714)), T, T),
            &riders_at_chatelet(),
            HALF_LIFE,
        );
        assert!(gdn.factor > 0.8 && gdn.factor < 1.0, "{gdn:?}");
        assert!(src.factor < 0.01 + MIN_FACTOR, "{src:?}");
        assert!(src.far && !src.late);
        assert_eq!(src.flags().next(), Some(Flag::FarFromTrain));
    }

    #[test]
    fn without_a_consensus_nothing_is_judged() {
        let far = Some((48.7054, 2.0714));
        // One other fix only.
        let one = vec![fix(1, CHL, T)];
        assert_eq!(
            assess(&report_at(9, far, T, T), &one, HALF_LIFE).factor,
            1.0
        );
        // The device's own fixes do not count as consensus.
        let own = vec![fix(9, CHL, T), fix(9, CHL, T - 1)];
        assert_eq!(
            assess(&report_at(9, far, T, T), &own, HALF_LIFE).factor,
            1.0
        );
        // Fixes too old to say where the train is now.
        let old = vec![fix(1, CHL, T - HALF_LIFE), fix(2, CHL, T - HALF_LIFE)];
        assert_eq!(
            assess(&report_at(9, far, T, T), &old, HALF_LIFE).factor,
            1.0
        );
        // No position in the report.
        assert_eq!(
            assess(&report_at(9, None, T, T), &riders_at_chatelet(), HALF_LIFE).factor,
            1.0
        );
    }

    #[test]
    fn one_liar_cannot_move_the_reference() {
        let mut fixes = riders_at_chatelet();
        fixes.push(fix(3, CHL, T));
        fixes.push(fix(66, (49.0, 2.5), T));
        let (lat, lon) = reference_position(&fixes, 9, T, 30_000).unwrap();
        assert!((lat - CHL.0).abs() < 0.001 && (lon - CHL.1).abs() < 0.001);
    }

    #[test]
    fn late_arrivals_lose_half_per_half_life_after_a_grace() {
        let grace = HALF_LIFE / 6;
        assert_eq!(delay_factor(T, T, grace, HALF_LIFE), 1.0);
        assert_eq!(delay_factor(T, T + grace, grace, HALF_LIFE), 1.0);
        assert_eq!(delay_factor(T, T - 60_000, grace, HALF_LIFE), 1.0);
        let one = delay_factor(T, T + grace + HALF_LIFE, grace, HALF_LIFE);
        assert!((one - 0.5).abs() < 1e-12);
        assert_eq!(
            delay_factor(T, T + 100 * HALF_LIFE, grace, HALF_LIFE),
            MIN_FACTOR
        );
        let r = report_at(9, None, T - grace - 2 * HALF_LIFE, T);
        let a = assess(&r, &[], HALF_LIFE);
        assert!((a.factor - 0.25).abs() < 1e-9 && a.late && !a.far);
    }

    #[test]
    fn fixes_stay_bounded_and_keep_the_newest() {
        let mut fixes = Vec::new();
        for i in 0..40 {
            remember_fix(&mut fixes, &report_at(i, Some(CHL), T + i as i64, T));
        }
        remember_fix(&mut fixes, &report_at(99, None, T + 100, T));
        remember_fix(
            &mut fixes,
            &report_at(98, Some((f64::NAN, 0.0)), T + 100, T),
        );
        assert_eq!(fixes.len(), MAX_FIXES);
        assert!(
            fixes
                .iter()
                .all(|f| f.observed_at_ms >= T + 40 - MAX_FIXES as i64)
        );
    }

    proptest! {
        #[test]
        fn factors_stay_in_range_for_any_input(
            lat in any::<f64>(), lon in any::<f64>(), acc in any::<f32>(),
            observed in any::<i64>(), received in any::<i64>(), half_life in any::<i64>(),
        ) {
            let mut r = report_at(9, Some((lat, lon)), observed, received);
            if let Some(p) = r.position.as_mut() {
                p.accuracy_m = acc;
            }
            let fixes = vec![fix(1, CHL, observed), fix(2, CHL, observed)];
            let a = assess(&r, &fixes, half_life);
            prop_assert!(a.factor.is_finite());
            prop_assert!((MIN_FACTOR..=1.0).contains(&a.factor));
        }
    }
}
