//! The force rebuild's side of the depot: fresh reference count blocks and a clean slab
//! summary from counts recounted from the block map (volume/rebuild.rs drives it).
//!
//! Each slab's journal is reset without writing it: the new journal starts at `tail` = one
//! past the highest sequence of any slab journal block that decodes on disk (1 when none
//! does), with head = tail, and the new reference count blocks carry the commit point
//! (`tail - 1`, last entry), which is at or after every entry of every old block. So:
//!
//! - a clean open (`Slab::open`) takes head = tail from the summary and never reads the old
//!   blocks;
//! - scrubbing after a later crash picks the chain's newest block by sequence: a new block
//!   (sequence >= tail) whenever one was written, and its head is >= tail, so the chain never
//!   reaches an old block; when none was written, the newest is the old block `tail - 1` and
//!   every entry it reaches is at or before the commit point, so nothing old is applied. Old
//!   blocks that do not decode now never will (their bytes do not change).
//!
//! Recovery journal entries replayed after a later crash are placed after the recovery point
//! of block `tail - 1`; the caller restarts the recovery journal above `recovery_sequence_max`
//! so that old recovery points can never hide a new entry.
//!
//! Every twin write goes to the slot not holding the newest valid copy, one generation higher
//! (the first slot with generation 1 when neither copy is valid).

use uvdo_format::block::BLOCK_SIZE;
use uvdo_format::header::Expected;
use uvdo_format::layout::Layout;
use uvdo_format::ref_counts::{self, COUNTS_PER_BLOCK, RefCountBlock};
use uvdo_format::slab_journal::{ENTRIES_PER_BLOCK, SlabJournalBlock, SlabJournalRegion};
use uvdo_format::slab_summary::{self, SlabSummaryBlock, SummaryEntry};
use uvdo_format::{Block, BlockCount, JournalPoint, Nonce, Pbn, SequenceNumber, SlabNumber};
use uvdo_io::Storage;

use super::SlabDepot;
use super::slab::{data_blocks, journal_region};
use super::slab_journal::FIRST_SEQUENCE;
use super::twin::{TwinWriter, read_pair};
use crate::error::VolumeError;

/// Where `rebuild_ref_counts` hands each slab's encoded blocks.
pub(crate) type WriteBlocks<'a> = dyn FnMut(&[(Pbn, Block)]) -> Result<(), VolumeError> + 'a;

/// What writing the recounted reference counts left for the summary and the super block.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct RebuiltSlabs {
    /// Each slab's new summary entry: clean, counts on disk, journal tail after the old log.
    pub(crate) entries: Vec<SummaryEntry>,
    /// The newest recovery journal sequence any slab journal block on disk names.
    pub(crate) recovery_sequence_max: u64,
    /// Reference count blocks written.
    pub(crate) ref_count_blocks: u64,
}

