//! The whole system for the live page's browser test, steered line by line on
//! standard input.
//!
//! Starts a private Redis, the server (with the extra server flags given on
//! the command line, e.g. `--cars-per-route B=8`) and the aggregator, prints
//! `ready http=ADDR grpc=ADDR`, then obeys one command per line:
//!
//! - `report DEVICE TRIP CAR LEVEL [LAT LON]`: submits a report on route B,
//!   observed now, and prints `ack STATUS`;
//! - `stop`: shuts everything down and prints `stopped`;
//! - `start`: starts it all again, with a new Redis, on the same addresses,
//!   and prints `ready ...` again.
//!
//! Standard input closing ends it. Errors are printed as `error ...`
//! and do not end the session, so the driving test sees what went wrong.

use std::net::SocketAddr;
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
    let server_args: Vec<String> = std::env::args().skip(1).collect();
    let mut running = Some(Running::start(&server_args, None).await?);
    let addrs = running
        .as_ref()
        .map(|r| (r.stack.http_addr(), r.stack.grpc_addr()));

    let mut lines = stdin_lines();
    let mut sent = 0u64;
    while let Some(line) = lines.recv().await {
        let words: Vec<&str> = line.split_whitespace().collect();
        match (words.as_slice(), running.as_mut()) {
            (["report", rest @ ..], Some(run)) => {
                sent += 1;
                match run.submit(rest, sent).await {
                    Ok(ack) => println!("{ack}"),
                    Err(e) => println!("error {e:#}"),
                }
            }
            (["stop"], Some(_)) => {
                if let Some(run) = running.take() {
                    run.stop().await?;
                }
                println!("stopped");
            }
            (["start"], None) => running = Some(Running::start(&server_args, addrs).await?),
            ([], _) => {}
            (_, None) => println!("error stopped: {line}"),
            (_, Some(_)) => println!("error unknown command or already running: {line}"),
        }
    }
    if let Some(run) = running {
        run.stop().await?;
    }
    Ok(())
}

/// A started stack with a client of it.
struct Running {
    stack: Stack,
    client: ReportServiceClient<tonic::transport::Channel>,
}

impl Running {
    /// Starts the stack (on `addrs`, the HTTP and gRPC addresses, when
    /// given) and prints `ready`.
    async fn start(
        server_args: &[String],
        addrs: Option<(SocketAddr, SocketAddr)>,
    ) -> anyhow::Result<Running> {
        let stack = Stack::start(StackOptions {
            server_args: server_args.to_vec(),
            http_addr: addrs.map(|(http, _)| http),
            grpc_addr: addrs.map(|(_, grpc)| grpc),
            ..StackOptions::default()
        })
        .await?;
        let client = ReportServiceClient::connect(stack.grpc_url()).await?;
        println!(
            "ready http={} grpc={}",
            stack.http_addr(),
            stack.grpc_addr()
        );
        Ok(Running { stack, client })
    }

    async fn submit(&mut self, words: &[&str], n: u64) -> anyhow::Result<String> {
        let ack = self.client.submit_report(report(words, n)?).await?;
        Ok(format!("ack {:?}", ack.into_inner().status()))
    }

    async fn stop(self) -> anyhow::Result<()> {
        tokio::time::timeout(Duration::from_secs(15), self.stack.shutdown())
            .await
            .context("shutdown took over 15 s")?
    }
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
