//! Unique, non-zero 4 KiB blocks at almost no cost, and the loop that writes them.
//!
//! A chunk of random blocks is made once; each block written is a chunk slot with a serial
//! number stamped over its first 8 bytes. Serials never repeat within a run of a size (each
//! phase has its own range), so no two blocks written are equal and every write costs a
//! data write: nothing deduplicates and nothing is a zero block.

use std::time::{Duration, Instant};

use uvdo::Volume;

use crate::BenchError;
use crate::shape::BLOCK_BYTES;

/// Blocks per `Volume::write` request (256 KiB).
pub(crate) const CHUNK_BLOCKS: u64 = 64;
const BLOCK: usize = uvdo_format::BLOCK_SIZE;
const CHUNK_BYTES: usize = 64 * BLOCK;
const _: () = assert!(CHUNK_BYTES as u64 == CHUNK_BLOCKS * BLOCK_BYTES);
/// Progress lines on stderr at most this often.
const PROGRESS_EVERY: Duration = Duration::from_secs(10);

/// The chunk the blocks are stamped in.
#[derive(Debug)]
pub(crate) struct UniqueBlocks {
    chunk: Vec<u8>,
}

impl UniqueBlocks {
    pub(crate) fn new(seed: u64) -> Self {
        let mut state = seed;
        let mut chunk = vec![0_u8; CHUNK_BYTES];
        for word in chunk.chunks_exact_mut(8) {
            word.copy_from_slice(&split_mix(&mut state).to_le_bytes());
        }
        Self { chunk }
    }

    /// `blocks` blocks (at most [`CHUNK_BLOCKS`]), block `i` stamped with serial `first + i`.
    pub(crate) fn stamped(&mut self, first: u64, blocks: u64) -> &[u8] {
        assert!(blocks <= CHUNK_BLOCKS, "{blocks} blocks in one chunk");
        let bytes = usize::try_from(blocks).expect("a chunk fits in memory") * BLOCK;
        for (serial, block) in (first..).zip(self.chunk[..bytes].chunks_exact_mut(BLOCK)) {
            block[..8].copy_from_slice(&serial.to_le_bytes());
        }
        &self.chunk[..bytes]
    }
}

/// SplitMix64: reproducible filler, not statistical quality.
fn split_mix(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Where a run of writes goes: `count` blocks from LBN `start`, wrapping at `logical_blocks`,
/// with serials from `serial`.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Span {
    pub(crate) start: u64,
    pub(crate) count: u64,
    pub(crate) serial: u64,
    pub(crate) logical_blocks: u64,
}

/// Writes `span` in chunks that never cross the end of the volume (no flush); says how far it
/// got on stderr every few seconds under `label`.
pub(crate) fn write_span(
    volume: &Volume,
    blocks: &mut UniqueBlocks,
    span: Span,
    label: &str,
) -> Result<(), BenchError> {
    assert!(span.start < span.logical_blocks, "span starts past the end");
    let started = Instant::now();
    let mut last_said = started;
    let mut done = 0;
    while done < span.count {
        let lbn = (span.start + done) % span.logical_blocks;
        let take = CHUNK_BLOCKS
            .min(span.count - done)
            .min(span.logical_blocks - lbn);
        let data = blocks.stamped(span.serial + done, take);
        volume.write(lbn * BLOCK_BYTES, data, false)?;
        done += take;
        if last_said.elapsed() >= PROGRESS_EVERY {
            last_said = Instant::now();
            let rate = ratio(done, started.elapsed().as_secs_f64());
            eprintln!(
                "    {label}: {done} of {} blocks ({rate:.0} blocks/s)",
                span.count
            );
        }
    }
    Ok(())
}

fn ratio(count: u64, seconds: f64) -> f64 {
    #[expect(clippy::cast_precision_loss, reason = "a rate for display")]
    let count = count as f64;
    count / seconds.max(1e-9)
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;

    #[test]
    fn stamped_blocks_are_distinct_and_not_zero() {
        let mut blocks = UniqueBlocks::new(7);
        let mut seen = HashSet::new();
        // Two chunks with overlapping slots but different serials.
        for first in [0, CHUNK_BLOCKS / 2, 1 << 48] {
            let data = blocks.stamped(first, CHUNK_BLOCKS).to_vec();
            for block in data.chunks_exact(BLOCK) {
                assert!(block.iter().any(|&b| b != 0));
                assert!(seen.insert(block.to_vec()), "a block repeated");
            }
        }
        assert_eq!(seen.len() * BLOCK, 3 * CHUNK_BYTES);
        let short = blocks.stamped(99, 3);
        assert_eq!(short.len(), 3 * BLOCK);
        assert_eq!(short[BLOCK..BLOCK + 8], 100_u64.to_le_bytes());
    }
}
