//! `WatchOccupancy` subscribers measuring freshness: how long from the
//! intended send time of a report until a watcher sees an estimate of that
//! train whose `newest_report_at` covers the report.
//!
//! The generator notes every report on a watched train in [`Freshness`];
//! watchers resolve those notes as updates arrive. Notes are resolved in
//! observation order, so one update that covers many reports records the
//! freshness of each.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crowd_proto::codec::timestamp_to_ms;
use crowd_proto::pb::v1::occupancy_service_client::OccupancyServiceClient;
use crowd_proto::pb::v1::{OccupancyEstimate, TripRef, WatchOccupancyRequest};
use futures::StreamExt;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;

use super::source::RunningTrips;
use super::stats::{Latency, Stats, code_name};

/// Reports remembered per watched train; older notes are dropped (and
/// counted unresolved) beyond this, bounding memory when updates never come.
const MAX_PENDING_PER_TRIP: usize = 100_000;

/// Pause before resubscribing after a failed watch.
const RESUBSCRIBE_BACKOFF: Duration = Duration::from_millis(200);

/// How often a watcher checks whether its trains still run.
const RECHECK_RUNNING: Duration = Duration::from_secs(1);

/// `(trip_id, start_date)`: the identity of a train run.
pub type TripKey = (String, String);

pub fn trip_key(trip: &TripRef) -> TripKey {
    (trip.trip_id.clone(), trip.start_date.clone())
}

/// Which report a freshness note stands for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Note {
    pub trip: TripKey,
    pub observed_at_ms: i64,
}

/// Reports on watched trains not yet seen in an update.
#[derive(Debug, Default)]
pub struct Freshness {
    /// Per watched train: `(observed_at ms, intended send time)`, in send order.
    pending: Mutex<HashMap<TripKey, VecDeque<(i64, Instant)>>>,
    /// Notes given up on: a train had too many outstanding, or stopped
    /// being watched.
    dropped: Mutex<u64>,
}

impl Freshness {
    /// Starts tracking these trains.
    pub fn watch(&self, trips: &[TripRef]) {
        let mut pending = self.lock();
        for trip in trips {
            pending.entry(trip_key(trip)).or_default();
        }
    }

    /// Notes a report sent on `trip`, if it is watched.
    pub fn on_sent(&self, trip: &TripRef, observed_at_ms: i64, intended: Instant) -> Option<Note> {
        let mut pending = self.lock();
        // Look up by reference first: most reports are on unwatched trains.
        let (_, queue) = pending
            .iter_mut()
            .find(|((id, date), _)| *id == trip.trip_id && *date == trip.start_date)?;
        if queue.len() >= MAX_PENDING_PER_TRIP {
            queue.pop_front();
            *self.dropped.lock().unwrap_or_else(|p| p.into_inner()) += 1;
        }
        queue.push_back((observed_at_ms, intended));
        Some(Note {
            trip: trip_key(trip),
            observed_at_ms,
        })
    }

    /// Withdraws a note whose report was not accepted: no update will count
    /// it, and a later report covering its time must not pass for it.
    pub fn forget(&self, note: &Note) {
        let mut pending = self.lock();
        if let Some(queue) = pending.get_mut(&note.trip)
            && let Some(i) = queue.iter().position(|(ms, _)| *ms == note.observed_at_ms)
        {
            queue.remove(i);
        }
    }

    /// Resolves every note on this estimate's train observed at or before
    /// its newest report, recording each one's freshness as of `now`.
    pub fn on_update(&self, estimate: &OccupancyEstimate, now: Instant, into: &Latency) -> usize {
        let Some(trip) = &estimate.trip else {
            return 0;
        };
        let Some(covered) = newest_report_ms(estimate) else {
            return 0;
        };
        let mut pending = self.lock();
        let Some(queue) = pending.get_mut(&trip_key(trip)) else {
            return 0;
        };
        let before = queue.len();
        queue.retain(|(observed, intended)| {
            let resolved = *observed <= covered;
            if resolved {
                into.record(now.saturating_duration_since(*intended));
            }
            !resolved
        });
        before - queue.len()
    }

    /// Stops tracking these trains; their notes still waiting count as
    /// unresolved.
    pub fn unwatch(&self, trips: &[TripRef]) {
        let mut pending = self.lock();
        let mut gone = 0;
        for trip in trips {
            gone += pending
                .remove(&trip_key(trip))
                .map_or(0, |queue| queue.len());
        }
        drop(pending);
        *self.dropped.lock().unwrap_or_else(|p| p.into_inner()) += gone as u64;
    }

