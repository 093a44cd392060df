//! What every fault test needs: an in-process server and aggregators against
//! a private Redis, a client that keeps a ledger of acknowledged report ids
//! and retries what is not acknowledged (same ids), and the audit that
//! compares the ledger with what the aggregators counted.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::Utc;
use clap::Parser;
use redis::aio::{ConnectionLike, MultiplexedConnection};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tonic::transport::Channel;

use crowd_aggregator::{AggregatorError, decode_train_state};
use crowd_proto::codec;
use crowd_proto::domain::TripKey;
use crowd_proto::layout::{GROUP, Layout, REPORT_FIELD};
use crowd_proto::pb::v1::report_service_client::ReportServiceClient;
use crowd_proto::pb::v1::{AckStatus, CrowdingLevel, CrowdingReport, TripRef};

/// Partitions of every fault test: few, so that each aggregator owns several.
pub const PARTITIONS: u16 = 4;

pub fn layout() -> Layout {
    Layout::new(PARTITIONS)
}

/// Today's service date.
pub fn today() -> String {
    Utc::now().format("%Y%m%d").to_string()
}

pub fn trip_key(trip_id: &str) -> TripKey {
    TripKey {
        trip_id: trip_id.into(),
        start_date: today(),
    }
}

/// A valid report of `device` on `trip_id`, observed a second ago.
pub fn report(report_id: &str, device: &str, trip_id: &str) -> CrowdingReport {
    let at = Utc::now() - chrono::Duration::seconds(1);
    CrowdingReport {
        report_id: report_id.into(),
        device_id: device.into(),
        trip: Some(TripRef {
            trip_id: trip_id.into(),
            start_date: today(),
            route_id: "F".into(),
        }),
        carriage_sequence: 1 + (report_id.len() as u32 % 4),
        level: CrowdingLevel::StandingRoomOnly as i32,
        occupancy_percentage: None,
        observed_at: Some(codec::timestamp_from_ms(at.timestamp_millis())),
        position: None,
        stop_id: String::new(),
    }
}

/// `count` reports spread over `trains` trains (`<prefix>-T<i>`), one device
/// per report; every train gets fewer reports than the aggregator's duplicate
/// memory holds, so exactly-once is checkable per train.
pub fn workload(prefix: &str, trains: usize, count: usize) -> (Vec<CrowdingReport>, Vec<TripKey>) {
    let trips: Vec<String> = (0..trains).map(|i| format!("{prefix}-T{i}")).collect();
    let reports = (0..count)
        .map(|i| {
            report(
                &format!("{prefix}-r{i}"),
                &format!("{prefix}-d{i}"),
                &trips[i % trains],
            )
        })
        .collect();
    (reports, trips.iter().map(|t| trip_key(t)).collect())
}

/// A server running in-process on port 0.
pub struct Server {
    pub grpc: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<Result<(), crowd_server::ServerError>>>,
}

impl Server {
    /// Starts a server on `redis_url` with extra flags; the device rate
    /// limit is off unless the flags set it.
    pub async fn start(redis_url: &str, extra: &[&str]) -> Server {
        let partitions = PARTITIONS.to_string();
        let mut flags = vec![
            "crowd-server",
            "--redis-url",
            redis_url,
            "--partitions",
            &partitions,
        ];
        if !extra.contains(&"--device-rate-per-min") {
            flags.extend_from_slice(&["--device-rate-per-min", "0"]);
        }
        flags.extend_from_slice(extra);
        let config = crowd_server::Config::try_parse_from(flags).expect("server flags");
        let grpc = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let http = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = grpc.local_addr().unwrap();
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(crowd_server::run(config, grpc, http, async {
            let _ = stopped.await;
        }));
        Server {
            grpc: addr,
            stop: Some(stop),
            task: Some(task),
        }
    }

    pub async fn channel(&self) -> Channel {
        Channel::from_shared(format!("http://{}", self.grpc))
            .unwrap()
            .connect_timeout(Duration::from_secs(5))
            .connect()
            .await
            .expect("connect to the server")
    }

    pub async fn reports(&self) -> ReportServiceClient<Channel> {
        ReportServiceClient::new(self.channel().await)
    }

    /// Triggers shutdown (the SIGTERM path) and waits up to `limit` for `run`
    /// to return; returns how long it took.
    pub async fn stop_within(mut self, limit: Duration) -> Duration {
        let started = Instant::now();
        let _ = self.stop.take().expect("running").send(());
        let task = self.task.take().expect("running");
        tokio::time::timeout(limit, task)
            .await
            .unwrap_or_else(|_| panic!("server still running {limit:?} after shutdown"))
            .expect("server task does not panic")
            .expect("server stops cleanly");
        started.elapsed()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(task) = &self.task {
            task.abort();
        }
    }
}

