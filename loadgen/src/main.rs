//! `loadgen`: load tests and demos of the crowd service.
//!
//! - `loadgen run --target URL ...`: the open-loop load driver; prints a
//!   summary, optionally writes it as JSON, and exits non-zero when the run
//!   is invalid or misses a threshold.
//! - `loadgen demo`: the whole system on one machine with simulated riders.
//! - `loadgen bench`: the end-to-end benchmark; writes JSON and markdown.
//! - `loadgen quality`: estimate quality against the simulator's truth.
//! - `loadgen sample-gtfs --out DIR`: the sample network as a GTFS feed.

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use crowd_loadgen::{bench, demo, driver, quality};

/// mimalloc, as in the server: the driver's thousands of gRPC streams
/// allocate and free small buffers across threads all the time.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Debug, Parser)]
#[command(name = "loadgen", version, about = "Load generator and demo for crowd")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Load-test a running server with simulated riders.
    ///
    /// Reports arrive as a Poisson process at --rate (or following
    /// --schedule), spread over --streams StreamReports streams. Latency is
    /// measured from each report's intended send time, so a slow server
    /// cannot slow the load down and hide its own latency. The run is INVALID
    /// when the generator itself falls behind its schedule.
    ///
    /// Schedules: `step:10s@1000,10s@5000` (1000/s for 10 s, then 5000/s for
    /// 10 s) or `ramp:1000..20000/60s` (linear ramp over 60 s); after its end
    /// the last rate holds until --duration, which defaults to the schedule's
    /// length. Durations: 500ms, 10s, 2m, 1h or plain seconds.
    ///
    /// Prints a progress line every second on stderr and a summary at the
    /// end; exits non-zero when the run is invalid or misses a threshold.
    Run(Box<driver::RunArgs>),
    /// Run the whole system locally and watch estimates follow the truth.
    Demo(demo::DemoArgs),
    /// Measure the system on this machine: store ceiling, sustained rates
    /// (firehose and sparse), the aggregator alone, latency at half load,
    /// CPU and memory. Prints a markdown table and writes JSON and markdown
    /// under --out.
    Bench(bench::BenchArgs),
    /// Measure estimate quality: the default and adversarial scenarios (with
    /// a swarm on one train) through a compressed rush, scored against the
    /// truth; `--assert` fails unless the quality bar is met.
    Quality(quality::QualityArgs),
    /// Write the sample network as a GTFS static feed (for `crowd-server --gtfs`).
    SampleGtfs {
        /// Folder to write agency.txt, routes.txt, stops.txt, ... into.
        #[arg(long, default_value = "loadgen/sample-gtfs")]
        out: std::path::PathBuf,
    },
}

#[tokio::main]
async fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let result = match Cli::parse().command {
        Command::Run(args) => run(*args).await,
        Command::Demo(args) => demo::run(args).await.map(|()| ExitCode::SUCCESS),
        Command::Bench(args) => bench::run(args).await.map(|report| {
            if let Some(report) = report {
                print!("{}", report.markdown());
            }
            ExitCode::SUCCESS
        }),
        Command::Quality(args) => quality_run(args).await,
        Command::SampleGtfs { out } => {
            crowd_loadgen::sim::gtfs_export::write(&crowd_loadgen::sim::Network::sample(), &out)
                .map(|()| ExitCode::SUCCESS)
                .map_err(|e| anyhow::anyhow!("writing {}: {e}", out.display()))
        }
    };
    result.unwrap_or_else(|error| {
        eprintln!("loadgen: {error:#}");
        ExitCode::from(2)
    })
}

/// `loadgen run`: 0 when the run passed, 1 when it was invalid or missed a
/// threshold, 2 (from `main`) when it could not run at all.
async fn run(args: driver::RunArgs) -> anyhow::Result<ExitCode> {
    let summary = driver::run(args).await?;
    print!("{summary}");
    if summary.passed() {
        return Ok(ExitCode::SUCCESS);
    }
    for failure in &summary.failures {
        eprintln!("loadgen run failed: {failure}");
    }
    Ok(ExitCode::FAILURE)
}

/// `loadgen quality`: 1 when `--assert` is given and the bar is missed.
async fn quality_run(args: quality::QualityArgs) -> anyhow::Result<ExitCode> {
    let measured = quality::run(&args).await?;
    print!("{measured}");
    if let Some(path) = &args.json {
        std::fs::write(path, serde_json::to_vec_pretty(&measured)?)?;
    }
    if args.assert && !measured.failures.is_empty() {
        return Ok(ExitCode::FAILURE);
    }
    Ok(ExitCode::SUCCESS)
}
