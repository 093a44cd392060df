//! Reading report streams through the aggregators' consumer group.
//!
//! The reply is parsed by hand so that pending entries whose payload was
//! trimmed away (XREADGROUP returns them with nil fields) are still seen, and
//! acknowledged, instead of failing the whole read.
//!
//! On a Redis Cluster every partition stream lives in its own slot, so one
//! read over many streams is not allowed: each stream is read on its own,
//! all at once and without blocking, and polled again every
//! [`POLL_INTERVAL`](crowd_proto::connection::POLL_INTERVAL) until something arrives or the block time is over.
//!
//! On a single node reached over TCP the reads go through a connection of
//! their own whose replies are read by [`resp`], not redis-rs' parser.

mod raw;
mod resp;

use redis::Value;
use std::time::Duration;

use tokio::time::Instant;

use crowd_proto::connection::{Connection, Options, Target, poll_each};

use raw::RawReader;

use crowd_proto::layout::{CONSUMER, GROUP, REPORT_FIELD};

/// One stream entry as read.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Entry {
    /// Stream id, acknowledged in the commit.
    pub(crate) id: String,
    /// The `r` field, or `None` when missing (trimmed or foreign entry).
    pub(crate) payload: Option<Vec<u8>>,
    /// How many times the group delivered it, when known (pending replays):
    /// an entry delivered again and again never got committed.
    pub(crate) deliveries: u64,
}

/// Where to read a stream from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum From {
    /// Our pending entries: delivered earlier but never acknowledged.
    Pending,
    /// Entries never delivered to anyone.
    New,
}

/// Creates the consumer group at the start of the stream (and the stream);
/// an existing group is left alone.
pub(crate) async fn ensure_group(con: &mut Connection, key: &str) -> redis::RedisResult<()> {
    let created: redis::RedisResult<()> = redis::cmd("XGROUP")
        .arg("CREATE")
        .arg(key)
        .arg(GROUP)
        .arg("0")
        .arg("MKSTREAM")
        .query_async(con)
        .await;
    match created {
        Err(e) if e.code() == Some("BUSYGROUP") => Ok(()),
        other => other,
    }
}

/// The connection stream reads go through.
#[derive(Debug)]
pub(crate) enum Reader {
    /// A single node over TCP: replies read by [`resp`].
    Raw(RawReader),
    /// A cluster, or a node behind TLS or a Unix socket: redis-rs.
    Pooled(Connection),
}

impl Reader {
    /// Connects to `target` now (so that a missing Redis shows at once);
    /// a read waits for its reply up to `options.response_timeout`, which
    /// must cover the longest block.
    pub(crate) async fn connect(target: &Target, options: Options) -> redis::RedisResult<Reader> {
        let raw = match target {
            Target::Single(client) => {
                RawReader::new(client, options.connect_timeout, options.response_timeout)
            }
            Target::Cluster(_) => None,
        };
        if let Some(mut raw) = raw {
            raw.connect().await?;
            return Ok(Reader::Raw(raw));
        }
        Ok(Reader::Pooled(target.connect(options).await?))
    }
}

/// Reads `keys` through the group: up to `count` entries per stream;
/// `block_ms` (waiting for new entries) applies to [`From::New`] only.
pub(crate) async fn read(
    reader: &mut Reader,
    keys: &[String],
    from: From,
    count: usize,
    block_ms: Option<u64>,
) -> redis::RedisResult<Vec<(String, Vec<Entry>)>> {
    let con = match reader {
        Reader::Raw(raw) => return raw.read(&read_command(keys, from, count, block_ms)).await,
        Reader::Pooled(con) => con,
    };
    if !con.is_cluster() {
        return read_group(con, keys, from, count, block_ms).await;
    }
    let wait = match from {
        From::New => Duration::from_millis(block_ms.unwrap_or(0)),
        From::Pending => Duration::ZERO,
    };
    let read = |key: &String| {
        let mut con = con.clone();
        let key = key.clone();
        async move { read_group(&mut con, std::slice::from_ref(&key), from, count, None).await }
    };
    let replies = poll_each(
        keys,
        Some(Instant::now() + wait),
        |(_, entries): &(String, Vec<Entry>)| !entries.is_empty(),
        read,
    )
    .await?;
    Ok(replies
        .into_iter()
        .filter(|(_, entries)| !entries.is_empty())
        .collect())
}

/// One XREADGROUP over `keys` (all in one slot on a cluster).
async fn read_group(
    con: &mut Connection,
    keys: &[String],
    from: From,
    count: usize,
    block_ms: Option<u64>,
) -> redis::RedisResult<Vec<(String, Vec<Entry>)>> {
    let reply: Value = read_command(keys, from, count, block_ms)
        .query_async(con)
        .await?;
    Ok(parse_reply(reply))
}

