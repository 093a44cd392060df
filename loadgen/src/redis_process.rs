//! Private `redis-server` processes for the demo and for tests.
//!
//! Each one listens on a free loopback port and keeps its files in its own
//! temporary directory, so tests run in parallel and never touch a shared
//! Redis; fault tests can kill, pause and restart it. The process is killed on
//! drop, and its log is printed when the owning thread is panicking (a failed
//! test shows what Redis said).

use std::io::{Read, Write};
use std::net::{Ipv4Addr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How to start a private Redis.
#[derive(Debug, Clone, Default)]
pub struct RedisOptions {
    /// `appendonly yes` with `appendfsync always`: every acknowledged write is
    /// on disk before Redis answers (used by durability tests).
    pub aof_always: bool,
    /// Extra `--name value` arguments.
    pub extra_args: Vec<String>,
}

/// A running private `redis-server`.
#[derive(Debug)]
pub struct RedisServer {
    child: Option<Child>,
    port: u16,
    dir: tempfile::TempDir,
    options: RedisOptions,
}

/// Why a private Redis could not be started.
#[derive(Debug, thiserror::Error)]
pub enum RedisProcessError {
    #[error(
        "redis-server was not found on PATH; install it (Debian/Ubuntu: `apt-get install redis-server`, macOS: `brew install redis`) or set REDIS_URL"
    )]
    NotInstalled,
    #[error("could not start redis-server: {0}")]
    Io(#[from] std::io::Error),
    #[error("redis-server did not answer PING on port {port} within 10 s; log:\n{log}")]
    NotReady { port: u16, log: String },
}

impl RedisServer {
    /// Starts a private Redis with default options; panics with install
    /// instructions when `redis-server` is missing (tests must not skip).
    pub fn start() -> RedisServer {
        Self::start_with(RedisOptions::default()).unwrap_or_else(|e| panic!("{e}"))
    }

    /// Starts a private Redis.
    pub fn start_with(options: RedisOptions) -> Result<RedisServer, RedisProcessError> {
        let binary = find_on_path("redis-server").ok_or(RedisProcessError::NotInstalled)?;
        let dir = tempfile::Builder::new().prefix("crowd-redis-").tempdir()?;
        let mut server = RedisServer {
            child: None,
            port: 0,
            dir,
            options,
        };
        // A port found free can be taken by someone else before Redis binds
        // it: try a few.
        let mut attempts = 0;
        loop {
            server.port = free_port()?;
            match server.spawn(&binary) {
                Ok(()) => return Ok(server),
                Err(e) if attempts >= 4 => return Err(e),
                Err(_) => attempts += 1,
            }
        }
    }

    /// `redis://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The data directory (AOF / RDB files, log).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// What Redis wrote to its log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    /// SIGKILL: no shutdown, no final save.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts Redis again on the same port with the same data directory.
    pub fn restart(&mut self) -> Result<(), RedisProcessError> {
        self.kill();
        let binary = find_on_path("redis-server").ok_or(RedisProcessError::NotInstalled)?;
        self.spawn(&binary)
    }

    /// SIGSTOP: Redis stops answering but keeps its connections open.
    pub fn pause(&self) {
        self.signal("-STOP");
    }

    /// SIGCONT after [`RedisServer::pause`].
    pub fn resume(&self) {
        self.signal("-CONT");
    }

    fn signal(&self, sig: &str) {
        if let Some(child) = &self.child {
            let _ = Command::new("kill")
                .arg(sig)
                .arg(child.id().to_string())
                .status();
        }
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("redis.log")
    }

    fn spawn(&mut self, binary: &Path) -> Result<(), RedisProcessError> {
        let mut cmd = Command::new(binary);
        cmd.arg("--port")
            .arg(self.port.to_string())
            .arg("--bind")
            .arg("127.0.0.1")
            .arg("--dir")
            .arg(self.dir.path())
            .arg("--logfile")
            .arg(self.log_path())
            .arg("--save")
            .arg("")
            .arg("--daemonize")
            .arg("no")
            .arg("--protected-mode")
            .arg("no");
        if self.options.aof_always {
            cmd.args(["--appendonly", "yes", "--appendfsync", "always"]);
        } else {
            cmd.args(["--appendonly", "no"]);
        }
        cmd.args(&self.options.extra_args);
        cmd.stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        self.child = Some(cmd.spawn()?);
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if ping(self.port) {
                return Ok(());
            }
            if let Some(child) = &mut self.child
                && let Ok(Some(_)) = child.try_wait()
            {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        self.kill();
        Err(RedisProcessError::NotReady {
            port: self.port,
            log: self.log(),
        })
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "---- redis-server log (port {}) ----\n{}",
                self.port,
                self.log()
            );
        }
        self.kill();
    }
}

/// Sends `PING` and expects `+PONG`.
fn ping(port: u16) -> bool {
    let Ok(mut stream) = TcpStream::connect((Ipv4Addr::LOCALHOST, port)) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_millis(500)));
    if stream.write_all(b"PING\r\n").is_err() {
        return false;
    }
    let mut buf = [0u8; 7];
    stream.read_exact(&mut buf).is_ok() && &buf == b"+PONG\r\n"
}

fn free_port() -> std::io::Result<u16> {
    Ok(TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?
        .local_addr()?
        .port())
}

/// The first executable called `name` on PATH.
pub fn find_on_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|candidate| candidate.is_file())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn starts_answers_and_restarts_on_the_same_port() {
        let mut redis = RedisServer::start();
        assert!(ping(redis.port()));
        assert!(redis.url().starts_with("redis://127.0.0.1:"));
        let port = redis.port();
        redis.kill();
        assert!(!ping(port));
        redis.restart().unwrap();
        assert_eq!(redis.port(), port);
        assert!(ping(port));
    }

    #[test]
    fn two_servers_get_two_ports() {
        let a = RedisServer::start();
        let b = RedisServer::start();
        assert_ne!(a.port(), b.port());
    }
}
