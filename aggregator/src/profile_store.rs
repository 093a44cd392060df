//! Where stretch profiles live: `crowd:profile:<route>` (field: the
//! stretch, value: an encoded `ProfileCell`), shared by every aggregator
//! because a route's trains are spread over all partitions.
//!
//! Soft state, kept like the route baselines: a route is read when one of
//! its trains is first published, its cells are updated in memory, and the
//! changed ones are written back with the baselines (every
//! [`FLUSH_INTERVAL`](crate::baseline_store::FLUSH_INTERVAL), a fraction of
//! a headway, so the train behind finds what the one ahead said); the
//! route is then forgotten and read again on next use, so each aggregator picks up
//! the others' trains. Two aggregators recording into one stretch within
//! an interval keep only one train's record there: the next train's makes
//! up for it. A route that cannot be read starts empty in memory (its
//! trains are estimated without the trains ahead until it can).

use std::collections::{BTreeSet, HashMap};

use crowd_proto::connection::Connection;
use crowd_proto::layout;
use crowd_proto::pb::store::ProfileCell;
use prost::Message;

use crate::profile::{Cell, Profiles, Stretch};

/// Reads the routes of `routes` that `profiles` does not hold.
pub(crate) async fn load<'a>(
    profiles: &mut Profiles,
    con: &mut Connection,
    routes: impl IntoIterator<Item = &'a str>,
) -> redis::RedisResult<()> {
    let missing: BTreeSet<&str> = routes
        .into_iter()
        .filter(|r| !r.is_empty() && !profiles.has_route(r))
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    let mut pipe = redis::pipe();
    for route in &missing {
        pipe.cmd("HGETALL").arg(layout::profile(route));
    }
    let stored: Vec<HashMap<String, Vec<u8>>> = pipe.query_async(con).await?;
    for (route, cells) in missing.into_iter().zip(stored) {
        profiles.insert_route(route, decode_route(cells));
    }
    Ok(())
}

/// Writes the cells changed since the last flush and forgets their routes.
pub(crate) async fn flush(profiles: &mut Profiles, con: &mut Connection) -> redis::RedisResult<()> {
    let changed = profiles.take_changed();
    if changed.is_empty() {
        return Ok(());
    }
    let mut pipe = redis::pipe();
    for change in &changed {
        let key = layout::profile(&change.route);
        for (stretch, cell) in &change.recorded {
            pipe.cmd("HSET")
                .arg(&key)
                .arg(stretch.field())
                .arg(cell.to_stored().encode_to_vec())
                .ignore();
        }
        if !change.dropped.is_empty() {
            let fields: Vec<String> = change.dropped.iter().map(|s| s.field()).collect();
            pipe.cmd("HDEL").arg(&key).arg(fields).ignore();
        }
        pipe.cmd("EXPIRE")
            .arg(&key)
            .arg(layout::PROFILE_TTL_SECS)
            .ignore();
    }
    let written: redis::RedisResult<()> = pipe.query_async(con).await;
    for change in &changed {
        profiles.forget_route(&change.route);
    }
    written
}

/// A route's cells from its hash; undecodable ones are dropped (the next
/// train records afresh).
fn decode_route(cells: HashMap<String, Vec<u8>>) -> HashMap<Stretch, Cell> {
    cells
        .into_iter()
        .filter_map(|(field, bytes)| {
            let stretch = Stretch::from_field(&field)?;
            let cell = ProfileCell::decode(bytes.as_slice()).ok()?;
            Some((stretch, Cell::from_stored(&cell)?))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn undecodable_fields_and_cells_are_dropped() {
        let good = Stretch {
            previous: 1,
            latest: 2,
        };
        let cell = Cell::new(9, 55.0, 1_000);
        let mut stored = HashMap::new();
        stored.insert(good.field(), cell.to_stored().encode_to_vec());
        stored.insert("not a stretch".into(), cell.to_stored().encode_to_vec());
        stored.insert("0000000300000004".into(), vec![0xff, 0xff, 0xff]);
        let decoded = decode_route(stored);
        assert_eq!(decoded.len(), 1);
        assert_eq!(decoded.get(&good), Some(&cell));
    }
}
