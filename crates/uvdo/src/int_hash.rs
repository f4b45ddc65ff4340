//! A cheap hasher for the engine's maps keyed by block numbers it allocated itself.
//!
//! The standard library's SipHash cost about a tenth of a unique write's instructions
//! (issue 7, callgrind), in the block map cache's page index, the reference counts'
//! provisional table and the set of blocks being written. Their keys are PBNs and slab block
//! numbers the engine hands out, not values a client chooses, so flooding resistance buys
//! nothing there. This is the multiply-rotate scheme of `rustc-hash`: a multiplication
//! spreads each key into the high bits, and the final rotation brings them down to the low
//! bits the table indexes by, so strided keys (tree page pairs) do not collide.

use std::collections::{HashMap, HashSet};
use std::hash::{BuildHasherDefault, Hasher};

/// Odd multiplier from `rustc-hash` 2.
const MULTIPLIER: u64 = 0xf135_7aea_2e62_a9c5;

/// Hashes integers with one multiplication each.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct IntHasher(u64);

impl Hasher for IntHasher {
    fn finish(&self) -> u64 {
        self.0.rotate_left(26)
    }

    fn write(&mut self, bytes: &[u8]) {
        for chunk in bytes.chunks(8) {
            let mut word = [0_u8; 8];
            word[..chunk.len()].copy_from_slice(chunk);
            self.write_u64(u64::from_le_bytes(word));
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = self.0.wrapping_add(n).wrapping_mul(MULTIPLIER);
    }

    fn write_u32(&mut self, n: u32) {
        self.write_u64(u64::from(n));
    }

    fn write_usize(&mut self, n: usize) {
        self.write_u64(n as u64);
    }
}

/// Builds [`IntHasher`]s.
pub(crate) type IntBuildHasher = BuildHasherDefault<IntHasher>;
/// A `HashMap` with [`IntHasher`].
pub(crate) type IntMap<K, V> = HashMap<K, V, IntBuildHasher>;
/// A `HashSet` with [`IntHasher`].
pub(crate) type IntSet<K> = HashSet<K, IntBuildHasher>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strided_keys_spread_over_low_bits() {
        let buckets: HashSet<u64> = (0..1024_u64)
            .map(|k| {
                let mut h = IntHasher::default();
                h.write_u64(k * 2);
                h.finish() & 1023
            })
            .collect();
        assert!(
            buckets.len() > 512,
            "only {} of 1024 buckets",
            buckets.len()
        );
    }
}
