//! The server as a process of its own, so its CPU time and resident memory
//! are measured apart from the load generator's (which shares a process with
//! whatever runs in-process). Used when a `crowd-server` binary sits next to
//! the running `loadgen` (`cargo build --release -p crowd-server`).

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
    let exe = std::env::current_exe().ok()?;
    let candidate = exe.parent()?.join("crowd-server");
    candidate.is_file().then_some(candidate)
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
