//! The operator's static timetable (GTFS, `--gtfs PATH`, a zip or a folder):
//! routes with their names, each route's stops in order with coordinates,
//! and which route every trip runs on.
//!
//! With it the server can refuse reports for trips that do not exist
//! (`--gtfs-strict`), name routes in operator views, and order a route's
//! trains by how far along the route they are.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// A stop of a route, in timetable order.
#[derive(Debug, Clone, PartialEq)]
pub struct RouteStop {
    pub stop_id: String,
    pub name: String,
    pub latitude: f64,
    pub longitude: f64,
}

/// One route of the schedule.
#[derive(Debug, Clone, PartialEq)]
pub struct Route {
    /// Long name, else short name, else the id: what operator views show.
    pub name: String,
    /// The stops of the route's longest trip in direction 0, in order: the
    /// line along which trains are ordered.
    pub stops: Vec<RouteStop>,
}

/// Where a train is along its route.
#[derive(Debug, Clone, PartialEq)]
pub struct Progress {
    /// 0 at the first stop, 1 at the last.
    pub fraction: f64,
    /// The route's stop nearest to the train.
    pub nearest_stop_id: String,
}

/// The loaded schedule.
#[derive(Debug, Clone, Default)]
pub struct Schedule {
    /// Routes by route_id.
    routes: HashMap<String, Route>,
    /// route_id of every trip, by trip_id.
    trips: HashMap<String, String>,
    /// Where it was read from, for messages.
    source: PathBuf,
}

/// Why a GTFS feed could not be loaded.
#[derive(Debug, thiserror::Error)]
#[error("GTFS feed {path}: {message}")]
pub struct ScheduleError {
    /// The zip or folder given.
    pub path: PathBuf,
    /// What is wrong, naming the file and line when known.
    pub message: String,
}

impl Schedule {
    /// Reads a GTFS zip or folder.
    pub fn load(path: &Path) -> Result<Schedule, ScheduleError> {
        let fail = |message: String| ScheduleError {
            path: path.to_owned(),
            message,
        };
        if !path.exists() {
            return Err(fail("no such file or folder".into()));
        }
        let gtfs = gtfs_structures::GtfsReader::default()
            .read_shapes(false)
            .read_from_path(path)
            .map_err(|e| fail(describe(&e)))?;
        let mut schedule = Schedule {
            source: path.to_owned(),
            ..Schedule::default()
        };
        for (id, trip) in &gtfs.trips {
            schedule.trips.insert(id.clone(), trip.route_id.clone());
        }
        for (id, route) in &gtfs.routes {
            let name = route
                .long_name
                .clone()
                .filter(|n| !n.is_empty())
                .or_else(|| route.short_name.clone().filter(|n| !n.is_empty()))
                .unwrap_or_else(|| id.clone());
            // The longest trip of direction 0 (or any direction) traces the route.
            let longest = gtfs
                .trips
                .values()
                .filter(|t| &t.route_id == id)
                .max_by_key(|t| {
                    let outbound = !matches!(
                        t.direction_id,
                        Some(gtfs_structures::DirectionType::Inbound)
                    );
                    (
                        outbound,
                        t.stop_times.len(),
                        std::cmp::Reverse(t.id.clone()),
                    )
                });
            let stops = longest
                .map(|trip| {
                    trip.stop_times
                        .iter()
                        .filter_map(|st| {
                            Some(RouteStop {
                                stop_id: st.stop.id.clone(),
                                name: st.stop.name.clone().unwrap_or_else(|| st.stop.id.clone()),
                                latitude: st.stop.latitude?,
                                longitude: st.stop.longitude?,
                            })
                        })
                        .collect()
                })
                .unwrap_or_default();
            schedule.routes.insert(id.clone(), Route { name, stops });
        }
        Ok(schedule)
    }

    /// A schedule built in memory, for tests and tools.
    pub fn from_parts(routes: HashMap<String, Route>, trips: HashMap<String, String>) -> Schedule {
        Schedule {
            routes,
            trips,
            source: PathBuf::from("<memory>"),
        }
    }

    /// Where the schedule was read from.
    pub fn source(&self) -> &Path {
        &self.source
    }

    /// The route of `route_id`.
    pub fn route(&self, route_id: &str) -> Option<&Route> {
        self.routes.get(route_id)
    }

    /// Every route with its id, in no particular order.
    pub fn routes(&self) -> impl Iterator<Item = (&str, &Route)> {
        self.routes.iter().map(|(id, route)| (id.as_str(), route))
    }

    /// The route a trip runs on, when the trip is in the schedule.
    pub fn route_of(&self, trip_id: &str) -> Option<&str> {
        self.trips.get(trip_id).map(String::as_str)
    }

    /// Number of routes and of trips.
    pub fn size(&self) -> (usize, usize) {
        (self.routes.len(), self.trips.len())
    }

    /// How far along `route_id` a train at (`latitude`, `longitude`) is: its
    /// projection on the line through the route's stops.
    pub fn progress(&self, route_id: &str, latitude: f64, longitude: f64) -> Option<Progress> {
        let stops = &self.routes.get(route_id)?.stops;
        let nearest = stops.iter().min_by(|a, b| {
            let da = planar_distance(latitude, longitude, a.latitude, a.longitude);
            let db = planar_distance(latitude, longitude, b.latitude, b.longitude);
            da.total_cmp(&db)
        })?;
        let points: Vec<(f64, f64)> = stops
            .iter()
            .map(|s| local_xy(s.latitude, s.longitude, latitude))
            .collect();
        let fraction = fraction_along(&points, local_xy(latitude, longitude, latitude));
        Some(Progress {
            fraction,
            nearest_stop_id: nearest.stop_id.clone(),
        })
    }
}

