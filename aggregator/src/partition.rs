//! In-memory view of one owned partition: its lease token, how far its
//! stream has been read, and the state of the trains touched so far.
//!
//! Memory only ever holds what is committed (plus the batch in hand), so it
//! can be dropped at any time and rebuilt from Redis.

use std::collections::{BTreeMap, HashMap};

use crowd_proto::domain::TripKey;
use crowd_proto::pb::store::TrainState;

use crate::baseline_store::TrainMemo;

/// Where the partition's reader stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Phase {
    /// The consumer group must be (re)created before reading.
    NeedsGroup,
    /// Pending entries (delivered, never acknowledged) are replayed first.
    Pending,
    /// Reading new entries.
    Live,
}

/// A partition this process holds the lease of.
#[derive(Debug)]
pub(crate) struct Partition {
    /// Fencing token of our lease; every commit is checked against it.
    pub(crate) token: String,
    pub(crate) phase: Phase,
    /// Trains touched since we took the partition, by canonical trip key.
    pub(crate) trains: HashMap<String, Train>,
}

/// One train's committed state.
#[derive(Debug)]
pub(crate) struct Train {
    pub(crate) trip: TripKey,
    pub(crate) state: TrainState,
    /// When we last committed this train (ms): drives the idle eviction.
    pub(crate) touched_ms: i64,
    /// Whether an estimate of it is published now (refreshes keep it current).
    pub(crate) published: bool,
    /// Reports of the batch in hand flagged as suspicious, by reason: written
    /// with the batch's commit (so they count once), then cleared.
    pub(crate) flags: BTreeMap<&'static str, u64>,
    /// What comparing with the route's usual occupancy needs to remember.
    pub(crate) memo: TrainMemo,
}

impl Partition {
    /// A freshly acquired partition: nothing in memory, replay pending first.
    pub(crate) fn new(token: String) -> Partition {
        Partition {
            token,
            phase: Phase::NeedsGroup,
            trains: HashMap::new(),
        }
    }

    /// Forgets everything in memory after an error whose outcome is unknown:
    /// state is reloaded from Redis and pending entries replayed.
    pub(crate) fn reset(&mut self) {
        self.trains.clear();
        self.phase = Phase::NeedsGroup;
    }
}
