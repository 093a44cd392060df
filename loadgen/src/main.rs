//! `loadgen`: load tests and demos of the crowd service.
//!
//! - `loadgen run --target URL ...`: the open-loop load driver; prints a
//!   summary, optionally writes it as JSON, and exits non-zero when the run
//!   is invalid or misses a threshold.
//! - `loadgen demo`: the whole system on one machine with simulated riders.

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use crowd_loadgen::{demo, driver};

#[derive(Debug, Parser)]
#[command(name = "loadgen", version, about = "Load generator and demo for crowd")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Load-test a running server with simulated riders.
    Run(Box<driver::RunArgs>),
    /// Run the whole system locally and watch estimates follow the truth.
    Demo(demo::DemoArgs),
}

#[tokio::main]
async fn main() -> anyhow::Result<ExitCode> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    match Cli::parse().command {
        Command::Run(args) => {
            let summary = driver::run(*args).await?;
            print!("{summary}");
            if summary.passed() {
                Ok(ExitCode::SUCCESS)
            } else {
                for failure in &summary.failures {
                    eprintln!("loadgen run failed: {failure}");
                }
                Ok(ExitCode::FAILURE)
            }
        }
        Command::Demo(args) => {
            demo::run(args).await?;
            Ok(ExitCode::SUCCESS)
        }
    }
}
