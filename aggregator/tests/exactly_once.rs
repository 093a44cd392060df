//! A state-machine property test of exactly-once counting, without Redis.
//!
//! A model of what Redis keeps for one partition (the reports stream, the
//! consumer group's last-delivered position and pending entries list, the
//! committed train state) is driven by random sequences of what happens in
//! production: clients append reports and retry them with the same id, the
//! owner reads new entries and folds them into its in-memory state with the
//! real [`estimator::apply`], commits (state + XACK in one step, as the Lua
//! commit does), crashes (memory lost, pending entries stay), a stale owner
//! tries to commit after losing its lease (fenced: nothing changes), and a
//! new owner claims the partition and replays the pending entries first.
//!
//! Whatever the sequence, the committed `reports_counted` always equals the
//! number of distinct report ids among the acknowledged entries, and after a
//! final drain, the number of distinct report ids ever appended.

use std::collections::BTreeSet;

use proptest::prelude::*;

use crowd_aggregator::estimator::{self, Params};
use crowd_aggregator::state_codec;
use crowd_proto::pb::store::{StoredReport, TrainState};

/// What can happen next.
#[derive(Debug, Clone)]
enum Step {
    /// A client appends a new report (a new id).
    Append,
    /// A client retries the `n`-th report sent so far (same id), e.g. after
    /// losing the ack of a write that did happen.
    Retry(usize),
    /// The owner reads up to `n` entries and folds them in: its pending
    /// entries first after taking the partition or on a rescan, else new
    /// ones (`XREADGROUP ... 0` / `>`).
    Deliver(usize),
    /// The owner commits what it holds (state + XACK, one fenced script).
    Commit,
    /// The owner dies: memory and batch in hand are gone, pending stays.
    Crash,
    /// The owner freezes and its lease lapses: it becomes stale, and the
    /// next reader is a new owner with a new token.
    Claim,
    /// The stale owner, still running, reads `n` new entries.
    StaleDeliver(usize),
    /// The stale owner tries to commit: the fencing token refuses it.
    StaleCommit,
    /// The owner renewed its lease: it rescans its pending entries (a stale
    /// owner may have read entries it will never commit).
    Rescan,
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        4 => Just(Step::Append),
        2 => (0usize..64).prop_map(Step::Retry),
        3 => (1usize..8).prop_map(Step::Deliver),
        3 => Just(Step::Commit),
        1 => Just(Step::Crash),
        1 => Just(Step::Claim),
        1 => (1usize..8).prop_map(Step::StaleDeliver),
        1 => Just(Step::StaleCommit),
        1 => Just(Step::Rescan),
    ]
}

/// An aggregator holding (or having held) the partition.
#[derive(Debug)]
struct Owner {
    /// Its fencing token.
    token: u64,
    /// Committed state as loaded, plus what it applied since.
    state: TrainState,
    /// Stream positions applied but not committed.
    in_hand: Vec<usize>,
    /// Whether its next read replays the pending entries.
    replay_pending: bool,
}

/// What Redis holds for one partition, plus the aggregators' memory.
#[derive(Debug, Default)]
struct Partition {
    /// The reports stream.
    stream: Vec<StoredReport>,
    /// Entries before this position were delivered to the group.
    last_delivered: usize,
    /// Delivered, not acknowledged (the PEL of the shared consumer name).
    pending: BTreeSet<usize>,
    acked: BTreeSet<usize>,
    /// The committed state, as bytes (what a new owner loads).
    committed: Vec<u8>,
    /// The last token handed out by the lease.
    lease_token: u64,
    owner: Option<Owner>,
    stale: Option<Owner>,
    /// Distinct reports sent so far.
    sent: usize,
}

impl Partition {
    fn committed_state(&self) -> TrainState {
        state_codec::decode(self.committed.as_slice()).expect("committed state decodes")
    }

    /// Appends (again) the `n`-th report: a retry carries the same id,
    /// device and content.
    fn append(&mut self, n: usize) {
        let small = |m: usize| u32::try_from(n % m).unwrap_or(0);
        let at = 1_000 + i64::try_from(n).unwrap_or(0);
        self.stream.push(StoredReport {
            report_id: format!("r{n}"),
            device: u64::from(small(7)),
            trip_id: "T".into(),
            start_date: "20261126".into(),
            route_id: "R".into(),
            carriage_sequence: small(4),
            level: 1 + small(7),
            occupancy_percentage: None,
            observed_at_ms: at,
            received_at_ms: at,
            position: None,
            stop_id: String::new(),
        });
    }

