//! How full the trains just ahead were on the stretch a train is on: a
//! prior for trains whose own riders say little. Pure: no I/O, no clock.
//!
//! Trains of a line follow each other a few minutes apart through the same
//! stations, fed by the same crowds, and a train's load only changes at
//! stops. So the load of the train ahead between two stations is a good
//! guess for the next one there: better than riders' reports from before
//! the train's last stop, which describe a load that no longer exists. Each
//! stretch of a route (named by the latest two stops a train was seen at,
//! which also gives its direction) keeps a [`Cell`]: the riders' own
//! percentage for the last train that had riders reporting on it there,
//! and a moving average over the trains before it.
//!
//! A train reads its stretch's cell as its prior ([`Cell::prior`]),
//! leaving itself out: a train's own earlier estimate is not a second
//! witness. Only what its riders said since its latest stop is recorded
//! ([`Cell::record`]), never a blend with the prior, so the profile does
//! not feed on itself. A cell older than [`MAX_AGE_WINDOWS`] estimator
//! windows says nothing (the morning rush is not the evening's), and a
//! train seen at no stop for a third of a window (5 minutes by default)
//! has likely passed one nobody reported from: it has no known stretch.
//!
//! The estimator weighs the prior against the riders (see
//! `estimator::estimate_given`); [`Profiles::estimate`] does the lookup,
//! the estimate and the record in one step. The worker shares the cells
//! through Redis (`crowd:profile:<route>`, soft state, see
//! `profile_store`); the offline quality replay keeps them in memory.

use std::collections::{BTreeSet, HashMap};

use crowd_proto::pb::store::{ProfileCell, TrainState};
use crowd_proto::pb::v1::OccupancyEstimate;

use crate::estimator::{self, Params, Trust};

/// A cell says nothing once this many estimator windows old: with the
/// default 15-minute window, the trains ahead that count ran within half
/// an hour.
pub const MAX_AGE_WINDOWS: i64 = 2;

/// A train's stretch is known for this share of the estimator's window
/// after its latest stop was seen (5 minutes by default): few stretches
/// between two stations take longer. (Fitted on the simulator, seeds 11
/// and 12: a third of the window was 0.5–2 points of exact level better
/// than half or all of it, where stale stretches lent trains the load of
/// the stretch before.)
pub const STRETCH_WINDOW_SHARE: f64 = 1.0 / 3.0;

/// Stretches kept per route, the least recently recorded going first: a
/// line has a few dozen stations, but stop ids come from riders, and a
/// device naming made-up stops must not grow a route without bound.
pub const MAX_STRETCHES_PER_ROUTE: usize = 1024;

/// Weight of the latest train in the moving average over the trains ahead:
/// the load builds and falls over a rush, so the last two or three trains
/// tell most.
pub const TRAIN_WEIGHT: f64 = 0.5;

/// The stretch of line a train is on: the stop it was last seen at and the
/// one before (hashes, as the estimator keeps them), so the two directions
/// through a station are two stretches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Stretch {
    /// The stop before the latest.
    pub previous: u32,
    /// The latest stop the train was seen at.
    pub latest: u32,
}

impl Stretch {
    /// The stretch's name in a route's profile (16 hex digits).
    pub fn field(self) -> String {
        format!("{:08x}{:08x}", self.previous, self.latest)
    }

    /// The stretch named `field`, if it is one.
    pub fn from_field(field: &str) -> Option<Stretch> {
        if field.len() != 16 || !field.is_ascii() {
            return None;
        }
        Some(Stretch {
            previous: u32::from_str_radix(&field[..8], 16).ok()?,
            latest: u32::from_str_radix(&field[8..], 16).ok()?,
        })
    }
}

/// What one stretch of a route remembers of the trains that ran it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Cell {
    /// The train that recorded last (a fingerprint of its trip).
    pub trip: u64,
    /// Its riders' percentage there, the latest it recorded.
    pub percentage: f64,
    /// When it recorded, ms.
    pub updated_ms: i64,
    /// Moving average over the trains before it, and when the latest of
    /// them recorded.
    pub earlier: Option<(f64, i64)>,
}

impl Cell {
    /// A cell with one train's percentage.
    pub fn new(trip: u64, percentage: f64, now_ms: i64) -> Cell {
        Cell {
            trip,
            percentage,
            updated_ms: now_ms,
            earlier: None,
        }
    }

