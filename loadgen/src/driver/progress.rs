//! The once-a-second progress line on stderr while a run is going.

use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::stats::Stats;

/// Prints a progress line every second until `stop`.
pub fn spawn(stats: Arc<Stats>, start: Instant, stop: CancellationToken) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick =
            tokio::time::interval_at(start + Duration::from_secs(1), Duration::from_secs(1));
        let mut last = Totals::of(&stats);
        let lines = async {
            loop {
                tick.tick().await;
                let now = Totals::of(&stats);
                eprintln!("{}", line(start.elapsed(), &last, &now, &stats));
                last = now;
            }
        };
        stop.run_until_cancelled(lines).await;
    })
}

/// The counters a progress line shows deltas of.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Totals {
    sent: u64,
    acks: u64,
    rejected: u64,
    errors: u64,
}

impl Totals {
    fn of(stats: &Stats) -> Totals {
        Totals {
            sent: stats.sent.get(),
            acks: stats.accepted.get() + stats.duplicate.get() + stats.rejected.get(),
            rejected: stats.rejected.get(),
            errors: stats.stream_errors.total()
                + stats.watch_errors.total()
                + stats.query_errors.total(),
        }
    }
}

fn line(elapsed: Duration, last: &Totals, now: &Totals, stats: &Stats) -> String {
    let interval = stats.ack_latency_interval.take_interval();
    format!(
        "[{:>5.0}s] sent {:>7}/s  acks {:>7}/s (total {})  rejected {}  ack p99 {:.1} ms  lag p99 {:.1} ms  late {}  errors {}",
        elapsed.as_secs_f64(),
        now.sent - last.sent,
        now.acks - last.acks,
        now.acks,
        now.rejected,
        interval.p99_ms,
        stats.generator_lag_interval.take_interval().p99_ms,
        stats.late.get(),
        now.errors,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_line_shows_per_second_deltas_and_interval_p99() {
        let stats = Stats::default();
        let last = Totals::of(&stats);
        stats.sent.add(120);
        stats.accepted.add(100);
        stats.rejected.add(3);
        stats.ack_latency_interval.record(Duration::from_millis(7));
        stats
            .generator_lag_interval
            .record(Duration::from_millis(2));
        let now = Totals::of(&stats);
        let text = line(Duration::from_secs(2), &last, &now, &stats);
        assert!(text.contains("sent     120/s"), "{text}");
        assert!(text.contains("acks     103/s"), "{text}");
        assert!(text.contains("rejected 3"), "{text}");
        assert!(text.contains("ack p99 7.0 ms"), "{text}");
        assert!(text.contains("lag p99 2.0 ms"), "{text}");
        let again = line(Duration::from_secs(3), &now, &now, &stats);
        assert!(again.contains("ack p99 0.0 ms"), "interval resets: {again}");
        assert!(again.contains("lag p99 0.0 ms"), "interval resets: {again}");
    }
}
