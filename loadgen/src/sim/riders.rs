//! Who reports, and how their reports differ from the truth.
//!
//! A [`Scenario`] sets the population of reporting devices: honest riders
//! (who still misjudge by one level now and then), noisy riders, hostile
//! devices (liars who always say FULL, spammers who say anything), devices
//! whose clock is off, and optionally a swarm of fresh devices all telling
//! the same lie about one train. A device's kind and clock skew follow from
//! its id, so a device behaves the same way all through its ride.

use crowd_proto::level::Level;
use rand::Rng;

/// What kind of device sent a report: the simulator knows, the service does not.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
pub enum ReporterKind {
    /// Reports what it sees, off by one level once in a while.
    Honest,
    /// Misjudges often, by one and sometimes two levels.
    Noisy,
    /// Always says FULL, whatever the truth.
    Liar,
    /// Says a random level about a random car.
    Spammer,
    /// One of the swarm's fresh devices, all telling the same lie.
    Swarm,
    /// Honest, but its clock is off by minutes.
    SkewedClock,
}

/// A burst of fresh devices telling the same lie about one train.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SwarmSpec {
    /// How many devices take part, each new.
    pub size: u32,
    /// The level they all report.
    pub lie: Level,
    /// Minute of the service day when the burst starts (e.g. 8 * 60 + 15);
    /// it targets the running train whose true level is furthest from the lie.
    pub at_minute: u32,
    /// Reports each swarm device sends.
    pub reports_per_device: u32,
}

/// The reporting population.
#[derive(Debug, Clone, PartialEq)]
pub struct Scenario {
    /// Share of riders with the app; sets the device pool of each car.
    pub app_share: f64,
    /// Share of devices that misjudge often.
    pub noisy_share: f64,
    /// Share of devices that always say FULL.
    pub liar_share: f64,
    /// Share of devices that send random levels about random cars.
    pub spammer_share: f64,
    /// Share of devices whose clock is off.
    pub skewed_clock_share: f64,
    /// Range of clock errors, in minutes (negative = clock behind). The
    /// default stays within what the server accepts (30 min past, 2 min
    /// ahead); wider ranges test its rejections.
    pub clock_skew_minutes: (f64, f64),
    /// Share of honest reports that also give a percentage.
    pub percentage_share: f64,
    /// The swarm, if any.
    pub swarm: Option<SwarmSpec>,
}

impl Default for Scenario {
    /// 20 % noisy riders, 5 % hostile devices (3 % liars, 2 % spammers),
    /// 2 % skewed clocks, no swarm.
    fn default() -> Scenario {
        Scenario {
            app_share: 0.05,
            noisy_share: 0.20,
            liar_share: 0.03,
            spammer_share: 0.02,
            skewed_clock_share: 0.02,
            clock_skew_minutes: (-15.0, -1.0),
            percentage_share: 0.3,
            swarm: None,
        }
    }
}

impl Scenario {
    /// A hostile day: more noise, 15 % hostile devices, skewed clocks some of
    /// which run ahead beyond what the server accepts, and a swarm of 50
    /// devices claiming FULL at 08:15.
    pub fn adversarial() -> Scenario {
        Scenario {
            noisy_share: 0.30,
            liar_share: 0.10,
            spammer_share: 0.05,
            skewed_clock_share: 0.05,
            clock_skew_minutes: (-20.0, 5.0),
            swarm: Some(SwarmSpec {
                size: 50,
                lie: Level::Full,
                at_minute: 8 * 60 + 15,
                reports_per_device: 1,
            }),
            ..Scenario::default()
        }
    }

    /// Only honest devices with accurate clocks (they still misjudge now and
    /// then): the best the service can hope for.
    pub fn honest() -> Scenario {
        Scenario {
            noisy_share: 0.0,
            liar_share: 0.0,
            spammer_share: 0.0,
            skewed_clock_share: 0.0,
            ..Scenario::default()
        }
    }

    /// The kind of a pool device, from a uniform draw `u` in 0..1 tied to its id.
    pub fn kind_of(&self, u: f64) -> ReporterKind {
        let mut edge = self.liar_share;
        if u < edge {
            return ReporterKind::Liar;
        }
        edge += self.spammer_share;
        if u < edge {
            return ReporterKind::Spammer;
        }
        edge += self.skewed_clock_share;
        if u < edge {
            return ReporterKind::SkewedClock;
        }
        edge += self.noisy_share;
        if u < edge {
            return ReporterKind::Noisy;
        }
        ReporterKind::Honest
    }

    /// The clock error of a skewed device, in seconds, from a uniform draw
    /// `u` in 0..1 tied to its id.
    pub fn skew_seconds(&self, u: f64) -> i64 {
        let (lo, hi) = self.clock_skew_minutes;
        ((lo + (hi - lo) * u) * 60.0).round() as i64
    }
}

/// The level a device of `kind` reports about a car whose true level is
/// `truth`.
pub fn perceive(kind: ReporterKind, truth: Level, rng: &mut impl Rng) -> Level {
    let shift: i32 = match kind {
        ReporterKind::Honest | ReporterKind::SkewedClock => {
            let u: f64 = rng.random();
            if u < 0.05 {
                -1
            } else if u < 0.10 {
                1
            } else {
                0
            }
        }
        ReporterKind::Noisy => {
            let u: f64 = rng.random();
            match u {
                u if u < 0.05 => -2,
                u if u < 0.25 => -1,
                u if u < 0.45 => 1,
                u if u < 0.50 => 2,
                _ => 0,
            }
        }
        ReporterKind::Liar => return Level::Full,
        ReporterKind::Spammer => return Level::ALL[rng.random_range(0..Level::ALL.len())],
        ReporterKind::Swarm => 0,
    };
    Level::from_number((truth.number() + shift).clamp(1, 7)).unwrap_or(truth)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand::rngs::StdRng;

    #[test]
    fn kinds_follow_the_shares() {
        let s = Scenario::default();
        assert_eq!(s.kind_of(0.01), ReporterKind::Liar);
        assert_eq!(s.kind_of(0.04), ReporterKind::Spammer);
        assert_eq!(s.kind_of(0.06), ReporterKind::SkewedClock);
        assert_eq!(s.kind_of(0.10), ReporterKind::Noisy);
        assert_eq!(s.kind_of(0.30), ReporterKind::Honest);
        assert_eq!(Scenario::honest().kind_of(0.0), ReporterKind::Honest);
    }

    #[test]
    fn default_skew_is_behind_and_within_limits() {
        let s = Scenario::default();
        assert_eq!(s.skew_seconds(0.0), -900);
        assert_eq!(s.skew_seconds(1.0), -60);
    }

    #[test]
    fn perception_is_mostly_right_for_honest_riders() {
        let mut rng = StdRng::seed_from_u64(7);
        let n = 10_000;
        let exact = (0..n)
            .filter(|_| {
                perceive(ReporterKind::Honest, Level::FewSeats, &mut rng) == Level::FewSeats
            })
            .count();
        assert!((8_700..9_300).contains(&exact), "{exact}");
        let noisy_exact = (0..n)
            .filter(|_| perceive(ReporterKind::Noisy, Level::FewSeats, &mut rng) == Level::FewSeats)
            .count();
        assert!((4_600..5_400).contains(&noisy_exact), "{noisy_exact}");
        for _ in 0..100 {
            let l = perceive(ReporterKind::Noisy, Level::Empty, &mut rng);
            assert!(l.distance(Level::Empty) <= 2);
            assert_eq!(
                perceive(ReporterKind::Liar, Level::Empty, &mut rng),
                Level::Full
            );
        }
    }
}
