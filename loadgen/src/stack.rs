//! The whole system in one process: a private redis-server (unless a
//! `REDIS_URL` is given), the real gRPC server on port 0 and the aggregator.
//! Used by `loadgen demo`, by the benchmark runner and by end-to-end tests.

use std::net::SocketAddr;

use anyhow::Context;
use clap::Parser;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::redis_process::RedisServer;

/// What to start.
#[derive(Debug, Clone)]
pub struct StackOptions {
    /// Use this Redis instead of starting a private one.
    pub redis_url: Option<String>,
    /// Partitions (`--partitions` of both processes).
    pub partitions: u16,
    /// How many aggregators share the partitions.
    pub aggregators: usize,
    /// Extra server flags, e.g. `["--max-carriage", "12"]`.
    pub server_args: Vec<String>,
    /// Extra aggregator flags, e.g. `["--half-life-secs", "60"]`.
    pub aggregator_args: Vec<String>,
    /// gRPC listen address; port 0 (any free port) when `None`.
    pub grpc_addr: Option<SocketAddr>,
    /// HTTP listen address; port 0 (any free port) when `None`.
    pub http_addr: Option<SocketAddr>,
}

impl Default for StackOptions {
    fn default() -> Self {
        StackOptions {
            redis_url: None,
            partitions: crowd_proto::layout::DEFAULT_PARTITIONS,
            aggregators: 1,
            server_args: Vec::new(),
            aggregator_args: Vec::new(),
            grpc_addr: None,
            http_addr: None,
        }
    }
}

/// A running stack, stopped by [`Stack::shutdown`]. Dropped without it, its
/// tasks end with the runtime and its private Redis is killed.
#[derive(Debug)]
pub struct Stack {
    redis: Option<RedisServer>,
    redis_url: String,
    grpc_addr: SocketAddr,
    http_addr: SocketAddr,
    stop: CancellationToken,
    server: JoinHandle<Result<(), crowd_server::ServerError>>,
    aggregators: Vec<JoinHandle<Result<(), crowd_aggregator::AggregatorError>>>,
    options: StackOptions,
}

impl Stack {
    /// Starts Redis (if needed), the server and the aggregators.
    pub async fn start(options: StackOptions) -> anyhow::Result<Stack> {
        let (redis, redis_url) = match &options.redis_url {
            Some(url) => (None, url.clone()),
            None => {
                let redis =
                    tokio::task::spawn_blocking(|| RedisServer::start_with(Default::default()))
                        .await??;
                let url = redis.url();
                (Some(redis), url)
            }
        };
        let stop = CancellationToken::new();
        let grpc = bind(options.grpc_addr).await?;
        let http = bind(options.http_addr).await?;
        let grpc_addr = grpc.local_addr()?;
        let http_addr = http.local_addr()?;
        let server_config = crowd_server::Config::try_parse_from(server_flags(
            &redis_url,
            options.partitions,
            &options.server_args,
        ))
        .context("server flags")?;
        let server = tokio::spawn(crowd_server::run(
            server_config,
            grpc,
            http,
            stop.clone().cancelled_owned(),
        ));
        let mut stack = Stack {
            redis,
            redis_url,
            grpc_addr,
            http_addr,
            stop,
            server,
            aggregators: Vec::new(),
            options,
        };
        for _ in 0..stack.options.aggregators {
            stack.add_aggregator(&[])?;
        }
        Ok(stack)
    }

    /// Starts one more aggregator with extra flags (on top of the stack's).
    pub fn add_aggregator(&mut self, extra: &[&str]) -> anyhow::Result<()> {
        let mut args = self.options.aggregator_args.clone();
        args.extend(extra.iter().map(|s| s.to_string()));
        let config = self.aggregator_config(&args)?;
        self.aggregators.push(tokio::spawn(crowd_aggregator::run(
            config,
            self.stop.clone().cancelled_owned(),
        )));
        Ok(())
    }

    /// The aggregator configuration this stack would use, with extra flags.
    pub fn aggregator_config(&self, extra: &[String]) -> anyhow::Result<crowd_aggregator::Config> {
        let mut flags = vec![
            "crowd-aggregator".to_owned(),
            "--redis-url".to_owned(),
            self.redis_url.clone(),
            "--partitions".to_owned(),
            self.options.partitions.to_string(),
        ];
        flags.extend(extra.iter().cloned());
        crowd_aggregator::Config::try_parse_from(flags).context("aggregator flags")
    }

    pub fn grpc_addr(&self) -> SocketAddr {
        self.grpc_addr
    }

    /// `http://<grpc addr>`, what gRPC clients connect to.
    pub fn grpc_url(&self) -> String {
        format!("http://{}", self.grpc_addr)
    }

    pub fn http_addr(&self) -> SocketAddr {
        self.http_addr
    }

    pub fn redis_url(&self) -> &str {
        &self.redis_url
    }

    /// The private Redis, when this stack started one.
    pub fn redis(&mut self) -> Option<&mut RedisServer> {
        self.redis.as_mut()
    }

    /// Stops server and aggregators gracefully, then Redis.
    pub async fn shutdown(self) -> anyhow::Result<()> {
        self.stop.cancel();
        let server = self.server.await?;
        for aggregator in self.aggregators {
            aggregator.await??;
        }
        server?;
        Ok(())
    }
}

/// Binds `addr`, or any free loopback port when it is `None` or taken.
async fn bind(addr: Option<SocketAddr>) -> std::io::Result<TcpListener> {
    if let Some(addr) = addr {
        match TcpListener::bind(addr).await {
            Ok(listener) => return Ok(listener),
            Err(e) => tracing::warn!(%addr, error = %e, "address taken; using a free port"),
        }
    }
    TcpListener::bind("127.0.0.1:0").await
}

fn server_flags(redis_url: &str, partitions: u16, extra: &[String]) -> Vec<String> {
    let mut flags = vec![
        "crowd-server".to_owned(),
        "--redis-url".to_owned(),
        redis_url.to_owned(),
        "--partitions".to_owned(),
        partitions.to_string(),
    ];
    flags.extend(extra.iter().cloned());
    flags
}
