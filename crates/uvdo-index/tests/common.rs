//! Helpers shared by the index tests.

#![allow(dead_code, unreachable_pub)]

use std::sync::Arc;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use uvdo_format::{Nonce, Pbn};
use uvdo_index::{IndexConfig, IndexRegion};
use uvdo_io::memory::MemoryStore;

pub const NONCE: Nonce = Nonce(0x5eed_1dec_0de5_0001);

pub fn names(seed: u64, count: usize) -> Vec<u128> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    (0..count).map(|_| rng.random()).collect()
}

/// A memory store holding the index region at `start`, with a few blocks before it.
pub fn region(config: &IndexConfig, start: u64) -> (Arc<MemoryStore>, IndexRegion) {
    let blocks = config.disk_blocks();
    let store = Arc::new(MemoryStore::new((start + blocks) * 4096));
    let region = IndexRegion {
        store: store.clone(),
        start: Pbn(start),
        blocks,
        nonce: NONCE,
    };
    (store, region)
}

/// A store and the region on it.
pub type Fixture = (Arc<MemoryStore>, IndexRegion);
