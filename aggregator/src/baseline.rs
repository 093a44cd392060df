//! The usual occupancy of a route, hour of the week by hour of the week, so
//! that an estimate can be told as "busier than usual" or "quieter than
//! usual". Pure: no I/O, no clock; times are passed in.
//!
//! Each cell (route × hour of the week) keeps a moving average of the
//! estimates' percentages and of their distance from it: a plain mean over
//! the first [`SETTLE_SAMPLES`] estimates, then an exponential average that
//! follows slow changes (a new timetable, the seasons) with a memory of
//! about `1 / MIN_ALPHA` estimates. So a cell is a few numbers whatever the
//! history, and a route at most [`HOURS_PER_WEEK`] cells.
//!
//! [`Cell::compare`] says how a current percentage compares, with
//! hysteresis: it takes [`ENTER_POINTS`] (or the usual deviation, if
//! larger) above the usual to become busier, and falling back within
//! [`LEAVE_POINTS`] to become usual again, so an estimate hovering at the
//! edge does not flicker; with fewer than [`MIN_SAMPLES`] estimates behind
//! a cell, everything is usual.
//!
//! # How to wire
//!
//! The worker keeps a [`RouteBaseline`] per route it publishes (read with
//! [`RouteBaseline::decode`] from e.g. `crowd:baseline:<route>`, written
//! back with [`RouteBaseline::encode`] now and then: it is soft state).
//! When it publishes a train's estimate with confidence ≥
//! [`MIN_CONFIDENCE`], it calls [`RouteBaseline::record`] at most once per
//! train per hour of the week (the first such estimate of the train in that
//! hour, so a train reported on often does not weigh more), with
//! [`hour_of_week`] of the estimate's time in the network's local time.
//! To show a comparison, it calls [`RouteBaseline::compare`] with the
//! train's current percentage and the comparison it showed last for that
//! train (`None` at first), and keeps the answer for next time.

use std::collections::BTreeMap;

use prost::Message;

use crowd_proto::pb::store::{BaselineCell, RouteBaseline as StoredBaseline};

/// Hours in a week: the cells of a route.
pub const HOURS_PER_WEEK: u32 = 168;
/// Estimates a cell needs before it says anything but "usual".
pub const MIN_SAMPLES: u32 = 5;
/// Estimates averaged plainly before the average starts to forget.
pub const SETTLE_SAMPLES: u32 = 20;
/// Smallest weight of a new estimate in the moving average.
pub const MIN_ALPHA: f64 = 1.0 / SETTLE_SAMPLES as f64;
/// Points above (or below) the usual to become busier (or quieter): a
/// level is 30 points wide, so half a level.
pub const ENTER_POINTS: f64 = 15.0;
/// Points from the usual within which a busier (or quieter) comparison
/// becomes usual again.
pub const LEAVE_POINTS: f64 = 8.0;
/// Least confidence of an estimate worth recording.
pub const MIN_CONFIDENCE: f32 = 0.5;
/// Percentages above this are recorded as this (as in the estimator).
const MAX_PERCENTAGE: f64 = 300.0;

/// How a current estimate compares with the usual for its route and hour.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Comparison {
    Usual,
    Busier,
    Quieter,
}

/// The hour of the week (0 = Monday 00:00–00:59, up to 167) of `at_ms`
/// (milliseconds since the epoch) in a local time `utc_offset_secs` ahead
/// of UTC.
pub fn hour_of_week(at_ms: i64, utc_offset_secs: i32) -> u32 {
    let local_secs = at_ms.div_euclid(1000) + i64::from(utc_offset_secs);
    let hours = local_secs.div_euclid(3600);
    // 1970-01-01 was a Thursday: hour 0 of the epoch is hour 72 of its week.
    (hours + 72).rem_euclid(i64::from(HOURS_PER_WEEK)) as u32
}

/// The usual occupancy in one hour of the week.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Cell {
    /// Moving average of the percentages.
    pub mean: f64,
    /// Moving average of their absolute distance from `mean`.
    pub deviation: f64,
    /// Estimates recorded (saturating).
    pub samples: u32,
}

impl Cell {
    /// Adds one estimate's percentage; non-finite ones are ignored.
    pub fn record(&mut self, percentage: f64) {
        if !percentage.is_finite() {
            return;
        }
        let p = percentage.clamp(0.0, MAX_PERCENTAGE);
        self.samples = self.samples.saturating_add(1);
        let alpha = (1.0 / f64::from(self.samples)).max(MIN_ALPHA);
        let distance = (p - self.mean).abs();
        self.mean += alpha * (p - self.mean);
        if self.samples > 1 {
            self.deviation += alpha * (distance - self.deviation);
        }
    }

