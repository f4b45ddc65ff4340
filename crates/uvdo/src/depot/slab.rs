//! One slab: its reference counts, its journal, and what its summary entry says.
//!
//! Invariants:
//! - `commit_point` is the slab journal point of the newest entry recorded (or the newest
//!   commit point read from disk): reference count blocks written now include every change up
//!   to and including it;
//! - `clean` is true only from open or a clean close until the first change is recorded;
//! - journal and reference count blocks of a slab that is not clean are handed out only once
//!   a summary marking it dirty is durable (`dirty_mark` is `Durable`): recovery trusts a
//!   clean summary entry to mean "nothing written since" and does not scan that slab.

use uvdo_format::layout::Layout;
use uvdo_format::ref_counts::{self, RefCountBlock};
use uvdo_format::slab_journal::{SlabJournalEntry, SlabJournalRegion, SlabOperation};
use uvdo_format::slab_summary::SummaryEntry;
use uvdo_format::twin::Chosen;
use uvdo_format::{Block, BlockCount, JournalPoint, Nonce, Pbn, SequenceNumber, SlabNumber};
use uvdo_io::Storage;

use super::ref_counts::RefCounts;
use super::slab_journal::{FIRST_SEQUENCE, SlabJournal};
use super::summary::corrupt;
use super::twin::{TwinWriter, read_pair};
use crate::error::VolumeError;

/// Where the summary's mark of a slab as dirty is, for a slab that is not clean.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum DirtyMark {
    /// No summary saying dirty was handed out since the slab was last marked clean.
    None,
    /// Handed out in `take_summary_writes`, not yet known durable.
    Taken,
    /// Durable: the slab's journal and reference count blocks may be written.
    Durable,
}

/// What an unrecovered slab keeps until it is scrubbed (`scrub.rs`). Its `counts` meanwhile
/// hold the counts as read from disk: an estimate, used only for statistics.
#[derive(Debug)]
pub(super) struct Unrecovered {
    /// Per reference count block: the slab journal point its counts on disk include.
    pub(super) commits: Vec<JournalPoint>,
    /// Per reference count block: where its next write goes.
    pub(super) writers: Vec<TwinWriter>,
    /// Every reference count block had a valid copy.
    pub(super) on_disk: bool,
    /// The durable chain found at open: sequences `from..to`.
    pub(super) from: SequenceNumber,
    pub(super) to: SequenceNumber,
    /// The newest commit point's sequence: missing chain blocks up to it hold nothing new.
    pub(super) covered: SequenceNumber,
    /// Every entry appended since the chain (re-appended at open, recorded since), with its
    /// slab journal point, in order.
    pub(super) appended: Vec<(JournalPoint, SlabJournalEntry)>,
}

/// One slab of the depot.
#[derive(Debug)]
pub(super) struct Slab {
    pub(super) number: SlabNumber,
    pub(super) counts: RefCounts,
    pub(super) journal: SlabJournal,
    commit_point: JournalPoint,
    clean: bool,
    dirty_mark: DirtyMark,
    /// `Some` until the slab is scrubbed: no allocation, dedupe or count change in it, and
    /// its reference count blocks are not written.
    pub(super) unrecovered: Option<Box<Unrecovered>>,
}

/// Data blocks of each slab of `layout`, as a slab block number bound.
pub(super) fn data_blocks(layout: &Layout) -> u32 {
    u32::try_from(layout.slab().data_blocks.0).expect("slab data blocks are below 2^23")
}

pub(super) fn journal_region(layout: &Layout, slab: SlabNumber) -> SlabJournalRegion {
    SlabJournalRegion {
        slab,
        start: layout.slab_journal_pbn(slab, SequenceNumber(0)),
        blocks: layout.slab().journal_blocks.0,
        data_blocks: data_blocks(layout),
    }
}

