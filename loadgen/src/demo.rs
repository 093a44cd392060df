//! `loadgen demo`: the whole system on one machine, with riders.
//!
//! Starts a private redis-server (unless `REDIS_URL` is set), the server and
//! the aggregator in-process, then plays a compressed morning rush on the
//! sample network: simulated riders stream reports, and a live table shows,
//! for every running train, the estimated crowding next to the simulator's
//! truth, car by car.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context;
use chrono::{NaiveDateTime, Utc};
use crowd_proto::level::Level;
use crowd_proto::pb::v1::occupancy_service_client::OccupancyServiceClient;
use crowd_proto::pb::v1::report_service_client::ReportServiceClient;
use crowd_proto::pb::v1::{AckStatus, GetOccupancyRequest, OccupancyEstimate};
use tokio_stream::StreamExt;

use crate::sim::{Network, Scenario, Simulation, TrainTruth};
use crate::stack::{Stack, StackOptions};

/// Options of `loadgen demo`.
#[derive(Debug, Clone, clap::Args)]
pub struct DemoArgs {
    /// Use this Redis instead of starting a private one.
    #[arg(long, env = "REDIS_URL")]
    pub redis_url: Option<String>,
    /// gRPC address for other clients (grpcurl, loadgen run); a free port if taken.
    #[arg(long, env = "CROWD_GRPC_ADDR", default_value = "127.0.0.1:50051")]
    pub grpc_addr: SocketAddr,
    /// HTTP address (health, feeds, metrics); a free port if taken.
    #[arg(long, env = "CROWD_HTTP_ADDR", default_value = "127.0.0.1:8080")]
    pub http_addr: SocketAddr,
    /// Reports per second sent by the simulated riders (wall clock).
    #[arg(long, default_value_t = 40.0)]
    pub rate: f64,
    /// Simulated minutes per real second.
    #[arg(long, default_value_t = 0.25)]
    pub speed: f64,
    /// Simulated time of day the rush starts at (HH:MM).
    #[arg(long, default_value = "07:40")]
    pub start: String,
    /// Stop after this many seconds (0 = run until Ctrl-C).
    #[arg(long, default_value_t = 0)]
    pub duration_secs: u64,
    /// Seconds between two refreshes of the table.
    #[arg(long, default_value_t = 2)]
    pub refresh_secs: u64,
    /// Seed of the simulation.
    #[arg(long, default_value_t = 7)]
    pub seed: u64,
    /// A network file (TOML, see loadgen/networks/) instead of the built-in
    /// sample line B.
    #[arg(long)]
    pub network: Option<std::path::PathBuf>,
}

/// Runs the demo until Ctrl-C or `--duration-secs`.
pub async fn run(args: DemoArgs) -> anyhow::Result<()> {
    anyhow::ensure!(args.rate > 0.0, "--rate must be > 0 (got {})", args.rate);
    let start_time = chrono::NaiveTime::parse_from_str(&args.start, "%H:%M")
        .with_context(|| format!("--start {:?}: expected HH:MM", args.start))?;
    // The server learns the stations and train lengths of the very network
    // the riders ride, so the live page draws trains along the line.
    let network = match &args.network {
        Some(path) => Network::from_file(path)?,
        None => Network::sample(),
    };
    let gtfs = tempfile::Builder::new()
        .prefix("crowd-demo-gtfs-")
        .tempdir()?;
    crate::sim::gtfs_export::write(&network, gtfs.path()).context("writing the demo's GTFS")?;
    let cars: Vec<String> = network
        .lines
        .iter()
        .map(|l| format!("{}={}", l.id, l.cars))
        .collect();
    let stack = Stack::start(StackOptions {
        redis_url: args.redis_url.clone(),
        grpc_addr: Some(args.grpc_addr),
        http_addr: Some(args.http_addr),
        server_args: vec![
            "--gtfs".into(),
            gtfs.path().display().to_string(),
            "--cars-per-route".into(),
            cars.join(","),
        ],
        ..StackOptions::default()
    })
    .await?;
    eprintln!(
        "crowd is running: gRPC {} · HTTP {} (live page: http://{}/) · Redis {}",
        stack.grpc_addr(),
        stack.http_addr(),
        stack.http_addr(),
        stack.redis_url()
    );

    let result = play(&stack, &args, network, start_time).await;
    stack.shutdown().await?;
    result
}

