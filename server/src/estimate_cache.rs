//! The latest published estimate of each train, in memory, so that
//! `GetOccupancy` and `SearchNearby` answer without a Redis round trip.
//!
//! The map is fed by the process-wide tail of estimate changes (the
//! [`Hub`](crate::hub::Hub)), and filled from Redis by the queries that
//! miss. What it serves is never older than what Redis held when the tail
//! was following, because:
//!
//! - every entry carries the id of the change it stems from (a [`Version`]:
//!   the `updates` stream id, Redis' clock). A change replaces an entry only
//!   if it is newer, and a fill from Redis is tagged with the partition's
//!   position *before* the read: a change applied during the read wins,
//!   and a fill whose train may have changed while its entry was evicted is
//!   dropped;
//! - a withdrawal (a change without a level) leaves a tombstone: the train
//!   is answered as unknown, without asking Redis, until it is published
//!   again. A train Redis did not know is remembered the same way;
//! - an entry expires when its estimate key does in Redis (the aggregator
//!   sets it with the trains' idle TTL at the very moment it appends the
//!   change, so the change's id plus that TTL is the key's expiry);
//! - when the tail loses its position (error, reconnection, Redis restart,
//!   changes trimmed before it read them) the whole map is invalidated,
//!   fills started before are dropped, and while the tail is down nothing
//!   is served or filled: queries read Redis as if there were no cache;
//! - it holds at most `capacity` trains: past that, the least recently used
//!   eighth goes.
//!
//! Each server has its own map and its own tail, so servers agree with one
//! another as closely as their tails follow Redis (the same lag as the
//! changes their watchers see).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use crowd_proto::domain::TripKey;
use crowd_proto::layout::Layout;
use crowd_proto::pb::v1::{CrowdingLevel, OccupancyEstimate};

/// Identity of an estimate change: its `updates` stream id (`ms-seq`), so
/// changes of one partition are ordered as Redis appended them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default, Hash)]
pub struct Version {
    /// Redis' clock when the change was appended, in ms since the epoch.
    pub ms: u64,
    /// Order among the changes of the same millisecond.
    pub seq: u64,
}

impl Version {
    /// Parses a stream entry id such as `1764160000000-3`.
    pub fn parse(id: &str) -> Option<Version> {
        let (ms, seq) = id.split_once('-')?;
        Some(Version {
            ms: ms.parse().ok()?,
            seq: seq.parse().ok()?,
        })
    }
}

/// What the cache knows of one train.
#[derive(Debug, Clone, PartialEq)]
pub enum Cached {
    /// The train's current estimate, or `None` when it has none (withdrawn,
    /// or unknown to Redis).
    Hit(Option<Arc<OccupancyEstimate>>),
    /// Ask Redis; with a ticket, the answer may then be [filled](EstimateCache::fill).
    Miss(Option<Ticket>),
}

/// Permission to fill one train's entry with what Redis answers, taken
/// before the read: it tells which changes the answer may predate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ticket {
    /// Invalidations so far: a fill across an invalidation is dropped.
    generation: u64,
    /// The train's partition.
    partition: u16,
    /// The partition's newest change applied when the ticket was taken.
    position: Version,
}

/// The map of latest estimates; cheap to clone (one shared map).
#[derive(Debug, Clone)]
pub struct EstimateCache {
    inner: Arc<Mutex<Inner>>,
    layout: Layout,
    /// Lifetime of an estimate key after its publication, in ms.
    ttl_ms: i64,
    /// Most trains kept (tombstones included); 0 disables the cache.
    capacity: usize,
}

#[derive(Debug, Default)]
struct Inner {
    /// Bumped by every invalidation.
    generation: u64,
    /// Whether the tail follows every partition right now.
    live: bool,
    /// Per partition: the newest change applied.
    positions: Vec<Version>,
    /// Per partition: the newest version of an entry removed (evicted or
    /// expired) since the last invalidation. A fill whose ticket is older
    /// may have missed that change, so it is dropped.
    removed: Vec<Version>,
    entries: HashMap<TripKey, Entry>,
    /// Logical clock of uses, for least-recently-used eviction.
    tick: u64,
}

