//! Online administration: growing the logical and the physical size, and the settings kept
//! in the super block (deduplication, compression, the owner record). Each is durable (super
//! block write and flush) before it returns, and serialized with the others by `admin`.
//!
//! # Growing the logical size
//!
//! The block map tree already addresses every 40-bit LBN, so the logical size is the super
//! block's `logical_blocks` and the in-memory bound requests are checked against. The super
//! block is written and flushed first, and only then is the bound raised: no write beyond the
//! old end can be journaled before a super block naming the new size is durable. A crash
//! before the super block write completes leaves the old size (a torn write hits only the
//! older twin slot, and the newer valid copy, the old size, wins); after, the new size.
//!
//! # Growing the physical size
//!
//! The slab depot is the last region, so a larger store only appends slabs (`Layout::compute`
//! with the new size keeps every region start). Under `commit` (no commit or checkpoint runs,
//! so no slab journal, reference count or summary block is handed out meanwhile):
//!
//! 1. write any pending dirty marks, then flush: every slab journal block handed out so far is
//!    durable, so the old slabs' summary entries the grow rewrites are true;
//! 2. write the summary blocks covering the new slabs (each new slab empty, clean, no
//!    reference counts on disk, journal tail 1; the last old block when it was partly used),
//!    each to its twin slot not holding the newest copy; flush;
//! 3. write the super block with the new physical size and slab count; flush;
//! 4. only now add the slabs to the depot (and the block map's idea of where tree pages may
//!    be): nothing is allocated in a new slab, so no journal entry names one, before step 3
//!    is durable.
//!
//! A crash before step 3 is durable leaves the old super block: the volume opens at its old
//! size. Summary blocks past the old slab count are not read (the layout of the old size does
//! not reach them), and the last old block, if step 2 reached it, describes extra slabs that
//! `Summary::read` ignores (it accepts more entries than the layout puts in a block, never
//! fewer); the old slabs' entries in it are true (step 1). A torn summary block is the older
//! twin, whose newer copy wins. After step 3, the super block names the new slabs and every
//! summary entry for them is durable (step 2 was flushed before). The extra space of a store
//! larger than the super block's physical size is unused until a grow.

use std::sync::atomic::Ordering;

use uvdo_format::layout::{LOGICAL_BLOCKS_MAX, Layout};
use uvdo_format::super_block::{HOST_BYTES_MAX, OperatingMode, Owner};
use uvdo_format::{BLOCK_SIZE, BlockCount, BlockType};

use super::Volume;
use crate::error::VolumeError;

impl Volume {
    /// Grows the logical size to `new_logical_blocks`, online. Requests racing with the grow
    /// see the old or the new size; the new one is durable before this returns.
    ///
    /// # Errors
    ///
    /// `InvalidArgument` for a size not above the current one ("can't shrink", with the
    /// current size) or above 2^40 blocks; `ReadOnly`; a store error writing the super block
    /// (the volume keeps its old size).
    pub fn grow_logical(&self, new_logical_blocks: BlockCount) -> Result<(), VolumeError> {
        let _admin = self.admin.lock();
        self.check_writable()?;
        let current = self.logical_blocks.load(Ordering::Acquire);
        let new = new_logical_blocks.0;
        if new < current {
            return Err(VolumeError::invalid(format!(
                "can't shrink a volume (old size {current} blocks, asked for {new})"
            )));
        }
        if new == current {
            return Err(VolumeError::invalid(format!(
                "can't grow a volume by less than one block (old size {current} blocks)"
            )));
        }
        if new > LOGICAL_BLOCKS_MAX {
            return Err(VolumeError::invalid(format!(
                "logical size {new} blocks is over the limit of {LOGICAL_BLOCKS_MAX}"
            )));
        }
        self.write_super_block(|sb| sb.logical_blocks = new_logical_blocks)?;
        self.logical_blocks.store(new, Ordering::Release);
        Ok(())
    }

