//! What the aggregators flagged, for the operators' abuse view: the devices
//! they distrust (the lowest scores of the shared reputation hash
//! `crowd:reputation`, see [`crowd_proto::layout::REPUTATION`]) and the
//! trains whose reports they found suspicious (`crowd:{k}:abused` and
//! `crowd:{k}:abuse:<trip>`).
//!
//! The reputation hash may hold millions of devices, so it is read with
//! HSCAN up to a budget of fields per call, and the answer says whether it
//! saw them all.

use std::collections::HashMap;

use crowd_proto::domain::TripKey;
use crowd_proto::layout::{Layout, REPUTATION};

use crate::error::StoreError;
use crate::store::Store;

/// Fields asked for per HSCAN step.
const SCAN_STEP: usize = 1000;

/// One distrusted device.
#[derive(Debug, Clone, PartialEq)]
pub struct Flagged {
    /// The stored device hash, 16 hex digits.
    pub device: String,
    /// Its reputation score (below 0).
    pub score: f64,
}

/// What one look at the reputation hash found.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct FlaggedDevices {
    /// Lowest scores first, at most the requested number.
    pub devices: Vec<Flagged>,
    /// Devices examined.
    pub scanned: u64,
    /// Whether every device was examined.
    pub complete: bool,
}

/// The `limit` lowest-scored devices with a score below 0, examining at most
/// `budget` devices.
pub async fn lowest(
    store: &Store,
    limit: usize,
    budget: u64,
) -> Result<FlaggedDevices, StoreError> {
    let mut found = FlaggedDevices::default();
    let mut cursor: u64 = 0;
    loop {
        let mut cmd = redis::cmd("HSCAN");
        cmd.arg(REPUTATION).arg(cursor).arg("COUNT").arg(SCAN_STEP);
        let (next, pairs): (u64, Vec<(String, String)>) = store.query("HSCAN", &cmd).await?;
        found.scanned += pairs.len() as u64;
        found
            .devices
            .extend(pairs.into_iter().filter_map(|(device, score)| {
                let score: f64 = score.parse().ok()?;
                (score < 0.0).then_some(Flagged { device, score })
            }));
        keep_lowest(&mut found.devices, limit);
        if next == 0 {
            found.complete = true;
            break;
        }
        if found.scanned >= budget {
            break;
        }
        cursor = next;
    }
    Ok(found)
}

/// A train with flagged reports.
#[derive(Debug, Clone, PartialEq)]
pub struct FlaggedTrain {
    pub trip: TripKey,
    /// Flagged reports by reason, most frequent first.
    pub flags: Vec<(String, u64)>,
    /// When a report of it was last flagged (ms).
    pub last_flagged_ms: i64,
}

/// The `limit` most recently flagged trains of every partition, newest
/// first (two pipelined round trips whatever the number of partitions).
pub async fn recent_trains(
    store: &Store,
    layout: &Layout,
    limit: usize,
) -> Result<Vec<FlaggedTrain>, StoreError> {
    if limit == 0 {
        return Ok(Vec::new());
    }
    let mut pipe = redis::pipe();
    for k in layout.all() {
        pipe.cmd("ZREVRANGE")
            .arg(layout.abused(k))
            .arg(0)
            .arg(limit - 1)
            .arg("WITHSCORES");
    }
    let replies: Vec<Vec<(String, f64)>> = store.pipeline("ZREVRANGE", &pipe).await?;
    let mut recent: Vec<(u16, TripKey, i64)> = layout
        .all()
        .zip(replies)
        .flat_map(|(k, members)| {
            members.into_iter().filter_map(move |(member, at)| {
                Some((k, TripKey::from_canonical(&member)?, at as i64))
            })
        })
        .collect();
    recent.sort_by(|a, b| b.2.cmp(&a.2).then_with(|| a.1.cmp(&b.1)));
    recent.truncate(limit);
    if recent.is_empty() {
        return Ok(Vec::new());
    }
    let mut pipe = redis::pipe();
    for (k, trip, _) in &recent {
        pipe.cmd("HGETALL").arg(layout.abuse(*k, trip));
    }
    let counts: Vec<HashMap<String, u64>> = store.pipeline("HGETALL", &pipe).await?;
    Ok(recent
        .into_iter()
        .zip(counts)
        // An empty hash: the train expired since it was flagged.
        .filter(|(_, counts)| !counts.is_empty())
        .map(|((_, trip, at), counts)| {
            let mut flags: Vec<(String, u64)> = counts.into_iter().collect();
            flags.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
            FlaggedTrain {
                trip,
                flags,
                last_flagged_ms: at,
            }
        })
        .collect())
}

/// Sorts by score (then device) and keeps the first `limit`.
fn keep_lowest(devices: &mut Vec<Flagged>, limit: usize) {
    devices.sort_by(|a, b| a.score.total_cmp(&b.score).then(a.device.cmp(&b.device)));
    devices.truncate(limit);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_lowest_scores() {
        let flag = |device: &str, score| Flagged {
            device: device.into(),
            score,
        };
        let mut devices = vec![
            flag("b", -1.0),
            flag("a", -12.0),
            flag("c", -3.0),
            flag("d", -1.0),
        ];
        keep_lowest(&mut devices, 3);
        assert_eq!(
            devices,
            vec![flag("a", -12.0), flag("c", -3.0), flag("b", -1.0)]
        );
    }
}
