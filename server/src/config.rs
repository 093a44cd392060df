//! Server configuration: command-line flags and environment variables, with
//! the derived values (validation limits, Redis layout, device hasher) that
//! the services need.

use std::net::SocketAddr;
use std::time::Duration;

use crowd_proto::domain::DeviceHasher;
use crowd_proto::layout::Layout;
use crowd_proto::validate::Limits;

/// Device secret used when none is configured; fine for development only.
pub const DEV_DEVICE_SECRET: &str = "crowd-dev-device-secret";

/// Configuration of one server process.
#[derive(clap::Parser, Debug, Clone)]
#[command(
    name = "crowd-server",
    about = "crowd gRPC edge: report ingest, occupancy queries, live watch"
)]
pub struct Config {
    /// Redis URL shared with the aggregators.
    #[arg(long, env = "REDIS_URL", default_value = "redis://127.0.0.1:6379")]
    pub redis_url: String,
    /// Treat `--redis-url` as a seed node of a Redis Cluster even if it is
    /// one (a comma-separated list of nodes always is a cluster).
    #[arg(long, env = "REDIS_CLUSTER", default_value_t = false, action = clap::ArgAction::Set)]
    pub redis_cluster: bool,

    /// Address of the gRPC API.
    #[arg(long, env = "CROWD_GRPC_ADDR", default_value = "127.0.0.1:50051")]
    pub grpc_addr: SocketAddr,

    /// Address of the HTTP endpoint (GET /healthz).
    #[arg(long, env = "CROWD_HTTP_ADDR", default_value = "127.0.0.1:8080")]
    pub http_addr: SocketAddr,

    /// Number of Redis partitions; must match the aggregators'.
    #[arg(long, env = "CROWD_PARTITIONS", default_value_t = crowd_proto::layout::DEFAULT_PARTITIONS)]
    pub partitions: u16,

    /// Highest carriage_sequence accepted (longest train).
    #[arg(long, env = "CROWD_MAX_CARRIAGE", default_value_t = 32)]
    pub max_carriage: u32,

    /// Oldest observed_at accepted, in seconds before now.
    #[arg(long, env = "CROWD_MAX_REPORT_AGE_SECS", default_value_t = 1800)]
    pub max_report_age_secs: u64,

    /// How far observed_at may be ahead of now, in seconds (phone clocks drift).
    #[arg(long, env = "CROWD_MAX_FUTURE_SECS", default_value_t = 120)]
    pub max_future_secs: u64,

    /// Secret key of the device-id hash; the raw device id never reaches Redis.
    /// Must be the same on every server of a deployment.
    #[arg(long, env = "CROWD_DEVICE_SECRET", default_value = DEV_DEVICE_SECRET, hide_default_value = true, hide_env_values = true)]
    pub device_secret: String,

    /// Sustained reports per minute one device may send; 0 disables the limit.
    #[arg(long, env = "CROWD_DEVICE_RATE_PER_MIN", default_value_t = 60)]
    pub device_rate_per_min: u32,

    /// Reports one device may send at once after a quiet spell.
    #[arg(long, env = "CROWD_DEVICE_BURST", default_value_t = 30)]
    pub device_burst: u32,

    /// Reports waiting for the Redis writers; when full, clients get RESOURCE_EXHAUSTED.
    #[arg(long, env = "CROWD_WRITE_QUEUE", default_value_t = 8192)]
    pub write_queue: usize,

    /// Concurrent writer tasks, each sending one XADD pipeline at a time.
    #[arg(long, env = "CROWD_WRITERS", default_value_t = 4)]
    pub writers: usize,

    /// Most reports one writer sends in one pipeline.
    #[arg(long, env = "CROWD_WRITE_BATCH", default_value_t = 1024)]
    pub write_batch: usize,

    /// Approximate length each reports stream is trimmed to (XADD MAXLEN ~).
    #[arg(long, env = "CROWD_STREAM_MAXLEN", default_value_t = 1_000_000)]
    pub stream_maxlen: u64,

    /// Raw reports older than this many seconds are trimmed from the streams
    /// (privacy); 0 keeps them until --stream-maxlen pushes them out. Keep it
    /// well above the longest aggregator outage: unread reports are dropped too.
    #[arg(long, env = "CROWD_RETENTION_SECS", default_value_t = 0)]
    pub retention_secs: u64,

