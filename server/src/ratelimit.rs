//! Per-device rate limit at the edge: one token bucket per device hash, so a
//! single flooding install cannot fill the streams (or tilt the estimates)
//! while ordinary riders, who report a few times per trip, never notice it.
//!
//! Memory is bounded: buckets that have refilled are forgotten (a full bucket
//! is the same as no bucket), and when too many devices are active at once
//! new ones pass unlimited rather than evicting someone's recent history.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Instant;

/// Independent locks, so concurrent streams rarely wait for each other.
const SHARDS: usize = 16;

/// Token buckets keyed by device hash.
#[derive(Debug)]
pub struct DeviceLimiter {
    /// Tokens added per second.
    rate: f64,
    /// Bucket size: reports a device may send at once after a quiet spell.
    burst: f64,
    /// Most buckets kept per shard.
    max_per_shard: usize,
    shards: Vec<Mutex<HashMap<u64, Bucket>>>,
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

impl DeviceLimiter {
    /// `per_minute` sustained reports per device, up to `burst` at once;
    /// at most about `max_devices` buckets in memory.
    pub fn new(per_minute: u32, burst: u32, max_devices: usize) -> DeviceLimiter {
        DeviceLimiter {
            rate: f64::from(per_minute) / 60.0,
            burst: f64::from(burst.max(1)),
            max_per_shard: (max_devices / SHARDS).max(1),
            shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
        }
    }

    /// Takes one token of `device` at `now`: false when the device is over
    /// its rate.
    pub fn allow(&self, device: u64, now: Instant) -> bool {
        let shard = &self.shards[(device % SHARDS as u64) as usize];
        let mut buckets = shard.lock().unwrap_or_else(|e| e.into_inner());
        if !buckets.contains_key(&device) && buckets.len() >= self.max_per_shard {
            buckets.retain(|_, b| self.refilled(b, now) < self.burst);
            if buckets.len() >= self.max_per_shard {
                metrics::counter!("crowd_server_rate_limit_overflow_total").increment(1);
                return true;
            }
        }
        let bucket = buckets.entry(device).or_insert(Bucket {
            tokens: self.burst,
            at: now,
        });
        bucket.tokens = self.refilled(bucket, now);
        bucket.at = now;
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            true
        } else {
            false
        }
    }

    fn refilled(&self, bucket: &Bucket, now: Instant) -> f64 {
        let elapsed = now.saturating_duration_since(bucket.at).as_secs_f64();
        (bucket.tokens + elapsed * self.rate).min(self.burst)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn a_burst_passes_then_the_rate_applies() {
        let limiter = DeviceLimiter::new(60, 3, 1000);
        let t0 = Instant::now();
        assert!((0..3).all(|_| limiter.allow(7, t0)));
        assert!(!limiter.allow(7, t0), "burst exhausted");
        assert!(limiter.allow(8, t0), "other devices are unaffected");
        assert!(!limiter.allow(7, t0 + Duration::from_millis(500)));
        assert!(
            limiter.allow(7, t0 + Duration::from_millis(1500)),
            "one token per second"
        );
        assert!(!limiter.allow(7, t0 + Duration::from_millis(1600)));
    }

    #[test]
    fn memory_stays_bounded_and_idle_buckets_are_forgotten() {
        let limiter = DeviceLimiter::new(60, 1, SHARDS);
        let t0 = Instant::now();
        // One bucket per shard: device 0 is limited, device 16 (same shard)
        // passes unlimited while the shard is full of active buckets.
        assert!(limiter.allow(0, t0));
        assert!(!limiter.allow(0, t0));
        assert!(limiter.allow(16, t0));
        assert!(limiter.allow(16, t0));
        // Once device 0 has refilled, its bucket is dropped to make room.
        let later = t0 + Duration::from_secs(2);
        assert!(limiter.allow(16, later));
        assert!(!limiter.allow(16, later), "16 now has a bucket of its own");
    }
}
