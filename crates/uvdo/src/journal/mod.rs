//! The recovery journal: the write-ahead log of every remapping, in memory until committed.
//!
//! Writers append entries under the engine's metadata lock and get a [`JournalPoint`]. A
//! committer takes every entry appended so far as a [`CommitBatch`]: the blocks to write
//! (each sequence number exactly once: a partly filled block is closed and written, and the
//! next entry starts a new sequence), then marks the batch durable once the blocks are on
//! stable storage. The engine applies the batch's reference changes to the slab depot only
//! then, in journal order.
//!
//! A batch of at most [`SINGLE_FLUSH_BLOCKS_MAX`] blocks that remaps no LBN twice is a
//! single-flush batch: its blocks carry the fold of the names of the data their entries map
//! to, so the committer may write data and journal and make both durable with one flush;
//! recovery checks that data for every block newer than the newest `durable_through` it finds
//! (journal/scan.rs). Every block records `durable_through`, the newest sequence known durable
//! when it was encoded. Why no LBN twice: the checked data must stay in place until a later
//! block says the batch is durable. Every block a batch maps to is still referenced when the
//! batch completes (by the LBN that maps to it) and can be freed only by a later remap, whose
//! block records this batch as durable; but an LBN remapped again within the batch would drop
//! its first block's reference at the batch's own completion, and the block could be reused
//! and rewritten before any later journal block, failing its check although the batch was
//! durable.
//!
//! Space: the log is circular over `region.blocks` blocks. A block may be sealed only while
//! its position does not hold a block that is still needed (sequence >= head); the engine
//! checkpoints (writes everything the old blocks protect, then moves the head) when
//! [`RecoveryJournal::has_space`] says no.
//!
//! Invariants: `head <= next_unwritten <= active`; every sealed or active block has a sequence
//! below `head + region.blocks`; `durable` never passes what was committed.

pub(crate) mod entries;
pub(crate) mod scan;

use std::collections::VecDeque;

use uvdo_format::SequenceNumber;
use uvdo_format::recovery_journal::{
    ENTRIES_PER_BLOCK, EntryKind, Epoch, JournalRegion, RecoveryJournalBlock, RecoveryJournalEntry,
    fold_data_check,
};
use uvdo_format::{BLOCK_SIZE, Block, BlockCount, JournalPoint, Mapping, Nonce, Pbn};

/// Unwritten blocks held in memory before writers force a commit (STYLE rule 7).
pub(crate) const UNWRITTEN_BLOCKS_MAX: usize = 256;

/// Blocks kept free between the tail and the head, so a batch never has to stop half way.
const RESERVED_BLOCKS: u64 = 2;

/// The largest batch committed with one flush: recovery reads back, at most, the data of
/// this many blocks' entries (4 x 167) to find out whether it landed.
pub(crate) const SINGLE_FLUSH_BLOCKS_MAX: usize = 4;

/// What a committer writes, and what becomes durable when it has.
#[derive(Debug)]
pub(crate) struct CommitBatch {
    /// The encoded blocks with their PBNs, in sequence order.
    pub(crate) blocks: Vec<(Pbn, Block)>,
    /// Every entry in the batch with its point, in journal order.
    pub(crate) entries: Vec<(JournalPoint, RecoveryJournalEntry)>,
    /// The blocks carry data checks: the data and the blocks may be made durable by one
    /// flush.
    pub(crate) single_flush: bool,
}

/// Counters for `stats`.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct JournalStats {
    pub(crate) entries_appended: u64,
    pub(crate) blocks_written: u64,
    pub(crate) commits: u64,
    pub(crate) checkpoints: u64,
}

#[derive(Debug)]
struct OpenBlock {
    sequence: SequenceNumber,
    entries: Vec<RecoveryJournalEntry>,
    logical_blocks_used: u64,
    block_map_data_blocks: u64,
    /// The fold of the names of the data the entries map to.
    data_check: u64,
}

/// The in-memory state of the recovery journal.
#[derive(Debug)]
pub(crate) struct RecoveryJournal {
    region: JournalRegion,
    nonce: Nonce,
    epoch: Epoch,
    /// Oldest sequence still needed on disk.
    head: SequenceNumber,
    /// Sealed blocks not yet taken by a committer, oldest first.
    sealed: VecDeque<OpenBlock>,
    /// The block entries are appended to.
    active: OpenBlock,
    /// The last point known durable, if any since open.
    durable: Option<JournalPoint>,
    /// The sequence the journal continued from at open: blocks before it are another
    /// session's.
    session_start: SequenceNumber,
    /// Sequences below this have been taken by a committer.
    next_unwritten: SequenceNumber,
    logical_blocks_used: u64,
    block_map_data_blocks: u64,
    stats: JournalStats,
}

