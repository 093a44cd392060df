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
//! - **Jumps.** A device whose fix is farther from its own previous fix on
//!   the same train than [`MAX_SPEED_MPS`] allows in the time between them
//!   (beyond both fixes' accuracy) teleported: a spoofed or replayed
//!   position. The report keeps [`JUMP_FACTOR`] of its weight. (The speed
//!   scales with the half-life like the rest, [`max_speed_mps`].)
//!
//! The reference window and the grace scale with the half-life, so a
//! compressed simulation (shorter half-life) judges like service does.
//!
//! Signals that need more than one train's state (one device on many trains
//! at once, jumps between trains) are in [`devices`]: a pure detector the
//! worker feeds with every report it applies.

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
/// Fastest a rider can move, in metres per second: 360 km/h, faster than
/// any train the service covers; anything faster is a jump.
pub const MAX_SPEED_MPS: f64 = 100.0;
/// Distance any two fixes may differ by whatever the time between them
/// (on top of their accuracies): GPS in stations and cuttings wanders.
pub const JUMP_SLACK_M: f64 = 300.0;
/// Share of its weight a report keeps when its device jumped to it.
pub const JUMP_FACTOR: f64 = 0.1;

/// Why a report lost weight.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Flag {
    /// Its position is far from where the train's riders say it is.
    FarFromTrain,
    /// It arrived long after it was observed.
    LateArrival,
    /// Its device moved faster than any train since its previous fix.
    PositionJump,
    /// Its device reported on several trains at once ([`devices`]).
    ManyTrains,
}

