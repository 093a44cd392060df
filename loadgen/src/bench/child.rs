//! The server and the aggregator as processes of their own, so their CPU
//! time and resident memory are measured apart from the load generator's
//! (which shares a process with whatever runs in-process), and so the load
//! generator's thousands of tasks do not share a runtime with the
//! aggregator's loop. Used when the `crowd-server` / `crowd-aggregator`
//! binaries sit next to the running `loadgen` (`cargo build --release -p
//! crowd-server -p crowd-aggregator`).

use std::net::{Ipv4Addr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::Context;

/// A running `crowd-server` child, killed on drop.
#[derive(Debug)]
pub struct ServerProcess {
    child: Child,
    grpc_port: u16,
}

/// The `crowd-server` binary next to this executable, if built.
pub fn find_binary() -> Option<PathBuf> {
    sibling("crowd-server")
}

/// The `crowd-aggregator` binary next to this executable, if built.
pub fn find_aggregator() -> Option<PathBuf> {
    sibling("crowd-aggregator")
}

fn sibling(name: &str) -> Option<PathBuf> {
    let exe = std::env::current_exe().ok()?;
    let candidate = exe.parent()?.join(name);
    candidate.is_file().then_some(candidate)
}

/// A running `crowd-aggregator` child, killed on drop.
#[derive(Debug)]
pub struct AggregatorProcess {
    child: Child,
}

impl AggregatorProcess {
    /// Starts the aggregator against `redis_url` (it connects and takes its
    /// leases by itself; the probe's warm-up covers that).
    pub fn start(
        binary: &PathBuf,
        redis_url: &str,
        partitions: u16,
    ) -> anyhow::Result<AggregatorProcess> {
        let mut child = Command::new(binary)
            .args(["--redis-url", redis_url])
            .args(["--partitions", &partitions.to_string()])
            .env("RUST_LOG", "error")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .with_context(|| format!("starting {}", binary.display()))?;
        std::thread::sleep(Duration::from_millis(100));
        if let Ok(Some(status)) = child.try_wait() {
            anyhow::bail!("crowd-aggregator exited at start: {status}");
        }
        Ok(AggregatorProcess { child })
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for AggregatorProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl ServerProcess {
    /// Starts the server against `redis_url` and waits until its gRPC port
    /// accepts connections.
    pub fn start(
        binary: &PathBuf,
        redis_url: &str,
        partitions: u16,
    ) -> anyhow::Result<ServerProcess> {
        let grpc_port = free_port()?;
        let http_port = free_port()?;
        let child = Command::new(binary)
            .args(["--redis-url", redis_url])
            .args(["--partitions", &partitions.to_string()])
            .args(["--grpc-addr", &format!("127.0.0.1:{grpc_port}")])
            .args(["--http-addr", &format!("127.0.0.1:{http_port}")])
            .args(["--device-rate-per-min", "0"])
            .args(["--device-secret", "crowd-bench-secret"])
            .env("RUST_LOG", "error")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .with_context(|| format!("starting {}", binary.display()))?;
        let mut server = ServerProcess { child, grpc_port };
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if TcpStream::connect((Ipv4Addr::LOCALHOST, grpc_port)).is_ok() {
                return Ok(server);
            }
            if let Ok(Some(status)) = server.child.try_wait() {
                anyhow::bail!("crowd-server exited at start: {status}");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        anyhow::bail!("crowd-server did not listen on port {grpc_port} within 10 s")
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// `http://127.0.0.1:<grpc port>`.
    pub fn grpc_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.grpc_port)
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> std::io::Result<u16> {
    Ok(TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?
        .local_addr()?
        .port())
}
