//! Open-loop arrival times: a rate schedule and the Poisson process it drives.
//!
//! The generator never waits for the system under test: it computes when each
//! report *should* be sent from the schedule alone, so a slow server shows up
//! as latency measured from that intended time instead of silently lowering
//! the offered load (coordinated omission).
//!
//! Everything here is pure and seeded, so tests can check rates exactly.

use std::fmt;
use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rand_distr::{Distribution, Exp};

/// How the offered rate (reports per second, all streams together) varies
/// over the run.
#[derive(Debug, Clone, PartialEq)]
pub enum Schedule {
    /// The same rate for the whole run.
    Constant(f64),
    /// Consecutive segments of `(length, rate)`; the last rate holds after
    /// the last segment.
    Steps(Vec<(Duration, f64)>),
    /// A linear ramp from `from` to `to` over `over`, then `to` holds.
    Ramp { from: f64, to: f64, over: Duration },
}

/// A schedule or duration that cannot be used, with the reason.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ScheduleError(String);

fn err(msg: impl Into<String>) -> ScheduleError {
    ScheduleError(msg.into())
}

impl Schedule {
    /// Parses `step:10s@1000,10s@5000` or `ramp:1000..20000/60s`
    /// (see `loadgen run --help`).
    pub fn parse(text: &str) -> Result<Schedule, ScheduleError> {
        let text = text.trim();
        let schedule = if let Some(steps) = text.strip_prefix("step:") {
            let mut segments = Vec::new();
            for part in steps.split(',') {
                let (length, rate) = part.split_once('@').ok_or_else(|| {
                    err(format!(
                        "step {part:?}: expected LENGTH@RATE, e.g. 10s@1000"
                    ))
                })?;
                segments.push((parse_duration(length)?, parse_rate(rate)?));
            }
            Schedule::Steps(segments)
        } else if let Some(ramp) = text.strip_prefix("ramp:") {
            let (rates, over) = ramp
                .split_once('/')
                .ok_or_else(|| err(format!("ramp {ramp:?}: expected FROM..TO/LENGTH")))?;
            let (from, to) = rates
                .split_once("..")
                .ok_or_else(|| err(format!("ramp {rates:?}: expected FROM..TO")))?;
            Schedule::Ramp {
                from: parse_rate(from)?,
                to: parse_rate(to)?,
                over: parse_duration(over)?,
            }
        } else {
            return Err(err(format!(
                "schedule {text:?}: expected step:LEN@RATE,... or ramp:FROM..TO/LEN"
            )));
        };
        schedule.validate()?;
        Ok(schedule)
    }

    /// Rejects schedules that would send nothing or never end a segment.
    pub fn validate(&self) -> Result<(), ScheduleError> {
        match self {
            Schedule::Constant(rate) => {
                check_rate(*rate)?;
                if *rate == 0.0 {
                    return Err(err("rate must be greater than 0 reports/s"));
                }
            }
            Schedule::Steps(segments) => {
                if segments.is_empty() {
                    return Err(err("step schedule has no segment"));
                }
                for (length, rate) in segments {
                    check_rate(*rate)?;
                    if length.is_zero() {
                        return Err(err("step segment of zero length"));
                    }
                }
                if segments.iter().all(|(_, rate)| *rate == 0.0) {
                    return Err(err("every step has rate 0: nothing would be sent"));
                }
            }
            Schedule::Ramp { from, to, over } => {
                check_rate(*from)?;
                check_rate(*to)?;
                if over.is_zero() {
                    return Err(err("ramp of zero length"));
                }
                if *from == 0.0 && *to == 0.0 {
                    return Err(err("ramp from 0 to 0: nothing would be sent"));
                }
            }
        }
        Ok(())
    }