impl RecoveryJournal {
    /// A journal whose next block is `tail`, needing nothing before `head`.
    pub(crate) fn new(
        region: JournalRegion,
        nonce: Nonce,
        epoch: Epoch,
        head: SequenceNumber,
        tail: SequenceNumber,
        logical_blocks_used: u64,
        block_map_data_blocks: u64,
    ) -> Self {
        assert!(
            head.0 >= 1 && head <= tail,
            "journal head {head} after tail {tail}"
        );
        assert!(
            tail.0 - head.0 < region.blocks,
            "journal tail {tail} laps head {head}"
        );
        Self {
            region,
            nonce,
            epoch,
            head,
            sealed: VecDeque::new(),
            active: OpenBlock {
                sequence: tail,
                entries: Vec::new(),
                logical_blocks_used,
                block_map_data_blocks,
                data_check: 0,
            },
            durable: None,
            session_start: tail,
            next_unwritten: tail,
            logical_blocks_used,
            block_map_data_blocks,
            stats: JournalStats::default(),
        }
    }

    /// True when `entries` more entries fit without overwriting a block still needed.
    pub(crate) fn has_space(&self, entries: usize) -> bool {
        let free_in_active = ENTRIES_PER_BLOCK - self.active.entries.len();
        let extra_blocks = entries
            .saturating_sub(free_in_active)
            .div_ceil(ENTRIES_PER_BLOCK);
        let last = self.active.sequence.0 + extra_blocks as u64;
        last - self.head.0 + RESERVED_BLOCKS < self.region.blocks
    }

    /// Appends an entry, returning its point. `data_name` is the name (its low 64 bits) of the
    /// data a data remap maps to, exactly when it maps to data. The caller checked
    /// [`Self::has_space`].
    pub(crate) fn append(
        &mut self,
        entry: RecoveryJournalEntry,
        data_name: Option<u64>,
    ) -> JournalPoint {
        assert_eq!(
            data_name.is_some(),
            maps_to_data(&entry),
            "a data name comes with exactly the entries that map to data"
        );
        if self.active.entries.len() == ENTRIES_PER_BLOCK {
            self.seal_active();
        }
        assert!(
            self.active.sequence.0 - self.head.0 < self.region.blocks,
            "journal overflow: block {} would overwrite head {}",
            self.active.sequence,
            self.head
        );
        self.account(&entry);
        let entry_index = u16::try_from(self.active.entries.len()).expect("below 167");
        self.active.entries.push(entry);
        if let Some(name) = data_name {
            self.active.data_check = fold_data_check(self.active.data_check, name);
        }
        self.active.logical_blocks_used = self.logical_blocks_used;
        self.active.block_map_data_blocks = self.block_map_data_blocks;
        self.stats.entries_appended += 1;
        JournalPoint {
            sequence: self.active.sequence,
            entry: entry_index,
        }
    }

    fn account(&mut self, entry: &RecoveryJournalEntry) {
        let (used, tree) = counter_changes(entry);
        self.logical_blocks_used = self
            .logical_blocks_used
            .checked_add_signed(used)
            .expect("logical blocks used underflow");
        self.block_map_data_blocks += tree;
    }

    fn seal_active(&mut self) {
        let next = OpenBlock {
            sequence: self.active.sequence.next(),
            entries: Vec::with_capacity(ENTRIES_PER_BLOCK),
            logical_blocks_used: self.logical_blocks_used,
            block_map_data_blocks: self.block_map_data_blocks,
            data_check: 0,
        };
        let full = std::mem::replace(&mut self.active, next);
        self.sealed.push_back(full);
    }

    /// Blocks waiting to be written; writers force a commit past [`UNWRITTEN_BLOCKS_MAX`].
    pub(crate) fn sealed_blocks(&self) -> usize {
        self.sealed.len()
    }

    /// Whether entries were appended that no commit has taken yet (their deferred decrements,
    /// which free blocks, wait for that commit).
    pub(crate) fn has_uncommitted(&self) -> bool {
        !self.active.entries.is_empty() || !self.sealed.is_empty()
    }

