//! Device reputation: whom to believe, learnt from agreement with consensus.
//!
//! Each device has a score, 0 when first seen. When one of its reports
//! arrives on a car (or train) whose other riders already agree (a settled
//! consensus), the score moves: up when the report agrees (within one level),
//! a little down when it is two levels off, and down twice as fast as it can
//! rise when it is further off, so steady liars sink quickly while honest
//! riders who misjudge now and then keep their standing. The score is bounded,
//! and so is the trust derived from it, `2^(score / 4)`: a new device weighs 1,
//! a proven one at most [`MAX_TRUST`], a proven liar at least [`MIN_TRUST`], so
//! a newcomer neither dominates nor is ignored.
//!
//! # Why new devices weigh 1 but share a capped voice
//!
//! Device ids are free, so a hostile actor can always show up with many
//! fresh devices at once; starting them low would not help (fifty devices at
//! ½ still outweigh ten riders at 1), and it would silence the first honest
//! rider of an empty train, which is when a report is most useful. So a new
//! device weighs 1, but devices without standing (score below
//! [`ESTABLISHED_SCORE`], i.e. fewer than two net agreements, or distrusted)
//! together weigh at most `max(½ × E, 3 − E)` on each train and car, where
//! `E` is the weight of the established riders there (see
//! [`crate::estimator::NEWCOMER_FLOOR`]): on a train whose established
//! riders agree (`E` of 2 or more), any number of fresh devices is at most
//! a third of the weight and cannot move the median past the established
//! riders' own spread; on an empty train, the first three riders are heard
//! in full. Standing is earned only by agreeing with a settled
//! consensus of *other* devices, which a swarm reporting at once cannot
//! earn for itself.
//!
//! # Judged against what was settled before
//!
//! The aggregator judges the reports of one batch on a busy train against
//! a [`Ballot`] of it taken before the batch is applied ([`judge_on`]), not
//! after each report: the reports of a batch arrive together, so none of
//! them is evidence for or against another, and a swarm landing in one
//! batch cannot settle a consensus that its own members then earn
//! standing by. It also weighs each train's votes once per batch instead
//! of once per report. On a train still thin (a few dozen observations),
//! each report is judged as it is applied ([`judge`], the same rule for one
//! report at a time), so that its first riders judge one another as they
//! board, in one batch or several.
//!
//! Pure and in memory; the aggregator shares scores through Redis as soft
//! state (`reputation_store`), so a restart or another aggregator does not
//! start from scratch.

use crowd_proto::level::Level;
use crowd_proto::pb::store::{StoredReport, TrainState};

use crate::device_map::DeviceMap;
use crate::estimator::{self, Ballot, Consensus, Params, Trust};

/// Lowest score: trust `2^-3` = 1/8.
pub const MIN_SCORE: f64 = -12.0;
/// Highest score: trust `2^2` = 4.
pub const MAX_SCORE: f64 = 8.0;
/// Score steps per doubling of trust.
const SCORE_PER_DOUBLING: f64 = 4.0;
/// Trust of a proven liar.
pub const MIN_TRUST: f64 = 0.125;
/// Trust of a device that agreed many times.
pub const MAX_TRUST: f64 = 4.0;
/// Score from which a device has standing: it no longer shares the capped
/// weight of newcomers (see [`Trust::established`]).
pub const ESTABLISHED_SCORE: f64 = 2.0;
/// A consensus is settled from this confidence on...
const SETTLED_CONFIDENCE: f32 = 0.5;
/// ...and with at least this many other devices behind it.
const SETTLED_REPORTERS: u32 = 2;
/// Devices remembered; beyond that, those closest to neutral are forgotten.
const MAX_DEVICES: usize = 1_000_000;

/// How a report compared with the settled consensus.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Within one level.
    Agrees,
    /// Two levels off: possibly a change the others have not seen yet.
    Differs,
    /// Three or more levels off.
    Contradicts,
}

impl Verdict {
    /// The verdict on a report at `level`, or `None` when the consensus is not
    /// settled enough to judge anybody by.
    pub fn of(level: Level, consensus: &Consensus) -> Option<Verdict> {
        if consensus.confidence < SETTLED_CONFIDENCE || consensus.reporters < SETTLED_REPORTERS {
            return None;
        }
        Some(match level.distance(consensus.level) {
            0 | 1 => Verdict::Agrees,
            2 => Verdict::Differs,
            _ => Verdict::Contradicts,
        })
    }

