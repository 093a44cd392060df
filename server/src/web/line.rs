//! The shape of a route as the page draws it: its stations in running order.
//!
//! Filled from a loaded schedule when there is one; without it the page
//! falls back to a list of trains, so an empty [`Lines`] is valid.

use std::collections::BTreeMap;

use serde::Serialize;

/// One station of a route.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Station {
    /// GTFS `stop_id`.
    pub id: String,
    /// Name shown to riders.
    pub name: String,
    /// Where it is, to place trains between stations by their position.
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

    /// The stations of `route_id`, if a schedule describes it.
    pub fn get(&self, route_id: &str) -> Option<&RouteLine> {
        self.0.get(route_id)
    }

    /// Every described route id.
    pub fn route_ids(&self) -> impl Iterator<Item = &str> {
        self.0.keys().map(String::as_str)
    }
}