/// The aggregator configuration of these tests, with extra flags.
pub fn aggregator_config(redis_url: &str, extra: &[&str]) -> crowd_aggregator::Config {
    let partitions = PARTITIONS.to_string();
    let mut flags = vec![
        "crowd-aggregator",
        "--redis-url",
        redis_url,
        "--partitions",
        &partitions,
        "--block-ms",
        "20",
    ];
    flags.extend_from_slice(extra);
    crowd_aggregator::Config::try_parse_from(flags).expect("aggregator flags")
}

/// An in-process aggregator.
pub struct Aggregator {
    stop: Option<oneshot::Sender<()>>,
    pub handle: JoinHandle<Result<(), AggregatorError>>,
}

impl Aggregator {
    pub fn spawn(config: crowd_aggregator::Config) -> Aggregator {
        let (stop, stopped) = oneshot::channel::<()>();
        let handle = tokio::spawn(crowd_aggregator::run(config, async {
            let _ = stopped.await;
        }));
        Aggregator {
            stop: Some(stop),
            handle,
        }
    }

    /// Stops it gracefully and expects a clean exit.
    pub async fn shutdown(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        tokio::time::timeout(Duration::from_secs(10), &mut self.handle)
            .await
            .expect("aggregator stops within 10 s")
            .expect("aggregator task does not panic")
            .expect("aggregator stops cleanly");
    }
}

impl Drop for Aggregator {
    fn drop(&mut self) {
        self.handle.abort();
    }
}

/// A connection for audits: large replies (whole streams) under load take
/// longer than the client's default response timeout.
pub async fn connect(url: &str) -> MultiplexedConnection {
    let config =
        redis::AsyncConnectionConfig::new().set_response_timeout(Some(Duration::from_secs(10)));
    redis::Client::open(url)
        .expect("url")
        .get_multiplexed_async_connection_with_config(&config)
        .await
        .expect("connect to redis")
}

/// Fault tests measure time (deadlines, takeover delays) on a machine with
/// few cores: they run one at a time, so that one test's load does not push
/// another past its deadlines. Hold the guard for the whole test.
pub async fn exclusive() -> tokio::sync::MutexGuard<'static, ()> {
    static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
    ONE_AT_A_TIME.lock().await
}

/// Report ids the server acknowledged (ACCEPTED or DUPLICATE), and the errors
/// seen on the way, shared by the tasks of one client.
#[derive(Clone, Default)]
pub struct Ledger {
    inner: Arc<Mutex<LedgerInner>>,
}

#[derive(Default)]
struct LedgerInner {
    acked: BTreeSet<String>,
    errors: Vec<tonic::Code>,
}

impl Ledger {
    fn ack(&self, id: &str) {
        self.inner.lock().unwrap().acked.insert(id.to_owned());
    }

    fn error(&self, code: tonic::Code) {
        self.inner.lock().unwrap().errors.push(code);
    }

    pub fn acked(&self) -> BTreeSet<String> {
        self.inner.lock().unwrap().acked.clone()
    }

    pub fn acked_count(&self) -> usize {
        self.inner.lock().unwrap().acked.len()
    }

    /// Error codes seen so far, in order.
    pub fn errors(&self) -> Vec<tonic::Code> {
        self.inner.lock().unwrap().errors.clone()
    }
}

/// Sends every report with `SubmitReport` from `concurrency` tasks, each
/// report retried (same id) until it is acknowledged or `deadline` passes;
/// panics on a REJECTED ack or a missed deadline.
pub async fn send_all(
    client: ReportServiceClient<Channel>,
    reports: Vec<CrowdingReport>,
    concurrency: usize,
    ledger: Ledger,
    deadline: Duration,
) {
    let until = Instant::now() + deadline;
    let queue = Arc::new(Mutex::new(reports));
    let mut tasks = Vec::new();
    for _ in 0..concurrency.max(1) {
        let queue = queue.clone();
        let mut client = client.clone();
        let ledger = ledger.clone();
        tasks.push(tokio::spawn(async move {
            loop {
                let next = queue.lock().unwrap().pop();
                let Some(report) = next else { return };
                submit_until_acked(&mut client, &report, &ledger, until).await;
            }
        }));
    }
    for task in tasks {
        task.await.expect("sender task");
    }
}

