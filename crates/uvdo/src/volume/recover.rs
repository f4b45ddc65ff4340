//! Crash recovery at open, the offline part: the life of a crash, the engine's side.
//!
//! A volume whose super block does not say clean was not closed; the durable state is what
//! the last commits and checkpoints left. Recovery, before the volume comes online:
//!
//! 1. scan the recovery journal of the current epoch and session (journal/scan.rs): the
//!    entries from the head to the end of the contiguous durable run;
//! 2. replay them into the block map, in journal order (set semantics: idempotent);
//! 3. open the slab depot (depot `open_recovering`): every slab the summary does not call
//!    clean, or the replay touches, is unrecovered; its durable slab journal chain is found
//!    and the replayed entries missing from it are re-appended; urgent slabs are scrubbed
//!    (one under journal pressure, one with free blocks if no recovered slab has any), and
//!    with `recover_offline` every slab. Step 2 and step 3 up to the scrubs only read the
//!    store and share nothing but the entries, so a long replay runs them at once (`replay`);
//! 4. write, each step flushed before the next: summary dirty marks, slab journal tails, and
//!    with `recover_offline` the reference counts; block map pages; with `recover_offline`
//!    a clean summary;
//! 5. only then write the super block (`Volume::open`) with the next epoch and the journal
//!    head and tail at the end of the run: the old journal blocks are now stale. It says
//!    `Recovering` while slabs are unrecovered (`scrubber.rs` rebuilds them online), else
//!    `Dirty`.
//!
//! A crash anywhere before step 5 leaves the journal untouched and the super block as it
//! was, so the next open recovers again from the same entries and reaches the same state
//! (SPEC I6): the block map replay sets slots, and the depot's re-appended entries, once
//! durable, are part of the slab journal chain and are not appended twice. A crash after it
//! finds unrecovered slabs still dirty in the summary, with their chains intact.

use uvdo_format::geometry::Geometry;
use uvdo_format::layout::Layout;
use uvdo_format::recovery_journal::{Epoch, JournalRegion};
use uvdo_format::super_block::SuperBlock;
use uvdo_format::{Block, BlockCount, Nonce, Pbn, SequenceNumber};
use uvdo_io::Storage;

use crate::block_map::BlockMap;
use crate::depot::SlabDepot;
use crate::error::VolumeError;
use crate::hash::Namer;
use crate::journal::RecoveryJournal;
use crate::journal::entries::JournalEntries;
use crate::journal::scan;

/// The recovered in-memory state, ready to serve.
pub(super) struct Recovered {
    pub(super) block_map: BlockMap,
    pub(super) depot: SlabDepot,
    pub(super) journal: RecoveryJournal,
    pub(super) super_block: SuperBlock,
    /// What recovery did.
    pub(super) report: RecoveryReport,
}

/// What the last crash recovery of this volume did, for status and logs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RecoveryReport {
    /// The first journal block replayed.
    pub journal_head: SequenceNumber,
    /// The sequence after the last block replayed: where the journal continues.
    pub journal_end: SequenceNumber,
    /// Journal entries replayed into the block map and slab depot.
    pub entries_replayed: u64,
    /// Journal blocks ignored as stale (an older epoch or an earlier session).
    pub stale_journal_blocks: u64,
    /// Journal blocks of a single-flush commit that did not complete, dropped because data
    /// they map to had not landed (the log ended before them).
    pub unlanded_journal_blocks: u64,
}