    /// The offered rate at `t` since the start.
    pub fn rate_at(&self, t: Duration) -> f64 {
        match self {
            Schedule::Constant(rate) => *rate,
            Schedule::Steps(segments) => {
                let mut end = Duration::ZERO;
                for (length, rate) in segments {
                    end += *length;
                    if t < end {
                        return *rate;
                    }
                }
                segments.last().map_or(0.0, |(_, rate)| *rate)
            }
            Schedule::Ramp { from, to, over } => {
                let progress = (t.as_secs_f64() / over.as_secs_f64()).min(1.0);
                from + (to - from) * progress
            }
        }
    }

    /// The highest rate the schedule ever asks for.
    pub fn peak_rate(&self) -> f64 {
        match self {
            Schedule::Constant(rate) => *rate,
            Schedule::Steps(segments) => segments.iter().map(|(_, r)| *r).fold(0.0, f64::max),
            Schedule::Ramp { from, to, .. } => from.max(*to),
        }
    }

    /// How long the schedule itself lasts (`None` for a constant rate), the
    /// default run duration when a schedule is given.
    pub fn natural_length(&self) -> Option<Duration> {
        match self {
            Schedule::Constant(_) => None,
            Schedule::Steps(segments) => Some(segments.iter().map(|(length, _)| *length).sum()),
            Schedule::Ramp { over, .. } => Some(*over),
        }
    }

    /// The expected number of arrivals in `[0, duration)`.
    pub fn expected_count(&self, duration: Duration) -> f64 {
        // Piecewise-linear, so a fine trapezoid sum is exact enough for
        // reporting and for tests.
        let steps = 10_000u32;
        let dt = duration.as_secs_f64() / f64::from(steps);
        (0..steps)
            .map(|i| {
                let a = self.rate_at(Duration::from_secs_f64(dt * f64::from(i)));
                let b = self.rate_at(Duration::from_secs_f64(dt * f64::from(i + 1)));
                (a + b) / 2.0 * dt
            })
            .sum()
    }
}

impl fmt::Display for Schedule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Schedule::Constant(rate) => write!(f, "{rate}/s"),
            Schedule::Steps(segments) => {
                write!(f, "step:")?;
                for (i, (length, rate)) in segments.iter().enumerate() {
                    let sep = if i == 0 { "" } else { "," };
                    write!(f, "{sep}{}s@{rate}", length.as_secs_f64())?;
                }
                Ok(())
            }
            Schedule::Ramp { from, to, over } => {
                write!(f, "ramp:{from}..{to}/{}s", over.as_secs_f64())
            }
        }
    }
}

fn check_rate(rate: f64) -> Result<(), ScheduleError> {
    if rate.is_finite() && rate >= 0.0 {
        Ok(())
    } else {
        Err(err(format!("rate {rate} is not a non-negative number")))
    }
}

fn parse_rate(text: &str) -> Result<f64, ScheduleError> {
    let text = text.trim().trim_end_matches("/s");
    let rate: f64 = text
        .parse()
        .map_err(|_| err(format!("rate {text:?} is not a number")))?;
    check_rate(rate)?;
    Ok(rate)
}

/// Parses `500ms`, `10s`, `2m`, `1h` or a bare number of seconds (`2.5`).
pub fn parse_duration(text: &str) -> Result<Duration, ScheduleError> {
    let text = text.trim();
    let (number, unit) = match text.find(|c: char| c.is_ascii_alphabetic()) {
        Some(i) => text.split_at(i),
        None => (text, "s"),
    };
    let value: f64 = number
        .trim()
        .parse()
        .map_err(|_| err(format!("duration {text:?}: expected e.g. 500ms, 10s, 2m")))?;
    let seconds = match unit {
        "ms" => value / 1000.0,
        "s" => value,
        "m" | "min" => value * 60.0,
        "h" => value * 3600.0,
        other => return Err(err(format!("duration {text:?}: unknown unit {other:?}"))),
    };
    Duration::try_from_secs_f64(seconds)
        .map_err(|_| err(format!("duration {text:?} is negative or too large")))
}

