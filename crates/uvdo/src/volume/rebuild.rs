//! Force rebuild, offline (VDO's `vdo start --forceRebuild` / `vdoforcerebuild` and the
//! read-only rebuild it triggers; SPEC section 5 and M3): every reference count is recounted
//! from the block map, and the volume returns to normal whatever mode it was in.
//!
//! 1. Read the geometry (bad: `NotAVolume`) and the super block twins (one good slot is
//!    enough). Write the super block read-only with the reason "force rebuild in progress" and
//!    `force_rebuild_requested`: a crash anywhere below leaves a volume that needs this rebuild
//!    again, never one that normal recovery would misread.
//! 2. Scan the recovery journal of the current epoch from the super block's tail
//!    (journal/scan.rs) and replay every entry into the block map; an entry that fails to
//!    replay is dropped and counted. A journal the scan refuses is skipped and reported.
//! 3. Walk the whole forest (block_map/rebuild.rs) in LBN order and recount: each tree page
//!    pair is 255 twice; each `Data`/`Compressed` mapping adds one to its block. Dropped (the
//!    slot unmapped, counted by reason): mappings past the logical size, outside the slab data
//!    blocks, at a tree page, or past `REFERENCE_MAX` references to one block (the first 254 in
//!    LBN order stay). A page whose twins both fail their checks loses its subtree: the
//!    parent's slot is unmapped (a root is started again empty) and the LBNs it covered are
//!    reported lost.
//! 4. Write, each phase flushed before the next: the block map pages changed (twins); every
//!    reference count block of every slab (twins; commit point at the start of a fresh slab
//!    journal, depot/rebuild.rs explains why old slab journal blocks can never count again);
//!    the slab summary, every slab clean; last the super block: clean, normal, no read-only
//!    reason, `read_only_recoveries + 1`, the journal head = tail at a new epoch (every old
//!    journal block is stale) above every recovery point the slab journals name, and the
//!    counters recounted.
//!
//! A store error ends the rebuild with the volume still marked as needing it.

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use uvdo_format::geometry::Geometry;
use uvdo_format::layout::Layout;
use uvdo_format::recovery_journal::{Epoch, JournalRegion};
use uvdo_format::ref_counts::{BLOCK_MAP_REFERENCE, REFERENCE_MAX};
use uvdo_format::super_block::{
    JournalState, MESSAGE_BYTES_MAX, OperatingMode, ReadOnlyReason, SuperBlock, VolumeState,
};
use uvdo_format::{BLOCK_SIZE, Block, BlockCount, JournalPoint, Lbn, Mapping, Pbn, SequenceNumber};
use uvdo_io::Storage;

use super::Volume;
use crate::block_map::BlockMap;
use crate::block_map::rebuild::RebuildSink;
use crate::depot::SlabDepot;
use crate::error::VolumeError;
use crate::hash::Namer;
use crate::journal::entries::ReplayEntries;
use crate::journal::scan;

/// The reason recorded while a rebuild runs; it stays if the rebuild does not finish.
const IN_PROGRESS: &str = "a force rebuild started and did not finish; run it again";

/// A step of the rebuild, for progress reports.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RebuildPhase {
    /// Replaying the recovery journal into the block map (entries).
    ReplayJournal,
    /// Walking the interior pages of the block map (pages of one level).
    WalkTree,
    /// Recounting the references of the leaves (leaf pages).
    CountLeaves,
    /// Writing changed block map pages (pages).
    WriteBlockMap,
    /// Writing reference count blocks (slabs).
    WriteRefCounts,
    /// Writing the slab summary (blocks).
    WriteSummary,
    /// Writing the super block (one block).
    WriteSuperBlock,
}

impl RebuildPhase {
    /// A short name, for a progress bar.
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            Self::ReplayJournal => "replaying journal",
            Self::WalkTree => "walking block map",
            Self::CountLeaves => "counting references",
            Self::WriteBlockMap => "writing block map",
            Self::WriteRefCounts => "writing reference counts",
            Self::WriteSummary => "writing slab summary",
            Self::WriteSuperBlock => "writing super block",
        }
    }
}

impl fmt::Display for RebuildPhase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Progress of a rebuild: `done` of `total` units of `phase`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RebuildProgress {
    /// The step running.
    pub phase: RebuildPhase,
    /// Units done.
    pub done: u64,
    /// Units in the step.
    pub total: u64,
}

/// Leaf mappings the rebuild unmapped, by reason.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DroppedMappings {
    /// LBN at or past the logical size.
    pub beyond_logical_size: u64,
    /// The block is not a slab data block.
    pub outside_data_blocks: u64,
    /// The block holds a block map tree page.
    pub at_tree_page: u64,
    /// The block already had `REFERENCE_MAX` (254) references from lower LBNs.
    pub over_reference_limit: u64,
}

