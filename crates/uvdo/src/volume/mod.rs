//! The volume: the engine's public face.
//!
//! Locks, in the only order they are taken (no thread takes one while holding a later one):
//! 1. an LBN stripe (`Locks::lbn`), held by one block's write or read;
//! 2. a name stripe (`Locks::name`), held from index lookup to index insert;
//! 3. `commit`: one group committer or checkpointer at a time;
//! 4. `barrier`: read by every remap, written by a checkpoint (which needs a still journal);
//! 5. `meta`: the block map, slab depot and recovery journal, held for in-memory work and
//!    page reads, never across a flush.
//!
//! Administrative changes (`grow.rs`: the grows and the settings kept in the super block) are
//! serialized by `admin`, taken before any of these.
//!
//! Scrubbing in recovering mode (`scrubber.rs`) takes its own `running` lock after any of
//! these a caller holds, and then `meta`.
//!
//! `docs/ARCHITECTURE.md` walks through a write, a read and a commit.

mod audit;
mod commit;
mod format;
mod grow;
mod locks;
mod read;
mod rebuild;
mod recover;
mod scrubber;
mod stats;
mod write;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;

use parking_lot::{Mutex, RwLock};
use uvdo_format::geometry::Geometry;
use uvdo_format::layout::Layout;
use uvdo_format::recovery_journal::{Epoch, JournalRegion};
use uvdo_format::super_block::{OperatingMode, ReadOnlyReason, SuperBlock, VolumeState};
use uvdo_format::{BLOCK_SIZE, Block, BlockType, Pbn, SECTOR_SIZE};
use uvdo_index::DedupeIndex;
use uvdo_io::Storage;

use crate::block_map::BlockMap;
use crate::config::ResolvedPolicy;
use crate::depot::SlabDepot;
use crate::error::VolumeError;
use crate::hash::Namer;
use crate::int_hash::IntSet;
use crate::journal::entries::{JournalEntries, ReplayEntries};
use crate::journal::{RecoveryJournal, scan};
use crate::staging::Staging;

pub use audit::{AuditReport, CountMismatch};
pub use format::FormatSummary;
pub use read::{Extent, ExtentKind};
pub use rebuild::{DroppedMappings, LostSubtree, RebuildPhase, RebuildProgress, RebuildReport};
pub use recover::RecoveryReport;
pub use stats::{BioCounts, VolumeStats};

use locks::Locks;
use scrubber::Scrubber;
use stats::Counters;

/// The metadata the `meta` lock protects.
#[derive(Debug)]
struct Meta {
    block_map: BlockMap,
    depot: SlabDepot,
    journal: RecoveryJournal,
    /// Blocks allocated whose data write has not completed: never dedupe against them.
    writing: IntSet<Pbn>,
}

/// The operating mode and, in read-only mode, why.
#[derive(Clone, Debug)]
struct ModeState {
    mode: OperatingMode,
    reason: Option<ReadOnlyReason>,
}

/// An open uvdo volume. `Send + Sync`: share it between threads by reference or `Arc`.
///
/// Close it with [`Volume::close`]; dropping it without closing leaves the volume as a crash
/// would (the next open must recover). After an unclean shutdown it may open in recovering
/// mode: see [`Volume::wait_recovered`].
#[derive(Debug)]
pub struct Volume {
    store: Arc<dyn Storage>,
    geometry: Geometry,
    /// Grows online (`grow_logical`): a request sees the old or the new size.
    logical_blocks: AtomicU64,
    policy: RwLock<ResolvedPolicy>,
    /// Switched online (`set_deduplication`).
    deduplication: AtomicBool,
    /// Serializes the grows and setters (`grow.rs`); taken before every other lock.
    admin: Mutex<()>,
    namer: Namer,
    index: DedupeIndex,
    locks: Locks,
    commit: Mutex<()>,
    barrier: RwLock<()>,
    meta: Arc<Mutex<Meta>>,
    mode: Arc<RwLock<ModeState>>,
    super_block: Arc<Mutex<SuperBlock>>,
    counters: Counters,
    last_recovery: Option<RecoveryReport>,
    /// Rebuilds unrecovered slabs in recovering mode.
    scrubber: Arc<Scrubber>,
    scrub_thread: Mutex<Option<JoinHandle<()>>>,
    /// New data blocks not yet written to the store (see `staging.rs`).
    staging: Staging,
}

