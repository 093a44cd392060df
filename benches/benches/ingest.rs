//! The server's per-report costs on the ingest path: decoding a report from
//! the wire and validating it, claiming its id in the memory of recent ids,
//! and the stream entry codec both ways.

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use prost::Message;

use crowd_benches::{devices, domain_report, entry_bytes, now, wire_bytes};
use crowd_proto::codec::{decode_report, encode_report};
use crowd_proto::pb::v1::CrowdingReport;
use crowd_proto::validate::{Limits, validate_report};
use crowd_server::dedup::RecentIds;

/// `prost` decode of a `CrowdingReport`, then edge validation.
fn decode_and_validate(c: &mut Criterion) {
    let bytes = wire_bytes(1);
    let limits = Limits::default();
    let devices = devices();
    let now = now();
    c.bench_function("ingest/decode_and_validate", |b| {
        b.iter(|| {
            let raw = CrowdingReport::decode(black_box(bytes.as_slice())).expect("valid bytes");
            black_box(validate_report(&raw, &limits, &devices, now).expect("valid report"))
        })
    });
}

/// Claiming a new report id in a full memory of recent ids (the default
/// 100,000): one id remembered, the oldest forgotten, as on a busy server.
fn recent_ids(c: &mut Criterion) {
    const CAPACITY: usize = 100_000;
    let recent = RecentIds::new(CAPACITY);
    // Twice the capacity, in turn: each id was forgotten by the time it
    // comes round again, so every claim is new.
    let ids: Vec<String> = (0..2 * CAPACITY)
        .map(|i| format!("{:08x}-4bd2-4c3e-9f6a-{:012x}", i * 7919, i))
        .collect();
    for id in &ids[..CAPACITY] {
        recent.claim(id);
    }
    let mut next = CAPACITY;
    c.bench_function("ingest/recent_ids_claim", |b| {
        b.iter(|| {
            let id = &ids[next % ids.len()];
            next += 1;
            assert!(recent.claim(black_box(id)));
        })
    });
}

/// The `r` field of a stream entry: encoded by the server, decoded by the
/// aggregator.
fn entry_codec(c: &mut Criterion) {
    let report = domain_report(1);
    let now = now();
    c.bench_function("codec/encode_report", |b| {
        b.iter(|| black_box(encode_report(black_box(&report), now)))
    });
    let bytes = entry_bytes(1);
    c.bench_function("codec/decode_report", |b| {
        b.iter(|| black_box(decode_report(black_box(bytes.as_slice())).expect("valid entry")))
    });
}

criterion_group!(benches, decode_and_validate, recent_ids, entry_codec);
criterion_main!(benches);
