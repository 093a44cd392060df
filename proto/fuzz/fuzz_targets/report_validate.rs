//! Arbitrary bytes as a `CrowdingReport` off the wire, through validation:
//! never a panic, and whatever validation accepts is within its limits and
//! survives the trip into a stream entry unchanged.

#![no_main]

use std::time::Duration;

use chrono::{DateTime, Utc};
use libfuzzer_sys::fuzz_target;
use prost::Message;

use crowd_proto::codec::{decode_report, encode_report, report_to_stored};
use crowd_proto::domain::DeviceHasher;
use crowd_proto::pb::v1::CrowdingReport;
use crowd_proto::validate::{Limits, validate_report};

fuzz_target!(|data: &[u8]| {
    let Ok(raw) = CrowdingReport::decode(data) else {
        return;
    };
    let limits = Limits {
        max_carriage: 32,
        max_age: Duration::from_secs(1800),
        max_future: Duration::from_secs(120),
    };
    // A fixed clock keeps runs reproducible.
    let now = DateTime::<Utc>::from_timestamp(1_795_000_000, 0).unwrap();
    let devices = DeviceHasher::new("fuzz");
    let Ok(report) = validate_report(&raw, &limits, &devices, now) else {
        return;
    };
    assert_eq!(report.report_id, raw.report_id);
    assert!(!report.report_id.is_empty());
    assert!(report.carriage_sequence <= limits.max_carriage);
    let age = now.signed_duration_since(report.observed_at);
    assert!(age <= chrono::Duration::seconds(1800), "{age}");
    assert!(age >= -chrono::Duration::seconds(120), "{age}");
    if let Some(p) = report.position {
        assert!((-90.0..=90.0).contains(&p.latitude));
        assert!((-180.0..=180.0).contains(&p.longitude));
        assert!(p.accuracy_m.is_finite() && p.accuracy_m >= 0.0);
    }
    let stored = decode_report(&encode_report(&report, now)).expect("own encoding decodes");
    assert_eq!(stored, report_to_stored(&report, now));
});
