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
//! `docs/ARCHITECTURE.md` walks through a write, a read and a commit.

mod audit;
mod commit;
mod format;
mod locks;
mod read;
mod recover;
mod stats;
mod write;

use std::collections::HashSet;
use std::sync::Arc;

use parking_lot::{Mutex, RwLock};
use uvdo_format::geometry::Geometry;
use uvdo_format::layout::Layout;
use uvdo_format::super_block::{OperatingMode, ReadOnlyReason, SuperBlock};
use uvdo_format::{BLOCK_SIZE, Block, BlockType, Pbn, SECTOR_SIZE};
use uvdo_index::DedupeIndex;
use uvdo_io::Storage;

use crate::block_map::BlockMap;
use crate::config::ResolvedPolicy;
use crate::depot::SlabDepot;
use crate::error::VolumeError;
use crate::hash::Namer;
use crate::journal::RecoveryJournal;

pub use audit::{AuditReport, CountMismatch};
pub use format::FormatSummary;
pub use read::{Extent, ExtentKind};
pub use recover::RecoveryReport;
pub use stats::{BioCounts, VolumeStats};

use locks::Locks;
use stats::Counters;

/// The metadata the `meta` lock protects.
#[derive(Debug)]
struct Meta {
    block_map: BlockMap,
    depot: SlabDepot,
    journal: RecoveryJournal,
    /// Blocks allocated whose data write has not completed: never dedupe against them.
    writing: HashSet<Pbn>,
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
/// would (the next open must recover).
#[derive(Debug)]
pub struct Volume {
    store: Arc<dyn Storage>,
    geometry: Geometry,
    layout: Layout,
    logical_blocks: u64,
    policy: RwLock<ResolvedPolicy>,
    deduplication: bool,
    namer: Namer,
    index: DedupeIndex,
    locks: Locks,
    commit: Mutex<()>,
    barrier: RwLock<()>,
    meta: Mutex<Meta>,
    mode: RwLock<ModeState>,
    super_block: Mutex<SuperBlock>,
    counters: Counters,
    last_recovery: Option<RecoveryReport>,
}

impl Volume {
    /// The volume's logical size in bytes.
    #[must_use]
    pub fn logical_bytes(&self) -> u64 {
        self.logical_blocks * BLOCK_SIZE as u64
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
        *self.policy.write() = ResolvedPolicy::resolve(policy, volatile_write_cache);
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
        let reason = ReadOnlyReason {
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
        };
        {
            let mut mode = self.mode.write();
            if mode.mode == OperatingMode::ReadOnly {
                return;
            }
            mode.mode = OperatingMode::ReadOnly;
            mode.reason = Some(reason.clone());
        }
        // Best effort: the device may be what failed.
        let _ = self.write_super_block(|sb| {
            sb.mode = OperatingMode::ReadOnly;
            sb.read_only_reason = Some(reason);
        });
    }

    /// Writes the next super block generation to the other twin slot, then flushes.
    fn write_super_block(&self, change: impl FnOnce(&mut SuperBlock)) -> Result<(), VolumeError> {
        let mut current = self.super_block.lock();
        let mut next = current.clone();
        change(&mut next);
        next.slot = current.slot.other();
        next.generation = current.generation.next();
        let mut block: Block = [0; BLOCK_SIZE];
        next.encode(&mut block);
        self.store
            .write_at(next.slot.pbn(Pbn(1)).byte_offset(), &block)?;
        self.store.flush()?;
        Counters::bump(&self.counters.bios_meta_write);
        Counters::bump(&self.counters.flushes_out);
        *current = next;
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
