//! The slab summary: one entry per slab in twin-slot blocks of 252 entries.
//!
//! Only the blocks covering existing slabs are used: block `k` holds the entries of slabs
//! `252k ..` up to 252 or the last slab. Opening refuses a block with fewer entries than the
//! layout puts in it, and ignores entries past the last slab: growing the depot writes (and
//! flushes) the summary with the new slabs before the super block with the new slab count, so
//! a crash between the two leaves a last block describing slabs the volume does not have yet.
//! Nothing reads those entries; the next write of the block drops them, and the next grow
//! rewrites them (`grown`).
//!
//! Invariants: the depot remembers the entries last handed out for each block, so a block is
//! rewritten only when one of its entries changed (or when all are asked for); every write
//! goes to the slot not holding the newest copy, one generation higher.

use uvdo_format::block::BLOCK_SIZE;
use uvdo_format::layout::Layout;
use uvdo_format::slab_summary::{self, ENTRIES_PER_BLOCK, SlabSummaryBlock, SummaryEntry};
use uvdo_format::{Block, BlockType, FormatError, Nonce, Pbn, Problem, SlabNumber};
use uvdo_io::Storage;

use super::slab_journal::FIRST_SEQUENCE;
use super::twin::{TwinWriter, read_pair};
use crate::error::VolumeError;

/// The summary blocks a depot of `slab_count` slabs uses.
fn block_count(slab_count: u32) -> u32 {
    slab_count.div_ceil(ENTRIES_PER_BLOCK_U32)
}

const ENTRIES_PER_BLOCK_U32: u32 = 252;
const _: () = assert!(ENTRIES_PER_BLOCK_U32 as usize == ENTRIES_PER_BLOCK);

/// The slabs summary block `index` describes.
fn slabs_of(index: u32, slab_count: u32) -> std::ops::Range<usize> {
    let start = index * ENTRIES_PER_BLOCK_U32;
    let end = (start + ENTRIES_PER_BLOCK_U32).min(slab_count);
    start as usize..end as usize
}

/// What a slab's entry says right after format: empty, clean, no reference counts on disk,
/// journal starting at [`FIRST_SEQUENCE`].
pub(super) fn formatted_entry(layout: &Layout) -> SummaryEntry {
    SummaryEntry {
        journal_tail: FIRST_SEQUENCE,
        free_blocks: layout.slab().data_blocks,
        clean: true,
        ref_counts_written: false,
    }
}

/// One summary block's write state.
#[derive(Clone, Debug)]
struct BlockState {
    writer: TwinWriter,
    /// The entries last handed out for writing (or read).
    written: Vec<SummaryEntry>,
}

/// The write state of every summary block in use.
#[derive(Clone, Debug)]
pub(super) struct Summary {
    blocks: Vec<BlockState>,
}

impl Summary {
    /// The blocks of a new volume's summary: generation 1 in slot A.
    pub(super) fn format(layout: &Layout, nonce: Nonce) -> Vec<(Pbn, Block)> {
        let entries = vec![formatted_entry(layout); layout.slab_count() as usize];
        let mut summary = Self {
            blocks: (0..block_count(layout.slab_count()))
                .map(|_| BlockState {
                    writer: TwinWriter::FIRST,
                    written: Vec::new(),
                })
                .collect(),
        };
        let mut out = Vec::new();
        summary.take_writes(layout, nonce, &entries, true, &mut out);
        out
    }

    /// Reads every summary block in use; returns the write state and one entry per slab.
    pub(super) fn read(
        store: &dyn Storage,
        layout: &Layout,
        nonce: Nonce,
    ) -> Result<(Self, Vec<SummaryEntry>), VolumeError> {
        let mut blocks = Vec::new();
        let mut entries = Vec::with_capacity(layout.slab_count() as usize);
        for index in 0..block_count(layout.slab_count()) {
            let base = layout.summary_base(index);
            let (a, b) = read_pair(store, base)?;
            let chosen = slab_summary::read_twins(&a, &b, nonce, base, index)?;
            let expected = slabs_of(index, layout.slab_count()).len();
            let mut chosen = chosen;
            if chosen.value.entries.len() < expected {
                let found = chosen.value.entries.len() as u64;
                return Err(corrupt(
                    chosen.slot.pbn(base),
                    "entry count",
                    "the number of slabs the layout puts in this block",
                    found,
                ));
            }
            // Entries of slabs past the last one: a grow that did not finish (module doc).
            chosen.value.entries.truncate(expected);
            entries.extend_from_slice(&chosen.value.entries);
            blocks.push(BlockState {
                writer: TwinWriter::after(&chosen),
                written: chosen.value.entries,
            });
        }
        Ok((Self { blocks }, entries))
    }

