//! The occupancy estimator: pure functions from a train's state to its
//! published estimate. No I/O and no clock: time is passed in as milliseconds.
//!
//! # The model, in plain words
//!
//! - **What is kept.** For each train, only the latest observation of each
//!   device on each car is kept (a rider who updates their report replaces it).
//!   At most [`Params::max_observations`] observations are kept per train; the
//!   oldest go first. A report whose id (per device) was already seen is a
//!   duplicate and changes nothing.
//! - **How much a report weighs.** `trust(device) × 0.5^(age / half_life)`:
//!   a report loses half its weight every half-life (90 s by default: a
//!   train's load changes at every stop, one to three minutes apart, so a
//!   report from two stops back should not decide), and reports older than
//!   the window (or implausibly far in the future) do not count at all.
//! - **Stops split the reports.** Loads change only at stops, and a report
//!   made at a stop names it. The state remembers when the train was first
//!   seen at each recent stop (by reports that arrived promptly, so a
//!   device with a wrong clock cannot misplace a stop). A report from
//!   before the latest stop describes a load that no longer exists: it
//!   keeps [`PAST_STOP_FACTOR`] of its weight per stop since, so it counts
//!   for less than what was said since. A report since the latest stop
//!   describes the load as it still is and loses at most half its weight.
//!   Naming a stop must not be a way to silence a train's riders, so a
//!   stop seen only by newcomers splits only newcomers' reports; it takes
//!   a witness with standing to split the established riders' ones
//!   ([`vouched_for`]).
//!   Trust is a pluggable per-device function ([`Trust`]): [`UniformTrust`]
//!   weighs everybody 1, [`Reputation`](crate::reputation::Reputation)
//!   learns it.
//! - **Implausible reports count less**: far from where the train's riders
//!   say it is, received long after they were observed, or from a device
//!   whose position jumped ([`plausibility`]; signals judged across trains
//!   come in through [`apply_with_factor`]); the share lost is kept with the
//!   observation.
//! - **Devices without standing share a capped weight** on each train and
//!   car ([`NEWCOMER_FLOOR`], [`NEWCOMER_SHARE`]), so fresh devices cannot
//!   outvote riders the service has learnt to trust.
//! - **A burst of devices new to a train** (a swarm) is one suspicious
//!   source, not many witnesses: each keeps 2 % of its weight and together
//!   they weigh at most a quarter of the train's other riders, however few
//!   and old those are; alone on a train they are all there is to go by,
//!   and the low confidence of their estimate says so ([`burst`]).
//! - **The train level** gives each device one vote, its latest observation
//!   on any car, so a rider cannot outweigh others by reporting many cars.
//!   Each vote is weighed by how full the rider's car is relative to the
//!   train, within [`MAX_CAR_FACTOR`] either way: the train's load is the
//!   mean of its cars', but riders report from each car in proportion to
//!   how many ride in it, so the plain median rider overstates an unevenly
//!   loaded train.
//! - **The level** is the weighted median of the levels, so a minority of wrong
//!   or hostile riders cannot drag it: they would need half the weight.
//! - **...or, better, the level of the mean of the cars** ([`cars`]): each
//!   car estimated from its own riders (one vote per device, votes more
//!   than two levels off the train's median left out), the train the mean
//!   of its cars, which is what its level is defined by. A median of
//!   riders' levels is not the level of a mean, and riders crowd the fuller
//!   cars. That mean is published only when it is within one level of
//!   the same mean without the single most influential device and without
//!   newcomers that are many (or a burst); otherwise the weighted median
//!   stands.
//! - **The trains ahead** ([`crate::profile`], [`estimate_given`]): a
//!   train's load only changes at stops, and the train a few minutes ahead
//!   on the same stretch carried much the same crowd. Their percentage is
//!   averaged with the riders' by the inverse of each one's variance
//!   ([`ahead`]), so a train whose riders spoke since its latest stop goes
//!   by them, and one whose reports predate that stop (and so weigh
//!   little) mostly by the trains ahead.
//! - **The percentage** is the weighted mean of the percentages within one
//!   level of the median (the typical percentage of the level when a rider
//!   gave none): the far-off ones (liars, spammers) would drag a plain mean.
//! - **Confidence** (0..1) is the probability that the published level is
//!   right, under a normal error of the percentage whose size shrinks with
//!   the weight of the reports and grows with their disagreement
//!   ([`confidence`] has the formula, fitted so that about nine in ten
//!   estimates at 0.8 or more are right on the simulator), so it grows with
//!   independent, agreeing, fresh reports and is lower near a band edge.
//! - **Per car** estimates exist only for cars somebody reported on; car 0
//!   ("whole train") only feeds the train level.
//! - **Weak jumps are paced** ([`pace`]): an estimate more than one level
//!   from what the train showed, and not confident, is published one
//!   level from it, and one more level per sixth of a half-life it
//!   persists. A real change of several levels is confirmed by many
//!   riders at once and shows at once; the first few devices of a swarm,
//!   before they are many enough to be seen as a burst, cannot flip a
//!   train in one go.
//!
//! How good this is, and what bounds it, is measured end to end by
//! `loadgen quality` (or in a second through the same model, `--offline`).

use std::collections::BTreeMap;

