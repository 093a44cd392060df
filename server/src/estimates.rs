//! Reads of what the aggregator publishes: estimates by trip, the active
//! trains of each partition, and the per-partition geo index. One MGET (or
//! GEOSEARCH, ZRANGE) per partition, all in one pipeline, so every command
//! stays inside one hash slot.

use std::collections::BTreeMap;

use crowd_proto::codec;
use crowd_proto::domain::TripKey;
use crowd_proto::layout::Layout;
use crowd_proto::pb::v1::OccupancyEstimate;

use crate::error::StoreError;
use crate::store::Store;

/// Read access to published estimates.
#[derive(Clone, Debug)]
pub struct Estimates {
    /// Shared, time-bounded Redis connection.
    pub store: Store,
    /// Where the aggregator publishes.
    pub layout: Layout,
}

/// A train found by a geo search, with its distance from the center.
#[derive(Debug, Clone, PartialEq)]
pub struct Nearby {
    /// The train (member of the geo index).
    pub trip: TripKey,
    /// Metres from the search center to its last known position.
    pub distance_m: f64,
}

impl Estimates {
    /// The current estimates of `trips`, in the same order; unknown trips are
    /// absent.
    pub async fn get(&self, trips: &[TripKey]) -> Result<Vec<OccupancyEstimate>, StoreError> {
        if trips.is_empty() {
            return Ok(Vec::new());
        }
        let mut by_partition: BTreeMap<u16, Vec<usize>> = BTreeMap::new();
        for (i, trip) in trips.iter().enumerate() {
            by_partition
                .entry(self.layout.partition_of(trip))
                .or_default()
                .push(i);
        }
        let mut pipe = redis::pipe();
        for (k, idx) in &by_partition {
            let mut mget = redis::cmd("MGET");
            for &i in idx {
                mget.arg(self.layout.estimate(*k, &trips[i]));
            }
            pipe.add_command(mget);
        }
        let replies: Vec<Vec<Option<Vec<u8>>>> = self.store.pipeline("MGET", &pipe).await?;
        let mut found: Vec<Option<OccupancyEstimate>> = vec![None; trips.len()];
        for ((_, idx), values) in by_partition.iter().zip(replies) {
            for (&i, value) in idx.iter().zip(values) {
                if let Some(bytes) = value {
                    found[i] = Some(codec::decode_estimate(&bytes)?);
                }
            }
        }
        Ok(found.into_iter().flatten().collect())
    }

    /// Every active train of every partition (members of `crowd:{k}:trains`).
    pub async fn active_trains(&self) -> Result<Vec<TripKey>, StoreError> {
        let mut pipe = redis::pipe();
        for k in self.layout.all() {
            pipe.cmd("ZRANGE").arg(self.layout.trains(k)).arg(0).arg(-1);
        }
        let replies: Vec<Vec<String>> = self.store.pipeline("ZRANGE", &pipe).await?;
        Ok(replies
            .into_iter()
            .flatten()
            .filter_map(|m| TripKey::from_canonical(&m))
            .collect())
    }

    /// The current estimates of every active train, in partition order.
    pub async fn active(&self) -> Result<Vec<OccupancyEstimate>, StoreError> {
        let trains = self.active_trains().await?;
        self.get(&trains).await
    }

    /// The current estimates of every active train of `route_id`.
    pub async fn of_route(&self, route_id: &str) -> Result<Vec<OccupancyEstimate>, StoreError> {
        let mut estimates = self.active().await?;
        estimates.retain(|e| e.trip.as_ref().is_some_and(|t| t.route_id == route_id));
        Ok(estimates)
    }

    /// Trains of the geo index whose position is within the latitude and
    /// longitude bounds (give or take a few metres: callers filter exactly),
    /// in no particular order.
    pub async fn in_bounds(
        &self,
        (min_lat, min_lon): (f64, f64),
        (max_lat, max_lon): (f64, f64),
    ) -> Result<Vec<TripKey>, StoreError> {
        const METRES_PER_DEGREE: f64 = 111_320.0;
        // A box of metres around the center, wide enough at the latitude
        // nearest the equator, with a margin for the geohash precision.
        let widest = if min_lat <= 0.0 && max_lat >= 0.0 {
            1.0
        } else {
            min_lat.abs().min(max_lat.abs()).to_radians().cos()
        };
        let width = (max_lon - min_lon) * METRES_PER_DEGREE * widest * 1.01 + 10.0;
        let height = (max_lat - min_lat) * METRES_PER_DEGREE * 1.01 + 10.0;
        let mut pipe = redis::pipe();
        for k in self.layout.all() {
            pipe.cmd("GEOSEARCH")
                .arg(self.layout.geo(k))
                .arg("FROMLONLAT")
                .arg((min_lon + max_lon) / 2.0)
                .arg((min_lat + max_lat) / 2.0)
                .arg("BYBOX")
                .arg(width)
                .arg(height)
                .arg("m");
        }
        let replies: Vec<Vec<String>> = self.store.pipeline("GEOSEARCH", &pipe).await?;
        Ok(replies
            .into_iter()
            .flatten()
            .filter_map(|m| TripKey::from_canonical(&m))
            .collect())
    }

    /// Trains within `radius_m` of a point, nearest first, at most `limit`.
    pub async fn nearby(
        &self,
        longitude: f64,
        latitude: f64,
        radius_m: f64,
        limit: usize,
    ) -> Result<Vec<Nearby>, StoreError> {
        let mut pipe = redis::pipe();
        for k in self.layout.all() {
            pipe.cmd("GEOSEARCH")
                .arg(self.layout.geo(k))
                .arg("FROMLONLAT")
                .arg(longitude)
                .arg(latitude)
                .arg("BYRADIUS")
                .arg(radius_m)
                .arg("m")
                .arg("ASC")
                .arg("COUNT")
                .arg(limit)
                .arg("WITHDIST");
        }
        let replies: Vec<Vec<(String, f64)>> = self.store.pipeline("GEOSEARCH", &pipe).await?;
        let mut found: Vec<Nearby> = replies
            .into_iter()
            .flatten()
            .filter_map(|(member, distance_m)| {
                TripKey::from_canonical(&member).map(|trip| Nearby { trip, distance_m })
            })
            .collect();
        found.sort_by(|a, b| a.distance_m.total_cmp(&b.distance_m));
        found.truncate(limit);
        Ok(found)
    }
}