    /// Entries a read hands over: the PEL when replaying, else up to `n` new
    /// ones, which become pending.
    fn read(&mut self, n: usize, replay: bool) -> Vec<usize> {
        if replay {
            return self.pending.iter().copied().collect();
        }
        let end = (self.last_delivered + n).min(self.stream.len());
        let fresh: Vec<usize> = (self.last_delivered..end).collect();
        self.last_delivered = end;
        self.pending.extend(&fresh);
        fresh
    }

    fn deliver(&mut self, n: usize, params: &Params) {
        if self.owner.is_none() {
            self.lease_token += 1;
            self.owner = Some(Owner {
                token: self.lease_token,
                state: self.committed_state(),
                in_hand: Vec::new(),
                replay_pending: true,
            });
        }
        let replay = self.owner.as_ref().is_some_and(|o| o.replay_pending);
        let batch = self.read(n, replay);
        let stream = &self.stream;
        if let Some(owner) = self.owner.as_mut() {
            owner.replay_pending = false;
            for seq in batch {
                estimator::apply(&mut owner.state, &stream[seq], params);
                owner.in_hand.push(seq);
            }
        }
    }

    fn stale_deliver(&mut self, n: usize, params: &Params) {
        if self.stale.is_none() {
            return;
        }
        let batch = self.read(n, false);
        let stream = &self.stream;
        if let Some(stale) = self.stale.as_mut() {
            for seq in batch {
                estimator::apply(&mut stale.state, &stream[seq], params);
                stale.in_hand.push(seq);
            }
        }
    }

    /// The commit script: refused unless `owner` holds the current token.
    fn commit(&mut self, owner: &mut Owner) -> bool {
        if owner.token != self.lease_token {
            return false;
        }
        self.committed = state_codec::encode(&owner.state);
        for seq in owner.in_hand.drain(..) {
            self.pending.remove(&seq);
            self.acked.insert(seq);
        }
        true
    }

    /// Distinct report ids among acknowledged entries.
    fn acked_ids(&self) -> usize {
        self.acked
            .iter()
            .map(|s| self.stream[*s].report_id.as_str())
            .collect::<BTreeSet<_>>()
            .len()
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn every_report_counts_exactly_once(steps in proptest::collection::vec(step(), 1..150)) {
        let params = Params::default();
        let mut p = Partition::default();
        for step in steps {
            match step {
                Step::Append => {
                    p.append(p.sent);
                    p.sent += 1;
                }
                Step::Retry(n) => {
                    if p.sent > 0 {
                        p.append(n % p.sent);
                    }
                }
                Step::Deliver(n) => p.deliver(n, &params),
                Step::Commit => {
                    if let Some(mut owner) = p.owner.take() {
                        prop_assert!(p.commit(&mut owner), "the owner was fenced");
                        p.owner = Some(owner);
                    }
                }
                Step::Crash => p.owner = None,
                Step::Claim => {
                    // The lease lapses: the old token matches nothing any more.
                    p.stale = p.owner.take();
                    p.lease_token += 1;
                }
                Step::StaleDeliver(n) => p.stale_deliver(n, &params),
                Step::StaleCommit => {
                    if let Some(mut stale) = p.stale.take() {
                        prop_assert!(!p.commit(&mut stale), "a stale owner committed");
                        p.stale = Some(stale);
                    }
                }
                Step::Rescan => {
                    if let Some(owner) = p.owner.as_mut() {
                        owner.replay_pending = true;
                    }
                }
            }
            prop_assert_eq!(
                p.committed_state().reports_counted,
                p.acked_ids() as u64,
                "committed count differs from the acknowledged ids"
            );
            prop_assert!(p.pending.is_disjoint(&p.acked));
        }

        // Drain: a final owner replays what is pending and reads the rest.
        p.owner = None;
        p.stale = None;
        for _ in 0..=p.stream.len() {
            p.deliver(8, &params);
            let mut owner = p.owner.take().expect("an owner");
            prop_assert!(p.commit(&mut owner));
            p.owner = Some(owner);
        }
        prop_assert!(p.pending.is_empty());
        prop_assert_eq!(p.acked.len(), p.stream.len());
        prop_assert_eq!(p.committed_state().reports_counted, p.sent as u64);
    }
}