impl Volume {
    /// The volume's logical size in bytes.
    #[must_use]
    pub fn logical_bytes(&self) -> u64 {
        self.logical_blocks.load(Ordering::Acquire) * BLOCK_SIZE as u64
    }

    /// Where every region and slab is, as of now (growing physical appends slabs).
    fn layout(&self) -> Layout {
        self.meta.lock().depot.layout()
    }

    /// The volume's UUID, from the geometry block.
    #[must_use]
    pub fn uuid(&self) -> [u8; 16] {
        self.geometry.uuid
    }

    /// What crash recovery did when this volume was opened, if it was not clean.
    #[must_use]
    pub fn last_recovery(&self) -> Option<RecoveryReport> {
        self.last_recovery
    }

    /// The write policy in force.
    #[must_use]
    pub fn write_policy(&self) -> ResolvedPolicy {
        *self.policy.read()
    }

    /// Changes the write policy of the open volume; a flush first makes everything written
    /// under the old policy durable.
    ///
    /// # Errors
    ///
    /// A failed flush or super block write.
    pub fn set_write_policy(
        &self,
        policy: uvdo_format::super_block::WritePolicy,
        volatile_write_cache: Option<bool>,
    ) -> Result<(), VolumeError> {
        self.flush()?;
        let cache = volatile_write_cache.or_else(|| self.store.volatile_write_cache());
        *self.policy.write() = ResolvedPolicy::resolve(policy, cache);
        self.write_super_block(|sb| sb.write_policy = policy)
    }

    /// The operating mode.
    #[must_use]
    pub fn operating_mode(&self) -> OperatingMode {
        self.mode.read().mode
    }

    fn check_writable(&self) -> Result<(), VolumeError> {
        let mode = self.mode.read();
        match mode.mode {
            OperatingMode::ReadOnly => {
                Counters::bump(&self.counters.read_only_errors);
                Err(VolumeError::ReadOnly {
                    reason: describe(mode.reason.as_ref()),
                })
            }
            OperatingMode::Normal | OperatingMode::Recovering => Ok(()),
        }
    }

    /// The one way into read-only mode (STYLE rule 6): records why, persists it in the super
    /// block if the store still takes writes, and makes every later write fail with it.
    fn enter_read_only(&self, cause: &VolumeError, structure: Option<BlockType>, at: Pbn) {
        let entered = enter_read_only_in(
            &*self.store,
            &self.mode,
            &self.super_block,
            read_only_reason(cause, structure, at),
        );
        if entered == Some(true) {
            Counters::bump(&self.counters.bios_meta_write);
            Counters::bump(&self.counters.flushes_out);
        }
    }

    /// Enters read-only mode when `result` says metadata is damaged: a block that failed its
    /// checks (recorded as its own structure and location) or a broken invariant (recorded as
    /// `structure` at the PBN it names). Returns `result` unchanged, so the request fails with
    /// the error itself (EIO), never with wrong data.
    fn on_damage<T>(
        &self,
        result: Result<T, VolumeError>,
        structure: BlockType,
    ) -> Result<T, VolumeError> {
        if let Err(e) = &result
            && let Some((structure, at)) = damage_site(e, Some(structure))
        {
            self.enter_read_only(e, structure, at);
        }
        result
    }

    /// Writes the next super block generation to the other twin slot, then flushes.
    fn write_super_block(&self, change: impl FnOnce(&mut SuperBlock)) -> Result<(), VolumeError> {
        let mut current = self.super_block.lock();
        let mut next = current.clone();
        change(&mut next);
        write_super_block_in(&*self.store, &mut current, next)?;
        Counters::bump(&self.counters.bios_meta_write);
        Counters::bump(&self.counters.flushes_out);
        Ok(())
    }

