//! One Redis connection type for a single node or a Redis Cluster.
//!
//! Every process takes a `REDIS_URL`: one URL is a single node, a
//! comma-separated list of URLs (or the `--redis-cluster` flag) is a cluster
//! reached through those seed nodes. [`Connection`] implements redis-rs'
//! `ConnectionLike`, so commands, scripts and pipelines are written once.
//!
//! Two differences are handled here rather than at every call site:
//!
//! - **Pipelines.** A cluster pipeline must stay within one hash slot, but
//!   the server and the aggregator pipeline commands across partitions (one
//!   slot each). On a cluster, [`Connection`] sends each command of a
//!   pipeline on its own, all at once: the per-node multiplexed connections
//!   still put them on the wire back to back, so the cost is one round trip
//!   per node instead of one per pipeline. Atomicity was never promised by a
//!   plain pipeline, so nothing is lost.
//! - **Blocking reads.** A blocking `XREAD`/`XREADGROUP` over many streams is
//!   cross-slot, and one per stream would stall the node connection it shares
//!   with the others. [`Connection::is_cluster`] tells readers to poll each
//!   stream without blocking instead (see [`POLL_INTERVAL`]).

use std::time::Duration;

use futures::future::try_join_all;
use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use redis::cluster::{ClusterClient, ClusterConfig};
use redis::cluster_async::ClusterConnection;
use redis::{Cmd, Pipeline, RedisFuture, RedisResult, ServerError, Value};
use tokio::time::Instant;

/// How often cluster readers poll streams that had nothing new: the cost of
/// not blocking, added at most once to a change's latency.
pub const POLL_INTERVAL: Duration = Duration::from_millis(5);

/// Reads every key on its own, all at once, and again every
/// [`POLL_INTERVAL`] until a read returns something `wanted` or `until`
/// passes (`None`: never); returns everything the last round read. This is
/// how cluster readers replace one blocking read over many streams.
pub async fn poll_each<K, T, E, F, Fut>(
    keys: &[K],
    until: Option<Instant>,
    wanted: impl Fn(&T) -> bool,
    read: F,
) -> Result<Vec<T>, E>
where
    F: Fn(&K) -> Fut,
    Fut: Future<Output = Result<Vec<T>, E>>,
{
    loop {
        let found: Vec<T> = try_join_all(keys.iter().map(&read))
            .await?
            .into_iter()
            .flatten()
            .collect();
        if found.iter().any(&wanted) || until.is_some_and(|u| Instant::now() >= u) {
            return Ok(found);
        }
        tokio::time::sleep(POLL_INTERVAL).await;
    }
}

/// Where Redis is: one node, or a cluster's seed nodes.
#[derive(Clone)]
pub enum Target {
    Single(redis::Client),
    Cluster(Box<ClusterClient>),
}

impl std::fmt::Debug for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Target::Single(c) => write!(f, "Single({:?})", c.get_connection_info().addr()),
            Target::Cluster(_) => f.write_str("Cluster"),
        }
    }
}

/// Timeouts and retries of a connection.
#[derive(Debug, Clone, Copy)]
pub struct Options {
    /// Longest wait to (re)connect.
    pub connect_timeout: Duration,
    /// Longest wait for a reply; blocking readers add their BLOCK time.
    pub response_timeout: Duration,
    /// Reconnection attempts per failed command (single node).
    pub retries: usize,
}

impl Target {
    /// Parses `url`: a comma-separated list, or `cluster`, means a cluster.
    pub fn parse(url: &str, cluster: bool) -> RedisResult<Target> {
        let nodes: Vec<&str> = url
            .split(',')
            .map(str::trim)
            .filter(|n| !n.is_empty())
            .collect();
        if cluster || nodes.len() > 1 {
            Ok(Target::Cluster(Box::new(ClusterClient::new(nodes)?)))
        } else {
            Ok(Target::Single(redis::Client::open(url.trim())?))
        }
    }

    pub fn is_cluster(&self) -> bool {
        matches!(self, Target::Cluster(_))
    }

