//! One slab's reference counts: the live count of every data block, the reservations not yet
//! journaled, tallies by kind, and the twin state of the slab's reference count blocks.
//!
//! Two views of each count:
//! - the *live* count includes reservations (`allocate_data`, `try_share`,
//!   `allocate_tree_pair`) whose recovery journal entry is not durable yet; allocation and
//!   sharing decide on it;
//! - the *committed* count holds only journaled changes; it is what reference count blocks on
//!   disk contain (FORMAT.md: a provisional count is never written).
//!
//! They differ only for blocks in `provisional`, which holds each such block's committed count
//! and its number of outstanding reservations. That map is bounded by the writes in flight, so
//! the two views cost one byte per block plus a few bytes per in-flight write.
//!
//! Invariants (asserted where they change, and checked in pairs: `check` before `apply`, and
//! again inside `apply`):
//! - for a data block with reservations: live = committed + reservations <= 254;
//! - for a tree pair block with a reservation: live = 255, committed = 0, one reservation;
//! - `free`, `data_used` and `block_map` count the live values 0, 1..=254 and 255.

use uvdo_format::block::BLOCK_SIZE;
use uvdo_format::ref_counts::{
    BLOCK_MAP_REFERENCE, COUNTS_PER_BLOCK, REFERENCE_MAX, RefCountBlock,
};
use uvdo_format::slab_journal::SlabOperation;
use uvdo_format::twin::Chosen;
use uvdo_format::{Block, JournalPoint, Nonce, Pbn, SlabNumber};

use super::Share;
use super::twin::TwinWriter;
use crate::int_hash::IntMap;

/// A block whose live count includes reservations not yet journaled.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Provisional {
    /// The count with journaled changes only.
    committed: u8,
    /// Reservations not yet journaled or released.
    reservations: u8,
}

/// One reference count block of the slab: whether memory is newer than disk, and where its
/// next write goes.
#[derive(Clone, Copy, Debug)]
struct BlockState {
    dirty: bool,
    writer: TwinWriter,
}

/// The counts of one slab.
#[derive(Debug)]
pub(super) struct RefCounts {
    slab: SlabNumber,
    live: Vec<u8>,
    provisional: IntMap<u32, Provisional>,
    free: u32,
    data_used: u32,
    block_map: u32,
    blocks: Vec<BlockState>,
    /// Every reference count block of the slab is durable on disk.
    on_disk: bool,
    /// Blocks were handed out by `take_writes` and are not known durable yet.
    in_flight: bool,
}

/// Reference count blocks a slab of `data_blocks` data blocks has.
fn block_count(data_blocks: u32) -> u32 {
    data_blocks.div_ceil(COUNTS_PER_BLOCK_U32)
}

const COUNTS_PER_BLOCK_U32: u32 = 4032;
const _: () = assert!(COUNTS_PER_BLOCK_U32 as usize == COUNTS_PER_BLOCK);

impl RefCounts {
    /// A slab whose reference counts were never written: every block free.
    pub(super) fn empty(slab: SlabNumber, data_blocks: u32) -> Self {
        let blocks = block_count(data_blocks);
        Self {
            slab,
            live: vec![0; data_blocks as usize],
            provisional: IntMap::default(),
            free: data_blocks,
            data_used: 0,
            block_map: 0,
            blocks: vec![
                BlockState {
                    dirty: false,
                    writer: TwinWriter::FIRST,
                };
                blocks as usize
            ],
            on_disk: false,
            in_flight: false,
        }
    }

    /// A slab from its reference count blocks as read, in block index order. Returns the
    /// counts and the newest commit point among them.
    pub(super) fn from_disk(
        slab: SlabNumber,
        data_blocks: u32,
        read: &[Chosen<RefCountBlock>],
    ) -> (Self, JournalPoint) {
        let mut counts = Self::empty(slab, data_blocks);
        assert_eq!(read.len(), counts.blocks.len(), "slab {slab}: blocks read");
        let mut commit_point = JournalPoint::default();
        let mut offset = 0;
        for (index, chosen) in read.iter().enumerate() {
            let block = &chosen.value;
            // Paired with the length check in `take_writes`: the decoder was asked for exactly
            // the counts this block holds.
            assert_eq!(
                block.counts.len(),
                counts.counts_in_block(index),
                "slab {slab} reference count block {index}"
            );
            counts.live[offset..offset + block.counts.len()].copy_from_slice(&block.counts);
            offset += block.counts.len();
            counts.blocks[index].writer = TwinWriter::after(chosen);
            commit_point = commit_point.max(block.commit_point);
        }
        counts.free = 0;
        for index in 0..data_blocks {
            let count = counts.live(index);
            *counts.tally_mut(count) += 1;
        }
        counts.on_disk = true;
        (counts, commit_point)
    }

