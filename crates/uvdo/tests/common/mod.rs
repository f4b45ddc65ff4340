//! Helpers shared by the engine's integration tests: stores, volumes, block contents, seeds.
//!
//! Each test binary uses a different subset, hence the `dead_code` allowance.
#![allow(dead_code, reason = "each test binary uses a different subset")]

use std::sync::Arc;

use rand::SeedableRng;
use rand::rngs::StdRng;
use uvdo::{FormatConfig, OpenOptions, Volume};
use uvdo_format::BlockCount;
use uvdo_io::Storage;
use uvdo_io::memory::MemoryStore;

/// Bytes in a block.
pub(crate) const BLOCK: usize = 4096;
/// Bytes in a block, for offset arithmetic.
pub(crate) const BLOCK_U64: u64 = 4096;

/// One block's contents.
pub(crate) type Data = [u8; BLOCK];

/// The seed a randomized test runs with: `UVDO_SEED` when set (to replay a failure), else a
/// fresh one. The returned guard prints the seed if the test panics.
pub(crate) fn seed(test: &'static str) -> (u64, SeedGuard) {
    let seed = match std::env::var("UVDO_SEED") {
        Ok(text) => text
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("UVDO_SEED={text:?} is not a u64")),
        Err(_) => rand::random(),
    };
    eprintln!("{test}: seed {seed} (replay with UVDO_SEED={seed})");
    (seed, SeedGuard { test, seed })
}

/// Prints the seed when dropped during a panic.
#[derive(Debug)]
pub(crate) struct SeedGuard {
    test: &'static str,
    seed: u64,
}

impl Drop for SeedGuard {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "{}: FAILED with seed {}; replay with UVDO_SEED={} cargo test -p uvdo {}",
                self.test, self.seed, self.seed, self.test
            );
        }
    }
}

/// A deterministic random generator for `seed`.
pub(crate) fn rng(seed: u64) -> StdRng {
    StdRng::seed_from_u64(seed)
}

/// A block no other `tag` produces, never all zeros: the tag in the first 8 bytes, then a
/// splitmix stream seeded with it.
pub(crate) fn unique_block(tag: u64) -> Data {
    let mut block = [0_u8; BLOCK];
    let mut state = tag ^ 0x9e37_79b9_7f4a_7c15;
    block[..8].copy_from_slice(&tag.to_le_bytes());
    for chunk in block[8..].chunks_exact_mut(8) {
        chunk.copy_from_slice(&splitmix(&mut state).to_le_bytes());
    }
    // The stream is never all zeros over 4088 bytes, but make it impossible.
    block[BLOCK - 1] |= 1;
    block
}

fn splitmix(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// The tiny geometry (16-block slabs, 8-block journal, 2-page cache).
pub(crate) fn tiny(logical_blocks: u64) -> FormatConfig {
    FormatConfig::tiny(BlockCount(logical_blocks))
}

/// A mid-size geometry: 64-block slabs, 32-block journal, 8-page cache.
pub(crate) fn mid(logical_blocks: u64) -> FormatConfig {
    FormatConfig {
        slab_blocks: BlockCount(64),
        slab_journal_blocks: BlockCount(4),
        recovery_journal_blocks: BlockCount(32),
        block_map_cache_pages: 8,
        ..FormatConfig::tiny(BlockCount(logical_blocks))
    }
}

/// A zeroed memory store of `bytes`.
pub(crate) fn memory_store(bytes: u64) -> Arc<dyn Storage> {
    Arc::new(MemoryStore::new(bytes))
}

/// Formats `store` with `config` and opens it with `options`.
pub(crate) fn format_open(
    store: &Arc<dyn Storage>,
    config: &FormatConfig,
    options: &OpenOptions,
) -> Volume {
    Volume::format(&**store, config).expect("format");
    Volume::open(Arc::clone(store), options).expect("open after format")
}

/// Reads one whole block.
pub(crate) fn read_block(volume: &Volume, lbn: u64) -> Data {
    let mut block = [0_u8; BLOCK];
    volume
        .read(lbn * BLOCK_U64, &mut block)
        .unwrap_or_else(|e| panic!("read of LBN {lbn}: {e}"));
    block
}

/// Writes one whole block.
pub(crate) fn write_block(volume: &Volume, lbn: u64, data: &Data) {
    volume
        .write(lbn * BLOCK_U64, data, false)
        .unwrap_or_else(|e| panic!("write of LBN {lbn}: {e}"));
}

/// Asserts the audit finds nothing wrong.
pub(crate) fn assert_audit_clean(volume: &Volume, when: &str) {
    let report = volume
        .audit()
        .unwrap_or_else(|e| panic!("audit {when}: {e}"));
    assert!(report.is_clean(), "audit {when}: {report:#?}");
}

/// A short description of a block for assertion messages: its first bytes and whether it is
/// all zeros.
pub(crate) fn describe(block: &Data) -> String {
    if block.iter().all(|&b| b == 0) {
        "zeros".to_owned()
    } else {
        format!("{:02x?}..", &block[..12])
    }
}