    /// Connects now (the first command fails fast if Redis is away).
    pub async fn connect(&self, options: Options) -> RedisResult<Connection> {
        match self {
            Target::Single(client) => Ok(Connection::Single(
                ConnectionManager::new_with_config(client.clone(), manager_config(options)).await?,
            )),
            Target::Cluster(client) => Ok(Connection::Cluster(
                client
                    .get_async_connection_with_config(cluster_config(options))
                    .await?,
            )),
        }
    }

    /// A connection that connects on first use, so that a process can start
    /// (and answer "unavailable") while Redis is down.
    pub fn connect_lazily(&self, options: Options) -> RedisResult<Connection> {
        match self {
            Target::Single(client) => Ok(Connection::Single(
                ConnectionManager::new_lazy_with_config(client.clone(), manager_config(options))?,
            )),
            Target::Cluster(client) => Ok(Connection::Cluster(
                client.get_pending_async_connection_with_config(cluster_config(options)),
            )),
        }
    }
}

fn manager_config(o: Options) -> ConnectionManagerConfig {
    ConnectionManagerConfig::new()
        .set_connection_timeout(Some(o.connect_timeout))
        .set_response_timeout(Some(o.response_timeout))
        .set_number_of_retries(o.retries)
        .set_max_delay(Duration::from_millis(200))
}

fn cluster_config(o: Options) -> ClusterConfig {
    ClusterConfig::new()
        .set_connection_timeout(o.connect_timeout)
        .set_response_timeout(o.response_timeout)
}

/// A cheap-to-clone, self-reconnecting, multiplexed connection.
#[derive(Clone)]
pub enum Connection {
    Single(ConnectionManager),
    Cluster(ClusterConnection),
}

impl std::fmt::Debug for Connection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Connection::Single(_) => "Connection::Single",
            Connection::Cluster(_) => "Connection::Cluster",
        })
    }
}

impl Connection {
    /// Whether multi-stream blocking reads must be replaced by polling.
    pub fn is_cluster(&self) -> bool {
        matches!(self, Connection::Cluster(_))
    }
}

impl ConnectionLike for Connection {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Connection::Single(c) => c.req_packed_command(cmd),
            Connection::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Connection::Single(c) => c.req_packed_commands(pipeline, offset, count),
            // Transactions are single-slot by nature: the cluster routes them.
            Connection::Cluster(c) => {
                if pipeline.is_transaction() {
                    c.req_packed_commands(pipeline, offset, count)
                } else {
                    Box::pin(each_on_its_own(c.clone(), pipeline))
                }
            }
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Connection::Single(c) => c.get_db(),
            Connection::Cluster(c) => c.get_db(),
        }
    }
}

/// Sends every command of `pipeline` at once, each routed to its own slot.
/// As on one node, a command refused by Redis is an error value in its
/// place, not a failure of the others; `Pipeline::query_async` drops the
/// ignored results itself.
async fn each_on_its_own(c: ClusterConnection, pipeline: &Pipeline) -> RedisResult<Vec<Value>> {
    try_join_all(pipeline.cmd_iter().map(|cmd| {
        let mut c = c.clone();
        async move {
            match c.req_packed_command(cmd).await {
                Ok(value) => Ok(value),
                Err(e) => ServerError::try_from(e).map(Value::ServerError),
            }
        }
    }))
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_url_is_a_single_node_and_a_list_is_a_cluster() {
        assert!(
            !Target::parse("redis://127.0.0.1:6379", false)
                .unwrap()
                .is_cluster()
        );
        assert!(
            Target::parse("redis://127.0.0.1:6379", true)
                .unwrap()
                .is_cluster()
        );
        let t = Target::parse("redis://127.0.0.1:7000, redis://127.0.0.1:7001", false).unwrap();
        assert!(t.is_cluster());
    }

    #[test]
    fn a_bad_url_is_an_error() {
        assert!(Target::parse("http://nowhere", false).is_err());
        assert!(Target::parse("redis://a:1,http://b", false).is_err());
    }
}