impl Slab {
    /// Opens a clean slab from its summary entry, reading its reference count blocks when the
    /// entry says they are on disk. `summary_pbn` is where the entry was read, for errors.
    pub(super) fn open(
        store: &dyn Storage,
        layout: &Layout,
        nonce: Nonce,
        number: SlabNumber,
        entry: &SummaryEntry,
        summary_pbn: Pbn,
    ) -> Result<Self, VolumeError> {
        assert!(
            entry.clean,
            "dirty slabs need recovery, refused before this"
        );
        if entry.journal_tail < FIRST_SEQUENCE {
            let tail = entry.journal_tail.0;
            return Err(corrupt(summary_pbn, "journal tail", "at least 1", tail));
        }
        let (counts, commit_point) = if entry.ref_counts_written {
            read_counts(store, layout, nonce, number)?
        } else {
            let empty = RefCounts::empty(number, data_blocks(layout));
            (empty, JournalPoint::default())
        };
        if commit_point.sequence >= entry.journal_tail {
            // The counts include entries the clean summary entry does not know of: a crash
            // after reference count blocks were written and before the summary said dirty.
            return Err(VolumeError::NeedsRecovery {
                state: format!("slab {number}: reference counts newer than its summary entry"),
            });
        }
        if entry.free_blocks != BlockCount(u64::from(counts.free())) {
            let found = entry.free_blocks.0;
            let expected = "the free blocks of the slab's reference counts (exact when clean)";
            return Err(corrupt(summary_pbn, "free blocks", expected, found));
        }
        Ok(Self {
            number,
            journal: SlabJournal::new(journal_region(layout, number), entry.journal_tail),
            counts,
            commit_point,
            clean: true,
            dirty_mark: DirtyMark::None,
            unrecovered: None,
        })
    }

    /// A slab just added by growing the depot: empty, clean, no reference counts on disk,
    /// its journal starting at [`FIRST_SEQUENCE`] (its summary entry says the same).
    pub(super) fn empty(layout: &Layout, number: SlabNumber) -> Self {
        Self {
            number,
            journal: SlabJournal::new(journal_region(layout, number), FIRST_SEQUENCE),
            counts: RefCounts::empty(number, data_blocks(layout)),
            commit_point: JournalPoint::default(),
            clean: true,
            dirty_mark: DirtyMark::None,
            unrecovered: None,
        }
    }

    /// A slab rebuilt by scrubbing: not clean, everything to be written again.
    pub(super) fn recovered(
        number: SlabNumber,
        counts: RefCounts,
        journal: SlabJournal,
        commit_point: JournalPoint,
        dirty_mark: DirtyMark,
    ) -> Self {
        Self {
            number,
            counts,
            journal,
            commit_point,
            clean: false,
            dirty_mark,
            unrecovered: None,
        }
    }

    /// Scrubbing is done: `counts` are exact, including every entry up to `commit_point`.
    pub(super) fn finish_scrub(&mut self, counts: RefCounts, commit_point: JournalPoint) {
        assert!(
            self.unrecovered.is_some(),
            "slab {} scrubbed twice",
            self.number
        );
        self.counts = counts;
        self.commit_point = self.commit_point.max(commit_point);
        self.unrecovered = None;
    }

    /// Free blocks allocation may use: none until the slab is recovered.
    pub(super) fn allocatable_free(&self) -> u32 {
        if self.unrecovered.is_some() {
            0
        } else {
            self.counts.free()
        }
    }

    /// The slab's journal and reference count blocks may be handed out for writing.
    pub(super) fn may_write(&self) -> bool {
        self.clean || self.dirty_mark == DirtyMark::Durable
    }

    /// The slab changed since it was last marked clean and no summary saying so was taken.
    pub(super) fn needs_dirty_mark(&self) -> bool {
        !self.clean && self.dirty_mark == DirtyMark::None
    }

    /// A summary with this slab's current entry was handed out.
    pub(super) fn summary_taken(&mut self) {
        if self.needs_dirty_mark() {
            self.dirty_mark = DirtyMark::Taken;
        }
    }

    /// Every summary block handed out is durable.
    pub(super) fn summary_durable(&mut self) {
        if self.dirty_mark == DirtyMark::Taken {
            self.dirty_mark = DirtyMark::Durable;
        }
    }

