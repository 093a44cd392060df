//! `OperatorService`: views for transit operators, behind an API key (see
//! [`auth`](crate::auth)).
//!
//! - GetRouteSummary: a route's trains now, in order along the route when a
//!   GTFS schedule is loaded, with the route's name.
//! - ListTrainsInArea: trains whose last position is inside a bounding box or
//!   a polygon: candidates from the geo index's box search, then the exact
//!   test with `geo`.
//! - GetAbuseStats: what this server refused, by reason, and the devices the
//!   aggregators distrust most (see [`flagged`](crate::flagged)).

use std::sync::Arc;

use geo::{BoundingRect, Contains, Coord, LineString, Point, Polygon, Rect};
use tonic::service::Interceptor;
use tonic::service::interceptor::InterceptedService;
use tonic::{Request, Response, Status};

use crowd_proto::codec::timestamp_from_ms;
use crowd_proto::pb::v1::list_trains_in_area_request::Area;
use crowd_proto::pb::v1::operator_service_server::{OperatorService, OperatorServiceServer};
use crowd_proto::pb::v1::{
    BoundingBox, FlagCount, FlaggedDevice, FlaggedTrain, GetAbuseStatsRequest,
    GetAbuseStatsResponse, GetRouteSummaryRequest, GetRouteSummaryResponse,
    ListTrainsInAreaRequest, ListTrainsInAreaResponse, OccupancyEstimate, RejectCount,
    TrainOnRoute, TripRef,
};

use crate::auth::OperatorKeys;
use crate::config::Config;
use crate::error::ServerError;
use crate::estimates::Estimates;
use crate::rejects::RejectCounts;
use crate::schedule::Schedule;

/// Trains ListTrainsInArea returns when the request says 0.
pub const DEFAULT_AREA_LIMIT: u32 = 500;
/// Most trains ListTrainsInArea returns.
pub const MAX_AREA_LIMIT: u32 = 5000;
/// Most points of a polygon.
pub const MAX_POLYGON_POINTS: usize = 1000;
/// Distrusted devices GetAbuseStats lists.
pub const FLAGGED_DEVICES: usize = 20;
/// Flagged trains listed by `GetAbuseStats`, most recently flagged first.
pub const FLAGGED_TRAINS: usize = 20;
/// Devices of the reputation hash GetAbuseStats examines at most.
pub const REPUTATION_BUDGET: u64 = 100_000;

/// The `OperatorService` implementation.
#[derive(Debug, Clone)]
pub struct Operator {
    /// Reads of published estimates.
    pub estimates: Estimates,
    /// What ingest refused.
    pub rejects: RejectCounts,
    /// The GTFS schedule, when loaded.
    pub schedule: Option<Arc<Schedule>>,
}

/// A validated area.
#[derive(Debug, Clone, PartialEq)]
enum Region {
    Rect(Rect<f64>),
    Polygon(Polygon<f64>),
}

impl Region {
    /// The bounding rectangle (x = longitude, y = latitude).
    fn bounds(&self) -> Rect<f64> {
        match self {
            Region::Rect(r) => *r,
            Region::Polygon(p) => p.bounding_rect().unwrap_or(Rect::new(
                Coord { x: 0.0, y: 0.0 },
                Coord { x: 0.0, y: 0.0 },
            )),
        }
    }

    /// (latitude, longitude) of the south-west corner of the bounds.
    fn lower_corner(&self) -> (f64, f64) {
        let min = self.bounds().min();
        (min.y, min.x)
    }

    /// (latitude, longitude) of the north-east corner of the bounds.
    fn upper_corner(&self) -> (f64, f64) {
        let max = self.bounds().max();
        (max.y, max.x)
    }

    /// Whether a point (x = longitude, y = latitude) is inside or on the border.
    fn covers(&self, latitude: f64, longitude: f64) -> bool {
        let p = Point::new(longitude, latitude);
        match self {
            Region::Rect(r) => {
                let (min, max) = (r.min(), r.max());
                (min.x..=max.x).contains(&p.x()) && (min.y..=max.y).contains(&p.y())
            }
            Region::Polygon(poly) => {
                poly.contains(&p) || geo::Intersects::intersects(poly.exterior(), &p)
            }
        }
    }
}

fn check_latitude(field: &str, v: f64) -> Result<f64, Status> {
    if v.is_finite() && (-90.0..=90.0).contains(&v) {
        Ok(v)
    } else {
        Err(Status::invalid_argument(format!(
            "{field}: {v} is not a latitude in [-90, 90]"
        )))
    }
}

fn check_longitude(field: &str, v: f64) -> Result<f64, Status> {
    if v.is_finite() && (-180.0..=180.0).contains(&v) {
        Ok(v)
    } else {
        Err(Status::invalid_argument(format!(
            "{field}: {v} is not a longitude in [-180, 180]"
        )))
    }
}