    /// Splits a byte range into per-block pieces: (LBN, offset within the block, length).
    fn pieces(
        &self,
        offset: u64,
        len: u64,
    ) -> Result<impl Iterator<Item = (uvdo_format::Lbn, usize, usize)>, VolumeError> {
        let sector = SECTOR_SIZE as u64;
        if !offset.is_multiple_of(sector) || !len.is_multiple_of(sector) {
            return Err(VolumeError::invalid(format!(
                "range {offset}+{len} is not aligned to 512 bytes"
            )));
        }
        let end = offset
            .checked_add(len)
            .filter(|&e| e <= self.logical_bytes());
        let Some(end) = end else {
            return Err(VolumeError::invalid(format!(
                "range {offset}+{len} is beyond the volume's {} bytes",
                self.logical_bytes()
            )));
        };
        let block = BLOCK_SIZE as u64;
        let mut at = offset;
        Ok(std::iter::from_fn(move || {
            if at >= end {
                return None;
            }
            let within = at % block;
            let take = (block - within).min(end - at);
            let piece = (
                uvdo_format::Lbn(at / block),
                usize::try_from(within).expect("below 4096"),
                usize::try_from(take).expect("at most 4096"),
            );
            at += take;
            Some(piece)
        }))
    }
}

/// Read-only mode itself, on the parts of a volume, so that `open` can enter it before the
/// volume exists; everything else goes through [`Volume::enter_read_only`]. Records `reason`
/// unless the volume is read-only already, then persists it (best effort: the device may be
/// what failed). Returns `None` when it was read-only already, else whether it persisted.
fn enter_read_only_in(
    store: &dyn Storage,
    mode: &RwLock<ModeState>,
    super_block: &Mutex<SuperBlock>,
    reason: ReadOnlyReason,
) -> Option<bool> {
    {
        let mut mode = mode.write();
        if mode.mode == OperatingMode::ReadOnly {
            return None;
        }
        mode.mode = OperatingMode::ReadOnly;
        mode.reason = Some(reason.clone());
    }
    let mut current = super_block.lock();
    let mut next = current.clone();
    next.mode = OperatingMode::ReadOnly;
    next.read_only_reason = Some(reason);
    Some(write_super_block_in(store, &mut current, next).is_ok())
}

/// The block map, slab depot and journal of a volume opened read-only, loaded without writing
/// anything: a read-only volume is never recovered into normal mode (only a force rebuild
/// leaves read-only mode), and its metadata may be what is damaged.
///
/// After an unclean shutdown the durable journal entries are replayed into the block map in
/// memory only (dirty pages are never evicted, and a read-only volume never writes them), so
/// reads see every durable write. An entry whose replay fails is skipped: it fails on a page
/// that fails its checks, and reads through that page fail the same way (EIO).
///
/// # Errors
///
/// `Corrupt` when the slab depot (summary, reference counts, slab journals) cannot be loaded:
/// statistics need it. A store error.
fn load_read_only(
    store: &dyn Storage,
    geometry: &Geometry,
    layout: Layout,
    super_block: &SuperBlock,
    cache_pages: usize,
) -> Result<(BlockMap, SlabDepot, RecoveryJournal), VolumeError> {
    let nonce = geometry.nonce;
    let region = JournalRegion {
        start: layout.journal_start(),
        blocks: layout.params().recovery_journal_blocks.0,
    };
    let state = super_block.journal;
    let epoch = Epoch(state.epoch);
    let mut block_map = BlockMap::new(layout, nonce, cache_pages);
    let (depot, end, used, tree) = if super_block.state == VolumeState::Clean {
        // Closed cleanly while recovering: slabs still dirty are scrubbed from their journals.
        let depot = SlabDepot::open_dirty(store, layout, nonce, &JournalEntries::default())?;
        let counts = (state.logical_blocks_used.0, state.block_map_data_blocks.0);
        (depot, state.tail, counts.0, counts.1)
    } else {
        let namer = Namer::new(geometry.hash_secret, false);
        let scanned = scan::scan(store, region, nonce, epoch, state.tail, &namer)?;
        for (point, entry) in scanned.entries.entries() {
            match block_map.replay(store, point, &entry) {
                Ok(()) | Err(VolumeError::Corrupt(_) | VolumeError::Invariant { .. }) => {}
                Err(e) => return Err(e),
            }
        }
        let depot = SlabDepot::open_dirty(store, layout, nonce, &scanned.entries)?;
        let used = scanned
            .logical_blocks_used
            .unwrap_or(state.logical_blocks_used.0);
        let tree = scanned
            .block_map_data_blocks
            .unwrap_or(state.block_map_data_blocks.0);
        (depot, scanned.end, used, tree)
    };
    let journal = RecoveryJournal::new(region, nonce, epoch, end, end, used, tree);
    Ok((block_map, depot, journal))
}

