//! Slab scrubbing after a crash: exact counts from reference count blocks, the slab
//! journal's durable chain and the recovery journal entries replayed.
//!
//! Which slabs: every slab the durable summary does not call clean, and every slab `replay`
//! touches (possible only if a summary write was lost). A clean slab has no journal or
//! reference count write since its clean mark, because the depot hands none out before a
//! durable dirty mark; it is opened as `open` does.
//!
//! Offline (`open_recovering`, at open) steps 1, 2 and 4 run: the chain is found and the
//! missing entries re-appended; the slab is left unrecovered. Online (`scrub_plan`,
//! `read_for_scrub`, `finish_scrub`) step 3 runs over the chain found at open, then the
//! entries appended since (step 4's and those recorded while unrecovered) are applied.
//!
//! For one slab:
//!
//! 1. Reference count twins, per block: the newest valid slot, its counts and commit point.
//!    Both slots unwritten, or a torn first write (slot A damaged, B unwritten) while the
//!    summary says no counts are on disk: all free, commit point zero. Otherwise both slots
//!    bad is `Corrupt`.
//! 2. The journal: every block decoded at its position (congruence checked); one that fails is
//!    not part of the log. The chain runs from the newest valid block's head to it; a missing
//!    sequence at or before the newest commit point is covered by the counts (a reaped block
//!    a torn newer lap overwrote) and skipped; the first other missing sequence is the tail.
//! 3. Chain entries after the commit point of their reference count block are applied (online;
//!    the head is the first chain block holding one).
//! 4. `replay` entries of the slab after the recovery point of block `tail - 1` (and, for the
//!    entry at that point, the changes after the block's last entry: one entry's two changes
//!    may straddle a block boundary) are appended to the journal in memory from `tail` on,
//!    packing full blocks exactly as `record` did, so they get their original slab journal
//!    points; each is applied (online) if its point is after its block's commit point.
//!
//! Idempotence: the journal head stays at the first chain block with an applied entry, so the
//! chain survives until the recovered counts are durable; appended blocks, once written, join
//! the chain and move the threshold of step 4; counts rewritten with a later commit point make
//! step 3 and 4 skip what they include.
//!
//! # Decisions
//!
//! | tail - 1 block | counts ahead of what can be rebuilt | journal fits | result |
//! |---|---|---|---|
//! | valid, or tail = 1 | no | yes | recovered |
//! | missing, tail > 1 | - | - | `Corrupt`: the entries after it cannot be placed |
//! | - | yes | - | `Corrupt`: counts include entries no log holds |
//! | - | - | no | `Invariant`: more than a journal length of entries to re-append |

use uvdo_format::block::{BLOCK_SIZE, Block};
use uvdo_format::error::{FormatError, Problem};
use uvdo_format::header::{BlockType, Expected};
use uvdo_format::layout::Layout;
use uvdo_format::recovery_journal::{self, RecoveryJournalEntry};
use uvdo_format::ref_counts::{self, COUNTS_PER_BLOCK};
use uvdo_format::slab_journal::{
    ENTRIES_PER_BLOCK, SlabJournalBlock, SlabJournalEntry, SlabJournalRegion,
};
use uvdo_format::slab_summary::SummaryEntry;
use uvdo_format::{JournalPoint, Nonce, Pbn, SequenceNumber, SlabBlockNumber, SlabNumber};
use uvdo_io::Storage;

use super::allocator::Allocator;
use super::ref_counts::RefCounts;
use super::slab::{DirtyMark, Slab, Unrecovered, data_blocks, journal_region};
use super::slab_journal::{FIRST_SEQUENCE, SlabJournal};
use super::summary::Summary;
use super::twin::{TwinWriter, read_pair};
use super::{Change, SlabDepot, changes_of};
use crate::error::VolumeError;
use crate::journal::entries::ReplayEntries;

/// A slab's reference count blocks as read for scrubbing.
struct DiskCounts {
    live: Vec<u8>,
    /// Per reference count block: the slab journal point its counts include.
    commits: Vec<JournalPoint>,
    writers: Vec<TwinWriter>,
    /// Every block had a valid copy.
    on_disk: bool,
}