use crowd_proto::codec::timestamp_from_ms;
use crowd_proto::level::Level;
use crowd_proto::pb::store::{Observation, Position, StopSeen, StoredReport, TrainState};
use crowd_proto::pb::v1::{CarEstimate, EstimateSource, GeoPoint, OccupancyEstimate, TripRef};

use crate::plausibility;

/// Smallest decay factor: keeps very old (but in-window) weights positive.
const MIN_DECAY: f64 = 1e-12;
/// Largest trust a device can get, so one device can never dominate.
const MAX_TRUST: f64 = 10.0;
/// Percentages above this are treated as this (crush loads stay below it).
const MAX_PERCENTAGE: u32 = 300;
/// Combined weight devices without standing get on a train nobody
/// established reports on (three fresh riders' worth), so the first riders
/// of an empty train are heard; each unit of established weight takes one
/// unit off it.
pub const NEWCOMER_FLOOR: f64 = 3.0;
/// On a train with established riders, devices without standing together
/// weigh at most this share of the established weight (or what is left of
/// the floor, if more): they can sway a split train, not outvote an
/// agreeing one.
pub const NEWCOMER_SHARE: f64 = 0.5;

/// Default half-life of a report's weight: the load of a train changes at
/// every stop, one to three minutes apart, so a report is about half as
/// telling after a minute and a half (a 3-minute half-life let reports from
/// two stops back decide: −5 points of exact level on the simulator).
pub const DEFAULT_HALF_LIFE_MS: i64 = 90_000;
/// Default window: after ten half-lives a report weighs a thousandth; it
/// still lets a train nobody reported on lately keep an estimate.
pub const DEFAULT_WINDOW_MS: i64 = 900_000;

/// Tunables of the model.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Params {
    /// A report's weight halves every this many milliseconds (at least 1).
    pub half_life_ms: i64,
    /// Reports older than this many milliseconds do not count.
    pub window_ms: i64,
    /// Observations kept per train: bounds memory and state size. The
    /// oldest go first, so this also bounds how large a swarm of fresh
    /// devices must be to flush established riders out of a train's state:
    /// it is kept well above any credible burst (the proptest throws 200).
    pub max_observations: usize,
    /// Report-id fingerprints kept per train for duplicate detection: a
    /// client retries an unacknowledged report within seconds, so the last
    /// 64 (512 bytes of state) cover a minute of a train reported on every
    /// second. A retry that comes later is the observation its device
    /// already made, which replaces nothing newer; it is only counted again
    /// in `reports_counted` and judged again.
    pub max_recent_ids: usize,
    /// Reports observed more than this far in the future do not count yet
    /// (clock skew beyond this is a broken or lying client).
    pub max_future_ms: i64,
}

impl Default for Params {
    fn default() -> Self {
        Params {
            half_life_ms: DEFAULT_HALF_LIFE_MS,
            window_ms: DEFAULT_WINDOW_MS,
            max_observations: 256,
            max_recent_ids: 64,
            max_future_ms: 120_000,
        }
    }
}

/// How much a device is believed: a weight multiplier, normally around 1.
///
/// A reputation model plugs in here; any `Fn(u64) -> f64` is a `Trust`.
pub trait Trust {
    /// The weight of `device` (its keyed hash). Non-finite or negative is 0.
    fn weight(&self, device: u64) -> f64;

    /// Whether `device` has earned its standing. Devices that have not (new
    /// or distrusted ones) share a capped weight on each train
    /// ([`NEWCOMER_FLOOR`], [`NEWCOMER_SHARE`]), so a burst of fresh devices
    /// cannot outvote the established riders of a train. Everybody is
    /// established unless a model says otherwise.
    fn established(&self, _device: u64) -> bool {
        true
    }

    /// `(weight, established)` at once: a model that looks both up in the
    /// same place can do it once.
    fn standing(&self, device: u64) -> (f64, bool) {
        (self.weight(device), self.established(device))
    }
}

/// Everybody is believed equally.
#[derive(Debug, Clone, Copy, Default)]
pub struct UniformTrust;

impl Trust for UniformTrust {
    fn weight(&self, _device: u64) -> f64 {
        1.0
    }
}

impl<F: Fn(u64) -> f64> Trust for F {
    fn weight(&self, device: u64) -> f64 {
        self(device)
    }
}

/// What applying one report did to a train's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Applied {
    /// The report counts (it may still be older than what the device said since).
    Counted,
    /// Its id was already seen for this device: nothing changed.
    Duplicate,
    /// Its level is not a crowding level: nothing changed.
    Rejected,
}

/// Folds one report into a train's state.
pub fn apply(state: &mut TrainState, report: &StoredReport, params: &Params) -> Applied {
    apply_with_factor(state, report, params, 1.0)
}

/// [`apply`], with the report keeping only `factor` (0..=1) of its weight
/// on top of what [`plausibility::assess`] finds: for signals judged
/// outside the train's state, e.g. [`plausibility::devices`].
pub fn apply_with_factor(
    state: &mut TrainState,
    report: &StoredReport,
    params: &Params,
    factor: f64,
) -> Applied {
    let assessment = plausibility::assess(report, &state.recent_fixes, params.half_life_ms);
    apply_assessed(state, report, params, &assessment, factor)
}

