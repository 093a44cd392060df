//! `GET /metrics` of the aggregator (`--metrics-addr`), rendered from the
//! process-wide registry of [`crowd_proto::metrics`]; the series are listed
//! in `telemetry`.

use axum::Router;
use axum::http::header;
use axum::routing::get;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// Serves `/metrics` on `listener` until `stop` fires.
pub(crate) async fn serve(listener: TcpListener, stop: CancellationToken) -> std::io::Result<()> {
    let app = Router::new().route(
        "/metrics",
        get(|| async {
            (
                [(header::CONTENT_TYPE, crowd_proto::metrics::CONTENT_TYPE)],
                crowd_proto::metrics::render(),
            )
        }),
    );
    axum::serve(listener, app)
        .with_graceful_shutdown(stop.cancelled_owned())
        .await
}
