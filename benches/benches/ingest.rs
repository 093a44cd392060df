//! The server's per-report costs on the ingest path: decoding a report from
//! the wire and validating it, and the stream entry codec both ways.

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use prost::Message;

use crowd_benches::{devices, domain_report, entry_bytes, now, wire_bytes};
use crowd_proto::codec::{decode_report, encode_report};
use crowd_proto::pb::v1::CrowdingReport;
use crowd_proto::validate::{Limits, validate_report};

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

criterion_group!(benches, decode_and_validate, entry_codec);
criterion_main!(benches);