impl DiskCounts {
    fn newest_commit(&self) -> JournalPoint {
        self.commits.iter().copied().max().unwrap_or_default()
    }

    /// Applies a journaled change at `point` unless the block's counts already include it.
    fn apply(
        &mut self,
        slab: SlabNumber,
        change: SlabJournalEntry,
        point: JournalPoint,
    ) -> Result<bool, VolumeError> {
        let block = change.block.0 as usize;
        if point <= self.commits[block / COUNTS_PER_BLOCK] {
            return Ok(false);
        }
        let count = self.live[block];
        match RefCounts::replayed(count, change.operation) {
            Ok(new) => {
                self.live[block] = new;
                Ok(true)
            }
            Err(what) => Err(VolumeError::invariant(
                None,
                None,
                format!(
                    "scrubbing slab {slab}: block {} at slab journal point {point}: {what} \
                     (count {count})",
                    change.block
                ),
            )),
        }
    }
}

/// The durable chain of a slab journal.
struct Chain {
    blocks: Vec<SlabJournalBlock>,
    /// The first sequence not in the chain: where appending continues.
    tail: SequenceNumber,
    /// Block `tail - 1`: replayed entries after its recovery point are not in any durable
    /// block. `None` only when `tail` is the first sequence.
    last: Option<SlabJournalBlock>,
}

impl SlabDepot {
    /// Opens the depot of a volume that was not closed cleanly and scrubs every slab that may
    /// have changed before returning: `open_recovering`, then every slab scrubbed. Used by a
    /// read-only open and by `recover_offline`.
    ///
    /// # Errors
    ///
    /// As `open_recovering` and `scrub_slab`.
    pub(crate) fn open_dirty(
        store: &dyn Storage,
        layout: Layout,
        nonce: Nonce,
        replay: &(impl ReplayEntries + ?Sized),
    ) -> Result<Self, VolumeError> {
        let mut depot = Self::open_recovering(store, layout, nonce, replay)?;
        depot.scrub_all(store)?;
        Ok(depot)
    }

    /// The offline part of recovery: opens the depot of a volume that was not closed cleanly
    /// (see `scrub.rs`). Slabs clean in the summary and untouched by `replay` open as `open`
    /// opens them. Every other slab is *unrecovered*: its durable journal chain is found and
    /// the replayed entries missing from it are re-appended in memory, but its reference
    /// counts are not rebuilt until `scrub_slab`. `replay` is every durable recovery journal
    /// entry from the journal head on, in journal order (empty when resuming a recovery a
    /// clean close interrupted). The caller writes the dirty marks and the slab journal
    /// blocks before the recovery journal may be reused.
    ///
    /// # Errors
    ///
    /// `Corrupt` when a summary, reference count or journal state fails its checks;
    /// `Invariant` when a replayed entry is invalid or out of order; `Io` when a read fails.
    pub(crate) fn open_recovering(
        store: &dyn Storage,
        layout: Layout,
        nonce: Nonce,
        replay: &(impl ReplayEntries + ?Sized),
    ) -> Result<Self, VolumeError> {
        let (summary, entries) = Summary::read(store, &layout, nonce)?;
        let touched = touched_slabs(&layout, replay)?;
        // Every slab's reads first, in order, up to the first that fails; then the replayed
        // changes the chains lack, in one pass; then each slab's checks, in order: the first
        // error is the one a slab-by-slab open would meet first.
        let mut opened = Vec::with_capacity(entries.len());
        let mut failed = None;
        for ((i, entry), &touched) in (0_u32..).zip(&entries).zip(&touched) {
            match open_or_read(
                store,
                &layout,
                &summary,
                nonce,
                SlabNumber(i),
                entry,
                touched,
            ) {
                Ok(opening) => opened.push(opening),
                Err(e) => {
                    failed = Some(e);
                    break;
                }
            }
        }
        let mut pending = replayed_after_chains(&layout, replay, &opened)?;
        let mut slabs = Vec::with_capacity(entries.len());
        for ((opening, entry), pending) in opened.into_iter().zip(&entries).zip(&mut pending) {
            slabs.push(match opening {
                Opening::Clean(slab) => slab,
                Opening::Dirty(read) => prepare(&layout, entry, read, pending)?,
            });
        }
        if let Some(e) = failed {
            return Err(e);
        }
        Ok(Self {
            layout,
            nonce,
            allocator: Allocator::new(&slabs),
            slabs,
            summary,
            last_point: replay.last_point(),
            slab_journal_entries: 0,
            slab_journal_blocks_written: 0,
            ref_count_blocks_written: 0,
            summary_blocks_written: 0,
        })
    }

