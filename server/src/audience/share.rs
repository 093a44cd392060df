//! Sharing viewer counts between the servers of a deployment, so that a
//! report helps every rider watching its train, whichever server they are
//! connected to.
//!
//! Every [`PERIOD`] each server, under a random id, replaces its counts in
//! Redis (`crowd:audience:<id>`, one JSON string, expiring after three
//! periods so a dead server's riders stop counting), marks itself alive in
//! `crowd:audience:servers`, and reads the counts of the others: two
//! pipelines per period, whatever the traffic, and nothing on the path of a
//! report or a query. The others' riders are thus up to a period old in the
//! acks. On shutdown the server withdraws its counts at once.

use std::hash::{BuildHasher, Hasher};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tokio_util::sync::CancellationToken;

use crowd_proto::layout::{self, AUDIENCE_SERVERS};

use super::{Audience, Counts};
use crate::error::StoreError;
use crate::store::Store;

/// How often servers exchange their counts.
pub const PERIOD: Duration = Duration::from_secs(2);

/// Exchanges counts every `period` until `shutdown`, then withdraws them.
pub async fn run(audience: Audience, store: Store, period: Duration, shutdown: CancellationToken) {
    let server = server_id();
    let mut tick = tokio::time::interval(period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = tick.tick() => {}
        }
        if let Err(error) = exchange(&audience, &store, &server, period).await {
            // Counts of others that cannot be refreshed are not trusted.
            tracing::debug!(%error, "viewer counts not exchanged");
            audience.set_remote([]);
        }
    }
    let mut pipe = redis::pipe();
    pipe.cmd("DEL").arg(layout::audience(&server)).ignore();
    pipe.cmd("ZREM").arg(AUDIENCE_SERVERS).arg(&server).ignore();
    if let Err(error) = store.pipeline::<()>("DEL", &pipe).await {
        tracing::debug!(%error, "viewer counts not withdrawn; they expire");
    }
}

/// Publishes this server's counts and takes in the others'.
async fn exchange(
    audience: &Audience,
    store: &Store,
    server: &str,
    period: Duration,
) -> Result<(), StoreError> {
    let now_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64);
    let ttl_ms = 3 * period.as_millis() as i64;
    let counts = audience.counts(Instant::now());
    let body = serde_json::to_vec(&counts).unwrap_or_default();
    let mut pipe = redis::pipe();
    pipe.cmd("SET")
        .arg(layout::audience(server))
        .arg(body)
        .arg("PX")
        .arg(ttl_ms)
        .ignore();
    pipe.cmd("ZADD")
        .arg(AUDIENCE_SERVERS)
        .arg(now_ms)
        .arg(server)
        .ignore();
    pipe.cmd("ZREMRANGEBYSCORE")
        .arg(AUDIENCE_SERVERS)
        .arg("-inf")
        .arg(now_ms - ttl_ms)
        .ignore();
    pipe.cmd("ZRANGE").arg(AUDIENCE_SERVERS).arg(0).arg(-1);
    let (servers,): (Vec<String>,) = store.pipeline("SET", &pipe).await?;
    let others: Vec<String> = servers.into_iter().filter(|s| s != server).collect();
    let mut remote = Vec::with_capacity(others.len());
    if !others.is_empty() {
        // One GET each: the keys are in different slots on a cluster.
        let mut pipe = redis::pipe();
        for other in &others {
            pipe.cmd("GET").arg(layout::audience(other));
        }
        let bodies: Vec<Option<Vec<u8>>> = store.pipeline("GET", &pipe).await?;
        for (other, body) in others.iter().zip(bodies) {
            match body.map(|b| serde_json::from_slice::<Counts>(&b)) {
                Some(Ok(counts)) => remote.push(counts),
                Some(Err(error)) => {
                    tracing::warn!(%error, server = %other, "unreadable viewer counts")
                }
                // Expired between the two reads: it is going away.
                None => {}
            }
        }
    }
    audience.set_remote(remote);
    Ok(())
}

/// A random id for this process, unique among live servers.
fn server_id() -> String {
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u32(std::process::id());
    h.write_u128(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos()),
    );
    format!("{:016x}", h.finish())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_travel_as_json_and_ids_differ() {
        let mut counts = Counts::default();
        counts.trips.insert("20261126:T1".into(), 3);
        counts.routes.insert("B".into(), 2);
        let body = serde_json::to_vec(&counts).unwrap();
        assert_eq!(serde_json::from_slice::<Counts>(&body).unwrap(), counts);
        assert_ne!(server_id(), server_id());
        assert_eq!(server_id().len(), 16);
    }
}
