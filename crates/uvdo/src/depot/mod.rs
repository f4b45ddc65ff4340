//! The slab depot: every slab's reference counts (one byte per data block, in memory), the
//! allocator, each slab's journal, the reference count blocks and the slab summary.
//!
//! Pure logic over memory. It reads through a `&dyn Storage` only at open and never writes:
//! every `take_*` returns encoded blocks for the caller, which orders the writes after recovery
//! journal commits and flushes. The engine calls it with `&mut self` under its metadata lock.
//!
//! # The protocol
//!
//! 1. Reserve: `allocate_data` (0 -> 1), `try_share` (+1 if room), `allocate_tree_pair` (an
//!    aligned pair, both -> 255). A reservation changes only the live count in memory; if the
//!    write fails before it is journaled, `release` undoes it.
//! 2. Once a recovery journal entry is durable, `record(point, entry)`, in journal order:
//!    the increment of the new block is journaled in its slab (its count was raised at
//!    reservation); the old block's decrement is journaled and its count drops now. Deferring
//!    decrements to this point means a freed block is never reallocated while a crash could
//!    still bring back the mapping that pointed at it.
//! 3. Dirty marks: when `needs_dirty_marks()` (a slab changed since it was last marked clean),
//!    `take_summary_writes(false)`, write, flush, `summary_durable()`. Until then the depot
//!    hands out no slab journal or reference count block of that slab. This is what lets
//!    recovery skip slabs the durable summary calls clean.
//! 4. `take_slab_journal_writes(close_partial)`: full slab journal blocks, and with
//!    `close_partial` the partly filled ones too (the next entry starts a new sequence). Each
//!    sequence is handed out once (write-once log).
//! 5. When `needs_ref_count_writes()`: take the slab journal writes (closing partial blocks),
//!    write, flush; `take_ref_count_writes`, write, flush; `ref_counts_durable()` advances the
//!    journal heads.
//! 6. `take_summary_writes(clean)` after the journal and reference count blocks it describes
//!    are durable; `clean` only at close, after everything else is durable. After a flush,
//!    `summary_durable()`.
//!
//! Reference count blocks carry as commit point the slab journal point (sequence, entry index
//! within that block) of the slab's newest recorded entry: the counts include that entry and
//! every one before it, as FORMAT.md's replay rule ("skips every entry at or before it") needs.
//!
//! # Growing (`plan_growth`, `grow`)
//!
//! New slabs are appended (the depot is the last region, so nothing else moves). The caller
//! holds the engine's commit lock and has flushed, so every slab journal block handed out is
//! durable and the old slabs' summary entries are true; then `plan_growth` gives the summary
//! blocks describing the new slabs (empty, clean, no reference counts on disk) without
//! changing the depot; the caller writes and flushes them, writes the super block with the new
//! size and slab count, flushes, and only then calls `grow`: no block of a new slab is handed
//! out (so no journal entry can name one) before the super block that contains it is durable.
//!
//! # Recovery (`open_recovering`, `open_dirty`, `scrub.rs`)
//!
//! After a crash, `open_recovering(store, layout, nonce, replay)` with every durable recovery
//! journal entry from the journal head on finds the durable journal chain of every slab not
//! clean in the summary and of every slab `replay` touches, and re-appends the replayed
//! entries missing from it; those slabs are *unrecovered*. The engine then writes, in order:
//!
//! 1. `take_summary_writes(false)`, write, flush, `summary_durable()` (the dirty marks);
//! 2. `take_slab_journal_writes(true)`, write, flush (the re-appended entries): from here on
//!    the recovery journal is not needed for the depot.
//!
//! An unrecovered slab takes no allocation and no sharing; `record` journals its changes
//! (only decrements reach it) without touching its counts; its reference count blocks are
//! not written, so its journal head stays and its durable chain stays readable. Scrubbing it
//! (`scrub_plan`, `read_for_scrub` without the engine's lock, `finish_scrub`) applies the
//! chain and every entry appended since to the counts read at open, after their commit
//! points; the slab is then recovered, with dirty counts written as any slab's are. A slab
//! whose journal comes under pressure must be scrubbed first (`needs_urgent_scrub`).
//! `open_dirty` is `open_recovering` with every slab scrubbed before it returns. A crash
//! anywhere, and `open_recovering` again, gives the same counts.
//!
//! # Invariants
//!
//! - the live count of a block is its journaled count plus its outstanding reservations; the
//!   reference count blocks on disk hold journaled counts only;
//! - entries of one slab journal are in recovery journal order; `record` refuses a point not
//!   after the previous one;
//! - a slab journal never hands out a sequence that would overwrite a block its head still
//!   needs, and holds at most `BUFFERED_BLOCKS_MAX` blocks in memory beyond its length
//!   (`slab_journal.rs` explains the bounds);
//! - no journal or reference count block of a slab is handed out while the summary marking it
//!   dirty is not durable;
//! - `record` checks every change before applying any, so a refused entry changes nothing.

