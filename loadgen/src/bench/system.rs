//! The system under test of one probe, on a fresh private Redis: the server
//! as its own process when its binary is built (so its CPU and memory are
//! measured apart), otherwise the in-process [`Stack`]; with the server
//! apart, the aggregator is its own process too when its binary is built,
//! else it runs in this process.

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::child::{self, AggregatorProcess, ServerProcess};
use crate::redis_process::RedisServer;
use crate::stack::{Stack, StackOptions};

/// A running system, stopped by [`System::shutdown`].
#[derive(Debug)]
pub enum System {
    /// Server, aggregator and load generator share this process.
    InProcess(Box<Stack>),
    /// The server is a child process; the aggregator is one or runs in
    /// this one.
    Split {
        redis: RedisServer,
        server: ServerProcess,
        aggregator: Aggregator,
    },
}

/// Where the aggregator of a split system runs.
#[derive(Debug)]
pub enum Aggregator {
    /// In this process, next to the load generator.
    InProcess {
        stop: CancellationToken,
        task: JoinHandle<Result<(), crowd_aggregator::AggregatorError>>,
    },
    /// A `crowd-aggregator` child.
    Process(AggregatorProcess),
}

impl System {
    /// Starts Redis, the server and one aggregator with `partitions`.
    pub async fn start(partitions: u16) -> anyhow::Result<System> {
        let Some(binary) = child::find_binary() else {
            let stack = Stack::start(StackOptions {
                partitions,
                server_args: vec![
                    "--device-rate-per-min".into(),
                    "0".into(),
                    "--device-secret".into(),
                    "crowd-bench-secret".into(),
                ],
                ..StackOptions::default()
            })
            .await?;
            return Ok(System::InProcess(Box::new(stack)));
        };
        let redis =
            tokio::task::spawn_blocking(|| RedisServer::start_with(Default::default())).await??;
        let url = redis.url();
        let server =
            tokio::task::spawn_blocking(move || ServerProcess::start(&binary, &url, partitions))
                .await??;
        if let Some(binary) = child::find_aggregator() {
            let url = redis.url();
            let aggregator = tokio::task::spawn_blocking(move || {
                AggregatorProcess::start(&binary, &url, partitions)
            })
            .await??;
            return Ok(System::Split {
                redis,
                server,
                aggregator: Aggregator::Process(aggregator),
            });
        }
        let config = {
            use clap::Parser;
            crowd_aggregator::Config::try_parse_from([
                "crowd-aggregator".to_owned(),
                "--redis-url".to_owned(),
                redis.url(),
                "--partitions".to_owned(),
                partitions.to_string(),
            ])?
        };
        let stop = CancellationToken::new();
        let task = tokio::spawn(crowd_aggregator::run(
            config,
            stop.clone().cancelled_owned(),
        ));
        Ok(System::Split {
            redis,
            server,
            aggregator: Aggregator::InProcess { stop, task },
        })
    }

    pub fn redis_url(&self) -> String {
        match self {
            System::InProcess(stack) => stack.redis_url().to_owned(),
            System::Split { redis, .. } => redis.url(),
        }
    }

    pub fn grpc_url(&self) -> String {
        match self {
            System::InProcess(stack) => stack.grpc_url(),
            System::Split { server, .. } => server.grpc_url(),
        }
    }

    /// The server's own process, when it has one.
    pub fn server_pid(&self) -> Option<u32> {
        match self {
            System::InProcess(_) => None,
            System::Split { server, .. } => Some(server.pid()),
        }
    }

    /// The aggregator's own process, when it has one.
    pub fn aggregator_pid(&self) -> Option<u32> {
        match self {
            System::Split {
                aggregator: Aggregator::Process(p),
                ..
            } => Some(p.pid()),
            _ => None,
        }
    }

    /// Stops everything; Redis and child processes are killed.
    pub async fn shutdown(self) -> anyhow::Result<()> {
        match self {
            System::InProcess(stack) => stack.shutdown().await,
            System::Split {
                redis,
                server,
                aggregator,
            } => {
                match aggregator {
                    Aggregator::InProcess { stop, task } => {
                        stop.cancel();
                        task.await??;
                    }
                    Aggregator::Process(p) => drop(p),
                }
                drop(server);
                drop(redis);
                Ok(())
            }
        }
    }
}
