//! Slab scrubbing at open after a crash: exact counts from reference count blocks, the slab
//! journal's durable chain and the recovery journal entries replayed.
//!
//! Which slabs: every slab the durable summary does not call clean, and every slab `replay`
//! touches (possible only if a summary write was lost). A clean slab has no journal or
//! reference count write since its clean mark, because the depot hands none out before a
//! durable dirty mark; it is opened as `open` does.
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
//! 3. Chain entries after the commit point of their reference count block are applied.
//! 4. `replay` entries of the slab after the recovery point of block `tail - 1` (and, for the
//!    entry at that point, the changes after the block's last entry: one entry's two changes
//!    may straddle a block boundary) are appended to the journal in memory from `tail` on,
//!    packing full blocks exactly as `record` did, so they get their original slab journal
//!    points; each is applied if its point is after its block's commit point.
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
use super::slab::{DirtyMark, Slab, data_blocks, journal_region};
use super::slab_journal::{FIRST_SEQUENCE, SlabJournal};
use super::summary::Summary;
use super::twin::{TwinWriter, read_pair};
use super::{SlabDepot, changes_of};
use crate::error::VolumeError;

/// The changes one replayed recovery journal entry makes in one slab, in `record` order.
#[derive(Clone, Debug)]
struct Replayed {
    point: JournalPoint,
    changes: Vec<SlabJournalEntry>,
}

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
    /// Opens the depot of a volume that was not closed cleanly, scrubbing every slab that may
    /// have changed (see `scrub.rs`). `replay` is every durable recovery journal entry from
    /// the journal head on, in journal order. The caller then writes the recovered state as
    /// the module doc's "Recovery" section says.
    ///
    /// # Errors
    ///
    /// `Corrupt` when a summary, reference count or journal state fails its checks;
    /// `Invariant` when a replayed entry is invalid or out of order, or a count would leave
    /// its range; `Io` when a read fails.
    // `allow`, not `expect`: volume/recover.rs, being written alongside, calls it once wired in.
    #[cfg_attr(
        not(test),
        allow(dead_code, reason = "the engine's recovery at open calls it")
    )]
    pub(crate) fn open_dirty(
        store: &dyn Storage,
        layout: Layout,
        nonce: Nonce,
        replay: &[(JournalPoint, RecoveryJournalEntry)],
    ) -> Result<Self, VolumeError> {
        let (summary, entries) = Summary::read(store, &layout, nonce)?;
        let touched = replayed_by_slab(&layout, replay)?;
        let mut slabs = Vec::with_capacity(entries.len());
        for ((i, entry), replayed) in (0_u32..).zip(&entries).zip(&touched) {
            let number = SlabNumber(i);
            if entry.clean && replayed.is_empty() {
                let at = summary.newest_pbn(&layout, number);
                match Slab::open(store, &layout, nonce, number, entry, at) {
                    Ok(slab) => {
                        slabs.push(slab);
                        continue;
                    }
                    // Counts newer than a clean entry: a lost summary write; scrub it.
                    Err(VolumeError::NeedsRecovery { .. }) => {}
                    Err(e) => return Err(e),
                }
            }
            slabs.push(scrub(store, &layout, nonce, number, entry, replayed)?);
        }
        Ok(Self {
            layout,
            nonce,
            allocator: Allocator::new(&slabs),
            slabs,
            summary,
            last_point: replay.last().map(|(point, _)| *point),
            slab_journal_entries: 0,
            slab_journal_blocks_written: 0,
            ref_count_blocks_written: 0,
            summary_blocks_written: 0,
        })
    }
}

