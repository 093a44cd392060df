//! The GTFS-Realtime VehiclePositions feed built from published estimates.
//!
//! One `VehiclePosition` entity per train that has an estimate: its trip
//! descriptor, last known position, `occupancy_status` (our level − 1, since
//! the crowd.v1 enum adds an UNSPECIFIED zero), `occupancy_percentage`, and
//! `multi_carriage_details` listing every car 1..n without gaps. Cars nobody
//! reported on say `NO_DATA_AVAILABLE` and percentage -1, as the
//! specification requires, so consumers can tell "empty" from "unknown".
//!
//! Pure: estimates and the clock in, a `FeedMessage` out.

use chrono::{DateTime, Utc};
use crowd_proto::level::Level;
use crowd_proto::pb::gtfs_rt::{
    FeedEntity, FeedHeader, FeedMessage, Position, TripDescriptor, VehicleDescriptor,
    VehiclePosition, feed_header::Incrementality, vehicle_position::CarriageDetails,
    vehicle_position::OccupancyStatus,
};
use crowd_proto::pb::v1::OccupancyEstimate;

/// Builds a full-dataset feed. `cars_of(route_id)` gives the configured number
/// of cars of a route when known; otherwise the highest car anyone reported on
/// bounds the list.
pub fn vehicle_positions(
    estimates: &[OccupancyEstimate],
    cars_of: impl Fn(&str) -> Option<u32>,
    now: DateTime<Utc>,
) -> FeedMessage {
    FeedMessage {
        header: FeedHeader {
            gtfs_realtime_version: "2.0".to_owned(),
            incrementality: Some(Incrementality::FullDataset as i32),
            timestamp: Some(now.timestamp().max(0) as u64),
            feed_version: None,
        },
        entity: estimates
            .iter()
            .filter_map(|e| entity(e, &cars_of))
            .collect(),
    }
}

fn entity(
    estimate: &OccupancyEstimate,
    cars_of: &impl Fn(&str) -> Option<u32>,
) -> Option<FeedEntity> {
    let trip = estimate.trip.as_ref()?;
    let level = Level::from_number(estimate.level)?;
    let id = format!("{}:{}", trip.start_date, trip.trip_id);
    let timestamp = estimate
        .updated_at
        .as_ref()
        .map(|t| t.seconds.max(0) as u64);
    let position = estimate.position.as_ref().map(|p| Position {
        latitude: p.latitude as f32,
        longitude: p.longitude as f32,
        ..Default::default()
    });
    let reported_max = estimate
        .cars
        .iter()
        .map(|c| c.carriage_sequence)
        .max()
        .unwrap_or(0);
    let car_count = cars_of(&trip.route_id).unwrap_or(0).max(reported_max);
    let cars = (1..=car_count)
        .map(|seq| {
            let car = estimate.cars.iter().find(|c| c.carriage_sequence == seq);
            let known = car.and_then(|c| Level::from_number(c.level).map(|l| (c, l)));
            CarriageDetails {
                id: None,
                label: None,
                carriage_sequence: Some(seq),
                occupancy_status: Some(match known {
                    Some((_, level)) => level.gtfs_rt_status(),
                    None => OccupancyStatus::NoDataAvailable as i32,
                }),
                occupancy_percentage: Some(match known {
                    Some((car, _)) => car.occupancy_percentage as i32,
                    None => -1,
                }),
            }
        })
        .collect();
    Some(FeedEntity {
        id: id.clone(),
        vehicle: Some(VehiclePosition {
            trip: Some(TripDescriptor {
                trip_id: Some(trip.trip_id.clone()),
                start_date: Some(trip.start_date.clone()),
                route_id: (!trip.route_id.is_empty()).then(|| trip.route_id.clone()),
                ..Default::default()
            }),
            vehicle: Some(VehicleDescriptor {
                id: Some(id),
                ..Default::default()
            }),
            position,
            timestamp,
            occupancy_status: Some(level.gtfs_rt_status()),
            occupancy_percentage: Some(estimate.occupancy_percentage),
            multi_carriage_details: cars,
            ..Default::default()
        }),
        ..Default::default()
    })
}

