//! What the runner reads from Redis while the system runs: how far the
//! aggregators are behind (their backlog), and how much memory each active
//! train costs.

use redis::aio::MultiplexedConnection;
use redis::streams::StreamInfoGroupsReply;
use serde::Serialize;

use crowd_proto::domain::TripKey;
use crowd_proto::layout::{GROUP, Layout};

use super::resources::{info_number, redis_info};

/// Reports appended but not yet committed by an aggregator, over every
/// partition: never delivered (`lag`) plus delivered but not acknowledged
/// (`pending`). A stream without the group yet counts whole.
pub async fn backlog(con: &mut MultiplexedConnection, layout: &Layout) -> redis::RedisResult<u64> {
    let mut total = 0u64;
    for k in layout.all() {
        let key = layout.reports(k);
        let groups: redis::RedisResult<StreamInfoGroupsReply> = redis::cmd("XINFO")
            .arg("GROUPS")
            .arg(&key)
            .query_async(con)
            .await;
        let group = groups
            .ok()
            .and_then(|g| g.groups.into_iter().find(|g| g.name == GROUP));
        total += match group {
            Some(g) => (g.pending + g.lag.unwrap_or(0)) as u64,
            None => redis::cmd("XLEN").arg(&key).query_async::<u64>(con).await?,
        };
    }
    Ok(total)
}

/// Reports committed into train states (the states' `reports_counted`
/// ledgers), over every partition: the aggregator's exactly-once count.
pub async fn reports_counted(
    con: &mut MultiplexedConnection,
    layout: &Layout,
) -> anyhow::Result<u64> {
    let mut total = 0;
    for k in layout.all() {
        let members: Vec<String> = redis::cmd("ZRANGE")
            .arg(layout.trains(k))
            .arg(0)
            .arg(-1)
            .query_async(con)
            .await?;
        let keys: Vec<String> = members
            .iter()
            .filter_map(|m| TripKey::from_canonical(m))
            .map(|t| layout.state(k, &t))
            .collect();
        if keys.is_empty() {
            continue;
        }
        let states: Vec<Option<Vec<u8>>> = redis::cmd("MGET").arg(&keys).query_async(con).await?;
        for bytes in states.into_iter().flatten() {
            total += crowd_aggregator::decode_train_state(&bytes)?.reports_counted;
        }
    }
    Ok(total)
}

/// Redis memory per active train.
#[derive(Debug, Clone, Default, Serialize)]
pub struct TrainMemory {
    /// Trains with a published estimate (members of the trains indexes).
    pub trains: u64,
    /// Trains whose keys were measured with `MEMORY USAGE`.
    pub sampled: u64,
    /// Mean `MEMORY USAGE` of a train's state + estimate keys, bytes.
    pub state_and_estimate_bytes: f64,
    /// Mean encoded size of a train's state, bytes (what the commit writes).
    pub state_value_bytes: f64,
    /// Redis `used_memory` divided by the trains: an upper bound, since it
    /// also holds the report streams and the updates streams.
    pub used_memory_per_train_bytes: f64,
    /// Redis `used_memory`, bytes.
    pub used_memory_bytes: f64,
    /// Redis `used_memory_peak`, bytes.
    pub used_memory_peak_bytes: f64,
}

/// Trains measured with `MEMORY USAGE` at most.
const SAMPLE: usize = 200;

/// Measures memory per active train (the trains indexes say which).
pub async fn train_memory(
    con: &mut MultiplexedConnection,
    layout: &Layout,
) -> anyhow::Result<TrainMemory> {
    let mut trains = 0u64;
    let mut sample: Vec<(u16, TripKey)> = Vec::new();
    for k in layout.all() {
        let members: Vec<String> = redis::cmd("ZRANGE")
            .arg(layout.trains(k))
            .arg(0)
            .arg(-1)
            .query_async(con)
            .await?;
        trains += members.len() as u64;
        for m in members {
            if sample.len() < SAMPLE
                && let Some(t) = TripKey::from_canonical(&m)
            {
                sample.push((k, t));
            }
        }
    }
    let mut usage = 0.0;
    let mut value = 0.0;
    for (k, trip) in &sample {
        for key in [layout.state(*k, trip), layout.estimate(*k, trip)] {
            let bytes: Option<u64> = redis::cmd("MEMORY")
                .arg("USAGE")
                .arg(&key)
                .query_async(con)
                .await?;
            usage += bytes.unwrap_or(0) as f64;
        }
        let len: u64 = redis::cmd("STRLEN")
            .arg(layout.state(*k, trip))
            .query_async(con)
            .await?;
        value += len as f64;
    }
    let info = redis_info(con).await?;
    let used = info_number(&info, "used_memory").unwrap_or(0.0);
    let n = sample.len().max(1) as f64;
    Ok(TrainMemory {
        trains,
        sampled: sample.len() as u64,
        state_and_estimate_bytes: usage / n,
        state_value_bytes: value / n,
        used_memory_per_train_bytes: used / trains.max(1) as f64,
        used_memory_bytes: used,
        used_memory_peak_bytes: info_number(&info, "used_memory_peak").unwrap_or(0.0),
    })
}