    /// Notes still waiting for an update.
    pub fn waiting(&self) -> u64 {
        self.lock().values().map(VecDeque::len).sum::<usize>() as u64
    }

    /// Notes never resolved: still waiting, or given up on.
    pub fn unresolved(&self) -> u64 {
        self.waiting() + *self.dropped.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<TripKey, VecDeque<(i64, Instant)>>> {
        self.pending.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The newest report an estimate accounts for: the train-level
/// `newest_report_at`, or the newest of its cars'.
fn newest_report_ms(estimate: &OccupancyEstimate) -> Option<i64> {
    let train = estimate.newest_report_at.as_ref().map(timestamp_to_ms);
    let cars = estimate
        .cars
        .iter()
        .filter_map(|car| car.newest_report_at.as_ref().map(timestamp_to_ms));
    train.into_iter().chain(cars).max()
}

/// Spreads `trips` over `watchers` subscribers, `per_watcher` each
/// (round-robin, so with few trips several watchers share a train).
pub fn assign(trips: &[TripRef], watchers: usize, per_watcher: usize) -> Vec<Vec<TripRef>> {
    if trips.is_empty() {
        return vec![Vec::new(); watchers];
    }
    (0..watchers)
        .map(|w| {
            (0..per_watcher.min(trips.len()))
                .map(|i| trips[(w * per_watcher + i) % trips.len()].clone())
                .collect()
        })
        .collect()
}

/// Which trains a watcher follows: its share of the running trains.
#[derive(Debug, Clone)]
pub struct Share {
    /// This watcher's index, `0..of`.
    pub index: usize,
    /// How many watchers share the trains.
    pub of: usize,
    /// Trains per watcher.
    pub per_watcher: usize,
    pub running: RunningTrips,
}

impl Share {
    fn pick(&self) -> Vec<TripRef> {
        let running = self.running.read().unwrap_or_else(|p| p.into_inner());
        assign(&running, self.of, self.per_watcher)
            .swap_remove(self.index.min(self.of.saturating_sub(1)))
    }

    /// True while at least one of `trips` still runs.
    fn any_running(&self, trips: &[TripRef]) -> bool {
        let running = self.running.read().unwrap_or_else(|p| p.into_inner());
        trips.iter().any(|trip| running.contains(trip))
    }
}

/// Starts one watcher. It follows its share of the running trains, picks
/// new ones when all of its trains have ended, and resubscribes after
/// errors, until `stop`.
pub fn spawn(
    channel: Channel,
    share: Share,
    freshness: Arc<Freshness>,
    stats: Arc<Stats>,
    stop: CancellationToken,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut client = OccupancyServiceClient::new(channel);
        let watch = async {
            loop {
                let trips = share.pick();
                if trips.is_empty() {
                    tokio::time::sleep(RECHECK_RUNNING).await;
                    continue;
                }
                freshness.watch(&trips);
                let request = WatchOccupancyRequest {
                    trips: trips.clone(),
                    route_id: String::new(),
                };
                match client.watch_occupancy(request).await {
                    Ok(response) => {
                        let updates = response.into_inner();
                        if let Err(failure) =
                            follow(updates, &trips, &share, &freshness, &stats).await
                        {
                            stats.watch_errors.add(&failure);
                            tokio::time::sleep(RESUBSCRIBE_BACKOFF).await;
                        }
                    }
                    Err(status) => {
                        stats.watch_errors.add(&code_name(&status));
                        tokio::time::sleep(RESUBSCRIBE_BACKOFF).await;
                    }
                }
                freshness.unwatch(&trips);
            }
        };
        stop.run_until_cancelled(watch).await;
    })
}

/// Reads updates until the watched trains have all ended (`Ok`) or the
/// call fails (`Err` with the name the failure is counted under).
async fn follow(
    mut updates: tonic::Streaming<OccupancyEstimate>,
    trips: &[TripRef],
    share: &Share,
    freshness: &Freshness,
    stats: &Stats,
) -> Result<(), String> {
    let mut check = tokio::time::interval(RECHECK_RUNNING);
    check.tick().await;
    loop {
        tokio::select! {
            update = updates.next() => match update {
                Some(Ok(estimate)) => {
                    freshness.on_update(&estimate, Instant::now(), &stats.freshness);
                }
                Some(Err(status)) => return Err(code_name(&status)),
                None => return Err("ended by server".to_owned()),
            },
            _ = check.tick() => {
                if !share.any_running(trips) {
                    return Ok(());
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crowd_proto::codec::timestamp_from_ms;

    fn trip(id: &str) -> TripRef {
        TripRef {
            trip_id: id.into(),
            start_date: "20261126".into(),
            route_id: "B".into(),
        }
    }

    fn estimate(id: &str, newest_ms: i64) -> OccupancyEstimate {
        OccupancyEstimate {
            trip: Some(trip(id)),
            newest_report_at: Some(timestamp_from_ms(newest_ms)),
            ..Default::default()
        }
    }

    #[test]
    fn an_update_resolves_the_reports_it_covers() {
        let freshness = Freshness::default();
        freshness.watch(&[trip("A")]);
        let t0 = Instant::now();
        freshness.on_sent(&trip("A"), 1_000, t0);
        freshness.on_sent(&trip("A"), 2_000, t0 + Duration::from_millis(10));
        freshness.on_sent(&trip("B"), 1_000, t0);
        let latency = Latency::default();
        let now = t0 + Duration::from_millis(50);
        assert_eq!(freshness.on_update(&estimate("A", 1_500), now, &latency), 1);
        assert_eq!(
            freshness.unresolved(),
            1,
            "B is not watched, 2_000 not covered"
        );
        assert_eq!(freshness.on_update(&estimate("B", 9_000), now, &latency), 0);
        assert_eq!(freshness.on_update(&estimate("A", 2_000), now, &latency), 1);
        let summary = latency.summary();
        assert_eq!(summary.count, 2);
        assert!((summary.max_ms - 50.0).abs() < 0.1, "{summary:?}");
        assert!((summary.p50_ms - 40.0).abs() < 0.1, "{summary:?}");
        assert_eq!(freshness.unresolved(), 0);
    }

    #[test]
    fn a_rejected_report_is_forgotten_not_resolved_later() {
        let freshness = Freshness::default();
        freshness.watch(&[trip("A")]);
        let t0 = Instant::now();
        let note = freshness.on_sent(&trip("A"), 1_000, t0).unwrap();
        assert_eq!(freshness.on_sent(&trip("B"), 1_000, t0), None);
        freshness.on_sent(&trip("A"), 2_000, t0);
        freshness.forget(&note);
        let latency = Latency::default();
        assert_eq!(freshness.on_update(&estimate("A", 2_000), t0, &latency), 1);
        assert_eq!(latency.summary().count, 1);
        assert_eq!(freshness.unresolved(), 0);
    }

    #[test]
    fn unwatching_gives_up_on_waiting_notes() {
        let freshness = Freshness::default();
        freshness.watch(&[trip("A"), trip("B")]);
        let t0 = Instant::now();
        freshness.on_sent(&trip("A"), 1_000, t0);
        freshness.on_sent(&trip("B"), 1_000, t0);
        freshness.unwatch(&[trip("A")]);
        assert_eq!(freshness.unresolved(), 2);
        assert_eq!(freshness.waiting(), 1);
        freshness.on_sent(&trip("A"), 2_000, t0);
        assert_eq!(freshness.unresolved(), 2, "A is no longer tracked");
    }

    #[test]
    fn a_share_follows_the_running_trains() {
        let running: RunningTrips = Arc::default();
        let share = Share {
            index: 1,
            of: 2,
            per_watcher: 1,
            running: running.clone(),
        };
        assert!(share.pick().is_empty());
        *running.write().unwrap() = vec![trip("A"), trip("B")];
        let picked = share.pick();
        assert_eq!(picked, vec![trip("B")]);
        assert!(share.any_running(&picked));
        *running.write().unwrap() = vec![trip("C")];
        assert!(!share.any_running(&picked));
        assert_eq!(share.pick(), vec![trip("C")]);
    }

    #[test]
    fn car_timestamps_count_when_the_train_has_none() {
        let mut e = OccupancyEstimate {
            trip: Some(trip("A")),
            ..Default::default()
        };
        assert_eq!(newest_report_ms(&e), None);
        e.cars.push(crowd_proto::pb::v1::CarEstimate {
            newest_report_at: Some(timestamp_from_ms(77)),
            ..Default::default()
        });
        assert_eq!(newest_report_ms(&e), Some(77));
    }

    #[test]
    fn trips_are_spread_round_robin() {
        let trips = [trip("A"), trip("B"), trip("C")];
        let assigned = assign(&trips, 2, 2);
        let ids = |v: &Vec<TripRef>| v.iter().map(|t| t.trip_id.clone()).collect::<Vec<_>>();
        assert_eq!(ids(&assigned[0]), ["A", "B"]);
        assert_eq!(ids(&assigned[1]), ["C", "A"]);
        assert_eq!(assign(&[], 3, 2), vec![Vec::<TripRef>::new(); 3]);
        assert_eq!(assign(&trips[..1], 1, 4)[0].len(), 1);
    }
}
