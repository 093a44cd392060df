//! Who is looking at which train right now: the `helping_riders` of an
//! ACCEPTED ack ("your report helps 12 riders").
//!
//! A viewer is a client connection (its remote address: an app keeps one
//! connection, so every call over it is the same rider), or a single call
//! when the address is unknown. Two sources count:
//!
//! - open watches (WatchOccupancy calls, live-page event streams), by trip
//!   and by route, registered for as long as their [`Watching`] guard lives,
//!   so a watch that ends in any way (client gone, error, shutdown) stops
//!   counting;
//! - recent answers (GetOccupancy, SearchNearby): the (train, viewer) pairs
//!   answered within the window, at most `capacity` of them (the oldest go
//!   first), so a flood of queries costs bounded memory.
//!
//! A viewer counts once per train whatever it does, and the reporting
//! connection never counts itself. Each server counts exactly the riders
//! connected to it; those of the other servers of the deployment are added
//! as [`share`] last exchanged them (every couple of seconds, in Redis): a
//! number that encourages riders is not worth a Redis call per query or per
//! report, and riders of different servers are different connections, so
//! the servers' counts add up.

pub mod share;

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use crowd_proto::domain::TripKey;

/// How long an answered query keeps counting its viewer.
pub const DEFAULT_WINDOW: Duration = Duration::from_secs(5 * 60);
/// Most (train, viewer) query pairs remembered: a few MB at most.
pub const DEFAULT_CAPACITY: usize = 100_000;

/// One rider, as far as the server can tell.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Viewer {
    /// A client connection: every call over it is the same rider.
    Peer(SocketAddr),
    /// One call over a connection of unknown address: a rider of its own.
    Call(u64),
}

impl Viewer {
    /// The viewer behind a call's remote address.
    pub fn of(remote: Option<SocketAddr>) -> Viewer {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        match remote {
            Some(addr) => Viewer::Peer(addr),
            None => Viewer::Call(NEXT.fetch_add(1, Ordering::Relaxed)),
        }
    }
}

/// Open watches of one trip or route: viewer → number of its open watches.
type Watchers = HashMap<Viewer, u32>;

#[derive(Debug, Default)]
struct State {
    /// Open watches naming a trip.
    trips: HashMap<TripKey, Watchers>,
    /// Open watches of a whole route.
    routes: HashMap<String, Watchers>,
    /// When each viewer last got each train in a query answer.
    answered: HashMap<TripKey, HashMap<Viewer, Instant>>,
    /// Answers in the order they were given; an entry whose time no longer
    /// matches `answered` is stale (refreshed or evicted) and skipped.
    order: VecDeque<(Instant, TripKey, Viewer)>,
    /// Pairs in `answered`.
    pairs: usize,
    /// Viewers per train on the other servers (route watchers apart).
    remote_trips: HashMap<TripKey, u32>,
    /// Route watchers per route on the other servers.
    remote_routes: HashMap<String, u32>,
}

/// One server's viewer counts, as exchanged between servers.
#[derive(Debug, Default, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Counts {
    /// Distinct viewers per train (canonical trip key) that watch no route:
    /// route watchers are counted once, under their route, so that a
    /// viewer is never counted twice.
    pub trips: HashMap<String, u32>,
    /// Distinct viewers watching each route.
    pub routes: HashMap<String, u32>,
}

/// The per-process register of viewers; cheap to clone.
#[derive(Debug, Clone)]
pub struct Audience {
    state: Arc<Mutex<State>>,
    /// How long an answer counts.
    window: Duration,
    /// Most answer pairs kept.
    capacity: usize,
}

impl Default for Audience {
    fn default() -> Audience {
        Audience::new(DEFAULT_WINDOW, DEFAULT_CAPACITY)
    }
}