    /// A slab rebuilt by scrubbing: `live` holds exact journaled counts (no reservations),
    /// `writers` the next twin write of each block. Every block is dirty: its commit point on
    /// disk may be older than the entries applied to it.
    pub(super) fn recovered(
        slab: SlabNumber,
        live: Vec<u8>,
        writers: Vec<TwinWriter>,
        on_disk: bool,
    ) -> Self {
        let data_blocks = u32::try_from(live.len()).expect("slab data blocks fit in u32");
        let mut counts = Self::empty(slab, data_blocks);
        assert_eq!(
            writers.len(),
            counts.blocks.len(),
            "slab {slab}: one writer per block"
        );
        counts.free = 0;
        for &count in &live {
            *counts.tally_mut(count) += 1;
        }
        counts.live = live;
        for (state, writer) in counts.blocks.iter_mut().zip(writers) {
            *state = BlockState {
                dirty: true,
                writer,
            };
        }
        counts.on_disk = on_disk;
        counts
    }

    fn counts_in_block(&self, index: usize) -> usize {
        (self.live.len() - index * COUNTS_PER_BLOCK).min(COUNTS_PER_BLOCK)
    }

    fn tally_mut(&mut self, count: u8) -> &mut u32 {
        match count {
            0 => &mut self.free,
            BLOCK_MAP_REFERENCE => &mut self.block_map,
            _ => &mut self.data_used,
        }
    }

    fn set_live(&mut self, block: u32, count: u8) {
        let old = self.live[block as usize];
        *self.tally_mut(old) -= 1;
        *self.tally_mut(count) += 1;
        self.live[block as usize] = count;
    }

    /// The live count of `block`.
    pub(super) fn live(&self, block: u32) -> u8 {
        self.live[block as usize]
    }

    /// Every live count, in block order.
    pub(super) fn live_counts(&self) -> &[u8] {
        &self.live
    }

    /// Live free blocks.
    pub(super) fn free(&self) -> u32 {
        self.free
    }

    /// Live data blocks with 1..=254 references.
    pub(super) fn data_used(&self) -> u32 {
        self.data_used
    }

    /// Live block map blocks (count 255).
    pub(super) fn block_map(&self) -> u32 {
        self.block_map
    }

    /// Free blocks by the committed counts: what the reference count blocks on disk say once
    /// the journaled changes are written.
    pub(super) fn committed_free(&self) -> u32 {
        let reserved_free = self.provisional.values().filter(|p| p.committed == 0);
        self.free + u32::try_from(reserved_free.count()).expect("reservations fit in u32")
    }

    /// The count with journaled changes only.
    fn committed(&self, block: u32) -> u8 {
        self.provisional
            .get(&block)
            .map_or(self.live[block as usize], |p| p.committed)
    }

    /// Every reference count block is durable on disk.
    pub(super) fn on_disk(&self) -> bool {
        self.on_disk
    }

    /// Some reference count block holds journaled changes not yet handed out for writing.
    pub(super) fn is_dirty(&self) -> bool {
        self.blocks.iter().any(|b| b.dirty)
    }

    /// Blocks were handed out for writing and are not known durable yet.
    pub(super) fn in_flight(&self) -> bool {
        self.in_flight
    }

    /// Reserves free `block` for new data: 0 -> 1.
    pub(super) fn reserve_data(&mut self, block: u32) {
        assert_eq!(
            self.live(block),
            0,
            "slab {} block {block} is not free",
            self.slab
        );
        self.reserve(block, 1);
    }

    /// Reserves free `block` as half of a tree pair: 0 -> 255.
    pub(super) fn reserve_tree(&mut self, block: u32) {
        assert_eq!(
            self.live(block),
            0,
            "slab {} block {block} is not free",
            self.slab
        );
        self.reserve(block, BLOCK_MAP_REFERENCE);
    }

    fn reserve(&mut self, block: u32, count: u8) {
        let previous = self.provisional.insert(
            block,
            Provisional {
                committed: 0,
                reservations: 1,
            },
        );
        assert_eq!(previous, None, "a free block has no reservation");
        self.set_live(block, count);
    }