fn bbox_region(b: &BoundingBox) -> Result<Region, Status> {
    let min_lat = check_latitude("bbox.min_latitude", b.min_latitude)?;
    let max_lat = check_latitude("bbox.max_latitude", b.max_latitude)?;
    let min_lon = check_longitude("bbox.min_longitude", b.min_longitude)?;
    let max_lon = check_longitude("bbox.max_longitude", b.max_longitude)?;
    if min_lat > max_lat {
        return Err(Status::invalid_argument(format!(
            "bbox.min_latitude: {min_lat} > bbox.max_latitude {max_lat}"
        )));
    }
    if min_lon > max_lon {
        return Err(Status::invalid_argument(format!(
            "bbox.min_longitude: {min_lon} > bbox.max_longitude {max_lon}"
        )));
    }
    Ok(Region::Rect(Rect::new(
        Coord {
            x: min_lon,
            y: min_lat,
        },
        Coord {
            x: max_lon,
            y: max_lat,
        },
    )))
}

fn polygon_region(points: &[crowd_proto::pb::v1::GeoPoint]) -> Result<Region, Status> {
    let mut coords = Vec::with_capacity(points.len());
    for (i, p) in points.iter().enumerate() {
        let y = check_latitude(&format!("polygon.points[{i}].latitude"), p.latitude)?;
        let x = check_longitude(&format!("polygon.points[{i}].longitude"), p.longitude)?;
        coords.push(Coord { x, y });
    }
    if coords.len() > 1 && coords.first() == coords.last() {
        coords.pop();
    }
    if coords.len() < 3 {
        return Err(Status::invalid_argument(format!(
            "polygon.points: {} distinct points; a polygon needs at least 3",
            coords.len()
        )));
    }
    if coords.len() > MAX_POLYGON_POINTS {
        return Err(Status::invalid_argument(format!(
            "polygon.points: {} > {MAX_POLYGON_POINTS}",
            coords.len()
        )));
    }
    Ok(Region::Polygon(Polygon::new(
        LineString::from(coords),
        vec![],
    )))
}

/// Validates a ListTrainsInArea request into its region and limit.
fn area_args(req: &ListTrainsInAreaRequest) -> Result<(Region, usize), Status> {
    let region = match &req.area {
        Some(Area::Bbox(b)) => bbox_region(b)?,
        Some(Area::Polygon(p)) => polygon_region(&p.points)?,
        None => {
            return Err(Status::invalid_argument(
                "area: missing; give bbox or polygon",
            ));
        }
    };
    let limit = match req.limit {
        0 => DEFAULT_AREA_LIMIT,
        n if n > MAX_AREA_LIMIT => {
            return Err(Status::invalid_argument(format!(
                "limit: {n} > {MAX_AREA_LIMIT}"
            )));
        }
        n => n,
    };
    Ok((region, limit as usize))
}

fn check_route_id(route_id: &str) -> Result<(), Status> {
    if route_id.is_empty() {
        return Err(Status::invalid_argument("route_id: missing"));
    }
    if route_id.len() > crowd_proto::validate::MAX_ID_LEN
        || !route_id.bytes().all(|b| b.is_ascii_graphic())
    {
        return Err(Status::invalid_argument(format!(
            "route_id: up to {} visible ASCII characters",
            crowd_proto::validate::MAX_ID_LEN
        )));
    }
    Ok(())
}

fn trip_id(e: &OccupancyEstimate) -> &str {
    e.trip.as_ref().map_or("", |t| t.trip_id.as_str())
}

/// Orders a route's trains along the route when the schedule knows it (trains
/// without a position last), otherwise by trip id.
fn order_along(
    schedule: Option<&Schedule>,
    route_id: &str,
    estimates: Vec<OccupancyEstimate>,
) -> Vec<TrainOnRoute> {
    let mut trains: Vec<TrainOnRoute> = estimates
        .into_iter()
        .map(|estimate| {
            let progress = schedule
                .zip(estimate.position.as_ref())
                .and_then(|(s, p)| s.progress(route_id, p.latitude, p.longitude));
            TrainOnRoute {
                progress: progress.as_ref().map(|p| p.fraction),
                nearest_stop_id: progress.map(|p| p.nearest_stop_id).unwrap_or_default(),
                estimate: Some(estimate),
            }
        })
        .collect();
    trains.sort_by(|a, b| {
        let key = |t: &TrainOnRoute| t.progress.unwrap_or(f64::INFINITY);
        key(a).total_cmp(&key(b)).then_with(|| {
            let id = |t: &TrainOnRoute| t.estimate.as_ref().map_or("", trip_id).to_owned();
            id(a).cmp(&id(b))
        })
    });
    trains
}

