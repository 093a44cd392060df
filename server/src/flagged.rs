//! The devices the aggregators distrust: the lowest scores of the shared
//! reputation hash (`crowd:reputation`, see [`crowd_proto::layout::REPUTATION`]),
//! for the operators' abuse view.
//!
//! The hash may hold millions of devices, so it is read with HSCAN up to a
//! budget of fields per call, and the answer says whether it saw them all.

use crowd_proto::layout::REPUTATION;

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
