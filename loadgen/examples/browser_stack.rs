//! The whole system for the live page's browser test, steered line by line on
//! standard input.
//!
//! Starts a private Redis, the server (with the extra server flags given on
//! the command line, e.g. `--cars-per-route B=8`) and the aggregator, prints
//! `ready http=ADDR grpc=ADDR`, then obeys one command per line:
//!
//! - `report DEVICE TRIP CAR LEVEL [LAT LON]`: submits a report on route B,
//!   observed now, and prints `ack STATUS`;
//! - `stop`: shuts everything down and prints `stopped`.
//!
//! Standard input closing stops it too. Errors are printed as `error ...`
//! and do not end the session, so the driving test sees what went wrong.

use std::time::Duration;

use anyhow::Context;
use crowd_loadgen::stack::{Stack, StackOptions};
use crowd_proto::pb::v1::report_service_client::ReportServiceClient;
use crowd_proto::pb::v1::{CrowdingReport, GeoPoint, TripRef};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let stack = Stack::start(StackOptions {
        server_args: std::env::args().skip(1).collect(),
        ..StackOptions::default()
    })
    .await?;
    let mut client = ReportServiceClient::connect(stack.grpc_url()).await?;
    println!(
        "ready http={} grpc={}",
        stack.http_addr(),
        stack.grpc_addr()
    );

    let mut lines = stdin_lines();
    let mut sent = 0u64;
    while let Some(line) = lines.recv().await {
        let words: Vec<&str> = line.split_whitespace().collect();
        match words.as_slice() {
            ["report", rest @ ..] => {
                sent += 1;
                let outcome = match report(rest, sent) {
                    Ok(report) => client
                        .submit_report(report)
                        .await
                        .map(|ack| format!("ack {:?}", ack.into_inner().status()))
                        .map_err(anyhow::Error::from),
                    Err(e) => Err(e),
                };
                match outcome {
                    Ok(ack) => println!("{ack}"),
                    Err(e) => println!("error {e:#}"),
                }
            }
            ["stop"] => break,
            [] => {}
            _ => println!("error unknown command: {line}"),
        }
    }
    tokio::time::timeout(Duration::from_secs(15), stack.shutdown())
        .await
        .context("shutdown took over 15 s")??;
    println!("stopped");
    Ok(())
}

/// Lines of standard input, read on a thread of their own; the channel
/// closes with standard input.
fn stdin_lines() -> tokio::sync::mpsc::Receiver<String> {
    let (tx, rx) = tokio::sync::mpsc::channel(16);
    std::thread::spawn(move || {
        for line in std::io::stdin().lines() {
            let Ok(line) = line else { break };
            if tx.blocking_send(line).is_err() {
                break;
            }
        }
    });
    rx
}

/// `DEVICE TRIP CAR LEVEL [LAT LON]` as a report of today's run on route B.
fn report(words: &[&str], n: u64) -> anyhow::Result<CrowdingReport> {
    let (device, trip_id, car, level, position) = match words {
        [device, trip, car, level] => (device, trip, car, level, None),
        [device, trip, car, level, lat, lon] => (
            device,
            trip,
            car,
            level,
            Some(GeoPoint {
                latitude: lat.parse().context("latitude")?,
                longitude: lon.parse().context("longitude")?,
                accuracy_m: 20.0,
            }),
        ),
        _ => anyhow::bail!("usage: report DEVICE TRIP CAR LEVEL [LAT LON]"),
    };
    let now = chrono::Utc::now() - chrono::Duration::milliseconds(200);
    Ok(CrowdingReport {
        report_id: format!("page-{}-{n}", now.timestamp_millis()),
        device_id: (*device).to_owned(),
        trip: Some(TripRef {
            trip_id: (*trip_id).to_owned(),
            start_date: now.format("%Y%m%d").to_string(),
            route_id: "B".into(),
        }),
        carriage_sequence: car.parse().context("car")?,
        level: level.parse().context("level")?,
        occupancy_percentage: None,
        observed_at: Some(prost_types::Timestamp {
            seconds: now.timestamp(),
            nanos: now.timestamp_subsec_nanos() as i32,
        }),
        position,
        stop_id: String::new(),
    })
}