/// The `XREADGROUP` of [`read_group`].
fn read_command(keys: &[String], from: From, count: usize, block_ms: Option<u64>) -> redis::Cmd {
    let mut cmd = redis::cmd("XREADGROUP");
    cmd.arg("GROUP")
        .arg(GROUP)
        .arg(CONSUMER)
        .arg("COUNT")
        .arg(count.max(1));
    if let (From::New, Some(ms)) = (from, block_ms) {
        cmd.arg("BLOCK").arg(ms);
    }
    cmd.arg("STREAMS").arg(keys);
    let id = match from {
        From::Pending => "0",
        From::New => ">",
    };
    for _ in keys {
        cmd.arg(id);
    }
    cmd
}

/// Fills in the delivery counts of `entries`, pending entries of `key` just
/// replayed (one XPENDING over their id range).
pub(crate) async fn count_deliveries(
    con: &mut Connection,
    key: &str,
    entries: &mut [Entry],
) -> redis::RedisResult<()> {
    let (Some(first), Some(last)) = (entries.first(), entries.last()) else {
        return Ok(());
    };
    let pending: Vec<(String, String, u64, u64)> = redis::cmd("XPENDING")
        .arg(key)
        .arg(GROUP)
        .arg(&first.id)
        .arg(&last.id)
        .arg(entries.len())
        .arg(CONSUMER)
        .query_async(con)
        .await?;
    let counts: std::collections::HashMap<String, u64> = pending
        .into_iter()
        .map(|(id, _, _, deliveries)| (id, deliveries))
        .collect();
    for e in entries {
        e.deliveries = counts.get(&e.id).copied().unwrap_or(0);
    }
    Ok(())
}

fn parse_reply(reply: Value) -> Vec<(String, Vec<Entry>)> {
    pairs(reply)
        .into_iter()
        .filter_map(|(key, entries)| Some((text(key)?, parse_entries(entries))))
        .collect()
}

fn parse_entries(entries: Value) -> Vec<Entry> {
    let Value::Array(items) = entries else {
        return Vec::new();
    };
    items
        .into_iter()
        .filter_map(|item| {
            let Value::Array(mut parts) = item else {
                return None;
            };
            if parts.is_empty() {
                return None;
            }
            let fields = if parts.len() > 1 {
                parts.swap_remove(1)
            } else {
                Value::Nil
            };
            let id = text(parts.swap_remove(0))?;
            let payload = pairs(fields)
                .into_iter()
                .find(|(k, _)| matches!(k, Value::BulkString(b) if b == REPORT_FIELD.as_bytes()))
                .and_then(|(_, v)| bytes(v));
            Some(Entry {
                id,
                payload,
                deliveries: 0,
            })
        })
        .collect()
}

/// Key/value pairs of a RESP3 map, a RESP2 flat array of alternating keys and
/// values, or a RESP2 array of two-element arrays (the XREAD top level).
fn pairs(v: Value) -> Vec<(Value, Value)> {
    match v {
        Value::Map(m) => m,
        Value::Array(items) => {
            if items
                .iter()
                .all(|i| matches!(i, Value::Array(a) if a.len() == 2))
            {
                items
                    .into_iter()
                    .filter_map(|i| match i {
                        Value::Array(mut a) => {
                            let v = a.pop()?;
                            let k = a.pop()?;
                            Some((k, v))
                        }
                        _ => None,
                    })
                    .collect()
            } else {
                let mut out = Vec::with_capacity(items.len() / 2);
                let mut it = items.into_iter();
                while let (Some(k), Some(v)) = (it.next(), it.next()) {
                    out.push((k, v));
                }
                out
            }
        }
        _ => Vec::new(),
    }
}

fn bytes(v: Value) -> Option<Vec<u8>> {
    match v {
        Value::BulkString(b) => Some(b),
        Value::SimpleString(s) => Some(s.into_bytes()),
        _ => None,
    }
}

fn text(v: Value) -> Option<String> {
    bytes(v).and_then(|b| String::from_utf8(b).ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bulk(s: &str) -> Value {
        Value::BulkString(s.as_bytes().to_vec())
    }

    #[test]
    fn parses_entries_including_trimmed_ones() {
        let reply = Value::Array(vec![Value::Array(vec![
            bulk("crowd:{1}:reports"),
            Value::Array(vec![
                Value::Array(vec![
                    bulk("1-0"),
                    Value::Array(vec![bulk("r"), bulk("abc")]),
                ]),
                Value::Array(vec![bulk("2-0"), Value::Nil]),
                Value::Array(vec![bulk("3-0"), Value::Array(vec![bulk("x"), bulk("y")])]),
            ]),
        ])]);
        let parsed = parse_reply(reply);
        assert_eq!(parsed.len(), 1);
        assert_eq!(parsed[0].0, "crowd:{1}:reports");
        let entries = &parsed[0].1;
        assert_eq!(entries.len(), 3);
        assert_eq!(entries[0].payload.as_deref(), Some(&b"abc"[..]));
        assert_eq!(
            entries[1],
            Entry {
                id: "2-0".into(),
                payload: None,
                deliveries: 0,
            }
        );
        assert_eq!(entries[2].payload, None);
    }

    #[test]
    fn a_nil_reply_is_no_entries() {
        assert!(parse_reply(Value::Nil).is_empty());
    }
}
