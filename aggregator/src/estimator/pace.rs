//! How fast a train's published level may move on weak evidence.
//!
//! A train's load changes at its stops, and when it changes by several
//! levels at once (half the riders leave at a hub), its riders say so
//! together: the estimate is confident, and it is published at once. An
//! estimate several levels from what was shown that is *not* confident is
//! a few voices against what everyone saw moments ago: the first devices
//! of a swarm, before there are enough of them to be recognised as one
//! ([`super::burst`]), or a rider who misjudged alone on a quiet train. It
//! moves the published level one step toward it, and one more step for
//! each [`step_ms`] it persists, so a real change still shows in full
//! within a minute or so while a handful of fresh devices cannot flip a
//! train in one go.
//!
//! An estimate from a single device is shown as it is: it is that rider's
//! word against nobody's (their own earlier report is the level shown, and
//! a rider who finds the car has filled must see their update count).
//!
//! The level shown and since when are kept in the train's state
//! ([`Shown`]), so every aggregator paces a train the same way and a
//! restart does not forget it.

use crowd_proto::level::Level;
use crowd_proto::pb::store::{Shown, TrainState};
use crowd_proto::pb::v1::OccupancyEstimate;

use super::{Params, confidence};

/// Confidence from which an estimate is published as it is, however far
/// from the level shown.
pub const CONFIDENT: f32 = 0.5;

/// How long a weakly supported jump holds at each step: a sixth of a
/// half-life (15 s by default), a few reports' time on a busy train.
pub fn step_ms(params: &Params) -> i64 {
    (params.half_life_ms / 6).max(1)
}

/// `estimate` (or its absence) as `state` may publish it, remembering in
/// `state` what it shows.
pub fn publish(
    state: &mut TrainState,
    estimate: Option<OccupancyEstimate>,
    now_ms: i64,
    params: &Params,
) -> Option<OccupancyEstimate> {
    let Some(estimate) = estimate else {
        state.shown = None;
        return None;
    };
    let (estimate, shown) = pace(state.shown, estimate, now_ms, params);
    state.shown = Some(shown);
    Some(estimate)
}

/// `estimate` as it may be published after `shown` (what the train's
/// estimate showed until now), and what it shows from then on. A held
/// estimate keeps its percentage within the level it shows, and its own
/// (low) confidence.
pub fn pace(
    shown: Option<Shown>,
    mut estimate: OccupancyEstimate,
    now_ms: i64,
    params: &Params,
) -> (OccupancyEstimate, Shown) {
    let shown_as_is = Shown {
        level: u32::try_from(estimate.level).unwrap_or(0),
        holding_since_ms: 0,
    };
    let wanted = Level::from_number(estimate.level);
    let anchor =
        shown.and_then(|s| Some((Level::from_number(s.level as i32)?, s.holding_since_ms)));
    let (Some(wanted), Some((anchor, holding_since_ms))) = (wanted, anchor) else {
        return (estimate, shown_as_is);
    };
    if anchor.distance(wanted) <= 1 || estimate.confidence >= CONFIDENT || estimate.reporters < 2 {
        return (estimate, shown_as_is);
    }
    // A weak jump: held one step from the level shown, which moves one
    // step toward it for every step held.
    let toward = |from: Level| {
        let n = from.number() + (wanted.number() - from.number()).signum();
        Level::from_number(n).unwrap_or(from)
    };
    let since = if holding_since_ms > 0 && holding_since_ms <= now_ms {
        holding_since_ms
    } else {
        now_ms
    };
    let steps = now_ms.saturating_sub(since) / step_ms(params);
    let mut anchor = anchor;
    for _ in 0..steps.min(7) {
        anchor = toward(anchor);
    }
    let since = since.saturating_add(steps.saturating_mul(step_ms(params)));
    if anchor.distance(wanted) <= 1 {
        return (estimate, shown_as_is);
    }
    let level = toward(anchor);
    let (lo, hi) = band(level);
    estimate.level = level.number();
    estimate.occupancy_percentage = estimate.occupancy_percentage.clamp(lo, hi);
    (
        estimate,
        Shown {
            level: anchor.number() as u32,
            holding_since_ms: since.max(1),
        },
    )
}