#[derive(Debug)]
struct Entry {
    /// `None`: the train has no estimate (tombstone).
    estimate: Option<Arc<OccupancyEstimate>>,
    partition: u16,
    version: Version,
    /// When the estimate key expires in Redis (ms since the epoch).
    expires_ms: i64,
    /// `tick` of the last use.
    used: u64,
}

fn lock(inner: &Mutex<Inner>) -> MutexGuard<'_, Inner> {
    // The map is consistent after every statement that can panic.
    inner.lock().unwrap_or_else(PoisonError::into_inner)
}

impl EstimateCache {
    /// An empty, not yet live cache for `layout`'s partitions, whose entries
    /// live `ttl_ms` after their change, holding at most `capacity` trains.
    pub fn new(layout: Layout, ttl_ms: i64, capacity: usize) -> EstimateCache {
        let partitions = usize::from(layout.partitions());
        EstimateCache {
            inner: Arc::new(Mutex::new(Inner {
                positions: vec![Version::default(); partitions],
                removed: vec![Version::default(); partitions],
                ..Inner::default()
            })),
            layout,
            ttl_ms,
            capacity,
        }
    }

    /// Whether the cache is in use at all (`capacity` > 0).
    pub fn enabled(&self) -> bool {
        self.capacity > 0
    }

    /// Trains held now, tombstones included.
    pub fn len(&self) -> usize {
        lock(&self.inner).entries.len()
    }

    /// Whether no train is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// What the cache knows of each of `trips` at `now_ms`, in order.
    pub fn lookup(&self, trips: &[TripKey], now_ms: i64) -> Vec<Cached> {
        let mut inner = lock(&self.inner);
        if !(self.enabled() && inner.live) {
            return vec![Cached::Miss(None); trips.len()];
        }
        trips
            .iter()
            .map(|trip| inner.lookup(&self.layout, trip, now_ms))
            .collect()
    }

    /// Stores what Redis answered for `trip` under a ticket from
    /// [`lookup`](Self::lookup): `Some((estimate, expiry ms))`, or `None` when
    /// Redis has no estimate. Dropped if a newer change or an invalidation
    /// came in between.
    pub fn fill(
        &self,
        trip: &TripKey,
        ticket: Ticket,
        found: Option<(Arc<OccupancyEstimate>, i64)>,
        now_ms: i64,
    ) {
        let mut inner = lock(&self.inner);
        let k = usize::from(ticket.partition);
        if !inner.live
            || ticket.generation != inner.generation
            || inner.removed[k] > ticket.position
        {
            return;
        }
        if let Some(entry) = inner.entries.get(trip)
            && entry.version > ticket.position
        {
            return;
        }
        let (estimate, expires_ms) = match found {
            Some((estimate, expires_ms)) => (Some(estimate), expires_ms),
            // Nothing appears in Redis without a change on the tail.
            None => (None, i64::MAX),
        };
        inner.insert(
            trip.clone(),
            Entry {
                estimate,
                partition: ticket.partition,
                version: ticket.position,
                expires_ms,
                used: 0,
            },
        );
        inner.make_room(self.capacity, now_ms);
    }

    /// Applies a change of partition `k` read from its `updates` stream.
    pub fn apply(&self, k: u16, version: Version, change: &Arc<OccupancyEstimate>, now_ms: i64) {
        if !self.enabled() {
            return;
        }
        let mut inner = lock(&self.inner);
        let i = usize::from(k);
        if i >= inner.positions.len() {
            return;
        }
        inner.positions[i] = inner.positions[i].max(version);
        let Some(trip) = change.trip.as_ref() else {
            return;
        };
        let trip = TripKey {
            trip_id: trip.trip_id.clone(),
            start_date: trip.start_date.clone(),
        };
        if inner
            .entries
            .get(&trip)
            .is_some_and(|e| e.version >= version)
        {
            return;
        }
        let withdrawn = change.level == CrowdingLevel::Unspecified as i32;
        let expires_ms = i64::try_from(version.ms)
            .unwrap_or(i64::MAX)
            .saturating_add(self.ttl_ms);
        inner.insert(
            trip,
            Entry {
                estimate: (!withdrawn).then(|| change.clone()),
                partition: k,
                version,
                expires_ms: if withdrawn { i64::MAX } else { expires_ms },
                used: 0,
            },
        );
        inner.make_room(self.capacity, now_ms);
    }