impl DroppedMappings {
    /// Every mapping dropped.
    #[must_use]
    pub fn total(&self) -> u64 {
        self.beyond_logical_size
            + self.outside_data_blocks
            + self.at_tree_page
            + self.over_reference_limit
    }
}

/// A block map subtree the rebuild gave up.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LostSubtree {
    /// Twin base of its page (or the invalid PBN the parent named; 0 for a non-page entry).
    pub base: Pbn,
    /// Its level: 0 for a leaf, 4 for a root.
    pub level: u8,
    /// LBNs below the logical size it covered, now unmapped (they read as zeros).
    pub lbns: u64,
}

/// What a force rebuild did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RebuildReport {
    /// Recovery journal entries replayed into the block map.
    pub journal_entries_replayed: u64,
    /// Recovery journal entries that failed to replay (the tree contradicts them).
    pub journal_entries_dropped: u64,
    /// Why the recovery journal was skipped whole, if it was.
    pub journal_skipped: Option<String>,
    /// Leaf mappings unmapped, by reason.
    pub mappings_dropped: DroppedMappings,
    /// Interior entries unmapped: not a tree page, or a page another entry already names.
    pub tree_pointers_dropped: u64,
    /// Block map pages whose twins both failed their checks.
    pub unreadable_pages: u64,
    /// LBNs under lost subtrees (unreadable pages and dropped interior entries).
    pub lbns_lost: u64,
    /// The first lost subtrees.
    pub lost_subtrees: Vec<LostSubtree>,
    /// References counted from leaf mappings to data blocks.
    pub references_counted: u64,
    /// LBNs mapped after the rebuild (zero blocks included).
    pub logical_blocks_used: u64,
    /// Data blocks with 1..=254 references.
    pub data_blocks_used: u64,
    /// Blocks holding block map tree pages (two per page).
    pub block_map_blocks: u64,
    /// Data blocks in use: `data_blocks_used + block_map_blocks`.
    pub blocks_in_use: u64,
    /// Block map pages written.
    pub block_map_pages_written: u64,
    /// Reference count blocks written.
    pub ref_count_blocks_written: u64,
    /// Where the recovery journal continues (head = tail), in the new epoch.
    pub journal_restart: SequenceNumber,
    /// Wall time of the rebuild.
    pub duration: Duration,
}

/// The recount, as the block map walk feeds it.
struct Recount<'a> {
    layout: Layout,
    logical_blocks: u64,
    per_slab: usize,
    /// One count per slab data block, in PBN order.
    counts: Vec<u8>,
    dropped: DroppedMappings,
    references: u64,
    logical_used: u64,
    tree_pages: u64,
    progress: &'a mut dyn FnMut(RebuildProgress),
}

impl Recount<'_> {
    fn index(&self, pbn: Pbn) -> Option<usize> {
        let (slab, block) = self.layout.slab_of(pbn)?;
        Some(slab.0 as usize * self.per_slab + block.0 as usize)
    }
}

impl RebuildSink for Recount<'_> {
    fn claim_tree_page(&mut self, base: Pbn, _level: u8) -> bool {
        let (Some(a), Some(b)) = (self.index(base), self.index(base.offset(1))) else {
            return false;
        };
        if self.counts[a] != 0 || self.counts[b] != 0 {
            return false;
        }
        self.counts[a] = BLOCK_MAP_REFERENCE;
        self.counts[b] = BLOCK_MAP_REFERENCE;
        self.tree_pages += 1;
        true
    }

    fn release_tree_page(&mut self, base: Pbn) {
        for pbn in [base, base.offset(1)] {
            let i = self.index(pbn).expect("a claimed page is in a slab");
            assert_eq!(
                self.counts[i], BLOCK_MAP_REFERENCE,
                "released {pbn} was claimed"
            );
            self.counts[i] = 0;
        }
        self.tree_pages -= 1;
    }

    fn mapping(&mut self, lbn: Lbn, mapping: Mapping) -> bool {
        if lbn.0 >= self.logical_blocks {
            self.dropped.beyond_logical_size += 1;
            return false;
        }
        let pbn = match mapping {
            Mapping::Unmapped => return true,
            Mapping::Zero => {
                self.logical_used += 1;
                return true;
            }
            Mapping::Data(pbn) | Mapping::Compressed { pbn, .. } => pbn,
        };
        let Some(i) = self.index(pbn) else {
            self.dropped.outside_data_blocks += 1;
            return false;
        };
        match self.counts[i] {
            BLOCK_MAP_REFERENCE => {
                self.dropped.at_tree_page += 1;
                false
            }
            REFERENCE_MAX => {
                self.dropped.over_reference_limit += 1;
                false
            }
            _ => {
                self.counts[i] += 1;
                self.references += 1;
                self.logical_used += 1;
                true
            }
        }
    }

    fn progress(&mut self, level: u8, done: u64, total: u64) {
        let phase = if level == 0 {
            RebuildPhase::CountLeaves
        } else {
            RebuildPhase::WalkTree
        };
        (self.progress)(RebuildProgress { phase, done, total });
    }
}

