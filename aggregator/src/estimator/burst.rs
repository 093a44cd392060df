//! Bursts of devices new to a train: the signature of a swarm.
//!
//! Riders board a train a few at a time, so devices show up on it at a
//! trickle. A swarm of fresh devices shows up at once. A device's first
//! appearance on a train is the earliest observation the state keeps of it;
//! a device is part of a burst when more than
//! `max(BURST_MIN, half the devices already on the train before)` devices
//! first appeared within a twelfth of a half-life of it (15 s at the
//! default 3 min). Devices without standing that are part of a burst keep
//! [`WEIGHT`] of their weight (see the estimator); established riders are
//! not affected, and honest newcomers caught in a burst count again fully
//! once their standing is earned.
//!
//! The rule looks only at the set of observations, never at their arrival
//! order, so the estimate stays independent of the order of reports.

use crowd_proto::pb::store::Observation;

/// Devices that may first appear together on a train, however empty it was.
pub const BURST_MIN: usize = 5;
/// Share of its weight a device without standing keeps when part of a burst.
pub const WEIGHT: f64 = 0.02;

/// Combined weight a burst keeps at most, as a share of the weight of the
/// train's other riders (when there are any): fifty fresh devices telling
/// one story at once are one suspicious source, not fifty witnesses, so
/// together they can sway an estimate by a fraction of a rider's voice,
/// not overturn it however few and old the other reports are.
pub const MAX_SHARE: f64 = 0.25;

/// The factor (0..=1) on the weight of each burst vote, given every vote's
/// `(weight, in_burst)`: 1 unless the burst votes together weigh more than
/// [`MAX_SHARE`] of the others. With no other vote, 1: a burst alone on a
/// train nobody else reports on is all there is to go by (honest riders
/// boarding an empty train together must be heard); its devices keep only
/// [`WEIGHT`] each, so the estimate's confidence says how little that is.
pub fn scale(votes: impl Iterator<Item = (f64, bool)>) -> f64 {
    let (mut burst, mut others) = (0.0, 0.0);
    for (w, in_burst) in votes {
        if in_burst {
            burst += w;
        } else {
            others += w;
        }
    }
    let cap = MAX_SHARE * others;
    if others > 0.0 && burst > cap && burst.is_finite() && cap.is_finite() {
        cap / burst
    } else {
        1.0
    }
}

