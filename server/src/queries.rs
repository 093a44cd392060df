//! `OccupancyService`: riders read back what the aggregator published.
//! Arguments are validated here (INVALID_ARGUMENT names the field); reads go
//! through [`EstimateReads`] (memory first, then Redis), a watch's first
//! snapshot through [`Estimates`], its changes through the process-wide
//! [`Hub`]. Every
//! answer and every watch is noted in the [`Audience`], for the nudge of
//! report acks.

use std::time::Instant;

use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status};

use crowd_proto::domain::TripKey;
use crowd_proto::pb::v1::occupancy_service_server::OccupancyService;
use crowd_proto::pb::v1::{
    GetOccupancyRequest, GetOccupancyResponse, OccupancyEstimate, SearchNearbyRequest,
    SearchNearbyResponse, TripRef, WatchOccupancyRequest,
};
use crowd_proto::validate::{validate_position, validate_trip};

use crate::audience::{Audience, Viewer};
use crate::estimate_reads::EstimateReads;
use crate::estimates::Estimates;
use crate::hub::Hub;
use crate::open_streams::{Held, OpenStreams};
use crate::watch::{self, Filter};

/// Largest search radius, in metres.
pub const MAX_RADIUS_M: f64 = 50_000.0;
/// Trains returned by SearchNearby when the request says 0.
pub const DEFAULT_NEARBY_LIMIT: u32 = 20;
/// Most trains SearchNearby returns.
pub const MAX_NEARBY_LIMIT: u32 = 200;

/// The `OccupancyService` implementation.
#[derive(Debug, Clone)]
pub struct Queries {
    /// Estimates by trip for GetOccupancy and SearchNearby, from memory
    /// when the cache knows them.
    pub reads: EstimateReads,
    /// Reads of published estimates straight from Redis (watch snapshots,
    /// geo searches).
    pub estimates: Estimates,
    /// The process-wide tail of estimate changes.
    pub hub: Hub,
    /// Most trips one request may name.
    pub max_trips: usize,
    /// Fires on server shutdown: watches end.
    pub shutdown: CancellationToken,
    /// Who looks at which train, for `helping_riders` in report acks.
    pub audience: Audience,
    /// The server-wide cap on open streams, shared with report streams.
    pub open_streams: OpenStreams,
}

/// The trains of an answer, to note who was shown them.
fn shown(estimates: &[OccupancyEstimate]) -> Vec<TripKey> {
    estimates
        .iter()
        .filter_map(|e| e.trip.as_ref())
        .map(|t| TripKey {
            trip_id: t.trip_id.clone(),
            start_date: t.start_date.clone(),
        })
        .collect()
}

impl Queries {
    /// Validates a list of trips, naming the bad one by index.
    fn trips(&self, trips: &[TripRef]) -> Result<Vec<TripKey>, Status> {
        if trips.len() > self.max_trips {
            return Err(Status::invalid_argument(format!(
                "trips: {} > {} per request",
                trips.len(),
                self.max_trips
            )));
        }
        trips
            .iter()
            .enumerate()
            .map(|(i, t)| {
                validate_trip(t)
                    .map(|(key, _)| key)
                    .map_err(|e| Status::invalid_argument(format!("trips[{i}].{e}")))
            })
            .collect()
    }
}

/// A validated SearchNearby request.
#[derive(Debug, Clone, Copy, PartialEq)]
struct NearbyArgs {
    latitude: f64,
    longitude: f64,
    radius_m: f64,
    limit: usize,
}

/// Validates a SearchNearby request, applying the default limit.
fn nearby_args(req: &SearchNearbyRequest) -> Result<NearbyArgs, Status> {
    let center = req
        .center
        .as_ref()
        .ok_or_else(|| Status::invalid_argument("center: missing"))?;
    validate_position(center).map_err(|e| {
        // Reported under the request's own field name.
        let field = e.field.replacen("position.", "center.", 1);
        Status::invalid_argument(format!("{field}: {}", e.reason))
    })?;
    let r = req.radius_m;
    if !(r.is_finite() && r > 0.0 && r <= MAX_RADIUS_M) {
        return Err(Status::invalid_argument(format!(
            "radius_m: {r} is not in (0, {MAX_RADIUS_M}]"
        )));
    }
    let limit = match req.limit {
        0 => DEFAULT_NEARBY_LIMIT,
        n if n > MAX_NEARBY_LIMIT => {
            return Err(Status::invalid_argument(format!(
                "limit: {n} > {MAX_NEARBY_LIMIT}"
            )));
        }
        n => n,
    };
    Ok(NearbyArgs {
        latitude: center.latitude,
        longitude: center.longitude,
        radius_m: r,
        limit: limit as usize,
    })
}

