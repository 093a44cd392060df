//! What processes cost, read from `/proc` and from Redis: CPU seconds of a
//! process, resident memory, Redis `INFO` fields, and the machine itself.
//!
//! The server, the aggregator and the load generator run in this one process
//! when the runner starts them in-process, so "this process" covers all
//! three; Redis is its own process and is measured separately.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::OnceLock;

use serde::Serialize;

/// CPU seconds (user + system) a process has used so far, from
/// `/proc/<pid>/stat`; `None` when unreadable (not Linux, process gone).
pub fn cpu_seconds(pid: Option<u32>) -> Option<f64> {
    let path = match pid {
        Some(pid) => format!("/proc/{pid}/stat"),
        None => "/proc/self/stat".to_owned(),
    };
    let stat = std::fs::read_to_string(path).ok()?;
    let ticks = parse_stat_ticks(&stat)?;
    Some(ticks as f64 / clock_ticks_per_second())
}

/// utime + stime, in clock ticks, of a `/proc/<pid>/stat` line. The command
/// name may contain spaces and parentheses, so fields are counted after the
/// last `)`.
fn parse_stat_ticks(stat: &str) -> Option<u64> {
    let after = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = after.split_whitespace().collect();
    // After the name: state is field 3 of the line, utime 14 and stime 15.
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(utime + stime)
}

/// `getconf CLK_TCK`, asked once (100 on every common Linux).
fn clock_ticks_per_second() -> f64 {
    static TICKS: OnceLock<f64> = OnceLock::new();
    *TICKS.get_or_init(|| {
        std::process::Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|o| String::from_utf8(o.stdout).ok())
            .and_then(|s| s.trim().parse().ok())
            .filter(|t: &f64| *t > 0.0)
            .unwrap_or(100.0)
    })
}

/// Resident memory of this process now (`VmRSS`) and at its peak
/// (`VmHWM`), in MiB.
pub fn own_memory_mib() -> (Option<f64>, Option<f64>) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    (
        status_kib(&status, "VmRSS:").map(kib_to_mib),
        status_kib(&status, "VmHWM:").map(kib_to_mib),
    )
}

/// Peak resident memory (`VmHWM`) of a process, MiB.
pub fn peak_memory_mib(pid: Option<u32>) -> Option<f64> {
    let path = match pid {
        Some(pid) => format!("/proc/{pid}/status"),
        None => "/proc/self/status".to_owned(),
    };
    let status = std::fs::read_to_string(path).ok()?;
    status_kib(&status, "VmHWM:").map(kib_to_mib)
}

fn status_kib(status: &str, field: &str) -> Option<u64> {
    status
        .lines()
        .find_map(|line| line.strip_prefix(field))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
}

fn kib_to_mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

/// The `name:value` lines of a Redis `INFO` reply.
pub fn parse_info(info: &str) -> BTreeMap<String, String> {
    info.lines()
        .filter(|line| !line.starts_with('#'))
        .filter_map(|line| line.split_once(':'))
        .map(|(k, v)| (k.to_owned(), v.trim().to_owned()))
        .collect()
}

/// `INFO` of the Redis at `con`.
pub async fn redis_info(
    con: &mut redis::aio::MultiplexedConnection,
) -> redis::RedisResult<BTreeMap<String, String>> {
    let text: String = redis::cmd("INFO").query_async(con).await?;
    Ok(parse_info(&text))
}

/// One numeric `INFO` field.
pub fn info_number(info: &BTreeMap<String, String>, field: &str) -> Option<f64> {
    info.get(field).and_then(|v| v.parse().ok())
}

/// The machine the numbers were measured on.
#[derive(Debug, Clone, Serialize)]
pub struct Machine {
    /// Logical CPUs available to this process.
    pub cores: usize,
    pub cpu_model: String,
    pub kernel: String,
    /// 1-minute load average when the run started: other work on the box.
    pub load_average_at_start: Option<f64>,
    pub memory_total_mib: Option<f64>,
}

impl Machine {
    pub fn detect() -> Machine {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
        Machine {
            cores: std::thread::available_parallelism().map_or(1, |n| n.get()),
            cpu_model: cpu_model(&cpuinfo).unwrap_or_else(|| "unknown".to_owned()),
            kernel: read_trimmed("/proc/sys/kernel/osrelease")
                .unwrap_or_else(|| "unknown".to_owned()),
            load_average_at_start: read_trimmed("/proc/loadavg")
                .and_then(|l| l.split_whitespace().next()?.parse().ok()),
            memory_total_mib: status_kib(&meminfo, "MemTotal:").map(kib_to_mib),
        }
    }
}

fn cpu_model(cpuinfo: &str) -> Option<String> {
    cpuinfo
        .lines()
        .find_map(|line| line.strip_prefix("model name"))
        .and_then(|rest| rest.split_once(':'))
        .map(|(_, model)| model.trim().to_owned())
}

fn read_trimmed(path: impl AsRef<Path>) -> Option<String> {
    std::fs::read_to_string(path)
        .ok()
        .map(|s| s.trim().to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_ticks_survive_odd_process_names() {
        let line = "4242 (tokio (rt) worker) S 1 4242 4242 0 -1 4194560 100 0 0 0 \
                    250 75 0 0 20 0 8 0 12345 1000000 500 18446744073709551615";
        assert_eq!(parse_stat_ticks(line), Some(325));
        assert_eq!(parse_stat_ticks("garbage"), None);
    }

    #[test]
    fn own_process_is_measurable() {
        assert!(cpu_seconds(None).is_some());
        let (rss, peak) = own_memory_mib();
        assert!(rss.unwrap() > 0.0 && peak.unwrap() >= rss.unwrap());
        assert!(peak_memory_mib(None).unwrap() > 0.0);
    }

    #[test]
    fn info_fields_and_cpu_model_parse() {
        let info = parse_info("# Memory\r\nused_memory:1048576\r\nprocess_id:77\r\n");
        assert_eq!(info_number(&info, "used_memory"), Some(1_048_576.0));
        assert_eq!(info.get("process_id").map(String::as_str), Some("77"));
        assert_eq!(
            cpu_model("processor\t: 0\nmodel name\t: AMD EPYC 7B13\n").as_deref(),
            Some("AMD EPYC 7B13")
        );
    }
}
