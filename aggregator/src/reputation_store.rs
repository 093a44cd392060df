//! Device reputation in Redis (`crowd:reputation`): soft state shared by all
//! aggregators and kept across restarts.
//!
//! Scores are read once per device (then kept in memory) and written back as
//! increments, so aggregators owning different partitions add up their
//! verdicts instead of overwriting each other. Losing an increment (a crash
//! between commit and write-back) only costs a little learning.

use std::collections::HashMap;

use crowd_proto::connection::Connection;
use redis::Script;

use crowd_proto::layout::REPUTATION;

use crate::reputation::{MAX_SCORE, MIN_SCORE, Reputation};

/// Adds each increment and clamps the result to the score bounds.
/// ARGV: min, max, then (device, increment) pairs.
const ADD: &str = r"
local min, max = tonumber(ARGV[1]), tonumber(ARGV[2])
for i = 3, #ARGV, 2 do
  local v = tonumber(redis.call('HINCRBYFLOAT', KEYS[1], ARGV[i], ARGV[i + 1]))
  if v < min then redis.call('HSET', KEYS[1], ARGV[i], min)
  elseif v > max then redis.call('HSET', KEYS[1], ARGV[i], max) end
end
return 1
";

/// Reads and writes device scores.
#[derive(Debug)]
pub(crate) struct ReputationStore {
    add: Script,
}

impl ReputationStore {
    pub(crate) fn new() -> ReputationStore {
        ReputationStore {
            add: Script::new(ADD),
        }
    }

    /// Loads the scores of the devices not yet in memory (absent ones are new: 0).
    pub(crate) async fn load(
        &self,
        con: &mut Connection,
        reputation: &mut Reputation,
        devices: impl IntoIterator<Item = u64>,
    ) -> redis::RedisResult<()> {
        let mut unknown: Vec<u64> = devices
            .into_iter()
            .filter(|d| !reputation.knows(*d))
            .collect();
        unknown.sort_unstable();
        unknown.dedup();
        if unknown.is_empty() {
            return Ok(());
        }
        let fields: Vec<String> = unknown.iter().map(|d| field(*d)).collect();
        let scores: Vec<Option<f64>> = redis::cmd("HMGET")
            .arg(REPUTATION)
            .arg(&fields)
            .query_async(con)
            .await?;
        for (device, score) in unknown.into_iter().zip(scores) {
            reputation.remember(device, score.unwrap_or(0.0));
        }
        Ok(())
    }

    /// Adds this process's score changes to the shared scores.
    pub(crate) async fn add(
        &self,
        con: &mut Connection,
        changes: &HashMap<u64, f64>,
    ) -> redis::RedisResult<()> {
        let changes: Vec<(u64, f64)> = changes
            .iter()
            .filter(|(_, delta)| **delta != 0.0)
            .map(|(d, delta)| (*d, *delta))
            .collect();
        if changes.is_empty() {
            return Ok(());
        }
        let mut inv = self.add.prepare_invoke();
        inv.key(REPUTATION).arg(MIN_SCORE).arg(MAX_SCORE);
        for (device, delta) in changes {
            inv.arg(field(device)).arg(delta);
        }
        let _: i64 = inv.invoke_async(con).await?;
        Ok(())
    }
}

/// Writes every score of `reputation` into the shared scores, replacing
/// those of the same devices: how a fresh service is given what was learnt
/// elsewhere (the quality run's earlier mornings, `loadgen quality`).
pub async fn save(
    con: &mut (impl redis::aio::ConnectionLike + Send),
    reputation: &Reputation,
) -> redis::RedisResult<()> {
    let pairs: Vec<(String, f64)> = reputation
        .scores()
        .map(|(device, score)| (field(device), score))
        .collect();
    for chunk in pairs.chunks(1_000) {
        let _: i64 = redis::cmd("HSET")
            .arg(REPUTATION)
            .arg(chunk)
            .query_async(con)
            .await?;
    }
    Ok(())
}

/// The hash field of a device: its hash as 16 hex digits.
pub(crate) fn field(device: u64) -> String {
    format!("{device:016x}")
}
