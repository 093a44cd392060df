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
    /// The metrics address cannot be bound.
    #[error("cannot serve metrics on {addr}: {source}")]
    MetricsAddr {
        addr: std::net::SocketAddr,
        #[source]
        source: std::io::Error,
    },
    /// A test asked the aggregator to die before committing a batch.
    #[error("injected crash before committing a batch")]
    InjectedCrash,
}
