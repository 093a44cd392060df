//! One `WatchOccupancy` call: the current estimates first, then every change
//! of the watched trips (or route) taken from the process-wide [`Hub`], sent
//! through a small channel that ends the watch when the client goes away.
//! While it runs, the watch counts in the [`Audience`](crate::audience) of
//! the trains it follows (its [`Watching`] guard lives in the forwarding
//! task, so however the watch ends, it stops counting).

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use tokio::sync::{broadcast, mpsc};
use tokio_util::sync::CancellationToken;
use tonic::Status;

use crowd_proto::codec::timestamp_to_ms;
use crowd_proto::domain::TripKey;
use crowd_proto::pb::v1::OccupancyEstimate;

use crate::audience::Watching;
use crate::error::StoreError;
use crate::estimates::Estimates;
use crate::hub::Hub;

/// Estimates queued per watcher before the watcher waits for its client.
const WATCHER_BUFFER: usize = 64;

/// What one watcher wants to see.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    /// Explicitly watched trains.
    pub trips: HashSet<TripKey>,
    /// Every train of this route, when not empty.
    pub route_id: String,
}

impl Filter {
    /// Whether a change concerns this watcher.
    pub fn matches(&self, estimate: &OccupancyEstimate) -> bool {
        let Some(trip) = &estimate.trip else {
            return false;
        };
        (!self.route_id.is_empty() && trip.route_id == self.route_id)
            || self.trips.contains(&TripKey {
                trip_id: trip.trip_id.clone(),
                start_date: trip.start_date.clone(),
            })
    }

    /// The current estimates of everything watched, each train once.
    pub async fn snapshot(
        &self,
        estimates: &Estimates,
    ) -> Result<Vec<OccupancyEstimate>, StoreError> {
        let trips: Vec<TripKey> = self.trips.iter().cloned().collect();
        let mut found = estimates.get(&trips).await?;
        if !self.route_id.is_empty() {
            for e in estimates.of_route(&self.route_id).await? {
                if !found.iter().any(|f| f.trip == e.trip) {
                    found.push(e);
                }
            }
        }
        Ok(found)
    }
}

/// Counts live watchers in a gauge for as long as it lives.
struct WatcherGauge;

impl WatcherGauge {
    fn new() -> WatcherGauge {
        metrics::gauge!("crowd_server_watchers").increment(1.0);
        WatcherGauge
    }
}

impl Drop for WatcherGauge {
    fn drop(&mut self) {
        metrics::gauge!("crowd_server_watchers").decrement(1.0);
    }
}

/// Starts a watch: reads the current estimates (an error here fails the
/// call), then forwards changes until the client leaves or shutdown;
/// `watching` counts the watcher for exactly as long.
pub async fn start(
    estimates: Estimates,
    hub: &Hub,
    filter: Filter,
    shutdown: CancellationToken,
    watching: Watching,
) -> Result<mpsc::Receiver<Result<OccupancyEstimate, Status>>, Status> {
    // Subscribe before the snapshot so no change falls in between.
    let changes = hub.subscribe();
    let initial = filter.snapshot(&estimates).await?;
    let (tx, rx) = mpsc::channel(WATCHER_BUFFER);
    tokio::spawn(forward(
        estimates, changes, filter, initial, tx, shutdown, watching,
    ));
    Ok(rx)
}

