//! The one tail of estimate changes per server process.
//!
//! A single task, on its own connection, blocks on `XREAD` over every
//! partition's `updates` stream, decodes each change once and fans it out to
//! all watchers through a broadcast channel. Watchers never touch Redis for
//! changes, so a thousand watchers cost one connection. The tail survives
//! Redis outages: it reconnects and resumes from the last id it saw.
//!
//! On a Redis Cluster the partitions' streams live in different slots, so
//! the tail reads each stream on its own, all at once and without blocking,
//! and polls again every [`POLL_INTERVAL`](crowd_proto::connection::POLL_INTERVAL) while nothing changes.
//!
//! The tail also feeds the [`EstimateCache`] the queries answer from, and
//! tells it when it may have missed changes: on every (re)connection, and
//! when a stream was trimmed past the last change read (checked whenever a
//! read comes back full, the only way the tail can fall that far behind).

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use redis::Value;
use redis::streams::{StreamKey, StreamRangeReply, StreamReadReply};
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;

use crowd_proto::codec;
use crowd_proto::connection::{Connection, Options, Target, poll_each};
use crowd_proto::layout::{ESTIMATE_FIELD, Layout};
use crowd_proto::pb::v1::OccupancyEstimate;

use crate::error::StoreError;
use crate::estimate_cache::{EstimateCache, Version};
use crate::store::bounded;

/// How long one XREAD blocks inside Redis.
const BLOCK: Duration = Duration::from_millis(1000);
/// Most entries taken per stream per XREAD.
const COUNT: usize = 1000;
/// Pause before reconnecting after a failure.
const RETRY: Duration = Duration::from_millis(250);

/// A handle to subscribe to estimate changes.
#[derive(Debug, Clone)]
pub struct Hub {
    tx: broadcast::Sender<Arc<OccupancyEstimate>>,
}

impl Hub {
    /// Starts the tail; it stops when `shutdown` fires.
    pub fn spawn(
        target: Target,
        layout: Layout,
        timeout: Duration,
        buffer: usize,
        shutdown: CancellationToken,
    ) -> (Hub, tokio::task::JoinHandle<()>) {
        let no_cache = EstimateCache::new(layout, 0, 0);
        Hub::spawn_feeding(target, layout, timeout, buffer, no_cache, shutdown)
    }

    /// Starts the tail, which also keeps `cache` up to date; it stops when
    /// `shutdown` fires.
    pub fn spawn_feeding(
        target: Target,
        layout: Layout,
        timeout: Duration,
        buffer: usize,
        cache: EstimateCache,
        shutdown: CancellationToken,
    ) -> (Hub, tokio::task::JoinHandle<()>) {
        let (tx, _) = broadcast::channel(buffer.max(16));
        let tail = Tail {
            target,
            layout,
            timeout,
            tx: tx.clone(),
            cache,
            // Start with what is appended after the process started (stream
            // ids are Redis' clock in ms): unlike `$`, this neither skips the
            // changes made while connecting nor needs Redis to be up.
            last_ids: vec![
                format!("{}-0", Utc::now().timestamp_millis());
                layout.partitions().into()
            ],
        };
        let task = tokio::spawn(async move {
            tokio::select! {
                _ = shutdown.cancelled() => {}
                _ = tail.run() => {}
            }
        });
        (Hub { tx }, task)
    }

    /// Every change from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<OccupancyEstimate>> {
        self.tx.subscribe()
    }
}

struct Tail {
    target: Target,
    layout: Layout,
    timeout: Duration,
    tx: broadcast::Sender<Arc<OccupancyEstimate>>,
    /// The latest estimates, kept by this tail.
    cache: EstimateCache,
    /// Last id seen per partition.
    last_ids: Vec<String>,
}

impl Tail {
    async fn run(mut self) {
        loop {
            match self.connect().await {
                Ok(mut conn) => {
                    // Changes may have been missed while not connected (or
                    // Redis restarted empty): the cache starts afresh.
                    self.cache.following();
                    if let Err(e) = self.follow(&mut conn).await {
                        tracing::warn!(error = %e, "estimate tail interrupted; reconnecting");
                    }
                    self.cache.lost();
                }
                Err(e) => tracing::debug!(error = %e, "estimate tail cannot connect"),
            }
            tokio::time::sleep(RETRY).await;
        }
    }

    async fn connect(&self) -> Result<Connection, StoreError> {
        // Its own connection: the reply to a blocking XREAD takes up to BLOCK.
        let options = Options {
            connect_timeout: self.timeout,
            response_timeout: BLOCK + self.timeout,
            retries: 0,
        };
        bounded("connect", self.timeout, self.target.connect(options)).await
    }