    /// The cell as stored for `hour_of_week`.
    pub fn to_stored(&self, hour_of_week: u32) -> BaselineCell {
        BaselineCell {
            hour_of_week,
            mean: self.mean,
            deviation: self.deviation,
            samples: self.samples,
        }
    }

    /// How `percentage` compares with the usual, given the comparison shown
    /// last (`None` at first): see the module header for the hysteresis.
    pub fn compare(&self, percentage: f64, previous: Option<Comparison>) -> Comparison {
        if self.samples < MIN_SAMPLES || !percentage.is_finite() {
            return Comparison::Usual;
        }
        let enter = ENTER_POINTS.max(self.deviation);
        let leave = LEAVE_POINTS.max(self.deviation / 2.0);
        let d = percentage - self.mean;
        match previous {
            Some(Comparison::Busier) if d > leave => Comparison::Busier,
            Some(Comparison::Quieter) if d < -leave => Comparison::Quieter,
            _ if d > enter => Comparison::Busier,
            _ if d < -enter => Comparison::Quieter,
            _ => Comparison::Usual,
        }
    }
}

/// The usual occupancy of one route, by hour of the week.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RouteBaseline {
    pub route_id: String,
    cells: BTreeMap<u32, Cell>,
}

impl RouteBaseline {
    pub fn new(route_id: impl Into<String>) -> RouteBaseline {
        RouteBaseline {
            route_id: route_id.into(),
            cells: BTreeMap::new(),
        }
    }

    /// The cell of an hour of the week, if anything was recorded in it.
    pub fn cell(&self, hour_of_week: u32) -> Option<&Cell> {
        self.cells.get(&(hour_of_week % HOURS_PER_WEEK))
    }

    /// Records one estimate's percentage in its hour of the week.
    pub fn record(&mut self, hour_of_week: u32, percentage: f64) {
        self.cells
            .entry(hour_of_week % HOURS_PER_WEEK)
            .or_default()
            .record(percentage);
    }

    /// How `percentage` compares with the usual in that hour (see
    /// [`Cell::compare`]); usual for an hour with no history.
    pub fn compare(
        &self,
        hour_of_week: u32,
        percentage: f64,
        previous: Option<Comparison>,
    ) -> Comparison {
        self.cell(hour_of_week)
            .map_or(Comparison::Usual, |c| c.compare(percentage, previous))
    }

    /// The baseline as a `crowd.store.v1.RouteBaseline` message.
    pub fn encode(&self) -> Vec<u8> {
        StoredBaseline {
            route_id: self.route_id.clone(),
            cells: self
                .cells
                .iter()
                .map(|(hour, c)| c.to_stored(*hour))
                .collect(),
        }
        .encode_to_vec()
    }

    /// Reads back what [`encode`](Self::encode) wrote. Cells out of range
    /// or with non-finite numbers are dropped (a corrupt cell is relearnt,
    /// not trusted).
    pub fn decode(bytes: &[u8]) -> Result<RouteBaseline, prost::DecodeError> {
        Ok(RouteBaseline::from_stored(StoredBaseline::decode(bytes)?))
    }