    /// The tail follows every partition from its position on: forgets
    /// everything (changes may have been missed while it did not) and
    /// serves again.
    pub fn following(&self) {
        let mut inner = lock(&self.inner);
        inner.invalidate();
        inner.live = true;
    }

    /// The tail lost its position (an error, a gap): forgets everything
    /// and serves nothing until [`following`](Self::following).
    pub fn lost(&self) {
        let mut inner = lock(&self.inner);
        inner.invalidate();
        inner.live = false;
    }
}

impl Inner {
    fn lookup(&mut self, layout: &Layout, trip: &TripKey, now_ms: i64) -> Cached {
        self.tick += 1;
        let tick = self.tick;
        if let Some(entry) = self.entries.get_mut(trip) {
            if entry.expires_ms > now_ms {
                entry.used = tick;
                return Cached::Hit(entry.estimate.clone());
            }
            let (k, version) = (entry.partition, entry.version);
            self.entries.remove(trip);
            self.note_removed(k, version);
        }
        let partition = layout.partition_of(trip);
        Cached::Miss(Some(Ticket {
            generation: self.generation,
            partition,
            position: self.positions[usize::from(partition)],
        }))
    }

    fn insert(&mut self, trip: TripKey, mut entry: Entry) {
        self.tick += 1;
        entry.used = self.tick;
        self.entries.insert(trip, entry);
    }

    fn note_removed(&mut self, k: u16, version: Version) {
        let removed = &mut self.removed[usize::from(k)];
        *removed = (*removed).max(version);
    }

    /// Past `capacity`: drops expired entries, then the least recently used
    /// down to seven eighths of `capacity`, so eviction runs once per
    /// eighth of it.
    fn make_room(&mut self, capacity: usize, now_ms: i64) {
        if self.entries.len() <= capacity {
            return;
        }
        let target = capacity - capacity / 8;
        let mut expired = Vec::new();
        let mut uses: Vec<u64> = Vec::with_capacity(self.entries.len());
        for entry in self.entries.values() {
            if entry.expires_ms <= now_ms {
                expired.push((entry.partition, entry.version));
            } else {
                uses.push(entry.used);
            }
        }
        let live = uses.len();
        let cutoff = if live > target {
            let (_, nth, _) = uses.select_nth_unstable(live - target - 1);
            *nth
        } else {
            0
        };
        let mut gone = expired;
        self.entries.retain(|_, e| {
            let keep = e.expires_ms > now_ms && e.used > cutoff;
            if !keep {
                gone.push((e.partition, e.version));
            }
            keep
        });
        for (k, version) in gone {
            self.note_removed(k, version);
        }
    }

