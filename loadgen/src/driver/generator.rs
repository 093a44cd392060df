//! The sending loop: follows the arrival schedule, takes each report from
//! the simulator and hands it to a stream, never waiting for the server.
//!
//! It records how far behind schedule each report left (generator lag). A
//! generator that cannot keep up makes the run invalid: its latencies would
//! then describe the load generator, not the system under test.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use crowd_proto::codec::timestamp_to_ms;
use tokio::sync::mpsc::UnboundedSender;
use tokio::time::Instant;

use super::arrivals::Arrivals;
use super::source::{RunningTrips, Source};
use super::stats::Stats;
use super::streams::Outgoing;
use super::watchers::Freshness;

/// A report due sooner than this leaves at once instead of after a sleep:
/// a sleep this short costs more than it keeps (a system call, two context
/// switches, and the kernel's 50 µs of timer slack), and at tens of
/// thousands of reports a second it was most of the sending thread's CPU.
/// A report leaves at most this early, which understates its latency by
/// as much at most.
const MIN_SLEEP: Duration = Duration::from_micros(100);

/// How often the list of running trains (what queries and watchers ask
/// about) is renewed.
const REFRESH_RUNNING: Duration = Duration::from_secs(1);

/// Everything the sending loop needs.
#[derive(Debug)]
pub struct Generator {
    pub arrivals: Arrivals,
    /// The instant offset zero of the schedule stands for.
    pub start: Instant,
    /// The same moment on the wall clock, for `observed_at`.
    pub start_utc: DateTime<Utc>,
    /// A report leaving later than this behind schedule counts as late.
    pub late_after: Duration,
    pub source: Source,
    /// One per stream; reports go round-robin.
    pub senders: Vec<UnboundedSender<Outgoing>>,
    pub running: RunningTrips,
    pub freshness: Arc<Freshness>,
    pub stats: Arc<Stats>,
}

impl Generator {
    /// Sends every scheduled report, then closes the streams' inputs.
    ///
    /// Blocking: it runs on a thread of its own (`spawn_blocking`) so that
    /// thousands of busy stream tasks cannot delay it, and it sleeps with
    /// the operating system's finer timer instead of tokio's 1 ms wheel.
    pub fn run(mut self) {
        let mut next = 0usize;
        let mut next_refresh = self.start + REFRESH_RUNNING;
        for offset in self.arrivals.by_ref() {
            let intended = self.start + offset;
            let ahead = intended.saturating_duration_since(Instant::now());
            if ahead >= MIN_SLEEP {
                std::thread::sleep(ahead);
            }
            let now = Instant::now();
            let lag = now.saturating_duration_since(intended);
            self.stats.generator_lag.record(lag);
            self.stats.generator_lag_interval.record(lag);
            if lag > self.late_after {
                self.stats.late.add(1);
            }
            if now >= next_refresh {
                next_refresh = now + REFRESH_RUNNING;
                let trips = self.source.running_trips();
                *self.running.write().unwrap_or_else(|p| p.into_inner()) = trips;
            }
            let observed_at = self.start_utc + offset;
            let Some(report) = self.source.report(offset, observed_at) else {
                self.stats.no_report.add(1);
                continue;
            };
            // Freshness only for riders whose clock is right: a skewed
            // `observed_at` would say nothing about how fast updates are.
            let note = match (&report.trip, &report.observed_at) {
                (Some(trip), Some(observed))
                    if timestamp_to_ms(observed) == observed_at.timestamp_millis() =>
                {
                    self.freshness
                        .on_sent(trip, timestamp_to_ms(observed), intended)
                }
                _ => None,
            };
            let stream = &self.senders[next % self.senders.len()];
            next = next.wrapping_add(1);
            if stream
                .send(Outgoing {
                    report,
                    intended,
                    note,
                })
                .is_ok()
            {
                self.stats.sent.add(1);
            }
        }
    }
}