    /// Adds a reservation to a data block that has room for one more reference.
    pub(super) fn try_share(&mut self, block: u32) -> Share {
        match self.live(block) {
            0 | BLOCK_MAP_REFERENCE => Share::NotData,
            REFERENCE_MAX => Share::AtLimit,
            count => {
                let entry = self.provisional.entry(block).or_insert(Provisional {
                    committed: count,
                    reservations: 0,
                });
                entry.reservations += 1;
                assert_eq!(
                    entry.committed + entry.reservations,
                    count + 1,
                    "slab {} block {block}: live = committed + reservations",
                    self.slab
                );
                self.set_live(block, count + 1);
                Share::Shared
            }
        }
    }

    /// Drops a reservation whose journal entry will never be written.
    ///
    /// # Panics
    ///
    /// If `block` holds no reservation: an engine bug.
    pub(super) fn release(&mut self, block: u32) {
        let slab = self.slab;
        let live = self.live(block);
        let p = self
            .provisional
            .get_mut(&block)
            .unwrap_or_else(|| panic!("release of slab {slab} block {block}: no reservation"));
        p.reservations -= 1;
        let count = if live == BLOCK_MAP_REFERENCE {
            assert_eq!(
                p.committed, 0,
                "a tree pair reservation was never committed"
            );
            0
        } else {
            live - 1
        };
        if p.reservations == 0 {
            assert_eq!(
                count, p.committed,
                "slab {slab} block {block}: live = committed"
            );
            self.provisional.remove(&block);
        }
        self.set_live(block, count);
    }