/// Intended send times (offsets from the start of the run) of a
/// non-homogeneous Poisson process following a [`Schedule`], by thinning:
/// candidates arrive at the peak rate and each is kept with probability
/// `rate(t) / peak`.
#[derive(Debug)]
pub struct Arrivals {
    schedule: Schedule,
    end: f64,
    peak: f64,
    gaps: Exp<f64>,
    rng: StdRng,
    now: f64,
}

impl Arrivals {
    /// Arrivals in `[0, duration)`; the same seed gives the same times.
    pub fn new(
        schedule: Schedule,
        duration: Duration,
        seed: u64,
    ) -> Result<Arrivals, ScheduleError> {
        schedule.validate()?;
        let peak = schedule.peak_rate();
        let gaps = Exp::new(peak).map_err(|e| err(format!("rate {peak}: {e}")))?;
        Ok(Arrivals {
            schedule,
            end: duration.as_secs_f64(),
            peak,
            gaps,
            rng: StdRng::seed_from_u64(seed),
            now: 0.0,
        })
    }
}

impl Iterator for Arrivals {
    type Item = Duration;

    fn next(&mut self) -> Option<Duration> {
        loop {
            self.now += self.gaps.sample(&mut self.rng);
            if self.now >= self.end {
                self.now = self.end;
                return None;
            }
            let at = Duration::from_secs_f64(self.now);
            let keep = self.schedule.rate_at(at) / self.peak;
            if keep >= 1.0 || self.rng.random::<f64>() < keep {
                return Some(at);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn count_between(arrivals: &[Duration], from: f64, to: f64) -> usize {
        arrivals
            .iter()
            .filter(|t| (from..to).contains(&t.as_secs_f64()))
            .count()
    }

    #[test]
    fn constant_rate_has_the_right_mean_and_stays_in_bounds() {
        let duration = Duration::from_secs(100);
        let times: Vec<_> = Arrivals::new(Schedule::Constant(1000.0), duration, 7)
            .unwrap()
            .collect();
        let n = times.len() as f64;
        // Poisson: sd = sqrt(100_000) ~ 316, so 1% is > 3 sd.
        assert!((n - 100_000.0).abs() < 1_000.0, "{n} arrivals");
        assert!(times.windows(2).all(|w| w[0] <= w[1]));
        assert!(times.iter().all(|t| *t < duration));
    }

    #[test]
    fn gaps_are_exponential_not_regular() {
        let times: Vec<_> = Arrivals::new(Schedule::Constant(100.0), Duration::from_secs(200), 3)
            .unwrap()
            .collect();
        let gaps: Vec<f64> = times
            .windows(2)
            .map(|w| (w[1] - w[0]).as_secs_f64())
            .collect();
        let mean = gaps.iter().sum::<f64>() / gaps.len() as f64;
        let var = gaps.iter().map(|g| (g - mean).powi(2)).sum::<f64>() / gaps.len() as f64;
        // Exponential: sd equals the mean (0.01 s).
        assert!((mean - 0.01).abs() < 0.0005, "mean gap {mean}");
        assert!(
            (var.sqrt() / mean - 1.0).abs() < 0.1,
            "cv {}",
            var.sqrt() / mean
        );
    }

    #[test]
    fn same_seed_same_times_other_seed_other_times() {
        let make = |seed| -> Vec<Duration> {
            Arrivals::new(Schedule::Constant(50.0), Duration::from_secs(10), seed)
                .unwrap()
                .collect()
        };
        assert_eq!(make(1), make(1));
        assert_ne!(make(1), make(2));
    }

    #[test]
    fn steps_follow_each_segment_rate() {
        let schedule = Schedule::parse("step:10s@1000,10s@5000").unwrap();
        assert_eq!(schedule.natural_length(), Some(Duration::from_secs(20)));
        let times: Vec<_> = Arrivals::new(schedule, Duration::from_secs(30), 11)
            .unwrap()
            .collect();
        let first = count_between(&times, 0.0, 10.0) as f64;
        let second = count_between(&times, 10.0, 20.0) as f64;
        let held = count_between(&times, 20.0, 30.0) as f64;
        assert!((first - 10_000.0).abs() < 400.0, "{first}");
        assert!((second - 50_000.0).abs() < 1_000.0, "{second}");
        assert!((held - 50_000.0).abs() < 1_000.0, "last rate holds: {held}");
    }

    #[test]
    fn ramp_integrates_to_the_trapezoid() {
        let schedule = Schedule::parse("ramp:1000..20000/60s").unwrap();
        assert_eq!(schedule.rate_at(Duration::from_secs(30)), 10_500.0);
        assert_eq!(schedule.rate_at(Duration::from_secs(90)), 20_000.0);
        let expected = schedule.expected_count(Duration::from_secs(60));
        assert!((expected - 630_000.0).abs() < 10.0, "{expected}");
        let times: Vec<_> = Arrivals::new(schedule, Duration::from_secs(60), 5)
            .unwrap()
            .collect();
        let n = times.len() as f64;
        assert!((n - expected).abs() < expected * 0.01, "{n} vs {expected}");
        let early = count_between(&times, 0.0, 6.0) as f64;
        let late = count_between(&times, 54.0, 60.0) as f64;
        assert!(late > 5.0 * early, "ramp rises: {early} then {late}");
    }

    #[test]
    fn zero_rate_segments_pause_sending() {
        let schedule = Schedule::parse("step:2s@0,2s@500").unwrap();
        let times: Vec<_> = Arrivals::new(schedule, Duration::from_secs(4), 9)
            .unwrap()
            .collect();
        assert_eq!(count_between(&times, 0.0, 2.0), 0);
        assert!(count_between(&times, 2.0, 4.0) > 800);
    }

    #[test]
    fn bad_schedules_are_explained() {
        let cases = [
            ("", "expected step"),
            ("step:10s", "LENGTH@RATE"),
            ("step:10s@fast", "not a number"),
            ("step:10x@100", "unknown unit"),
            ("step:0s@100", "zero length"),
            ("step:5s@0,5s@0", "nothing would be sent"),
            ("step:5s@-3", "not a non-negative"),
            ("ramp:1000/60s", "FROM..TO"),
            ("ramp:1000..2000", "FROM..TO/LENGTH"),
            ("ramp:0..0/10s", "nothing would be sent"),
            ("ramp:1..2/0s", "zero length"),
        ];
        for (text, expected) in cases {
            let error = Schedule::parse(text).unwrap_err().to_string();
            assert!(error.contains(expected), "{text:?}: {error}");
        }
    }

    #[test]
    fn rate_zero_is_an_error() {
        let error = Arrivals::new(Schedule::Constant(0.0), Duration::from_secs(1), 1).unwrap_err();
        assert!(error.to_string().contains("greater than 0"), "{error}");
        assert!(Schedule::Constant(f64::NAN).validate().is_err());
    }

    #[test]
    fn durations_parse_in_common_units() {
        assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_duration("10s").unwrap(), Duration::from_secs(10));
        assert_eq!(parse_duration("2m").unwrap(), Duration::from_secs(120));
        assert_eq!(parse_duration("1h").unwrap(), Duration::from_secs(3600));
        assert_eq!(parse_duration("2.5").unwrap(), Duration::from_millis(2500));
        assert!(parse_duration("-1s").is_err());
        assert!(parse_duration("soon").is_err());
    }

    #[test]
    fn schedules_display_in_their_own_syntax() {
        for text in ["step:10s@1000,10s@5000", "ramp:1000..20000/60s"] {
            let schedule = Schedule::parse(text).unwrap();
            assert_eq!(Schedule::parse(&schedule.to_string()).unwrap(), schedule);
        }
    }
}