    /// Slabs whose reference counts are not rebuilt yet.
    pub(crate) fn unrecovered_count(&self) -> usize {
        self.slabs
            .iter()
            .filter(|s| s.unrecovered.is_some())
            .count()
    }

    /// The unrecovered slab to scrub next: one whose journal is under pressure first (it
    /// cannot take entries much longer), then the one with the most free blocks by its counts
    /// on disk (an estimate), so allocation gets room soonest. With `urgent_only`, only a
    /// slab that must be scrubbed before the volume can go on: under pressure, or any when no
    /// recovered slab has a free block.
    pub(crate) fn next_to_scrub(&self, urgent_only: bool) -> Option<usize> {
        let unrecovered = || {
            self.slabs
                .iter()
                .enumerate()
                .filter(|(_, s)| s.unrecovered.is_some())
        };
        if let Some((i, _)) = unrecovered().find(|(_, s)| s.journal.under_pressure()) {
            return Some(i);
        }
        let room = self
            .slabs
            .iter()
            .any(|s| s.unrecovered.is_none() && s.counts.free() > 0);
        if urgent_only && room {
            return None;
        }
        unrecovered()
            .max_by_key(|(i, s)| (s.counts.free(), std::cmp::Reverse(*i)))
            .map(|(i, _)| i)
    }

    /// What scrubbing slab `slab` reads, for `read_for_scrub` (without the metadata lock).
    ///
    /// # Panics
    ///
    /// If the slab is recovered.
    pub(crate) fn scrub_plan(&self, slab: usize) -> ScrubPlan {
        let u = self.slabs[slab]
            .unrecovered
            .as_ref()
            .expect("a plan for an unrecovered slab");
        ScrubPlan {
            slab,
            nonce: self.nonce,
            region: journal_region(&self.layout, self.slabs[slab].number),
            from: u.from,
            to: u.to,
            covered: u.covered,
        }
    }

    /// Finishes scrubbing `slab` with the chain blocks `read_for_scrub` read: applies them
    /// and every entry appended since open to the counts read at open, after the commit
    /// points, and makes the slab recovered (allocation and dedupe may use it). Its counts
    /// are dirty; they reach the disk as any slab's do.
    ///
    /// # Errors
    ///
    /// `Invariant` when a count would leave its range (and the slab stays unrecovered).
    pub(crate) fn finish_scrub(
        &mut self,
        slab: usize,
        blocks: &[SlabJournalBlock],
    ) -> Result<(), VolumeError> {
        let s = &mut self.slabs[slab];
        let number = s.number;
        let u = s.unrecovered.as_ref().expect("an unrecovered slab");
        let mut disk = DiskCounts {
            live: s.counts.live_counts().to_vec(),
            commits: u.commits.clone(),
            writers: u.writers.clone(),
            on_disk: u.on_disk,
        };
        let mut commit_point = disk.newest_commit();
        for block in blocks {
            for (index, &change) in (0_u16..).zip(&block.entries) {
                let point = JournalPoint {
                    sequence: block.sequence,
                    entry: index,
                };
                disk.apply(number, change, point)?;
                commit_point = commit_point.max(point);
            }
        }
        for &(at, change) in &u.appended {
            disk.apply(number, change, at)?;
            commit_point = commit_point.max(at);
        }
        let counts = RefCounts::recovered(number, disk.live, disk.writers, disk.on_disk);
        s.finish_scrub(counts, commit_point);
        Ok(())
    }

    /// Scrubs `slab` now, reading through `store`: `scrub_plan`, `read_for_scrub`,
    /// `finish_scrub` in one call, for callers that may hold the depot across the reads.
    ///
    /// # Errors
    ///
    /// As `read_for_scrub` and `finish_scrub`.
    pub(crate) fn scrub_slab(
        &mut self,
        store: &dyn Storage,
        slab: usize,
    ) -> Result<(), VolumeError> {
        let blocks = read_for_scrub(store, &self.scrub_plan(slab))?;
        self.finish_scrub(slab, &blocks)
    }

