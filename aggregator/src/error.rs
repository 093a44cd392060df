//! Errors that end [`run`](crate::run).
//!
//! Transient Redis failures never surface here: the aggregator logs them,
//! backs off and retries. Only a configuration that can never work, or a
//! deliberately injected crash, stops it.

/// Why the aggregator stopped.
#[derive(Debug, thiserror::Error)]
pub enum AggregatorError {
    /// The Redis URL cannot be parsed.
    #[error("invalid redis url: {0}")]
    InvalidRedisUrl(#[source] redis::RedisError),
    /// A test asked the aggregator to die before committing a batch.
    #[error("injected crash before committing a batch")]
    InjectedCrash,
}