    fn score_change(self) -> f64 {
        match self {
            Verdict::Agrees => 1.0,
            Verdict::Differs => -0.5,
            Verdict::Contradicts => -2.0,
        }
    }
}

/// How a report compares with what the other riders of its car (or of the
/// train, for car 0) already agree on, judged before the report is applied;
/// `None` when nothing settled is there to compare with.
pub fn judge(
    state: &TrainState,
    report: &StoredReport,
    now_ms: i64,
    params: &Params,
    reputation: &Reputation,
) -> Option<Verdict> {
    let level = level_of(report)?;
    let car = car_of(report);
    let consensus = estimator::consensus(state, car, report.device, now_ms, params, reputation)?;
    Verdict::of(level, &consensus)
}

/// [`judge`] against a ballot of the report's train taken before its batch
/// (see the module's header for why): the same verdict as `judge` on the
/// state and trust the ballot was taken from.
pub fn judge_on(ballot: &Ballot<'_>, report: &StoredReport) -> Option<Verdict> {
    let level = level_of(report)?;
    let consensus = ballot.consensus(car_of(report), report.device)?;
    Verdict::of(level, &consensus)
}

fn level_of(report: &StoredReport) -> Option<Level> {
    i32::try_from(report.level)
        .ok()
        .and_then(Level::from_number)
}

/// The report's car, or `None` for the whole train (car 0).
fn car_of(report: &StoredReport) -> Option<u32> {
    Some(report.carriage_sequence).filter(|c| *c > 0)
}

/// Scores of the devices seen so far.
#[derive(Debug, Default, Clone)]
pub struct Reputation {
    scores: DeviceMap<f64>,
    /// How many times memory was made by forgetting scores: a device
    /// forgotten must be read again before it is weighed.
    forgettings: u64,
}

impl Reputation {
    pub fn new() -> Reputation {
        Reputation::default()
    }

    /// Moves `device`'s score after a verdict on one of its reports and
    /// returns by how much it moved (0 at a bound).
    pub fn record(&mut self, device: u64, verdict: Verdict) -> f64 {
        self.make_room_for(device);
        let score = self.scores.entry(device).or_insert(0.0);
        let before = *score;
        *score = (before + verdict.score_change()).clamp(MIN_SCORE, MAX_SCORE);
        *score - before
    }

    /// Whether the device's score is in memory (known, or learnt to be new).
    pub fn knows(&self, device: u64) -> bool {
        self.scores.contains_key(&device)
    }

    /// Remembers a score read back from storage (0 for a device never seen);
    /// out-of-range or non-finite values are brought back within bounds.
    pub fn remember(&mut self, device: u64, score: f64) {
        self.make_room_for(device);
        let score = if score.is_finite() { score } else { 0.0 };
        self.scores
            .insert(device, score.clamp(MIN_SCORE, MAX_SCORE));
    }

    fn make_room_for(&mut self, device: u64) {
        if self.scores.len() >= MAX_DEVICES && !self.scores.contains_key(&device) {
            self.forget_neutral();
        }
    }

    /// The device's score (0 for a device never judged).
    pub fn score(&self, device: u64) -> f64 {
        self.scores.get(&device).copied().unwrap_or(0.0)
    }

    /// How many times scores were forgotten to bound memory (it only
    /// grows): callers that skip reading back devices they already
    /// looked up must look again when it changed.
    pub fn forgettings(&self) -> u64 {
        self.forgettings
    }

    /// Every remembered device with its score.
    pub fn scores(&self) -> impl Iterator<Item = (u64, f64)> + '_ {
        self.scores.iter().map(|(device, score)| (*device, *score))
    }

    /// Devices currently remembered.
    pub fn len(&self) -> usize {
        self.scores.len()
    }

    pub fn is_empty(&self) -> bool {
        self.scores.is_empty()
    }

    /// Keeps memory bounded: drops the half of the devices nearest to neutral.
    fn forget_neutral(&mut self) {
        let mut magnitudes: Vec<f64> = self.scores.values().map(|s| s.abs()).collect();
        let mid = magnitudes.len() / 2;
        magnitudes.select_nth_unstable_by(mid, f64::total_cmp);
        let threshold = magnitudes[mid];
        self.scores.retain(|_, s| s.abs() > threshold);
        self.forgettings += 1;
    }
}