async fn forward(
    estimates: Estimates,
    mut changes: broadcast::Receiver<Arc<OccupancyEstimate>>,
    filter: Filter,
    initial: Vec<OccupancyEstimate>,
    tx: mpsc::Sender<Result<OccupancyEstimate, Status>>,
    shutdown: CancellationToken,
    // Held, not used: dropped with this task, it ends the counting.
    _watching: Watching,
) {
    let _gauge = WatcherGauge::new();
    let mut sent = Sent::of(&initial);
    for e in initial {
        if tx.send(Ok(e)).await.is_err() {
            return;
        }
    }
    loop {
        let change = tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tx.closed() => return,
            change = changes.recv() => change,
        };
        match change {
            Ok(e) if filter.matches(&e) && sent.is_news(&e) => {
                if tx.send(Ok((*e).clone())).await.is_err() {
                    return;
                }
            }
            Ok(_) => {}
            Err(broadcast::error::RecvError::Lagged(missed)) => {
                // Changes were lost: the current state replaces them.
                metrics::counter!("crowd_server_watch_lagged_total").increment(1);
                tracing::debug!(missed, "watcher lagged; re-reading its estimates");
                let current = match filter.snapshot(&estimates).await {
                    Ok(current) => current,
                    Err(e) => {
                        let _ = tx.send(Err(e.into())).await;
                        return;
                    }
                };
                sent = Sent::of(&current);
                for e in current {
                    if tx.send(Ok(e)).await.is_err() {
                        return;
                    }
                }
            }
            Err(broadcast::error::RecvError::Closed) => return,
        }
    }
}

/// What a snapshot gave the watcher: a change it also reads on the hub
/// (published before the snapshot, read after) is not sent twice.
#[derive(Debug, Default)]
struct Sent {
    /// (trip, start date) -> `updated_at` (ms) of the estimate sent.
    snapshot: HashMap<(String, String), i64>,
}

impl Sent {
    fn of(snapshot: &[OccupancyEstimate]) -> Sent {
        Sent {
            snapshot: snapshot
                .iter()
                .filter_map(|e| Some((key(e)?, updated_ms(e))))
                .collect(),
        }
    }

    /// Whether `change` is newer than what the snapshot gave of its train;
    /// once one is, the train's later changes all are.
    fn is_news(&mut self, change: &OccupancyEstimate) -> bool {
        let Some(key) = key(change) else {
            return true;
        };
        match self.snapshot.get(&key) {
            Some(at) if updated_ms(change) <= *at => false,
            Some(_) => {
                self.snapshot.remove(&key);
                true
            }
            None => true,
        }
    }
}

fn key(e: &OccupancyEstimate) -> Option<(String, String)> {
    e.trip
        .as_ref()
        .map(|t| (t.trip_id.clone(), t.start_date.clone()))
}

fn updated_ms(e: &OccupancyEstimate) -> i64 {
    e.updated_at.as_ref().map_or(0, timestamp_to_ms)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crowd_proto::pb::v1::TripRef;

    fn estimate(trip_id: &str, route_id: &str) -> OccupancyEstimate {
        OccupancyEstimate {
            trip: Some(TripRef {
                trip_id: trip_id.into(),
                start_date: "20261126".into(),
                route_id: route_id.into(),
            }),
            ..Default::default()
        }
    }

    #[test]
    fn filter_matches_named_trips_and_route() {
        let filter = Filter {
            trips: [TripKey {
                trip_id: "T1".into(),
                start_date: "20261126".into(),
            }]
            .into(),
            route_id: "B".into(),
        };
        assert!(filter.matches(&estimate("T1", "A")));
        assert!(filter.matches(&estimate("T2", "B")));
        assert!(!filter.matches(&estimate("T2", "A")));
        assert!(!filter.matches(&OccupancyEstimate::default()));
        let no_route = Filter {
            route_id: String::new(),
            ..filter
        };
        assert!(!no_route.matches(&estimate("T9", "")));
    }

    #[test]
    fn a_change_already_in_the_snapshot_is_not_sent_again() {
        let at = |e: OccupancyEstimate, ms: i64| OccupancyEstimate {
            updated_at: Some(crowd_proto::codec::timestamp_from_ms(ms)),
            ..e
        };
        let mut sent = Sent::of(&[at(estimate("T1", "B"), 1_000)]);
        assert!(!sent.is_news(&at(estimate("T1", "B"), 1_000)), "the same");
        assert!(!sent.is_news(&at(estimate("T1", "B"), 900)), "older");
        assert!(sent.is_news(&at(estimate("T2", "B"), 500)), "another train");
        assert!(sent.is_news(&at(estimate("T1", "B"), 1_001)), "newer");
        assert!(
            sent.is_news(&at(estimate("T1", "B"), 1_001)),
            "then every change"
        );
    }
}
