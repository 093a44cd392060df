//! Accuracy rounds: published estimates of every running train against the
//! simulator's truth at the same moment.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use crowd_proto::pb::v1::GetOccupancyRequest;
use crowd_proto::pb::v1::occupancy_service_client::OccupancyServiceClient;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;

use super::source::Source;
use super::stats::{Stats, code_name};
use crate::score::{Accuracy, ScoreOptions, score};

/// The latest accuracy and how many rounds produced one.
#[derive(Debug, Default)]
pub struct Scores {
    latest: Mutex<Option<Accuracy>>,
    rounds: Mutex<u64>,
}

impl Scores {
    pub fn latest(&self) -> Option<Accuracy> {
        self.latest
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    pub fn rounds(&self) -> u64 {
        *self.rounds.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn keep(&self, accuracy: Accuracy) {
        *self.latest.lock().unwrap_or_else(|p| p.into_inner()) = Some(accuracy);
        *self.rounds.lock().unwrap_or_else(|p| p.into_inner()) += 1;
    }
}

/// Scores once: asks for every running train and compares. A failed query
/// counts as a query error and leaves the previous score in place.
pub async fn score_once(
    client: &mut OccupancyServiceClient<Channel>,
    source: &Source,
    scores: &Scores,
    stats: &Stats,
) {
    let truths = source.truths();
    if truths.is_empty() {
        return;
    }
    let trips = truths.iter().map(|truth| truth.trip.clone()).collect();
    match client.get_occupancy(GetOccupancyRequest { trips }).await {
        Ok(response) => {
            let estimates = response.into_inner().estimates;
            scores.keep(score(&truths, &estimates, &ScoreOptions::default()));
        }
        Err(status) => stats.query_errors.add(&code_name(&status)),
    }
}

/// Scores every `every` until `stop`.
pub fn spawn(
    channel: Channel,
    source: Source,
    every: Duration,
    scores: Arc<Scores>,
    stats: Arc<Stats>,
    stop: CancellationToken,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut client = OccupancyServiceClient::new(channel);
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // The first tick is immediate and nothing has been aggregated yet.
        tick.tick().await;
        let rounds = async {
            loop {
                tick.tick().await;
                score_once(&mut client, &source, &scores, &stats).await;
            }
        };
        stop.run_until_cancelled(rounds).await;
    })
}