/// Writes `next` as the generation after `current` to the other twin slot, flushes, and makes
/// it current.
fn write_super_block_in(
    store: &dyn Storage,
    current: &mut SuperBlock,
    mut next: SuperBlock,
) -> Result<(), VolumeError> {
    next.slot = current.slot.other();
    next.generation = current.generation.next();
    let mut block: Block = [0; BLOCK_SIZE];
    next.encode(&mut block);
    store.write_at(next.slot.pbn(Pbn(1)).byte_offset(), &block)?;
    store.flush()?;
    *current = next;
    Ok(())
}

fn read_only_reason(cause: &VolumeError, structure: Option<BlockType>, at: Pbn) -> ReadOnlyReason {
    ReadOnlyReason {
        error_code: read_only_code(cause),
        errno: u32::try_from(cause.errno()).unwrap_or(5),
        time_s: unix_time_s(),
        structure,
        location: at,
        message: uvdo_format::super_block::truncated(
            &cause.to_string(),
            uvdo_format::super_block::MESSAGE_BYTES_MAX,
        )
        .to_owned(),
    }
}

/// Where damaged metadata was found, when `e` says it was: a block that failed its checks
/// names its own structure and location; a broken invariant is charged to `structure`.
fn damage_site(e: &VolumeError, structure: Option<BlockType>) -> Option<(Option<BlockType>, Pbn)> {
    match e {
        VolumeError::Corrupt(f) => Some((Some(f.structure), f.location)),
        VolumeError::Invariant { pbn, .. } => Some((structure, pbn.unwrap_or(Pbn(0)))),
        _ => None,
    }
}

/// When opening a volume in normal mode failed on damaged metadata (`e`), enters read-only
/// mode on its super block, so that it opens read-only. Returns false, changing nothing, when
/// `e` is not damage, the super block cannot be read (both slots damaged) or already says
/// read-only (the damage is where even a read-only open needs to read), or the super block
/// write fails.
fn enter_read_only_at_open(store: &dyn Storage, e: &VolumeError) -> bool {
    let Some((structure, at)) = damage_site(e, None) else {
        return false;
    };
    let Ok(super_block) = read_super_block(store) else {
        return false;
    };
    let mode = RwLock::new(ModeState {
        mode: super_block.mode,
        reason: super_block.read_only_reason.clone(),
    });
    let super_block = Mutex::new(super_block);
    let reason = read_only_reason(e, structure, at);
    enter_read_only_in(store, &mode, &super_block, reason) == Some(true)
}

/// The current super block, as `open` reads it.
fn read_super_block(store: &dyn Storage) -> Result<SuperBlock, VolumeError> {
    let mut block: Block = [0; BLOCK_SIZE];
    store.read_at(0, &mut block)?;
    let nonce = Geometry::decode(&block)
        .map_err(VolumeError::NotAVolume)?
        .nonce;
    let mut twin_b: Block = [0; BLOCK_SIZE];
    store.read_at(Pbn(1).byte_offset(), &mut block)?;
    store.read_at(Pbn(2).byte_offset(), &mut twin_b)?;
    Ok(SuperBlock::read_twins(&block, &twin_b, nonce)?.value)
}

fn describe(reason: Option<&ReadOnlyReason>) -> String {
    reason.map_or_else(
        || "no reason recorded".to_owned(),
        |r| match r.structure {
            Some(s) => format!("{} ({s} at PBN {})", r.message, r.location),
            None => r.message.clone(),
        },
    )
}

fn read_only_code(cause: &VolumeError) -> u32 {
    match cause {
        VolumeError::Io(_) => 1,
        VolumeError::Corrupt(_) => 2,
        VolumeError::Invariant { .. } => 3,
        _ => 4,
    }
}

fn unix_time_s() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}
