//! The aggregator's per-report and per-batch costs: one estimator update on a
//! busy train, one batch's judging on a full train, and the encoding of one
//! batch commit's worth of state.

use std::hint::black_box;

use criterion::{BatchSize, Criterion, criterion_group, criterion_main};

use crowd_aggregator::estimator::{self, Ballot, Params};
use crowd_aggregator::reputation::{Reputation, judge, judge_on};
use crowd_aggregator::state_codec;
use crowd_benches::{NOW_MS, busy_train, stored_report};
use crowd_proto::codec::encode_estimate;

/// Observations on the benchmarked train: a busy commuter train.
const OBSERVATIONS: u64 = 50;
/// Trains in one batch commit.
const TRAINS_PER_COMMIT: u64 = 100;

/// Judge the report, fold it in, prune and recompute the estimate: what the
/// aggregator does for every report (the estimate once per train per batch).
fn update(c: &mut Criterion) {
    let params = Params::default();
    let reputation = Reputation::new();
    let state = busy_train(1, OBSERVATIONS);
    let report = stored_report(1 + 400 * 10_000);
    c.bench_function("estimator/update_50_observations", |b| {
        b.iter_batched_ref(
            || state.clone(),
            |state| {
                let verdict = judge(state, &report, NOW_MS, &params, &reputation);
                estimator::apply(state, &report, &params);
                estimator::prune(state, NOW_MS, &params);
                let estimate = estimator::estimate(state, NOW_MS, &params, &reputation);
                black_box((verdict, estimate))
            },
            BatchSize::SmallInput,
        )
    });
}

/// Observations on a train as full as a state keeps.
const FULL_TRAIN: u64 = 256;
/// Reports of one batch on that train.
const REPORTS_PER_BATCH: u64 = 32;

/// What the aggregator does per batch on a busy train before applying its
/// reports: weigh its votes once, then judge each report of the batch.
fn ballot(c: &mut Criterion) {
    let params = Params::default();
    let reputation = Reputation::new();
    let state = busy_train(1, FULL_TRAIN);
    let reports: Vec<_> = (0..REPORTS_PER_BATCH)
        .map(|j| stored_report(1 + 400 * (10_000 + j)))
        .collect();
    c.bench_function("estimator/ballot_256_observations_32_reports", |b| {
        b.iter(|| {
            let ballot = Ballot::new(&state, NOW_MS, &params, &reputation);
            let verdicts: Vec<_> = reports.iter().map(|r| judge_on(&ballot, r)).collect();
            black_box(verdicts)
        })
    });
}

/// Encodes state and estimate of every train of one batch commit.
fn commit_encoding(c: &mut Criterion) {
    let params = Params::default();
    let trains: Vec<_> = (0..TRAINS_PER_COMMIT)
        .map(|t| {
            let state = busy_train(t, OBSERVATIONS);
            let estimate = estimator::estimate(&state, NOW_MS, &params, &estimator::UniformTrust)
                .expect("a busy train has an estimate");
            (state, estimate)
        })
        .collect();
    c.bench_function("commit/encode_100_trains", |b| {
        b.iter(|| {
            let encoded: Vec<(Vec<u8>, Vec<u8>)> = trains
                .iter()
                .map(|(state, estimate)| (state_codec::encode(state), encode_estimate(estimate)))
                .collect();
            black_box(encoded)
        })
    });
}

criterion_group!(benches, update, ballot, commit_encoding);
criterion_main!(benches);