    /// Longest wait for any Redis reply, in milliseconds; past it the client gets UNAVAILABLE.
    #[arg(long, env = "CROWD_REDIS_TIMEOUT_MS", default_value_t = 1000)]
    pub redis_timeout_ms: u64,

    /// A report stream silent for this many seconds is ended with
    /// DEADLINE_EXCEEDED, so abandoned streams do not pile up; 0 disables.
    #[arg(long, env = "CROWD_STREAM_IDLE_SECS", default_value_t = 300)]
    pub stream_idle_secs: u64,

    /// Reports of one stream awaiting their ack; past it the server stops reading that stream.
    #[arg(long, env = "CROWD_MAX_INFLIGHT", default_value_t = 256)]
    pub max_inflight_per_stream: usize,

    /// Report ids remembered to answer DUPLICATE without a second write.
    #[arg(long, env = "CROWD_DEDUP_CAPACITY", default_value_t = 100_000)]
    pub dedup_capacity: usize,

    /// Largest gRPC message accepted, in bytes.
    #[arg(long, env = "CROWD_MAX_MESSAGE_BYTES", default_value_t = 64 * 1024)]
    pub max_message_bytes: usize,

    /// Concurrent HTTP/2 streams (calls) per client connection.
    #[arg(long, env = "CROWD_MAX_STREAMS", default_value_t = 256)]
    pub max_concurrent_streams: u32,

    /// Open streams (report streams, watches and the live page's event
    /// streams) across all connections; past it new ones get
    /// RESOURCE_EXHAUSTED (an event stream: HTTP 503).
    #[arg(long, env = "CROWD_MAX_OPEN_STREAMS", default_value_t = 20_000)]
    pub max_open_streams: usize,

    /// Most trips one WatchOccupancy or GetOccupancy call may name.
    #[arg(long, env = "CROWD_MAX_TRIPS", default_value_t = 256)]
    pub max_trips: usize,

    /// Estimate changes buffered for slow watchers; a watcher that falls further behind re-reads.
    #[arg(long, env = "CROWD_WATCH_BUFFER", default_value_t = 4096)]
    pub watch_buffer: usize,

    /// Trains whose latest estimate is kept in memory for GetOccupancy and
    /// SearchNearby (least recently used go first): one decoded estimate
    /// each, so a few tens of MB at most, well above the trains running at
    /// once in a large network; 0 reads every query from Redis.
    #[arg(long, env = "CROWD_ESTIMATE_CACHE", default_value_t = 50_000)]
    pub estimate_cache: usize,

    /// Seconds a published estimate lives in Redis without a change: the
    /// aggregators' idle TTL (same variable), which the cache honours, so it
    /// must not be set higher than theirs.
    #[arg(long, env = "CROWD_TRAIN_IDLE_SECS", default_value_t = 3600)]
    pub train_idle_secs: u64,

    /// Interval of HTTP/2 keepalive pings, in seconds (dead clients are dropped).
    #[arg(long, env = "CROWD_KEEPALIVE_SECS", default_value_t = 30)]
    pub keepalive_secs: u64,

    /// On shutdown, how long in-flight calls get to finish, in seconds.
    #[arg(long, env = "CROWD_DRAIN_TIMEOUT_SECS", default_value_t = 10)]
    pub drain_timeout_secs: u64,

    /// Cars of the trains of each route, e.g. `B=8,C=6`: the GTFS-Realtime
    /// feed then lists every car, NO_DATA_AVAILABLE where nobody reported.
    #[arg(long, env = "CROWD_CARS_PER_ROUTE", default_value = "")]
    pub cars_per_route: crate::fleet::CarsPerRoute,

    /// GTFS static feed (zip or folder): route names, stops and trips for
    /// operator views, and the trips that exist (see --gtfs-strict).
    #[arg(long, env = "CROWD_GTFS")]
    pub gtfs: Option<std::path::PathBuf>,

    /// Refuse reports for trips that are not in the --gtfs feed (otherwise
    /// they are accepted).
    #[arg(long, env = "CROWD_GTFS_STRICT", requires = "gtfs")]
    pub gtfs_strict: bool,