impl Flag {
    /// The metric label of the flag.
    pub fn label(self) -> &'static str {
        match self {
            Flag::FarFromTrain => "far_from_train",
            Flag::LateArrival => "late_arrival",
            Flag::PositionJump => "position_jump",
            Flag::ManyTrains => "many_trains",
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
    /// The device's fix jumped from its previous one on this train.
    pub jumped: bool,
}

impl Assessment {
    /// The flags raised.
    pub fn flags(&self) -> impl Iterator<Item = Flag> {
        [
            self.far.then_some(Flag::FarFromTrain),
            self.late.then_some(Flag::LateArrival),
            self.jumped.then_some(Flag::PositionJump),
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
    let jumped = report.position.as_ref().is_some_and(|p| {
        previous_fix(fixes, report.device, report.observed_at_ms).is_some_and(|f| {
            jumped(
                (f.latitude, f.longitude, 0.0),
                f.observed_at_ms,
                (p.latitude, p.longitude, p.accuracy_m),
                report.observed_at_ms,
                max_speed_mps(half_life_ms),
            )
        })
    });
    let jump_factor = if jumped { JUMP_FACTOR } else { 1.0 };
    Assessment {
        factor: (where_factor * when_factor * jump_factor).clamp(MIN_FACTOR, 1.0),
        far: where_factor < 1.0,
        late: when_factor < 1.0,
        jumped,
    }
}

/// The fix of `device` observed closest before `at_ms` (or at it).
fn previous_fix(fixes: &[Fix], device: u64, at_ms: i64) -> Option<&Fix> {
    fixes
        .iter()
        .filter(|f| f.device == device && f.observed_at_ms <= at_ms)
        .max_by_key(|f| f.observed_at_ms)
}

/// The speed, in metres per second, a device must have moved at between a
/// fix `a` (latitude, longitude, accuracy in metres) at `a_ms` and a fix
/// `b` at `b_ms`, counting only the distance beyond both accuracies and
/// [`JUMP_SLACK_M`], over at least one second; `None` for invalid fixes.
pub fn implied_speed_mps(
    a: (f64, f64, f32),
    a_ms: i64,
    b: (f64, f64, f32),
    b_ms: i64,
) -> Option<f64> {
    if !valid(a.0, a.1) || !valid(b.0, b.1) {
        return None;
    }
    let accuracy = |m: f32| {
        let m = f64::from(m);
        if m.is_finite() {
            m.clamp(0.0, MAX_ACCURACY_M)
        } else {
            MAX_ACCURACY_M
        }
    };
    let d = Haversine.distance(Point::new(a.1, a.0), Point::new(b.1, b.0));
    let beyond = (d - accuracy(a.2) - accuracy(b.2) - JUMP_SLACK_M).max(0.0);
    let secs = (b_ms.abs_diff(a_ms) as f64 / 1000.0).max(1.0);
    let speed = beyond / secs;
    speed.is_finite().then_some(speed)
}

/// Whether moving from fix `a` to fix `b` took more than `max_speed_mps`
/// ([`MAX_SPEED_MPS`] in service).
pub fn jumped(
    a: (f64, f64, f32),
    a_ms: i64,
    b: (f64, f64, f32),
    b_ms: i64,
    max_speed_mps: f64,
) -> bool {
    implied_speed_mps(a, a_ms, b, b_ms).is_some_and(|v| v > max_speed_mps)
}

/// [`MAX_SPEED_MPS`] for a half-life of `half_life_ms`: in a simulation
/// compressed so that the half-life is shorter than in service, trains
/// cover their distances faster by the same factor.
pub fn max_speed_mps(half_life_ms: i64) -> f64 {
    let service = crate::estimator::DEFAULT_HALF_LIFE_MS as f64;
    MAX_SPEED_MPS * (service / half_life_ms.max(1) as f64).max(1.0)
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

/// One device on many trains at once, and jumps between trains: signals
/// that need each device's recent reports across trains, which no single
/// [`crate::estimator`] state holds.
///
/// # How to wire
///
/// The worker keeps one [`DeviceTracker`] (in memory, like the reputation
/// scores) and, for every report it is about to apply, calls
/// [`DeviceTracker::observe`] with the report, then
/// `estimator::apply_with_factor(state, report, params,
/// signals.factor_besides(&assessment))` instead of `estimator::apply`
/// (`assessment` being [`assess`](super::assess) of the same report, so a
/// jump seen on the train and across trains costs once), and counts each of `signals.flags()` in
/// `crowd_aggregator_flagged_reports_total{reason}` like the flags of
/// [`assess`](super::assess). An aggregator sees only the partitions it
/// owns, so a device spread over trains of several aggregators is judged on
/// its share here: the detector under-reports, never over-reports.
pub mod devices {
    use crowd_proto::pb::store::StoredReport;

    use crate::device_map::DeviceMap;

    use super::{Flag, jumped};

    /// Trains a device may report on within [`AT_ONCE_MS`] (a change of
    /// trains, a report sent late from the previous one); from one more on,
    /// it is on several trains at once.
    pub const MAX_TRAINS_AT_ONCE: usize = 2;
    /// Reports of one device this close in time are "at once".
    pub const AT_ONCE_MS: i64 = 120_000;
    /// Share of its weight a report keeps when its device is on too many
    /// trains at once.
    pub const MANY_TRAINS_FACTOR: f64 = 0.1;
    /// Reports remembered per device.
    const PER_DEVICE: usize = 8;
    /// Devices remembered; beyond it, those not heard from for longest go.
    pub const MAX_DEVICES: usize = 200_000;

    /// One remembered report of a device.
    #[derive(Debug, Clone, Copy, PartialEq)]
    struct Seen {
        /// Fingerprint of (trip_id, start_date).
        trip: u64,
        observed_at_ms: i64,
        /// Latitude, longitude, accuracy.
        fix: Option<(f64, f64, f32)>,
    }

    /// What [`DeviceTracker::observe`] found about one report.
    #[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
    pub struct Signals {
        /// The device's fix jumped from its previous one (on any train).
        pub jumped: bool,
        /// Distinct trains the device reported on within [`AT_ONCE_MS`] of
        /// this report, this one included.
        pub trains_at_once: usize,
    }

    impl Signals {
        /// Whether the device is on more trains at once than a rider can be.
        pub fn many_trains(&self) -> bool {
            self.trains_at_once > MAX_TRAINS_AT_ONCE
        }

        /// The flags raised.
        pub fn flags(&self) -> impl Iterator<Item = Flag> {
            [
                self.jumped.then_some(Flag::PositionJump),
                self.many_trains().then_some(Flag::ManyTrains),
            ]
            .into_iter()
            .flatten()
        }

        /// Share of its weight the report keeps (0..=1).
        pub fn factor(&self) -> f64 {
            let jump = if self.jumped { super::JUMP_FACTOR } else { 1.0 };
            let many = if self.many_trains() {
                MANY_TRAINS_FACTOR
            } else {
                1.0
            };
            jump * many
        }

        /// [`factor`](Self::factor), leaving out a jump that `assessment`
        /// (the same report judged on its train) already charged for: a
        /// jump seen both ways costs [`super::JUMP_FACTOR`] once.
        pub fn factor_besides(&self, assessment: &super::Assessment) -> f64 {
            Signals {
                jumped: self.jumped && !assessment.jumped,
                ..*self
            }
            .factor()
        }
    }

    /// Each device's last few reports across trains, bounded.
    #[derive(Debug, Clone)]
    pub struct DeviceTracker {
        devices: DeviceMap<Vec<Seen>>,
        /// Speed beyond which a device jumped ([`super::max_speed_mps`]).
        max_speed_mps: f64,
    }

    impl Default for DeviceTracker {
        fn default() -> Self {
            DeviceTracker::new()
        }
    }

    impl DeviceTracker {
        /// A tracker for service ([`super::MAX_SPEED_MPS`]).
        pub fn new() -> DeviceTracker {
            DeviceTracker::with_half_life(crate::estimator::DEFAULT_HALF_LIFE_MS)
        }

        /// A tracker for an aggregator running with `half_life_ms` (a
        /// compressed simulation moves its trains faster).
        pub fn with_half_life(half_life_ms: i64) -> DeviceTracker {
            DeviceTracker {
                devices: DeviceMap::default(),
                max_speed_mps: super::max_speed_mps(half_life_ms),
            }
        }

        /// Devices remembered.
        pub fn len(&self) -> usize {
            self.devices.len()
        }

        pub fn is_empty(&self) -> bool {
            self.devices.is_empty()
        }

        /// Judges `report` against its device's earlier reports and
        /// remembers it. Reports may come in any order: a jump is judged
        /// against the fix nearest in time on either side.
        pub fn observe(&mut self, report: &StoredReport) -> Signals {
            if self.devices.len() >= MAX_DEVICES && !self.devices.contains_key(&report.device) {
                self.forget_oldest();
            }
            let seen = Seen {
                trip: trip_fingerprint(&report.trip_id, &report.start_date),
                observed_at_ms: report.observed_at_ms,
                fix: report
                    .position
                    .as_ref()
                    .map(|p| (p.latitude, p.longitude, p.accuracy_m)),
            };
            let history = self.devices.entry(report.device).or_default();
            let jumped = seen.fix.is_some_and(|fix| {
                let nearest = history
                    .iter()
                    .filter_map(|s| s.fix.map(|f| (f, s.observed_at_ms)))
                    .min_by_key(|(_, at)| at.abs_diff(seen.observed_at_ms));
                nearest.is_some_and(|(f, at)| {
                    jumped(f, at, fix, seen.observed_at_ms, self.max_speed_mps)
                })
            });
            // Distinct trips at once, counted in place: this runs for
            // every report, and a history holds at most PER_DEVICE.
            let at_once =
                |s: &&Seen| s.observed_at_ms.abs_diff(seen.observed_at_ms) <= AT_ONCE_MS as u64;
            let trains_at_once = 1 + history
                .iter()
                .enumerate()
                .filter(|(_, s)| at_once(s) && s.trip != seen.trip)
                .filter(|(i, s)| {
                    !history[..*i]
                        .iter()
                        .any(|earlier| at_once(&earlier) && earlier.trip == s.trip)
                })
                .count();
            history.push(seen);
            if history.len() > PER_DEVICE {
                history.sort_by_key(|s| std::cmp::Reverse(s.observed_at_ms));
                history.truncate(PER_DEVICE);
            }
            Signals {
                jumped,
                trains_at_once,
            }
        }

        /// Drops the half of the devices heard from longest ago.
        fn forget_oldest(&mut self) {
            let mut last: Vec<i64> = self
                .devices
                .values()
                .map(|h| h.iter().map(|s| s.observed_at_ms).max().unwrap_or(i64::MIN))
                .collect();
            let mid = last.len() / 2;
            last.select_nth_unstable(mid);
            let threshold = last[mid];
            self.devices
                .retain(|_, h| h.iter().any(|s| s.observed_at_ms > threshold));
        }
    }

    /// The trip's fingerprint, hashed in place: this runs for every report.
    fn trip_fingerprint(trip_id: &str, start_date: &str) -> u64 {
        crate::estimator::fingerprint(
            trip_id
                .as_bytes()
                .iter()
                .chain(&[0])
                .chain(start_date.as_bytes()),
        )
    }

    #[cfg(test)]
    mod tests {
        use super::*;
        use crowd_proto::pb::store::Position;

        const T: i64 = 1_795_000_000_000;

        fn on(device: u64, trip: &str, at: i64, fix: Option<(f64, f64)>) -> StoredReport {
            StoredReport {
                device,
                trip_id: trip.into(),
                start_date: "20261126".into(),
                observed_at_ms: at,
                position: fix.map(|(lat, lon)| Position {
                    latitude: lat,
                    longitude: lon,
                    accuracy_m: 20.0,
                }),
                ..StoredReport::default()
            }
        }

        #[test]
        fn a_rider_changing_trains_is_not_flagged() {
            let mut t = DeviceTracker::new();
            assert_eq!(
                t.observe(&on(1, "A", T, Some((48.86, 2.34))))
                    .trains_at_once,
                1
            );
            let s = t.observe(&on(1, "B", T + 60_000, Some((48.861, 2.341))));
            assert_eq!(s.trains_at_once, 2);
            assert_eq!(s.flags().count(), 0);
            assert_eq!(s.factor(), 1.0);
            // Back on A a minute later: still two trains.
            assert!(!t.observe(&on(1, "A", T + 90_000, None)).many_trains());
        }

        #[test]
        fn one_device_on_three_trains_at_once_is_flagged() {
            let mut t = DeviceTracker::new();
            t.observe(&on(7, "A", T, None));
            t.observe(&on(7, "B", T + 5_000, None));
            let s = t.observe(&on(7, "C", T + 10_000, None));
            assert!(s.many_trains());
            assert_eq!(s.flags().collect::<Vec<_>>(), vec![Flag::ManyTrains]);
            assert!((s.factor() - MANY_TRAINS_FACTOR).abs() < 1e-12);
            // The same three trains spread over an hour are a commute.
            let mut t = DeviceTracker::new();
            for (i, trip) in ["A", "B", "C"].iter().enumerate() {
                let s = t.observe(&on(8, trip, T + i as i64 * 20 * 60_000, None));
                assert!(!s.many_trains());
            }
            // Other devices are not affected.
            assert!(!t.observe(&on(9, "D", T, None)).many_trains());
        }

        #[test]
        fn a_jump_between_trains_is_flagged_in_any_order() {
            let mut t = DeviceTracker::new();
            t.observe(&on(3, "A", T, Some((48.86, 2.34))));
            // 30 km in 30 s, on another train.
            let s = t.observe(&on(3, "B", T + 30_000, Some((48.6, 2.2))));
            assert!(s.jumped);
            assert_eq!(s.flags().collect::<Vec<_>>(), vec![Flag::PositionJump]);
            // Charged once when the train's own check saw it too.
            let seen = crate::plausibility::Assessment {
                factor: crate::plausibility::JUMP_FACTOR,
                far: false,
                late: false,
                jumped: true,
            };
            assert_eq!(s.factor_besides(&seen), 1.0);
            let unseen = crate::plausibility::Assessment {
                jumped: false,
                ..seen
            };
            assert_eq!(s.factor_besides(&unseen), s.factor());
            // The later report arriving first: judged against it instead.
            let mut t = DeviceTracker::new();
            t.observe(&on(3, "B", T + 30_000, Some((48.6, 2.2))));
            assert!(t.observe(&on(3, "A", T, Some((48.86, 2.34)))).jumped);
        }

        #[test]
        fn memory_stays_bounded() {
            let mut t = DeviceTracker::new();
            for i in 0..20 {
                t.observe(&on(1, "A", T + i, None));
            }
            assert_eq!(t.devices[&1].len(), PER_DEVICE);
            assert_eq!(t.len(), 1);
            assert!(!t.is_empty());
        }

        proptest::proptest! {
            /// Trains at once are the distinct trips of the device's
            /// remembered reports within AT_ONCE_MS, this one included.
            #[test]
            fn trains_at_once_counts_distinct_trips(
                reports in proptest::collection::vec((0u8..4, 0i64..600_000), 1..30)
            ) {
                let mut t = DeviceTracker::new();
                let mut kept: Vec<(String, i64)> = Vec::new();
                for (trip, at) in reports {
                    let trip = format!("T{trip}");
                    let mut expected: Vec<&str> = kept
                        .iter()
                        .filter(|(_, a)| a.abs_diff(T + at) <= AT_ONCE_MS as u64)
                        .map(|(t, _)| t.as_str())
                        .chain([trip.as_str()])
                        .collect();
                    expected.sort_unstable();
                    expected.dedup();
                    let expected = expected.len();
                    let signals = t.observe(&on(1, &trip, T + at, None));
                    proptest::prop_assert_eq!(signals.trains_at_once, expected);
                    kept.push((trip, T + at));
                    if kept.len() > PER_DEVICE {
                        kept.sort_by_key(|(_, a)| std::cmp::Reverse(*a));
                        kept.truncate(PER_DEVICE);
                    }
                }
            }
        }
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
        // The device's own fixes do not count as consensus (though jumping
        // 30 km from them at once is a jump of its own).
        let own = vec![fix(9, CHL, T), fix(9, CHL, T - 1)];
        let a = assess(&report_at(9, far, T, T), &own, HALF_LIFE);
        assert!(!a.far && a.jumped, "{a:?}");
        let own_long_ago = vec![
            fix(9, CHL, T - 20 * HALF_LIFE),
            fix(9, CHL, T - 20 * HALF_LIFE - 1),
        ];
        assert_eq!(
            assess(&report_at(9, far, T, T), &own_long_ago, HALF_LIFE).factor,
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
    fn a_device_jumping_along_the_train_counts_less() {
        // Device 9 was at Châtelet 20 s ago; now it claims Saint-Rémy, 30 km
        // away: 1.5 km/s. Its previous fix is on this train.
        let mut fixes = riders_at_chatelet();
        fixes.push(fix(9, CHL, T - 20_000));
        let far = report_at(9, Some((48.7054, 2.0714)), T, T);
        let a = assess(&far, &fixes, HALF_LIFE);
        assert!(a.jumped && a.far, "{a:?}");
        assert!(a.factor <= JUMP_FACTOR * 0.02 + MIN_FACTOR);
        assert!(a.flags().any(|f| f == Flag::PositionJump));
        // Moving 1 km in 20 s (180 km/h) is a fast train, not a jump.
        let near = report_at(9, Some((48.8708, 2.3469)), T, T);
        let a = assess(&near, &fixes, HALF_LIFE);
        assert!(!a.jumped, "{a:?}");
        // Only the device's own earlier fix counts.
        let other = report_at(10, Some((48.7054, 2.0714)), T, T);
        assert!(!assess(&other, &fixes, HALF_LIFE).jumped);
    }

    #[test]
    fn implied_speed_counts_only_the_distance_beyond_accuracy() {
        let a = (CHL.0, CHL.1, 20.0);
        // 100 m in no time: within the slack, standing still.
        let b = (CHL.0 + 0.0009, CHL.1, 20.0);
        assert_eq!(implied_speed_mps(a, T, b, T), Some(0.0));
        // ~11.1 km in 10 s: about 1 km/s once slack and accuracy are taken off.
        let c = (CHL.0 + 0.1, CHL.1, 20.0);
        let v = implied_speed_mps(a, T, c, T + 10_000).unwrap();
        assert!(v > 1_000.0 && v < 1_120.0, "{v}");
        assert!(jumped(a, T, c, T + 10_000, MAX_SPEED_MPS));
        // The same distance in ten minutes is a train.
        assert!(!jumped(a, T, c, T + 600_000, MAX_SPEED_MPS));
        // In a simulation compressed 30 times, 1 km/s is a fast train.
        assert!(!jumped(a, T, c, T + 10_000, max_speed_mps(3_000)));
        assert_eq!(max_speed_mps(1_000_000), MAX_SPEED_MPS);
        // Order of the fixes does not matter; invalid fixes say nothing.
        assert_eq!(
            implied_speed_mps(c, T + 10_000, a, T),
            implied_speed_mps(a, T, c, T + 10_000)
        );
        assert_eq!(implied_speed_mps((f64::NAN, 0.0, 1.0), T, a, T), None);
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
