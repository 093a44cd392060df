//! A bounded memory of recently taken report ids, so that a client retrying a
//! report this process already took gets DUPLICATE without a second write.
//!
//! It is only a fast path: the aggregator deduplicates authoritatively, so
//! forgetting the oldest ids (or another server taking the retry) is safe.

use std::collections::{HashSet, VecDeque};
use std::sync::Mutex;

/// Recently taken report ids, oldest evicted first.
#[derive(Debug)]
pub struct RecentIds {
    inner: Mutex<Inner>,
    capacity: usize,
}

#[derive(Debug, Default)]
struct Inner {
    ids: HashSet<String>,
    order: VecDeque<String>,
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
        if inner.ids.contains(id) {
            return false;
        }
        if inner.order.len() >= self.capacity
            && let Some(old) = inner.order.pop_front()
        {
            inner.ids.remove(&old);
        }
        inner.ids.insert(id.to_owned());
        inner.order.push_back(id.to_owned());
        true
    }

    /// Forgets a claim whose write failed, so the client's retry is written.
    pub fn release(&self, id: &str) {
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        if inner.ids.remove(id)
            && let Some(pos) = inner.order.iter().rposition(|x| x == id)
        {
            inner.order.remove(pos);
        }
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
}
