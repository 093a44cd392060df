//! Each device's running count of accepted reports: the `contributions` of
//! an ACCEPTED ack, and `GetContributions`.
//!
//! The count lives in Redis (`crowd:contrib:<device hash>`, see
//! [`layout::contributions`]), so it survives restarts and every server
//! shares it. It costs no round trip per report: like the report writer, one
//! task takes every count queued (across all streams) and sends them as ONE
//! pipeline with an `INCRBY` (by the device's number of reports in the
//! batch) and an `EXPIRE` (refreshing the TTL) per device; each report gets
//! the running total that includes it.
//!
//! Counts are queued as soon as a report is queued for writing, so both
//! round trips overlap and the ack waits for no extra one; a report whose
//! write then fails is taken back ([`Contributions::uncount`]). The count is
//! best effort: a full queue or a failed pipeline loses those increments
//! (and the acks say 0), never a report.

use std::collections::HashMap;

use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

use crowd_proto::layout::{self, CONTRIBUTIONS_TTL_SECS};
use crowd_proto::validate::MAX_DEVICE_ID_LEN;

use crate::error::StoreError;
use crate::store::Store;

/// Most counts sent in one pipeline.
const BATCH: usize = 4096;

/// One change of a device's count.
#[derive(Debug)]
struct Count {
    /// Keyed hash of the device.
    device: u64,
    /// +1 for an accepted report, -1 to take back one whose write failed.
    delta: i64,
    /// Where the running total goes, for a report waiting for its ack.
    total: Option<oneshot::Sender<u64>>,
}

/// A handle on the counter; cheap to clone.
#[derive(Debug, Clone)]
pub struct Contributions {
    tx: mpsc::Sender<Count>,
    store: Store,
}

/// Starts the counting task; it runs until every [`Contributions`] clone is
/// dropped and what is queued is counted. `capacity` bounds the counts
/// waiting (size it like the write queue).
pub fn spawn(store: Store, capacity: usize) -> (Contributions, JoinHandle<()>) {
    let (tx, rx) = mpsc::channel(capacity.max(1));
    let task = tokio::spawn(run(store.clone(), rx));
    (Contributions { tx, store }, task)
}

impl Contributions {
    /// Counts one report of `device`; the receiver gets the device's new
    /// total (or is dropped when it cannot be counted). `None` when the
    /// queue is full: that report is not counted.
    pub fn count(&self, device: u64) -> Option<oneshot::Receiver<u64>> {
        let (total, rx) = oneshot::channel();
        self.send(Count {
            device,
            delta: 1,
            total: Some(total),
        })
        .then_some(rx)
    }

    /// Takes back one count of `device` (its report was not stored).
    pub fn uncount(&self, device: u64) {
        self.send(Count {
            device,
            delta: -1,
            total: None,
        });
    }

    fn send(&self, count: Count) -> bool {
        match self.tx.try_send(count) {
            Ok(()) => true,
            Err(_) => {
                metrics::counter!("crowd_server_contributions_dropped_total").increment(1);
                false
            }
        }
    }

    /// The current count of `device` (0 when it has none).
    pub async fn get(&self, device: u64) -> Result<u64, StoreError> {
        let mut cmd = redis::cmd("GET");
        cmd.arg(layout::contributions(device));
        let count: Option<i64> = self.store.query("GET", &cmd).await?;
        Ok(count.unwrap_or(0).max(0) as u64)
    }
}

/// Checks a `device_id` argument like a report's, naming the field.
pub fn check_device_id(device_id: &str) -> Result<(), String> {
    if device_id.is_empty() {
        return Err("device_id: empty".into());
    }
    if device_id.len() > MAX_DEVICE_ID_LEN {
        return Err(format!(
            "device_id: {} bytes > {MAX_DEVICE_ID_LEN}",
            device_id.len()
        ));
    }
    if let Some((i, c)) = device_id
        .char_indices()
        .find(|(_, c)| !c.is_ascii_graphic())
    {
        return Err(format!(
            "device_id: illegal character {c:?} at byte {i} (allowed: visible ASCII, no spaces)"
        ));
    }
    Ok(())
}

async fn run(store: Store, mut rx: mpsc::Receiver<Count>) {
    let mut batch = Vec::with_capacity(BATCH);
    while rx.recv_many(&mut batch, BATCH).await > 0 {
        flush(&store, &mut batch).await;
    }
}