/// What the operator side needs from the configuration, loaded at startup.
#[derive(Debug, Clone)]
pub struct OperatorSetup {
    /// The GTFS schedule (`--gtfs`).
    pub schedule: Option<Arc<Schedule>>,
    /// Accepted API keys.
    pub keys: OperatorKeys,
    /// Counts of refused reports, shared with ingest.
    pub rejects: RejectCounts,
}

impl OperatorSetup {
    /// Loads the schedule and the keys; a bad GTFS feed or keys file stops
    /// the server with a message naming the file.
    pub async fn load(config: &Config) -> Result<OperatorSetup, ServerError> {
        let schedule = match config.gtfs.clone() {
            Some(path) => {
                let schedule = tokio::task::spawn_blocking(move || Schedule::load(&path))
                    .await
                    .unwrap_or_else(|e| std::panic::resume_unwind(e.into_panic()))?;
                let (routes, trips) = schedule.size();
                tracing::info!(
                    path = %schedule.source().display(),
                    routes,
                    trips,
                    strict = config.gtfs_strict,
                    "GTFS schedule loaded"
                );
                Some(Arc::new(schedule))
            }
            None => None,
        };
        let keys = OperatorKeys::load(
            config.operator_keys_file.as_deref(),
            config.operator_keys.as_deref(),
        )?;
        if keys.is_empty() {
            tracing::info!("no operator keys configured: OperatorService refuses every call");
        }
        Ok(OperatorSetup {
            schedule,
            keys,
            rejects: RejectCounts::default(),
        })
    }

    /// The gRPC service, every call guarded by the key check.
    pub fn service(
        &self,
        estimates: Estimates,
        max_message_bytes: usize,
    ) -> InterceptedService<OperatorServiceServer<Operator>, impl Interceptor + Clone + use<>> {
        let keys = self.keys.clone();
        let operator = Operator {
            estimates,
            rejects: self.rejects.clone(),
            schedule: self.schedule.clone(),
        };
        InterceptedService::new(
            OperatorServiceServer::new(operator).max_decoding_message_size(max_message_bytes),
            move |request| keys.check(request),
        )
    }
}

#[tonic::async_trait]
impl OperatorService for Operator {
    async fn get_route_summary(
        &self,
        request: Request<GetRouteSummaryRequest>,
    ) -> Result<Response<GetRouteSummaryResponse>, Status> {
        let route_id = request.into_inner().route_id;
        check_route_id(&route_id)?;
        let estimates = self.estimates.of_route(&route_id).await?;
        let schedule = self.schedule.as_deref();
        let route_name = schedule
            .and_then(|s| s.route(&route_id))
            .map(|r| r.name.clone())
            .unwrap_or_default();
        let trains = order_along(schedule, &route_id, estimates);
        Ok(Response::new(GetRouteSummaryResponse {
            route_id,
            route_name,
            trains,
        }))
    }

    async fn list_trains_in_area(
        &self,
        request: Request<ListTrainsInAreaRequest>,
    ) -> Result<Response<ListTrainsInAreaResponse>, Status> {
        let (region, limit) = area_args(request.get_ref())?;
        let candidates = self
            .estimates
            .in_bounds(region.lower_corner(), region.upper_corner())
            .await?;
        let mut estimates: Vec<OccupancyEstimate> = self
            .estimates
            .get(&candidates)
            .await?
            .into_iter()
            .filter(|e| {
                e.position
                    .as_ref()
                    .is_some_and(|p| region.covers(p.latitude, p.longitude))
            })
            .collect();
        estimates.sort_by(|a, b| trip_id(a).cmp(trip_id(b)));
        estimates.truncate(limit);
        Ok(Response::new(ListTrainsInAreaResponse { estimates }))
    }