async fn play(
    stack: &Stack,
    args: &DemoArgs,
    network: Network,
    start_time: chrono::NaiveTime,
) -> anyhow::Result<()> {
    let today = Utc::now().date_naive();
    let sim_start = NaiveDateTime::new(today, start_time);
    let mut sim = Simulation::new(network, Scenario::default(), args.seed);
    sim.advance_to(sim_start);

    let mut reports = ReportServiceClient::connect(stack.grpc_url()).await?;
    let mut occupancy = OccupancyServiceClient::connect(stack.grpc_url()).await?;
    let (tx, rx) = tokio::sync::mpsc::channel(1024);
    let mut acks = reports
        .stream_reports(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await?
        .into_inner();
    let counts = std::sync::Arc::new(AckCounts::default());
    let ack_counts = counts.clone();
    tokio::spawn(async move {
        while let Some(Ok(ack)) = acks.next().await {
            ack_counts.record(ack.status());
        }
    });

    let began = tokio::time::Instant::now();
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    let mut next_table = began;
    let mut owed = 0.0;
    let stop = tokio::signal::ctrl_c();
    tokio::pin!(stop);
    loop {
        tokio::select! {
            _ = &mut stop => break,
            _ = tick.tick() => {}
        }
        let elapsed = began.elapsed();
        if args.duration_secs > 0 && elapsed.as_secs() >= args.duration_secs {
            break;
        }
        let sim_now = sim_start
            + chrono::Duration::milliseconds(
                (elapsed.as_secs_f64() * args.speed * 60_000.0) as i64,
            );
        sim.advance_to(sim_now);
        owed += args.rate * 0.1;
        while owed >= 1.0 {
            owed -= 1.0;
            if let Some(report) = sim.sample_report(Utc::now()) {
                tx.send(report.report)
                    .await
                    .context("report stream closed")?;
            }
        }
        if tokio::time::Instant::now() >= next_table {
            next_table += Duration::from_secs(args.refresh_secs.max(1));
            let truths = sim.trains();
            let trips = truths.iter().map(|t| t.trip.clone()).collect();
            let estimates = occupancy
                .get_occupancy(GetOccupancyRequest { trips })
                .await?
                .into_inner()
                .estimates;
            print!("{}", render(sim_now, &truths, &estimates, &counts));
        }
    }
    Ok(())
}

/// Acks received so far, by status.
#[derive(Debug, Default)]
struct AckCounts {
    accepted: std::sync::atomic::AtomicU64,
    rejected: std::sync::atomic::AtomicU64,
    duplicate: std::sync::atomic::AtomicU64,
}

impl AckCounts {
    fn record(&self, status: AckStatus) {
        use std::sync::atomic::Ordering::Relaxed;
        match status {
            AckStatus::Accepted => self.accepted.fetch_add(1, Relaxed),
            AckStatus::Duplicate => self.duplicate.fetch_add(1, Relaxed),
            _ => self.rejected.fetch_add(1, Relaxed),
        };
    }
}

/// The live table: one line per running train, estimate next to truth.
fn render(
    sim_now: NaiveDateTime,
    truths: &[TrainTruth],
    estimates: &[OccupancyEstimate],
    counts: &AckCounts,
) -> String {
    use std::fmt::Write;
    use std::sync::atomic::Ordering::Relaxed;
    let mut out = String::from("\x1b[2J\x1b[H");
    let _ = writeln!(
        out,
        "crowd demo · simulated time {} · reports accepted {} rejected {} duplicate {}\n",
        sim_now.format("%H:%M:%S"),
        counts.accepted.load(Relaxed),
        counts.rejected.load(Relaxed),
        counts.duplicate.load(Relaxed),
    );
    let _ = writeln!(
        out,
        "{:<14} {:>5}  {:<13} {:<13} {:>5} {:>4}  cars est / true (1=empty … 7=not boarding, · = no data)",
        "train", "route", "estimated", "true", "conf", "rep"
    );
    for truth in truths {
        let estimate = estimates.iter().find(|e| {
            e.trip.as_ref().is_some_and(|t| {
                t.trip_id == truth.trip.trip_id && t.start_date == truth.trip.start_date
            })
        });
        let est_level = estimate.and_then(|e| Level::from_number(e.level));
        let est_cars: String = truth
            .cars
            .iter()
            .map(|car| {
                estimate
                    .and_then(|e| {
                        e.cars
                            .iter()
                            .find(|c| c.carriage_sequence == car.carriage_sequence)
                    })
                    .and_then(|c| Level::from_number(c.level))
                    .map_or('·', digit)
            })
            .collect();
        let true_cars: String = truth.cars.iter().map(|c| digit(c.level)).collect();
        let _ = writeln!(
            out,
            "{:<14} {:>5}  {:<13} {:<13} {:>5} {:>4}  {est_cars} / {true_cars}",
            truth.trip.trip_id,
            truth.trip.route_id,
            est_level.map_or("—".to_owned(), |l| l.label().to_owned()),
            truth.level.label(),
            estimate.map_or("—".to_owned(), |e| format!("{:.2}", e.confidence)),
            estimate.map_or(0, |e| e.reporters),
        );
    }
    out
}

fn digit(level: Level) -> char {
    char::from(b'0' + level.number() as u8)
}