    /// Scrubs every unrecovered slab.
    ///
    /// # Errors
    ///
    /// As `scrub_slab`.
    pub(crate) fn scrub_all(&mut self, store: &dyn Storage) -> Result<(), VolumeError> {
        while let Some(slab) = self.next_to_scrub(false) {
            self.scrub_slab(store, slab)?;
        }
        Ok(())
    }
}

/// What the online part of scrubbing one slab reads: the slab journal blocks `from..to`,
/// durable since open and never overwritten while the slab is unrecovered (its journal head
/// cannot move before its counts are rebuilt and written).
#[derive(Clone, Debug)]
pub(crate) struct ScrubPlan {
    pub(crate) slab: usize,
    nonce: Nonce,
    region: SlabJournalRegion,
    from: SequenceNumber,
    to: SequenceNumber,
    covered: SequenceNumber,
}

/// Reads the chain blocks of `plan`. A block that does not decode as its sequence is
/// skipped when the counts cover it (as at open); otherwise it is `Corrupt`: the chain found
/// at open is gone.
///
/// # Errors
///
/// `Corrupt` as above; `Io` when a read fails.
pub(crate) fn read_for_scrub(
    store: &dyn Storage,
    plan: &ScrubPlan,
) -> Result<Vec<SlabJournalBlock>, VolumeError> {
    let region = &plan.region;
    let mut out = Vec::new();
    let mut sequence = plan.from;
    while sequence < plan.to {
        let pbn = region.log().pbn_of(sequence);
        let mut block: Block = [0; BLOCK_SIZE];
        store.read_at(pbn.byte_offset(), &mut block)?;
        let decoded = SlabJournalBlock::decode(&block, Expected::new(plan.nonce, pbn), region)
            .ok()
            .filter(|b| b.sequence == sequence);
        match decoded {
            Some(b) => out.push(b),
            None if sequence <= plan.covered => {}
            None => {
                let expected = "the chain block found at open, while scrubbing";
                return Err(corrupt_journal(region, expected, sequence.0));
            }
        }
        sequence = sequence.next();
    }
    Ok(out)
}

/// Which slabs `replay` changes, checking the order and validity of every entry.
fn touched_slabs(
    layout: &Layout,
    replay: &(impl ReplayEntries + ?Sized),
) -> Result<Vec<bool>, VolumeError> {
    let mut touched = vec![false; layout.slab_count() as usize];
    let mut last: Option<JournalPoint> = None;
    replay.try_for_each_from(JournalPoint::default(), |point, entry| {
        let valid = point.sequence.0 >= 1 && point.entry < recovery_journal::ENTRIES_PER_BLOCK_U16;
        if !valid || last.is_some_and(|l| point <= l) {
            let what = format!("replayed entry at {point}: not a valid point after the last");
            return Err(VolumeError::invariant(Some(entry.lbn), None, what));
        }
        last = Some(point);
        for change in replayed_changes(layout, point, &entry)?.iter().flatten() {
            touched[change.slab] = true;
        }
        Ok(())
    })?;
    Ok(touched)
}

/// The count changes of the replayed entry at `point`.
#[inline]
fn replayed_changes(
    layout: &Layout,
    point: JournalPoint,
    entry: &RecoveryJournalEntry,
) -> Result<[Option<Change>; 2], VolumeError> {
    changes_of(layout, entry).map_err(|(pbn, what)| {
        VolumeError::invariant(Some(entry.lbn), pbn, format!("replayed at {point}: {what}"))
    })
}

