//! Arbitrary bytes as a committed `TrainState` (`crowd:{k}:state:<trip>`),
//! as a new partition owner loads it: decoding never panics, and the
//! estimator accepts the decoded state: applying a report counts it at most
//! once, keeps the duplicate memory bounded, and estimating yields sane
//! numbers.

#![no_main]

use libfuzzer_sys::fuzz_target;

use crowd_aggregator::decode_train_state;
use crowd_aggregator::estimator::{self, Applied, Params, UniformTrust};
use crowd_proto::pb::store::StoredReport;

fuzz_target!(|data: &[u8]| {
    let Ok(mut state) = decode_train_state(data) else {
        return;
    };
    let params = Params::default();
    let now = 1_795_000_000_000;
    let before = state.reports_counted;
    let report = StoredReport {
        report_id: "fuzz-report".into(),
        device: 7,
        trip_id: state.trip_id.clone(),
        start_date: state.start_date.clone(),
        route_id: "F".into(),
        carriage_sequence: 2,
        level: 4,
        occupancy_percentage: None,
        observed_at_ms: now - 1000,
        received_at_ms: now,
        position: None,
        stop_id: String::new(),
    };
    match estimator::apply(&mut state, &report, &params) {
        Applied::Counted => {
            assert_eq!(state.reports_counted, before.saturating_add(1));
            assert!(state.recent_report_ids.len() <= params.max_recent_ids);
            assert_eq!(
                estimator::apply(&mut state, &report, &params),
                Applied::Duplicate
            );
        }
        Applied::Duplicate | Applied::Rejected => assert_eq!(state.reports_counted, before),
    }
    estimator::prune(&mut state, now, &params);
    if let Some(e) = estimator::estimate(&state, now, &params, &UniformTrust) {
        assert!(e.confidence.is_finite() && (0.0..=1.0).contains(&e.confidence));
        assert!(e.cars.iter().all(|c| c.carriage_sequence > 0));
    }
});
