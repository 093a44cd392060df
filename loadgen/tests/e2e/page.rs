//! The live page's HTTP side on the real stack: the embedded page, the
//! route's stations from the GTFS schedule, and the trains' JSON after real
//! reports went through the server and the aggregator. (The page itself, in
//! a browser, is tested by `scripts/browser-test.sh`.)

use std::time::Duration;

use crowd_loadgen::stack::StackOptions;
use crowd_proto::pb::v1::CrowdingLevel;
use serde_json::Value;

use crate::feed::http_get;
use crate::helpers::{at, eventually, report, reports_client, start_stack_with};

#[tokio::test]
async fn the_page_gets_the_line_and_its_trains_from_the_real_stack() {
    let gtfs = concat!(env!("CARGO_MANIFEST_DIR"), "/sample-gtfs");
    let stack = start_stack_with(StackOptions {
        server_args: vec![
            "--gtfs".into(),
            gtfs.into(),
            "--cars-per-route".into(),
            "B=8".into(),
        ],
        ..StackOptions::default()
    })
    .await;
    let http = stack.http_addr();

    let page = http_get(http, "/").await;
    assert_eq!(page.status, 200);
    assert!(page.headers.to_ascii_lowercase().contains("text/html"));
    assert!(page.text().contains("/app.js"), "{}", page.text());

    let line: Value = serde_json::from_slice(&http_get(http, "/api/line?route_id=B").await.body)
        .expect("line JSON");
    assert_eq!(line["name"], "Line B");
    let stations = line["stations"].as_array().expect("stations");
    assert_eq!(stations.len(), 12, "{line}");
    assert_eq!(stations[0]["id"], "SRC");
    assert_eq!(stations[6]["name"], "Châtelet-Les Halles");
    assert_eq!(stations[11]["id"], "CDG");
    assert_eq!(line["car_count"], 8);

    let mut client = reports_client(&stack).await;
    for (i, device) in ["page-a", "page-b"].into_iter().enumerate() {
        let full = at(
            report(
                &format!("page-{i}"),
                device,
                "PAGE-1",
                4,
                CrowdingLevel::Full,
            ),
            48.8618,
            2.3469,
        );
        client.submit_report(full).await.expect("report");
    }

    let train = eventually(Duration::from_secs(10), || async {
        let reply = http_get(http, "/api/trains?route_id=B").await;
        assert_eq!(reply.status, 200, "{}", reply.text());
        let trains: Value = serde_json::from_slice(&reply.body).ok()?;
        trains
            .as_array()?
            .iter()
            .find(|t| t["trip_id"] == "PAGE-1" && t["reporters"] == 2)
            .cloned()
    })
    .await
    .expect("PAGE-1 with both reports within 10 s");
    assert_eq!(train["route_id"], "B");
    assert_eq!(train["car_count"], 8);
    assert_eq!(train["cars"][0]["car"], 4);
    assert_eq!(train["cars"][0]["level"], CrowdingLevel::Full as i32);
    assert_eq!(train["cars"][0]["label"], "full");
    assert!((train["position"]["lat"].as_f64().unwrap() - 48.8618).abs() < 1e-6);
    assert!(train["age_s"].as_i64().unwrap() < 60);

    let routes: Value =
        serde_json::from_slice(&http_get(http, "/api/routes").await.body).expect("routes");
    assert_eq!(routes, serde_json::json!(["B"]));

    stack.shutdown().await.expect("clean shutdown");
}
