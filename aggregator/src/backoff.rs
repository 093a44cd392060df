//! Growing pauses after Redis errors, so an outage is retried without a hot loop.

use std::time::Duration;

use tokio_util::sync::CancellationToken;

const FIRST: Duration = Duration::from_millis(200);
const MAX: Duration = Duration::from_secs(2);

/// 200 ms, doubling up to 2 s; back to 200 ms after a success.
#[derive(Debug)]
pub(crate) struct Backoff {
    next: Duration,
}

impl Backoff {
    pub(crate) fn new() -> Backoff {
        Backoff { next: FIRST }
    }

    /// Forgets past failures.
    pub(crate) fn reset(&mut self) {
        self.next = FIRST;
    }

    /// The pause to take now; the next one will be longer.
    pub(crate) fn step(&mut self) -> Duration {
        let now = self.next;
        self.next = (self.next * 2).min(MAX);
        now
    }

    /// Sleeps for the next pause, or until `stop` is cancelled.
    pub(crate) async fn wait(&mut self, stop: &CancellationToken) {
        let pause = self.step();
        tokio::select! {
            () = tokio::time::sleep(pause) => {}
            () = stop.cancelled() => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_up_to_the_cap_and_resets() {
        let mut b = Backoff::new();
        let steps: Vec<u128> = (0..6).map(|_| b.step().as_millis()).collect();
        assert_eq!(steps, vec![200, 400, 800, 1600, 2000, 2000]);
        b.reset();
        assert_eq!(b.step().as_millis(), 200);
    }
}