/// [`apply_with_factor`] with the report's [`plausibility::assess`]ment
/// against this very state made by the caller, who needs its flags too:
/// it is not made twice.
pub fn apply_assessed(
    state: &mut TrainState,
    report: &StoredReport,
    params: &Params,
    assessment: &plausibility::Assessment,
    factor: f64,
) -> Applied {
    let factor = if factor.is_finite() {
        factor.clamp(0.0, 1.0)
    } else {
        1.0
    };
    let fingerprint = report_fingerprint(report.device, &report.report_id);
    if state.recent_report_ids.contains(&fingerprint) {
        return Applied::Duplicate;
    }
    if level_of(report.level).is_none() {
        return Applied::Rejected;
    }
    state.recent_report_ids.push(fingerprint);
    let excess = state
        .recent_report_ids
        .len()
        .saturating_sub(params.max_recent_ids.max(1));
    state.recent_report_ids.drain(..excess);
    state.reports_counted = state.reports_counted.saturating_add(1);

    if state.trip_id.is_empty() {
        state.trip_id.clone_from(&report.trip_id);
        state.start_date.clone_from(&report.start_date);
    }
    if state.route_id.is_empty() && !report.route_id.is_empty() {
        state.route_id.clone_from(&report.route_id);
    }

    upsert_observation(state, report, 1.0 - assessment.factor * factor, params);
    if !assessment.far {
        plausibility::remember_fix(&mut state.recent_fixes, report);
        remember_position(state, report);
    }
    remember_stop(state, report, params);
    Applied::Counted
}

/// Drops observations older than the window: they can never count again.
pub fn prune(state: &mut TrainState, now_ms: i64, params: &Params) {
    let oldest = now_ms.saturating_sub(params.window_ms);
    state.observations.retain(|o| o.observed_at_ms >= oldest);
    // A stop first seen before the window splits no report that counts,
    // but the latest two still say which stretch the train is on
    // ([`stretch`]); the list is newest first.
    let mut kept = 0;
    state.stops_seen.retain(|s| {
        kept += 1;
        kept <= STRETCH_STOPS || s.first_seen_ms >= oldest
    });
}

/// Stops kept however old: the two that name the stretch the train is on
/// ([`stretch`]).
const STRETCH_STOPS: usize = 2;

/// Stops remembered per train: a window holds a few stops at most.
pub const MAX_STOPS_SEEN: usize = 8;

/// Share of its weight a report keeps for each stop the train was seen at
/// since it was observed: the load it describes was changed there, but
/// only in part (a stop moves a fraction of the riders), so it still says
/// something, and one fresh report after a stop should not outweigh the
/// riders who spoke just before it. (It was 0.05 before the trains ahead
/// and the stop witnesses; over 33 simulated mornings 0.3 is right a
/// little more often: exact level +0.6 points, within one +0.15.)
pub const PAST_STOP_FACTOR: f64 = 0.3;

/// The hash a stop is remembered by (FNV-1a, 32 bits): stable on every
/// build, and the stop's name is not needed, only whether two are the same.
pub fn stop_hash(stop_id: &str) -> u32 {
    stop_id.bytes().fold(0x811c_9dc5_u32, |h, b| {
        (h ^ u32::from(b)).wrapping_mul(0x0100_0193)
    })
}

/// Devices remembered per stop sighting: the smallest device hashes, so
/// that the same ones are kept whatever the order of reports; enough for
/// a sighting to find a witness with standing ([`vouched_for`]) while the
/// state stays small.
pub const MAX_STOP_WITNESSES: usize = 2;

/// Remembers when the train was first seen at the report's stop, and that
/// this device saw it there.
///
/// Only reports that reached the service promptly count (within the
/// lateness grace of [`plausibility`], either way): a stop sighting from a
/// device whose clock is off would put the stop at the wrong time. Each stop
/// keeps its earliest sighting, and the most recent [`MAX_STOPS_SEEN`]
/// stops are kept, so the result does not depend on the order of reports
/// (trains call at their stops in order).
fn remember_stop(state: &mut TrainState, report: &StoredReport, params: &Params) {
    if report.stop_id.is_empty() {
        return;
    }
    let grace = (params.half_life_ms.max(1) / 6).max(1);
    let delay = report.received_at_ms.saturating_sub(report.observed_at_ms);
    if delay.saturating_abs() > grace {
        return;
    }
    let stop = stop_hash(&report.stop_id);
    let at = report.observed_at_ms;
    match state.stops_seen.iter_mut().find(|s| s.stop == stop) {
        Some(seen) => {
            seen.first_seen_ms = seen.first_seen_ms.min(at);
            if let Err(i) = seen.witnesses.binary_search(&report.device) {
                seen.witnesses.insert(i, report.device);
                seen.witnesses.truncate(MAX_STOP_WITNESSES);
            }
        }
        None => state.stops_seen.push(StopSeen {
            stop,
            first_seen_ms: at,
            witnesses: vec![report.device],
        }),
    }
    state
        .stops_seen
        .sort_unstable_by_key(|s| (std::cmp::Reverse(s.first_seen_ms), s.stop));
    state.stops_seen.truncate(MAX_STOPS_SEEN);
}