/// What the GTFS crate reported, with the file and line when it says them.
fn describe(error: &gtfs_structures::Error) -> String {
    use gtfs_structures::Error;
    match error {
        Error::CSVError {
            file_name,
            source,
            line_in_error,
        } => {
            let mut message = file_name.clone();
            if let Some(position) = source.position() {
                message.push_str(&format!(" line {}", position.line()));
            }
            message.push_str(&format!(": {source}"));
            if let Some(line) = line_in_error {
                message.push_str(&format!(
                    " (columns {:?}, values {:?})",
                    line.headers, line.values
                ));
            }
            message
        }
        Error::NamedFileIO { file_name, source } => format!("{file_name}: {source}"),
        Error::MissingFile(file) => format!("{file} is missing"),
        other => other.to_string(),
    }
}

/// Metres east and north of the origin meridian at the latitude `at`
/// (equirectangular: exact enough along a city's lines).
fn local_xy(latitude: f64, longitude: f64, at: f64) -> (f64, f64) {
    const METRES_PER_DEGREE: f64 = 111_320.0;
    (
        longitude * METRES_PER_DEGREE * at.to_radians().cos(),
        latitude * METRES_PER_DEGREE,
    )
}

fn planar_distance(lat_a: f64, lon_a: f64, lat_b: f64, lon_b: f64) -> f64 {
    let (xa, ya) = local_xy(lat_a, lon_a, lat_a);
    let (xb, yb) = local_xy(lat_b, lon_b, lat_a);
    (xa - xb).hypot(ya - yb)
}

/// The fraction of the polyline's length before the point of the polyline
/// nearest to `p`; 0 for a polyline of one point.
fn fraction_along(points: &[(f64, f64)], p: (f64, f64)) -> f64 {
    let lengths: Vec<f64> = points
        .windows(2)
        .map(|w| (w[1].0 - w[0].0).hypot(w[1].1 - w[0].1))
        .collect();
    let total: f64 = lengths.iter().sum();
    if total <= 0.0 {
        return 0.0;
    }
    let mut best = (f64::INFINITY, 0.0);
    let mut before = 0.0;
    for (w, len) in points.windows(2).zip(&lengths) {
        let (a, b) = (w[0], w[1]);
        let t = if *len > 0.0 {
            (((p.0 - a.0) * (b.0 - a.0) + (p.1 - a.1) * (b.1 - a.1)) / (len * len)).clamp(0.0, 1.0)
        } else {
            0.0
        };
        let q = (a.0 + t * (b.0 - a.0), a.1 + t * (b.1 - a.1));
        let d = (p.0 - q.0).hypot(p.1 - q.1);
        if d < best.0 {
            best = (d, before + t * len);
        }
        before += len;
    }
    best.1 / total
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stop(id: &str, lat: f64, lon: f64) -> RouteStop {
        RouteStop {
            stop_id: id.into(),
            name: id.into(),
            latitude: lat,
            longitude: lon,
        }
    }

    fn schedule() -> Schedule {
        let routes = HashMap::from([(
            "B".to_owned(),
            Route {
                name: "Line B".into(),
                stops: vec![
                    stop("S", 48.70, 2.30),
                    stop("M", 48.80, 2.30),
                    stop("N", 48.90, 2.30),
                ],
            },
        )]);
        let trips = HashMap::from([("B-1".to_owned(), "B".to_owned())]);
        Schedule::from_parts(routes, trips)
    }

    #[test]
    fn progress_follows_the_stops_in_order() {
        let s = schedule();
        let at = |lat| s.progress("B", lat, 2.301).unwrap();
        assert!(at(48.70).fraction < 0.01);
        assert!((at(48.75).fraction - 0.25).abs() < 0.01);
        assert!((at(48.85).fraction - 0.75).abs() < 0.01);
        assert!(at(49.5).fraction > 0.99);
        assert_eq!(at(48.79).nearest_stop_id, "M");
        assert!(s.progress("Z", 48.8, 2.3).is_none());
        assert_eq!(s.route_of("B-1"), Some("B"));
        assert_eq!(s.route_of("nope"), None);
    }

    #[test]
    fn a_missing_feed_is_named_in_the_error() {
        let err = Schedule::load(Path::new("/no/such/gtfs.zip")).unwrap_err();
        assert_eq!(
            err.to_string(),
            "GTFS feed /no/such/gtfs.zip: no such file or folder"
        );
    }

    #[test]
    fn a_malformed_file_is_named_with_its_line() {
        let dir = std::env::temp_dir().join(format!("crowd-gtfs-bad-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let files = [
            (
                "agency.txt",
                "agency_id,agency_name,agency_url,agency_timezone\nA,Agency,https://example.org,Europe/Paris\n",
            ),
            (
                "routes.txt",
                "route_id,route_short_name,route_type\nB,B,2\n",
            ),
            (
                "stops.txt",
                "stop_id,stop_name,stop_lat,stop_lon\nS1,One,48.8,2.3\nS2,Two,not-a-number,2.4\n",
            ),
            ("trips.txt", "route_id,service_id,trip_id\nB,D,T1\n"),
            (
                "stop_times.txt",
                "trip_id,arrival_time,departure_time,stop_id,stop_sequence\nT1,08:00:00,08:00:00,S1,1\n",
            ),
            (
                "calendar.txt",
                "service_id,monday,tuesday,wednesday,thursday,friday,saturday,sunday,start_date,end_date\nD,1,1,1,1,1,1,1,20260101,20271231\n",
            ),
        ];
        for (name, text) in files {
            std::fs::write(dir.join(name), text).unwrap();
        }
        let err = Schedule::load(&dir).unwrap_err().to_string();
        std::fs::remove_dir_all(&dir).unwrap();
        assert!(err.contains("stops.txt line 3"), "{err}");
    }
}