impl SlabDepot {
    /// Encodes every reference count block of every slab from `counts` (one count per slab
    /// data block, in PBN order) and hands each slab's blocks to `write`; `progress` gets
    /// (slabs done, slabs).
    ///
    /// # Errors
    ///
    /// `Io` when a read fails; whatever `write` returns.
    ///
    /// # Panics
    ///
    /// If `counts` does not hold one count per data block of `layout`: a caller bug.
    pub(crate) fn rebuild_ref_counts(
        store: &dyn Storage,
        layout: &Layout,
        nonce: Nonce,
        counts: &[u8],
        write: &mut WriteBlocks<'_>,
        progress: &mut dyn FnMut(u64, u64),
    ) -> Result<RebuiltSlabs, VolumeError> {
        let per_slab = data_blocks(layout) as usize;
        let slab_count = layout.slab_count();
        assert_eq!(
            counts.len(),
            per_slab * slab_count as usize,
            "one count per data block"
        );
        let pairs = u32::try_from(layout.slab().ref_count_pairs.0).expect("pairs fit in u32");
        let mut rebuilt = RebuiltSlabs::default();
        for (number, slab_counts) in (0_u32..).zip(counts.chunks_exact(per_slab)) {
            let number = SlabNumber(number);
            let region = journal_region(layout, number);
            let (newest, recovery_max) = newest_journal_block(store, nonce, &region)?;
            rebuilt.recovery_sequence_max = rebuilt.recovery_sequence_max.max(recovery_max);
            let tail = newest.map_or(FIRST_SEQUENCE, SequenceNumber::next);
            let commit_point = if tail > FIRST_SEQUENCE {
                JournalPoint {
                    sequence: SequenceNumber(tail.0 - 1),
                    entry: u16::try_from(ENTRIES_PER_BLOCK - 1).expect("1007"),
                }
            } else {
                JournalPoint::default()
            };
            let mut blocks = Vec::with_capacity(pairs as usize);
            for (index, chunk) in (0..pairs).zip(slab_counts.chunks(COUNTS_PER_BLOCK)) {
                let base = layout.ref_counts_base(number, index);
                let (a, b) = read_pair(store, base)?;
                let chosen =
                    ref_counts::read_twins(&a, &b, nonce, base, number, index, chunk.len());
                let mut writer = chosen.map_or(TwinWriter::FIRST, |c| TwinWriter::after(&c));
                let (pbn, generation) = writer.claim(base);
                let value = RefCountBlock {
                    commit_point,
                    slab: number,
                    block_index: index,
                    counts: chunk.to_vec(),
                };
                let mut block = [0_u8; BLOCK_SIZE];
                value.encode(nonce, pbn, generation, &mut block);
                blocks.push((pbn, block));
            }
            write(&blocks)?;
            rebuilt.ref_count_blocks += blocks.len() as u64;
            let free = slab_counts.iter().filter(|&&c| c == 0).count() as u64;
            rebuilt.entries.push(SummaryEntry {
                journal_tail: tail,
                free_blocks: BlockCount(free),
                clean: true,
                ref_counts_written: true,
            });
            progress(u64::from(number.0) + 1, u64::from(slab_count));
        }
        Ok(rebuilt)
    }

    /// Every summary block in use, encoded from `entries` (one per slab) into its next twin
    /// slot.
    ///
    /// # Errors
    ///
    /// `Io` when a read fails.
    pub(crate) fn rebuild_summary(
        store: &dyn Storage,
        layout: &Layout,
        nonce: Nonce,
        entries: &[SummaryEntry],
    ) -> Result<Vec<(Pbn, Block)>, VolumeError> {
        assert_eq!(
            entries.len(),
            layout.slab_count() as usize,
            "one entry per slab"
        );
        let mut out = Vec::new();
        for (index, chunk) in (0_u32..).zip(entries.chunks(slab_summary::ENTRIES_PER_BLOCK)) {
            let base = layout.summary_base(index);
            let (a, b) = read_pair(store, base)?;
            let chosen = slab_summary::read_twins(&a, &b, nonce, base, index);
            let mut writer = chosen.map_or(TwinWriter::FIRST, |c| TwinWriter::after(&c));
            let (pbn, generation) = writer.claim(base);
            let value = SlabSummaryBlock {
                block_index: index,
                entries: chunk.to_vec(),
            };
            let mut block = [0_u8; BLOCK_SIZE];
            value.encode(nonce, pbn, generation, &mut block);
            out.push((pbn, block));
        }
        Ok(out)
    }
}

/// The highest sequence among the blocks of a slab journal that decode at their position, and
/// the newest recovery journal sequence any of them names.
fn newest_journal_block(
    store: &dyn Storage,
    nonce: Nonce,
    region: &SlabJournalRegion,
) -> Result<(Option<SequenceNumber>, u64), VolumeError> {
    let length = usize::try_from(region.blocks).expect("journal length fits in memory");
    let mut bytes = vec![0_u8; length * BLOCK_SIZE];
    store.read_at(region.start.byte_offset(), &mut bytes)?;
    let mut newest: Option<SequenceNumber> = None;
    let mut recovery_max = 0;
    for (offset, chunk) in (0_u64..).zip(bytes.chunks_exact(BLOCK_SIZE)) {
        let block: &Block = chunk.try_into().expect("one block");
        let expected = Expected::new(nonce, region.start.offset(offset));
        if let Ok(decoded) = SlabJournalBlock::decode(block, expected, region) {
            newest = newest.max(Some(decoded.sequence));
            recovery_max = recovery_max.max(decoded.recovery_point.sequence.0);
        }
    }
    Ok((newest, recovery_max))
}