/// The estimate of a train at `now_ms`, or `None` when no report counts.
pub fn estimate(
    state: &TrainState,
    now_ms: i64,
    params: &Params,
    trust: &impl Trust,
) -> Option<OccupancyEstimate> {
    estimate_given(state, now_ms, params, trust, None).map(|e| e.published)
}

/// A train's estimate, with what its stretch's profile keeps of it.
#[derive(Debug, Clone, PartialEq)]
pub struct Estimate {
    /// What is published.
    pub published: OccupancyEstimate,
    /// The riders' own percentage for the whole train, when some reported
    /// since the train's latest stop: what the trains behind may go by
    /// ([`crate::profile`]). It never includes the prior.
    pub since_stop: Option<f64>,
}

/// The estimate of a train at `now_ms` given `ahead`, what the trains ahead
/// of it on its stretch said ([`crate::profile::Cell::prior`]), or `None`
/// when no report counts.
///
/// The riders' percentage for the whole train and `ahead` are averaged by
/// the inverse of their variances ([`ahead`]): a train whose riders spoke
/// since its latest stop goes mostly by them, one whose reports are from
/// before it mostly by the trains ahead.
// The estimate leaves the fields the worker fills to their defaults, so a
// new such field needs no change here (the update is empty until one is
// added).
#[allow(clippy::needless_update)]
pub fn estimate_given(
    state: &TrainState,
    now_ms: i64,
    params: &Params,
    trust: &impl Trust,
    ahead: Option<f64>,
) -> Option<Estimate> {
    let burst = burst::burst_devices(&state.observations, params.half_life_ms);
    let clock = Clock::new(now_ms, params, state, trust);
    let votes: Vec<Vote<'_>> = state
        .observations
        .iter()
        .filter_map(|o| Vote::new(o, &clock, trust, &burst))
        .collect();

    let per_device = latest_per_device(&votes);
    // Newcomers are capped against the established riders of the whole
    // train, so that a swarm spread over the cars is capped everywhere.
    let scale = newcomer_scale(&per_device);
    let burst_scale = burst::scale(per_device.iter().map(|v| (v.weight, v.in_burst)));
    let burst_factor = |v: &Vote<'_>| if v.in_burst { burst_scale } else { 1.0 };
    let riders = summarize(
        per_device.iter().map(|v| (*v, burst_factor(v))),
        Some(scale),
    )?;

    let mut per_car: BTreeMap<u32, Vec<&Vote<'_>>> = BTreeMap::new();
    for vote in votes.iter().filter(|v| v.obs.carriage_sequence > 0) {
        per_car
            .entry(vote.obs.carriage_sequence)
            .or_default()
            .push(vote);
    }
    let car_summaries: Vec<(u32, Summary)> = per_car
        .into_iter()
        .filter_map(|(car, votes)| {
            let s = summarize(votes.into_iter().map(|v| (v, burst_factor(v))), Some(scale))?;
            Some((car, s))
        })
        .collect();
    let train = summarize(
        per_device.iter().map(|v| {
            let car = car_factor(v.obs.carriage_sequence, &riders, &car_summaries);
            (*v, car * burst_factor(v))
        }),
        Some(scale),
    )?;
    let device_votes: Vec<(&Vote<'_>, f64)> =
        per_device.iter().map(|v| (*v, burst_factor(v))).collect();
    let train = cars::train_from_cars(&device_votes, scale, train);
    let since_stop = per_device
        .iter()
        .any(|v| clock.is_current(v.obs.observed_at_ms))
        .then_some(train.pct);
    let train = match ahead {
        Some(p) => ahead::blend(train, p),
        None => train,
    };
    let cars = car_summaries
        .into_iter()
        .map(|(car, s)| CarEstimate {
            carriage_sequence: car,
            level: s.level.number(),
            occupancy_percentage: s.percentage,
            confidence: s.confidence,
            reporters: s.reporters,
            newest_report_at: Some(timestamp_from_ms(s.newest_ms)),
        })
        .collect();

    let position_fresh = state.last_position_at_ms >= now_ms.saturating_sub(params.window_ms);
    let position = state
        .last_position
        .filter(|_| position_fresh)
        .map(|p| GeoPoint {
            latitude: p.latitude,
            longitude: p.longitude,
            accuracy_m: p.accuracy_m,
        });

    let published = OccupancyEstimate {
        trip: Some(TripRef {
            trip_id: state.trip_id.clone(),
            start_date: state.start_date.clone(),
            route_id: state.route_id.clone(),
        }),
        level: train.level.number(),
        occupancy_percentage: train.percentage,
        confidence: train.confidence,
        reporters: train.reporters,
        updated_at: Some(timestamp_from_ms(now_ms)),
        cars,
        position,
        newest_report_at: Some(timestamp_from_ms(train.newest_ms)),
        source: if ahead.is_some() {
            EstimateSource::CrowdAndTrainsAhead
        } else {
            EstimateSource::Crowd
        } as i32,
        // Anything else (e.g. the comparison with the route's usual
        // occupancy) is not the estimator's to know: the worker fills it.
        ..OccupancyEstimate::default()
    };
    Some(Estimate {
        published,
        since_stop,
    })
}

/// The stretch of line the train is on at `now_ms`: its latest two stops
/// seen by then ([`crate::profile::Stretch`]), with when it was first seen
/// at the latest.
pub fn stretch(state: &TrainState, now_ms: i64) -> Option<(crate::profile::Stretch, i64)> {
    // Newest first, ties by stop, as `remember_stop` orders them; one pass,
    // as this runs for every estimate.
    let key = |s: &StopSeen| (std::cmp::Reverse(s.first_seen_ms), s.stop);
    let (mut latest, mut previous): (Option<&StopSeen>, Option<&StopSeen>) = (None, None);
    for seen in state
        .stops_seen
        .iter()
        .filter(|s| s.first_seen_ms <= now_ms)
    {
        if latest.is_none_or(|l| key(seen) < key(l)) {
            previous = latest;
            latest = Some(seen);
        } else if previous.is_none_or(|p| key(seen) < key(p)) {
            previous = Some(seen);
        }
    }
    let (latest, previous) = (latest?, previous?);
    Some((
        crate::profile::Stretch {
            previous: previous.stop,
            latest: latest.stop,
        },
        latest.first_seen_ms,
    ))
}

/// What the other riders of a train agree on.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Consensus {
    /// Weighted median level.
    pub level: Level,
    /// 0..1, as in the published estimate.
    pub confidence: f32,
    /// Distinct devices behind it.
    pub reporters: u32,
}