impl Audience {
    /// A register where answers count for `window`, keeping at most
    /// `capacity` (train, viewer) answer pairs.
    pub fn new(window: Duration, capacity: usize) -> Audience {
        Audience {
            state: Arc::default(),
            window,
            capacity: capacity.max(1),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        lock(&self.state)
    }

    /// Registers a watch of `trips` and of every train of `route` (when not
    /// empty) until the returned guard is dropped.
    pub fn watching(&self, viewer: Viewer, trips: Vec<TripKey>, route: String) -> Watching {
        let mut state = self.lock();
        for trip in &trips {
            *state
                .trips
                .entry(trip.clone())
                .or_default()
                .entry(viewer)
                .or_default() += 1;
        }
        if !route.is_empty() {
            *state
                .routes
                .entry(route.clone())
                .or_default()
                .entry(viewer)
                .or_default() += 1;
        }
        Watching {
            state: self.state.clone(),
            viewer,
            trips,
            route,
        }
    }

    /// Records that `viewer` was just shown `trips`.
    pub fn answered<'a>(
        &self,
        viewer: Viewer,
        trips: impl IntoIterator<Item = &'a TripKey>,
        now: Instant,
    ) {
        let mut state = self.lock();
        self.expire(&mut state, now);
        for trip in trips {
            if let Some(at) = state
                .answered
                .get_mut(trip)
                .and_then(|viewers| viewers.get_mut(&viewer))
            {
                if *at != now {
                    *at = now;
                    state.order.push_back((now, trip.clone(), viewer));
                }
                continue;
            }
            while state.pairs >= self.capacity && evict_oldest(&mut state) {}
            state
                .answered
                .entry(trip.clone())
                .or_default()
                .insert(viewer, now);
            state.pairs += 1;
            state.order.push_back((now, trip.clone(), viewer));
        }
        // Refreshed pairs leave stale entries behind: rebuild the order
        // from the live pairs before it grows past twice their bound.
        if state.order.len() > 2 * self.capacity + 64 {
            compact(&mut state);
        }
    }

    /// Distinct viewers of `trip` (or of its `route`, when not empty), not
    /// counting the connection `reporter` that asks.
    pub fn helping(
        &self,
        trip: &TripKey,
        route: &str,
        reporter: Option<SocketAddr>,
        now: Instant,
    ) -> u32 {
        let mut state = self.lock();
        self.expire(&mut state, now);
        let on_route = (!route.is_empty())
            .then(|| state.routes.get(route))
            .flatten();
        let on_trip = state.trips.get(trip);
        let answered = state.answered.get(trip);
        let in_route = |v: &Viewer| on_route.is_some_and(|w| w.contains_key(v));
        let in_trip = |v: &Viewer| on_trip.is_some_and(|w| w.contains_key(v));
        // Route watchers may be many (every open page of the line): they are
        // counted by size, and only the smaller sets are walked.
        let mut count = on_route.map_or(0, HashMap::len);
        count += on_trip.map_or(0, |w| w.keys().filter(|v| !in_route(v)).count());
        count += answered.map_or(0, |a| {
            a.keys().filter(|v| !in_route(v) && !in_trip(v)).count()
        });
        if let Some(addr) = reporter {
            let me = Viewer::Peer(addr);
            if in_route(&me) || in_trip(&me) || answered.is_some_and(|a| a.contains_key(&me)) {
                count -= 1;
            }
        }
        let remote = state.remote_trips.get(trip).copied().unwrap_or(0)
            + state.remote_routes.get(route).copied().unwrap_or(0);
        u32::try_from(count)
            .unwrap_or(u32::MAX)
            .saturating_add(remote)
    }

    /// This server's own viewers, per train and per route, to share.
    pub fn counts(&self, now: Instant) -> Counts {
        let mut state = self.lock();
        self.expire(&mut state, now);
        let on_a_route: std::collections::HashSet<Viewer> = state
            .routes
            .values()
            .flat_map(|w| w.keys().copied())
            .collect();
        let mut trips: HashMap<&TripKey, std::collections::HashSet<Viewer>> = HashMap::new();
        for (trip, watchers) in &state.trips {
            trips.entry(trip).or_default().extend(watchers.keys());
        }
        for (trip, answered) in &state.answered {
            trips.entry(trip).or_default().extend(answered.keys());
        }
        Counts {
            trips: trips
                .into_iter()
                .map(|(trip, viewers)| {
                    let n = viewers.iter().filter(|v| !on_a_route.contains(v)).count();
                    (trip.canonical(), u32::try_from(n).unwrap_or(u32::MAX))
                })
                .filter(|(_, n)| *n > 0)
                .collect(),
            routes: state
                .routes
                .iter()
                .map(|(route, w)| (route.clone(), u32::try_from(w.len()).unwrap_or(u32::MAX)))
                .collect(),
        }
    }

    /// Replaces what the other servers see by the sum of their `counts`.
    pub fn set_remote(&self, counts: impl IntoIterator<Item = Counts>) {
        let mut trips: HashMap<TripKey, u32> = HashMap::new();
        let mut routes: HashMap<String, u32> = HashMap::new();
        for c in counts {
            for (trip, n) in c.trips {
                if let Some(trip) = TripKey::from_canonical(&trip) {
                    let total = trips.entry(trip).or_default();
                    *total = total.saturating_add(n);
                }
            }
            for (route, n) in c.routes {
                let total = routes.entry(route).or_default();
                *total = total.saturating_add(n);
            }
        }
        let mut state = self.lock();
        state.remote_trips = trips;
        state.remote_routes = routes;
    }

