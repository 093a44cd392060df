//! The aggregator's stream reads on a connection of its own: plain RESP2
//! over TCP, replies read by [`super::resp`] rather than redis-rs' generic
//! parser (see there for why).
//!
//! One command at a time, as the worker reads: it sends a read and waits
//! for its reply. Any failure (I/O, timeout, a reply it cannot read, a read
//! cancelled halfway) drops the connection, so that the next read starts
//! on a fresh one and never on a half-read reply; the worker replays what
//! it may have missed, as after any failed read.

use std::time::Duration;

use redis::{ConnectionAddr, ErrorKind, RedisError, RedisResult, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::Entry;
use super::resp::{self, ReplyError, Scan};

/// How much a read asks the socket for at a time.
const READ_CHUNK: usize = 64 * 1024;

/// A single node's address and credentials, and the connection if open.
pub(crate) struct RawReader {
    host: String,
    port: u16,
    username: Option<String>,
    password: Option<String>,
    db: i64,
    connect_timeout: Duration,
    response_timeout: Duration,
    con: Option<TcpStream>,
    /// The reply being read; kept between reads for its capacity.
    buf: Vec<u8>,
}

impl std::fmt::Debug for RawReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RawReader")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("connected", &self.con.is_some())
            .finish()
    }
}

impl RawReader {
    /// A reader of `client`'s node when it is reached over plain TCP;
    /// `None` for TLS or a Unix socket, which keep redis-rs' connection.
    pub(crate) fn new(
        client: &redis::Client,
        connect_timeout: Duration,
        response_timeout: Duration,
    ) -> Option<RawReader> {
        let info = client.get_connection_info();
        let ConnectionAddr::Tcp(host, port) = info.addr() else {
            return None;
        };
        let settings = info.redis_settings();
        Some(RawReader {
            host: host.clone(),
            port: *port,
            username: settings.username().map(str::to_owned),
            password: settings.password().map(str::to_owned),
            db: settings.db(),
            connect_timeout,
            response_timeout,
            con: None,
            buf: Vec::new(),
        })
    }

    /// Opens the connection if it is not open.
    pub(crate) async fn connect(&mut self) -> RedisResult<()> {
        if self.con.is_none() {
            self.con = Some(self.open().await?);
        }
        Ok(())
    }

    /// A new connection: TCP, then `AUTH` and `SELECT` as the URL asks.
    async fn open(&mut self) -> RedisResult<TcpStream> {
        let addr = (self.host.as_str(), self.port);
        let mut con = tokio::time::timeout(self.connect_timeout, TcpStream::connect(addr))
            .await
            .map_err(|_| timed_out("connecting"))??;
        con.set_nodelay(true)?;
        let mut setup = Vec::new();
        if let Some(password) = &self.password {
            let mut auth = redis::cmd("AUTH");
            if let Some(user) = &self.username {
                auth.arg(user);
            }
            setup.push(auth.arg(password).clone());
        }
        if self.db != 0 {
            setup.push(redis::cmd("SELECT").arg(self.db).clone());
        }
        for cmd in setup {
            let reply = tokio::time::timeout(
                self.response_timeout,
                exchange(&mut con, &mut self.buf, &cmd.get_packed_command()),
            )
            .await
            .map_err(|_| timed_out("setting up the connection"))??;
            if let Some(line) = reply.strip_prefix(b"-") {
                let text = line.strip_suffix(b"\r\n").unwrap_or(line);
                return Err(server_error(&String::from_utf8_lossy(text)));
            }
        }
        Ok(con)
    }

    /// Sends `cmd`, an `XREADGROUP`, and reads its reply.
    pub(crate) async fn read(
        &mut self,
        cmd: &redis::Cmd,
    ) -> RedisResult<Vec<(String, Vec<Entry>)>> {
        // Out of `self` while in use: if this read is cancelled halfway,
        // the connection (with half a reply on it) goes with it.
        let mut con = match self.con.take() {
            Some(con) => con,
            None => self.open().await?,
        };
        let reply = tokio::time::timeout(
            self.response_timeout,
            exchange(&mut con, &mut self.buf, &cmd.get_packed_command()),
        )
        .await
        .map_err(|_| timed_out("reading streams"))??;
        match resp::parse(reply) {
            Ok(read) => {
                self.con = Some(con);
                Ok(read)
            }
            Err(ReplyError::Server(text)) => {
                self.con = Some(con);
                Err(server_error(&text))
            }
            Err(ReplyError::Protocol(why)) => Err(RedisError::from((
                ErrorKind::Parse,
                "unreadable XREADGROUP reply",
                why.to_owned(),
            ))),
        }
    }
}

/// Writes `command` and reads one whole reply into `buf`; returns it.
async fn exchange<'b>(
    con: &mut TcpStream,
    buf: &'b mut Vec<u8>,
    command: &[u8],
) -> std::io::Result<&'b [u8]> {
    con.write_all(command).await?;
    buf.clear();
    let mut scan = Scan::default();
    loop {
        buf.reserve(READ_CHUNK);
        if con.read_buf(buf).await? == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        match scan.advance(buf) {
            Ok(Some(len)) => return Ok(&buf[..len]),
            Ok(None) => {}
            Err(e) => {
                let why = format!("unreadable reply: {e:?}");
                return Err(std::io::Error::new(std::io::ErrorKind::InvalidData, why));
            }
        }
    }
}

/// The error redis-rs would give for Redis's error line `text`, so that
/// callers can look at its code (`NOGROUP`, ...) as usual.
fn server_error(text: &str) -> RedisError {
    match redis::parse_redis_value(format!("-{text}\r\n").as_bytes()).and_then(Value::extract_error)
    {
        Err(e) => e,
        Ok(_) => RedisError::from((ErrorKind::Parse, "error line", text.to_owned())),
    }
}

fn timed_out(what: &'static str) -> RedisError {
    std::io::Error::new(std::io::ErrorKind::TimedOut, what).into()
}