/// The current consensus on one car (`Some(car)`, car > 0) or on the whole
/// train (`None`, one vote per device), leaving `exclude` out: what a new
/// report from that device can be compared with.
pub fn consensus(
    state: &TrainState,
    car: Option<u32>,
    exclude: u64,
    now_ms: i64,
    params: &Params,
    trust: &impl Trust,
) -> Option<Consensus> {
    let burst = burst::burst_devices(&state.observations, params.half_life_ms);
    let clock = Clock::new(now_ms, params, state, trust);
    let votes: Vec<Vote<'_>> = state
        .observations
        .iter()
        .filter(|o| o.device != exclude)
        .filter(|o| car.is_none_or(|c| o.carriage_sequence == c))
        .filter_map(|o| Vote::new(o, &clock, trust, &burst))
        .collect();
    consensus_of(&votes, car)
}

/// Every vote of a train weighed once, at one instant and with one trust:
/// what [`consensus`] asks of the state, for many reports in a row.
///
/// `Ballot::new(state, now, ..).consensus(car, exclude)` equals
/// `consensus(state, car, exclude, now, ..)`: the same votes, in the same
/// order, summed the same way. Building it costs about one estimate;
/// each question then costs a pass over the votes, without weighing
/// anything again.
pub struct Ballot<'a> {
    /// The votes of the state's observations by car, each car's in the
    /// observations' order (by device).
    votes: Vec<Vote<'a>>,
    /// Each car with the range of its votes.
    cars: Vec<(u32, std::ops::Range<usize>)>,
}

impl std::fmt::Debug for Ballot<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ballot")
            .field("votes", &self.votes.len())
            .finish()
    }
}

impl<'a> Ballot<'a> {
    /// Weighs every observation of `state` at `now_ms`.
    pub fn new(state: &'a TrainState, now_ms: i64, params: &Params, trust: &impl Trust) -> Self {
        let burst = burst::burst_devices(&state.observations, params.half_life_ms);
        let clock = Clock::new(now_ms, params, state, trust);
        let mut votes: Vec<Vote<'a>> = state
            .observations
            .iter()
            .filter_map(|o| Vote::new(o, &clock, trust, &burst))
            .collect();
        // Stable: within a car the votes keep the observations' order.
        votes.sort_by_key(|v| v.obs.carriage_sequence);
        let mut cars: Vec<(u32, std::ops::Range<usize>)> = Vec::new();
        for (i, v) in votes.iter().enumerate() {
            match cars.last_mut() {
                Some((car, range)) if *car == v.obs.carriage_sequence => range.end = i + 1,
                _ => cars.push((v.obs.carriage_sequence, i..i + 1)),
            }
        }
        Ballot { votes, cars }
    }

    /// [`consensus`] of the state this ballot was built from.
    pub fn consensus(&self, car: Option<u32>, exclude: u64) -> Option<Consensus> {
        let votes = match car {
            Some(c) => {
                let i = self.cars.binary_search_by_key(&c, |(car, _)| *car).ok()?;
                &self.votes[self.cars[i].1.clone()]
            }
            None => &self.votes[..],
        };
        consensus_of(votes.iter().filter(|v| v.obs.device != exclude), car)
    }
}

/// The consensus of `votes`, already restricted to one car (`Some`) or not.
fn consensus_of<'v, 'a: 'v>(
    votes: impl IntoIterator<Item = &'v Vote<'a>>,
    car: Option<u32>,
) -> Option<Consensus> {
    let s = match car {
        Some(_) => summarize(votes.into_iter().map(|v| (v, 1.0)), None)?,
        None => {
            let votes: Vec<&Vote<'_>> = votes.into_iter().collect();
            summarize(
                latest_per_device_refs(votes).into_iter().map(|v| (v, 1.0)),
                None,
            )?
        }
    };
    Some(Consensus {
        level: s.level,
        confidence: s.confidence,
        reporters: s.reporters,
    })
}