    /// Drops the answers older than the window.
    fn expire(&self, state: &mut State, now: Instant) {
        while let Some((at, _, _)) = state.order.front() {
            if now.saturating_duration_since(*at) < self.window {
                break;
            }
            evict_oldest(state);
        }
    }
}

/// Removes the oldest entry of the order, and its pair when it is live;
/// false when there is nothing left.
fn evict_oldest(state: &mut State) -> bool {
    let Some((at, trip, viewer)) = state.order.pop_front() else {
        return false;
    };
    if let Some(viewers) = state.answered.get_mut(&trip)
        && viewers.get(&viewer) == Some(&at)
    {
        viewers.remove(&viewer);
        state.pairs -= 1;
        if viewers.is_empty() {
            state.answered.remove(&trip);
        }
    }
    true
}

/// Rebuilds the order from the live pairs, oldest first.
fn compact(state: &mut State) {
    let mut live: Vec<(Instant, TripKey, Viewer)> = state
        .answered
        .iter()
        .flat_map(|(trip, viewers)| {
            viewers
                .iter()
                .map(move |(viewer, at)| (*at, trip.clone(), *viewer))
        })
        .collect();
    live.sort_by_key(|(at, _, _)| *at);
    state.order = live.into();
}

fn lock(state: &Mutex<State>) -> MutexGuard<'_, State> {
    // The state stays consistent between statements: a panic elsewhere
    // must not stop the counting.
    state.lock().unwrap_or_else(PoisonError::into_inner)
}

/// An open watch, counted until dropped.
#[derive(Debug)]
pub struct Watching {
    state: Arc<Mutex<State>>,
    viewer: Viewer,
    trips: Vec<TripKey>,
    route: String,
}

impl Drop for Watching {
    fn drop(&mut self) {
        let mut state = lock(&self.state);
        for trip in &self.trips {
            release(&mut state.trips, trip, self.viewer);
        }
        if !self.route.is_empty() {
            release(&mut state.routes, &self.route, self.viewer);
        }
    }
}

