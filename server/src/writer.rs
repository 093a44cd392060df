//! The group-commit writer: accepted reports wait in one bounded queue; each
//! of a few writer tasks takes everything queued (up to a batch) and appends
//! it to the partition streams as ONE pipeline of `XADD`s, then tells each
//! report's caller how it went.
//!
//! There is no artificial delay: while one pipeline is in flight the next
//! batch forms by itself, so batches grow with load and latency stays low
//! when idle.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tokio::sync::{Mutex, mpsc, oneshot};
use tokio::task::JoinSet;

use crowd_proto::layout::REPORT_FIELD;

use crate::error::StoreError;
use crate::store::Store;

/// The outcome of one append, as sent back to the caller.
pub type WriteResult = Result<(), StoreError>;

/// One report to append.
#[derive(Debug)]
struct Entry {
    /// Key of the partition's reports stream (shared: one per partition).
    stream: Arc<str>,
    /// Encoded `StoredReport`.
    bytes: Vec<u8>,
    /// Where the outcome goes.
    done: oneshot::Sender<WriteResult>,
}

/// The sending side of the queue, held by the ingest service.
#[derive(Clone, Debug)]
pub struct WriteQueue {
    tx: mpsc::Sender<Entry>,
    /// `crowd_server_write_queue_depth`, looked up once (set per report).
    depth: metrics::Gauge,
}

impl WriteQueue {
    /// Queues one entry for the stream `stream`; fails at once when the queue
    /// is full, so an overloaded server answers instead of piling up.
    pub fn submit(
        &self,
        stream: Arc<str>,
        bytes: Vec<u8>,
    ) -> Result<oneshot::Receiver<WriteResult>, StoreError> {
        let (done, rx) = oneshot::channel();
        let entry = Entry {
            stream,
            bytes,
            done,
        };
        match self.tx.try_send(entry) {
            Ok(()) => {
                self.depth
                    .set((self.tx.max_capacity() - self.tx.capacity()) as f64);
                Ok(rx)
            }
            Err(mpsc::error::TrySendError::Full(_)) => {
                metrics::counter!("crowd_server_write_queue_full_total").increment(1);
                Err(StoreError::Overloaded)
            }
            Err(mpsc::error::TrySendError::Closed(_)) => Err(StoreError::ShuttingDown),
        }
    }
}

/// Settings of the writer pool.
#[derive(Debug, Clone)]
pub struct WriterConfig {
    /// Queue capacity in reports.
    pub capacity: usize,
    /// Number of writer tasks.
    pub writers: usize,
    /// Most reports per pipeline.
    pub batch: usize,
    /// Approximate stream length kept (`MAXLEN ~`).
    pub maxlen: u64,
    /// Age past which raw reports are trimmed from the streams they are
    /// appended to (`XTRIM MINID ~`); `None` keeps them until `maxlen`
    /// pushes them out.
    pub retention: Option<Duration>,
}

/// Starts the writer tasks. They run until every [`WriteQueue`] clone is
/// dropped and the queue is empty.
pub fn spawn(store: Store, config: &WriterConfig) -> (WriteQueue, JoinSet<()>) {
    let (tx, rx) = mpsc::channel(config.capacity.max(1));
    let rx = Arc::new(Mutex::new(rx));
    let mut tasks = JoinSet::new();
    for _ in 0..config.writers.max(1) {
        tasks.spawn(writer_task(
            store.clone(),
            rx.clone(),
            config.batch.max(1),
            Trim {
                maxlen: config.maxlen,
                retention: config.retention,
            },
        ));
    }
    let depth = metrics::gauge!("crowd_server_write_queue_depth");
    (WriteQueue { tx, depth }, tasks)
}

/// How the streams written to are kept short.
#[derive(Debug, Clone, Copy)]
struct Trim {
    maxlen: u64,
    retention: Option<Duration>,
}

async fn writer_task(
    store: Store,
    rx: Arc<Mutex<mpsc::Receiver<Entry>>>,
    batch: usize,
    trim: Trim,
) {
    let mut entries = Vec::with_capacity(batch);
    loop {
        {
            let mut rx = rx.lock().await;
            if rx.recv_many(&mut entries, batch).await == 0 {
                return;
            }
            metrics::gauge!("crowd_server_write_queue_depth").set(rx.len() as f64);
        }
        write_batch(&store, &mut entries, trim).await;
    }
}

/// Appends `entries` in one pipeline and resolves each of them.
async fn write_batch(store: &Store, entries: &mut Vec<Entry>, trim: Trim) {
    let started = Instant::now();
    let mut pipe = redis::pipe();
    for e in entries.iter() {
        pipe.cmd("XADD")
            .arg(&*e.stream)
            .arg("MAXLEN")
            .arg("~")
            .arg(trim.maxlen)
            .arg("*")
            .arg(REPORT_FIELD)
            .arg(&e.bytes)
            .ignore();
    }
    if let Some(retention) = trim.retention {
        // Stream ids start with their append time in ms: MINID drops what
        // is older than the cutoff (whole nodes only, hence `~`: cheap).
        let cutoff = SystemTime::now()
            .checked_sub(retention)
            .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
            .map_or(0, |d| d.as_millis());
        let mut streams: Vec<&str> = entries.iter().map(|e| &*e.stream).collect();
        streams.sort_unstable();
        streams.dedup();
        for stream in streams {
            pipe.cmd("XTRIM")
                .arg(stream)
                .arg("MINID")
                .arg("~")
                .arg(cutoff.to_string())
                .ignore();
        }
    }
    let result: Result<(), StoreError> = store.pipeline("XADD", &pipe).await;
    metrics::histogram!("crowd_server_write_batch_size").record(entries.len() as f64);
    metrics::histogram!("crowd_server_write_batch_seconds").record(started.elapsed().as_secs_f64());
    match result {
        Ok(()) => {
            for e in entries.drain(..) {
                let _ = e.done.send(Ok(()));
            }
        }
        Err(err) => {
            tracing::warn!(error = %err, reports = entries.len(), "report batch not written");
            metrics::counter!("crowd_server_write_errors_total").increment(1);
            for e in entries.drain(..) {
                let _ = e.done.send(Err(share(&err)));
            }
        }
    }
}

/// A copy of a batch's error for each of its reports.
fn share(err: &StoreError) -> StoreError {
    match err {
        StoreError::Redis { op, source } => StoreError::Redis {
            op,
            source: source.clone(),
        },
        StoreError::Timeout { op, ms } => StoreError::Timeout { op, ms: *ms },
        StoreError::Overloaded => StoreError::Overloaded,
        StoreError::ShuttingDown | StoreError::Decode(_) => StoreError::Redis {
            op: "XADD",
            source: redis::RedisError::from((
                redis::ErrorKind::Client,
                "batch failed",
                err.to_string(),
            )),
        },
    }
}
