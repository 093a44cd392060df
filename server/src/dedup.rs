//! A bounded memory of recently taken report ids, so that a client retrying a
//! report this process already took gets DUPLICATE without a second write.
//!
//! It is only a fast path: the aggregator deduplicates authoritatively, so
//! forgetting the oldest ids (or another server taking the retry) is safe.
//!
//! Every operation is O(1): a claim is one map insert, a release (a write
//! that failed) removes the id from the map only, and the eviction queue
//! skips entries whose id was released or claimed again since. Releases
//! come in bursts exactly when the server is overloaded or Redis is down,
//! so a release must not cost a scan of the whole memory.

use std::collections::hash_map::Entry;
use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};

/// Recently taken report ids, oldest evicted first.
#[derive(Debug)]
pub struct RecentIds {
    inner: Mutex<Inner>,
    capacity: usize,
}

#[derive(Debug, Default)]
struct Inner {
    /// Each remembered id and the number of the claim that took it.
    ids: HashMap<Arc<str>, u64>,
    /// Claims in the order they were made; an entry whose number no longer
    /// matches `ids` was released (or re-claimed) and is skipped.
    order: VecDeque<(Arc<str>, u64)>,
    /// Number of the next claim.
    next: u64,
}

impl RecentIds {
    /// Remembers at most `capacity` ids.
    pub fn new(capacity: usize) -> RecentIds {
        RecentIds {
            inner: Mutex::new(Inner::default()),
            capacity: capacity.max(1),
        }
    }

    /// Claims `id`: true when it is new (the caller should write it), false
    /// when it was taken recently.
    pub fn claim(&self, id: &str) -> bool {
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let inner = &mut *inner;
        // One hash of the new id (the map's entry) and one of each evicted
        // id: on a busy server this map is the costliest part of a claim.
        let claim = inner.next;
        let id: Arc<str> = Arc::from(id);
        match inner.ids.entry(id.clone()) {
            Entry::Occupied(_) => return false,
            Entry::Vacant(place) => {
                place.insert(claim);
            }
        }
        inner.next += 1;
        inner.order.push_back((id, claim));
        // Released claims still hold a place in `order`: drop them too, so
        // the queue stays within twice the capacity whatever the releases.
        while inner.ids.len() > self.capacity || inner.order.len() > 2 * self.capacity {
            let Some((old, taken)) = inner.order.pop_front() else {
                break;
            };
            // Removed at once; put back in the rare case the id was
            // released and claimed again since this entry was queued.
            if let Some(current) = inner.ids.remove(&old)
                && current != taken
            {
                inner.ids.insert(old, current);
            }
        }
        true
    }

    /// Forgets a claim whose write failed, so the client's retry is written.
    pub fn release(&self, id: &str) {
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        inner.ids.remove(id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn second_claim_is_refused_until_released() {
        let ids = RecentIds::new(10);
        assert!(ids.claim("a"));
        assert!(!ids.claim("a"));
        ids.release("a");
        assert!(ids.claim("a"));
    }

    #[test]
    fn oldest_ids_are_forgotten_first() {
        let ids = RecentIds::new(2);
        assert!(ids.claim("a"));
        assert!(ids.claim("b"));
        assert!(ids.claim("c"));
        assert!(ids.claim("a"), "a was evicted");
        assert!(!ids.claim("c"));
    }

    #[test]
    fn a_released_then_reclaimed_id_is_not_evicted_by_its_old_place() {
        let ids = RecentIds::new(3);
        assert!(ids.claim("a"));
        ids.release("a");
        assert!(ids.claim("b"));
        assert!(ids.claim("a"));
        assert!(ids.claim("c"));
        // Full (b, a, c): the next claim evicts b, the oldest live claim,
        // not a through the stale entry of its first claim.
        assert!(ids.claim("d"));
        assert!(!ids.claim("a"), "a was claimed after b");
        assert!(!ids.claim("c"));
        assert!(ids.claim("b"), "b was evicted");
    }

    #[test]
    fn releases_do_not_grow_the_memory_past_its_bound() {
        let ids = RecentIds::new(4);
        for i in 0..1_000 {
            let id = i.to_string();
            assert!(ids.claim(&id));
            ids.release(&id);
        }
        let inner = ids.inner.lock().unwrap();
        assert!(inner.ids.is_empty());
        assert!(inner.order.len() <= 8, "{}", inner.order.len());
    }
}
