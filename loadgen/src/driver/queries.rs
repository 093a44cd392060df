//! Open-loop `GetOccupancy` traffic: riders looking up a running train.
//!
//! Queries arrive as a Poisson process at `--query-rate`, each in its own
//! task so a slow answer never delays the next query (a slow server still
//! shows in full). Latency is measured from the moment the query is sent:
//! the tokio timer pacing the queries wakes up to a millisecond after the
//! intended time, which is the load generator's lag, not the server's, and
//! would weigh heavily against a 2 ms target.
//!
//! The queries have a connection and a thread of their own, as a rider's
//! phone would: on a connection that carries report streams they would wait
//! behind report frames, and on the driver's runtime behind its report
//! tasks, which is the load generator's delay, not the server's.

use std::sync::Arc;
use std::time::Duration;

use crowd_proto::pb::v1::occupancy_service_client::OccupancyServiceClient;
use crowd_proto::pb::v1::{GetOccupancyRequest, TripRef};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;

use super::arrivals::{Arrivals, Schedule};
use super::connect::connect;
use super::source::RunningTrips;
use super::stats::{Stats, code_name};

/// A query slower than this counts as a `DeadlineExceeded` error.
const QUERY_TIMEOUT: Duration = Duration::from_secs(10);

/// When and how many queries to send.
#[derive(Debug, Clone, Copy)]
pub struct QueryPlan {
    /// Queries per second.
    pub rate: f64,
    pub duration: Duration,
    pub seed: u64,
    /// The start of the run; query times are offsets from it.
    pub start: Instant,
}

/// Starts the query generator. It stops early when `stop` fires and waits
/// for the queries in flight before ending.
pub fn spawn(
    target: &str,
    connect_timeout: Duration,
    trips: RunningTrips,
    plan: QueryPlan,
    stats: Arc<Stats>,
    stop: CancellationToken,
) -> anyhow::Result<JoinHandle<()>> {
    let QueryPlan {
        rate,
        duration,
        seed,
        start,
    } = plan;
    let arrivals = Arrivals::new(Schedule::Constant(rate), duration, seed)?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let target = target.to_owned();
    Ok(tokio::task::spawn_blocking(move || {
        runtime.block_on(async move {
            match connect(&target, 1, connect_timeout).await {
                Ok(mut channels) => {
                    let channel = channels.remove(0);
                    send(channel, arrivals, start, trips, seed, stats, stop).await;
                }
                Err(error) => {
                    tracing::warn!("queries: {error:#}");
                    stats.query_errors.add("Unavailable");
                }
            }
        });
    }))
}

/// Sends the queries at their `arrivals` and waits for the last answers.
async fn send(
    channel: Channel,
    arrivals: Arrivals,
    start: Instant,
    trips: RunningTrips,
    seed: u64,
    stats: Arc<Stats>,
    stop: CancellationToken,
) {
    let mut rng = StdRng::seed_from_u64(seed ^ 0x9e37_79b9);
    let client = OccupancyServiceClient::new(channel);
    let mut in_flight = Vec::new();
    for offset in arrivals {
        let intended = start + offset;
        if stop
            .run_until_cancelled(tokio::time::sleep_until(intended))
            .await
            .is_none()
        {
            break;
        }
        let trip = {
            let trips = trips.read().unwrap_or_else(|p| p.into_inner());
            if trips.is_empty() {
                continue;
            }
            trips[rng.random_range(0..trips.len())].clone()
        };
        in_flight.retain(|task: &JoinHandle<()>| !task.is_finished());
        in_flight.push(tokio::spawn(query(client.clone(), trip, stats.clone())));
    }
    for task in in_flight {
        let _ = task.await;
    }
}

async fn query(mut client: OccupancyServiceClient<Channel>, trip: TripRef, stats: Arc<Stats>) {
    let request = GetOccupancyRequest { trips: vec![trip] };
    let sent = Instant::now();
    match tokio::time::timeout(QUERY_TIMEOUT, client.get_occupancy(request)).await {
        Ok(Ok(_)) => stats.query_latency.record(sent.elapsed()),
        Ok(Err(status)) => stats.query_errors.add(&code_name(&status)),
        Err(_) => stats.query_errors.add("DeadlineExceeded"),
    }
}