/// One vote per device: its latest observation on any car, in order of
/// device.
fn latest_per_device<'v, 'a>(votes: &'v [Vote<'a>]) -> Vec<&'v Vote<'a>> {
    latest_per_device_refs(votes.iter().collect())
}

/// [`latest_per_device`] of votes gathered by reference.
fn latest_per_device_refs<'v, 'a>(mut sorted: Vec<&'v Vote<'a>>) -> Vec<&'v Vote<'a>> {
    // Stable, and nearly free on a state's observations (kept sorted by
    // device): among equally recent observations the first stays.
    sorted.sort_by_key(|v| v.obs.device);
    let mut latest: Vec<&Vote<'_>> = Vec::with_capacity(sorted.len());
    for vote in sorted {
        match latest.last_mut() {
            Some(best) if best.obs.device == vote.obs.device => {
                if recency(vote.obs) > recency(best.obs) {
                    *best = vote;
                }
            }
            _ => latest.push(vote),
        }
    }
    latest
}

/// A stable fingerprint of a report id, scoped to its device so that one
/// device cannot suppress another's reports by reusing their ids.
pub fn report_fingerprint(device: u64, report_id: &str) -> u64 {
    fingerprint(device.to_le_bytes().iter().chain(report_id.as_bytes()))
}

/// FNV-1a of `bytes`: stable across processes and versions, unlike the
/// standard library's hasher.
pub fn fingerprint<'b>(bytes: impl IntoIterator<Item = &'b u8>) -> u64 {
    const PRIME: u64 = 0x0000_0100_0000_01b3;
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(PRIME);
    }
    h
}

fn level_of(number: u32) -> Option<Level> {
    i32::try_from(number).ok().and_then(Level::from_number)
}

/// Orders observations of one device: later first, ties broken by content
/// so that the result does not depend on arrival order.
fn recency(o: &Observation) -> (i64, u32, u32, Option<u32>) {
    (
        o.observed_at_ms,
        o.carriage_sequence,
        o.level,
        o.occupancy_percentage,
    )
}

/// Keeps the latest observation per (device, car), sorted by that key.
fn upsert_observation(
    state: &mut TrainState,
    report: &StoredReport,
    discount: f64,
    params: &Params,
) {
    let new = Observation {
        device: report.device,
        carriage_sequence: report.carriage_sequence,
        level: report.level,
        occupancy_percentage: report.occupancy_percentage,
        observed_at_ms: report.observed_at_ms,
        discount: discount.clamp(0.0, 1.0) as f32,
    };
    let key = (new.device, new.carriage_sequence);
    let found = state
        .observations
        .binary_search_by_key(&key, |o| (o.device, o.carriage_sequence));
    match found {
        Ok(i) => {
            if recency(&new) > recency(&state.observations[i]) {
                state.observations[i] = new;
            }
        }
        Err(i) => state.observations.insert(i, new),
    }
    while state.observations.len() > params.max_observations.max(1) {
        let oldest = state
            .observations
            .iter()
            .enumerate()
            .min_by_key(|(_, o)| (o.observed_at_ms, o.device, o.carriage_sequence))
            .map(|(i, _)| i);
        if let Some(i) = oldest {
            state.observations.remove(i);
        }
    }
}

/// Remembers the most recently observed valid position.
fn remember_position(state: &mut TrainState, report: &StoredReport) {
    let Some(p) = report.position else { return };
    let valid = p.latitude.is_finite()
        && p.longitude.is_finite()
        && (-90.0..=90.0).contains(&p.latitude)
        && (-180.0..=180.0).contains(&p.longitude);
    if !valid {
        return;
    }
    let newer = match state.last_position {
        None => true,
        Some(old) => {
            (report.observed_at_ms, p.latitude, p.longitude).partial_cmp(&(
                state.last_position_at_ms,
                old.latitude,
                old.longitude,
            )) == Some(std::cmp::Ordering::Greater)
        }
    };
    if newer {
        state.last_position = Some(Position {
            latitude: p.latitude,
            longitude: p.longitude,
            accuracy_m: p.accuracy_m,
        });
        state.last_position_at_ms = report.observed_at_ms;
    }
}

/// What weighing an observation needs of the time, computed once per
/// estimate.
struct Clock {
    /// Observations before this do not count (the window).
    oldest: i64,
    /// Observations after this do not count yet (clock skew).
    newest: i64,
    now_ms: i64,
    /// The half-life, in milliseconds (at least 1).
    half_life_ms: f64,
    /// When the train was first seen at each of its recent stops, up to
    /// now, earliest first, and whether the sighting splits established
    /// riders' reports too ([`vouched_for`]).
    stops: Vec<(i64, bool)>,
}

impl Clock {
    fn new(now_ms: i64, params: &Params, state: &TrainState, trust: &impl Trust) -> Clock {
        let mut stops: Vec<(i64, bool)> = state
            .stops_seen
            .iter()
            .filter(|s| s.first_seen_ms <= now_ms)
            .map(|s| (s.first_seen_ms, vouched_for(s, trust)))
            .collect();
        stops.sort_unstable();
        Clock {
            oldest: now_ms.saturating_sub(params.window_ms),
            newest: now_ms.saturating_add(params.max_future_ms),
            now_ms,
            half_life_ms: params.half_life_ms.max(1) as f64,
            stops,
        }
    }