/// Applies one batch in one pipeline and answers its waiting reports.
async fn flush(store: &Store, batch: &mut Vec<Count>) {
    let items: Vec<(u64, i64)> = batch.iter().map(|c| (c.device, c.delta)).collect();
    let devices = net_deltas(&items);
    let mut pipe = redis::pipe();
    for &(device, delta) in &devices {
        let key = layout::contributions(device);
        pipe.cmd("INCRBY").arg(&key).arg(delta);
        pipe.cmd("EXPIRE")
            .arg(&key)
            .arg(CONTRIBUTIONS_TTL_SECS)
            .ignore();
    }
    // One device's refused command (say a key of the wrong type) costs
    // only that device's counts.
    pipe.ignore_errors();
    match store
        .pipeline::<Vec<redis::RedisResult<i64>>>("INCRBY", &pipe)
        .await
    {
        Ok(replies) if replies.len() == devices.len() => {
            let totals: Vec<Option<i64>> = replies
                .into_iter()
                .zip(&devices)
                .map(|(reply, (device, _))| {
                    reply
                        .inspect_err(|error| {
                            tracing::debug!(%error, device = %format!("{device:016x}"), "contribution count refused");
                        })
                        .ok()
                })
                .collect();
            let running = running_totals(&items, &devices, &totals);
            for (count, total) in batch.drain(..).zip(running) {
                if let (Some(tx), Some(total)) = (count.total, total) {
                    // The ack may have left already, without it.
                    let _ = tx.send(total);
                }
            }
        }
        Ok(totals) => {
            tracing::warn!(
                devices = devices.len(),
                replies = totals.len(),
                "contribution counts: unexpected reply"
            );
            batch.clear();
        }
        Err(error) => {
            // The waiting acks say 0; the reports themselves are stored.
            tracing::debug!(%error, counts = batch.len(), "contribution counts lost");
            batch.clear();
        }
    }
}

/// Each device of `items` (device, delta) once, in first-seen order, with
/// its net change.
fn net_deltas(items: &[(u64, i64)]) -> Vec<(u64, i64)> {
    let mut index: HashMap<u64, usize> = HashMap::with_capacity(items.len());
    let mut devices: Vec<(u64, i64)> = Vec::new();
    for &(device, delta) in items {
        let i = *index.entry(device).or_insert_with(|| {
            devices.push((device, 0));
            devices.len() - 1
        });
        devices[i].1 += delta;
    }
    devices
}

/// The total of each item's device right after that item, as if the items
/// had been applied one by one: `totals` are the devices' totals after the
/// whole batch, in the order of `devices` (their net changes); `None` for a
/// device whose count failed, and for its items.
fn running_totals(
    items: &[(u64, i64)],
    devices: &[(u64, i64)],
    totals: &[Option<i64>],
) -> Vec<Option<u64>> {
    let mut running: HashMap<u64, i64> = devices
        .iter()
        .zip(totals)
        .filter_map(|(&(device, delta), total)| Some((device, (*total)? - delta)))
        .collect();
    items
        .iter()
        .map(|&(device, delta)| {
            let total = running.get_mut(&device)?;
            *total += delta;
            Some((*total).max(0) as u64)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn device_ids_are_checked_like_reports() {
        assert!(check_device_id("phone-1").is_ok());
        assert_eq!(check_device_id("").unwrap_err(), "device_id: empty");
        assert_eq!(
            check_device_id(&"x".repeat(129)).unwrap_err(),
            "device_id: 129 bytes > 128"
        );
        assert!(
            check_device_id("a b")
                .unwrap_err()
                .starts_with("device_id: illegal character ' ' at byte 1")
        );
    }

    #[test]
    fn each_report_gets_the_running_total_that_includes_it() {
        // Device 7 had 10, device 8 had 0; 7 reports three times, one of
        // them taken back, 8 twice.
        let items = [(7, 1), (8, 1), (7, 1), (7, -1), (8, 1), (7, 1)];
        let devices = net_deltas(&items);
        assert_eq!(devices, vec![(7, 2), (8, 2)]);
        let totals = [Some(12), Some(2)];
        assert_eq!(
            running_totals(&items, &devices, &totals),
            [11, 1, 12, 11, 2, 12].map(Some)
        );
        // Device 8's count failed: its reports get none, 7's are unchanged.
        assert_eq!(
            running_totals(&items, &devices, &[Some(12), None]),
            [Some(11), None, Some(12), Some(11), None, Some(12)]
        );
    }
}
