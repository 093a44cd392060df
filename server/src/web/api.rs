//! The page's JSON endpoints: which routes exist, a route's stations, and a
//! snapshot of its trains.

use std::collections::BTreeSet;

use axum::extract::{Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};

use super::Web;
use super::view::{self, TrainView};

/// `?route_id=B`.
#[derive(Debug, Deserialize)]
pub(super) struct RouteQuery {
    route_id: String,
}

/// Serializes `value` as the response body.
pub(super) fn json(value: &impl Serialize) -> Response {
    match serde_json::to_string(value) {
        Ok(body) => ([(header::CONTENT_TYPE, "application/json")], body).into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, format!("{e}\n")).into_response(),
    }
}

/// Redis did not answer: the page retries.
pub(super) fn unavailable(error: impl std::fmt::Display) -> Response {
    tracing::debug!(%error, "page data unavailable");
    (StatusCode::SERVICE_UNAVAILABLE, format!("{error}\n")).into_response()
}

/// The routes of the schedule and of the trains running now, sorted.
pub(super) async fn routes(State(web): State<Web>) -> Response {
    let active = match web.estimates.active().await {
        Ok(active) => active,
        Err(e) => return unavailable(e),
    };
    let routes: BTreeSet<&str> = web
        .lines
        .route_ids()
        .chain(
            active
                .iter()
                .filter_map(|e| e.trip.as_ref())
                .map(|t| t.route_id.as_str()),
        )
        .filter(|r| !r.is_empty())
        .collect();
    json(&routes)
}

/// What the page needs to draw a route.
#[derive(Debug, Serialize)]
struct LineView<'a> {
    route_id: &'a str,
    /// The route's name, or its id when no schedule names it.
    name: &'a str,
    /// Stations in running order; empty without a schedule.
    stations: &'a [super::Station],
    /// Cars of its trains, when configured.
    car_count: Option<u32>,
}

pub(super) async fn line(State(web): State<Web>, Query(q): Query<RouteQuery>) -> Response {
    let line = web.lines.get(&q.route_id);
    json(&LineView {
        route_id: &q.route_id,
        name: line.map_or(q.route_id.as_str(), |l| l.name.as_str()),
        stations: line.map_or(&[], |l| l.stations.as_slice()),
        car_count: web.cars.of(&q.route_id),
    })
}

pub(super) async fn trains(State(web): State<Web>, Query(q): Query<RouteQuery>) -> Response {
    match web.estimates.of_route(&q.route_id).await {
        Ok(estimates) => json(&render(&web, &estimates)),
        Err(e) => unavailable(e),
    }
}

/// Renders estimates for the page, ordered by trip id.
pub(super) fn render(
    web: &Web,
    estimates: &[crowd_proto::pb::v1::OccupancyEstimate],
) -> Vec<TrainView> {
    let now = chrono::Utc::now();
    let mut trains: Vec<TrainView> = estimates
        .iter()
        .filter_map(|e| {
            let route = e.trip.as_ref().map_or("", |t| t.route_id.as_str());
            view::train(e, web.cars.of(route), now)
        })
        .collect();
    trains.sort_by(|a, b| (&a.trip_id, &a.start_date).cmp(&(&b.trip_id, &b.start_date)));
    trains
}