/// Per slab, the changes of `replay` from the recovery point of the last block of its
/// durable chain on (those before it are in the chain), in `record` order with their points;
/// nothing for a slab opened clean. Replay is read from the earliest such point only: after a
/// crash with the slab journals nearly complete, that is a short tail of the journal.
fn replayed_after_chains(
    layout: &Layout,
    replay: &(impl ReplayEntries + ?Sized),
    opened: &[Opening],
) -> Result<Vec<Vec<(JournalPoint, SlabJournalEntry)>>, VolumeError> {
    let from: Vec<Option<JournalPoint>> = opened
        .iter()
        .map(|opening| match opening {
            Opening::Clean(_) => None,
            Opening::Dirty(read) => Some(read.chain_end()),
        })
        .collect();
    let mut out = vec![Vec::new(); opened.len()];
    let Some(&start) = from.iter().flatten().min() else {
        return Ok(out);
    };
    replay.try_for_each_from(start, |point, entry| {
        for change in replayed_changes(layout, point, &entry)?.iter().flatten() {
            let wanted = from.get(change.slab).copied().flatten();
            if wanted.is_some_and(|from| point >= from) {
                out[change.slab].push((
                    point,
                    SlabJournalEntry {
                        block: SlabBlockNumber(change.block),
                        operation: change.operation,
                    },
                ));
            }
        }
        Ok::<_, VolumeError>(())
    })?;
    Ok(out)
}

/// A slab as the first step of `open_recovering` leaves it.
enum Opening {
    /// Clean in the summary, untouched by replay, and opened as `open` opens it.
    Clean(Slab),
    /// To recover: what `prepare` needs.
    Dirty(ReadSlab),
}

/// What the offline part of scrubbing reads of one slab.
struct ReadSlab {
    number: SlabNumber,
    disk: DiskCounts,
    /// The first chain block with an entry the counts lack, if any.
    head: Option<SequenceNumber>,
    /// The newest of the counts' commit points and the chain's entries.
    commit_point: JournalPoint,
    /// The chain's tail and last block (see [`Chain`]).
    tail: SequenceNumber,
    last: Option<SlabJournalBlock>,
}

impl ReadSlab {
    /// Replayed changes before this point are in the durable chain.
    fn chain_end(&self) -> JournalPoint {
        self.last
            .as_ref()
            .map_or_else(JournalPoint::default, |block| block.recovery_point)
    }
}

/// Opens slab `number` as `open` does when the summary calls it clean and replay does not
/// touch it (and its counts agree), else reads its counts and chain for `prepare`.
fn open_or_read(
    store: &dyn Storage,
    layout: &Layout,
    summary: &Summary,
    nonce: Nonce,
    number: SlabNumber,
    entry: &SummaryEntry,
    touched: bool,
) -> Result<Opening, VolumeError> {
    if entry.clean && !touched {
        let at = summary.newest_pbn(layout, number);
        match Slab::open(store, layout, nonce, number, entry, at) {
            Ok(slab) => return Ok(Opening::Clean(slab)),
            // Counts newer than a clean entry: a lost summary write; scrub it.
            Err(VolumeError::NeedsRecovery { .. }) => {}
            Err(e) => return Err(e),
        }
    }
    let disk = read_counts(store, layout, nonce, number, entry.ref_counts_written)?;
    let region = journal_region(layout, number);
    let chain = find_chain(store, nonce, &region, disk.newest_commit().sequence)?;
    let mut commit_point = disk.newest_commit();
    // The head is the first chain block with an entry the counts lack: the chain survives
    // until the rebuilt counts are durable.
    let mut head = None;
    for block in &chain.blocks {
        for (index, change) in (0_u16..).zip(&block.entries) {
            let point = JournalPoint {
                sequence: block.sequence,
                entry: index,
            };
            if point > disk.commits[change.block.0 as usize / COUNTS_PER_BLOCK] {
                head.get_or_insert(block.sequence);
            }
            commit_point = commit_point.max(point);
        }
    }
    Ok(Opening::Dirty(ReadSlab {
        number,
        disk,
        head,
        commit_point,
        tail: chain.tail,
        last: chain.last,
    }))
}

