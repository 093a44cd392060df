//! `GET /api/events`: a page's live feed as server-sent events.
//!
//! First a `snapshot` event (every watched train, a JSON array), then one
//! `train` event (one JSON object) per change taken from the process-wide
//! [`Hub`](crate::hub::Hub). A page that falls behind the hub gets a fresh
//! `snapshot` instead of the changes it missed. The stream ends when the
//! page goes away (the stream is dropped) or the server shuts down; the
//! browser's `EventSource` then reconnects by itself, and a new snapshot
//! replaces whatever the page had.

use std::collections::HashSet;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures::stream::{self, Stream, StreamExt};
use serde::Deserialize;
use tokio::sync::broadcast;

use crowd_proto::domain::TripKey;
use crowd_proto::pb::v1::OccupancyEstimate;

use super::Web;
use super::api::{render, unavailable};
use crate::audience::{Viewer, Watching};
use crate::open_streams::Place;
use crate::watch::Filter;

/// How soon a disconnected page tries again (the browser default is ~3 s).
const RETRY: Duration = Duration::from_millis(1000);
/// Comment lines on a quiet stream, so proxies keep it open and a dead
/// server is noticed.
const KEEP_ALIVE: Duration = Duration::from_secs(15);

/// `?route_id=B`, or `?trip_id=..&start_date=YYYYMMDD`, or both.
#[derive(Debug, Deserialize)]
pub(super) struct EventsQuery {
    #[serde(default)]
    route_id: String,
    #[serde(default)]
    trip_id: String,
    #[serde(default)]
    start_date: String,
}

impl EventsQuery {
    /// What to watch; the error is the 400 body.
    fn filter(self) -> Result<Filter, &'static str> {
        let mut trips = HashSet::new();
        match (self.trip_id.is_empty(), self.start_date.is_empty()) {
            (true, true) => {}
            (false, false) => {
                trips.insert(TripKey {
                    trip_id: self.trip_id,
                    start_date: self.start_date,
                });
            }
            _ => return Err("trip_id and start_date go together\n"),
        }
        if trips.is_empty() && self.route_id.is_empty() {
            return Err("give route_id, or trip_id and start_date\n");
        }
        Ok(Filter {
            trips,
            route_id: self.route_id,
        })
    }
}

/// Counts open page streams in a gauge for as long as it lives.
#[derive(Debug)]
struct PageGauge;

impl PageGauge {
    fn new() -> PageGauge {
        metrics::gauge!("crowd_server_page_watchers").increment(1.0);
        PageGauge
    }
}

impl Drop for PageGauge {
    fn drop(&mut self) {
        metrics::gauge!("crowd_server_page_watchers").decrement(1.0);
    }
}

/// One page's subscription.
struct Feed {
    web: Web,
    filter: Filter,
    changes: broadcast::Receiver<Arc<OccupancyEstimate>>,
    _gauge: PageGauge,
    /// Counts the page as a viewer of its trains while the stream is open.
    _watching: Watching,
    /// Its place under the server's cap on open streams.
    _place: Place,
}

pub(super) async fn events(State(web): State<Web>, Query(q): Query<EventsQuery>) -> Response {
    let filter = match q.filter() {
        Ok(filter) => filter,
        Err(message) => return (StatusCode::BAD_REQUEST, message).into_response(),
    };
    // Past the cap the browser's `EventSource` gives up on a 503; the page
    // says it is disconnected and a reload tries again.
    let place = match web.open_streams.open() {
        Ok(place) => place,
        Err(status) => {
            return (StatusCode::SERVICE_UNAVAILABLE, status.message().to_owned()).into_response();
        }
    };
    // Subscribe before the snapshot so no change falls in between.
    let changes = web.hub.subscribe();
    let initial = match filter.snapshot(&web.estimates).await {
        Ok(initial) => initial,
        Err(e) => return unavailable(e),
    };
    let first = snapshot(&web, &initial).retry(RETRY);
    // Each stream is a page of its own (the HTTP peer is not known here).
    let watching = web.audience.watching(
        Viewer::of(None),
        filter.trips.iter().cloned().collect(),
        filter.route_id.clone(),
    );
    let feed = Feed {
        web,
        filter,
        changes,
        _gauge: PageGauge::new(),
        _watching: watching,
        _place: place,
    };
    Sse::new(stream::once(async move { Ok(first) }).chain(changes_of(feed)))
        .keep_alive(KeepAlive::new().interval(KEEP_ALIVE))
        .into_response()
}

/// Every change of the watched trains, until shutdown or the hub closes.
fn changes_of(feed: Feed) -> impl Stream<Item = Result<Event, Infallible>> {
    stream::unfold(feed, |mut feed| async move {
        loop {
            let change = tokio::select! {
                _ = feed.web.shutdown.cancelled() => return None,
                change = feed.changes.recv() => change,
            };
            match change {
                Ok(e) if feed.filter.matches(&e) => {
                    if let Some(event) = train(&feed.web, &e) {
                        return Some((Ok(event), feed));
                    }
                }
                Ok(_) => {}
                Err(broadcast::error::RecvError::Lagged(missed)) => {
                    metrics::counter!("crowd_server_page_lagged_total").increment(1);
                    tracing::debug!(missed, "page lagged; sending a new snapshot");
                    // On failure the stream ends and the page reconnects.
                    let current = feed.filter.snapshot(&feed.web.estimates).await.ok()?;
                    let event = snapshot(&feed.web, &current);
                    return Some((Ok(event), feed));
                }
                Err(broadcast::error::RecvError::Closed) => return None,
            }
        }
    })
}

fn snapshot(web: &Web, estimates: &[OccupancyEstimate]) -> Event {
    let body = serde_json::to_string(&render(web, estimates)).unwrap_or_else(|_| "[]".into());
    Event::default().event("snapshot").data(body)
}

/// `None` for an estimate without a trip, which no filter matches anyway.
fn train(web: &Web, estimate: &OccupancyEstimate) -> Option<Event> {
    let view = render(web, std::slice::from_ref(estimate)).pop()?;
    let body = serde_json::to_string(&view).ok()?;
    Some(Event::default().event("train").data(body))
}
