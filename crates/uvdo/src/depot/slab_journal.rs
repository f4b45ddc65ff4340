//! One slab's journal in memory: the blocks not yet handed out for writing, and the head and
//! tail that bound the blocks on disk still needed.
//!
//! Sequences, oldest first:
//!
//! ```text
//! head .. next_write          on disk (or handed out); needed until the reference count blocks
//!                             covering them are durable
//! next_write .. tail          in memory (`unwritten`); the last one may be open for entries
//! ```
//!
//! Invariants:
//! - `1 <= head <= next_write`; sequence `s` is handed out only while `s - head < blocks`, so a
//!   write never overwrites a block still needed and every head a block records is within one
//!   journal length of it (the decoder's rule);
//! - entries are appended in recovery journal order, and each block records the recovery point
//!   of its last entry;
//! - `tail - head <= blocks + BUFFERED_BLOCKS_MAX`: `record` refuses an entry past that bound.

use std::collections::VecDeque;

use uvdo_format::block::BLOCK_SIZE;
use uvdo_format::slab_journal::{
    ENTRIES_PER_BLOCK, SlabJournalBlock, SlabJournalEntry, SlabJournalRegion,
};
use uvdo_format::{Block, JournalPoint, Nonce, Pbn, SequenceNumber};

/// The sequence of a new slab's first journal block. The decoder rejects sequence 0, and a
/// head of 1 is the first valid head.
pub(super) const FIRST_SEQUENCE: SequenceNumber = SequenceNumber(1);

/// Journal blocks that must stay free: `needs_ref_count_writes` is true once a slab journal
/// has at most this many unused blocks (`tail - head >= blocks - 1`).
///
/// Why one: the engine checks after every record batch. A batch of one recovery journal block
/// (167 entries, at most 334 slab journal entries) fits in one 1008-entry slab journal block,
/// so it starts at most one new block in any slab. With two or more blocks free before a batch,
/// the batch ends with at least one free: the journal never outgrows the disk between checks.
pub(super) const PRESSURE_FREE_BLOCKS: u64 = 1;

/// Blocks a slab journal may hold in memory beyond its length on disk, for batches larger
/// than one recovery journal block or records that arrive while a drain is in progress. They
/// wait in memory until the head advances. Past this, `record` fails with `Invariant`: the
/// engine did not write reference counts when `needs_ref_count_writes` asked. Any batch of up
/// to `(PRESSURE_FREE_BLOCKS + BUFFERED_BLOCKS_MAX) * 1008` entries in one slab is safe.
pub(super) const BUFFERED_BLOCKS_MAX: u64 = 2;

/// A block not yet handed out for writing.
#[derive(Debug)]
struct UnwrittenBlock {
    entries: Vec<SlabJournalEntry>,
    recovery_point: JournalPoint,
}

/// The journal of one slab.
#[derive(Debug)]
pub(super) struct SlabJournal {
    region: SlabJournalRegion,
    head: SequenceNumber,
    next_write: SequenceNumber,
    unwritten: VecDeque<UnwrittenBlock>,
    /// The last unwritten block takes more entries.
    last_open: bool,
    /// The head to move to once the reference count blocks handed out are durable.
    planned_head: Option<SequenceNumber>,
}

impl SlabJournal {
    /// A journal whose blocks before `tail` are all covered by durable reference counts (a
    /// clean slab): head = tail.
    pub(super) fn new(region: SlabJournalRegion, tail: SequenceNumber) -> Self {
        assert!(tail >= FIRST_SEQUENCE, "slab journal tail {tail}");
        Self {
            region,
            head: tail,
            next_write: tail,
            unwritten: VecDeque::new(),
            last_open: false,
            planned_head: None,
        }
    }