/// The offline part of scrubbing one slab (see the module doc), after `open_or_read`:
/// re-appends `replayed`, the changes from its chain's end on, less those in the chain, and
/// returns it unrecovered, holding its counts as read (an estimate) until `finish_scrub`.
/// `replayed` is taken.
fn prepare(
    layout: &Layout,
    entry: &SummaryEntry,
    read: ReadSlab,
    replayed: &mut Vec<(JournalPoint, SlabJournalEntry)>,
) -> Result<Slab, VolumeError> {
    let ReadSlab {
        number,
        disk,
        head,
        mut commit_point,
        tail,
        last,
    } = read;
    let region = journal_region(layout, number);
    let newest_commit = disk.newest_commit();
    let pending = pending_changes(number, replayed, last.as_ref())?;
    let head = head.unwrap_or(tail);
    let new_blocks = pending.len().div_ceil(ENTRIES_PER_BLOCK) as u64;
    if tail.0 - head.0 + new_blocks > region.blocks {
        let what = format!(
            "scrubbing slab {number}: {} entries to re-append after sequence {} do not fit \
             a journal of {} blocks with head {head}",
            pending.len(),
            tail,
            region.blocks
        );
        return Err(VolumeError::invariant(None, None, what));
    }
    let mut journal = SlabJournal::recovered(region, head, tail);
    let mut appended = Vec::with_capacity(pending.len());
    for &(point, change) in pending {
        let at = journal.append(change, point);
        appended.push((at, change));
        commit_point = commit_point.max(at);
    }
    std::mem::take(replayed);
    if newest_commit.sequence.0 >= journal.tail() {
        let found = newest_commit.sequence.0;
        let expected = "a commit point within the slab journal and the replayed entries";
        return Err(corrupt_counts(layout, number, expected, found));
    }
    let unrecovered = Unrecovered {
        commits: disk.commits,
        writers: disk.writers.clone(),
        on_disk: disk.on_disk,
        from: head,
        to: tail,
        covered: newest_commit.sequence,
        appended,
    };
    let counts = RefCounts::recovered(number, disk.live, disk.writers, disk.on_disk);
    let mark = if entry.clean {
        DirtyMark::None
    } else {
        DirtyMark::Durable
    };
    let mut slab = Slab::recovered(number, counts, journal, commit_point, mark);
    slab.unrecovered = Some(Box::new(unrecovered));
    Ok(slab)
}

/// The changes of `replayed` (from the recovery point of `last` on) not in the durable chain
/// ending with `last`.
fn pending_changes<'a>(
    slab: SlabNumber,
    replayed: &'a [(JournalPoint, SlabJournalEntry)],
    last: Option<&SlabJournalBlock>,
) -> Result<&'a [(JournalPoint, SlabJournalEntry)], VolumeError> {
    let Some(block) = last else {
        return Ok(replayed);
    };
    assert!(
        replayed
            .first()
            .is_none_or(|(p, _)| *p >= block.recovery_point),
        "slab {slab}: replayed changes from before the chain's end"
    );
    // The block ends with one of the changes of the entry at its recovery point; those up to
    // it are durable.
    let at_point = replayed
        .iter()
        .take_while(|(p, _)| *p == block.recovery_point)
        .count();
    if at_point == 0 {
        return Ok(replayed);
    }
    let end = block.entries.last().copied();
    let Some(at) = replayed[..at_point]
        .iter()
        .position(|(_, c)| Some(*c) == end)
    else {
        let what = format!(
            "slab {slab} journal block {} ends with a change the recovery journal entry at its \
             recovery point {} does not make",
            block.sequence, block.recovery_point
        );
        return Err(VolumeError::invariant(None, None, what));
    };
    Ok(&replayed[at + 1..])
}

