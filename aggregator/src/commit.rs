//! The atomic, fenced writes of a partition: the per-batch commit and the
//! idle-train sweep. Each is one Lua script whose keys all live in the
//! partition's `{k}` slot, so it works unchanged on Redis Cluster.

use crowd_proto::connection::Connection;
use redis::Script;

use crowd_proto::domain::TripKey;

use crate::admission::DeadLetter;
use crowd_proto::layout::{ESTIMATE_FIELD, GROUP, Layout};

/// Members examined per sweep.
const SWEEP_LIMIT: usize = 500;

/// Approximate length cap of each partition's dead-letter stream.
const DEAD_MAXLEN: u64 = 10_000;

/// KEYS: lease, reports, updates, trains, geo, dead, abused, then (state,
/// estimate, abuse) per train.
/// ARGV: token, ttl ms, updates maxlen, group, now ms, train count, estimate
/// field, dead-letter count, dead maxlen, then per train 8 + 2m (state,
/// estimate or withdrawal notice, what to do with it: `1` publish, `w`
/// withdraw and announce, `0` withdraw silently, member, has-position, lon,
/// lat, m, then m pairs of flag reason and count), then 3 per dead letter
/// (entry id, payload, reason), then the entry ids to acknowledge.
const COMMIT: &str = r"
if redis.call('GET', KEYS[1]) ~= ARGV[1] then
  return redis.error_reply('FENCED lease lost')