mod allocator;
pub(crate) mod rebuild;
mod ref_counts;
pub(crate) mod scrub;
mod slab;
mod slab_journal;
mod summary;
mod twin;

#[cfg(test)]
mod recovery_tests;
#[cfg(test)]
mod tests;

use uvdo_format::layout::Layout;
use uvdo_format::recovery_journal::{self, EntryKind, RecoveryJournalEntry};
use uvdo_format::slab_journal::SlabOperation;
use uvdo_format::{Block, JournalPoint, Mapping, Nonce, Pbn, SlabBlockNumber, SlabNumber};
use uvdo_io::Storage;

use self::allocator::Allocator;
use self::slab::Slab;
use self::summary::Summary;
use crate::error::VolumeError;

/// What `try_share` did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Share {
    /// The count went up by one: a reservation to journal or release.
    Shared,
    /// The block already has `REFERENCE_MAX` references: write a new copy instead.
    AtLimit,
    /// The block is free, a block map page, or not a slab data block.
    NotData,
}

/// Counts for statistics; computed in O(slabs).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct DepotStats {
    /// Data blocks in all slabs.
    pub(crate) data_blocks_total: u64,
    /// Blocks with 1..=254 references (live, reservations included).
    pub(crate) data_blocks_used: u64,
    /// Blocks holding block map tree pages (count 255).
    pub(crate) block_map_blocks: u64,
    /// Free blocks (count 0).
    pub(crate) free_blocks: u64,
    /// Slabs in the depot.
    pub(crate) slab_count: u32,
    /// Slabs not yet scrubbed after a crash: the three counts above are then estimates (the
    /// counts on disk of those slabs).
    pub(crate) unrecovered_slabs: u32,
    /// Slab journal entries recorded since open.
    pub(crate) slab_journal_entries: u64,
    /// Slab journal blocks handed out for writing since open.
    pub(crate) slab_journal_blocks_written: u64,
    /// Reference count blocks handed out for writing since open.
    pub(crate) ref_count_blocks_written: u64,
    /// Slab summary blocks handed out for writing since open.
    pub(crate) summary_blocks_written: u64,
}

/// A planned growth of the depot: what `grow` installs once the super block says it.
#[derive(Debug)]
pub(crate) struct Growth {
    layout: Layout,
    summary: Summary,
    /// Summary blocks the plan handed out.
    written: u64,
}

/// One change to one slab's counts made by a recovery journal entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Change {
    slab: usize,
    block: u32,
    operation: SlabOperation,
}

/// The slab depot.
#[derive(Debug)]
pub(crate) struct SlabDepot {
    layout: Layout,
    nonce: Nonce,
    slabs: Vec<Slab>,
    allocator: Allocator,
    summary: Summary,
    /// The recovery journal point of the last entry recorded.
    last_point: Option<JournalPoint>,
    slab_journal_entries: u64,
    slab_journal_blocks_written: u64,
    ref_count_blocks_written: u64,
    summary_blocks_written: u64,
}

impl SlabDepot {
    /// The summary blocks a new volume starts with: every slab empty and clean, no reference
    /// counts on disk, journal tail 1; generation 1 in slot A.
    pub(crate) fn format_summary(layout: &Layout, nonce: Nonce) -> Vec<(Pbn, Block)> {
        Summary::format(layout, nonce)
    }

