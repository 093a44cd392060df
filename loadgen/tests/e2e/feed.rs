//! The GTFS-Realtime feed over HTTP, end to end: reports go through the real
//! server and aggregator, the feed is fetched over a socket and decoded by
//! `protoc` from the vendored GTFS-Realtime schema, independently of the
//! server's own generated types.

use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use crowd_loadgen::stack::StackOptions;
use crowd_proto::pb::v1::CrowdingLevel;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::helpers::{at, eventually, report, reports_client, start_stack_with};

/// An HTTP reply: status code, header block, body.
pub struct Reply {
    pub status: u16,
    pub headers: String,
    pub body: Vec<u8>,
}

impl Reply {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// `GET path` over HTTP/1.1 on a fresh connection.
pub async fn http_get(addr: SocketAddr, path: &str) -> Reply {
    let mut socket = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let request = format!("GET {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n");
    socket.write_all(request.as_bytes()).await.expect("send");
    let mut raw = Vec::new();
    socket.read_to_end(&mut raw).await.expect("read");
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("a header block");
    let headers = String::from_utf8_lossy(&raw[..split]).into_owned();
    let status = headers
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("a status code");
    assert!(
        !headers
            .to_ascii_lowercase()
            .contains("transfer-encoding: chunked"),
        "replies carry a content-length: {headers}"
    );
    Reply {
        status,
        headers,
        body: raw[split + 4..].to_vec(),
    }
}

/// The feed decoded to protobuf text format by the vendored `protoc`.
fn protoc_decode(feed: &[u8]) -> String {
    let schema_dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../proto/gtfs-realtime");
    let protoc = protoc_bin_vendored::protoc_bin_path().expect("vendored protoc");
    let mut child = Command::new(protoc)
        .arg("--decode=transit_realtime.FeedMessage")
        .arg(format!("--proto_path={}", schema_dir.display()))
        .arg("gtfs-realtime.proto")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("protoc runs");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(feed)
        .expect("feed to protoc");
    let out = child.wait_with_output().expect("protoc output");
    assert!(
        out.status.success(),
        "protoc could not decode the feed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("text output")
}

/// The blocks `name { ... }` of protobuf text output, each as its trimmed
/// lines (nested blocks included).
fn blocks(text: &str, name: &str) -> Vec<Vec<String>> {
    let opener = format!("{name} {{");
    let mut found = Vec::new();
    let mut lines = text.lines().map(str::trim);
    while let Some(line) = lines.next() {
        if line != opener {
            continue;
        }
        let mut depth = 1;
        let mut block = Vec::new();
        for inner in lines.by_ref() {
            if inner.ends_with('{') {
                depth += 1;
            } else if inner == "}" {
                depth -= 1;
                if depth == 0 {
                    break;
                }
            }
            block.push(inner.to_owned());
        }
        found.push(block);
    }
    found
}

/// The value of `field: value` in a block's lines.
fn field<'a>(block: &'a [String], name: &str) -> Option<&'a str> {
    let prefix = format!("{name}: ");
    block.iter().find_map(|l| l.strip_prefix(prefix.as_str()))
}

