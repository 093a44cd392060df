//! The HTTP side of the server: `GET /healthz` (200 while Redis answers,
//! 503 otherwise), for probes that do not speak gRPC, plus the routes other
//! modules add (GTFS-Realtime feed, metrics).

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use tokio_util::sync::CancellationToken;

use crate::error::ServerError;
use crate::health::RedisUp;

/// Serves `/healthz` and the `routes` of other modules (the GTFS-Realtime
/// feed, metrics) on `listener` until `shutdown` fires.
pub async fn serve(
    listener: tokio::net::TcpListener,
    up: RedisUp,
    routes: Router,
    shutdown: CancellationToken,
) -> Result<(), ServerError> {
    let app = Router::new()
        .route("/healthz", get(healthz))
        .with_state(up)
        .merge(routes);
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

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    async fn get_healthz(addr: std::net::SocketAddr) -> String {
        let mut socket = tokio::net::TcpStream::connect(addr).await.unwrap();
        socket
            .write_all(b"GET /healthz HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n")
            .await
            .unwrap();
        let mut reply = String::new();
        socket.read_to_string(&mut reply).await.unwrap();
        reply
    }

    #[tokio::test]
    async fn healthz_follows_redis_reachability() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let up = RedisUp::default();
        let shutdown = CancellationToken::new();
        let server = tokio::spawn(serve(listener, up.clone(), Router::new(), shutdown.clone()));

        let reply = get_healthz(addr).await;
        assert!(reply.starts_with("HTTP/1.1 503"), "{reply}");
        up.set(true);
        let reply = get_healthz(addr).await;
        assert!(reply.starts_with("HTTP/1.1 200"), "{reply}");
        assert!(reply.ends_with("ok\n"), "{reply}");

        shutdown.cancel();
        server.await.unwrap().unwrap();
    }
}
