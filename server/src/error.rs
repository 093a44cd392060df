//! Errors of the server: [`StoreError`] for anything that went wrong talking
//! to Redis (mapped to a gRPC status in exactly one place), and
//! [`ServerError`] for why [`run`](crate::run) stopped.

use crowd_proto::codec::DecodeError;

/// A failed Redis operation, as seen by a request handler.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// Redis answered with an error or the connection failed.
    #[error("redis {op}: {source}")]
    Redis {
        op: &'static str,
        #[source]
        source: redis::RedisError,
    },
    /// Redis did not answer in time.
    #[error("redis {op}: no reply within {ms} ms")]
    Timeout { op: &'static str, ms: u128 },
    /// Redis holds a record this version cannot read.
    #[error(transparent)]
    Decode(#[from] DecodeError),
    /// The write queue is full: the server is overloaded.
    #[error("write queue full; retry later")]
    Overloaded,
    /// The server is shutting down and writes no more.
    #[error("server shutting down")]
    ShuttingDown,
}

impl From<StoreError> for tonic::Status {
    fn from(e: StoreError) -> tonic::Status {
        match &e {
            StoreError::Redis { .. } | StoreError::Timeout { .. } | StoreError::ShuttingDown => {
                tonic::Status::unavailable(e.to_string())
            }
            StoreError::Overloaded => tonic::Status::resource_exhausted(e.to_string()),
            StoreError::Decode(_) => tonic::Status::internal(e.to_string()),
        }
    }
}

/// Why the server stopped.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// The Redis URL is not valid.
    #[error("invalid redis url: {0}")]
    RedisUrl(#[source] redis::RedisError),
    /// The gRPC transport failed.
    #[error("grpc server: {0}")]
    Grpc(#[from] tonic::transport::Error),
    /// The HTTP endpoint failed.
    #[error("http server: {0}")]
    Http(#[source] std::io::Error),
    /// A listener could not be configured.
    #[error("listener: {0}")]
    Listener(#[source] std::io::Error),
    /// The GTFS feed could not be loaded.
    #[error(transparent)]
    Schedule(#[from] crate::schedule::ScheduleError),
    /// The operator keys could not be loaded.
    #[error(transparent)]
    OperatorKeys(#[from] crate::auth::KeysError),
    /// The reflection service could not load the descriptors.
    #[error("reflection: {0}")]
    Reflection(#[from] tonic_reflection::server::Error),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn store_errors_map_to_retryable_statuses() {
        let timeout = tonic::Status::from(StoreError::Timeout {
            op: "XADD",
            ms: 1000,
        });
        assert_eq!(timeout.code(), tonic::Code::Unavailable);
        assert!(timeout.message().contains("XADD"));
        let full = tonic::Status::from(StoreError::Overloaded);
        assert_eq!(full.code(), tonic::Code::ResourceExhausted);
        let down = tonic::Status::from(StoreError::ShuttingDown);
        assert_eq!(down.code(), tonic::Code::Unavailable);
    }
}
