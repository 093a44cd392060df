//! HTTP/2 connections to the server under test.
//!
//! Thousands of streams share a few connections, as they would behind a
//! load balancer from a handful of client hosts; each connection is made
//! and probed eagerly so an unreachable or silent target fails the run
//! before it starts.

use std::time::Duration;

use anyhow::Context;
use crowd_proto::pb::v1::GetOccupancyRequest;
use crowd_proto::pb::v1::occupancy_service_client::OccupancyServiceClient;
use tonic::transport::{Channel, Endpoint};

/// Streams per connection when `--connections` is left to the driver:
/// below common HTTP/2 `max_concurrent_streams` defaults.
pub const STREAMS_PER_CONNECTION: usize = 100;

/// How many connections carry `streams` streams: `requested`, or one per
/// [`STREAMS_PER_CONNECTION`] streams when `requested` is 0.
pub fn connection_count(requested: usize, streams: usize) -> usize {
    if requested > 0 {
        requested
    } else {
        streams.div_ceil(STREAMS_PER_CONNECTION).max(1)
    }
}

/// Opens `count` connections to `target`, failing within about
/// `timeout` when it cannot be reached.
pub async fn connect(
    target: &str,
    count: usize,
    timeout: Duration,
) -> anyhow::Result<Vec<Channel>> {
    let endpoint = Endpoint::from_shared(target.to_owned())
        .with_context(|| format!("--target {target:?} is not a URI like http://127.0.0.1:50051"))?
        .connect_timeout(timeout)
        .tcp_nodelay(true)
        .http2_keep_alive_interval(Duration::from_secs(20))
        .keep_alive_timeout(Duration::from_secs(10));
    let connecting = futures::future::try_join_all((0..count).map(|_| endpoint.connect()));
    // The connect timeout covers TCP; this also bounds the HTTP/2 handshake.
    let channels = match tokio::time::timeout(timeout + Duration::from_secs(1), connecting).await {
        Ok(Ok(channels)) => channels,
        Ok(Err(error)) => anyhow::bail!("cannot connect to {target}: {}", source_chain(&error)),
        Err(_) => anyhow::bail!("cannot connect to {target}: no answer within {timeout:?}"),
    };
    let probes = futures::future::try_join_all(channels.iter().cloned().map(probe));
    match tokio::time::timeout(timeout, probes).await {
        Ok(Ok(_)) => Ok(channels),
        Ok(Err(status)) => anyhow::bail!(
            "cannot connect to {target}: it does not answer crowd.v1 queries: {status}"
        ),
        Err(_) => anyhow::bail!("cannot connect to {target}: no gRPC answer within {timeout:?}"),
    }
}

/// An empty `GetOccupancy`: proves the connection reaches a crowd server
/// that answers, which a TCP connect alone does not.
async fn probe(channel: Channel) -> Result<(), tonic::Status> {
    OccupancyServiceClient::new(channel)
        .get_occupancy(GetOccupancyRequest { trips: Vec::new() })
        .await
        .map(drop)
}

/// `error: cause: cause`, since a transport error alone says only
/// "transport error".
fn source_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connections_default_to_one_per_hundred_streams() {
        assert_eq!(connection_count(0, 1), 1);
        assert_eq!(connection_count(0, 100), 1);
        assert_eq!(connection_count(0, 101), 2);
        assert_eq!(connection_count(0, 5000), 50);
        assert_eq!(connection_count(3, 5000), 3);
    }

    #[tokio::test]
    async fn a_bad_uri_is_explained() {
        let error = connect("not a uri", 1, Duration::from_secs(1))
            .await
            .unwrap_err();
        assert!(error.to_string().contains("--target"), "{error}");
    }
}