    /// Stops seen after `at_ms` that split the reports of a device with
    /// standing (`established`) or of a newcomer: how many times the load
    /// an observation from then describes has changed since.
    fn stops_since(&self, at_ms: i64, established: bool) -> usize {
        let after = self.stops.partition_point(|(t, _)| *t <= at_ms);
        self.stops[after..]
            .iter()
            .filter(|(_, vouched)| *vouched || !established)
            .count()
    }

    /// Whether a report from `at_ms` still describes the load: the train
    /// was seen at a stop, and at none since.
    fn is_current(&self, at_ms: i64) -> bool {
        self.stops.last().is_some_and(|(t, _)| *t <= at_ms)
    }
}

/// Whether a stop sighting splits the reports of established riders.
///
/// A stop splits the reports ([`PAST_STOP_FACTOR`]), so naming one is a way
/// to silence every report made before it: two fresh devices claiming a
/// crowd "at" a made-up stop would otherwise cut the weight of a train's
/// established riders by that factor, and the newcomers' capped share
/// ([`NEWCOMER_FLOOR`]) is measured against that weight. So a sighting
/// only newcomers made splits only newcomers' reports: it takes a witness
/// with standing to split those of riders with standing (the established
/// riders' reports from before it merely age from then on, as reports from
/// between stops do). A sighting stored before witnesses were recorded
/// (none) splits everything, as it did then.
fn vouched_for(seen: &StopSeen, trust: &impl Trust) -> bool {
    seen.witnesses.is_empty() || seen.witnesses.iter().any(|d| trust.established(*d))
}

/// One observation that counts now, with its weight.
struct Vote<'a> {
    obs: &'a Observation,
    level: Level,
    percentage: f64,
    weight: f64,
    /// The device has no standing yet: its weight is part of the capped share.
    newcomer: bool,
    /// A newcomer that arrived with a burst of others ([`burst`]).
    in_burst: bool,
}

impl<'a> Vote<'a> {
    fn new(
        obs: &'a Observation,
        clock: &Clock,
        trust: &impl Trust,
        burst: &[u64],
    ) -> Option<Vote<'a>> {
        let level = level_of(obs.level)?;
        if obs.observed_at_ms < clock.oldest || obs.observed_at_ms > clock.newest {
            return None;
        }
        let age_ms = clock.now_ms.saturating_sub(obs.observed_at_ms).max(0);
        let (trust, established) = trust.standing(obs.device);
        let newcomer = !established;
        // Since the train's latest stop the load has not changed: a report
        // from then loses at most half its weight. Before it, a report
        // describes a load that no longer exists, and keeps only
        // PAST_STOP_FACTOR for each stop since. A stop seen only by
        // newcomers does not cut an established rider's report so
        // ([`vouched_for`]), but it does end its claim to be current: from
        // then on it ages like any report.
        let stops = clock.stops_since(obs.observed_at_ms, established);
        let age_ms = if clock.is_current(obs.observed_at_ms) {
            age_ms.min(clock.half_life_ms as i64)
        } else {
            age_ms
        };
        // 0.5^(age / half-life), as 2^-x: `exp2` is several times cheaper
        // than `powf`.
        let decay = (-(age_ms as f64 / clock.half_life_ms)).exp2()
            * PAST_STOP_FACTOR.powi(i32::try_from(stops).unwrap_or(i32::MAX));
        let decay = decay.max(MIN_DECAY);
        let trust = if trust.is_finite() {
            trust.clamp(0.0, MAX_TRUST)
        } else {
            0.0
        };
        let plausible = 1.0 - f64::from(obs.discount).clamp(0.0, 1.0);
        let plausible = if plausible.is_finite() {
            plausible
        } else {
            1.0
        };
        let in_burst = newcomer && burst.binary_search(&obs.device).is_ok();
        let plausible = if in_burst {
            plausible * burst::WEIGHT
        } else {
            plausible
        };
        let weight = trust * decay * plausible;
        if weight <= 0.0 {
            return None;
        }
        let percentage = obs
            .occupancy_percentage
            .unwrap_or_else(|| level.typical_percentage())
            .min(MAX_PERCENTAGE);
        Some(Vote {
            obs,
            level,
            percentage: f64::from(percentage),
            weight,
            newcomer,
            in_burst,
        })
    }
}

