//! The crowd aggregator: turns the report streams in Redis into per-train and
//! per-car occupancy estimates.
//!
//! - [`estimator`]: the pure model (no I/O, time passed in).
//! - [`plausibility`]: how far a report's position and delay make it
//!   implausible (pure).
//! - [`reputation`]: device trust learnt from agreement with consensus,
//!   shared through Redis by `reputation_store`.
//! - [`state_codec`]: how a train's state is stored (packed columns).
//! - [`config`]: flags and environment.
//! - the rest is the Redis side: partition leases with fencing tokens
//!   (`lease`) spread evenly over the fleet (`membership`), the
//!   consumer-group reader (`stream`), per-train state of owned
//!   partitions (`partition`), the atomic per-partition commit (`commit`) and
//!   the loop tying them together (`worker`).
//! - `telemetry` names the metrics; `exposition` serves them (`--metrics-addr`).
//!
//! Exactly once: a batch's new states, estimates and the XACK of its entries
//! are written by one fenced script, so a report either counts and is
//! acknowledged, or stays pending for the next owner of its partition.

pub mod config;
pub mod error;
pub mod estimator;
pub mod plausibility;
pub mod profile;
pub mod reputation;
pub mod state_codec;

mod admission;
mod backoff;
pub mod baseline;
mod baseline_store;
mod commit;
mod device_map;
mod exposition;
mod lease;
mod membership;
mod partition;
mod profile_store;
mod reputation_store;
mod stream;
mod telemetry;
mod worker;

use std::future::Future;

pub use config::{Config, FaultInjection};
pub use error::AggregatorError;
pub use reputation_store::save as save_reputation;

/// Decodes a committed train state (`crowd:{k}:state:<trip>`), for tools and
/// tests that audit what the aggregator counted.
pub fn decode_train_state(
    bytes: &[u8],
) -> Result<crowd_proto::pb::store::TrainState, prost::DecodeError> {
    state_codec::decode(bytes)
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
    // Before anything records a metric.
    crowd_proto::metrics::prometheus();
    let stop = tokio_util::sync::CancellationToken::new();
    let exposition = match config.metrics_addr {
        Some(addr) => {
            let listener = tokio::net::TcpListener::bind(addr)
                .await
                .map_err(|source| AggregatorError::MetricsAddr { addr, source })?;
            tracing::info!(%addr, "serving metrics");
            Some(tokio::spawn(exposition::serve(listener, stop.clone())))
        }
        None => None,
    };
    let trigger = stop.clone();
    let watcher = tokio::spawn(async move {
        shutdown.await;
        trigger.cancel();
    });
    let result = match worker::Worker::start(config, stop.clone()).await {
        Ok(Some(mut w)) => w.run().await,
        Ok(None) => Ok(()),
        Err(e) => Err(e),
    };
    watcher.abort();
    stop.cancel();
    if let Some(task) = exposition
        && let Ok(Err(e)) = task.await
    {
        tracing::warn!(error = %e, "metrics endpoint failed");
    }
    result
}
