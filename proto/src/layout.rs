//! The Redis layout: key names and partitioning, the single definition shared
//! by the server and the aggregator.
//!
//! Reports are partitioned by train, `k = fnv1a(trip) mod P`. Every key of a
//! partition carries the hash tag `{k}`, so on Redis Cluster a partition lives
//! in one slot and its batch commit can be one atomic script.
//!
//! | key | type | written by | what |
//! |---|---|---|---|
//! | `crowd:{k}:reports` | stream | server | accepted reports (field `r`) |
//! | `crowd:{k}:state:<trip>` | string | aggregator | [`TrainState`](crate::pb::store::TrainState) |
//! | `crowd:{k}:est:<trip>` | string | aggregator | published `OccupancyEstimate` |
//! | `crowd:{k}:updates` | stream | aggregator | estimate changes (field `e`), tailed by Watch |
//! | `crowd:{k}:abuse:<trip>` | hash | aggregator | flagged reports of the train by reason (`far_from_train`, …) |
//! | `crowd:{k}:abused` | zset | aggregator | flagged trains by when they were last flagged (ms) |
//! | `crowd:{k}:dead` | stream | aggregator | entries that cannot be counted (fields `id`, `r`, `reason`) |
//! | `crowd:{k}:trains` | zset | aggregator | active trains by last update (ms) |
//! | `crowd:{k}:geo` | geo set | aggregator | last known position of each active train |
//! | `crowd:{k}:lease` | string | aggregator | owner token of partition k (fencing) |
//! | `crowd:{k}:fence` | counter | aggregator | source of monotonically rising lease tokens |
//! | `crowd:baseline:<route>` | hash | aggregator | usual occupancy by hour of the week (field: hour, value: `BaselineCell`) |
//! | `crowd:profile:<route>` | hash | aggregator | what the trains ahead said on each stretch of the route (field: stretch, 16 hex digits; value: `ProfileCell`), expiring [`PROFILE_TTL_SECS`] after its last write |
//! | `crowd:reputation` | hash | aggregator | device trust scores (field: device hash, hex) |
//! | `crowd:aggregators` | zset | aggregator | live aggregators (member: instance id, score: expiry ms) |
//! | `crowd:audience:servers` | zset | server | servers sharing their viewer counts, by last exchange (ms) |
//! | `crowd:audience:<server>` | string | server | one server's viewers per train and per route (JSON), expiring unless refreshed |
//! | `crowd:contrib:<device>` | counter | server | a device's accepted reports (device hash, hex), expires [`CONTRIBUTIONS_TTL_SECS`] after its last report |
//!
//! The geo index is per partition (not one global key) so the aggregator can
//! update it inside the same atomic, single-slot commit as the estimate.

use crate::domain::TripKey;

/// Consumer group of the aggregators on every reports stream.
pub const GROUP: &str = "aggregators";
/// Consumer name used by whichever aggregator holds a partition's lease.
///
/// One fixed name per partition (the group is per stream) means a new owner
/// finds the previous owner's unacknowledged entries in its own pending list.
pub const CONSUMER: &str = "owner";
/// Stream entry field holding an encoded `StoredReport`.
pub const REPORT_FIELD: &str = "r";
/// Stream entry field holding an encoded `OccupancyEstimate`.
pub const ESTIMATE_FIELD: &str = "e";
/// Hash of device reputation scores, shared by all partitions: soft state
/// (field: the device hash as 16 hex digits, value: the score).
pub const REPUTATION: &str = "crowd:reputation";
/// The usual occupancy of a route by hour of the week: a hash (field: the
/// hour of the week, value: an encoded `BaselineCell`), soft state shared
/// by all aggregators.
pub fn baseline(route_id: &str) -> String {
    format!("crowd:baseline:{route_id}")
}
/// What the latest trains said on each stretch of a route: a hash (field:
/// the stretch, value: an encoded `ProfileCell`), soft state shared by all
/// aggregators.
pub fn profile(route_id: &str) -> String {
    format!("crowd:profile:{route_id}")
}
/// A route's profile goes when no train has recorded into it for this
/// long: its cells only speak for half an hour anyway.
pub const PROFILE_TTL_SECS: u64 = 6 * 3600;
/// Live aggregators, so each knows its share of the partitions (member: the
/// instance id, score: when its announcement expires, ms).
pub const AGGREGATORS: &str = "crowd:aggregators";
/// Default number of partitions.
pub const DEFAULT_PARTITIONS: u16 = 16;
/// How long a device's contribution count outlives its last report: long
/// enough for riders who commute a few days a week, short enough that the
/// counters of abandoned installs go away.
pub const CONTRIBUTIONS_TTL_SECS: u64 = 30 * 24 * 3600;

/// Sorted set of the servers sharing viewer counts (member: server id,
/// score: time of its last exchange in ms).
pub const AUDIENCE_SERVERS: &str = "crowd:audience:servers";

/// Key of one server's viewer counts (`server`: its random id, hex).
pub fn audience(server: &str) -> String {
    format!("crowd:audience:{server}")
}