/// The factor (0..=1) applied to the weight of every device without
/// standing, so that together they weigh at most
/// `max(NEWCOMER_SHARE × E, NEWCOMER_FLOOR − E)` where `E` is the
/// established weight: the whole floor on an empty train, and less than
/// `E` as soon as `E` exceeds half the floor.
fn newcomer_scale(votes: &[&Vote<'_>]) -> f64 {
    let (mut newcomers, mut established) = (0.0, 0.0);
    for v in votes {
        if v.newcomer {
            newcomers += v.weight;
        } else {
            established += v.weight;
        }
    }
    let cap = (NEWCOMER_SHARE * established).max(NEWCOMER_FLOOR - established);
    if newcomers > cap && newcomers.is_finite() {
        cap / newcomers
    } else {
        1.0
    }
}

/// Bounds of the factor on a rider's train vote for the load of their car
/// ([`car_factor`]): one rider's vote can gain or lose at most this much,
/// so no single device can outvote three agreeing ones however uneven the
/// train.
pub const MAX_CAR_FACTOR: f64 = 1.5;
/// Percentage below which a car counts as this empty for [`car_factor`].
const MIN_CAR_PERCENTAGE: f64 = 10.0;

/// The factor on a rider's vote for the train, for the car they ride in.
///
/// The train's load is the mean of its cars' loads (cars have the same
/// capacity), but riders report from each car in proportion to how many
/// ride in it: the plain median rider overstates a train whose front car is
/// packed and whose rear cars are half empty. Weighing each rider by
/// `train / car` (the car's load relative to the train's, both as the
/// riders say) undoes that, within [`MAX_CAR_FACTOR`] either way.
fn car_factor(car: u32, riders: &Summary, cars: &[(u32, Summary)]) -> f64 {
    if car == 0 {
        return 1.0;
    }
    let Ok(i) = cars.binary_search_by_key(&car, |(c, _)| *c) else {
        return 1.0;
    };
    let car_pct = cars[i].1.pct.max(MIN_CAR_PERCENTAGE);
    let train_pct = riders.pct.max(MIN_CAR_PERCENTAGE);
    let f = train_pct / car_pct;
    if f.is_finite() {
        f.clamp(1.0 / MAX_CAR_FACTOR, MAX_CAR_FACTOR)
    } else {
        1.0
    }
}

/// The combined view of a set of votes.
#[derive(Debug, Clone, Copy)]
struct Summary {
    level: Level,
    percentage: u32,
    /// The percentage before rounding.
    pct: f64,
    confidence: f32,
    reporters: u32,
    newest_ms: i64,
    /// Total weight of the votes.
    weight: f64,
    /// Weighted root-mean-square distance of the votes' percentages from
    /// the published one.
    spread: f64,
    /// Share of the weight within one level of the published level.
    agreement: f64,
}

/// Weighted median level, weighted mean percentage and confidence.
///
/// Newcomers' weights are multiplied by `scale`, or by the cap computed over
/// these very votes when `None`.
fn summarize<'v, 'a: 'v>(
    votes: impl Iterator<Item = (&'v Vote<'a>, f64)>,
    scale: Option<f64>,
) -> Option<Summary> {
    let votes: Vec<(&Vote<'_>, f64)> = votes.collect();
    let newcomer_scale = scale.unwrap_or_else(|| {
        let plain: Vec<&Vote<'_>> = votes.iter().map(|(v, _)| *v).collect();
        newcomer_scale(&plain)
    });
    let mut by_level = [0.0f64; Level::ALL.len()];
    let mut pct_by_level = [0.0f64; Level::ALL.len()];
    let mut pct_squares = 0.0;
    let mut total = 0.0;
    let mut newest_ms = i64::MIN;
    let mut devices = Vec::new();
    for (v, factor) in votes {
        let weight = factor
            * if v.newcomer {
                v.weight * newcomer_scale
            } else {
                v.weight
            };
        by_level[v.level as usize - 1] += weight;
        pct_by_level[v.level as usize - 1] += weight * v.percentage;
        pct_squares += weight * v.percentage * v.percentage;
        total += weight;
        newest_ms = newest_ms.max(v.obs.observed_at_ms);
        devices.push(v.obs.device);
    }
    if devices.is_empty() || total <= 0.0 || !total.is_finite() {
        return None;
    }
    devices.sort_unstable();
    devices.dedup();

    let mut cumulative = 0.0;
    let mut level = Level::NotAccepting;
    for (candidate, weight) in Level::ALL.iter().zip(by_level) {
        cumulative += weight;
        if cumulative >= total / 2.0 {
            level = *candidate;
            break;
        }
    }
    // The mean percentage of the votes within one level of the median: the
    // ones far off (liars, spammers) would drag a plain mean.
    let (near_weight, near_pct) = Level::ALL
        .iter()
        .enumerate()
        .filter(|(_, l)| l.distance(level) <= 1)
        .fold((0.0, 0.0), |(w, p), (i, _)| {
            (w + by_level[i], p + pct_by_level[i])
        });
    let percentage = if near_weight > 0.0 {
        near_pct / near_weight
    } else {
        f64::from(level.typical_percentage())
    };
    let percentage = percentage.clamp(0.0, f64::from(MAX_PERCENTAGE));
    // Spread around the published percentage, so far-off votes widen it.
    let mean = pct_by_level.iter().sum::<f64>() / total;
    let spread = (pct_squares / total - 2.0 * percentage * mean + percentage * percentage)
        .max(0.0)
        .sqrt();
    let std_error = confidence::std_error(spread, total);
    let agreement = (near_weight / total).clamp(0.0, 1.0);
    let confidence = confidence::band_probability(level, percentage, std_error) * agreement;
    Some(Summary {
        level,
        percentage: percentage.round() as u32,
        pct: percentage,
        confidence: confidence.clamp(0.0, 1.0) as f32,
        reporters: u32::try_from(devices.len()).unwrap_or(u32::MAX),
        newest_ms,
        weight: total,
        spread,
        agreement,
    })
}

mod ahead;
pub mod burst;
mod cars;
pub mod confidence;
pub mod pace;

#[cfg(test)]
mod tests;