end
local ttl, maxlen, group, now = ARGV[2], ARGV[3], ARGV[4], ARGV[5]
local n, field = tonumber(ARGV[6]), ARGV[7]
local dead, dead_maxlen = tonumber(ARGV[8]), ARGV[9]
local a = 10
-- The index updates of all trains are gathered and written a few hundred
-- members per command: one command per train each cost more than the
-- train's own writes.
local published, located, unlocated, abused = {}, {}, {}, {}
for i = 1, n do
  local state_key, est_key, abuse_key = KEYS[5 + 3 * i], KEYS[6 + 3 * i], KEYS[7 + 3 * i]
  local member = ARGV[a + 3]
  redis.call('SET', state_key, ARGV[a], 'PX', ttl)
  if ARGV[a + 2] == '1' then
    redis.call('SET', est_key, ARGV[a + 1], 'PX', ttl)
    redis.call('XADD', KEYS[3], 'MAXLEN', '~', maxlen, '*', field, ARGV[a + 1])
    published[#published + 1] = now
    published[#published + 1] = member
    if ARGV[a + 4] == '1' then
      located[#located + 1] = ARGV[a + 5]
      located[#located + 1] = ARGV[a + 6]
      located[#located + 1] = member
    else
      unlocated[#unlocated + 1] = member
    end
  else
    redis.call('DEL', est_key)
    unlocated[#unlocated + 1] = member
    if ARGV[a + 2] == 'w' then
      redis.call('XADD', KEYS[3], 'MAXLEN', '~', maxlen, '*', field, ARGV[a + 1])
    end
  end
  local flags = tonumber(ARGV[a + 7])
  for f = 1, flags do
    redis.call('HINCRBY', abuse_key, ARGV[a + 6 + 2 * f], ARGV[a + 7 + 2 * f])
  end
  if flags > 0 then
    redis.call('PEXPIRE', abuse_key, ttl)
    abused[#abused + 1] = now
    abused[#abused + 1] = member
  end
  a = a + 8 + 2 * flags
end
-- In chunks: unpack() of thousands of arguments would overflow the Lua stack.
local function each_chunk(args, width, command, key)
  local step = 500 * width
  for from = 1, #args, step do
    redis.call(command, key, unpack(args, from, math.min(from + step - 1, #args)))
  end
end
each_chunk(published, 2, 'ZADD', KEYS[4])
each_chunk(located, 3, 'GEOADD', KEYS[5])
each_chunk(unlocated, 1, 'ZREM', KEYS[5])
each_chunk(abused, 2, 'ZADD', KEYS[7])
for i = 1, dead do
  redis.call('XADD', KEYS[6], 'MAXLEN', '~', dead_maxlen, '*',
    'id', ARGV[a], 'r', ARGV[a + 1], 'reason', ARGV[a + 2])
  a = a + 3
end
for from = a, #ARGV, 500 do
  redis.call('XACK', KEYS[2], group, unpack(ARGV, from, math.min(from + 499, #ARGV)))
end
return n
";

/// KEYS: lease, trains, geo, abused, then (state, estimate, abuse) per member.
/// ARGV: token, cutoff ms, then the members.
const SWEEP: &str = r"
if redis.call('GET', KEYS[1]) ~= ARGV[1] then
  return redis.error_reply('FENCED lease lost')
end
local cutoff = tonumber(ARGV[2])
local removed = 0
for i = 3, #ARGV do
  local m = ARGV[i]
  local score = redis.call('ZSCORE', KEYS[2], m)
  if score and tonumber(score) <= cutoff then
    local j = 5 + 3 * (i - 3)
    redis.call('DEL', KEYS[j], KEYS[j + 1], KEYS[j + 2])
    redis.call('ZREM', KEYS[2], m)
    redis.call('ZREM', KEYS[3], m)
    redis.call('ZREM', KEYS[4], m)
    removed = removed + 1
  end
end
return removed
";

/// What a commit writes for one train.
#[derive(Debug)]
pub(crate) struct TrainWrite {
    pub(crate) trip: TripKey,
    /// Encoded `TrainState`.
    pub(crate) state: Vec<u8>,
    /// Encoded estimate; `None` withdraws the published one (nothing counts any more).
    pub(crate) estimate: Option<Vec<u8>>,
    /// With no estimate: the notice telling watchers the published one is
    /// withdrawn (an estimate without level), if one was published.
    pub(crate) withdrawal: Option<Vec<u8>>,
    /// (longitude, latitude) for the geo index, already checked to be
    /// indexable; `None` takes the train out of the index (no fresh position).
    pub(crate) position: Option<(f64, f64)>,
    /// Reports of this batch flagged as suspicious, by reason.
    pub(crate) flags: Vec<(&'static str, u64)>,
}

/// Why a fenced write did not happen.
#[derive(Debug, thiserror::Error)]
pub(crate) enum WriteError {
    /// Our lease is gone: another aggregator owns the partition now.
    #[error("partition lease lost")]
    Fenced,
    /// Redis failed; the write may or may not have happened.
    #[error(transparent)]
    Redis(#[from] redis::RedisError),
}

fn classify(e: redis::RedisError) -> WriteError {
    if e.code() == Some("FENCED") {
        WriteError::Fenced
    } else {
        WriteError::Redis(e)
    }
}

/// The partition write scripts, with the settings they need.
#[derive(Debug)]
pub(crate) struct Writer {
    commit: Script,
    sweep: Script,
    layout: Layout,
    /// TTL of state and estimate keys: an idle train vanishes by itself.
    idle_ms: i64,
    updates_maxlen: u64,
}

impl Writer {
    pub(crate) fn new(layout: Layout, idle_ms: i64, updates_maxlen: u64) -> Writer {
        Writer {
            commit: Script::new(COMMIT),
            sweep: Script::new(SWEEP),
            layout,
            idle_ms,
            updates_maxlen,
        }
    }

    /// Atomically publishes `trains`, sets `dead` aside and acknowledges
    /// `acks` if `token` still holds partition `k`.
    #[allow(clippy::too_many_arguments)]
    pub(crate) async fn commit(
        &self,
        con: &mut Connection,
        k: u16,
        token: &str,
        now_ms: i64,
        trains: &[TrainWrite],
        dead: &[DeadLetter],
        acks: &[String],
    ) -> Result<(), WriteError> {
        let l = &self.layout;
        let mut inv = self.commit.prepare_invoke();
        inv.key(l.lease(k))
            .key(l.reports(k))
            .key(l.updates(k))
            .key(l.trains(k))
            .key(l.geo(k))
            .key(l.dead(k))
            .key(l.abused(k));
        inv.arg(token)
            .arg(self.idle_ms)
            .arg(self.updates_maxlen)
            .arg(GROUP)
            .arg(now_ms)
            .arg(trains.len())
            .arg(ESTIMATE_FIELD)
            .arg(dead.len())
            .arg(DEAD_MAXLEN);
        for t in trains {
            inv.key(l.state(k, &t.trip))
                .key(l.estimate(k, &t.trip))
                .key(l.abuse(k, &t.trip));
            let (lon, lat) = t.position.unwrap_or_default();
            let (payload, action) = match (&t.estimate, &t.withdrawal) {
                (Some(e), _) => (e.as_slice(), "1"),
                (None, Some(w)) => (w.as_slice(), "w"),
                (None, None) => (&[][..], "0"),
            };
            inv.arg(t.state.as_slice())
                .arg(payload)
                .arg(action)
                .arg(t.trip.canonical())
                .arg(if t.position.is_some() { "1" } else { "0" })
                .arg(lon)
                .arg(lat)
                .arg(t.flags.len());
            for (reason, count) in &t.flags {
                inv.arg(*reason).arg(*count);
            }
        }
        for d in dead {
            inv.arg(&d.id).arg(d.payload.as_slice()).arg(&d.reason);
        }
        for id in acks {
            inv.arg(id);
        }
        let _: i64 = inv.invoke_async(con).await.map_err(classify)?;
        Ok(())
    }

    /// Removes trains of partition `k` not updated since `cutoff_ms` from the
    /// published keys and indexes; returns the canonical keys removed.
    pub(crate) async fn sweep(
        &self,
        con: &mut Connection,
        k: u16,
        token: &str,
        cutoff_ms: i64,
    ) -> Result<Vec<String>, WriteError> {
        let l = &self.layout;
        let members: Vec<String> = redis::cmd("ZRANGEBYSCORE")
            .arg(l.trains(k))
            .arg("-inf")
            .arg(cutoff_ms)
            .arg("LIMIT")
            .arg(0)
            .arg(SWEEP_LIMIT)
            .query_async(con)
            .await?;
        let expired: Vec<(String, TripKey)> = members
            .into_iter()
            .filter_map(|m| TripKey::from_canonical(&m).map(|t| (m, t)))
            .collect();
        if expired.is_empty() {
            return Ok(Vec::new());
        }
        let mut inv = self.sweep.prepare_invoke();
        inv.key(l.lease(k))
            .key(l.trains(k))
            .key(l.geo(k))
            .key(l.abused(k));
        inv.arg(token).arg(cutoff_ms);
        for (member, trip) in &expired {
            inv.key(l.state(k, trip))
                .key(l.estimate(k, trip))
                .key(l.abuse(k, trip))
                .arg(member);
        }
        let _: i64 = inv.invoke_async(con).await.map_err(classify)?;
        Ok(expired.into_iter().map(|(m, _)| m).collect())
    }
}

/// Whether Redis can index this position (GEOADD rejects polar latitudes).
pub(crate) fn indexable(longitude: f64, latitude: f64) -> bool {
    longitude.is_finite()
        && latitude.is_finite()
        && (-180.0..=180.0).contains(&longitude)
        && (-85.051_128_78..=85.051_128_78).contains(&latitude)
}
