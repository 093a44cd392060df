//! Which stream entries can be counted, and why the others are set aside.
//!
//! An entry that cannot be counted is not retried forever (a hot loop) nor
//! dropped silently: the batch commit moves it to the partition's
//! dead-letter stream (`crowd:{k}:dead`) and acknowledges it, atomically,
//! and `crowd_aggregator_dead_letters_total{reason}` counts it. Operators can
//! inspect it there and re-add a fixed report to the reports stream.

use crowd_proto::codec::decode_report;
use crowd_proto::domain::TripKey;
use crowd_proto::layout::Layout;
use crowd_proto::pb::store::StoredReport;

use crate::stream::Entry;

/// A stream entry set aside instead of counted.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct DeadLetter {
    /// Id of the entry in the reports stream.
    pub(crate) id: String,
    /// Its payload as read (empty when it had none).
    pub(crate) payload: Vec<u8>,
    /// Why it cannot be counted: one of [`Reason`]'s labels, then details.
    pub(crate) reason: String,
    /// The metric label.
    pub(crate) label: &'static str,
}

/// Decides whether `entry`, read from partition `k`'s stream, can be
/// counted; `max_deliveries` bounds how often a pending entry is retried.
pub(crate) fn admit(
    entry: &Entry,
    k: u16,
    layout: &Layout,
    max_deliveries: u64,
) -> Result<StoredReport, DeadLetter> {
    let dead = |label: &'static str, why: String| DeadLetter {
        id: entry.id.clone(),
        payload: entry.payload.clone().unwrap_or_default(),
        reason: format!("{label}: {why}"),
        label,
    };
    if max_deliveries > 0 && entry.deliveries > max_deliveries {
        return Err(dead(
            "redelivered",
            format!(
                "delivered {} times without a commit (limit {max_deliveries})",
                entry.deliveries
            ),
        ));
    }
    let Some(payload) = entry.payload.as_deref() else {
        return Err(dead(
            "missing",
            "no report field (trimmed before it was counted, or not a report)".into(),
        ));
    };
    let report = decode_report(payload).map_err(|e| dead("undecodable", e.to_string()))?;
    let trip = TripKey {
        trip_id: report.trip_id.clone(),
        start_date: report.start_date.clone(),
    };
    let home = layout.partition_of(&trip);
    if home != k {
        return Err(dead(
            "wrong_partition",
            format!("train {trip} belongs to partition {home}, not {k}"),
        ));
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crowd_proto::pb::store::StoredReport;
    use prost::Message;

    fn entry(payload: Option<Vec<u8>>, deliveries: u64) -> Entry {
        Entry {
            id: "1-0".into(),
            payload,
            deliveries,
        }
    }

    fn report(trip: &str) -> StoredReport {
        StoredReport {
            report_id: "r1".into(),
            trip_id: trip.into(),
            start_date: "20261126".into(),
            level: 2,
            ..Default::default()
        }
    }

    fn home(layout: &Layout, trip: &str) -> u16 {
        layout.partition_of(&TripKey {
            trip_id: trip.into(),
            start_date: "20261126".into(),
        })
    }

    #[test]
    fn a_good_report_in_its_partition_is_admitted() {
        let l = Layout::new(4);
        let bytes = report("T1").encode_to_vec();
        let admitted = admit(&entry(Some(bytes), 1), home(&l, "T1"), &l, 5).unwrap();
        assert_eq!(admitted.report_id, "r1");
    }

    #[test]
    fn garbage_missing_misplaced_and_redelivered_entries_are_set_aside() {
        let l = Layout::new(4);
        let k = home(&l, "T1");
        let garbage = admit(&entry(Some(vec![0xff, 0xff, 0xff]), 1), k, &l, 5).unwrap_err();
        assert_eq!(garbage.label, "undecodable");
        assert_eq!(garbage.payload, vec![0xff, 0xff, 0xff]);
        assert_eq!(garbage.id, "1-0");

        assert_eq!(
            admit(&entry(None, 1), k, &l, 5).unwrap_err().label,
            "missing"
        );

        let bytes = report("T1").encode_to_vec();
        let elsewhere = (k + 1) % 4;
        let misplaced = admit(&entry(Some(bytes.clone()), 1), elsewhere, &l, 5).unwrap_err();
        assert_eq!(misplaced.label, "wrong_partition");
        assert!(
            misplaced.reason.contains(&format!("partition {k}")),
            "{}",
            misplaced.reason
        );

        let tired = admit(&entry(Some(bytes.clone()), 6), k, &l, 5).unwrap_err();
        assert_eq!(tired.label, "redelivered");
        assert!(tired.reason.contains("6 times"), "{}", tired.reason);
        assert!(admit(&entry(Some(bytes.clone()), 5), k, &l, 5).is_ok());
        // 0 turns the limit off.
        assert!(admit(&entry(Some(bytes), 50), k, &l, 0).is_ok());
    }
}
