//! The live crowding page: a single page for riders and operators, embedded
//! in the binary, with the JSON and server-sent-events endpoints it reads.
//!
//! - `GET /`, `/app.js`, `/style.css`: the page ([`assets`]).
//! - `GET /api/routes`: the routes there is something to show for.
//! - `GET /api/line?route_id=B`: the route's stations in order, when a
//!   schedule describes it, and its number of cars ([`line`]).
//! - `GET /api/trains?route_id=B`: the current estimates of its trains.
//! - `GET /api/events?route_id=B` (or `?trip_id=..&start_date=..`): the same
//!   as a `snapshot` event, then one `train` event per change ([`events`]),
//!   taken from the process-wide [`Hub`]: no Redis connection per page.
//!   Each open stream counts as one viewer of its trains in the
//!   [`Audience`] (the nudge of report acks).
//!
//! Every train is rendered by [`view`], so the snapshot, the events and the
//! JSON snapshot agree on field names.

mod api;
mod assets;
mod events;
pub mod line;
pub mod view;

use std::sync::Arc;

use axum::Router;
use axum::routing::get;
use tokio_util::sync::CancellationToken;

use crate::audience::Audience;
use crate::estimates::Estimates;
use crate::fleet::CarsPerRoute;
use crate::hub::Hub;
use crate::open_streams::OpenStreams;

pub use line::{Lines, RouteLine, Station};

/// What the page's endpoints read from.
#[derive(Debug, Clone)]
pub struct Web {
    /// Published estimates, for snapshots.
    pub estimates: Estimates,
    /// The process-wide tail of estimate changes.
    pub hub: Hub,
    /// Stations of the routes a schedule describes; may be empty.
    pub lines: Arc<Lines>,
    /// Configured cars per route, so cars nobody reported on show as "no data".
    pub cars: Arc<CarsPerRoute>,
    /// Ends every open event stream, so the HTTP server can drain.
    pub shutdown: CancellationToken,
    /// Who looks at which train: open event streams count in it.
    pub audience: Audience,
    /// The server-wide cap on open streams: an event stream takes a place
    /// like a gRPC watch does.
    pub open_streams: OpenStreams,
}

/// The page and its endpoints, to merge into the HTTP router.
pub fn router(web: Web) -> Router {
    Router::new()
        .route("/", get(assets::index))
        .route("/app.js", get(assets::script))
        .route("/style.css", get(assets::style))
        .route("/api/routes", get(api::routes))
        .route("/api/line", get(api::line))
        .route("/api/trains", get(api::trains))
        .route("/api/events", get(events::events))
        .with_state(web)
}

#[cfg(test)]
mod tests;
