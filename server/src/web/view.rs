//! One train as the page sees it: the fields of an `OccupancyEstimate` in
//! plain JSON, with the level's label and the report ages already worked out
//! (ages in seconds at rendering time, so a browser with a wrong clock still
//! shows the right age).

use chrono::{DateTime, Utc};
use serde::Serialize;

use crowd_proto::codec::timestamp_to_ms;
use crowd_proto::level::Level;
use crowd_proto::pb::v1::{CarEstimate, OccupancyEstimate, UsualComparison};

/// Label of an estimate whose level is unspecified.
const NO_DATA: &str = "no data";

/// A train's estimate, as JSON.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TrainView {
    /// The run, as GTFS-RT names it: `trip_id` + `start_date` (YYYYMMDD).
    pub trip_id: String,
    pub start_date: String,
    /// Which line to draw it on.
    pub route_id: String,
    /// 1 (empty) ..= 7 (not accepting passengers); 0 without data.
    pub level: i32,
    /// Short text of the level, so colour is never the only cue.
    pub label: &'static str,
    /// Occupancy in % of nominal capacity (above 100 at crush load).
    pub percentage: u32,
    /// 0..1: how far to trust the estimate.
    pub confidence: f32,
    /// Distinct riders whose reports count.
    pub reporters: u32,
    /// Seconds since the newest report counted here was observed.
    pub age_s: Option<i64>,
    /// Last known position.
    pub position: Option<PositionView>,
    /// Cars someone reported on, front to back.
    pub cars: Vec<CarView>,
    /// Cars of the train when the route's length is configured.
    pub car_count: Option<u32>,
    /// "busier than usual", "quieter than usual", "as usual", or `None`
    /// while the route has too little history at this hour.
    pub usual: Option<&'static str>,
}

/// A position, as JSON.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PositionView {
    /// WGS84 degrees.
    pub lat: f64,
    pub lon: f64,
}

/// One car's estimate, as JSON.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CarView {
    /// 1..n in the direction of travel.
    pub car: u32,
    /// As for the train: level 0..=7, its label, percentage, confidence,
    /// riders and age of the newest report on this car.
    pub level: i32,
    pub label: &'static str,
    pub percentage: u32,
    pub confidence: f32,
    pub reporters: u32,
    pub age_s: Option<i64>,
}

fn label(level: i32) -> &'static str {
    Level::from_number(level).map_or(NO_DATA, Level::label)
}

fn age(newest: Option<&prost_types::Timestamp>, now: DateTime<Utc>) -> Option<i64> {
    newest.map(|t| ((now.timestamp_millis() - timestamp_to_ms(t)) / 1000).max(0))
}

/// Renders `estimate` at `now`; `car_count` is the route's configured length.
/// `None` for an estimate without a trip (nothing to show it under).
pub fn train(
    estimate: &OccupancyEstimate,
    car_count: Option<u32>,
    now: DateTime<Utc>,
) -> Option<TrainView> {
    let trip = estimate.trip.as_ref()?;
    let mut cars: Vec<CarView> = estimate.cars.iter().map(|c| car(c, now)).collect();
    cars.sort_by_key(|c| c.car);
    Some(TrainView {
        trip_id: trip.trip_id.clone(),
        start_date: trip.start_date.clone(),
        route_id: trip.route_id.clone(),
        level: estimate.level,
        label: label(estimate.level),
        percentage: estimate.occupancy_percentage,
        confidence: estimate.confidence,
        reporters: estimate.reporters,
        age_s: age(estimate.newest_report_at.as_ref(), now),
        position: estimate
            .position
            .as_ref()
            .filter(|p| p.latitude != 0.0 || p.longitude != 0.0)
            .map(|p| PositionView {
                lat: p.latitude,
                lon: p.longitude,
            }),
        cars,
        car_count,
        usual: usual(estimate.usual_comparison()),
    })
}

fn usual(comparison: UsualComparison) -> Option<&'static str> {
    match comparison {
        UsualComparison::Unspecified => None,
        UsualComparison::Usual => Some("as usual"),
        UsualComparison::Busier => Some("busier than usual"),
        UsualComparison::Quieter => Some("quieter than usual"),
    }
}

fn car(c: &CarEstimate, now: DateTime<Utc>) -> CarView {
    CarView {
        car: c.carriage_sequence,
        level: c.level,
        label: label(c.level),
        percentage: c.occupancy_percentage,
        confidence: c.confidence,
        reporters: c.reporters,
        age_s: age(c.newest_report_at.as_ref(), now),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crowd_proto::codec::timestamp_from_ms;
    use crowd_proto::pb::v1::{GeoPoint, TripRef};

    #[test]
    fn a_train_is_rendered_with_labels_ages_and_cars_front_to_back() {
        let now = DateTime::from_timestamp(1_800_000_000, 0).unwrap();
        let ms = now.timestamp_millis();
        let estimate = OccupancyEstimate {
            trip: Some(TripRef {
                trip_id: "B-0712".into(),
                start_date: "20261126".into(),
                route_id: "B".into(),
            }),
            level: 5,
            newest_report_at: Some(timestamp_from_ms(ms - 42_000)),
            position: Some(GeoPoint {
                latitude: 48.86,
                longitude: 2.35,
                accuracy_m: 10.0,
            }),
            cars: vec![
                CarEstimate {
                    carriage_sequence: 3,
                    level: 2,
                    ..Default::default()
                },
                CarEstimate {
                    carriage_sequence: 1,
                    level: 0,
                    newest_report_at: Some(timestamp_from_ms(ms + 5_000)),
                    ..Default::default()
                },
            ],
            ..Default::default()
        };
        let view = train(&estimate, Some(8), now).unwrap();
        assert_eq!(view.label, "crushed");
        assert_eq!(view.age_s, Some(42));
        assert_eq!(
            view.position,
            Some(PositionView {
                lat: 48.86,
                lon: 2.35
            })
        );
        assert_eq!(view.car_count, Some(8));
        assert_eq!(view.usual, None, "no history yet");
        let busier = OccupancyEstimate {
            usual_comparison: UsualComparison::Busier as i32,
            ..estimate.clone()
        };
        assert_eq!(
            train(&busier, None, now).unwrap().usual,
            Some("busier than usual")
        );
        let cars: Vec<(u32, &str, Option<i64>)> = view
            .cars
            .iter()
            .map(|c| (c.car, c.label, c.age_s))
            .collect();
        // A clock ahead of ours gives age 0, never a negative age.
        assert_eq!(cars, [(1, NO_DATA, Some(0)), (3, "many seats", None)]);

        let unplaced = OccupancyEstimate {
            position: Some(GeoPoint::default()),
            ..estimate.clone()
        };
        assert_eq!(train(&unplaced, None, now).unwrap().position, None);
        assert_eq!(train(&OccupancyEstimate::default(), None, now), None);
    }
}
