//! `crowd_server_rpc_seconds{method}`: how long the server takes to answer
//! each gRPC call, from the moment the call reaches its service (the request
//! read and decoded by the HTTP/2 connection) until the response is ready.
//!
//! A client sees this plus the network and the time its call waited for a
//! core on either side; set side by side with a client's own latency it
//! tells which of the two a slow answer comes from. For a streaming call
//! (`StreamReports`, `StreamReportBatches`, `WatchOccupancy`) it is the time
//! to open the stream, not its life.
//!
//! The `method` label is the RPC's name for the methods of this server and
//! `other` for any other path, so that nobody can grow the series by
//! calling made-up paths.

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Instant;

use tonic::codegen::Service;
use tonic::codegen::http::Request;

/// The histogram's name.
pub const SERIES: &str = "crowd_server_rpc_seconds";

/// The methods of the `crowd.v1` services and of gRPC health, by name.
const METHODS: &[&str] = &[
    "StreamReports",
    "StreamReportBatches",
    "SubmitReport",
    "GetContributions",
    "GetOccupancy",
    "WatchOccupancy",
    "SearchNearby",
    "GetRouteSummary",
    "ListTrainsInArea",
    "GetAbuseStats",
    "Check",
    "Watch",
];

/// The label of a call to `path` (`/package.Service/Method`).
pub fn method_label(path: &str) -> &'static str {
    let known = path.starts_with("/crowd.v1.") || path.starts_with("/grpc.health.v1.");
    let method = path.rsplit('/').next().unwrap_or_default();
    METHODS
        .iter()
        .find(|m| known && **m == method)
        .copied()
        .unwrap_or("other")
}

/// Wraps the gRPC router: times every call into [`SERIES`].
#[derive(Debug, Clone, Copy, Default)]
pub struct RpcTimerLayer;

impl<S> tower_layer::Layer<S> for RpcTimerLayer {
    type Service = RpcTimer<S>;

    fn layer(&self, inner: S) -> RpcTimer<S> {
        RpcTimer { inner }
    }
}

/// The timing service around `inner`.
#[derive(Debug, Clone)]
pub struct RpcTimer<S> {
    inner: S,
}

impl<S, B> Service<Request<B>> for RpcTimer<S>
where
    S: Service<Request<B>>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<S::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        let method = method_label(request.uri().path());
        let started = Instant::now();
        let answer = self.inner.call(request);
        Box::pin(async move {
            let answered = answer.await;
            metrics::histogram!(SERIES, "method" => method).record(started.elapsed().as_secs_f64());
            answered
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn methods_are_labelled_by_name_and_anything_else_is_other() {
        assert_eq!(
            method_label("/crowd.v1.OccupancyService/GetOccupancy"),
            "GetOccupancy"
        );
        assert_eq!(
            method_label("/crowd.v1.ReportService/StreamReportBatches"),
            "StreamReportBatches"
        );
        assert_eq!(method_label("/grpc.health.v1.Health/Check"), "Check");
        assert_eq!(method_label("/crowd.v1.ReportService/Made_Up"), "other");
        assert_eq!(method_label("/evil.Service/GetOccupancy"), "other");
        assert_eq!(method_label(""), "other");
    }
}