/// Takes one watch of `viewer` off `key`, forgetting what drops to zero.
fn release<K>(map: &mut HashMap<K, Watchers>, key: &K, viewer: Viewer)
where
    K: std::hash::Hash + Eq,
{
    if let Some(watchers) = map.get_mut(key) {
        if let Some(n) = watchers.get_mut(&viewer) {
            *n -= 1;
            if *n == 0 {
                watchers.remove(&viewer);
            }
        }
        if watchers.is_empty() {
            map.remove(key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn trip(id: &str) -> TripKey {
        TripKey {
            trip_id: id.into(),
            start_date: "20261126".into(),
        }
    }

    fn peer(port: u16) -> Viewer {
        Viewer::Peer(SocketAddr::from(([10, 0, 0, 1], port)))
    }

    fn addr(port: u16) -> Option<SocketAddr> {
        Some(SocketAddr::from(([10, 0, 0, 1], port)))
    }

    #[test]
    fn watchers_count_while_their_guard_lives() {
        let audience = Audience::default();
        let now = Instant::now();
        let t1 = trip("T1");
        let a = audience.watching(peer(1), vec![t1.clone()], String::new());
        let b = audience.watching(peer(2), vec![trip("T2")], "B".into());
        assert_eq!(audience.helping(&t1, "B", None, now), 2);
        assert_eq!(audience.helping(&t1, "C", None, now), 1);
        assert_eq!(audience.helping(&trip("T3"), "", None, now), 0);
        drop(a);
        assert_eq!(audience.helping(&t1, "B", None, now), 1);
        drop(b);
        assert_eq!(audience.helping(&t1, "B", None, now), 0);
        let state = audience.lock();
        assert!(state.trips.is_empty() && state.routes.is_empty());
    }

    #[test]
    fn a_viewer_counts_once_and_never_for_its_own_report() {
        let audience = Audience::default();
        let now = Instant::now();
        let t1 = trip("T1");
        // Two watches and a query over one connection: one rider.
        let _w1 = audience.watching(peer(1), vec![t1.clone()], String::new());
        let w2 = audience.watching(peer(1), vec![t1.clone()], "B".into());
        audience.answered(peer(1), [&t1], now);
        audience.answered(peer(2), [&t1], now);
        assert_eq!(audience.helping(&t1, "B", None, now), 2);
        assert_eq!(audience.helping(&t1, "B", addr(1), now), 1);
        assert_eq!(audience.helping(&t1, "B", addr(2), now), 1);
        assert_eq!(audience.helping(&t1, "B", addr(9), now), 2);
        // The other watch of the same connection still counts it.
        drop(w2);
        assert_eq!(audience.helping(&t1, "B", None, now), 2);
    }

    #[test]
    fn answers_count_for_the_window_only() {
        let window = Duration::from_secs(300);
        let audience = Audience::new(window, 100);
        let start = Instant::now();
        let t1 = trip("T1");
        audience.answered(peer(1), [&t1], start);
        audience.answered(peer(2), [&t1], start + Duration::from_secs(200));
        assert_eq!(audience.helping(&t1, "", None, start), 2);
        let later = start + Duration::from_secs(299);
        assert_eq!(audience.helping(&t1, "", None, later), 2);
        let expired = start + window;
        assert_eq!(audience.helping(&t1, "", None, expired), 1);
        // A new answer restarts the viewer's window.
        audience.answered(peer(2), [&t1], start + Duration::from_secs(400));
        let t = start + Duration::from_secs(550);
        assert_eq!(audience.helping(&t1, "", None, t), 1);
        assert_eq!(
            audience.helping(&t1, "", None, t + Duration::from_secs(200)),
            0
        );
        let state = audience.lock();
        assert_eq!(state.pairs, 0);
        assert!(state.answered.is_empty() && state.order.is_empty());
    }

    #[test]
    fn a_flood_of_queries_keeps_memory_bounded_evicting_the_oldest() {
        let audience = Audience::new(Duration::from_secs(300), 50);
        let start = Instant::now();
        let t1 = trip("T1");
        for port in 0..1_000u16 {
            let at = start + Duration::from_millis(u64::from(port));
            audience.answered(peer(port), [&t1], at);
        }
        let now = start + Duration::from_secs(1);
        assert_eq!(audience.helping(&t1, "", None, now), 50);
        // The newest 50 are the ones kept.
        assert_eq!(audience.helping(&t1, "", addr(999), now), 49);
        assert_eq!(audience.helping(&t1, "", addr(949), now), 50);
        assert_eq!(audience.lock().pairs, 50);

        // One viewer refreshing one train forever: the order is compacted.
        for i in 0..10_000u64 {
            audience.answered(peer(1), [&t1], now + Duration::from_millis(i));
        }
        let state = audience.lock();
        assert!(state.pairs <= 50, "{}", state.pairs);
        assert!(state.order.len() <= 2 * 50 + 64, "{}", state.order.len());
    }

    #[test]
    fn shared_counts_never_count_a_viewer_twice_and_add_up() {
        let audience = Audience::default();
        let now = Instant::now();
        let (t1, t2) = (trip("T1"), trip("T2"));
        let _a = audience.watching(peer(1), vec![t1.clone()], String::new());
        let _b = audience.watching(peer(2), vec![t1.clone()], "B".into());
        audience.answered(peer(1), [&t1, &t2], now);
        audience.answered(peer(3), [&t1], now);
        let counts = audience.counts(now);
        // peer 2 watches route B: counted there only.
        assert_eq!(counts.trips.get(&t1.canonical()), Some(&2));
        assert_eq!(counts.trips.get(&t2.canonical()), Some(&1));
        assert_eq!(counts.routes.get("B"), Some(&1));
        assert_eq!(counts.trips.len(), 2);

        // Another server's audience adds to the local one.
        let other = Audience::default();
        other.set_remote([counts.clone(), counts]);
        assert_eq!(other.helping(&t1, "B", None, now), 6);
        assert_eq!(other.helping(&t1, "", None, now), 4);
        assert_eq!(other.helping(&t2, "C", None, now), 2);
        let _c = other.watching(peer(9), vec![t2.clone()], String::new());
        assert_eq!(other.helping(&t2, "C", None, now), 3);
        other.set_remote([]);
        assert_eq!(other.helping(&t2, "C", None, now), 1);
    }

    #[test]
    fn unknown_addresses_are_riders_of_their_own() {
        let a = Viewer::of(None);
        let b = Viewer::of(None);
        assert_ne!(a, b);
        let addr = SocketAddr::from(([127, 0, 0, 1], 5));
        assert_eq!(Viewer::of(Some(addr)), Viewer::of(Some(addr)));
    }
}
