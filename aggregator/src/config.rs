//! Command-line and environment configuration of the aggregator.

use std::time::Duration;

use clap::Parser;

use crate::estimator::Params;

/// How the aggregator connects, partitions and weighs reports.
#[derive(Parser, Debug, Clone)]
#[command(
    name = "crowd-aggregator",
    about = "Turns crowding reports into occupancy estimates"
)]
pub struct Config {
    /// Redis holding the report streams and the published estimates; a
    /// comma-separated list of nodes is a Redis Cluster.
    #[arg(long, env = "REDIS_URL", default_value = "redis://127.0.0.1:6379")]
    pub redis_url: String,
    /// Treat `--redis-url` as a seed node of a Redis Cluster even if it is one.
    #[arg(long, env = "REDIS_CLUSTER", default_value_t = false, action = clap::ArgAction::Set)]
    pub redis_cluster: bool,
    /// Number of partitions; must match the servers of the deployment.
    #[arg(long, env = "CROWD_PARTITIONS", default_value_t = crowd_proto::layout::DEFAULT_PARTITIONS)]
    pub partitions: u16,
    /// A report's weight halves every this many seconds (loads change at
    /// every stop; see `estimator::DEFAULT_HALF_LIFE_MS`).
    #[arg(long, env = "CROWD_HALF_LIFE_SECS", default_value_t = 90)]
    pub half_life_secs: u64,
    /// Reports older than this many seconds no longer count.
    #[arg(long, env = "CROWD_WINDOW_SECS", default_value_t = 900)]
    pub window_secs: u64,
    /// A train with no report for this many seconds expires (state, estimate, indexes).
    #[arg(long, env = "CROWD_TRAIN_IDLE_SECS", default_value_t = 3600)]
    pub train_idle_secs: u64,
    /// Stream entries read per XREADGROUP (per partition). A train's estimate
    /// and state are computed and written once per batch however many of its
    /// reports the batch holds, so large batches let a backlog drain several
    /// times faster; under light load batches stay small anyway.
    #[arg(long, env = "CROWD_BATCH_SIZE", default_value_t = 4096)]
    pub batch_size: usize,
    /// How long one XREADGROUP waits for new entries, in milliseconds.
    #[arg(long, env = "CROWD_BLOCK_MS", default_value_t = 50)]
    pub block_ms: u64,
    /// Lifetime of a partition lease; it is renewed every third of it.
    #[arg(long, env = "CROWD_LEASE_TTL_MS", default_value_t = 5000)]
    pub lease_ttl_ms: u64,
    /// Approximate length cap of each partition's estimate-updates stream.
    #[arg(long, env = "CROWD_UPDATES_MAXLEN", default_value_t = 10_000)]
    pub updates_maxlen: u64,
    /// Learn device trust from agreement with settled consensus (`false`:
    /// every device weighs the same).
    #[arg(long, env = "CROWD_REPUTATION", default_value_t = true, action = clap::ArgAction::Set)]
    pub reputation: bool,
    /// Serve Prometheus metrics on this address (`GET /metrics`); none by default.
    #[arg(long, env = "CROWD_AGG_METRICS_ADDR")]
    pub metrics_addr: Option<std::net::SocketAddr>,
    /// Local time of the network, in minutes ahead of UTC (e.g. 60 for
    /// Paris in winter): "busier than usual" compares hours of the week in
    /// local time.
    #[arg(
        long,
        env = "CROWD_UTC_OFFSET_MINS",
        default_value_t = 0,
        allow_negative_numbers = true
    )]
    pub utc_offset_mins: i32,
    /// A pending entry delivered this many times without being committed
    /// (its batch keeps failing) is moved to the partition's dead-letter
    /// stream instead of being tried again.
    #[arg(long, env = "CROWD_MAX_DELIVERIES", default_value_t = 5)]
    pub max_deliveries: u64,
    /// Failures injected on purpose by tests; never set from the command line.
    #[arg(skip)]
    pub faults: FaultInjection,
}

/// Deliberate failures, so tests can prove recovery paths.
#[derive(Debug, Clone, Default)]
pub struct FaultInjection {
    /// When the Nth batch (1-based) has been read and applied in memory, `run`
    /// returns [`AggregatorError::InjectedCrash`](crate::AggregatorError::InjectedCrash)
    /// without committing it and without releasing its leases, like a killed process.
    pub crash_before_commit_of_batch: Option<u64>,
    /// When the Nth batch (1-based) has been read and applied in memory, wait
    /// this long before committing it, like a process frozen by a long GC-like
    /// pause or a stopped VM: its leases lapse meanwhile, so the commit must be
    /// refused by the fencing token.
    pub stall_before_commit_of_batch: Option<(u64, Duration)>,
}

impl Config {
    /// Estimator parameters derived from the flags.
    pub fn estimator_params(&self) -> Params {
        Params {
            half_life_ms: secs_to_ms(self.half_life_secs).max(1),
            window_ms: secs_to_ms(self.window_secs),
            ..Params::default()
        }
    }

    /// The lease lifetime, at least 100 ms so renewal has room.
    pub(crate) fn lease_ttl(&self) -> Duration {
        Duration::from_millis(self.lease_ttl_ms.max(100))
    }

    /// Idle lifetime of a train, in milliseconds (at least one second).
    pub(crate) fn train_idle_ms(&self) -> i64 {
        secs_to_ms(self.train_idle_secs).max(1000)
    }
}

fn secs_to_ms(secs: u64) -> i64 {
    i64::try_from(secs.saturating_mul(1000)).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_match_the_design() {
        let c = Config::parse_from(["crowd-aggregator"]);
        assert_eq!(c.partitions, 16);
        assert_eq!(c.half_life_secs, 90);
        assert_eq!(c.window_secs, 900);
        assert_eq!(c.lease_ttl_ms, 5000);
        assert!(c.faults.crash_before_commit_of_batch.is_none());
        assert!(c.reputation);
        assert!(c.metrics_addr.is_none());
        let p = c.estimator_params();
        assert_eq!(p, Params::default());
        assert_eq!(p.half_life_ms, 90_000);
        assert_eq!(p.window_ms, 900_000);
    }

    #[test]
    fn flags_override_defaults() {
        let c = Config::parse_from([
            "crowd-aggregator",
            "--redis-url",
            "redis://example:1",
            "--partitions",
            "4",
            "--lease-ttl-ms",
            "1000",
            "--reputation",
            "false",
        ]);
        assert_eq!(c.redis_url, "redis://example:1");
        assert_eq!(c.partitions, 4);
        assert_eq!(c.lease_ttl().as_millis(), 1000);
        assert!(!c.reputation);
    }
}