    async fn get_abuse_stats(
        &self,
        _request: Request<GetAbuseStatsRequest>,
    ) -> Result<Response<GetAbuseStatsResponse>, Status> {
        let since = self.rejects.since();
        let flagged =
            crate::flagged::lowest(&self.estimates.store, FLAGGED_DEVICES, REPUTATION_BUDGET)
                .await?;
        let trains = crate::flagged::recent_trains(
            &self.estimates.store,
            &self.estimates.layout,
            FLAGGED_TRAINS,
        )
        .await?;
        Ok(Response::new(GetAbuseStatsResponse {
            rejects: self
                .rejects
                .by_reason()
                .into_iter()
                .map(|(reason, count)| RejectCount {
                    reason: reason.to_owned(),
                    count,
                })
                .collect(),
            duplicates: self.rejects.duplicates(),
            since: Some(prost_types::Timestamp {
                seconds: since.timestamp(),
                nanos: since.timestamp_subsec_nanos() as i32,
            }),
            flagged_devices: flagged
                .devices
                .into_iter()
                .map(|f| FlaggedDevice {
                    device: f.device,
                    score: f.score,
                })
                .collect(),
            reputation_scanned: flagged.scanned,
            reputation_complete: flagged.complete,
            flagged_trains: trains
                .into_iter()
                .map(|t| FlaggedTrain {
                    trip: Some(TripRef {
                        trip_id: t.trip.trip_id,
                        start_date: t.trip.start_date,
                        route_id: String::new(),
                    }),
                    flags: t
                        .flags
                        .into_iter()
                        .map(|(reason, count)| FlagCount { reason, count })
                        .collect(),
                    last_flagged_at: Some(timestamp_from_ms(t.last_flagged_ms)),
                })
                .collect(),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crowd_proto::pb::v1::{GeoPoint, Polygon as PbPolygon, TripRef};

    fn bbox(min_lat: f64, min_lon: f64, max_lat: f64, max_lon: f64) -> ListTrainsInAreaRequest {
        ListTrainsInAreaRequest {
            area: Some(Area::Bbox(BoundingBox {
                min_latitude: min_lat,
                min_longitude: min_lon,
                max_latitude: max_lat,
                max_longitude: max_lon,
            })),
            limit: 0,
        }
    }

    fn polygon(points: &[(f64, f64)]) -> ListTrainsInAreaRequest {
        ListTrainsInAreaRequest {
            area: Some(Area::Polygon(PbPolygon {
                points: points
                    .iter()
                    .map(|&(latitude, longitude)| GeoPoint {
                        latitude,
                        longitude,
                        accuracy_m: 0.0,
                    })
                    .collect(),
            })),
            limit: 0,
        }
    }

    fn err(req: ListTrainsInAreaRequest) -> String {
        let status = area_args(&req).unwrap_err();
        assert_eq!(status.code(), tonic::Code::InvalidArgument);
        status.message().to_owned()
    }

    #[test]
    fn areas_are_validated_naming_the_field() {
        assert_eq!(
            err(bbox(49.0, 2.0, 48.0, 3.0)),
            "bbox.min_latitude: 49 > bbox.max_latitude 48"
        );
        assert_eq!(
            err(bbox(48.0, 3.0, 49.0, 2.0)),
            "bbox.min_longitude: 3 > bbox.max_longitude 2"
        );
        assert_eq!(
            err(bbox(-91.0, 2.0, 48.0, 3.0)),
            "bbox.min_latitude: -91 is not a latitude in [-90, 90]"
        );
        assert_eq!(
            err(bbox(48.0, 2.0, 49.0, 181.0)),
            "bbox.max_longitude: 181 is not a longitude in [-180, 180]"
        );
        assert_eq!(
            err(polygon(&[(48.0, 2.0), (49.0, 2.0), (48.0, 2.0)])),
            "polygon.points: 2 distinct points; a polygon needs at least 3"
        );
        assert_eq!(
            err(polygon(&[(48.0, 2.0), (95.0, 2.0), (48.0, 3.0)])),
            "polygon.points[1].latitude: 95 is not a latitude in [-90, 90]"
        );
        assert_eq!(
            err(ListTrainsInAreaRequest::default()),
            "area: missing; give bbox or polygon"
        );
        let mut big = bbox(48.0, 2.0, 49.0, 3.0);
        big.limit = MAX_AREA_LIMIT + 1;
        assert_eq!(err(big), "limit: 5001 > 5000");
    }

    #[test]
    fn regions_cover_their_inside_and_border() {
        let (rect, _) = area_args(&bbox(48.0, 2.0, 49.0, 3.0)).unwrap();
        assert!(rect.covers(48.5, 2.5));
        assert!(rect.covers(48.0, 2.0));
        assert!(!rect.covers(49.1, 2.5));
        let (tri, _) = area_args(&polygon(&[(48.0, 2.0), (49.0, 2.0), (48.0, 3.0)])).unwrap();
        assert!(tri.covers(48.2, 2.2));
        assert!(tri.covers(48.0, 2.5));
        assert!(!tri.covers(48.9, 2.9));
        assert_eq!(tri.lower_corner(), (48.0, 2.0));
        assert_eq!(tri.upper_corner(), (49.0, 3.0));
        assert_eq!(rect.upper_corner(), (49.0, 3.0));
    }

    #[test]
    fn without_a_schedule_trains_are_ordered_by_trip_id() {
        let est = |id: &str| OccupancyEstimate {
            trip: Some(TripRef {
                trip_id: id.into(),
                start_date: "20261126".into(),
                route_id: "B".into(),
            }),
            ..Default::default()
        };
        let trains = order_along(None, "B", vec![est("B-2"), est("B-10"), est("B-1")]);
        let ids: Vec<_> = trains
            .iter()
            .map(|t| trip_id(t.estimate.as_ref().unwrap()))
            .collect();
        assert_eq!(ids, ["B-1", "B-10", "B-2"]);
        assert!(trains.iter().all(|t| t.progress.is_none()));
    }
}