    /// Grows the physical size, online: to the store's current size (after it was enlarged),
    /// or, with `Some(blocks)`, to that size, asking the store to grow first when it is
    /// smaller. New slabs are appended, empty; the module doc gives the order of writes that
    /// makes a crash at any point leave either the old volume or the grown one.
    ///
    /// # Errors
    ///
    /// `InvalidArgument` for a size not above the current one or adding no whole slab, and
    /// while the volume is recovering (retry once its reference counts are rebuilt);
    /// `InvalidConfig` past 8192 slabs or 2^36 blocks; `Io` when the store cannot grow
    /// (`Unsupported` for a store that cannot be resized) or a write fails (the volume then
    /// keeps its old size; a failed flush makes it read-only); `ReadOnly`.
    pub fn grow_physical(
        &self,
        new_physical_blocks: Option<BlockCount>,
    ) -> Result<(), VolumeError> {
        let _admin = self.admin.lock();
        self.check_writable()?;
        if self.operating_mode() == OperatingMode::Recovering {
            return Err(VolumeError::invalid(
                "the volume is recovering: retry the grow once its reference counts are rebuilt",
            ));
        }
        let old = self.layout();
        let current = old.physical_blocks().0;
        let store_blocks = self.store.size_bytes() / BLOCK_SIZE as u64;
        let new = new_physical_blocks.map_or(store_blocks, |b| b.0);
        if new < current {
            return Err(VolumeError::invalid(format!(
                "can't shrink a volume (old physical size {current} blocks, asked for {new})"
            )));
        }
        let layout = Layout::compute(old.params(), BlockCount(new))?;
        if layout.slab_count() == old.slab_count() {
            let slab = old.params().slab_blocks.0;
            let unused = current - old.depot_start().0 - u64::from(old.slab_count()) * slab;
            return Err(VolumeError::invalid(format!(
                "growing from {current} to {new} physical blocks adds no slab: a slab is {slab} \
                 blocks and {unused} blocks past the last one were already unused"
            )));
        }
        if new > store_blocks {
            self.store.resize(BlockCount(new).to_bytes())?;
        }

        let _commit = self.commit.lock();
        self.check_writable()?;
        self.write_dirty_marks_locked()?;
        self.flush_store()?;
        let (growth, summary) = self.meta.lock().depot.plan_growth(&*self.store, layout)?;
        self.write_metadata(&summary, BlockType::SlabSummary)?;
        self.flush_store()?;
        self.write_super_block(|sb| {
            sb.physical_blocks = layout.physical_blocks();
            sb.slab_count = layout.slab_count();
        })?;
        let mut meta = self.meta.lock();
        meta.depot.grow(growth);
        meta.block_map.grow(layout);
        Ok(())
    }

    /// Whether new writes are deduplicated.
    #[must_use]
    pub fn deduplication_enabled(&self) -> bool {
        self.deduplication.load(Ordering::Acquire)
    }

    /// Turns deduplication on or off, durably and at once. When off, new writes are neither
    /// named nor looked up in the index, and always store a new copy (all-zero blocks are
    /// still not stored); blocks shared already stay shared.
    ///
    /// # Errors
    ///
    /// `ReadOnly`, or a store error writing the super block (nothing changes).
    pub fn set_deduplication(&self, enabled: bool) -> Result<(), VolumeError> {
        let _admin = self.admin.lock();
        self.check_writable()?;
        self.write_super_block(|sb| sb.deduplication_enabled = enabled)?;
        self.deduplication.store(enabled, Ordering::Release);
        Ok(())
    }

    /// Whether the compression setting is on. Compression is not implemented: the setting is
    /// only recorded, and no block is compressed either way.
    #[must_use]
    pub fn compression_enabled(&self) -> bool {
        self.super_block.lock().compression_enabled
    }

    /// Records the compression setting, durably. Compression is not implemented, so this
    /// changes nothing else: it is kept for when a packer exists (and for `vdo` compatibility).
    ///
    /// # Errors
    ///
    /// `ReadOnly`, or a store error writing the super block.
    pub fn set_compression(&self, enabled: bool) -> Result<(), VolumeError> {
        let _admin = self.admin.lock();
        self.check_writable()?;
        self.write_super_block(|sb| sb.compression_enabled = enabled)
    }

    /// The process recorded as holding the volume, if any.
    #[must_use]
    pub fn owner(&self) -> Option<Owner> {
        self.super_block.lock().owner.clone()
    }

    /// Records (or with `None` clears) the process holding the volume, durably. The record is
    /// informational: the engine does not enforce exclusivity with it.
    ///
    /// # Errors
    ///
    /// `InvalidArgument` for a host name over 64 bytes; `ReadOnly` (a read-only volume writes
    /// nothing); a store error writing the super block.
    pub fn set_owner(&self, owner: Option<Owner>) -> Result<(), VolumeError> {
        if let Some(o) = &owner
            && o.host.len() > HOST_BYTES_MAX
        {
            return Err(VolumeError::invalid(format!(
                "owner host name of {} bytes is over the limit of {HOST_BYTES_MAX}",
                o.host.len()
            )));
        }
        let _admin = self.admin.lock();
        self.check_writable()?;
        self.write_super_block(|sb| sb.owner = owner)
    }
}