    /// This summary's write state extended to the blocks `layout` (a grown depot) uses, and
    /// the blocks to write for it: every block whose entries change, which is the last old
    /// block (when it was partly used) and every new one. `entries` has one entry per slab of
    /// `layout`. A new block may hold a copy written by an earlier grow that did not finish:
    /// its next write goes to the other slot, one generation higher, so it wins; an invalid
    /// or foreign pair starts at slot A, generation 1. `self` is unchanged, so the grow can
    /// still be abandoned.
    pub(super) fn grown(
        &self,
        store: &dyn Storage,
        layout: &Layout,
        nonce: Nonce,
        entries: &[SummaryEntry],
    ) -> Result<(Self, Vec<(Pbn, Block)>), VolumeError> {
        let mut grown = self.clone();
        let old_blocks = u32::try_from(self.blocks.len()).expect("at most 33 summary blocks");
        for index in old_blocks..block_count(layout.slab_count()) {
            let base = layout.summary_base(index);
            let (a, b) = read_pair(store, base)?;
            let writer = slab_summary::read_twins(&a, &b, nonce, base, index)
                .map_or(TwinWriter::FIRST, |chosen| TwinWriter::after(&chosen));
            grown.blocks.push(BlockState {
                writer,
                written: Vec::new(),
            });
        }
        let mut out = Vec::new();
        grown.take_writes(layout, nonce, entries, false, &mut out);
        Ok((grown, out))
    }

    /// The PBN of the copy of `slab`'s entry last read or handed out, for error reports.
    pub(super) fn newest_pbn(&self, layout: &Layout, slab: SlabNumber) -> Pbn {
        let (index, _) = slab_summary::locate(slab);
        self.blocks[index as usize]
            .writer
            .newest_pbn(layout.summary_base(index))
    }

    /// Encodes the blocks whose entries differ from the ones last handed out (or all of them
    /// with `all`) into their next twin slots, appending them to `out`. `entries` has one
    /// entry per slab. Returns the number of blocks encoded.
    pub(super) fn take_writes(
        &mut self,
        layout: &Layout,
        nonce: Nonce,
        entries: &[SummaryEntry],
        all: bool,
        out: &mut Vec<(Pbn, Block)>,
    ) -> u64 {
        assert_eq!(
            entries.len(),
            layout.slab_count() as usize,
            "one entry per slab"
        );
        let mut written = 0;
        for (index, state) in (0_u32..).zip(self.blocks.iter_mut()) {
            let current = &entries[slabs_of(index, layout.slab_count())];
            if !all && state.written == current {
                continue;
            }
            let value = SlabSummaryBlock {
                block_index: index,
                entries: current.to_vec(),
            };
            let (pbn, generation) = state.writer.claim(layout.summary_base(index));
            let mut block = [0_u8; BLOCK_SIZE];
            value.encode(nonce, pbn, generation, &mut block);
            out.push((pbn, block));
            state.written = value.entries;
            written += 1;
        }
        written
    }
}

/// A summary field that contradicts what the depot knows: damaged metadata.
pub(super) fn corrupt(
    pbn: Pbn,
    field: &'static str,
    expected: &'static str,
    found: u64,
) -> VolumeError {
    let problem = Problem::InvalidField {
        field,
        expected,
        found,
    };
    VolumeError::Corrupt(FormatError::new(BlockType::SlabSummary, pbn, problem))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_cover_the_slabs_exactly() {
        assert_eq!(block_count(1), 1);
        assert_eq!(block_count(252), 1);
        assert_eq!(block_count(253), 2);
        assert_eq!(block_count(8192), 33);
        assert_eq!(slabs_of(0, 253), 0..252);
        assert_eq!(slabs_of(1, 253), 252..253);
        assert_eq!(slabs_of(32, 8192), 8064..8192);
    }
}