/// Recovers the volume on `store` whose super block is `super_block` (not clean).
pub(super) fn recover(
    store: &dyn Storage,
    geometry: &Geometry,
    layout: Layout,
    super_block: &SuperBlock,
    cache_pages: usize,
    offline: bool,
) -> Result<Recovered, VolumeError> {
    let nonce = geometry.nonce;
    let region = JournalRegion {
        start: layout.journal_start(),
        blocks: layout.params().recovery_journal_blocks.0,
    };
    let epoch = Epoch(super_block.journal.epoch);
    let namer = Namer::new(geometry.hash_secret, false);
    let scanned = scan::scan(
        store,
        region,
        nonce,
        epoch,
        super_block.journal.tail,
        &namer,
    )?;

    let (mut block_map, mut depot) = replay(store, layout, nonce, cache_pages, &scanned.entries)?;
    if offline {
        depot.scrub_all(store)?;
    } else {
        scrub_urgent(store, &mut depot)?;
    }

    let write = |blocks: &[(Pbn, Block)]| -> Result<(), VolumeError> {
        for (pbn, block) in blocks {
            store.write_at(pbn.byte_offset(), block)?;
        }
        store.flush()?;
        Ok(())
    };
    write(&depot.take_summary_writes(false))?;
    depot.summary_durable();
    write(&depot.take_slab_journal_writes(true))?;
    if offline {
        write(&depot.take_ref_count_writes(true))?;
        depot.ref_counts_durable();
    }
    write(&block_map.take_dirty(SequenceNumber(u64::MAX)))?;
    if offline {
        write(&depot.take_summary_writes(true))?;
    }

    let logical_blocks_used = scanned
        .logical_blocks_used
        .unwrap_or(super_block.journal.logical_blocks_used.0);
    let block_map_data_blocks = scanned
        .block_map_data_blocks
        .unwrap_or(super_block.journal.block_map_data_blocks.0);
    let next_epoch = Epoch(epoch.0 + 1);
    let journal = RecoveryJournal::new(
        region,
        nonce,
        next_epoch,
        scanned.end,
        scanned.end,
        logical_blocks_used,
        block_map_data_blocks,
    );
    let mut recovered_super = super_block.clone();
    recovered_super.journal.head = scanned.end;
    recovered_super.journal.tail = scanned.end;
    recovered_super.journal.epoch = next_epoch.0;
    recovered_super.journal.logical_blocks_used = BlockCount(logical_blocks_used);
    recovered_super.journal.block_map_data_blocks = BlockCount(block_map_data_blocks);
    recovered_super.complete_recoveries += 1;
    Ok(Recovered {
        block_map,
        depot,
        journal,
        super_block: recovered_super,
        report: RecoveryReport {
            journal_head: scanned.head,
            journal_end: scanned.end,
            entries_replayed: scanned.entries.len() as u64,
            stale_journal_blocks: scanned.stale_blocks,
            unlanded_journal_blocks: scanned.unlanded_blocks,
        },
    })
}

/// Replays below this many entries run on the caller's thread only: a thread costs more than
/// it saves.
const PARALLEL_REPLAY_ENTRIES_MIN: usize = 4096;

/// Steps 2 and 3. They share nothing but the entries: the block map reads tree pages, the
/// depot its summary, reference counts and slab journals, and neither writes. So a long replay
/// runs them at once, the depot's on another thread. A block map error comes first, as when
/// the steps run one after the other.
fn replay(
    store: &dyn Storage,
    layout: Layout,
    nonce: Nonce,
    cache_pages: usize,
    entries: &JournalEntries,
) -> Result<(BlockMap, SlabDepot), VolumeError> {
    let replay_block_map = || {
        let mut block_map = BlockMap::new(layout, nonce, cache_pages);
        block_map.replay_entries(store, entries)?;
        Ok::<_, VolumeError>(block_map)
    };
    let open_depot = || SlabDepot::open_recovering(store, layout, nonce, entries);
    if entries.len() < PARALLEL_REPLAY_ENTRIES_MIN {
        let block_map = replay_block_map()?;
        return Ok((block_map, open_depot()?));
    }
    let (block_map, depot) = std::thread::scope(|scope| {
        let depot = scope.spawn(open_depot);
        let block_map = replay_block_map();
        let depot = depot
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic));
        (block_map, depot)
    });
    Ok((block_map?, depot?))
}

/// Scrubs, before the volume comes online, the slabs it cannot do without (VDO scrubs its
/// high-priority slabs at load): see `SlabDepot::next_to_scrub`.
pub(super) fn scrub_urgent(store: &dyn Storage, depot: &mut SlabDepot) -> Result<(), VolumeError> {
    while let Some(slab) = depot.next_to_scrub(true) {
        depot.scrub_slab(store, slab)?;
    }
    Ok(())
}