/// A readable JSON rendering of the feed (`?format=json`), with enum names
/// as in the specification.
pub fn to_json(feed: &FeedMessage) -> serde_json::Value {
    use serde_json::json;
    let status_name = |s: Option<i32>| {
        s.and_then(|s| OccupancyStatus::try_from(s).ok())
            .map(|s| s.as_str_name())
    };
    let entities: Vec<_> = feed
        .entity
        .iter()
        .filter_map(|e| {
            let v = e.vehicle.as_ref()?;
            let trip = v.trip.as_ref();
            Some(json!({
                "id": e.id,
                "vehicle": {
                    "trip": {
                        "trip_id": trip.and_then(|t| t.trip_id.clone()),
                        "start_date": trip.and_then(|t| t.start_date.clone()),
                        "route_id": trip.and_then(|t| t.route_id.clone()),
                    },
                    "position": v.position.as_ref().map(|p| json!({
                        "latitude": p.latitude, "longitude": p.longitude,
                    })),
                    "timestamp": v.timestamp,
                    "occupancy_status": status_name(v.occupancy_status),
                    "occupancy_percentage": v.occupancy_percentage,
                    "multi_carriage_details": v.multi_carriage_details.iter().map(|c| json!({
                        "carriage_sequence": c.carriage_sequence,
                        "occupancy_status": status_name(c.occupancy_status),
                        "occupancy_percentage": c.occupancy_percentage,
                    })).collect::<Vec<_>>(),
                }
            }))
        })
        .collect();
    json!({
        "header": {
            "gtfs_realtime_version": feed.header.gtfs_realtime_version,
            "incrementality": "FULL_DATASET",
            "timestamp": feed.header.timestamp,
        },
        "entity": entities,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crowd_proto::pb::v1::{CarEstimate, CrowdingLevel, GeoPoint, TripRef};

    fn estimate() -> OccupancyEstimate {
        OccupancyEstimate {
            trip: Some(TripRef {
                trip_id: "T1".into(),
                start_date: "20261126".into(),
                route_id: "B".into(),
            }),
            level: CrowdingLevel::StandingRoomOnly as i32,
            occupancy_percentage: 85,
            confidence: 0.7,
            reporters: 3,
            updated_at: Some(prost_types::Timestamp {
                seconds: 1_800_000_000,
                nanos: 0,
            }),
            cars: vec![CarEstimate {
                carriage_sequence: 2,
                level: CrowdingLevel::Full as i32,
                occupancy_percentage: 140,
                confidence: 0.5,
                reporters: 2,
                newest_report_at: None,
            }],
            position: Some(GeoPoint {
                latitude: 48.85,
                longitude: 2.35,
                accuracy_m: 10.0,
            }),
            ..Default::default()
        }
    }

    #[test]
    fn every_car_is_listed_and_unknown_cars_say_no_data() {
        let now = DateTime::from_timestamp(1_800_000_100, 0).unwrap();
        let feed = vehicle_positions(&[estimate()], |route| (route == "B").then_some(4), now);
        assert_eq!(feed.header.gtfs_realtime_version, "2.0");
        assert_eq!(
            feed.header.incrementality,
            Some(Incrementality::FullDataset as i32)
        );
        assert_eq!(feed.header.timestamp, Some(1_800_000_100));
        let v = feed.entity[0].vehicle.as_ref().unwrap();
        assert_eq!(
            v.occupancy_status,
            Some(OccupancyStatus::StandingRoomOnly as i32)
        );
        assert_eq!(v.occupancy_percentage, Some(85));
        let cars: Vec<_> = v
            .multi_carriage_details
            .iter()
            .map(|c| {
                (
                    c.carriage_sequence.unwrap(),
                    c.occupancy_status.unwrap(),
                    c.occupancy_percentage.unwrap(),
                )
            })
            .collect();
        let no_data = OccupancyStatus::NoDataAvailable as i32;
        assert_eq!(
            cars,
            vec![
                (1, no_data, -1),
                (2, OccupancyStatus::Full as i32, 140),
                (3, no_data, -1),
                (4, no_data, -1)
            ]
        );
    }

    #[test]
    fn without_configuration_the_highest_reported_car_bounds_the_list() {
        let now = DateTime::from_timestamp(1_800_000_100, 0).unwrap();
        let feed = vehicle_positions(&[estimate()], |_| None, now);
        assert_eq!(
            feed.entity[0]
                .vehicle
                .as_ref()
                .unwrap()
                .multi_carriage_details
                .len(),
            2
        );
        let json = to_json(&feed);
        assert_eq!(
            json["entity"][0]["vehicle"]["occupancy_status"],
            "STANDING_ROOM_ONLY"
        );
        assert_eq!(
            json["entity"][0]["vehicle"]["multi_carriage_details"][0]["occupancy_status"],
            "NO_DATA_AVAILABLE"
        );
    }
}