/// Reads every slab journal block that decodes at its position, and finds the durable chain.
/// `covered` is the newest commit point's sequence: a missing block at or before it holds
/// nothing the counts lack.
fn find_chain(
    store: &dyn Storage,
    nonce: Nonce,
    region: &SlabJournalRegion,
    covered: SequenceNumber,
) -> Result<Chain, VolumeError> {
    let log = read_log(store, nonce, region)?;
    let at = |sequence: SequenceNumber| {
        let position = usize::try_from(sequence.0 % region.blocks).expect("below the length");
        log[position]
            .as_ref()
            .filter(|b| b.sequence == sequence)
            .cloned()
    };
    let Some(newest) = log.iter().flatten().max_by_key(|b| b.sequence) else {
        if covered.0 > 0 {
            let expected = "a slab journal block to continue after the counts' commit point";
            return Err(corrupt_journal(region, expected, covered.0));
        }
        return Ok(Chain {
            blocks: Vec::new(),
            tail: FIRST_SEQUENCE,
            last: None,
        });
    };
    let mut blocks = Vec::new();
    let mut tail = newest.sequence.next();
    let mut sequence = newest.head;
    while sequence <= newest.sequence {
        match at(sequence) {
            Some(block) => blocks.push(block),
            None if sequence <= covered => {}
            None => {
                tail = sequence;
                break;
            }
        }
        sequence = sequence.next();
    }
    let previous = SequenceNumber(tail.0 - 1);
    let last = if previous.0 == 0 {
        None
    } else {
        let Some(block) = at(previous) else {
            let expected = "the block before the first missing one, to place the entries after";
            return Err(corrupt_journal(region, expected, previous.0));
        };
        Some(block)
    };
    Ok(Chain { blocks, tail, last })
}

/// Every block of a slab journal decoded at its position, `None` where it does not decode.
fn read_log(
    store: &dyn Storage,
    nonce: Nonce,
    region: &SlabJournalRegion,
) -> Result<Vec<Option<SlabJournalBlock>>, VolumeError> {
    let length = usize::try_from(region.blocks).expect("journal length fits in memory");
    let mut bytes = vec![0_u8; length * BLOCK_SIZE];
    store.read_at(region.start.byte_offset(), &mut bytes)?;
    let log = (0_u64..)
        .zip(bytes.chunks_exact(BLOCK_SIZE))
        .map(|(offset, chunk)| {
            let block: &Block = chunk.try_into().expect("one block");
            let expected = Expected::new(nonce, region.start.offset(offset));
            SlabJournalBlock::decode(block, expected, region).ok()
        })
        .collect();
    Ok(log)
}

/// Reads every reference count block of a slab for scrubbing (see the module doc).
fn read_counts(
    store: &dyn Storage,
    layout: &Layout,
    nonce: Nonce,
    slab: SlabNumber,
    summary_says_written: bool,
) -> Result<DiskCounts, VolumeError> {
    let data = data_blocks(layout) as usize;
    let pairs = u32::try_from(layout.slab().ref_count_pairs.0).expect("pairs fit in u32");
    let mut disk = DiskCounts {
        live: vec![0; data],
        commits: Vec::with_capacity(pairs as usize),
        writers: Vec::with_capacity(pairs as usize),
        on_disk: true,
    };
    for index in 0..pairs {
        let base = layout.ref_counts_base(slab, index);
        let (a, b) = read_pair(store, base)?;
        let start = index as usize * COUNTS_PER_BLOCK;
        let used = (data - start).min(COUNTS_PER_BLOCK);
        match ref_counts::read_twins(&a, &b, nonce, base, slab, index, used) {
            Ok(chosen) => {
                disk.live[start..start + used].copy_from_slice(&chosen.value.counts);
                disk.commits.push(chosen.value.commit_point);
                disk.writers.push(TwinWriter::after(&chosen));
            }
            // Never written, or its first write (always slot A) torn: nothing durable was
            // ever there, unless the summary says the counts reached the disk.
            Err(_) if !summary_says_written && b.iter().all(|&x| x == 0) => {
                disk.commits.push(JournalPoint::default());
                disk.writers.push(TwinWriter::FIRST);
                disk.on_disk = false;
            }
            Err(e) => return Err(e.into()),
        }
    }
    Ok(disk)
}

fn corrupt_journal(region: &SlabJournalRegion, expected: &'static str, found: u64) -> VolumeError {
    let problem = Problem::InvalidField {
        field: "slab journal chain",
        expected,
        found,
    };
    VolumeError::Corrupt(FormatError::new(
        BlockType::SlabJournal,
        region.start,
        problem,
    ))
}

fn corrupt_counts(
    layout: &Layout,
    slab: SlabNumber,
    expected: &'static str,
    found: u64,
) -> VolumeError {
    let problem = Problem::InvalidField {
        field: "commit point",
        expected,
        found,
    };
    let pbn: Pbn = layout.ref_counts_base(slab, 0);
    VolumeError::Corrupt(FormatError::new(BlockType::RefCounts, pbn, problem))
}