    /// What the trains ahead of `trip` say, leaving out what is older than
    /// `max_age_ms`.
    pub fn prior(&self, trip: u64, now_ms: i64, max_age_ms: i64) -> Option<f64> {
        let earlier = self.earlier_within(now_ms, max_age_ms);
        if self.trip == trip || !within(self.updated_ms, now_ms, max_age_ms) {
            return earlier;
        }
        Some(fold(earlier, self.percentage))
    }

    /// The average over the trains before the latest, unless too old.
    fn earlier_within(&self, now_ms: i64, max_age_ms: i64) -> Option<f64> {
        self.earlier
            .filter(|(_, at)| within(*at, now_ms, max_age_ms))
            .map(|(p, _)| p)
    }

    /// Records `trip`'s riders' percentage: it replaces the train's own
    /// earlier record, and pushes another train's into the average.
    pub fn record(&mut self, trip: u64, percentage: f64, now_ms: i64, max_age_ms: i64) {
        if !percentage.is_finite() {
            return;
        }
        if self.trip != trip {
            let earlier = self.earlier_within(now_ms, max_age_ms);
            self.earlier = within(self.updated_ms, now_ms, max_age_ms)
                .then(|| (fold(earlier, self.percentage), self.updated_ms));
            self.trip = trip;
        }
        self.percentage = percentage;
        self.updated_ms = self.updated_ms.max(now_ms);
    }

    /// The cell as stored.
    pub fn to_stored(self) -> ProfileCell {
        ProfileCell {
            trip: self.trip,
            percentage: self.percentage,
            updated_ms: self.updated_ms,
            earlier: self.earlier.map(|(p, _)| p),
            earlier_ms: self.earlier.map_or(0, |(_, at)| at),
        }
    }

    /// The stored cell, unless its numbers are not finite.
    pub fn from_stored(stored: &ProfileCell) -> Option<Cell> {
        let earlier = stored.earlier.map(|p| (p, stored.earlier_ms));
        (stored.percentage.is_finite() && earlier.is_none_or(|(p, _)| p.is_finite())).then_some(
            Cell {
                trip: stored.trip,
                percentage: stored.percentage,
                updated_ms: stored.updated_ms,
                earlier,
            },
        )
    }
}

/// Whether something recorded at `at_ms` is at most `max_age_ms` old.
fn within(at_ms: i64, now_ms: i64, max_age_ms: i64) -> bool {
    now_ms.saturating_sub(at_ms) <= max_age_ms
}

/// The moving average `earlier` with one more train at `percentage`.
fn fold(earlier: Option<f64>, percentage: f64) -> f64 {
    match earlier {
        Some(e) => TRAIN_WEIGHT * percentage + (1.0 - TRAIN_WEIGHT) * e,
        None => percentage,
    }
}

/// The cells of some routes' stretches, in memory, and which changed.
#[derive(Debug, Default, Clone)]
pub struct Profiles {
    routes: HashMap<String, Route>,
}

/// One route's cells, which of them changed, and which were dropped to
/// keep it within [`MAX_STRETCHES_PER_ROUTE`].
#[derive(Debug, Default, Clone)]
struct Route {
    cells: HashMap<Stretch, Cell>,
    changed: BTreeSet<Stretch>,
    dropped: BTreeSet<Stretch>,
}

impl Route {
    /// A route of `cells`, the least recently recorded beyond the bound
    /// dropped.
    fn of(mut cells: HashMap<Stretch, Cell>) -> Route {
        let mut dropped = BTreeSet::new();
        if cells.len() > MAX_STRETCHES_PER_ROUTE {
            let mut by_age: Vec<(i64, Stretch)> =
                cells.iter().map(|(s, c)| (c.updated_ms, *s)).collect();
            by_age.sort_unstable();
            for (_, s) in &by_age[..cells.len() - MAX_STRETCHES_PER_ROUTE] {
                cells.remove(s);
                dropped.insert(*s);
            }
        }
        Route {
            cells,
            changed: BTreeSet::new(),
            dropped,
        }
    }

