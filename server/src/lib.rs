//! The crowd gRPC edge: riders' reports in (validated, deduplicated,
//! group-committed to Redis), occupancy estimates out (queries, live watch,
//! trains nearby), plus gRPC health and reflection and an HTTP `/healthz`.
//!
//! [`run`] serves on listeners the caller bound, until a shutdown future
//! completes, so `main` and tests start the very same server.
//!
//! - [`config`]: flags and environment.
//! - [`ingest`] + [`acks`] + [`ratelimit`] + [`dedup`] + [`writer`]: the
//!   write path.
//! - [`audience`] + [`contributions`]: the nudge in each ACCEPTED ack (how
//!   many riders the report helps, how many reports the device made).
//! - [`queries`] + [`estimates`] + [`watch`] + [`hub`]: the read path;
//!   [`estimate_cache`] + [`estimate_reads`]: the latest estimates in memory.
//! - [`store`]: the Redis connection, every call bounded in time.
//! - [`open_streams`]: the server-wide cap on open streaming calls.
//! - [`health`] + [`http`]: liveness for load balancers.
//! - [`web`]: the live crowding page for riders and operators.
//! - [`gtfs_rt`] + [`feed`] + [`fleet`]: the GTFS-Realtime feed for operators.
//! - [`telemetry`]: Prometheus `/metrics` and the list of series.
//! - [`operator`] + [`auth`] + [`rejects`] + [`flagged`] + [`schedule`]:
//!   the operators' gRPC service behind API keys, with the GTFS static
//!   schedule.

pub mod acks;
pub mod audience;
pub mod auth;
pub mod config;
pub mod contributions;
pub mod dedup;
pub mod error;
pub mod estimate_cache;
pub mod estimate_reads;
pub mod estimates;
pub mod feed;
pub mod flagged;
pub mod fleet;
pub mod gtfs_rt;
pub mod health;
pub mod http;
pub mod hub;
pub mod ingest;
pub mod open_streams;
pub mod operator;
pub mod queries;
pub mod ratelimit;
pub mod rejects;
pub mod rpc_timer;
pub mod schedule;
pub mod store;
pub mod telemetry;
pub mod watch;
pub mod web;
pub mod writer;

mod serve;

pub use config::Config;
pub use error::{ServerError, StoreError};
pub use serve::run;