    fn invalidate(&mut self) {
        self.generation += 1;
        self.entries = HashMap::new();
        self.removed.fill(Version::default());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crowd_proto::pb::v1::TripRef;

    const TTL: i64 = 60_000;
    const NOW: i64 = 1_764_000_000_000;

    fn trip(id: &str) -> TripKey {
        TripKey {
            trip_id: id.into(),
            start_date: "20261126".into(),
        }
    }

    fn change(id: &str, level: CrowdingLevel) -> Arc<OccupancyEstimate> {
        Arc::new(OccupancyEstimate {
            trip: Some(TripRef {
                trip_id: id.into(),
                start_date: "20261126".into(),
                route_id: "B".into(),
            }),
            level: level as i32,
            ..OccupancyEstimate::default()
        })
    }

    fn at(ms: i64, seq: u64) -> Version {
        Version { ms: ms as u64, seq }
    }

    fn live_cache(capacity: usize) -> (EstimateCache, Layout) {
        let layout = Layout::new(4);
        let cache = EstimateCache::new(layout, TTL, capacity);
        cache.following();
        (cache, layout)
    }

    fn level_of(cached: &Cached) -> Option<i32> {
        match cached {
            Cached::Hit(Some(e)) => Some(e.level),
            Cached::Hit(None) => Some(-1),
            Cached::Miss(_) => None,
        }
    }

    fn one(cache: &EstimateCache, id: &str, now: i64) -> Cached {
        cache.lookup(&[trip(id)], now).remove(0)
    }

    fn ticket(cached: Cached) -> Ticket {
        match cached {
            Cached::Miss(Some(t)) => t,
            other => panic!("expected a miss with a ticket, got {other:?}"),
        }
    }

    #[test]
    fn versions_parse_and_order_like_stream_ids() {
        assert_eq!(Version::parse("1764-3"), Some(at(1764, 3)));
        assert!(at(5, 9) < at(6, 0));
        assert!(at(6, 0) < at(6, 1));
        assert_eq!(Version::parse("1764"), None);
        assert_eq!(Version::parse("x-1"), None);
    }

    #[test]
    fn changes_are_served_and_only_newer_ones_replace_them() {
        let (cache, layout) = live_cache(100);
        let k = layout.partition_of(&trip("T1"));
        cache.apply(k, at(NOW, 1), &change("T1", CrowdingLevel::Full), NOW);
        assert_eq!(
            level_of(&one(&cache, "T1", NOW)),
            Some(CrowdingLevel::Full as i32)
        );
        cache.apply(k, at(NOW, 0), &change("T1", CrowdingLevel::Empty), NOW);
        assert_eq!(
            level_of(&one(&cache, "T1", NOW)),
            Some(CrowdingLevel::Full as i32),
            "older change"
        );
        cache.apply(k, at(NOW, 2), &change("T1", CrowdingLevel::Empty), NOW);
        assert_eq!(
            level_of(&one(&cache, "T1", NOW)),
            Some(CrowdingLevel::Empty as i32)
        );
    }

    #[test]
    fn a_withdrawal_answers_unknown_without_redis() {
        let (cache, layout) = live_cache(100);
        let k = layout.partition_of(&trip("T1"));
        cache.apply(k, at(NOW, 0), &change("T1", CrowdingLevel::Full), NOW);
        cache.apply(
            k,
            at(NOW, 1),
            &change("T1", CrowdingLevel::Unspecified),
            NOW,
        );
        assert_eq!(one(&cache, "T1", NOW), Cached::Hit(None));
        // Long after the TTL: a withdrawn train stays unknown.
        assert_eq!(one(&cache, "T1", NOW + 10 * TTL), Cached::Hit(None));
    }

    #[test]
    fn an_entry_is_not_served_once_its_key_has_expired_in_redis() {
        let (cache, layout) = live_cache(100);
        let k = layout.partition_of(&trip("T1"));
        cache.apply(k, at(NOW, 0), &change("T1", CrowdingLevel::Full), NOW);
        assert!(matches!(
            one(&cache, "T1", NOW + TTL - 1),
            Cached::Hit(Some(_))
        ));
        assert!(matches!(
            one(&cache, "T1", NOW + TTL),
            Cached::Miss(Some(_))
        ));
        // A fill honours the expiry Redis gave.
        let t = ticket(one(&cache, "T2", NOW));
        cache.fill(
            &trip("T2"),
            t,
            Some((change("T2", CrowdingLevel::Full), NOW + 500)),
            NOW,
        );
        assert!(matches!(one(&cache, "T2", NOW + 499), Cached::Hit(Some(_))));
        assert!(matches!(one(&cache, "T2", NOW + 500), Cached::Miss(_)));
    }

    #[test]
    fn a_fill_loses_to_a_change_applied_while_redis_was_read() {
        let (cache, layout) = live_cache(100);
        let k = layout.partition_of(&trip("T1"));
        let t = ticket(one(&cache, "T1", NOW));
        // The tail applies a newer change before the read comes back.
        cache.apply(k, at(NOW, 5), &change("T1", CrowdingLevel::Empty), NOW);
        cache.fill(
            &trip("T1"),
            t,
            Some((change("T1", CrowdingLevel::Full), NOW + TTL)),
            NOW,
        );
        assert_eq!(
            level_of(&one(&cache, "T1", NOW)),
            Some(CrowdingLevel::Empty as i32)
        );
        // Nor does an old read bring back a withdrawn train.
        let t = ticket(one(&cache, "T2", NOW));
        let k2 = layout.partition_of(&trip("T2"));
        cache.apply(
            k2,
            at(NOW, 9),
            &change("T2", CrowdingLevel::Unspecified),
            NOW,
        );
        cache.fill(
            &trip("T2"),
            t,
            Some((change("T2", CrowdingLevel::Full), NOW + TTL)),
            NOW,
        );
        assert_eq!(one(&cache, "T2", NOW), Cached::Hit(None));
    }

    #[test]
    fn a_fill_is_then_replaced_by_the_next_change() {
        let (cache, layout) = live_cache(100);
        let k = layout.partition_of(&trip("T1"));
        let t = ticket(one(&cache, "T1", NOW));
        cache.fill(&trip("T1"), t, None, NOW);
        assert_eq!(
            one(&cache, "T1", NOW),
            Cached::Hit(None),
            "unknown to Redis"
        );
        cache.apply(k, at(NOW, 1), &change("T1", CrowdingLevel::Full), NOW);
        assert_eq!(
            level_of(&one(&cache, "T1", NOW)),
            Some(CrowdingLevel::Full as i32)
        );
    }

    #[test]
    fn losing_the_tail_forgets_everything_and_drops_fills_in_flight() {
        let (cache, layout) = live_cache(100);
        let k = layout.partition_of(&trip("T1"));
        cache.apply(k, at(NOW, 1), &change("T1", CrowdingLevel::Full), NOW);
        let t = ticket(one(&cache, "T2", NOW));
        cache.lost();
        assert_eq!(one(&cache, "T1", NOW), Cached::Miss(None), "not live");
        cache.fill(
            &trip("T2"),
            t,
            Some((change("T2", CrowdingLevel::Full), NOW + TTL)),
            NOW,
        );
        cache.following();
        assert!(cache.is_empty(), "a fill across an invalidation");
        assert!(matches!(one(&cache, "T1", NOW), Cached::Miss(Some(_))));
        // A ticket from before a reconnection is worthless too.
        let t = ticket(one(&cache, "T3", NOW));
        cache.following();
        cache.fill(&trip("T3"), t, None, NOW);
        assert!(cache.is_empty());
    }

    #[test]
    fn memory_is_bounded_and_the_least_recently_used_go_first() {
        let (cache, layout) = live_cache(16);
        for i in 0..16 {
            let id = format!("T{i}");
            cache.apply(
                layout.partition_of(&trip(&id)),
                at(NOW, i),
                &change(&id, CrowdingLevel::Full),
                NOW,
            );
        }
        // T0 is used, so T1 and T2 are the oldest.
        assert!(matches!(one(&cache, "T0", NOW), Cached::Hit(_)));
        cache.apply(
            layout.partition_of(&trip("T16")),
            at(NOW, 16),
            &change("T16", CrowdingLevel::Full),
            NOW,
        );
        assert_eq!(cache.len(), 14, "down to 7/8 of 16");
        assert!(matches!(one(&cache, "T0", NOW), Cached::Hit(_)));
        assert!(matches!(one(&cache, "T1", NOW), Cached::Miss(_)));
        assert!(matches!(one(&cache, "T2", NOW), Cached::Miss(_)));
        assert!(matches!(one(&cache, "T16", NOW), Cached::Hit(_)));
    }

    #[test]
    fn a_fill_older_than_an_evicted_change_is_dropped() {
        let (cache, layout) = live_cache(8);
        let k = layout.partition_of(&trip("T1"));
        let t = ticket(one(&cache, "T1", NOW));
        // T1 changes, then is evicted by newer trains of its partition
        // (looking it up would make it recently used).
        cache.apply(k, at(NOW, 1), &change("T1", CrowdingLevel::Empty), NOW);
        let others = (0..)
            .map(|i| format!("U{i}"))
            .filter(|id| layout.partition_of(&trip(id)) == k)
            .take(8);
        for (seq, id) in (2..).zip(others) {
            cache.apply(k, at(NOW, seq), &change(&id, CrowdingLevel::Full), NOW);
        }
        assert!(cache.len() < 9, "nothing was evicted");
        cache.fill(
            &trip("T1"),
            t,
            Some((change("T1", CrowdingLevel::Full), NOW + TTL)),
            NOW,
        );
        assert!(matches!(one(&cache, "T1", NOW), Cached::Miss(_)));
    }

    #[test]
    fn a_disabled_cache_never_answers() {
        let cache = EstimateCache::new(Layout::new(4), TTL, 0);
        cache.following();
        cache.apply(0, at(NOW, 1), &change("T1", CrowdingLevel::Full), NOW);
        assert_eq!(one(&cache, "T1", NOW), Cached::Miss(None));
        assert!(cache.is_empty());
    }
}
