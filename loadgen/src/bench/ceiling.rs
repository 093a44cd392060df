//! The store's ceiling: how many report-sized `XADD`s per second Redis takes
//! on this machine when driven by `redis-benchmark` (pipelined, many
//! connections), with the same stream key shape, field, trimming and payload
//! size as the server's own appends. The end-to-end rates are read against it.

use std::process::Command;

use anyhow::Context;
use serde::Serialize;

use crate::redis_process::{RedisServer, find_on_path};

/// How the ceiling was measured, and what it came to.
#[derive(Debug, Clone, Serialize)]
pub struct Ceiling {
    /// XADDs per second reported by redis-benchmark.
    pub xadd_per_sec: f64,
    /// Bytes of the `r` field, the size of a real encoded report entry.
    pub payload_bytes: usize,
    /// The full command line, so the number can be reproduced.
    pub command: String,
    /// `redis-benchmark --version`.
    pub tool_version: String,
    /// CPU seconds Redis spent serving it.
    pub redis_cpu_secs: Option<f64>,
}

/// Pipeline depth and connections: deep enough that the client side is not
/// what limits the number.
const PIPELINE: u32 = 64;
const CLIENTS: u32 = 50;

/// Runs redis-benchmark against a fresh private Redis (blocking).
pub fn measure(payload_bytes: usize, requests: u64, maxlen: u64) -> anyhow::Result<Ceiling> {
    let tool = find_on_path("redis-benchmark").context(
        "redis-benchmark was not found on PATH; install it (Debian/Ubuntu: \
         `apt-get install redis-tools`) to measure the store's ceiling",
    )?;
    let redis = RedisServer::start_with(Default::default())?;
    let pid = redis_pid(redis.port());
    let cpu_before = pid.and_then(|p| super::resources::cpu_seconds(Some(p)));
    let payload = "x".repeat(payload_bytes.max(1));
    let args: Vec<String> = vec![
        "-h".into(),
        "127.0.0.1".into(),
        "-p".into(),
        redis.port().to_string(),
        "-P".into(),
        PIPELINE.to_string(),
        "-c".into(),
        CLIENTS.to_string(),
        "-n".into(),
        requests.to_string(),
        "-q".into(),
        "--csv".into(),
        "XADD".into(),
        "crowd:{0}:reports".into(),
        "MAXLEN".into(),
        "~".into(),
        maxlen.to_string(),
        "*".into(),
        crowd_proto::layout::REPORT_FIELD.into(),
        payload,
    ];
    let output = Command::new(&tool)
        .args(&args)
        .output()
        .with_context(|| format!("running {}", tool.display()))?;
    anyhow::ensure!(
        output.status.success(),
        "redis-benchmark failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let cpu_after = pid.and_then(|p| super::resources::cpu_seconds(Some(p)));
    let stdout = String::from_utf8_lossy(&output.stdout);
    let xadd_per_sec = parse_csv_rps(&stdout)
        .with_context(|| format!("unexpected redis-benchmark output: {stdout}"))?;
    let tool_version = Command::new(&tool)
        .arg("--version")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default();
    let shown: Vec<String> = args
        .iter()
        .map(|a| {
            if a.len() > 16 && a.bytes().all(|b| b == b'x') {
                format!("<{} bytes>", a.len())
            } else {
                a.clone()
            }
        })
        .collect();
    Ok(Ceiling {
        xadd_per_sec,
        payload_bytes,
        command: format!("redis-benchmark {}", shown.join(" ")),
        tool_version,
        redis_cpu_secs: cpu_before.zip(cpu_after).map(|(a, b)| b - a),
    })
}

/// Requests per second from `redis-benchmark --csv`: the second column of
/// the last data row.
fn parse_csv_rps(csv: &str) -> Option<f64> {
    csv.lines()
        .filter(|line| !line.starts_with("\"test\""))
        .filter_map(|line| {
            let mut cells = line.split("\",\"");
            cells.next()?;
            cells.next()?.trim_matches('"').parse::<f64>().ok()
        })
        .next_back()
}

/// The pid of the Redis listening on `port` (`INFO server` → `process_id`),
/// asked over a plain blocking connection.
pub fn redis_pid(port: u16) -> Option<u32> {
    let client = redis::Client::open(format!("redis://127.0.0.1:{port}")).ok()?;
    let mut con = client.get_connection().ok()?;
    let info: String = redis::cmd("INFO").arg("server").query(&mut con).ok()?;
    super::resources::parse_info(&info)
        .get("process_id")?
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_rate_from_csv_output() {
        let csv = "\"test\",\"rps\",\"avg_latency_ms\"\n\
                   \"XADD crowd:{0}:reports MAXLEN ~ 1000000 * r xxx\",\"65724.62\",\"46.951\"\n";
        assert_eq!(parse_csv_rps(csv), Some(65_724.62));
        assert_eq!(parse_csv_rps("nothing useful"), None);
    }
}