    /// Whether a journaled change may apply to `block`. `incremented_before` says the same
    /// recovery journal entry increments the block first (a remap from a block to itself).
    /// The error says what is wrong: an engine bug or damaged metadata upstream.
    pub(super) fn check(
        &self,
        block: u32,
        operation: SlabOperation,
        incremented_before: bool,
    ) -> Result<(), &'static str> {
        let provisional = self.provisional.get(&block);
        match operation {
            SlabOperation::DataIncrement => match provisional {
                Some(p) if p.reservations >= 1 && self.live(block) <= REFERENCE_MAX => Ok(()),
                _ => Err("data increment of a block without a data reservation"),
            },
            SlabOperation::DataDecrement => {
                let committed = self.committed(block);
                if committed == BLOCK_MAP_REFERENCE {
                    Err("data decrement of a block map page")
                } else if committed == 0 && !incremented_before {
                    Err("data decrement below zero: the block holds no journaled reference")
                } else {
                    Ok(())
                }
            }
            SlabOperation::BlockMapIncrement => match provisional {
                Some(p) if self.live(block) == BLOCK_MAP_REFERENCE && p.committed == 0 => Ok(()),
                _ => Err("block map increment of a block without a tree pair reservation"),
            },
        }
    }

    /// Applies a journaled change that `check` accepted, and marks its block dirty.
    pub(super) fn apply(&mut self, block: u32, operation: SlabOperation) {
        if let Err(what) = self.check(block, operation, false) {
            panic!("slab {} block {block}: {what}", self.slab);
        }
        let slab = self.slab;
        let live = self.live(block);
        match operation {
            SlabOperation::DataIncrement => {
                let p = self.provisional.get_mut(&block).expect("checked");
                p.committed += 1;
                p.reservations -= 1;
                if p.reservations == 0 {
                    assert_eq!(
                        p.committed, live,
                        "slab {slab} block {block}: all journaled"
                    );
                    self.provisional.remove(&block);
                }
            }
            SlabOperation::DataDecrement => {
                if let Some(p) = self.provisional.get_mut(&block) {
                    p.committed -= 1;
                }
                assert!(
                    live >= 1,
                    "slab {slab} block {block}: live >= committed >= 1"
                );
                self.set_live(block, live - 1);
            }
            SlabOperation::BlockMapIncrement => {
                self.provisional.remove(&block);
            }
        }
        self.blocks[block as usize / COUNTS_PER_BLOCK].dirty = true;
    }

    /// The count of a block after replaying a journaled change during scrubbing, where no
    /// reservations exist. The error says what is wrong: the journal or counts are damaged.
    pub(super) fn replayed(count: u8, operation: SlabOperation) -> Result<u8, &'static str> {
        match (operation, count) {
            (_, BLOCK_MAP_REFERENCE) => Err("a change to a block map page"),
            (SlabOperation::DataIncrement, REFERENCE_MAX) => Err("an increment past 254"),
            (SlabOperation::DataIncrement, c) => Ok(c + 1),
            (SlabOperation::DataDecrement, 0) => Err("a decrement below zero"),
            (SlabOperation::DataDecrement, c) => Ok(c - 1),
            (SlabOperation::BlockMapIncrement, 0) => Ok(BLOCK_MAP_REFERENCE),
            (SlabOperation::BlockMapIncrement, _) => Err("a block map increment of a used block"),
        }
    }

    /// Encodes the dirty reference count blocks (every block while the slab has none on disk)
    /// into their next twin slots, with `commit_point`, and appends them to `out`. `base` gives
    /// the twin base of a block index. Returns the number of blocks encoded.
    pub(super) fn take_writes(
        &mut self,
        nonce: Nonce,
        commit_point: JournalPoint,
        base: impl Fn(u32) -> Pbn,
        out: &mut Vec<(Pbn, Block)>,
    ) -> u64 {
        let mut written = 0;
        for index in 0..self.blocks.len() {
            if self.on_disk && !self.blocks[index].dirty {
                continue;
            }
            let value = RefCountBlock {
                commit_point,
                slab: self.slab,
                block_index: u32::try_from(index).expect("block index fits in u32"),
                counts: self.committed_counts(index),
            };
            let state = &mut self.blocks[index];
            let (pbn, generation) = state.writer.claim(base(value.block_index));
            state.dirty = false;
            let mut block = [0_u8; BLOCK_SIZE];
            value.encode(nonce, pbn, generation, &mut block);
            out.push((pbn, block));
            written += 1;
        }
        self.in_flight = true;
        written
    }

    /// The committed counts of reference count block `index`.
    fn committed_counts(&self, index: usize) -> Vec<u8> {
        let start = index * COUNTS_PER_BLOCK;
        let range = start..start + self.counts_in_block(index);
        let mut counts = self.live[range.clone()].to_vec();
        for (&block, p) in &self.provisional {
            let at = block as usize;
            if range.contains(&at) {
                // Paired with the invariant `reserve`, `try_share` and `release` keep.
                let live = self.live[at];
                assert!(
                    (live == BLOCK_MAP_REFERENCE && p.committed == 0 && p.reservations == 1)
                        || (live <= REFERENCE_MAX && p.committed + p.reservations == live),
                    "slab {} block {block}: provisional {p:?} with live count {live}",
                    self.slab
                );
                counts[at - start] = p.committed;
            }
        }
        counts
    }

    /// The blocks handed out by `take_writes` are durable.
    pub(super) fn writes_durable(&mut self) {
        if self.in_flight {
            self.on_disk = true;
            self.in_flight = false;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn committed_counts_leave_out_reservations() {
        let mut counts = RefCounts::empty(SlabNumber(0), 10);
        counts.reserve_data(0);
        counts.apply(0, SlabOperation::DataIncrement);
        assert_eq!(counts.try_share(0), Share::Shared);
        counts.reserve_tree(2);
        counts.reserve_tree(3);
        counts.reserve_data(5);
        assert_eq!(counts.live_counts()[..6], [2, 0, 255, 255, 0, 1]);
        assert_eq!(counts.committed_counts(0)[..6], [1, 0, 0, 0, 0, 0]);
        assert_eq!((counts.free(), counts.committed_free()), (6, 9));
        counts.release(0);
        counts.release(5);
        assert_eq!(counts.committed_counts(0)[..6], [1, 0, 0, 0, 0, 0]);
        counts.apply(2, SlabOperation::BlockMapIncrement);
        counts.apply(3, SlabOperation::BlockMapIncrement);
        assert_eq!(counts.committed_counts(0)[..6], [1, 0, 255, 255, 0, 0]);
        assert!(counts.provisional.is_empty());
        assert_eq!(
            (counts.free(), counts.data_used(), counts.block_map()),
            (7, 1, 2)
        );
    }

    #[test]
    fn check_refuses_changes_without_reservations() {
        let mut counts = RefCounts::empty(SlabNumber(0), 4);
        assert!(
            counts
                .check(0, SlabOperation::DataIncrement, false)
                .is_err()
        );
        assert!(
            counts
                .check(0, SlabOperation::DataDecrement, false)
                .is_err()
        );
        assert!(
            counts
                .check(0, SlabOperation::BlockMapIncrement, false)
                .is_err()
        );
        counts.reserve_data(0);
        assert!(
            counts
                .check(0, SlabOperation::DataDecrement, false)
                .is_err()
        );
        assert!(counts.check(0, SlabOperation::DataDecrement, true).is_ok());
        assert!(
            counts
                .check(0, SlabOperation::BlockMapIncrement, false)
                .is_err()
        );
        counts.reserve_tree(1);
        assert!(
            counts
                .check(1, SlabOperation::DataIncrement, false)
                .is_err()
        );
        counts.apply(1, SlabOperation::BlockMapIncrement);
        assert!(
            counts
                .check(1, SlabOperation::DataDecrement, false)
                .is_err()
        );
    }
}