/// Splits `replay` into each slab's changes, checking order and validity.
fn replayed_by_slab(
    layout: &Layout,
    replay: &[(JournalPoint, RecoveryJournalEntry)],
) -> Result<Vec<Vec<Replayed>>, VolumeError> {
    let mut out = vec![Vec::new(); layout.slab_count() as usize];
    let mut last: Option<JournalPoint> = None;
    for (point, entry) in replay {
        let valid = point.sequence.0 >= 1 && point.entry < recovery_journal::ENTRIES_PER_BLOCK_U16;
        if !valid || last.is_some_and(|l| *point <= l) {
            let what = format!("replayed entry at {point}: not a valid point after the last");
            return Err(VolumeError::invariant(Some(entry.lbn), None, what));
        }
        last = Some(*point);
        let changes = changes_of(layout, entry).map_err(|(pbn, what)| {
            VolumeError::invariant(Some(entry.lbn), pbn, format!("replayed at {point}: {what}"))
        })?;
        for change in changes.iter().flatten() {
            let slab: &mut Vec<Replayed> = &mut out[change.slab];
            if slab.last().is_none_or(|r| r.point != *point) {
                slab.push(Replayed {
                    point: *point,
                    changes: Vec::new(),
                });
            }
            slab.last_mut()
                .expect("pushed")
                .changes
                .push(SlabJournalEntry {
                    block: SlabBlockNumber(change.block),
                    operation: change.operation,
                });
        }
    }
    Ok(out)
}

/// Scrubs one slab (see the module doc).
fn scrub(
    store: &dyn Storage,
    layout: &Layout,
    nonce: Nonce,
    number: SlabNumber,
    entry: &SummaryEntry,
    replayed: &[Replayed],
) -> Result<Slab, VolumeError> {
    let mut disk = read_counts(store, layout, nonce, number, entry.ref_counts_written)?;
    let region = journal_region(layout, number);
    let newest_commit = disk.newest_commit();
    let chain = find_chain(store, nonce, &region, newest_commit.sequence)?;
    let mut head = None;
    let mut commit_point = newest_commit;
    for block in &chain.blocks {
        for (index, &change) in (0_u16..).zip(&block.entries) {
            let point = JournalPoint {
                sequence: block.sequence,
                entry: index,
            };
            if disk.apply(number, change, point)? {
                head.get_or_insert(block.sequence);
            }
            commit_point = commit_point.max(point);
        }
    }
    let pending = pending_changes(number, replayed, chain.last.as_ref())?;
    let head = head.unwrap_or(chain.tail);
    let new_blocks = pending.len().div_ceil(ENTRIES_PER_BLOCK) as u64;
    if chain.tail.0 - head.0 + new_blocks > region.blocks {
        let what = format!(
            "scrubbing slab {number}: {} entries to re-append after sequence {} do not fit \
             a journal of {} blocks with head {head}",
            pending.len(),
            chain.tail,
            region.blocks
        );
        return Err(VolumeError::invariant(None, None, what));
    }
    let mut journal = SlabJournal::recovered(region, head, chain.tail);
    for (point, change) in pending {
        let at = journal.append(change, point);
        disk.apply(number, change, at)?;
        commit_point = commit_point.max(at);
    }
    if newest_commit.sequence.0 >= journal.tail() {
        let found = newest_commit.sequence.0;
        let expected = "a commit point within the slab journal and the replayed entries";
        return Err(corrupt_counts(layout, number, expected, found));
    }
    let counts = RefCounts::recovered(number, disk.live, disk.writers, disk.on_disk);
    let mark = if entry.clean {
        DirtyMark::None
    } else {
        DirtyMark::Durable
    };
    Ok(Slab::recovered(number, counts, journal, commit_point, mark))
}

/// The changes of `replayed` not in the durable chain ending with `last`, with their
/// recovery journal points.
fn pending_changes(
    slab: SlabNumber,
    replayed: &[Replayed],
    last: Option<&SlabJournalBlock>,
) -> Result<Vec<(JournalPoint, SlabJournalEntry)>, VolumeError> {
    let mut out = Vec::new();
    for r in replayed {
        let skip = match last {
            Some(block) if r.point < block.recovery_point => continue,
            Some(block) if r.point == block.recovery_point => {
                // The block ends with one of this entry's changes; those up to it are durable.
                let end = block.entries.last().copied();
                let at = r.changes.iter().position(|c| Some(*c) == end);
                let Some(at) = at else {
                    let what = format!(
                        "slab {slab} journal block {} ends with a change the recovery journal \
                         entry at its recovery point {} does not make",
                        block.sequence, r.point
                    );
                    return Err(VolumeError::invariant(None, None, what));
                };
                at + 1
            }
            _ => 0,
        };
        out.extend(r.changes[skip..].iter().map(|&c| (r.point, c)));
    }
    Ok(out)
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
