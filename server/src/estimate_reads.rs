//! The estimates riders ask for (`GetOccupancy`, `SearchNearby`): from the
//! in-memory [`EstimateCache`] when it knows the train, else from Redis,
//! filling the cache with the answer. Redis is asked for the key's
//! remaining TTL along with the estimate, so a filled entry expires with it.

use std::sync::Arc;

use chrono::Utc;

use crowd_proto::codec;
use crowd_proto::domain::TripKey;
use crowd_proto::pb::v1::OccupancyEstimate;

use crate::error::StoreError;
use crate::estimate_cache::{Cached, EstimateCache, Ticket};
use crate::estimates::Estimates;

/// Estimates by trip, through the cache.
#[derive(Debug, Clone)]
pub struct EstimateReads {
    /// Redis, for what the cache does not know.
    pub estimates: Estimates,
    /// The latest estimates, fed by the tail of changes.
    pub cache: EstimateCache,
}

/// What Redis said of one train: its estimate and the key's remaining TTL
/// (`PTTL`: -1 without expiry, -2 gone).
type Stored = (Option<Vec<u8>>, i64);

impl EstimateReads {
    /// The current estimates of `trips`, in the same order; unknown trips
    /// are absent (as [`Estimates::get`]).
    pub async fn get(&self, trips: &[TripKey]) -> Result<Vec<OccupancyEstimate>, StoreError> {
        if !self.cache.enabled() {
            return self.estimates.get(trips).await;
        }
        let cached = self.cache.lookup(trips, Utc::now().timestamp_millis());
        let misses: Vec<(usize, Option<Ticket>)> = cached
            .iter()
            .enumerate()
            .filter_map(|(i, c)| match c {
                Cached::Miss(ticket) => Some((i, *ticket)),
                Cached::Hit(_) => None,
            })
            .collect();
        let mut read = if misses.is_empty() {
            Vec::new()
        } else {
            self.read(trips, &misses).await?
        }
        .into_iter();
        let mut found = Vec::with_capacity(trips.len());
        for c in cached {
            match c {
                Cached::Hit(Some(e)) => found.push((*e).clone()),
                Cached::Hit(None) => {}
                Cached::Miss(_) => {
                    if let Some(Some(e)) = read.next() {
                        found.push(e);
                    }
                }
            }
        }
        Ok(found)
    }

    /// Reads the missed trains from Redis (GET and PTTL, one pipeline) and
    /// fills the cache where a ticket allows; one answer per miss, in order.
    async fn read(
        &self,
        trips: &[TripKey],
        misses: &[(usize, Option<Ticket>)],
    ) -> Result<Vec<Option<OccupancyEstimate>>, StoreError> {
        let layout = self.estimates.layout;
        let mut pipe = redis::pipe();
        for &(i, _) in misses {
            let key = layout.estimate(layout.partition_of(&trips[i]), &trips[i]);
            pipe.cmd("GET").arg(&key).cmd("PTTL").arg(&key);
        }
        let replies: Vec<Stored> = self.estimates.store.pipeline("GET", &pipe).await?;
        let now_ms = Utc::now().timestamp_millis();
        let mut answers = Vec::with_capacity(misses.len());
        for (&(i, ticket), (bytes, pttl)) in misses.iter().zip(replies) {
            let estimate = match bytes {
                Some(bytes) => Some(Arc::new(codec::decode_estimate(&bytes)?)),
                None => None,
            };
            if let Some(ticket) = ticket {
                let found = match (&estimate, pttl) {
                    // Expired between the two commands: answer, keep nothing.
                    (Some(_), -2) => None,
                    (Some(e), -1) => Some(Some((e.clone(), i64::MAX))),
                    (Some(e), ms) => Some(Some((e.clone(), now_ms.saturating_add(ms)))),
                    (None, _) => Some(None),
                };
                if let Some(found) = found {
                    self.cache.fill(&trips[i], ticket, found, now_ms);
                }
            }
            answers.push(estimate.map(Arc::unwrap_or_clone));
        }
        Ok(answers)
    }
}