    /// A scrubbed journal: blocks `head..tail` are on disk and still needed, nothing in
    /// memory yet.
    pub(super) fn recovered(
        region: SlabJournalRegion,
        head: SequenceNumber,
        tail: SequenceNumber,
    ) -> Self {
        assert!(
            head >= FIRST_SEQUENCE && head <= tail && tail.0 - head.0 <= region.blocks,
            "slab {} recovered journal {head}..{tail}",
            region.slab
        );
        Self {
            head,
            ..Self::new(region, tail)
        }
    }

    /// Oldest sequence still needed.
    pub(super) fn head(&self) -> SequenceNumber {
        self.head
    }

    /// Next sequence to hand out for writing: the tail the summary records.
    pub(super) fn next_write(&self) -> SequenceNumber {
        self.next_write
    }

    /// One past the newest block started, written or not.
    pub(super) fn tail(&self) -> u64 {
        self.next_write.0 + self.unwritten.len() as u64
    }

    /// Blocks from head to tail: on disk and still needed, or in memory.
    pub(super) fn blocks_in_use(&self) -> u64 {
        self.tail() - self.head.0
    }

    /// The journal must have reference counts written so its head can advance.
    pub(super) fn under_pressure(&self) -> bool {
        self.blocks_in_use() + PRESSURE_FREE_BLOCKS >= self.region.blocks
    }

    /// Whether `entries` more entries stay within the in-memory bound.
    pub(super) fn has_room_for(&self, entries: usize) -> bool {
        let room = match self.unwritten.back() {
            Some(last) if self.last_open => ENTRIES_PER_BLOCK - last.entries.len(),
            _ => 0,
        };
        let new_blocks = entries.saturating_sub(room).div_ceil(ENTRIES_PER_BLOCK) as u64;
        self.blocks_in_use() + new_blocks <= self.region.blocks + BUFFERED_BLOCKS_MAX
    }

    /// Appends an entry made by the recovery journal entry at `point`, and returns its slab
    /// journal point (sequence, index in the block).
    pub(super) fn append(&mut self, entry: SlabJournalEntry, point: JournalPoint) -> JournalPoint {
        if !self.last_open {
            self.unwritten.push_back(UnwrittenBlock {
                entries: Vec::new(),
                recovery_point: point,
            });
            self.last_open = true;
        }
        let sequence = SequenceNumber(self.tail() - 1);
        let block = self.unwritten.back_mut().expect("an open block");
        assert!(
            block.recovery_point <= point,
            "slab {} journal: entries out of recovery journal order",
            self.region.slab
        );
        block.entries.push(entry);
        block.recovery_point = point;
        let index = u16::try_from(block.entries.len() - 1).expect("at most 1008 entries");
        if block.entries.len() == ENTRIES_PER_BLOCK {
            self.last_open = false;
        }
        assert!(
            self.blocks_in_use() <= self.region.blocks + BUFFERED_BLOCKS_MAX,
            "slab {} journal over its bound: record checks has_room_for",
            self.region.slab
        );
        JournalPoint {
            sequence,
            entry: index,
        }
    }

    /// Encodes the full unwritten blocks (and with `close_partial` the open one, closing it)
    /// that fit on disk without overwriting a needed block, appending them to `out`. Returns
    /// the number of blocks encoded.
    pub(super) fn take_writes(
        &mut self,
        close_partial: bool,
        nonce: Nonce,
        out: &mut Vec<(Pbn, Block)>,
    ) -> u64 {
        let mut written = 0;
        while !self.unwritten.is_empty() {
            let open = self.last_open && self.unwritten.len() == 1;
            let fits = self.next_write.0 - self.head.0 < self.region.blocks;
            if (open && !close_partial) || !fits {
                break;
            }
            let block = self.unwritten.pop_front().expect("not empty");
            let value = SlabJournalBlock {
                slab: self.region.slab,
                sequence: self.next_write,
                head: self.head,
                recovery_point: block.recovery_point,
                entries: block.entries,
            };
            let pbn = self.region.log().pbn_of(value.sequence);
            let mut encoded = [0_u8; BLOCK_SIZE];
            value.encode(nonce, &self.region, &mut encoded);
            out.push((pbn, encoded));
            self.next_write = self.next_write.next();
            written += 1;
        }
        if self.unwritten.is_empty() {
            self.last_open = false;
        }
        written
    }