    /// File of operator API keys, one per line (keep it chmod 600).
    #[arg(long, env = "CROWD_OPERATOR_KEYS_FILE")]
    pub operator_keys_file: Option<std::path::PathBuf>,

    /// Operator API keys, comma-separated (in addition to the file's).
    #[arg(long, env = "CROWD_OPERATOR_KEYS", hide_env_values = true)]
    pub operator_keys: Option<String>,
}

impl Config {
    /// The configuration with every default, pointed at `redis_url`; handy for tests.
    pub fn for_redis(redis_url: impl Into<String>) -> Config {
        use clap::Parser;
        let mut config = Config::parse_from(["crowd-server"]);
        config.redis_url = redis_url.into();
        config
    }

    /// Bounds each report must respect.
    pub fn limits(&self) -> Limits {
        Limits {
            max_carriage: self.max_carriage,
            max_age: Duration::from_secs(self.max_report_age_secs),
            max_future: Duration::from_secs(self.max_future_secs),
        }
    }

    /// Redis key names of this deployment.
    pub fn layout(&self) -> Layout {
        Layout::new(self.partitions)
    }

    /// Hasher of device pseudonyms.
    pub fn device_hasher(&self) -> DeviceHasher {
        DeviceHasher::new(&self.device_secret)
    }

    /// Longest wait for a Redis reply.
    pub fn redis_timeout(&self) -> Duration {
        Duration::from_millis(self.redis_timeout_ms.max(1))
    }

    /// How long raw reports are kept; `None` when only their number is bounded.
    pub fn retention(&self) -> Option<Duration> {
        (self.retention_secs > 0).then(|| Duration::from_secs(self.retention_secs))
    }

    /// How long a report stream may stay silent; `None` when unlimited.
    pub fn stream_idle(&self) -> Option<Duration> {
        (self.stream_idle_secs > 0).then(|| Duration::from_secs(self.stream_idle_secs))
    }

    /// Drain deadline on shutdown.
    pub fn drain_timeout(&self) -> Duration {
        Duration::from_secs(self.drain_timeout_secs)
    }

    /// Lifetime of a published estimate in Redis, in ms (at least 1 s, as
    /// the aggregators round it).
    pub fn estimate_ttl_ms(&self) -> i64 {
        i64::try_from(self.train_idle_secs.saturating_mul(1000))
            .unwrap_or(i64::MAX)
            .max(1000)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn flags_are_consistent_and_defaults_match_the_contract() {
        Config::command().debug_assert();
        let c = Config::for_redis("redis://127.0.0.1:1");
        assert_eq!(c.grpc_addr, "127.0.0.1:50051".parse().unwrap());
        assert_eq!(c.partitions, 16);
        assert_eq!(c.limits().max_carriage, 32);
        assert_eq!(c.limits().max_age, Duration::from_secs(1800));
        assert_eq!(c.device_secret, DEV_DEVICE_SECRET);
        assert!(c.cars_per_route.is_empty());
        assert!(c.gtfs.is_none() && !c.gtfs_strict);
        assert!(c.operator_keys_file.is_none() && c.operator_keys.is_none());
        assert_eq!(c.estimate_cache, 50_000);
        // The aggregators' default idle TTL, and never under their 1 s floor.
        assert_eq!(c.estimate_ttl_ms(), 3_600_000);
        let c = Config {
            train_idle_secs: 0,
            ..c
        };
        assert_eq!(c.estimate_ttl_ms(), 1000);
    }

    #[test]
    fn operator_flags_parse_and_strict_mode_needs_a_feed() {
        use clap::Parser;
        let c = Config::try_parse_from([
            "crowd-server",
            "--cars-per-route",
            "B=8,C=6",
            "--gtfs",
            "feed.zip",
            "--gtfs-strict",
        ])
        .unwrap();
        assert_eq!(c.cars_per_route.of("C"), Some(6));
        assert!(c.gtfs_strict);
        let err = Config::try_parse_from(["crowd-server", "--gtfs-strict"]).unwrap_err();
        assert_eq!(err.kind(), clap::error::ErrorKind::MissingRequiredArgument);
        let err = Config::try_parse_from(["crowd-server", "--cars-per-route", "B"]).unwrap_err();
        assert!(err.to_string().contains("expected ROUTE=CARS"), "{err}");
    }
}