    /// Records `trip` on stretch `s`, making room if the route is full.
    fn record(&mut self, s: Stretch, trip: u64, pct: f64, now_ms: i64, max_age: i64) {
        match self.cells.get_mut(&s) {
            Some(c) => c.record(trip, pct, now_ms, max_age),
            None => {
                if self.cells.len() >= MAX_STRETCHES_PER_ROUTE {
                    let oldest = self
                        .cells
                        .iter()
                        .min_by_key(|(s, c)| (c.updated_ms, **s))
                        .map(|(s, _)| *s);
                    if let Some(oldest) = oldest {
                        self.cells.remove(&oldest);
                        self.changed.remove(&oldest);
                        self.dropped.insert(oldest);
                    }
                }
                self.cells.insert(s, Cell::new(trip, pct, now_ms));
                self.dropped.remove(&s);
            }
        }
        self.changed.insert(s);
    }
}

impl Profiles {
    /// The estimate of the train of `state` at `now_ms` given the trains
    /// ahead of it on its stretch, recording what its riders say there for
    /// the trains behind; `None` when no report counts.
    pub fn estimate(
        &mut self,
        state: &TrainState,
        now_ms: i64,
        params: &Params,
        trust: &impl Trust,
    ) -> Option<OccupancyEstimate> {
        let max_age = params.window_ms.saturating_mul(MAX_AGE_WINDOWS);
        // Trains of no known route have no line to share.
        let stretch = if state.route_id.is_empty() {
            None
        } else {
            current_stretch(state, now_ms, params)
        };
        let known = stretch.map(|s| (s, trip_fingerprint(state)));
        let ahead =
            known.and_then(|(s, trip)| self.cell(&state.route_id, s)?.prior(trip, now_ms, max_age));
        let estimate = estimator::estimate_given(state, now_ms, params, trust, ahead)?;
        if let (Some((s, trip)), Some(pct)) = (known, estimate.since_stop) {
            let route = match self.routes.get_mut(&state.route_id) {
                Some(route) => route,
                None => self.routes.entry(state.route_id.clone()).or_default(),
            };
            route.record(s, trip, pct, now_ms, max_age);
        }
        Some(estimate.published)
    }

    /// Whether `route`'s cells are in memory.
    pub fn has_route(&self, route: &str) -> bool {
        self.routes.contains_key(route)
    }

    /// Puts `route`'s cells in memory, replacing any.
    pub fn insert_route(&mut self, route: &str, cells: HashMap<Stretch, Cell>) {
        self.routes.insert(route.to_owned(), Route::of(cells));
    }

    /// Forgets `route`'s cells, so they are read again on next use.
    pub fn forget_route(&mut self, route: &str) {
        self.routes.remove(route);
    }

    /// One cell.
    pub fn cell(&self, route: &str, stretch: Stretch) -> Option<&Cell> {
        self.routes.get(route)?.cells.get(&stretch)
    }

    /// The cells recorded into since the last call, and the stretches
    /// dropped, by route.
    pub fn take_changed(&mut self) -> Vec<RouteChanges> {
        self.routes
            .iter_mut()
            .filter(|(_, r)| !(r.changed.is_empty() && r.dropped.is_empty()))
            .map(|(name, r)| RouteChanges {
                route: name.clone(),
                recorded: std::mem::take(&mut r.changed)
                    .into_iter()
                    .filter_map(|s| Some((s, *r.cells.get(&s)?)))
                    .collect(),
                dropped: std::mem::take(&mut r.dropped).into_iter().collect(),
            })
            .collect()
    }
}

/// What changed in one route's profile since it was last written.
#[derive(Debug, Clone, PartialEq)]
pub struct RouteChanges {
    /// The route.
    pub route: String,
    /// Cells recorded into, as they are now.
    pub recorded: Vec<(Stretch, Cell)>,
    /// Stretches dropped to keep the route within its bound.
    pub dropped: Vec<Stretch>,
}

/// The stretch the train is on, if its latest stop was seen recently
/// enough ([`STRETCH_WINDOW_SHARE`]).
fn current_stretch(state: &TrainState, now_ms: i64, params: &Params) -> Option<Stretch> {
    let (stretch, latest_ms) = estimator::stretch(state, now_ms)?;
    let known_for = params.window_ms as f64 * STRETCH_WINDOW_SHARE;
    (now_ms.saturating_sub(latest_ms) as f64 <= known_for).then_some(stretch)
}

/// The fingerprint a train is known by in a cell.
fn trip_fingerprint(state: &TrainState) -> u64 {
    estimator::fingerprint(
        state
            .trip_id
            .as_bytes()
            .iter()
            .chain(b"/")
            .chain(state.start_date.as_bytes()),
    )
}

#[cfg(test)]
mod tests;