/// One report, retried with the same id until acknowledged.
pub async fn submit_until_acked(
    client: &mut ReportServiceClient<Channel>,
    report: &CrowdingReport,
    ledger: &Ledger,
    until: Instant,
) {
    loop {
        let answer =
            tokio::time::timeout(Duration::from_secs(5), client.submit_report(report.clone()))
                .await
                .unwrap_or_else(|_| panic!("{}: no answer within 5 s", report.report_id));
        match answer {
            Ok(ack) => {
                let ack = ack.into_inner();
                let status = AckStatus::try_from(ack.status).unwrap();
                assert_ne!(status, AckStatus::Rejected, "{ack:?}");
                ledger.ack(&report.report_id);
                return;
            }
            Err(status) => {
                ledger.error(status.code());
                assert!(
                    Instant::now() < until,
                    "{} still unacknowledged: {status}",
                    report.report_id
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

/// The sum of `reports_counted` over the committed states of `trips` (on one
/// node or a cluster).
pub async fn counted(con: &mut (impl ConnectionLike + Send), trips: &[TripKey]) -> u64 {
    let l = layout();
    let keys: Vec<String> = trips
        .iter()
        .map(|t| l.state(l.partition_of(t), t))
        .collect();
    let mut total = 0;
    for key in keys {
        let bytes: Option<Vec<u8>> = redis::cmd("GET")
            .arg(&key)
            .query_async(con)
            .await
            .expect("GET state");
        if let Some(bytes) = bytes {
            total += decode_train_state(&bytes)
                .expect("a decodable state")
                .reports_counted;
        }
    }
    total
}

/// Waits until the trains' counts reach `want`, gives a double count time to
/// show, then asserts exactly `want` and nothing left pending.
pub async fn assert_counted_exactly(
    con: &mut MultiplexedConnection,
    trips: &[TripKey],
    want: u64,
    timeout: Duration,
) {
    let deadline = Instant::now() + timeout;
    loop {
        let n = counted(con, trips).await;
        if n >= want {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "counted {n} of {want} acknowledged reports within {timeout:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(counted(con, trips).await, want, "counted more than once");
    for k in layout().all() {
        assert_eq!(pending(con, k).await, 0, "entries left pending in {k}");
    }
}

/// Entries of partition `k`'s stream delivered but not acknowledged (0 when
/// the stream or group does not exist).
pub async fn pending(con: &mut MultiplexedConnection, k: u16) -> i64 {
    let summary: redis::RedisResult<redis::Value> = redis::cmd("XPENDING")
        .arg(layout().reports(k))
        .arg(GROUP)
        .query_async(con)
        .await;
    match summary {
        Ok(redis::Value::Array(items)) => match items.first() {
            Some(redis::Value::Int(n)) => *n,
            other => panic!("unexpected XPENDING count {other:?}"),
        },
        Ok(other) => panic!("unexpected XPENDING reply {other:?}"),
        Err(e) if e.code() == Some("NOGROUP") => 0,
        Err(e) => panic!("XPENDING: {e}"),
    }
}

/// Report ids stored in all partition streams.
pub async fn stored_ids(con: &mut MultiplexedConnection) -> BTreeSet<String> {
    let mut ids = BTreeSet::new();
    for k in layout().all() {
        let entries: redis::streams::StreamRangeReply = redis::cmd("XRANGE")
            .arg(layout().reports(k))
            .arg("-")
            .arg("+")
            .query_async(con)
            .await
            .expect("XRANGE");
        for entry in entries.ids {
            let bytes: Vec<u8> = entry.get(REPORT_FIELD).expect("field r");
            ids.insert(codec::decode_report(&bytes).expect("decodable").report_id);
        }
    }
    ids
}

/// The current holder token of each partition lease (`None` when free).
pub async fn lease_holders(con: &mut (impl ConnectionLike + Send)) -> Vec<Option<String>> {
    let mut holders = Vec::new();
    for k in layout().all() {
        let holder: Option<String> = redis::cmd("GET")
            .arg(layout().lease(k))
            .query_async(con)
            .await
            .expect("GET lease");
        holders.push(holder);
    }
    holders
}

/// The instance part of a lease token (`<instance>:<n>`).
pub fn instance_of(token: &str) -> &str {
    token.split(':').next().unwrap_or(token)
}

/// Polls `check` every 20 ms until it holds; panics after `timeout`.
pub async fn wait_until<F, Fut>(what: &str, timeout: Duration, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + timeout;
    while !check().await {
        assert!(Instant::now() < deadline, "{what}: not within {timeout:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
