//! The shape of a route as the page draws it: its stations in running order.
//!
//! Filled from the GTFS schedule (`--gtfs`) when there is one; without it
//! the page falls back to a list of trains, so an empty [`Lines`] is valid.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::schedule::Schedule;

/// One station of a route.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Station {
    /// GTFS `stop_id`.
    pub id: String,
    /// Name shown to riders.
    pub name: String,
    /// Where it is (WGS84 degrees), to place trains by their position.
    pub lat: f64,
    pub lon: f64,
}

/// A route with its stations from one end to the other.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RouteLine {
    /// GTFS `route_id`.
    pub route_id: String,
    /// Name shown to riders, e.g. "Line B".
    pub name: String,
    /// Stations in running order of one direction.
    pub stations: Vec<Station>,
}

/// Every described route, by route id.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Lines(BTreeMap<String, RouteLine>);

impl Lines {
    /// The routes, keyed by their id (a later duplicate replaces an earlier one).
    pub fn new(lines: impl IntoIterator<Item = RouteLine>) -> Lines {
        Lines(lines.into_iter().map(|l| (l.route_id.clone(), l)).collect())
    }

    /// Every route of `schedule` with its stops in order; routes without
    /// located stops are left out (there is no line to draw).
    pub fn from_schedule(schedule: &Schedule) -> Lines {
        Lines::new(
            schedule
                .routes()
                .filter(|(_, route)| !route.stops.is_empty())
                .map(|(id, route)| RouteLine {
                    route_id: id.to_owned(),
                    name: route.name.clone(),
                    stations: route
                        .stops
                        .iter()
                        .map(|s| Station {
                            id: s.stop_id.clone(),
                            name: s.name.clone(),
                            lat: s.latitude,
                            lon: s.longitude,
                        })
                        .collect(),
                }),
        )
    }

    /// The stations of `route_id`, if a schedule describes it.
    pub fn get(&self, route_id: &str) -> Option<&RouteLine> {
        self.0.get(route_id)
    }

    /// Every described route id.
    pub fn route_ids(&self) -> impl Iterator<Item = &str> {
        self.0.keys().map(String::as_str)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;
    use crate::schedule::{Route, RouteStop};

    fn stop(id: &str, latitude: f64) -> RouteStop {
        RouteStop {
            stop_id: id.into(),
            name: format!("Station {id}"),
            latitude,
            longitude: 2.3,
        }
    }

    #[test]
    fn a_schedule_gives_each_route_its_stations_in_order() {
        let routes = HashMap::from([
            (
                "B".to_owned(),
                Route {
                    name: "Line B".into(),
                    stops: vec![stop("S1", 48.7), stop("S2", 48.8), stop("S3", 48.9)],
                },
            ),
            (
                "X".to_owned(),
                Route {
                    name: "X".into(),
                    stops: vec![],
                },
            ),
        ]);
        let lines = Lines::from_schedule(&Schedule::from_parts(routes, HashMap::new()));
        assert_eq!(lines.route_ids().collect::<Vec<_>>(), ["B"]);
        let b = lines.get("B").unwrap();
        assert_eq!(b.name, "Line B");
        let ids: Vec<&str> = b.stations.iter().map(|s| s.id.as_str()).collect();
        assert_eq!(ids, ["S1", "S2", "S3"]);
        assert_eq!(b.stations[1].name, "Station S2");
        assert_eq!(b.stations[1].lat, 48.8);
    }
}