/// The devices whose first appearance on the train was part of a burst,
/// sorted (for `binary_search`).
///
/// Built once per ballot and per estimate of a busy train: one sort of the
/// first appearances by time, then one sweep with two cursors (the
/// appearances before a device's window, and those up to its end) instead
/// of two binary searches per device.
pub fn burst_devices(observations: &[Observation], half_life_ms: i64) -> Vec<u64> {
    let window_ms = (half_life_ms / 12).max(1);
    // Each device's first appearance. A state keeps its observations in
    // order of device, so a device's are one run; otherwise sort them so.
    let mut first: Vec<(i64, u64)> = Vec::with_capacity(observations.len());
    if observations.is_sorted_by_key(|o| o.device) {
        for o in observations {
            match first.last_mut() {
                Some((t, d)) if *d == o.device => *t = (*t).min(o.observed_at_ms),
                _ => first.push((o.observed_at_ms, o.device)),
            }
        }
    } else {
        let mut pairs: Vec<(u64, i64)> = observations
            .iter()
            .map(|o| (o.device, o.observed_at_ms))
            .collect();
        pairs.sort_unstable();
        pairs.dedup_by_key(|(device, _)| *device);
        first.extend(pairs.into_iter().map(|(d, t)| (t, d)));
    }
    first.sort_unstable();
    let (mut before, mut upto) = (0, 0);
    let mut found: Vec<u64> = Vec::new();
    for &(t, device) in &first {
        let from = t.saturating_sub(window_ms);
        let to = t.saturating_add(window_ms);
        while first[before].0 < from {
            before += 1;
        }
        while upto < first.len() && first[upto].0 <= to {
            upto += 1;
        }
        if upto - before > BURST_MIN.max(before / 2) {
            found.push(device);
        }
    }
    found.sort_unstable();
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: i64 = 1_795_000_000_000;
    const HALF_LIFE: i64 = 180_000;

    fn seen(device: u64, at: i64) -> Observation {
        Observation {
            device,
            carriage_sequence: 1,
            level: 3,
            observed_at_ms: at,
            ..Observation::default()
        }
    }

    #[test]
    fn riders_trickling_in_are_not_a_burst() {
        // A new rider every 5 s for ten minutes: 7 within any 30 s, which
        // is a burst only while the train is nearly empty (all of them
        // alike, so their relative weights do not change); after that, never.
        let obs: Vec<Observation> = (0..120).map(|d| seen(d, T + d as i64 * 5_000)).collect();
        let found = burst_devices(&obs, HALF_LIFE);
        assert!(found.iter().all(|d| *d < 20), "{found:?}");
        let sparse: Vec<Observation> = (0..40).map(|d| seen(d, T + d as i64 * 20_000)).collect();
        assert!(burst_devices(&sparse, HALF_LIFE).is_empty());
    }

    #[test]
    fn a_swarm_is_found_whatever_the_order() {
        let mut obs: Vec<Observation> = (0..10)
            .map(|d| seen(d, T - 120_000 - d as i64 * 9_000))
            .collect();
        obs.extend((100..150).map(|d| seen(d, T + (d as i64 % 7) * 100)));
        let found = burst_devices(&obs, HALF_LIFE);
        assert_eq!(found, (100..150).collect::<Vec<u64>>());
        obs.reverse();
        assert_eq!(burst_devices(&obs, HALF_LIFE), found);
    }

    #[test]
    fn a_burst_keeps_at_most_a_quarter_of_the_others_weight() {
        // Others weigh 2, the burst 4: scaled to 0.5 in all.
        let votes = [(1.0, false), (1.0, false), (2.0, true), (2.0, true)];
        let s = scale(votes.into_iter());
        assert!((4.0 * s - MAX_SHARE * 2.0).abs() < 1e-12, "{s}");
        // A small burst is left alone; so is a burst with nobody else.
        assert_eq!(scale([(4.0, false), (0.5, true)].into_iter()), 1.0);
        assert_eq!(scale([(1.0, true), (1.0, true)].into_iter()), 1.0);
        assert_eq!(scale(std::iter::empty()), 1.0);
        assert_eq!(scale([(1.0, false)].into_iter()), 1.0);
        assert_eq!(
            scale([(1.0, false), (f64::INFINITY, true)].into_iter()),
            1.0
        );
    }

    /// The rule as first written: two binary searches per device.
    fn by_binary_search(observations: &[Observation], half_life_ms: i64) -> Vec<u64> {
        let window_ms = (half_life_ms / 12).max(1);
        let mut first = std::collections::BTreeMap::new();
        for o in observations {
            first
                .entry(o.device)
                .and_modify(|t: &mut i64| *t = (*t).min(o.observed_at_ms))
                .or_insert(o.observed_at_ms);
        }
        let mut times: Vec<i64> = first.values().copied().collect();
        times.sort_unstable();
        first
            .into_iter()
            .filter(|(_, t)| {
                let before = times.partition_point(|x| *x < t.saturating_sub(window_ms));
                let together =
                    times.partition_point(|x| *x <= t.saturating_add(window_ms)) - before;
                together > BURST_MIN.max(before / 2)
            })
            .map(|(device, _)| device)
            .collect()
    }

    proptest::proptest! {
        #[test]
        fn the_sweep_finds_what_binary_searches_find(
            seen_at in proptest::collection::vec((0u64..60, 0i64..120, 1u32..4), 0..300),
            sorted: bool,
        ) {
            let mut obs: Vec<Observation> = seen_at
                .iter()
                .map(|(d, s, car)| Observation {
                    carriage_sequence: *car,
                    ..seen(*d, T + s * 1_000)
                })
                .collect();
            if sorted {
                obs.sort_by_key(|o| (o.device, o.carriage_sequence));
            }
            proptest::prop_assert_eq!(
                burst_devices(&obs, HALF_LIFE),
                by_binary_search(&obs, HALF_LIFE)
            );
        }
    }

    #[test]
    fn a_device_appears_when_it_first_reported() {
        // Device 1 reported long ago on car 1, now again on car 2 during a
        // burst: it is not part of it.
        let mut obs = vec![seen(1, T - 600_000), seen(1, T)];
        obs.extend((100..110).map(|d| seen(d, T)));
        let found = burst_devices(&obs, HALF_LIFE);
        assert!(!found.contains(&1));
        assert_eq!(found.len(), 10);
    }
}
