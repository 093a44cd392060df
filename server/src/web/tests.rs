//! The page's endpoints over real HTTP: assets with their content types, an
//! estimate change reaching an open event stream, and event streams under
//! the cap on open streams, against a private `redis-server` on a free port.

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;

use crowd_proto::codec;
use crowd_proto::domain::TripKey;
use crowd_proto::layout::{ESTIMATE_FIELD, Layout};
use crowd_proto::pb::v1::{CarEstimate, OccupancyEstimate, TripRef};

use super::{Lines, Web, router};
use crate::estimates::Estimates;
use crate::hub::Hub;
use crate::open_streams::OpenStreams;
use crate::store::Store;

/// A `redis-server` killed on drop.
struct Redis {
    child: Child,
    port: u16,
}

impl Redis {
    fn start() -> Redis {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("free port")
            .port();
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .stdout(Stdio::null())
            .spawn()
            .expect("redis-server on PATH (apt-get install redis-server)");
        Redis { child, port }
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    async fn connection(&self) -> redis::aio::MultiplexedConnection {
        let client = redis::Client::open(self.url()).unwrap();
        for _ in 0..200 {
            if let Ok(con) = client.get_multiplexed_async_connection().await {
                return con;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        panic!("redis-server did not start on port {}", self.port);
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Serves the page's router on a free port with Redis at `redis_url`.
async fn serve(redis_url: &str, shutdown: CancellationToken) -> SocketAddr {
    serve_with(redis_url, shutdown, OpenStreams::new(100)).await
}

/// [`serve`] under a cap on open streams.
async fn serve_with(
    redis_url: &str,
    shutdown: CancellationToken,
    open_streams: OpenStreams,
) -> SocketAddr {
    let layout = Layout::new(4);
    let target = crowd_proto::connection::Target::parse(redis_url, false).unwrap();
    let timeout = Duration::from_millis(500);
    let (hub, _tail) = Hub::spawn(target.clone(), layout, timeout, 64, shutdown.clone());
    let web = Web {
        estimates: Estimates {
            store: Store::new(&target, timeout).unwrap(),
            layout,
        },
        hub,
        lines: Arc::new(Lines::default()),
        cars: Arc::new("B=8".parse().unwrap()),
        shutdown: shutdown.clone(),
        audience: Default::default(),
        open_streams,
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        axum::serve(listener, router(web))
            .with_graceful_shutdown(shutdown.cancelled_owned())
            .await
    });
    addr
}

async fn request(addr: SocketAddr, path: &str) -> TcpStream {
    let mut socket = TcpStream::connect(addr).await.unwrap();
    let head = format!("GET {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n");
    socket.write_all(head.as_bytes()).await.unwrap();
    socket
}

async fn get(addr: SocketAddr, path: &str) -> String {
    let mut reply = String::new();
    request(addr, path)
        .await
        .read_to_string(&mut reply)
        .await
        .unwrap();
    reply
}

/// Reads from `socket` into `seen` until it contains `needle`, for at most 5 s.
async fn read_until(socket: &mut TcpStream, seen: &mut String, needle: &str) {
    let found = tokio::time::timeout(Duration::from_secs(5), async {
        let mut buf = [0u8; 4096];
        while !seen.contains(needle) {
            let n = socket.read(&mut buf).await.unwrap();
            assert!(n > 0, "stream ended before {needle:?}; got:\n{seen}");
            seen.push_str(&String::from_utf8_lossy(&buf[..n]));
        }
    })
    .await;
    assert!(found.is_ok(), "no {needle:?} within 5 s; got:\n{seen}");
}

#[tokio::test]
async fn assets_are_served_with_their_content_types() {
    let shutdown = CancellationToken::new();
    // No Redis needed for static files.
    let addr = serve("redis://127.0.0.1:1", shutdown.clone()).await;
    for (path, content_type, marker) in [
        ("/", "text/html; charset=utf-8", "<!doctype html>"),
        ("/app.js", "text/javascript; charset=utf-8", "EventSource"),
        ("/style.css", "text/css; charset=utf-8", "--level-7"),
    ] {
        let reply = get(addr, path).await;
        assert!(reply.starts_with("HTTP/1.1 200"), "{path}: {reply}");
        let lower = reply.to_ascii_lowercase();
        assert!(
            lower.contains(&format!("content-type: {content_type}")),
            "{path}: {reply}"
        );
        assert!(reply.contains(marker), "{path} lacks {marker:?}");
    }
    let bad = get(addr, "/api/events").await;
    assert!(bad.starts_with("HTTP/1.1 400"), "{bad}");
    shutdown.cancel();
}

#[tokio::test]
async fn an_estimate_change_reaches_an_open_event_stream() {
    let redis = Redis::start();
    let mut con = redis.connection().await;
    let shutdown = CancellationToken::new();
    let addr = serve(&redis.url(), shutdown.clone()).await;

    let mut events = request(addr, "/api/events?route_id=B").await;
    let mut seen = String::new();
    read_until(&mut events, &mut seen, "event: snapshot\ndata: []").await;
    assert!(seen.starts_with("HTTP/1.1 200"), "{seen}");
    assert!(
        seen.to_ascii_lowercase()
            .contains("content-type: text/event-stream"),
        "{seen}"
    );

    // What the aggregator appends when it publishes a new estimate.
    let estimate = OccupancyEstimate {
        trip: Some(TripRef {
            trip_id: "B-0712".into(),
            start_date: "20261126".into(),
            route_id: "B".into(),
        }),
        level: 4,
        occupancy_percentage: 90,
        confidence: 0.8,
        reporters: 3,
        cars: vec![CarEstimate {
            carriage_sequence: 2,
            level: 6,
            reporters: 2,
            ..Default::default()
        }],
        ..Default::default()
    };
    let layout = Layout::new(4);
    let k = layout.partition_of(&TripKey {
        trip_id: "B-0712".into(),
        start_date: "20261126".into(),
    });
    // The hub starts from the time it was spawned; send until it is reading.
    let mut sent = false;
    for _ in 0..50 {
        let _: String = redis::cmd("XADD")
            .arg(layout.updates(k))
            .arg("*")
            .arg(ESTIMATE_FIELD)
            .arg(codec::encode_estimate(&estimate))
            .query_async(&mut con)
            .await
            .unwrap();
        let wait = read_until(&mut events, &mut seen, "event: train");
        if tokio::time::timeout(Duration::from_millis(200), wait)
            .await
            .is_ok()
        {
            sent = true;
            break;
        }
    }
    assert!(sent, "no train event; got:\n{seen}");
    read_until(&mut events, &mut seen, "\n\n").await;
    let data = seen
        .split("event: train\ndata: ")
        .nth(1)
        .and_then(|rest| rest.split('\n').next())
        .expect("train data line");
    let train: serde_json::Value = serde_json::from_str(data).unwrap();
    assert_eq!(train["trip_id"], "B-0712");
    assert_eq!(train["level"], 4);
    assert_eq!(train["label"], "standing");
    assert_eq!(train["car_count"], 8);
    assert_eq!(train["cars"][0]["car"], 2);
    assert_eq!(train["cars"][0]["label"], "full");

    shutdown.cancel();
}

#[tokio::test]
async fn event_streams_count_under_the_cap_on_open_streams() {
    let redis = Redis::start();
    let _con = redis.connection().await;
    let shutdown = CancellationToken::new();
    let open_streams = OpenStreams::new(1);
    let addr = serve_with(&redis.url(), shutdown.clone(), open_streams.clone()).await;

    let mut first = request(addr, "/api/events?route_id=B").await;
    let mut seen = String::new();
    read_until(&mut first, &mut seen, "event: snapshot").await;
    assert_eq!(open_streams.open_now(), 1);

    let refused = get(addr, "/api/events?route_id=B").await;
    assert!(refused.starts_with("HTTP/1.1 503"), "{refused}");
    assert!(refused.contains("limit of 1 open streams"), "{refused}");

    // The place comes back when the page goes away.
    drop(first);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while open_streams.open_now() > 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the closed page still holds its place"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut again = request(addr, "/api/events?route_id=B").await;
    let mut seen = String::new();
    read_until(&mut again, &mut seen, "event: snapshot").await;
    shutdown.cancel();
}