#[tokio::test]
async fn the_vehicle_positions_feed_decodes_with_protoc() {
    let stack = start_stack_with(StackOptions {
        server_args: vec!["--cars-per-route".into(), "B=8".into()],
        ..StackOptions::default()
    })
    .await;
    let mut client = reports_client(&stack).await;
    for (i, device) in ["feed-a", "feed-b", "feed-c"].into_iter().enumerate() {
        let on_b = at(
            report(
                &format!("feed-b-{i}"),
                device,
                "FEED-B1",
                3,
                CrowdingLevel::Full,
            ),
            48.8618,
            2.3469,
        );
        client.submit_report(on_b).await.expect("report on B");
        let mut on_c = report(
            &format!("feed-c-{i}"),
            device,
            "FEED-C1",
            2,
            CrowdingLevel::ManySeatsAvailable,
        );
        on_c.trip.as_mut().unwrap().route_id = "C".into();
        client.submit_report(on_c).await.expect("report on C");
    }
    let http = stack.http_addr();

    // Both trains published, and B's position known.
    let feed = eventually(Duration::from_secs(10), || async {
        let reply = http_get(http, "/gtfs-rt/vehicle-positions").await;
        let text = protoc_decode(&reply.body);
        (blocks(&text, "entity").len() == 2 && text.contains("latitude")).then_some(reply)
    })
    .await
    .expect("both trains reach the feed");
    assert_eq!(feed.status, 200);
    assert!(
        feed.headers
            .to_ascii_lowercase()
            .contains("content-type: application/x-protobuf"),
        "{}",
        feed.headers
    );
    let text = protoc_decode(&feed.body);
    println!("{text}");

    let header = &blocks(&text, "header")[0];
    assert_eq!(field(header, "gtfs_realtime_version"), Some("\"2.0\""));
    assert_eq!(field(header, "incrementality"), Some("FULL_DATASET"));
    let stamp: i64 = field(header, "timestamp").unwrap().parse().unwrap();
    assert!(
        (chrono::Utc::now().timestamp() - stamp).abs() < 30,
        "{stamp}"
    );

    let entities = blocks(&text, "entity");
    let b = entities
        .iter()
        .find(|e| e.iter().any(|l| l == "trip_id: \"FEED-B1\""))
        .expect("train FEED-B1");
    assert_eq!(field(b, "route_id"), Some("\"B\""));
    assert_eq!(
        field(b, "start_date"),
        Some(format!("\"{}\"", crate::helpers::today()).as_str())
    );
    let b_text = b.join("\n");
    let position = &blocks(&b_text, "position")[0];
    let lat: f64 = field(position, "latitude").unwrap().parse().unwrap();
    let lon: f64 = field(position, "longitude").unwrap().parse().unwrap();
    assert!((lat - 48.8618).abs() < 1e-3 && (lon - 2.3469).abs() < 1e-3);
    assert_eq!(field(b, "occupancy_status"), Some("FULL"));
    let percentage: i32 = field(b, "occupancy_percentage").unwrap().parse().unwrap();
    assert!(percentage > 0, "{percentage}");

    // Every configured car, in order; only car 3 has data.
    let cars = blocks(&b_text, "multi_carriage_details");
    let sequences: Vec<&str> = cars
        .iter()
        .map(|c| field(c, "carriage_sequence").unwrap())
        .collect();
    assert_eq!(sequences, ["1", "2", "3", "4", "5", "6", "7", "8"]);
    for car in &cars {
        if field(car, "carriage_sequence") == Some("3") {
            assert_eq!(field(car, "occupancy_status"), Some("FULL"));
            assert_ne!(field(car, "occupancy_percentage"), Some("-1"));
        } else {
            assert_eq!(field(car, "occupancy_status"), Some("NO_DATA_AVAILABLE"));
            assert_eq!(field(car, "occupancy_percentage"), Some("-1"));
        }
    }

    // Route C has no configured car count: cars up to the highest reported.
    let c = entities
        .iter()
        .find(|e| e.iter().any(|l| l == "trip_id: \"FEED-C1\""))
        .expect("train FEED-C1");
    let c_cars = blocks(&c.join("\n"), "multi_carriage_details");
    assert_eq!(c_cars.len(), 2);
    assert_eq!(
        field(&c_cars[1], "occupancy_status"),
        Some("MANY_SEATS_AVAILABLE")
    );

    // The JSON view says the same.
    let json = http_get(http, "/gtfs-rt/vehicle-positions?format=json").await;
    assert_eq!(json.status, 200);
    assert!(
        json.headers
            .to_ascii_lowercase()
            .contains("application/json")
    );
    let json: serde_json::Value = serde_json::from_slice(&json.body).expect("JSON");
    assert_eq!(json["header"]["gtfs_realtime_version"], "2.0");
    assert_eq!(json["header"]["incrementality"], "FULL_DATASET");
    let entity = json["entity"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["vehicle"]["trip"]["trip_id"] == "FEED-B1")
        .expect("FEED-B1 in JSON");
    assert_eq!(entity["vehicle"]["occupancy_status"], "FULL");
    let cars = entity["vehicle"]["multi_carriage_details"]
        .as_array()
        .unwrap();
    assert_eq!(cars.len(), 8);
    assert_eq!(cars[0]["occupancy_status"], "NO_DATA_AVAILABLE");
    assert_eq!(cars[0]["occupancy_percentage"], -1);
    assert_eq!(cars[2]["occupancy_status"], "FULL");

    // The route filter keeps only route C's train.
    let only_c = http_get(http, "/gtfs-rt/vehicle-positions?route_id=C").await;
    assert_eq!(only_c.status, 200);
    let only_c = protoc_decode(&only_c.body);
    assert_eq!(blocks(&only_c, "entity").len(), 1, "{only_c}");
    assert!(only_c.contains("trip_id: \"FEED-C1\""), "{only_c}");
    let none = http_get(http, "/gtfs-rt/vehicle-positions?route_id=Z&format=json").await;
    let none: serde_json::Value = serde_json::from_slice(&none.body).unwrap();
    assert_eq!(none["entity"].as_array().unwrap().len(), 0);

    // An unknown format is refused with a reason.
    let bad = http_get(http, "/gtfs-rt/vehicle-positions?format=xml").await;
    assert_eq!(bad.status, 400);
    assert_eq!(
        bad.text(),
        "format: `xml` is not supported; use `json` or `pb` (the default)\n"
    );

    stack.shutdown().await.expect("clean shutdown");
}