    /// Checks and applies one journaled change: the count and a journal entry together.
    /// An unrecovered slab journals the change and leaves its counts alone: scrubbing applies
    /// it from the journal.
    pub(super) fn apply(&mut self, block: u32, operation: SlabOperation, point: JournalPoint) {
        let entry = SlabJournalEntry {
            block: uvdo_format::SlabBlockNumber(block),
            operation,
        };
        let at = self.journal.append(entry, point);
        match &mut self.unrecovered {
            Some(u) => u.appended.push((at, entry)),
            None => self.counts.apply(block, operation),
        }
        self.commit_point = at;
        self.clean = false;
    }

    /// Whether `take_ref_count_writes` should write this slab: under pressure, or with
    /// `all_dirty` whenever counts are dirty or journal blocks wait for their head to pass.
    pub(super) fn wants_ref_count_writes(&self, all_dirty: bool) -> bool {
        if !self.may_write() || self.unrecovered.is_some() {
            return false;
        }
        let unreaped = self.journal.head() < self.journal.next_write();
        self.journal.under_pressure() || (all_dirty && (self.counts.is_dirty() || unreaped))
    }

    /// Encodes the slab's dirty reference count blocks with the commit point of its newest
    /// entry, and plans the journal head move their durability allows.
    pub(super) fn take_ref_count_writes(
        &mut self,
        layout: &Layout,
        nonce: Nonce,
        out: &mut Vec<(Pbn, Block)>,
    ) -> u64 {
        let number = self.number;
        let base = |index| layout.ref_counts_base(number, index);
        let written = self.counts.take_writes(nonce, self.commit_point, base, out);
        self.journal.plan_head();
        written
    }

    /// The reference count blocks handed out are durable.
    pub(super) fn ref_counts_durable(&mut self) {
        self.counts.writes_durable();
        self.journal.ref_counts_durable();
    }

    /// Every change is in durable journal blocks and durable reference count blocks.
    pub(super) fn is_quiescent(&self) -> bool {
        self.journal.is_quiescent() && !self.counts.is_dirty() && !self.counts.in_flight()
    }

    /// Marks the slab clean, as at close.
    ///
    /// # Panics
    ///
    /// If a change is not yet durable in reference count blocks: the engine closed without
    /// writing everything first, and a clean mark would make recovery skip the change.
    pub(super) fn mark_clean(&mut self) {
        assert!(
            self.is_quiescent(),
            "slab {} marked clean with changes not durable",
            self.number
        );
        self.clean = true;
        // The next change needs a new durable dirty mark: this clean one may be durable.
        self.dirty_mark = DirtyMark::None;
    }

    /// What the summary should say about the slab now.
    pub(super) fn summary_entry(&self) -> SummaryEntry {
        SummaryEntry {
            journal_tail: self.journal.next_write(),
            free_blocks: BlockCount(u64::from(self.counts.committed_free())),
            clean: self.clean,
            ref_counts_written: self.counts.on_disk(),
        }
    }
}

/// Reads every reference count block of a slab whose summary says they are on disk.
fn read_counts(
    store: &dyn Storage,
    layout: &Layout,
    nonce: Nonce,
    slab: SlabNumber,
) -> Result<(RefCounts, JournalPoint), VolumeError> {
    let data = data_blocks(layout) as usize;
    let pairs = u32::try_from(layout.slab().ref_count_pairs.0).expect("pairs fit in u32");
    let mut read: Vec<Chosen<RefCountBlock>> = Vec::with_capacity(pairs as usize);
    for index in 0..pairs {
        let base = layout.ref_counts_base(slab, index);
        let (a, b) = read_pair(store, base)?;
        let used = (data - index as usize * ref_counts::COUNTS_PER_BLOCK)
            .min(ref_counts::COUNTS_PER_BLOCK);
        read.push(ref_counts::read_twins(
            &a, &b, nonce, base, slab, index, used,
        )?);
    }
    Ok(RefCounts::from_disk(slab, data_blocks(layout), &read))
}