/// The trust of a score: `2^(score / SCORE_PER_DOUBLING)` within bounds.
fn trust_of(score: f64) -> f64 {
    (score / SCORE_PER_DOUBLING)
        .exp2()
        .clamp(MIN_TRUST, MAX_TRUST)
}

impl Trust for Reputation {
    fn weight(&self, device: u64) -> f64 {
        trust_of(self.score(device))
    }

    /// One lookup for both.
    fn standing(&self, device: u64) -> (f64, bool) {
        let score = self.score(device);
        (trust_of(score), score >= ESTABLISHED_SCORE)
    }

    /// Standing takes [`ESTABLISHED_SCORE`]: at least two net agreements
    /// with a settled consensus.
    fn established(&self, device: u64) -> bool {
        self.score(device) >= ESTABLISHED_SCORE
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::estimator::{Applied, apply, estimate};

    const NOW: i64 = 1_795_000_000_000;

    fn report(id: &str, device: u64, trip: &str, level: Level, at: i64) -> StoredReport {
        StoredReport {
            report_id: id.into(),
            device,
            trip_id: trip.into(),
            start_date: "20261126".into(),
            carriage_sequence: 1,
            level: level.number() as u32,
            observed_at_ms: at,
            received_at_ms: at,
            ..StoredReport::default()
        }
    }

    /// What the aggregator does per report: judge, apply, record.
    fn feed(state: &mut TrainState, r: &StoredReport, reputation: &mut Reputation) {
        let params = Params::default();
        let verdict = judge(state, r, r.observed_at_ms, &params, reputation);
        if apply(state, r, &params) == Applied::Counted
            && let Some(v) = verdict
        {
            reputation.record(r.device, v);
        }
    }

    #[test]
    fn learnt_trust_outvotes_a_lying_majority() {
        let honest = [1u64, 2, 3, 4];
        let liars = [10u64, 11, 12];
        let mut reputation = Reputation::new();
        // Ten trains on which honest riders speak first and liars contradict them.
        for train in 0..10 {
            let trip = format!("T{train}");
            let mut state = TrainState::default();
            let t0 = NOW - 3_600_000 + train * 60_000;
            let mut order = honest.to_vec();
            order.rotate_left(train as usize % honest.len());
            for (i, d) in order.iter().chain(&liars).enumerate() {
                let level = if liars.contains(d) {
                    Level::Full
                } else {
                    Level::ManySeats
                };
                let r = report(
                    &format!("{trip}-{d}"),
                    *d,
                    &trip,
                    level,
                    t0 + i as i64 * 1000,
                );
                feed(&mut state, &r, &mut reputation);
            }
        }
        for d in honest {
            assert!(reputation.weight(d) > 1.0, "honest {d}");
        }
        for d in liars {
            assert!(reputation.weight(d) < 1.0, "liar {d}");
        }

        // A train where the liars outnumber the honest riders present.
        let mut state = TrainState::default();
        for (i, (d, level)) in [(1, Level::ManySeats), (2, Level::ManySeats)]
            .into_iter()
            .chain(liars.iter().map(|d| (*d, Level::Full)))
            .enumerate()
        {
            let r = report(&format!("x{d}"), d, "X", level, NOW - 10_000 + i as i64);
            apply(&mut state, &r, &Params::default());
        }
        let params = Params::default();
        let naive = estimate(&state, NOW, &params, &crate::estimator::UniformTrust).unwrap();
        assert_eq!(naive.level, Level::Full.number());
        let learnt = estimate(&state, NOW, &params, &reputation).unwrap();
        assert_eq!(learnt.level, Level::ManySeats.number());
    }

    #[test]
    fn judging_on_a_ballot_is_judging_the_state_it_was_taken_from() {
        let mut reputation = Reputation::new();
        for d in 0..6 {
            reputation.record(d, Verdict::Agrees);
            reputation.record(d, Verdict::Agrees);
        }
        reputation.record(3, Verdict::Contradicts);
        let params = Params::default();
        let mut state = TrainState::default();
        for d in 0u64..40 {
            let level = if d % 5 == 0 {
                Level::Full
            } else {
                Level::ManySeats
            };
            let mut r = report(
                &format!("s{d}"),
                d % 12,
                "S",
                level,
                NOW - 60_000 + d as i64,
            );
            r.carriage_sequence = (d % 3) as u32;
            apply(&mut state, &r, &params);
        }
        let ballot = Ballot::new(&state, NOW, &params, &reputation);
        let mut judged = 0;
        for device in 0u64..14 {
            for car in 0..4 {
                for level in [
                    Level::Empty,
                    Level::ManySeats,
                    Level::StandingRoom,
                    Level::Full,
                ] {
                    let mut r = report("q", device, "S", level, NOW);
                    r.carriage_sequence = car;
                    let expected = judge(&state, &r, NOW, &params, &reputation);
                    assert_eq!(judge_on(&ballot, &r), expected, "{device} {car} {level:?}");
                    judged += usize::from(expected.is_some());
                }
            }
        }
        assert!(judged > 50, "{judged}");
    }

    fn settled(level: Level) -> Consensus {
        Consensus {
            level,
            confidence: 0.8,
            reporters: 4,
        }
    }

    #[test]
    fn a_new_device_weighs_one() {
        assert_eq!(Reputation::new().weight(42), 1.0);
    }

    #[test]
    fn only_a_settled_consensus_judges() {
        let weak = Consensus {
            confidence: 0.3,
            ..settled(Level::Full)
        };
        assert_eq!(Verdict::of(Level::Empty, &weak), None);
        let lonely = Consensus {
            reporters: 1,
            ..settled(Level::Full)
        };
        assert_eq!(Verdict::of(Level::Empty, &lonely), None);
        let c = settled(Level::StandingRoom);
        assert_eq!(Verdict::of(Level::Crushed, &c), Some(Verdict::Agrees));
        assert_eq!(Verdict::of(Level::ManySeats, &c), Some(Verdict::Differs));
        assert_eq!(Verdict::of(Level::Empty, &c), Some(Verdict::Contradicts));
    }

    #[test]
    fn agreement_raises_trust_up_to_a_bound() {
        let mut r = Reputation::new();
        let mut last = r.weight(1);
        for _ in 0..5 {
            r.record(1, Verdict::Agrees);
            assert!(r.weight(1) > last);
            last = r.weight(1);
        }
        for _ in 0..100 {
            r.record(1, Verdict::Agrees);
        }
        assert_eq!(r.weight(1), MAX_TRUST);
    }

    #[test]
    fn liars_sink_faster_than_honest_riders_rise_but_are_never_zero() {
        let mut r = Reputation::new();
        for _ in 0..3 {
            r.record(1, Verdict::Agrees);
            r.record(2, Verdict::Contradicts);
        }
        assert!(r.score(2).abs() > r.score(1).abs());
        assert!(r.weight(2) < 1.0 && r.weight(1) > 1.0);
        for _ in 0..100 {
            r.record(2, Verdict::Contradicts);
        }
        assert_eq!(r.weight(2), MIN_TRUST);
    }

    #[test]
    fn an_honest_rider_who_misjudges_now_and_then_keeps_trust() {
        let mut r = Reputation::new();
        for i in 0..40 {
            let v = if i % 5 == 0 {
                Verdict::Differs
            } else {
                Verdict::Agrees
            };
            r.record(7, v);
        }
        assert!(r.weight(7) > 2.0, "{}", r.weight(7));
    }

    #[test]
    fn remembered_scores_are_bounded_and_changes_reported() {
        let mut r = Reputation::new();
        assert!(!r.knows(5));
        r.remember(5, 1e9);
        assert!(r.knows(5));
        assert_eq!(r.score(5), MAX_SCORE);
        assert_eq!(r.record(5, Verdict::Agrees), 0.0);
        assert_eq!(r.record(5, Verdict::Contradicts), -2.0);
        r.remember(6, f64::NAN);
        assert_eq!(r.score(6), 0.0);
        r.remember(7, -1e9);
        assert_eq!(r.weight(7), MIN_TRUST);
    }

    #[test]
    fn forgetting_keeps_the_most_telling_scores() {
        let mut r = Reputation::new();
        for d in 0..10 {
            r.record(d, Verdict::Agrees);
        }
        for _ in 0..5 {
            r.record(99, Verdict::Contradicts);
        }
        r.forget_neutral();
        assert!(r.len() < 11);
        assert!(r.score(99) < 0.0, "the liar is remembered");
    }
}