impl Volume {
    /// Offline: rebuilds every reference count from the block map and returns a read-only (or
    /// any) volume to normal (see `volume/rebuild.rs` for the steps). The store must not be
    /// open elsewhere. `progress` is called as each step advances.
    ///
    /// # Errors
    ///
    /// `NotAVolume` for a bad geometry block; `Corrupt` when neither super block copy is
    /// valid; `Io` when the store fails (the volume then still needs the rebuild).
    #[expect(
        clippy::needless_pass_by_value,
        reason = "the same store argument as `open`, which keeps it"
    )]
    pub fn force_rebuild(
        store: Arc<dyn Storage>,
        progress: &mut dyn FnMut(RebuildProgress),
    ) -> Result<RebuildReport, VolumeError> {
        let started = Instant::now();
        let store = &*store;
        let mut block: Block = [0; BLOCK_SIZE];
        store.read_at(0, &mut block)?;
        let geometry = Geometry::decode(&block).map_err(VolumeError::NotAVolume)?;
        let nonce = geometry.nonce;
        let mut twin_b: Block = [0; BLOCK_SIZE];
        store.read_at(Pbn(1).byte_offset(), &mut block)?;
        store.read_at(Pbn(2).byte_offset(), &mut twin_b)?;
        let mut current = SuperBlock::read_twins(&block, &twin_b, nonce)?.value;
        let layout = Layout::compute(geometry.params, current.physical_blocks)?;
        let logical_blocks = current.logical_blocks.0;
        write_super_block(store, &mut current, |sb| {
            sb.state = VolumeState::Dirty;
            sb.mode = OperatingMode::ReadOnly;
            sb.force_rebuild_requested = true;
            sb.read_only_reason = Some(ReadOnlyReason {
                error_code: 4,
                errno: 5,
                time_s: super::unix_time_s(),
                structure: None,
                location: Pbn(0),
                message: uvdo_format::super_block::truncated(IN_PROGRESS, MESSAGE_BYTES_MAX)
                    .to_owned(),
            });
        })?;

        let mut report = RebuildReport::default();
        let cache_pages = usize::try_from(current.block_map_cache_pages).unwrap_or(2);
        let mut block_map = BlockMap::new(layout, nonce, cache_pages);
        let namer = Namer::new(geometry.hash_secret, false);
        let journal_end = replay_journal(
            store,
            &layout,
            &current,
            &namer,
            &mut block_map,
            &mut report,
            progress,
        )?;

        // Pages changed by the walk are dirty with a point after every replayed one.
        let point = JournalPoint {
            sequence: journal_end,
            entry: 0,
        };
        let per_slab = usize::try_from(layout.slab().data_blocks.0).expect("fits memory");
        let mut recount = Recount {
            layout,
            logical_blocks,
            per_slab,
            counts: vec![0; per_slab * layout.slab_count() as usize],
            dropped: DroppedMappings::default(),
            references: 0,
            logical_used: 0,
            tree_pages: 0,
            progress,
        };
        let repair = block_map.rebuild_walk(store, logical_blocks, point, &mut recount)?;
        let Recount {
            counts,
            dropped,
            references,
            logical_used,
            tree_pages,
            progress,
            ..
        } = recount;
        debug_assert_eq!(dropped.total(), repair.mappings_dropped);
        report.mappings_dropped = dropped;
        report.tree_pointers_dropped = repair.bad_pointers;
        report.unreadable_pages = repair.unreadable_pages;
        report.lbns_lost = repair.lbns_lost;
        report.lost_subtrees = repair
            .lost
            .iter()
            .map(|l| LostSubtree {
                base: l.base,
                level: l.level,
                lbns: l.lbns,
            })
            .collect();
        report.references_counted = references;
        report.logical_blocks_used = logical_used;
        report.block_map_blocks = 2 * tree_pages;
        report.data_blocks_used = counts
            .iter()
            .filter(|&&c| c != 0 && c != BLOCK_MAP_REFERENCE)
            .count() as u64;
        report.blocks_in_use = report.data_blocks_used + report.block_map_blocks;

        let pages = block_map.take_dirty(SequenceNumber(u64::MAX));
        report.block_map_pages_written = pages.len() as u64;
        write_phase(store, &pages, RebuildPhase::WriteBlockMap, progress)?;

        let slabs = u64::from(layout.slab_count());
        progress(RebuildProgress {
            phase: RebuildPhase::WriteRefCounts,
            done: 0,
            total: slabs,
        });
        let rebuilt = SlabDepot::rebuild_ref_counts(
            store,
            &layout,
            nonce,
            &counts,
            &mut |blocks| write_blocks(store, blocks),
            &mut |done, total| {
                progress(RebuildProgress {
                    phase: RebuildPhase::WriteRefCounts,
                    done,
                    total,
                });
            },
        )?;
        store.flush()?;
        report.ref_count_blocks_written = rebuilt.ref_count_blocks;

        let summary = SlabDepot::rebuild_summary(store, &layout, nonce, &rebuilt.entries)?;
        write_phase(store, &summary, RebuildPhase::WriteSummary, progress)?;

        let restart = journal_end
            .max(current.journal.tail)
            .max(SequenceNumber(rebuilt.recovery_sequence_max + 1));
        report.journal_restart = restart;
        progress(RebuildProgress {
            phase: RebuildPhase::WriteSuperBlock,
            done: 0,
            total: 1,
        });
        write_super_block(store, &mut current, |sb| {
            sb.state = VolumeState::Clean;
            sb.mode = OperatingMode::Normal;
            sb.read_only_reason = None;
            sb.force_rebuild_requested = false;
            sb.read_only_recoveries += 1;
            sb.journal = JournalState {
                head: restart,
                tail: restart,
                logical_blocks_used: BlockCount(logical_used),
                block_map_data_blocks: BlockCount(2 * tree_pages),
                epoch: sb.journal.epoch + 1,
            };
            // The saved index may advise blocks the rebuild freed; advice is verified, but
            // start from an empty index rather than keep stale advice.
            sb.index_saved = false;
        })?;
        progress(RebuildProgress {
            phase: RebuildPhase::WriteSuperBlock,
            done: 1,
            total: 1,
        });
        report.duration = started.elapsed();
        Ok(report)
    }
}