/// The whole percentages of `level`'s band.
fn band(level: Level) -> (u32, u32) {
    let (lower, upper) = confidence::band(level);
    (
        lower.map_or(0, |p| p as u32),
        upper.map_or(u32::MAX, |p| p as u32 - 1),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_795_000_000_000;

    fn params() -> Params {
        Params::default()
    }

    fn estimate(level: Level, pct: u32, confidence: f32) -> OccupancyEstimate {
        OccupancyEstimate {
            level: level.number(),
            occupancy_percentage: pct,
            confidence,
            reporters: 3,
            ..OccupancyEstimate::default()
        }
    }

    fn shown(level: Level) -> Option<Shown> {
        Some(Shown {
            level: level.number() as u32,
            holding_since_ms: 0,
        })
    }

    #[test]
    fn a_first_estimate_and_a_change_of_one_level_show_as_they_are() {
        let e = estimate(Level::Full, 140, 0.1);
        let (out, s) = pace(None, e.clone(), NOW, &params());
        assert_eq!(out, e);
        assert_eq!(s.level, Level::Full.number() as u32);
        let e = estimate(Level::FewSeats, 50, 0.1);
        let (out, s) = pace(shown(Level::ManySeats), e.clone(), NOW, &params());
        assert_eq!(out, e);
        assert_eq!((s.level, s.holding_since_ms), (3, 0));
    }

    #[test]
    fn a_confident_jump_shows_at_once() {
        let e = estimate(Level::Empty, 5, CONFIDENT);
        let (out, s) = pace(shown(Level::Crushed), e.clone(), NOW, &params());
        assert_eq!(out, e);
        assert_eq!(s.level, 1);
    }

    #[test]
    fn a_weak_jump_moves_one_level_then_one_more_per_step_held() {
        let p = params();
        let step = step_ms(&p);
        let e = estimate(Level::Full, 140, 0.2);
        let (out, s) = pace(shown(Level::Empty), e.clone(), NOW, &p);
        assert_eq!(out.level, Level::ManySeats.number());
        assert_eq!(out.occupancy_percentage, 39, "the top of many seats");
        assert_eq!((s.level, s.holding_since_ms), (1, NOW));
        // Still held just before a step.
        let (out, s) = pace(Some(s), e.clone(), NOW + step - 1, &p);
        assert_eq!(out.level, Level::ManySeats.number());
        assert_eq!(s.holding_since_ms, NOW);
        // One more level per step, until within one of the estimate.
        let (out, s) = pace(Some(s), e.clone(), NOW + step, &p);
        assert_eq!(out.level, Level::FewSeats.number());
        let (out, s) = pace(Some(s), e.clone(), NOW + 3 * step, &p);
        assert_eq!(out.level, Level::Crushed.number());
        assert_eq!(s.level, Level::StandingRoom.number() as u32);
        let (out, s) = pace(Some(s), e.clone(), NOW + 4 * step, &p);
        assert_eq!(out, e, "held four steps: within one, so as it is");
        assert_eq!((s.level, s.holding_since_ms), (6, 0));
    }

    #[test]
    fn a_weak_jump_that_ends_lets_go() {
        let p = params();
        let (_, s) = pace(
            shown(Level::Empty),
            estimate(Level::Full, 140, 0.2),
            NOW,
            &p,
        );
        let back = estimate(Level::Empty, 5, 0.3);
        let (out, s) = pace(Some(s), back.clone(), NOW + 1_000, &p);
        assert_eq!(out, back);
        assert_eq!((s.level, s.holding_since_ms), (1, 0));
    }

    #[test]
    fn a_lone_rider_changing_their_report_is_shown_at_once() {
        let lone = OccupancyEstimate {
            reporters: 1,
            ..estimate(Level::Full, 140, 0.2)
        };
        let (out, s) = pace(shown(Level::Empty), lone.clone(), NOW, &params());
        assert_eq!(out, lone);
        assert_eq!((s.level, s.holding_since_ms), (6, 0));
    }

    #[test]
    fn a_weak_fall_is_held_from_above() {
        let (out, _) = pace(
            shown(Level::NotAccepting),
            estimate(Level::Empty, 2, 0.2),
            NOW,
            &params(),
        );
        assert_eq!(out.level, Level::Full.number());
        assert_eq!(out.occupancy_percentage, 130, "the bottom of full");
    }

    #[test]
    fn publishing_remembers_what_shows_and_forgets_it_with_the_estimate() {
        let mut state = TrainState::default();
        let p = params();
        let first = publish(&mut state, Some(estimate(Level::Empty, 5, 0.9)), NOW, &p);
        assert_eq!(first.map(|e| e.level), Some(1));
        let weak = publish(&mut state, Some(estimate(Level::Full, 140, 0.2)), NOW, &p);
        assert_eq!(weak.map(|e| e.level), Some(2));
        assert!(publish(&mut state, None, NOW, &p).is_none());
        assert_eq!(state.shown, None);
        let again = publish(&mut state, Some(estimate(Level::Full, 140, 0.2)), NOW, &p);
        assert_eq!(again.map(|e| e.level), Some(6), "nothing shown before");
    }

    #[test]
    fn a_garbled_shown_level_is_ignored() {
        let garbled = Some(Shown {
            level: 99,
            holding_since_ms: -5,
        });
        let e = estimate(Level::Full, 140, 0.2);
        let (out, s) = pace(garbled, e.clone(), NOW, &params());
        assert_eq!(out, e);
        assert_eq!(s.level, 6);
    }
}