    /// Opens the depot of a cleanly closed volume: reads the summary, and the reference count
    /// blocks of every slab that has them on disk.
    ///
    /// # Errors
    ///
    /// `NeedsRecovery` when a slab is not clean; `Corrupt` when a summary or reference count
    /// block fails its checks or the summary contradicts the counts; `Io` when a read fails.
    pub(crate) fn open(
        store: &dyn Storage,
        layout: Layout,
        nonce: Nonce,
    ) -> Result<Self, VolumeError> {
        let (summary, entries) = Summary::read(store, &layout, nonce)?;
        if let Some(dirty) = entries.iter().position(|e| !e.clean) {
            return Err(VolumeError::NeedsRecovery {
                state: format!("dirty slab {dirty}"),
            });
        }
        let slabs = (0_u32..)
            .zip(&entries)
            .map(|(i, entry)| {
                let number = SlabNumber(i);
                let at = summary.newest_pbn(&layout, number);
                Slab::open(store, &layout, nonce, number, entry, at)
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self {
            layout,
            nonce,
            allocator: Allocator::new(&slabs),
            slabs,
            summary,
            last_point: None,
            slab_journal_entries: 0,
            slab_journal_blocks_written: 0,
            ref_count_blocks_written: 0,
            summary_blocks_written: 0,
        })
    }

    /// Where the depot's slabs are.
    pub(crate) fn layout(&self) -> Layout {
        self.layout
    }

    /// Plans growing the depot to `layout` (same parameters, more slabs): returns the plan and
    /// the summary blocks to make durable before the super block names the new slab count.
    /// Changes nothing in memory (module doc, "Growing").
    ///
    /// # Errors
    ///
    /// `Io` when reading the new summary blocks' slots fails.
    ///
    /// # Panics
    ///
    /// If `layout` has other parameters or no more slabs: the engine checks both first.
    pub(crate) fn plan_growth(
        &self,
        store: &dyn Storage,
        layout: Layout,
    ) -> Result<(Growth, Vec<(Pbn, Block)>), VolumeError> {
        assert_eq!(layout.params(), self.layout.params(), "same parameters");
        assert!(layout.slab_count() > self.layout.slab_count(), "more slabs");
        let new_slabs = (layout.slab_count() - self.layout.slab_count()) as usize;
        let entries: Vec<_> = self
            .slabs
            .iter()
            .map(Slab::summary_entry)
            .chain(std::iter::repeat_n(
                summary::formatted_entry(&layout),
                new_slabs,
            ))
            .collect();
        let (summary, writes) = self.summary.grown(store, &layout, self.nonce, &entries)?;
        let growth = Growth {
            layout,
            summary,
            written: writes.len() as u64,
        };
        Ok((growth, writes))
    }

    /// Installs a planned growth once the super block naming it is durable: the new slabs are
    /// empty and clean, and allocation may use them from now on.
    pub(crate) fn grow(&mut self, growth: Growth) {
        let Growth {
            layout,
            summary,
            written,
        } = growth;
        self.summary_blocks_written += written;
        for number in self.layout.slab_count()..layout.slab_count() {
            self.slabs.push(Slab::empty(&layout, SlabNumber(number)));
        }
        self.layout = layout;
        self.summary = summary;
    }

    fn pbn_of(&self, slab: usize, block: u32) -> Pbn {
        self.layout
            .data_pbn(self.slabs[slab].number, SlabBlockNumber(block))
    }

    fn no_space(&self) -> VolumeError {
        VolumeError::NoSpace {
            data_blocks: self.layout.data_blocks_total().0,
        }
    }

    /// Reserves the next free data block (count 0 -> 1).
    ///
    /// # Errors
    ///
    /// `NoSpace` when every data block is in use.
    pub(crate) fn allocate_data(&mut self) -> Result<Pbn, VolumeError> {
        let (slab, block) = self
            .allocator
            .next_data(&self.slabs)
            .ok_or_else(|| self.no_space())?;
        self.slabs[slab].counts.reserve_data(block);
        Ok(self.pbn_of(slab, block))
    }

    /// Reserves two adjacent free blocks, the first at an even slab block number, for a block
    /// map tree page's twins (both counts -> 255). Returns the first.
    ///
    /// # Errors
    ///
    /// `NoSpace` when no aligned pair is free.
    pub(crate) fn allocate_tree_pair(&mut self) -> Result<Pbn, VolumeError> {
        let (slab, base) = self
            .allocator
            .next_pair(&self.slabs)
            .ok_or_else(|| self.no_space())?;
        let counts = &mut self.slabs[slab].counts;
        counts.reserve_tree(base);
        counts.reserve_tree(base + 1);
        Ok(self.pbn_of(slab, base))
    }

    /// Adds a reference to a data block for dedupe if it has room.
    /// No sharing in an unrecovered slab: its counts are not known yet.
    pub(crate) fn try_share(&mut self, pbn: Pbn) -> Share {
        match self.layout.slab_of(pbn) {
            Some((slab, block)) => {
                let slab = &mut self.slabs[slab.0 as usize];
                if slab.unrecovered.is_some() {
                    return Share::NotData;
                }
                slab.counts.try_share(block.0)
            }
            None => Share::NotData,
        }
    }

    /// Undoes one reservation of `pbn` (a data block or one block of a tree pair) whose
    /// journal entry will never be written.
    ///
    /// # Panics
    ///
    /// If `pbn` is not a slab data block or holds no reservation: an engine bug.
    pub(crate) fn release(&mut self, pbn: Pbn) {
        let (slab, block) = self
            .layout
            .slab_of(pbn)
            .unwrap_or_else(|| panic!("release of PBN {pbn}: not a slab data block"));
        self.slabs[slab.0 as usize].counts.release(block.0);
    }

    /// The live count of `pbn` (reservations included); `None` outside slab data blocks.
    #[cfg(test)]
    pub(crate) fn count(&self, pbn: Pbn) -> Option<u8> {
        let (slab, block) = self.layout.slab_of(pbn)?;
        Some(self.slabs[slab.0 as usize].counts.live(block.0))
    }

    /// Records the reference changes of a durable recovery journal entry at `point`.
    ///
    /// # Errors
    ///
    /// `Invariant` (and nothing changes) when the point is not after the previous one or not a
    /// valid point, a mapping names a block outside the slab data blocks, an increment has no
    /// matching reservation, a decrement would take a count below zero or touch a tree page,
    /// or a slab journal is past its bound because reference counts were not written when
    /// `needs_ref_count_writes` asked.
    pub(crate) fn record(
        &mut self,
        point: JournalPoint,
        entry: &RecoveryJournalEntry,
    ) -> Result<(), VolumeError> {
        let invariant = |pbn: Option<Pbn>, what: String| {
            VolumeError::invariant(
                Some(entry.lbn),
                pbn,
                format!("at journal point {point}: {what}"),
            )
        };
        let in_order = self.last_point.is_none_or(|last| point > last);
        let valid = point.sequence.0 >= 1 && point.entry < recovery_journal::ENTRIES_PER_BLOCK_U16;
        if !in_order || !valid {
            let last = self.last_point.unwrap_or_default();
            let what = format!("not a valid point after the previous one ({last})");
            return Err(invariant(None, what));
        }
        let changes =
            changes_of(&self.layout, entry).map_err(|(pbn, what)| invariant(pbn, what))?;
        self.check(&changes)
            .map_err(|(pbn, what)| invariant(Some(pbn), what))?;
        for change in changes.iter().flatten() {
            self.slabs[change.slab].apply(change.block, change.operation, point);
        }
        self.slab_journal_entries += changes.iter().flatten().count() as u64;
        self.last_point = Some(point);
        Ok(())
    }

    /// Checks every change of one entry against the counts and the journals' room.
    fn check(&self, changes: &[Option<Change>; 2]) -> Result<(), (Pbn, String)> {
        let mut earlier: Option<Change> = None;
        for change in changes.iter().flatten() {
            let incremented_before = earlier.is_some_and(|e| {
                e.slab == change.slab
                    && e.block == change.block
                    && e.operation == SlabOperation::DataIncrement
            });
            let pbn = self.pbn_of(change.slab, change.block);
            let slab = &self.slabs[change.slab];
            if slab.unrecovered.is_none() {
                slab.counts
                    .check(change.block, change.operation, incremented_before)
                    .map_err(|what| (pbn, what.to_owned()))?;
            } else if change.operation != SlabOperation::DataDecrement {
                // Nothing allocates or shares in an unrecovered slab: only decrements of old
                // mappings reach it. Its decrements are checked when it is scrubbed.
                let what = format!("an increment in slab {}, not yet recovered", slab.number);
                return Err((pbn, what));
            }
            let in_slab = changes.iter().flatten().filter(|c| c.slab == change.slab);
            if !slab.journal.has_room_for(in_slab.count()) {
                let what = format!(
                    "slab {} journal is full: reference counts were not written when \
                     needs_ref_count_writes() asked",
                    slab.number
                );
                return Err((pbn, what));
            }
            earlier = Some(*change);
        }
        Ok(())
    }

    /// Some slab journal is close to its length on disk: write reference counts now (the
    /// engine checks after every record batch; `slab_journal.rs` gives the bounds).
    pub(crate) fn needs_ref_count_writes(&self) -> bool {
        self.slabs.iter().any(|s| s.journal.under_pressure())
    }

    /// An unrecovered slab's journal is under pressure: scrub it before writing reference
    /// counts, or its journal cannot make room.
    pub(crate) fn needs_urgent_scrub(&self) -> bool {
        self.slabs
            .iter()
            .any(|s| s.unrecovered.is_some() && s.journal.under_pressure())
    }

    /// Full slab journal blocks not yet written, and with `close_partial` the partly filled
    /// ones (closing them), except blocks that would overwrite one still needed: those wait
    /// for `ref_counts_durable`; and except blocks of slabs whose dirty mark is not durable:
    /// those wait for `summary_durable`.
    pub(crate) fn take_slab_journal_writes(&mut self, close_partial: bool) -> Vec<(Pbn, Block)> {
        let mut out = Vec::new();
        for slab in self.slabs.iter_mut().filter(|s| s.may_write()) {
            let nonce = self.nonce;
            self.slab_journal_blocks_written +=
                slab.journal.take_writes(close_partial, nonce, &mut out);
        }
        out
    }

    /// Dirty reference count blocks of the slabs under pressure (or, with `all_dirty`, of
    /// every slab), each in its next twin slot with the commit point of the slab's newest
    /// entry. Write them after the slab journal blocks holding those entries are durable.
    /// Slabs whose dirty mark is not durable are left out until `summary_durable`.
    pub(crate) fn take_ref_count_writes(&mut self, all_dirty: bool) -> Vec<(Pbn, Block)> {
        let mut out = Vec::new();
        for slab in &mut self.slabs {
            if slab.wants_ref_count_writes(all_dirty) {
                self.ref_count_blocks_written +=
                    slab.take_ref_count_writes(&self.layout, self.nonce, &mut out);
            }
        }
        out
    }

    /// Every block from `take_ref_count_writes` is durable: advance the slab journal heads.
    pub(crate) fn ref_counts_durable(&mut self) {
        for slab in &mut self.slabs {
            slab.ref_counts_durable();
        }
    }

    /// Some slab changed since it was last marked clean and no summary marking it dirty was
    /// taken: take, write and flush the summary before its journal or counts can be written.
    pub(crate) fn needs_dirty_marks(&self) -> bool {
        self.slabs.iter().any(Slab::needs_dirty_mark)
    }

    /// Every summary block handed out by `take_summary_writes` is durable: slabs marked dirty
    /// in them may have their journal and reference count blocks written.
    pub(crate) fn summary_durable(&mut self) {
        for slab in &mut self.slabs {
            slab.summary_durable();
        }
    }

    /// Summary blocks whose entries changed since last taken (all of them with `clean`). With
    /// `clean`, every recovered slab is marked clean first: only at close, after every slab
    /// journal and reference count block is durable. Unrecovered slabs stay dirty: the next
    /// open scrubs them from their journals (written in full at close). Call
    /// `summary_durable` once they are durable.
    ///
    /// # Panics
    ///
    /// With `clean`, if a recovered slab still has changes not durable: an engine bug.
    pub(crate) fn take_summary_writes(&mut self, clean: bool) -> Vec<(Pbn, Block)> {
        if clean {
            for slab in self.slabs.iter_mut().filter(|s| s.unrecovered.is_none()) {
                slab.mark_clean();
            }
        }
        let entries: Vec<_> = self.slabs.iter().map(Slab::summary_entry).collect();
        for slab in &mut self.slabs {
            slab.summary_taken();
        }
        let mut out = Vec::new();
        self.summary_blocks_written +=
            self.summary
                .take_writes(&self.layout, self.nonce, &entries, clean, &mut out);
        out
    }

    /// Counts for statistics.
    pub(crate) fn stats(&self) -> DepotStats {
        let sum = |f: fn(&Slab) -> u32| self.slabs.iter().map(|s| u64::from(f(s))).sum();
        DepotStats {
            data_blocks_total: self.layout.data_blocks_total().0,
            data_blocks_used: sum(|s| s.counts.data_used()),
            block_map_blocks: sum(|s| s.counts.block_map()),
            free_blocks: sum(|s| s.counts.free()),
            slab_count: self.layout.slab_count(),
            unrecovered_slabs: u32::try_from(self.unrecovered_count()).expect("slabs fit in u32"),
            slab_journal_entries: self.slab_journal_entries,
            slab_journal_blocks_written: self.slab_journal_blocks_written,
            ref_count_blocks_written: self.ref_count_blocks_written,
            summary_blocks_written: self.summary_blocks_written,
        }
    }

    /// Calls `f` with the live count of every slab data block, in PBN order (for unrecovered
    /// slabs, the counts on disk: call it once every slab is recovered).
    pub(crate) fn for_each_count(&self, f: &mut dyn FnMut(Pbn, u8)) {
        for slab in &self.slabs {
            let start = self.layout.data_pbn(slab.number, SlabBlockNumber(0));
            for (offset, &count) in (0_u64..).zip(slab.counts.live_counts()) {
                f(start.offset(offset), count);
            }
        }
    }
}

/// The slab and slab block of `pbn`, as indexes.
#[inline]
fn locate(layout: &Layout, pbn: Pbn) -> Result<(usize, u32), (Option<Pbn>, String)> {
    match layout.slab_of(pbn) {
        Some((slab, block)) => Ok((slab.0 as usize, block.0)),
        None => Err((Some(pbn), "the mapping is not a slab data block".to_owned())),
    }
}

/// The count changes an entry makes, increments before decrements.
// Always inline: recovery calls it for every replayed entry, and its result read back
// through memory cost a third of that pass.
#[inline(always)]
fn changes_of(
    layout: &Layout,
    entry: &RecoveryJournalEntry,
) -> Result<[Option<Change>; 2], (Option<Pbn>, String)> {
    let change = |pbn: Pbn, operation| {
        let (slab, block) = locate(layout, pbn)?;
        Ok(Change {
            slab,
            block,
            operation,
        })
    };
    match entry.kind {
        EntryKind::DataRemap => {
            let new = entry.new.pbn();
            let old = entry.old.pbn();
            Ok([
                new.map(|p| change(p, SlabOperation::DataIncrement))
                    .transpose()?,
                old.map(|p| change(p, SlabOperation::DataDecrement))
                    .transpose()?,
            ])
        }
        EntryKind::PageAllocation => {
            let (Mapping::Data(base), Mapping::Unmapped) = (entry.new, entry.old) else {
                let what = "a page allocation must map Data(pair base) over Unmapped";
                return Err((entry.new.pbn(), what.to_owned()));
            };
            let first = change(base, SlabOperation::BlockMapIncrement)?;
            let has_next = layout.slab_of(base.offset(1)).is_some();
            let aligned = first.block.is_multiple_of(2) && has_next;
            if !aligned {
                let what = "a tree pair starts at an even slab block with a block after it";
                return Err((Some(base), what.to_owned()));
            }
            let second = Change {
                block: first.block + 1,
                ..first
            };
            Ok([Some(first), Some(second)])
        }
    }
}