/// Step 2: replays the journal of the current epoch and session into `block_map`. Returns
/// the sequence after the last block replayed (the super block's tail when none was).
fn replay_journal(
    store: &dyn Storage,
    layout: &Layout,
    super_block: &SuperBlock,
    namer: &Namer,
    block_map: &mut BlockMap,
    report: &mut RebuildReport,
    progress: &mut dyn FnMut(RebuildProgress),
) -> Result<SequenceNumber, VolumeError> {
    let region = JournalRegion {
        start: layout.journal_start(),
        blocks: layout.params().recovery_journal_blocks.0,
    };
    let epoch = Epoch(super_block.journal.epoch);
    let session = super_block.journal.tail;
    let scanned = match scan::scan(store, region, super_block.nonce, epoch, session, namer) {
        Ok(scanned) => scanned,
        Err(VolumeError::Io(e)) => return Err(e.into()),
        Err(e) => {
            report.journal_skipped = Some(e.to_string());
            return Ok(session);
        }
    };
    let total = scanned.entries.len() as u64;
    for (done, (point, entry)) in (1_u64..).zip(scanned.entries.entries()) {
        match block_map.replay(store, point, &entry) {
            Ok(()) => report.journal_entries_replayed += 1,
            Err(VolumeError::Io(e)) => return Err(e.into()),
            Err(_) => report.journal_entries_dropped += 1,
        }
        progress(RebuildProgress {
            phase: RebuildPhase::ReplayJournal,
            done,
            total,
        });
    }
    Ok(scanned.end)
}

fn write_blocks(store: &dyn Storage, blocks: &[(Pbn, Block)]) -> Result<(), VolumeError> {
    for (pbn, block) in blocks {
        store.write_at(pbn.byte_offset(), block)?;
    }
    Ok(())
}

/// Writes `blocks`, reporting progress as `phase`, then flushes.
fn write_phase(
    store: &dyn Storage,
    blocks: &[(Pbn, Block)],
    phase: RebuildPhase,
    progress: &mut dyn FnMut(RebuildProgress),
) -> Result<(), VolumeError> {
    let total = blocks.len() as u64;
    progress(RebuildProgress {
        phase,
        done: 0,
        total,
    });
    for (done, (pbn, block)) in (1_u64..).zip(blocks) {
        store.write_at(pbn.byte_offset(), block)?;
        progress(RebuildProgress { phase, done, total });
    }
    store.flush()?;
    Ok(())
}

/// Writes the next super block generation to the other twin slot, then flushes.
fn write_super_block(
    store: &dyn Storage,
    current: &mut SuperBlock,
    change: impl FnOnce(&mut SuperBlock),
) -> Result<(), VolumeError> {
    let mut next = current.clone();
    change(&mut next);
    next.slot = current.slot.other();
    next.generation = current.generation.next();
    let mut block: Block = [0; BLOCK_SIZE];
    next.encode(&mut block);
    store.write_at(next.slot.pbn(Pbn(1)).byte_offset(), &block)?;
    store.flush()?;
    *current = next;
    Ok(())
}
