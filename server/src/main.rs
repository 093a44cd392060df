//! The `crowd-server` binary: parses flags, binds, and runs the server until
//! SIGINT or SIGTERM.

use anyhow::Context;
use clap::Parser;
use tracing_subscriber::EnvFilter;

use crowd_server::Config;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .init();
    let config = Config::parse();
    let grpc = tokio::net::TcpListener::bind(config.grpc_addr)
        .await
        .with_context(|| format!("binding gRPC address {}", config.grpc_addr))?;
    let http = tokio::net::TcpListener::bind(config.http_addr)
        .await
        .with_context(|| format!("binding HTTP address {}", config.http_addr))?;
    crowd_server::run(config, grpc, http, crowd_proto::shutdown::signal()).await?;
    Ok(())
}