    /// Reads changes until an error.
    async fn follow(&mut self, conn: &mut Connection) -> Result<(), StoreError> {
        let keys: Vec<String> = self.layout.all().map(|k| self.layout.updates(k)).collect();
        loop {
            let streams = if conn.is_cluster() {
                self.poll_each(conn, &keys).await?
            } else {
                self.read_all(conn, &keys).await?
            };
            for stream in streams {
                let Some(i) = keys.iter().position(|k| *k == stream.key) else {
                    continue;
                };
                let full = stream.ids.len() >= COUNT;
                let before = self.last_ids[i].clone();
                for entry in stream.ids {
                    self.last_ids[i] = entry.id.clone();
                    self.publish(i as u16, &stream.key, &entry);
                }
                if full && self.trimmed_past(conn, &stream.key, &before).await? {
                    metrics::counter!("crowd_server_watch_gaps_total").increment(1);
                    tracing::warn!(stream = %stream.key, "estimate changes trimmed before the tail read them; cache invalidated");
                    self.cache.following();
                }
            }
        }
    }

    /// One blocking XREAD over every stream (single node).
    async fn read_all(
        &self,
        conn: &mut Connection,
        keys: &[String],
    ) -> Result<Vec<StreamKey>, StoreError> {
        let mut cmd = redis::cmd("XREAD");
        cmd.arg("COUNT")
            .arg(COUNT)
            .arg("BLOCK")
            .arg(BLOCK.as_millis() as u64)
            .arg("STREAMS")
            .arg(keys)
            .arg(&self.last_ids);
        let reply: Option<StreamReadReply> =
            bounded("XREAD", BLOCK + self.timeout, cmd.query_async(conn)).await?;
        Ok(reply.map(|r| r.keys).unwrap_or_default())
    }

    /// One non-blocking XREAD per stream, all at once, repeated every
    /// [`POLL_INTERVAL`](crowd_proto::connection::POLL_INTERVAL) until something changed (cluster).
    async fn poll_each(
        &self,
        conn: &Connection,
        keys: &[String],
    ) -> Result<Vec<StreamKey>, StoreError> {
        let streams: Vec<(&String, &String)> = keys.iter().zip(&self.last_ids).collect();
        let read = |(key, id): &(&String, &String)| {
            let mut conn = conn.clone();
            let mut cmd = redis::cmd("XREAD");
            cmd.arg("COUNT")
                .arg(COUNT)
                .arg("STREAMS")
                .arg(*key)
                .arg(*id);
            async move {
                let reply: Option<StreamReadReply> =
                    bounded("XREAD", self.timeout, cmd.query_async(&mut conn)).await?;
                Ok::<_, StoreError>(reply.map(|r| r.keys).unwrap_or_default())
            }
        };
        poll_each(&streams, None, |s: &StreamKey| !s.ids.is_empty(), read).await
    }

    /// Whether `key` may have been trimmed past `before` before the read
    /// that followed it: its oldest entry is newer than `before`. Trimming
    /// takes the oldest entries first, so a change the read skipped means
    /// every entry up to it is gone, `before` included. (Conservative: a
    /// tail lagging right at the trimming edge sees a gap too.)
    async fn trimmed_past(
        &self,
        conn: &mut Connection,
        key: &str,
        before: &str,
    ) -> Result<bool, StoreError> {
        let mut cmd = redis::cmd("XRANGE");
        cmd.arg(key).arg("-").arg("+").arg("COUNT").arg(1);
        let oldest: StreamRangeReply =
            bounded("XRANGE", self.timeout, cmd.query_async(conn)).await?;
        let oldest = oldest.ids.first().and_then(|e| Version::parse(&e.id));
        Ok(match (oldest, Version::parse(before)) {
            (Some(oldest), Some(before)) => oldest > before,
            _ => true,
        })
    }

    /// Decodes one change of partition `k`, keeps it in the cache and hands
    /// it to every watcher.
    fn publish(&self, k: u16, key: &str, entry: &redis::streams::StreamId) {
        match entry.map.get(ESTIMATE_FIELD) {
            Some(Value::BulkString(bytes)) => match codec::decode_estimate(bytes) {
                Ok(estimate) => {
                    metrics::counter!("crowd_server_watch_changes_total").increment(1);
                    record_age(&estimate);
                    let estimate = Arc::new(estimate);
                    match Version::parse(&entry.id) {
                        Some(version) => {
                            self.cache
                                .apply(k, version, &estimate, Utc::now().timestamp_millis())
                        }
                        None => {
                            tracing::warn!(id = %entry.id, "update entry id unreadable");
                            self.cache.following();
                        }
                    }
                    // No receivers is fine: nobody is watching.
                    let _ = self.tx.send(estimate);
                }
                Err(e) => {
                    tracing::warn!(error = %e, id = %entry.id, "bad update entry");
                    // Which train changed is unknown: forget them all.
                    self.cache.following();
                }
            },
            _ => {
                tracing::warn!(id = %entry.id, key, "update entry without estimate");
                self.cache.following();
            }
        }
    }
}

/// Records how old the newest report of an estimate change is when the
/// server sees it: report observed → aggregated → published → here.
fn record_age(estimate: &OccupancyEstimate) {
    if let Some(newest) = &estimate.newest_report_at {
        let now = Utc::now();
        let newest_ms = newest.seconds.saturating_mul(1000) + i64::from(newest.nanos / 1_000_000);
        let age_ms = now.timestamp_millis().saturating_sub(newest_ms).max(0);
        metrics::histogram!("crowd_server_estimate_age_seconds").record(age_ms as f64 / 1000.0);
    }
}
