//! `GET /gtfs-rt/vehicle-positions`: the GTFS-Realtime VehiclePositions feed
//! over HTTP, for OpenTripPlanner, OneBusAway and any GTFS-RT reader.
//!
//! - no parameter: the binary `FeedMessage` (`application/x-protobuf`);
//! - `?format=json`: a readable JSON view of the same feed (`format=pb` is the
//!   default);
//! - `?route_id=B`: only the trains of one route.
//!
//! Every active train's estimate is read from Redis on each request (one
//! pipeline per read, so the cost is two round trips); the feed itself is
//! built by [`gtfs_rt`](crate::gtfs_rt).

use std::collections::HashMap;
use std::sync::Arc;

use axum::Router;
use axum::extract::{Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use prost::Message;

use crate::estimates::Estimates;
use crate::fleet::CarsPerRoute;
use crate::gtfs_rt;

/// Path of the feed.
pub const PATH: &str = "/gtfs-rt/vehicle-positions";
/// Media type of a binary GTFS-Realtime feed.
pub const PROTOBUF: &str = "application/x-protobuf";

/// What the feed is built from.
#[derive(Debug, Clone)]
pub struct Feed {
    /// Published estimates.
    pub estimates: Estimates,
    /// Cars per route, so every car of a train is listed.
    pub cars: Arc<CarsPerRoute>,
}

/// How the feed is rendered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Format {
    Protobuf,
    Json,
}

/// A validated feed request.
#[derive(Debug, Clone, PartialEq, Eq)]
struct FeedArgs {
    format: Format,
    route_id: Option<String>,
}

/// Validates the query string; the error is the 400 body.
fn feed_args(params: &HashMap<String, String>) -> Result<FeedArgs, String> {
    if let Some(unknown) = params
        .keys()
        .find(|k| !matches!(k.as_str(), "format" | "route_id"))
    {
        return Err(format!(
            "unknown parameter `{unknown}`; known: format, route_id"
        ));
    }
    let format = match params.get("format").map(String::as_str) {
        None | Some("pb") | Some("protobuf") => Format::Protobuf,
        Some("json") => Format::Json,
        Some(other) => {
            return Err(format!(
                "format: `{other}` is not supported; use `json` or `pb` (the default)"
            ));
        }
    };
    let route_id = match params.get("route_id") {
        None => None,
        Some(r)
            if !r.is_empty()
                && r.len() <= crowd_proto::validate::MAX_ID_LEN
                && r.bytes().all(|b| b.is_ascii_graphic()) =>
        {
            Some(r.clone())
        }
        Some(_) => {
            return Err(format!(
                "route_id: 1 to {} visible ASCII characters",
                crowd_proto::validate::MAX_ID_LEN
            ));
        }
    };
    Ok(FeedArgs { format, route_id })
}

/// The feed's routes, to merge into the HTTP router.
pub fn router(feed: Feed) -> Router {
    Router::new()
        .route(PATH, get(vehicle_positions))
        .with_state(feed)
}

async fn vehicle_positions(
    State(feed): State<Feed>,
    Query(params): Query<HashMap<String, String>>,
) -> Response {
    let args = match feed_args(&params) {
        Ok(args) => args,
        Err(message) => return (StatusCode::BAD_REQUEST, format!("{message}\n")).into_response(),
    };
    let estimates = match &args.route_id {
        Some(route) => feed.estimates.of_route(route).await,
        None => feed.estimates.active().await,
    };
    let estimates = match estimates {
        Ok(estimates) => estimates,
        Err(error) => {
            tracing::warn!(%error, "feed not built");
            return (StatusCode::SERVICE_UNAVAILABLE, format!("{error}\n")).into_response();
        }
    };
    let message = gtfs_rt::vehicle_positions(&estimates, |r| feed.cars.of(r), chrono::Utc::now());
    match args.format {
        Format::Protobuf => {
            ([(header::CONTENT_TYPE, PROTOBUF)], message.encode_to_vec()).into_response()
        }
        Format::Json => {
            let body = serde_json::to_string_pretty(&gtfs_rt::to_json(&message))
                .unwrap_or_else(|e| format!("{{\"error\": \"{e}\"}}"));
            ([(header::CONTENT_TYPE, "application/json")], body).into_response()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(pairs: &[(&str, &str)]) -> Result<FeedArgs, String> {
        let params = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        feed_args(&params)
    }

    #[test]
    fn query_parameters_are_checked() {
        assert_eq!(
            args(&[]).unwrap(),
            FeedArgs {
                format: Format::Protobuf,
                route_id: None
            }
        );
        let json = args(&[("format", "json"), ("route_id", "B")]).unwrap();
        assert_eq!(json.format, Format::Json);
        assert_eq!(json.route_id.as_deref(), Some("B"));
        assert_eq!(
            args(&[("format", "xml")]).unwrap_err(),
            "format: `xml` is not supported; use `json` or `pb` (the default)"
        );
        assert_eq!(
            args(&[("route", "B")]).unwrap_err(),
            "unknown parameter `route`; known: format, route_id"
        );
        assert!(
            args(&[("route_id", "")])
                .unwrap_err()
                .starts_with("route_id:")
        );
    }
}
