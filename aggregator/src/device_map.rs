//! Maps keyed by device.
//!
//! A device is known only by its keyed hash (the server hashes device ids
//! with a secret before anything is stored), so its key is already spread
//! evenly and nobody outside can aim collisions at it: the standard
//! library's SipHash, built to resist such aiming, only costs time on the
//! aggregator's hottest lookups (every vote weighs its device's trust).
//! One multiply-xorshift round spreads the bits hashbrown reads (the top
//! seven for its control bytes, the low ones for the bucket) even for the
//! small device numbers tests use.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

/// A map from device hash to `V`.
pub type DeviceMap<V> = HashMap<u64, V, BuildHasherDefault<DeviceHasher>>;

/// Hashes a `u64` device key with one multiply-xorshift round.
#[derive(Debug, Default, Clone, Copy)]
pub struct DeviceHasher(u64);

/// An odd constant with well-mixed bits (the golden ratio's fraction).
const MIX: u64 = 0x9e37_79b9_7f4a_7c15;

impl Hasher for DeviceHasher {
    fn write(&mut self, bytes: &[u8]) {
        // Not used for `u64` keys; correct for anything else.
        for chunk in bytes.chunks(8) {
            let mut word = [0u8; 8];
            word[..chunk.len()].copy_from_slice(chunk);
            self.write_u64(u64::from_le_bytes(word));
        }
    }

    fn write_u64(&mut self, n: u64) {
        let x = (self.0 ^ n).wrapping_mul(MIX);
        self.0 = x ^ (x >> 29);
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

#[cfg(test)]
mod tests {
    use std::hash::BuildHasher;

    use super::*;

    #[test]
    fn small_keys_spread_over_the_top_and_bottom_bits() {
        let build = BuildHasherDefault::<DeviceHasher>::default();
        let mut top = std::collections::HashSet::new();
        let mut low = std::collections::HashSet::new();
        for d in 0u64..1024 {
            let h = build.hash_one(d);
            top.insert(h >> 57);
            low.insert(h & 1023);
        }
        assert!(top.len() > 100, "{}", top.len());
        assert!(low.len() > 600, "{}", low.len());
    }

    #[test]
    fn a_device_map_is_a_map() {
        let mut m: DeviceMap<f64> = DeviceMap::default();
        for d in 0..10_000u64 {
            m.insert(d.wrapping_mul(0x1234_5678_9abc_def1), d as f64);
        }
        assert_eq!(m.len(), 10_000);
        assert_eq!(m.get(&7u64.wrapping_mul(0x1234_5678_9abc_def1)), Some(&7.0));
        assert_eq!(m.get(&3), None);
    }
}