    /// Reference counts including every entry so far were handed out for writing: once they
    /// are durable, the head may move past every block already handed out. Blocks still in
    /// memory stay needed (the head never passes an unwritten block, so each block records a
    /// head at or below its own sequence).
    pub(super) fn plan_head(&mut self) {
        self.planned_head = Some(self.next_write);
    }

    /// The reference count blocks planned for are durable: advance the head.
    pub(super) fn ref_counts_durable(&mut self) {
        if let Some(planned) = self.planned_head.take() {
            self.head = self.head.max(planned);
        }
        assert!(
            self.head <= self.next_write,
            "slab {} journal head {} past next write {}",
            self.region.slab,
            self.head,
            self.next_write
        );
    }

    /// Nothing in memory and nothing in flight: every entry is on disk and covered by durable
    /// reference counts.
    pub(super) fn is_quiescent(&self) -> bool {
        self.unwritten.is_empty() && self.planned_head.is_none() && self.head == self.next_write
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use uvdo_format::slab_journal::SlabOperation;
    use uvdo_format::{SlabBlockNumber, SlabNumber};

    const REGION: SlabJournalRegion = SlabJournalRegion {
        slab: SlabNumber(2),
        start: Pbn(1000),
        blocks: 2,
        data_blocks: 100,
    };

    fn entry(block: u32) -> SlabJournalEntry {
        SlabJournalEntry {
            block: SlabBlockNumber(block),
            operation: SlabOperation::DataIncrement,
        }
    }

    fn point(sequence: u64, entry: u16) -> JournalPoint {
        JournalPoint {
            sequence: SequenceNumber(sequence),
            entry,
        }
    }

    #[test]
    fn a_full_block_is_written_without_closing_and_a_partial_one_only_when_asked() {
        let mut journal = SlabJournal::new(REGION, FIRST_SEQUENCE);
        for i in 0..ENTRIES_PER_BLOCK + 1 {
            let i16 = u16::try_from(i % 100).unwrap();
            let at = journal.append(entry(7), point(1 + i as u64 / 100, i16));
            assert_eq!(at.sequence.0, 1 + (i / ENTRIES_PER_BLOCK) as u64);
        }
        let mut out = Vec::new();
        assert_eq!(journal.take_writes(false, Nonce(5), &mut out), 1);
        assert_eq!(journal.next_write(), SequenceNumber(2));
        assert!(journal.under_pressure());
        // Sequence 2 would fit, but it is open and not asked for.
        assert_eq!(journal.take_writes(false, Nonce(5), &mut out), 0);
        assert_eq!(journal.take_writes(true, Nonce(5), &mut out), 1);
        // Sequence 3 would overwrite sequence 1, which the head still needs.
        let at = journal.append(entry(8), point(20, 0));
        assert_eq!(at, point(3, 0));
        assert_eq!(journal.take_writes(true, Nonce(5), &mut out), 0);
        journal.plan_head();
        journal.ref_counts_durable();
        assert_eq!(journal.head(), SequenceNumber(3));
        assert_eq!(journal.take_writes(true, Nonce(5), &mut out), 1);
        assert_eq!(out.len(), 3);
    }

    #[test]
    fn room_is_bounded_past_the_disk_length() {
        let mut journal = SlabJournal::new(REGION, FIRST_SEQUENCE);
        let limit =
            usize::try_from(REGION.blocks + BUFFERED_BLOCKS_MAX).unwrap() * ENTRIES_PER_BLOCK;
        assert!(journal.has_room_for(limit));
        assert!(!journal.has_room_for(limit + 1));
        journal.append(entry(1), point(1, 0));
        assert!(journal.has_room_for(limit - 1));
        assert!(!journal.has_room_for(limit));
    }
}
