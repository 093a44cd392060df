//! What this server refused, counted in process: REJECTED reports by reason
//! and DUPLICATE reports, for the operators' abuse view (GetAbuseStats).
//!
//! Each count also goes to the Prometheus series
//! `crowd_server_reports_rejected_total{reason}` and
//! `crowd_server_reports_duplicate_total`, so the two views always agree.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use chrono::{DateTime, Utc};

/// Counts shared by the ingest service and the operator service.
#[derive(Debug, Clone)]
pub struct RejectCounts {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    /// Rejected reports by reason (a field name or a policy).
    by_reason: Mutex<HashMap<&'static str, u64>>,
    /// Reports answered DUPLICATE.
    duplicates: AtomicU64,
    /// When counting started.
    since: DateTime<Utc>,
}

impl Default for RejectCounts {
    fn default() -> Self {
        RejectCounts {
            inner: Arc::new(Inner {
                by_reason: Mutex::new(HashMap::new()),
                duplicates: AtomicU64::new(0),
                since: Utc::now(),
            }),
        }
    }
}

impl RejectCounts {
    /// Counts one rejected report.
    pub fn rejected(&self, reason: &'static str) {
        metrics::counter!("crowd_server_reports_rejected_total", "reason" => reason).increment(1);
        *self
            .inner
            .by_reason
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .entry(reason)
            .or_default() += 1;
    }

    /// Counts one duplicate report.
    pub fn duplicate(&self) {
        metrics::counter!("crowd_server_reports_duplicate_total").increment(1);
        self.inner.duplicates.fetch_add(1, Ordering::Relaxed);
    }

    /// Rejections by reason, most frequent first (ties by reason).
    pub fn by_reason(&self) -> Vec<(&'static str, u64)> {
        let mut counts: Vec<_> = self
            .inner
            .by_reason
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .map(|(&r, &n)| (r, n))
            .collect();
        counts.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
        counts
    }

    /// Duplicates so far.
    pub fn duplicates(&self) -> u64 {
        self.inner.duplicates.load(Ordering::Relaxed)
    }

    /// When counting started.
    pub fn since(&self) -> DateTime<Utc> {
        self.inner.since
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_by_reason_most_frequent_first() {
        let counts = RejectCounts::default();
        counts.rejected("observed_at");
        counts.rejected("rate_limit");
        counts.rejected("rate_limit");
        counts.rejected("carriage_sequence");
        counts.duplicate();
        assert_eq!(
            counts.by_reason(),
            vec![
                ("rate_limit", 2),
                ("carriage_sequence", 1),
                ("observed_at", 1)
            ]
        );
        assert_eq!(counts.duplicates(), 1);
        assert_eq!(counts.clone().duplicates(), 1, "clones share the counts");
    }
}