    /// The baseline of a decoded message, with the checks of
    /// [`decode`](Self::decode).
    pub fn from_stored(stored: StoredBaseline) -> RouteBaseline {
        let cells = stored
            .cells
            .into_iter()
            .filter(|c| c.hour_of_week < HOURS_PER_WEEK)
            .filter(|c| c.mean.is_finite() && c.deviation.is_finite())
            .map(|c| {
                (
                    c.hour_of_week,
                    Cell {
                        mean: c.mean.clamp(0.0, MAX_PERCENTAGE),
                        deviation: c.deviation.clamp(0.0, MAX_PERCENTAGE),
                        samples: c.samples,
                    },
                )
            })
            .collect();
        RouteBaseline {
            route_id: stored.route_id,
            cells,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Thursday 2026-11-26 08:30 UTC.
    const THURSDAY_0830: i64 = 1_795_681_800_000;

    fn settled(mean: f64, n: u32) -> Cell {
        let mut c = Cell::default();
        for i in 0..n {
            // ±5 points around the mean.
            c.record(mean + if i % 2 == 0 { 5.0 } else { -5.0 });
        }
        c
    }

    #[test]
    fn hours_of_the_week_start_on_monday() {
        assert_eq!(hour_of_week(0, 0), 72); // Thursday 1970-01-01 00:00
        assert_eq!(hour_of_week(THURSDAY_0830, 0), 3 * 24 + 8);
        // One hour ahead of UTC: 09:30 local.
        assert_eq!(hour_of_week(THURSDAY_0830, 3600), 3 * 24 + 9);
        // Monday 00:00 is hour 0; Sunday 23:00 is hour 167.
        let monday = THURSDAY_0830 - (3 * 24 + 8) * 3_600_000 - 1_800_000;
        assert_eq!(hour_of_week(monday, 0), 0);
        assert_eq!(hour_of_week(monday - 1, 0), 167);
        assert!(hour_of_week(i64::MIN, i32::MIN) < HOURS_PER_WEEK);
    }

    #[test]
    fn the_average_is_plain_then_moving() {
        let c = settled(60.0, 20);
        assert!((c.mean - 60.0).abs() < 1e-9, "{c:?}");
        assert!((c.deviation - 5.0).abs() < 1.0, "{c:?}");
        // A lasting change is followed, at a bounded pace.
        let mut moved = c;
        for _ in 0..100 {
            moved.record(100.0);
        }
        assert!(moved.mean > 99.0, "{moved:?}");
        let mut once = c;
        once.record(300.0);
        assert!(once.mean < 60.0 + 300.0 * MIN_ALPHA, "{once:?}");
        once.record(f64::NAN);
        assert_eq!(once.samples, 21);
    }

    #[test]
    fn too_little_history_is_always_usual() {
        let c = settled(20.0, MIN_SAMPLES - 1);
        assert_eq!(c.compare(150.0, None), Comparison::Usual);
        assert_eq!(
            RouteBaseline::new("B").compare(10, 150.0, None),
            Comparison::Usual
        );
    }

    #[test]
    fn comparisons_have_hysteresis() {
        let c = settled(60.0, 30);
        assert_eq!(c.compare(65.0, None), Comparison::Usual);
        assert_eq!(c.compare(80.0, None), Comparison::Busier);
        assert_eq!(c.compare(40.0, None), Comparison::Quieter);
        // Once busier, it stays so until back within LEAVE_POINTS...
        assert_eq!(
            c.compare(70.0, Some(Comparison::Busier)),
            Comparison::Busier
        );
        assert_eq!(c.compare(70.0, None), Comparison::Usual);
        assert_eq!(c.compare(65.0, Some(Comparison::Busier)), Comparison::Usual);
        // ...and the same below.
        assert_eq!(
            c.compare(50.0, Some(Comparison::Quieter)),
            Comparison::Quieter
        );
        assert_eq!(
            c.compare(55.0, Some(Comparison::Quieter)),
            Comparison::Usual
        );
        // From busier straight to quieter on a big drop.
        assert_eq!(
            c.compare(20.0, Some(Comparison::Busier)),
            Comparison::Quieter
        );
        assert_eq!(
            c.compare(f64::NAN, Some(Comparison::Busier)),
            Comparison::Usual
        );
    }

    #[test]
    fn a_noisy_hour_needs_a_bigger_difference() {
        let mut c = Cell::default();
        for i in 0..40 {
            c.record(if i % 2 == 0 { 20.0 } else { 100.0 });
        }
        assert!(c.deviation > 30.0, "{c:?}");
        assert_eq!(c.compare(c.mean + 20.0, None), Comparison::Usual);
    }

    #[test]
    fn a_route_round_trips_through_bytes_and_stays_bounded() {
        let mut b = RouteBaseline::new("B");
        for hour in 0..1_000u32 {
            b.record(hour, f64::from(hour % 150));
        }
        assert_eq!(b.cells.len(), HOURS_PER_WEEK as usize);
        let back = RouteBaseline::decode(&b.encode()).expect("decodes");
        assert_eq!(back, b);
        assert_eq!(
            back.cell(3).map(|c| c.samples),
            b.cell(3).map(|c| c.samples)
        );
        assert!(RouteBaseline::decode(&[0xff, 0xff]).is_err());
    }

    #[test]
    fn corrupt_cells_are_dropped() {
        let bytes = StoredBaseline {
            route_id: "B".into(),
            cells: vec![
                BaselineCell {
                    hour_of_week: 500,
                    mean: 50.0,
                    deviation: 1.0,
                    samples: 9,
                },
                BaselineCell {
                    hour_of_week: 1,
                    mean: f64::NAN,
                    deviation: 1.0,
                    samples: 9,
                },
                BaselineCell {
                    hour_of_week: 2,
                    mean: 1e9,
                    deviation: 1.0,
                    samples: 9,
                },
            ],
        }
        .encode_to_vec();
        let b = RouteBaseline::decode(&bytes).expect("decodes");
        assert_eq!(b.cells.len(), 1);
        assert_eq!(b.cell(2).map(|c| c.mean), Some(MAX_PERCENTAGE));
    }
}