/// Key of a device's running count of accepted reports, by its keyed hash
/// (the same 16 hex digits as the reputation field). Not tagged: one small
/// counter per device, spread over the cluster, never part of a multi-key
/// command.
pub fn contributions(device: u64) -> String {
    format!("crowd:contrib:{device:016x}")
}

/// Key names for a deployment with a fixed number of partitions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Layout {
    partitions: u16,
}

impl Layout {
    /// A layout with `partitions` partitions (at least 1).
    pub fn new(partitions: u16) -> Layout {
        Layout {
            partitions: partitions.max(1),
        }
    }

    pub fn partitions(&self) -> u16 {
        self.partitions
    }

    /// All partition numbers.
    pub fn all(&self) -> impl Iterator<Item = u16> + use<> {
        0..self.partitions
    }

    /// The partition of a train: stable across processes, versions and hosts.
    pub fn partition_of(&self, trip: &TripKey) -> u16 {
        let mut h = fnv1a(trip.start_date.as_bytes(), FNV_OFFSET);
        h = fnv1a(b":", h);
        h = fnv1a(trip.trip_id.as_bytes(), h);
        (h % u64::from(self.partitions)) as u16
    }

    pub fn reports(&self, k: u16) -> String {
        format!("crowd:{{{k}}}:reports")
    }
    pub fn updates(&self, k: u16) -> String {
        format!("crowd:{{{k}}}:updates")
    }
    /// Counts of a train's flagged reports, by reason.
    pub fn abuse(&self, k: u16, trip: &TripKey) -> String {
        format!("crowd:{{{k}}}:abuse:{}", trip.canonical())
    }
    /// Trains of partition `k` with flagged reports, by last flag time (ms).
    pub fn abused(&self, k: u16) -> String {
        format!("crowd:{{{k}}}:abused")
    }
    /// Dead letters of partition `k`: reports set aside instead of counted.
    pub fn dead(&self, k: u16) -> String {
        format!("crowd:{{{k}}}:dead")
    }
    pub fn trains(&self, k: u16) -> String {
        format!("crowd:{{{k}}}:trains")
    }
    pub fn geo(&self, k: u16) -> String {
        format!("crowd:{{{k}}}:geo")
    }
    pub fn lease(&self, k: u16) -> String {
        format!("crowd:{{{k}}}:lease")
    }
    pub fn fence(&self, k: u16) -> String {
        format!("crowd:{{{k}}}:fence")
    }
    pub fn state(&self, k: u16, trip: &TripKey) -> String {
        format!("crowd:{{{k}}}:state:{}", trip.canonical())
    }
    pub fn estimate(&self, k: u16, trip: &TripKey) -> String {
        format!("crowd:{{{k}}}:est:{}", trip.canonical())
    }
}

const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;

/// FNV-1a: tiny, stable and good enough to spread trip ids over partitions.
fn fnv1a(bytes: &[u8], mut h: u64) -> u64 {
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(FNV_PRIME);
    }
    h
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

    #[test]
    fn keys_of_a_partition_share_one_hash_tag() {
        let l = Layout::new(16);
        let t = trip("T1");
        let k = l.partition_of(&t);
        let tag = format!("{{{k}}}");
        for key in [
            l.reports(k),
            l.updates(k),
            l.dead(k),
            l.abused(k),
            l.abuse(k, &t),
            l.trains(k),
            l.geo(k),
            l.lease(k),
            l.fence(k),
            l.state(k, &t),
            l.estimate(k, &t),
        ] {
            assert!(key.starts_with("crowd:"), "{key}");
            assert_eq!(&key[6..6 + tag.len()], tag, "{key}");
        }
    }

    #[test]
    fn partitioning_is_stable_and_spreads() {
        let l = Layout::new(16);
        // Pinned values: changing the hash would strand data in old partitions.
        assert_eq!(l.partition_of(&trip("T1")), l.partition_of(&trip("T1")));
        let pinned: Vec<u16> = ["A", "B", "T100"]
            .iter()
            .map(|t| l.partition_of(&trip(t)))
            .collect();
        assert_eq!(
            pinned,
            vec![fnv_expect("A"), fnv_expect("B"), fnv_expect("T100")]
        );
        let mut used = std::collections::HashSet::new();
        for i in 0..200 {
            used.insert(l.partition_of(&trip(&format!("T{i}"))));
        }
        assert_eq!(used.len(), 16);
    }

    #[test]
    fn contribution_keys_name_the_device_hash_in_fixed_width_hex() {
        assert_eq!(contributions(0xab), "crowd:contrib:00000000000000ab");
        assert_eq!(contributions(u64::MAX), "crowd:contrib:ffffffffffffffff");
    }

    /// Reference FNV-1a 64 written independently from the published algorithm.
    fn fnv_expect(trip_id: &str) -> u16 {
        let text = format!("20261126:{trip_id}");
        let mut h: u64 = 14695981039346656037;
        for b in text.bytes() {
            h = (h ^ b as u64).wrapping_mul(1099511628211);
        }
        (h % 16) as u16
    }
}
