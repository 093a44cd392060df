//! Arbitrary bytes as the `r` field of a reports-stream entry, as the
//! aggregator reads it: decoding never panics, a decoded report re-encodes
//! to an equal one, and the estimator folds it into a train state (twice:
//! the second time must be a duplicate) and estimates without panicking.

#![no_main]

use libfuzzer_sys::fuzz_target;
use prost::Message;

use crowd_aggregator::estimator::{self, Applied, Params, UniformTrust};
use crowd_proto::codec::decode_report;
use crowd_proto::pb::store::{StoredReport, TrainState};

fuzz_target!(|data: &[u8]| {
    let Ok(report) = decode_report(data) else {
        return;
    };
    // Compared as bytes: a NaN coordinate is not equal to itself.
    let bytes = report.encode_to_vec();
    let again = StoredReport::decode(bytes.as_slice()).expect("re-decodes");
    assert_eq!(again.encode_to_vec(), bytes);

    let params = Params::default();
    let mut state = TrainState::default();
    let first = estimator::apply(&mut state, &report, &params);
    let counted = state.reports_counted;
    let second = estimator::apply(&mut state, &report, &params);
    match first {
        Applied::Counted => {
            assert_eq!(counted, 1);
            assert_eq!(second, Applied::Duplicate);
        }
        Applied::Duplicate => panic!("a fresh state has seen nothing"),
        Applied::Rejected => assert_eq!(counted, 0),
    }
    assert_eq!(state.reports_counted, counted, "a duplicate counted");
    let now = report.received_at_ms;
    estimator::prune(&mut state, now, &params);
    if let Some(e) = estimator::estimate(&state, now, &params, &UniformTrust) {
        assert!((0.0..=1.0).contains(&e.confidence), "{}", e.confidence);
        assert!(e.reporters >= 1);
    }
});
