//! The `crowd-aggregator` binary: flags, logs, signals, then [`crowd_aggregator::run`].

use anyhow::Context;
use clap::Parser;
use crowd_aggregator::Config;
use tracing_subscriber::EnvFilter;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .init();
    let config = Config::parse();
    tracing::info!(partitions = config.partitions, "crowd-aggregator starting");
    crowd_aggregator::run(config, crowd_proto::shutdown::signal())
        .await
        .context("aggregator stopped")?;
    tracing::info!("crowd-aggregator stopped");
    Ok(())
}