    /// Takes every appended entry for writing, closing the active block. `None` when there is
    /// nothing to write. With `single_flush_allowed`, a batch of at most
    /// [`SINGLE_FLUSH_BLOCKS_MAX`] blocks carries data checks.
    pub(crate) fn take_commit_batch(&mut self, single_flush_allowed: bool) -> Option<CommitBatch> {
        if !self.active.entries.is_empty() {
            self.seal_active();
        }
        if self.sealed.is_empty() {
            return None;
        }
        let single_flush = single_flush_allowed
            && self.sealed.len() <= SINGLE_FLUSH_BLOCKS_MAX
            && remaps_distinct_lbns(&self.sealed);
        let durable_through = self
            .durable
            .map_or(SequenceNumber(self.session_start.0 - 1), |p| p.sequence);
        let mut blocks = Vec::with_capacity(self.sealed.len());
        let mut entries = Vec::new();
        while let Some(open) = self.sealed.pop_front() {
            assert_eq!(
                open.sequence, self.next_unwritten,
                "journal blocks out of order"
            );
            for (index, entry) in open.entries.iter().enumerate() {
                let entry_index = u16::try_from(index).expect("below 167");
                entries.push((
                    JournalPoint {
                        sequence: open.sequence,
                        entry: entry_index,
                    },
                    *entry,
                ));
            }
            let block = RecoveryJournalBlock {
                sequence: open.sequence,
                block_map_head: self.head,
                slab_journal_head: self.head,
                logical_blocks_used: BlockCount(open.logical_blocks_used),
                block_map_data_blocks: BlockCount(open.block_map_data_blocks),
                epoch: self.epoch,
                durable_through: (durable_through.0 >= 1).then_some(durable_through),
                data_check: single_flush.then_some(open.data_check),
                entries: open.entries,
            };
            let mut bytes = [0_u8; BLOCK_SIZE];
            block.encode(self.nonce, self.region, &mut bytes);
            blocks.push((self.region.pbn_of(open.sequence), bytes));
            self.next_unwritten = open.sequence.next();
        }
        Some(CommitBatch {
            blocks,
            entries,
            single_flush,
        })
    }

    /// Records that `batch` is on stable storage.
    pub(crate) fn mark_durable(&mut self, batch: &CommitBatch) {
        if let Some((point, _)) = batch.entries.last() {
            assert!(self.durable < Some(*point), "durable point went backwards");
            self.durable = Some(*point);
        }
        self.stats.blocks_written += batch.blocks.len() as u64;
        self.stats.commits += 1;
    }

    /// True when `point` is durable.
    pub(crate) fn is_durable(&self, point: JournalPoint) -> bool {
        self.durable.is_some_and(|d| d >= point)
    }

    /// After a checkpoint wrote everything every block before `next_unwritten` protects:
    /// those blocks are no longer needed.
    pub(crate) fn checkpoint_done(&mut self) {
        assert!(
            self.sealed.is_empty(),
            "checkpoint with unwritten sealed blocks"
        );
        self.head = self.next_unwritten;
        self.stats.checkpoints += 1;
    }

    /// Oldest sequence still needed.
    #[cfg(test)]
    pub(crate) fn head(&self) -> SequenceNumber {
        self.head
    }

    /// The sequence the next block written will have.
    pub(crate) fn tail(&self) -> SequenceNumber {
        self.next_unwritten
    }

    /// The epoch blocks are written with.
    pub(crate) fn epoch(&self) -> Epoch {
        self.epoch
    }

    /// Logical blocks mapped, counting every appended entry.
    pub(crate) fn logical_blocks_used(&self) -> u64 {
        self.logical_blocks_used
    }

    /// Blocks used by block map tree pages.
    pub(crate) fn block_map_data_blocks(&self) -> u64 {
        self.block_map_data_blocks
    }

    pub(crate) fn stats(&self) -> JournalStats {
        self.stats
    }
}

/// Whether no LBN is remapped twice in `blocks` (a single-flush batch's condition).
fn remaps_distinct_lbns(blocks: &VecDeque<OpenBlock>) -> bool {
    let mut seen = crate::int_hash::IntSet::default();
    blocks
        .iter()
        .flat_map(|b| &b.entries)
        .filter(|e| e.kind == EntryKind::DataRemap)
        .all(|e| seen.insert(e.lbn.0))
}

