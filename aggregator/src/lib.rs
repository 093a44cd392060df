//! The crowd aggregator: turns the report streams in Redis into per-train and
//! per-car occupancy estimates.
//!
//! - [`estimator`]: the pure model (no I/O, time passed in).
//! - [`reputation`]: device trust learnt from agreement with consensus.
//! - [`config`]: flags and environment.
//! - the rest is the Redis side: partition leases with fencing tokens
//!   (`lease`), the consumer-group reader (`stream`), per-train state of owned
//!   partitions (`partition`), the atomic per-partition commit (`commit`) and
//!   the loop tying them together (`worker`).
//!
//! Exactly once: a batch's new states, estimates and the XACK of its entries
//! are written by one fenced script, so a report either counts and is
//! acknowledged, or stays pending for the next owner of its partition.

pub mod config;
pub mod error;
pub mod estimator;
pub mod reputation;

mod backoff;
mod commit;
mod lease;
mod partition;
mod stream;
mod telemetry;
mod worker;

use std::future::Future;

pub use config::{Config, FaultInjection};
pub use error::AggregatorError;

/// Decodes a committed train state (`crowd:{k}:state:<trip>`), for tools and
/// tests that audit what the aggregator counted.
pub fn decode_train_state(
    bytes: &[u8],
) -> Result<crowd_proto::pb::store::TrainState, prost::DecodeError> {
    <crowd_proto::pb::store::TrainState as prost::Message>::decode(bytes)
}

/// Runs the aggregator until `shutdown` completes, then commits the batch in
/// hand, releases its leases and returns.
///
/// Transient Redis errors are logged and retried; only an unusable
/// configuration or an injected fault returns an error.
pub async fn run(
    config: Config,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), AggregatorError> {
    let stop = tokio_util::sync::CancellationToken::new();
    let trigger = stop.clone();
    let watcher = tokio::spawn(async move {
        shutdown.await;
        trigger.cancel();
    });
    let result = match worker::Worker::start(config, stop).await {
        Ok(Some(mut w)) => w.run().await,
        Ok(None) => Ok(()),
        Err(e) => Err(e),
    };
    watcher.abort();
    result
}
