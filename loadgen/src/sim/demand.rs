//! Travel demand by time of day.
//!
//! Each station has `homes` and `jobs` (passengers per minute at the peak).
//! In the morning peak (07:30–09:00, with one-hour ramps) people travel from
//! homes to jobs, in the evening peak (17:00–19:00) from jobs to homes, and
//! all day a base flow runs both ways. Riders pick a train going towards
//! their destination in proportion to the destinations ahead of it (a simple
//! gravity model), and leave it at each stop in proportion to that stop's
//! attraction among the stops still ahead.

use super::network::Station;

/// Minutes after midnight.
pub type Minute = f64;

/// A trapezoid: 0 before `start - ramp`, 1 from `start` to `end`, 0 after
/// `end + ramp`, linear in between.
fn plateau(m: Minute, start: Minute, end: Minute, ramp: Minute) -> f64 {
    if m < start {
        ((m - (start - ramp)) / ramp).clamp(0.0, 1.0)
    } else if m <= end {
        1.0
    } else {
        (((end + ramp) - m) / ramp).clamp(0.0, 1.0)
    }
}

/// Strength of the morning commute (homes → jobs), 0..1.
pub fn morning(m: Minute) -> f64 {
    plateau(m, 7.5 * 60.0, 9.0 * 60.0, 60.0)
}

/// Strength of the evening commute (jobs → homes), 0..1.
pub fn evening(m: Minute) -> f64 {
    plateau(m, 17.0 * 60.0, 19.0 * 60.0, 60.0)
}

/// Strength of all-day travel, as a share of the peak: low early and late.
pub fn base(m: Minute) -> f64 {
    0.08 + 0.17 * plateau(m, 7.0 * 60.0, 21.0 * 60.0, 90.0)
}

/// Passengers per minute starting a journey at `s` at minute `m`.
pub fn production(s: &Station, m: Minute) -> f64 {
    s.homes * morning(m) + s.jobs * evening(m) + (s.homes + s.jobs) * 0.5 * base(m)
}

/// How strongly `s` draws journeys at minute `m` (relative weight).
pub fn attraction(s: &Station, m: Minute) -> f64 {
    s.jobs * morning(m) + s.homes * evening(m) + (s.homes + s.jobs) * 0.5 * base(m)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peaks_have_the_expected_shape() {
        assert_eq!(morning(8.0 * 60.0), 1.0);
        assert_eq!(morning(7.0 * 60.0), 0.5);
        assert_eq!(morning(12.0 * 60.0), 0.0);
        assert_eq!(evening(18.0 * 60.0), 1.0);
        assert_eq!(evening(19.5 * 60.0), 0.5);
        assert_eq!(evening(8.0 * 60.0), 0.0);
        assert!((base(12.0 * 60.0) - 0.25).abs() < 1e-9);
        assert!((base(3.0 * 60.0) - 0.08).abs() < 1e-9);
    }

    #[test]
    fn mornings_send_homes_to_jobs() {
        let s = Station {
            id: "S".into(),
            name: "S".into(),
            lat: 0.0,
            lon: 0.0,
            homes: 100.0,
            jobs: 0.0,
            entrance: 0.5,
        };
        assert!(production(&s, 8.0 * 60.0) > 4.0 * attraction(&s, 8.0 * 60.0));
        assert!(attraction(&s, 18.0 * 60.0) > 4.0 * production(&s, 18.0 * 60.0));
    }
}
