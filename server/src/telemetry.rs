//! `GET /metrics`: the server's Prometheus metrics, rendered from the
//! process-wide registry of [`crowd_proto::metrics`].
//!
//! Series of the server (names are stable; dashboards rely on them):
//!
//! | name | type | what |
//! |---|---|---|
//! | `crowd_server_reports_accepted_total` | counter | reports written to Redis and acknowledged ACCEPTED |
//! | `crowd_server_reports_rejected_total{reason}` | counter | reports answered REJECTED, by reason (`carriage_sequence`, `observed_at`, `rate_limit`, `unknown_trip`, ...) |
//! | `crowd_server_reports_duplicate_total` | counter | reports answered DUPLICATE |
//! | `crowd_server_reports_failed_total` | counter | admitted reports whose write failed (the client retries) |
//! | `crowd_server_ack_seconds` | histogram | arrival of a report to its ACCEPTED ack |
//! | `crowd_server_rpc_seconds{method}` | histogram | a gRPC call reaching its service to its response being ready (streams: being opened), by method ([`crate::rpc_timer`]) |
//! | `crowd_server_write_batch_size` | histogram | reports per XADD pipeline |
//! | `crowd_server_write_batch_seconds` | histogram | time of one XADD pipeline |
//! | `crowd_server_write_queue_depth` | gauge | reports waiting for a writer |
//! | `crowd_server_write_queue_full_total` | counter | reports refused because the queue was full |
//! | `crowd_server_write_errors_total` | counter | XADD pipelines that failed |
//! | `crowd_server_redis_errors_total{op}` | counter | failed or timed-out Redis commands, by command |
//! | `crowd_server_redis_up` | gauge | 1 while Redis answers the health check |
//! | `crowd_server_watchers` | gauge | WatchOccupancy calls connected |
//! | `crowd_server_watch_changes_total` | counter | estimate changes read from the update streams |
//! | `crowd_server_watch_gaps_total` | counter | times changes were trimmed from an update stream before the tail read them (the query cache starts afresh) |
//! | `crowd_server_estimate_age_seconds` | histogram | age of the newest report in each estimate change, when the server sees it |
//! | `crowd_server_rate_limit_overflow_total` | counter | devices not tracked because the rate table was full |
//! | `crowd_server_open_streams` | gauge | report streams and watches open now |
//! | `crowd_server_streams_refused_total` | counter | streams refused at the `--max-open-streams` cap |
//! | `crowd_server_contributions_dropped_total` | counter | contribution counts not made because their queue was full (the acks say 0) |

use axum::Router;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;

/// Path of the metrics endpoint.
pub const PATH: &str = "/metrics";

/// Counters and gauges shown from startup (at 0 until something happens),
/// with their help text.
const SERIES: &[(&str, Kind, &str)] = &[
    (
        "crowd_server_reports_accepted_total",
        Kind::Counter,
        "Reports written to Redis and acknowledged ACCEPTED.",
    ),
    (
        "crowd_server_reports_duplicate_total",
        Kind::Counter,
        "Reports answered DUPLICATE.",
    ),
    (
        "crowd_server_reports_failed_total",
        Kind::Counter,
        "Admitted reports whose write failed.",
    ),
    (
        "crowd_server_write_queue_full_total",
        Kind::Counter,
        "Reports refused because the write queue was full.",
    ),
    (
        "crowd_server_write_errors_total",
        Kind::Counter,
        "XADD pipelines that failed.",
    ),
    (
        "crowd_server_write_queue_depth",
        Kind::Gauge,
        "Reports waiting for a writer.",
    ),
    (
        "crowd_server_watchers",
        Kind::Gauge,
        "WatchOccupancy calls connected.",
    ),
];

/// Help text of the series that only appear once they have a value.
const LATER: &[(&str, Kind, &str)] = &[
    (
        "crowd_server_reports_rejected_total",
        Kind::Counter,
        "Reports answered REJECTED, by reason.",
    ),
    (
        "crowd_server_redis_errors_total",
        Kind::Counter,
        "Failed or timed-out Redis commands, by command.",
    ),
    (
        "crowd_server_ack_seconds",
        Kind::Histogram,
        "Arrival of a report to its ACCEPTED ack.",
    ),
    (
        crate::rpc_timer::SERIES,
        Kind::Histogram,
        "A gRPC call reaching its service to its response being ready (streams: being opened), by method.",
    ),
    (
        "crowd_server_write_batch_size",
        Kind::Histogram,
        "Reports per XADD pipeline.",
    ),
    (
        "crowd_server_write_batch_seconds",
        Kind::Histogram,
        "Time of one XADD pipeline.",
    ),
    (
        "crowd_server_estimate_age_seconds",
        Kind::Histogram,
        "Age of the newest report of each estimate change the server reads.",
    ),
    (
        "crowd_server_watch_gaps_total",
        Kind::Counter,
        "Times changes were trimmed from an update stream before the tail read them.",
    ),
];

#[derive(Debug, Clone, Copy)]
enum Kind {
    Counter,
    Gauge,
    Histogram,
}

/// The `/metrics` route, to merge into the HTTP router. Installs the
/// process-wide registry if nothing did yet, and registers the server's
/// series so dashboards see them from the start.
pub fn router() -> Router {
    crowd_proto::metrics::prometheus();
    for &(name, kind, help) in SERIES.iter().chain(LATER) {
        match kind {
            Kind::Counter => metrics::describe_counter!(name, help),
            Kind::Gauge => metrics::describe_gauge!(name, help),
            Kind::Histogram => metrics::describe_histogram!(name, help),
        }
    }
    for &(name, kind, _) in SERIES {
        // Adding zero registers the series without changing it (several
        // servers may share the registry).
        match kind {
            Kind::Counter => metrics::counter!(name).increment(0),
            Kind::Gauge => metrics::gauge!(name).increment(0.0),
            Kind::Histogram => {}
        }
    }
    Router::new().route(PATH, get(metrics))
}

async fn metrics() -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, crowd_proto::metrics::CONTENT_TYPE)],
        crowd_proto::metrics::render(),
    )
}
