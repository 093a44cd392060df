//! The load driver against the real stack: a private redis-server, the
//! server and the aggregator in-process.

use std::time::{Duration, Instant};

use crowd_loadgen::driver::{self, RunArgs, RunSummary};
use crowd_loadgen::stack::{Stack, StackOptions};

/// A short honest run against `target` that must pass cleanly (no error,
/// a lenient load-generator lag on a shared machine), with `flags` on top.
fn honest_run(target: &str, flags: &[&str]) -> RunArgs {
    let common = [
        "--target",
        target,
        "--scenario",
        "honest",
        "--sim-start",
        "08:00",
        "--quiet",
        "--max-late-fraction",
        "0.05",
        "--max-lag-p99-ms",
        "200",
        "--max-errors",
        "0",
    ];
    RunArgs::from_flags(common.iter().chain(flags)).unwrap()
}

/// What every clean run must show: more than 300 reports sent, each
/// accepted, acked once and timed, and no stream error.
fn assert_every_report_accepted_once(summary: &RunSummary) {
    assert!(summary.valid, "{:?}", summary.invalid_reasons);
    assert!(summary.sent > 300, "sent only {}", summary.sent);
    assert_eq!(summary.accepted, summary.sent, "{summary}");
    assert_eq!(summary.rejected + summary.duplicate + summary.unacked, 0);
    assert!(
        summary.stream_errors.is_empty(),
        "{:?}",
        summary.stream_errors
    );
    assert_eq!(summary.ack_latency.count, summary.sent);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_small_run_is_acked_fresh_queried_scored_and_written() {
    let stack = Stack::start(StackOptions::default()).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("run.json");
    let target = stack.grpc_url();
    let json_arg = json.display().to_string();
    let args = honest_run(
        &target,
        &[
            "--rate",
            "200",
            "--duration",
            "3s",
            "--streams",
            "50",
            "--watchers",
            "2",
            "--query-rate",
            "20",
            "--score-every",
            "1s",
            "--json",
            json_arg.as_str(),
        ],
    );
    let summary = driver::run(args).await.unwrap();
    stack.shutdown().await.unwrap();
    println!("{summary}");

    assert_every_report_accepted_once(&summary);
    assert!(
        summary.freshness.count > 0,
        "no freshness sample: {summary}"
    );
    assert!(summary.queries.count > 0, "no query sample: {summary}");
    let accuracy = summary.accuracy.as_ref().expect("accuracy measured");
    assert!(accuracy.coverage > 0.0, "{summary}");
    assert!(summary.passed(), "{:?}", summary.failures);

    let written: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    assert_eq!(written["sent"], summary.sent);
    assert_eq!(written["config"]["streams"], 50);
    assert_eq!(written["version"], env!("CARGO_PKG_VERSION"));
    assert!(written["ack_latency"]["p99_ms"].as_f64().unwrap() > 0.0);
}

/// The same with `--batch`: the same accounting, every report accepted,
/// acked once and timed, over fewer messages than reports.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batched_driver_run_is_acked_and_counted_like_a_single_one() {
    let stack = Stack::start(StackOptions::default()).await.unwrap();
    let target = stack.grpc_url();
    let args = honest_run(
        &target,
        &[
            "--rate",
            "300",
            "--duration",
            "2s",
            "--streams",
            "2",
            "--batch",
            "32",
            "--watchers",
            "1",
            "--score-every",
            "0",
        ],
    );
    let summary = driver::run(args).await.unwrap();
    stack.shutdown().await.unwrap();
    println!("{summary}");

    assert_every_report_accepted_once(&summary);
    assert_eq!(summary.out_of_order_acks, 0, "{summary}");
    assert!(
        summary.messages > 0 && summary.messages <= summary.sent,
        "{} messages for {} reports",
        summary.messages,
        summary.sent
    );
    assert_eq!(summary.config["batch"], 32);
    assert!(
        summary.freshness.count > 0,
        "no freshness sample: {summary}"
    );
}

#[tokio::test]
async fn an_unreachable_target_fails_fast() {
    // Bind then drop: a local port nobody listens on.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let target = format!("http://127.0.0.1:{port}");
    let args = RunArgs::from_flags(["--target", target.as_str(), "--quiet"]).unwrap();
    let began = Instant::now();
    let error = driver::run(args).await.unwrap_err();
    assert!(
        began.elapsed() < Duration::from_secs(5),
        "took {:?}",
        began.elapsed()
    );
    assert!(error.to_string().contains("cannot connect"), "{error:#}");
}

#[tokio::test]
async fn an_unanswering_target_times_out_within_the_connect_timeout() {
    // A listener that accepts TCP but never speaks HTTP/2.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let target = format!("http://{}", listener.local_addr().unwrap());
    let args = RunArgs::from_flags([
        "--target",
        target.as_str(),
        "--connect-timeout",
        "1s",
        "--quiet",
    ])
    .unwrap();
    let began = Instant::now();
    let error = driver::run(args).await.unwrap_err();
    assert!(
        began.elapsed() < Duration::from_secs(5),
        "took {:?}",
        began.elapsed()
    );
    assert!(error.to_string().contains("cannot connect"), "{error:#}");
    drop(listener);
}

#[tokio::test]
async fn rate_zero_is_refused_before_connecting() {
    let args = RunArgs::from_flags(["--rate", "0", "--target", "http://127.0.0.1:9"]).unwrap();
    let error = format!("{:#}", driver::run(args).await.unwrap_err());
    assert!(error.contains("rate must be greater than 0"), "{error}");
}

#[tokio::test]
async fn a_bad_network_file_is_named_before_connecting() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("net.toml");
    std::fs::write(&file, "[[line]]\nid = \"B\"\ncars = 0\n").unwrap();
    for (path, expected) in [
        (file.clone(), "network file"),
        (dir.path().join("absent.toml"), "absent.toml"),
    ] {
        let path = path.display().to_string();
        let args =
            RunArgs::from_flags(["--network", path.as_str(), "--target", "http://127.0.0.1:9"])
                .unwrap();
        let error = format!("{:#}", driver::run(args).await.unwrap_err());
        assert!(error.contains(expected), "{error}");
        assert!(
            !error.contains("connect"),
            "must fail before connecting: {error}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_going_away_is_counted_not_a_hang() {
    let stack = Stack::start(StackOptions::default()).await.unwrap();
    let target = stack.grpc_url();
    let args = RunArgs::from_flags([
        "--target",
        target.as_str(),
        "--rate",
        "200",
        "--duration",
        "3s",
        "--streams",
        "20",
        "--drain",
        "1s",
        "--scenario",
        "honest",
        "--quiet",
        "--max-errors",
        "0",
    ])
    .unwrap();
    let stopper = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(1200)).await;
        stack.shutdown().await
    });
    let began = Instant::now();
    let summary = driver::run(args).await.unwrap();
    stopper.await.unwrap().unwrap();
    println!("{summary}");

    assert!(
        began.elapsed() < Duration::from_secs(10),
        "took {:?}",
        began.elapsed()
    );
    assert!(summary.accepted > 0, "{summary}");
    assert!(!summary.stream_errors.is_empty(), "{summary}");
    assert!(summary.unacked > 0, "reports after the stop: {summary}");
    assert_eq!(
        summary.sent,
        summary.accepted + summary.duplicate + summary.rejected + summary.unacked,
        "every sent report is accounted for: {summary}"
    );
    assert!(!summary.passed());
    assert!(
        summary
            .failures
            .iter()
            .any(|f| f.contains("--max-errors 0")),
        "{:?}",
        summary.failures
    );
}
