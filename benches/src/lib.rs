//! Shared fixtures for the crowd micro-benchmarks: realistic reports as they
//! arrive on the wire and as they are stored, and train states of the size a
//! busy train reaches, so every benchmark measures the same inputs.

use chrono::{DateTime, Utc};
use prost::Message;

use crowd_aggregator::estimator::{self, Params};
use crowd_proto::domain::{DeviceHasher, Report};
use crowd_proto::pb::store::{StoredReport, TrainState};
use crowd_proto::pb::v1::{CrowdingLevel, CrowdingReport, GeoPoint, TripRef};
use crowd_proto::validate::{Limits, validate_report};

/// The fixed "now" of every fixture (2026-11-19 ~07:46 UTC), so runs compare.
pub const NOW_MS: i64 = 1_795_000_000_000;

/// The fixtures' clock as a `DateTime`.
pub fn now() -> DateTime<Utc> {
    DateTime::from_timestamp_millis(NOW_MS).expect("fixed timestamp is valid")
}

/// The secret of the fixtures' device hasher.
pub fn devices() -> DeviceHasher {
    DeviceHasher::new("bench-secret")
}

/// A typical rider report as a phone sends it: every optional field set,
/// ids of the length real clients use.
pub fn wire_report(i: u64) -> CrowdingReport {
    CrowdingReport {
        report_id: format!("18c3f2a9b41-r{i:08}"),
        device_id: format!("device-{:06}", i % 5_000),
        trip: Some(TripRef {
            trip_id: format!("B-{:04}", i % 400),
            start_date: "20261119".into(),
            route_id: "B".into(),
        }),
        carriage_sequence: (i % 8) as u32 + 1,
        level: CrowdingLevel::StandingRoomOnly as i32,
        occupancy_percentage: Some(85),
        observed_at: Some(prost_types::Timestamp {
            seconds: NOW_MS / 1000 - 4,
            nanos: 250_000_000,
        }),
        position: Some(GeoPoint {
            latitude: 48.8566,
            longitude: 2.3522,
            accuracy_m: 12.0,
        }),
        stop_id: "StopPoint:87271007".into(),
    }
}

/// [`wire_report`] encoded as it arrives in a gRPC message.
pub fn wire_bytes(i: u64) -> Vec<u8> {
    wire_report(i).encode_to_vec()
}

/// [`wire_report`] after edge validation.
pub fn domain_report(i: u64) -> Report {
    validate_report(&wire_report(i), &Limits::default(), &devices(), now())
        .expect("the fixture report is valid")
}

/// [`wire_report`] as the aggregator reads it from the stream.
pub fn stored_report(i: u64) -> StoredReport {
    crowd_proto::codec::report_to_stored(&domain_report(i), now())
}

/// The bytes of the stream entry of [`wire_report`] (field `r`).
pub fn entry_bytes(i: u64) -> Vec<u8> {
    crowd_proto::codec::encode_report(&domain_report(i), now())
}

/// A train state built from `reports` reports by distinct devices on 8 cars,
/// spread over the last five minutes: what a busy train holds.
pub fn busy_train(train: u64, reports: u64) -> TrainState {
    let params = Params::default();
    let mut state = TrainState::default();
    for j in 0..reports {
        let mut r = stored_report(train + 400 * j);
        r.device = 0x9e37_79b9_7f4a_7c15_u64.wrapping_mul(j + 1);
        r.level = (j % 4) as u32 + 2;
        r.observed_at_ms = NOW_MS - (j as i64 * 6_000) % 300_000;
        estimator::apply(&mut state, &r, &params);
    }
    state
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fixtures_are_what_they_claim() {
        let state = busy_train(3, 50);
        assert_eq!(state.observations.len(), 50);
        assert_eq!(state.reports_counted, 50);
        let estimate = estimator::estimate(&state, NOW_MS, &Params::default(), &|_| 1.0);
        assert_eq!(estimate.map(|e| e.reporters), Some(50));
        let entry = entry_bytes(7);
        let decoded = crowd_proto::codec::decode_report(&entry).unwrap();
        assert_eq!(decoded, stored_report(7));
        assert_eq!(
            CrowdingReport::decode(wire_bytes(7).as_slice()).unwrap(),
            wire_report(7)
        );
    }
}