#[tonic::async_trait]
impl OccupancyService for Queries {
    type WatchOccupancyStream = Held<ReceiverStream<Result<OccupancyEstimate, Status>>>;

    async fn get_occupancy(
        &self,
        request: Request<GetOccupancyRequest>,
    ) -> Result<Response<GetOccupancyResponse>, Status> {
        let viewer = Viewer::of(request.remote_addr());
        let trips = self.trips(&request.get_ref().trips)?;
        let estimates = self.reads.get(&trips).await?;
        self.audience
            .answered(viewer, &shown(&estimates), Instant::now());
        Ok(Response::new(GetOccupancyResponse { estimates }))
    }

    async fn watch_occupancy(
        &self,
        request: Request<WatchOccupancyRequest>,
    ) -> Result<Response<Self::WatchOccupancyStream>, Status> {
        let viewer = Viewer::of(request.remote_addr());
        let req = request.into_inner();
        if req.trips.is_empty() && req.route_id.is_empty() {
            return Err(Status::invalid_argument(
                "trips: empty; name at least one trip or a route_id",
            ));
        }
        let trips = self.trips(&req.trips)?;
        if req.route_id.len() > crowd_proto::validate::MAX_ID_LEN
            || !req.route_id.bytes().all(|b| b.is_ascii_graphic())
        {
            return Err(Status::invalid_argument(
                "route_id: up to 64 visible ASCII characters",
            ));
        }
        let place = self.open_streams.open()?;
        let filter = Filter {
            trips: trips.into_iter().collect(),
            route_id: req.route_id,
        };
        let watching = self.audience.watching(
            viewer,
            filter.trips.iter().cloned().collect(),
            filter.route_id.clone(),
        );
        let rx = watch::start(
            self.estimates.clone(),
            &self.hub,
            filter,
            self.shutdown.clone(),
            watching,
        )
        .await?;
        Ok(Response::new(place.hold(ReceiverStream::new(rx))))
    }

    async fn search_nearby(
        &self,
        request: Request<SearchNearbyRequest>,
    ) -> Result<Response<SearchNearbyResponse>, Status> {
        let viewer = Viewer::of(request.remote_addr());
        let args = nearby_args(request.get_ref())?;
        let nearby = self
            .estimates
            .nearby(args.longitude, args.latitude, args.radius_m, args.limit)
            .await?;
        let trips: Vec<TripKey> = nearby.into_iter().map(|n| n.trip).collect();
        let estimates = self.reads.get(&trips).await?;
        self.audience
            .answered(viewer, &shown(&estimates), Instant::now());
        Ok(Response::new(SearchNearbyResponse { estimates }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crowd_proto::pb::v1::GeoPoint;

    fn request(lat: f64, lon: f64, radius_m: f64, limit: u32) -> SearchNearbyRequest {
        SearchNearbyRequest {
            center: Some(GeoPoint {
                latitude: lat,
                longitude: lon,
                accuracy_m: 0.0,
            }),
            radius_m,
            limit,
        }
    }

    #[test]
    fn nearby_arguments_are_checked_and_defaulted() {
        assert_eq!(
            nearby_args(&request(48.8, 2.3, 500.0, 0)).unwrap().limit,
            20
        );
        assert_eq!(nearby_args(&request(48.8, 2.3, 500.0, 7)).unwrap().limit, 7);
        let err = |r| nearby_args(&r).unwrap_err().message().to_owned();
        assert!(err(request(91.0, 2.3, 500.0, 0)).starts_with("center.latitude: 91"));
        assert!(err(request(48.8, 2.3, 0.0, 0)).starts_with("radius_m: 0"));
        assert!(err(request(48.8, 2.3, 60_000.0, 0)).starts_with("radius_m: 60000"));
        assert!(err(request(48.8, 2.3, f64::NAN, 0)).starts_with("radius_m: NaN"));
        assert_eq!(err(request(48.8, 2.3, 500.0, 201)), "limit: 201 > 200");
        let missing = SearchNearbyRequest::default();
        assert_eq!(
            nearby_args(&missing).unwrap_err().message(),
            "center: missing"
        );
    }
}
