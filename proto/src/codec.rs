//! Encoding of what travels through Redis: report stream entries and
//! published estimates, both as protobuf (compact, versioned by field numbers).

use chrono::{DateTime, Utc};
use prost::Message;

use crate::domain::Report;
use crate::pb::store::{Position as StoredPosition, StoredReport};
use crate::pb::v1::OccupancyEstimate;

/// A stored record that could not be decoded.
#[derive(Debug, thiserror::Error)]
#[error("undecodable {what}: {source}")]
pub struct DecodeError {
    what: &'static str,
    #[source]
    source: prost::DecodeError,
}

/// The stream entry of an accepted report, stamped with its arrival time.
pub fn report_to_stored(report: &Report, received_at: DateTime<Utc>) -> StoredReport {
    StoredReport {
        report_id: report.report_id.clone(),
        device: report.device,
        trip_id: report.trip.trip_id.clone(),
        start_date: report.trip.start_date.clone(),
        route_id: report.route_id.clone(),
        carriage_sequence: report.carriage_sequence,
        level: report.level.number() as u32,
        occupancy_percentage: report.occupancy_percentage,
        observed_at_ms: report.observed_at.timestamp_millis(),
        received_at_ms: received_at.timestamp_millis(),
        position: report.position.map(|p| StoredPosition {
            latitude: coarse(p.latitude),
            longitude: coarse(p.longitude),
            accuracy_m: p.accuracy_m,
        }),
        stop_id: report.stop_id.clone(),
    }
}

/// Decimal places kept of stored coordinates: 1e-4° is about 11 m, plenty
/// to place a train on its line, too coarse to pinpoint a rider.
const COORDINATE_SCALE: f64 = 1e4;

/// A coordinate rounded to [`COORDINATE_SCALE`] before it is stored.
fn coarse(degrees: f64) -> f64 {
    (degrees * COORDINATE_SCALE).round() / COORDINATE_SCALE
}

/// Encodes a report for the `r` field of a stream entry.
pub fn encode_report(report: &Report, received_at: DateTime<Utc>) -> Vec<u8> {
    report_to_stored(report, received_at).encode_to_vec()
}

pub fn decode_report(bytes: &[u8]) -> Result<StoredReport, DecodeError> {
    StoredReport::decode(bytes).map_err(|source| DecodeError {
        what: "report entry",
        source,
    })
}

pub fn encode_estimate(estimate: &OccupancyEstimate) -> Vec<u8> {
    estimate.encode_to_vec()
}

pub fn decode_estimate(bytes: &[u8]) -> Result<OccupancyEstimate, DecodeError> {
    OccupancyEstimate::decode(bytes).map_err(|source| DecodeError {
        what: "estimate",
        source,
    })
}

/// A protobuf timestamp from milliseconds since the epoch.
pub fn timestamp_from_ms(ms: i64) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: ms.div_euclid(1000),
        nanos: (ms.rem_euclid(1000) * 1_000_000) as i32,
    }
}

/// Milliseconds since the epoch of a protobuf timestamp.
pub fn timestamp_to_ms(ts: &prost_types::Timestamp) -> i64 {
    ts.seconds
        .saturating_mul(1000)
        .saturating_add(i64::from(ts.nanos / 1_000_000))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{Position, TripKey};
    use crate::level::Level;

    #[test]
    fn report_round_trips_through_an_entry() {
        let report = Report {
            report_id: "r1".into(),
            device: 42,
            trip: TripKey {
                trip_id: "T1".into(),
                start_date: "20261126".into(),
            },
            route_id: "B".into(),
            carriage_sequence: 2,
            level: Level::Full,
            occupancy_percentage: Some(140),
            observed_at: DateTime::from_timestamp_millis(1_795_000_000_123).unwrap(),
            position: Some(Position {
                latitude: 48.8,
                longitude: 2.3,
                accuracy_m: 5.0,
            }),
            stop_id: "S".into(),
        };
        let received = DateTime::from_timestamp_millis(1_795_000_000_500).unwrap();
        let stored = decode_report(&encode_report(&report, received)).unwrap();
        assert_eq!(stored, report_to_stored(&report, received));
        assert_eq!(stored.observed_at_ms, 1_795_000_000_123);
        assert_eq!(stored.level, 6);
    }

    #[test]
    fn positions_are_stored_rounded_to_about_11_m() {
        let mut report = Report {
            report_id: "r1".into(),
            device: 1,
            trip: TripKey {
                trip_id: "T1".into(),
                start_date: "20261126".into(),
            },
            route_id: String::new(),
            carriage_sequence: 0,
            level: Level::Full,
            occupancy_percentage: None,
            observed_at: DateTime::from_timestamp_millis(1_795_000_000_000).unwrap(),
            position: Some(Position {
                latitude: 48.856_613_7,
                longitude: -2.352_249_9,
                accuracy_m: 4.0,
            }),
            stop_id: String::new(),
        };
        let stored = report_to_stored(&report, report.observed_at);
        let p = stored.position.unwrap();
        assert_eq!((p.latitude, p.longitude), (48.8566, -2.3522));
        report.position = Some(Position {
            latitude: 48.85,
            longitude: 2.35,
            accuracy_m: 4.0,
        });
        let p = report_to_stored(&report, report.observed_at)
            .position
            .unwrap();
        assert_eq!((p.latitude, p.longitude), (48.85, 2.35), "already coarse");
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        assert!(decode_report(&[0xff, 0xff, 0xff]).is_err());
        assert!(decode_estimate(&[0x0a, 0x05]).is_err());
    }

    #[test]
    fn timestamps_round_trip_including_negative() {
        for ms in [0, 1, 999, 1_795_000_000_123, -1, -1001] {
            assert_eq!(timestamp_to_ms(&timestamp_from_ms(ms)), ms);
        }
    }
}