/// How `entry` changes the counters a journal block records: logical blocks used (+1 when
/// an unmapped block becomes mapped, -1 the other way) and block map data blocks (+2 for a
/// tree page pair).
pub(crate) fn counter_changes(entry: &RecoveryJournalEntry) -> (i64, u64) {
    match entry.kind {
        EntryKind::DataRemap => match (entry.old.is_mapped(), entry.new.is_mapped()) {
            (false, true) => (1, 0),
            (true, false) => (-1, 0),
            _ => (0, 0),
        },
        EntryKind::PageAllocation => (0, 2),
    }
}

/// Whether `entry` maps a logical block to data (and so comes with the data's name).
pub(crate) fn maps_to_data(entry: &RecoveryJournalEntry) -> bool {
    entry.kind == EntryKind::DataRemap && matches!(entry.new, Mapping::Data(_))
}

/// A data remap entry.
pub(crate) fn remap_entry(
    lbn: uvdo_format::Lbn,
    page: Pbn,
    slot: u16,
    new: Mapping,
    old: Mapping,
) -> RecoveryJournalEntry {
    RecoveryJournalEntry {
        kind: EntryKind::DataRemap,
        slot,
        page,
        new,
        old,
        lbn,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use uvdo_format::Lbn;
    use uvdo_format::header::Expected;

    const NONCE: Nonce = Nonce(77);

    fn journal(blocks: u64) -> RecoveryJournal {
        let region = JournalRegion {
            start: Pbn(3),
            blocks,
        };
        RecoveryJournal::new(
            region,
            NONCE,
            Epoch(0),
            SequenceNumber(1),
            SequenceNumber(1),
            0,
            0,
        )
    }

    fn entry(lbn: u64, new: Mapping, old: Mapping) -> RecoveryJournalEntry {
        remap_entry(
            Lbn(lbn),
            Pbn(100),
            u16::try_from(lbn % 812).unwrap(),
            new,
            old,
        )
    }

    #[test]
    fn points_are_in_order_and_blocks_are_written_once() {
        let mut j = journal(8);
        let mut points = Vec::new();
        for lbn in 0..200 {
            points.push(j.append(
                entry(lbn, Mapping::Data(Pbn(1000 + lbn)), Mapping::Unmapped),
                Some(lbn),
            ));
        }
        assert!(points.windows(2).all(|w| w[0] < w[1]));
        assert_eq!(
            points[167],
            JournalPoint {
                sequence: SequenceNumber(2),
                entry: 0
            }
        );
        let batch = j.take_commit_batch(true).unwrap();
        assert_eq!(batch.blocks.len(), 2);
        assert_eq!(batch.entries.len(), 200);
        for (pbn, block) in &batch.blocks {
            let decoded =
                RecoveryJournalBlock::decode(block, Expected::new(NONCE, *pbn), j.region).unwrap();
            assert!(decoded.entries.len() <= ENTRIES_PER_BLOCK);
        }
        j.mark_durable(&batch);
        assert!(j.is_durable(points[199]));
        // The partly filled block 2 was closed: the next entry starts block 3.
        let next = j.append(entry(5, Mapping::Zero, Mapping::Data(Pbn(1005))), None);
        assert_eq!(next.sequence, SequenceNumber(3));
        assert!(!j.is_durable(next));
        assert_eq!(j.logical_blocks_used(), 200);
    }

    #[test]
    fn space_runs_out_before_the_head_would_be_overwritten_and_returns_at_checkpoint() {
        let mut j = journal(6);
        let mut appended = 0;
        while j.has_space(1) {
            j.append(entry(appended, Mapping::Zero, Mapping::Unmapped), None);
            appended += 1;
        }
        // 6 blocks, 2 reserved: blocks 1..=4 fill; a fifth would leave fewer than 2 free.
        assert_eq!(appended, 3 * 167 + 167);
        let batch = j.take_commit_batch(true).unwrap();
        j.mark_durable(&batch);
        assert!(!j.has_space(1));
        j.checkpoint_done();
        assert_eq!(j.head(), SequenceNumber(5));
        assert!(j.has_space(167));
    }

    #[test]
    fn logical_blocks_used_follows_mapped_state() {
        let mut j = journal(8);
        j.append(entry(1, Mapping::Zero, Mapping::Unmapped), None);
        j.append(entry(2, Mapping::Data(Pbn(9)), Mapping::Unmapped), Some(9));
        j.append(
            entry(2, Mapping::Data(Pbn(10)), Mapping::Data(Pbn(9))),
            Some(10),
        );
        j.append(entry(1, Mapping::Unmapped, Mapping::Zero), None);
        assert_eq!(j.logical_blocks_used(), 1);
    }

    fn decoded(j: &RecoveryJournal, batch: &CommitBatch) -> Vec<RecoveryJournalBlock> {
        batch
            .blocks
            .iter()
            .map(|(pbn, block)| {
                RecoveryJournalBlock::decode(block, Expected::new(NONCE, *pbn), j.region).unwrap()
            })
            .collect()
    }

    #[test]
    fn small_batches_carry_data_checks_and_every_block_the_durable_point() {
        let mut j = journal(64);
        j.append(
            entry(1, Mapping::Data(Pbn(10)), Mapping::Unmapped),
            Some(10),
        );
        j.append(entry(2, Mapping::Zero, Mapping::Unmapped), None);
        j.append(
            entry(3, Mapping::Data(Pbn(11)), Mapping::Unmapped),
            Some(11),
        );
        let batch = j.take_commit_batch(true).unwrap();
        assert!(batch.single_flush);
        let blocks = decoded(&j, &batch);
        let expected = [10, 11].iter().fold(0, |c, &n| fold_data_check(c, n));
        assert_eq!(blocks[0].data_check, Some(expected));
        // Nothing durable yet in a journal that started at sequence 1.
        assert_eq!(blocks[0].durable_through, None);
        j.mark_durable(&batch);

        // Past SINGLE_FLUSH_BLOCKS_MAX blocks, or when not allowed: no checks.
        let count = (SINGLE_FLUSH_BLOCKS_MAX * ENTRIES_PER_BLOCK + 1) as u64;
        for lbn in 0..count {
            j.append(entry(lbn, Mapping::Zero, Mapping::Unmapped), None);
        }
        let batch = j.take_commit_batch(true).unwrap();
        assert!(!batch.single_flush);
        let blocks = decoded(&j, &batch);
        assert_eq!(blocks.len(), SINGLE_FLUSH_BLOCKS_MAX + 1);
        for block in &blocks {
            assert_eq!(block.data_check, None);
            assert_eq!(block.durable_through, Some(SequenceNumber(1)));
        }
        j.append(entry(9, Mapping::Zero, Mapping::Unmapped), None);
        let batch = j.take_commit_batch(false).unwrap();
        assert!(!batch.single_flush);
        // The previous batch was never marked durable: the durable point is still block 1.
        assert_eq!(
            decoded(&j, &batch)[0].durable_through,
            Some(SequenceNumber(1))
        );
    }

    #[test]
    fn a_journal_opened_later_counts_the_block_before_its_start_as_durable() {
        let region = JournalRegion {
            start: Pbn(3),
            blocks: 8,
        };
        let mut j = RecoveryJournal::new(
            region,
            NONCE,
            Epoch(0),
            SequenceNumber(5),
            SequenceNumber(7),
            0,
            0,
        );
        j.append(entry(1, Mapping::Zero, Mapping::Unmapped), None);
        let batch = j.take_commit_batch(true).unwrap();
        assert_eq!(
            decoded(&j, &batch)[0].durable_through,
            Some(SequenceNumber(6))
        );
    }

    #[test]
    #[should_panic(expected = "a data name comes with exactly the entries that map to data")]
    fn a_data_remap_without_its_name_panics() {
        journal(8).append(entry(1, Mapping::Data(Pbn(3)), Mapping::Unmapped), None);
    }

    #[test]
    fn a_batch_remapping_an_lbn_twice_is_not_single_flush() {
        let mut j = journal(64);
        j.append(
            entry(1, Mapping::Data(Pbn(10)), Mapping::Unmapped),
            Some(10),
        );
        j.append(
            entry(2, Mapping::Data(Pbn(11)), Mapping::Unmapped),
            Some(11),
        );
        j.append(entry(1, Mapping::Zero, Mapping::Data(Pbn(10))), None);
        let batch = j.take_commit_batch(true).unwrap();
        assert!(!batch.single_flush);
        assert_eq!(decoded(&j, &batch)[0].data_check, None);
    }
}
