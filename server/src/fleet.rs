//! How many cars the trains of each route have, as configured by the
//! operator (`--cars-per-route B=8,C=6`).
//!
//! The GTFS-Realtime feed lists every car 1..n of a train, saying
//! NO_DATA_AVAILABLE for the cars nobody reported on; without this
//! configuration it can only list up to the highest car someone reported on.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

/// Most cars a route may be configured with.
pub const MAX_CARS: u32 = 64;

/// Car counts by route id.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CarsPerRoute(BTreeMap<String, u32>);

/// Why a `--cars-per-route` value was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CarsPerRouteError {
    /// An item is not `ROUTE=CARS`.
    #[error("`{0}`: expected ROUTE=CARS, e.g. B=8")]
    Shape(String),
    /// The car count is not a number in 1..=MAX_CARS.
    #[error("`{item}`: car count must be a whole number from 1 to {MAX_CARS}")]
    Count { item: String },
    /// The same route is given twice.
    #[error("route `{0}` is given twice")]
    Repeated(String),
}

impl CarsPerRoute {
    /// The configured number of cars of `route_id`, if any.
    pub fn of(&self, route_id: &str) -> Option<u32> {
        self.0.get(route_id).copied()
    }

    /// Whether no route is configured.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Every configured route with its car count.
    pub fn iter(&self) -> impl Iterator<Item = (&str, u32)> {
        self.0.iter().map(|(r, &n)| (r.as_str(), n))
    }
}

impl FromStr for CarsPerRoute {
    type Err = CarsPerRouteError;

    /// Parses `B=8,C=6`; the empty string means no route.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let mut routes = BTreeMap::new();
        for item in s.split(',').map(str::trim).filter(|i| !i.is_empty()) {
            let (route, cars) = item
                .split_once('=')
                .map(|(r, c)| (r.trim(), c.trim()))
                .filter(|(r, _)| !r.is_empty())
                .ok_or_else(|| CarsPerRouteError::Shape(item.to_owned()))?;
            let cars: u32 = cars
                .parse()
                .ok()
                .filter(|n| (1..=MAX_CARS).contains(n))
                .ok_or_else(|| CarsPerRouteError::Count {
                    item: item.to_owned(),
                })?;
            if routes.insert(route.to_owned(), cars).is_some() {
                return Err(CarsPerRouteError::Repeated(route.to_owned()));
            }
        }
        Ok(CarsPerRoute(routes))
    }
}

impl fmt::Display for CarsPerRoute {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let items: Vec<String> = self.iter().map(|(r, n)| format!("{r}={n}")).collect();
        f.write_str(&items.join(","))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_routes_and_round_trips() {
        let c: CarsPerRoute = "B=8, C=6".parse().unwrap();
        assert_eq!(c.of("B"), Some(8));
        assert_eq!(c.of("C"), Some(6));
        assert_eq!(c.of("D"), None);
        assert_eq!(c.to_string(), "B=8,C=6");
        assert!("".parse::<CarsPerRoute>().unwrap().is_empty());
    }

    #[test]
    fn bad_values_say_what_is_wrong() {
        let err = |s: &str| s.parse::<CarsPerRoute>().unwrap_err().to_string();
        assert_eq!(err("B"), "`B`: expected ROUTE=CARS, e.g. B=8");
        assert_eq!(err("=8"), "`=8`: expected ROUTE=CARS, e.g. B=8");
        assert_eq!(
            err("B=0"),
            "`B=0`: car count must be a whole number from 1 to 64"
        );
        assert_eq!(
            err("B=x"),
            "`B=x`: car count must be a whole number from 1 to 64"
        );
        assert_eq!(err("B=8,B=6"), "route `B` is given twice");
    }
}
