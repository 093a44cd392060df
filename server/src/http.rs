//! The HTTP side of the server: `GET /healthz` (200 while Redis answers,
//! 503 otherwise), for probes that do not speak gRPC.

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use tokio_util::sync::CancellationToken;

use crate::error::ServerError;
use crate::health::RedisUp;

/// Serves HTTP on `listener` until `shutdown` fires.
pub async fn serve(
    listener: tokio::net::TcpListener,
    up: RedisUp,
    shutdown: CancellationToken,
) -> Result<(), ServerError> {
    let app = Router::new().route("/healthz", get(healthz)).with_state(up);
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown.cancelled_owned())
        .await
        .map_err(ServerError::Http)
}

async fn healthz(State(up): State<RedisUp>) -> (StatusCode, &'static str) {
    if up.get() {
        (StatusCode::OK, "ok\n")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "redis unreachable\n")
    }
}
