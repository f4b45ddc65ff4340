//! The write path, and trim and write-zeroes, which are remaps without data.
//!
//! One block's write, under its LBN lock (docs/ARCHITECTURE.md, "The life of a write"):
//! 1. an all-zero block maps to the zero block and stores nothing;
//! 2. otherwise, under the block's name lock: ask the index for advice; if the advised block
//!    holds data with room for another reference, reserve one and compare all 4096 bytes; on a
//!    match the write shares that block; otherwise allocate a new block (marked as being
//!    written, so no one dedupes against it yet), write the data, and tell the index;
//! 3. remap: allocate any missing block map pages, append one journal entry with the new and
//!    old mapping, update the block map page in memory;
//! 4. acknowledge: at once under async, after the commit covering the entry under sync or for
//!    FUA.
//!
//! The old mapping's reference is dropped only when the entry is durable (see commit.rs).

use std::cell::RefCell;

use uvdo_format::block_map_page::TREE_HEIGHT;
use uvdo_format::recovery_journal::{EntryKind, RecoveryJournalEntry};
use uvdo_format::{BLOCK_SIZE, Block, BlockType, JournalPoint, Lbn, Mapping, Pbn};
use uvdo_io::aligned::AlignedBuf;

use super::stats::Counters;
use super::{Meta, Volume};
use crate::block_map::PageAllocation;
use crate::config::ResolvedPolicy;
use crate::depot::Share;
use crate::error::VolumeError;
use crate::journal::{UNWRITTEN_BLOCKS_MAX, remap_entry};

/// Sealed journal blocks at which an async writer that finds no commit running starts one:
/// enough to batch many entries per flush, well below the bound that makes writers wait.
const COMMIT_SOON_BLOCKS: usize = UNWRITTEN_BLOCKS_MAX / 4;
use crate::zero::is_zero_block;

thread_local! {
    /// Where a dedupe candidate is read to be compared: reused, so a verify costs no 4 KiB
    /// zeroing, and aligned, so an `O_DIRECT` store reads into it without a bounce.
    static VERIFY_BUF: RefCell<AlignedBuf> = RefCell::new(AlignedBuf::zeroed(BLOCK_SIZE));
}

/// A journal entry's point, and the sealed journal blocks waiting to be written just after it
/// was appended. Ordered by point, so the maximum of a request's blocks is its last entry.
type Appended = (JournalPoint, usize);

/// What a remap did.
enum Remapped {
    /// A journal entry was appended at this point.
    At(JournalPoint),
    /// The slot already held the new mapping: nothing changed.
    Unchanged,
}

impl Volume {
    /// Writes `data` at byte `offset`; both 512-byte aligned. With `fua` the write is durable
    /// when this returns.
    ///
    /// # Errors
    ///
    /// `InvalidArgument` for a bad range, `ReadOnly`, `NoSpace`, or a store error.
    pub fn write(&self, offset: u64, data: &[u8], fua: bool) -> Result<(), VolumeError> {
        let last = self.write_unacknowledged(offset, data, fua)?;
        self.finish_update(last, fua)
    }

    /// Writes several requests (byte offset, data, FUA) in order and acknowledges them
    /// together: where the policy or a FUA asks for durability, one commit covers them all
    /// (a group commit within the batch, as an NBD server that takes many requests at once
    /// needs). Each request gets its own result; a failed commit fails every request that
    /// was waiting for it.
    pub fn write_many(&self, writes: &[(u64, &[u8], bool)]) -> Vec<Result<(), VolumeError>> {
        let mut results = Vec::with_capacity(writes.len());
        let mut last = None;
        let mut fua = false;
        for &(offset, data, request_fua) in writes {
            let written = self.write_unacknowledged(offset, data, request_fua);
            if let Ok(point) = written {
                last = last.max(point);
                fua |= request_fua;
            }
            results.push(written.map(|_| ()));
        }
        if let Err(e) = self.finish_update(last, fua) {
            for result in results.iter_mut().filter(|r| r.is_ok()) {
                *result = Err(e.clone());
            }
        }
        results
    }

    /// A write up to its acknowledgement: every block stored and journaled in memory.
    fn write_unacknowledged(
        &self,
        offset: u64,
        data: &[u8],
        fua: bool,
    ) -> Result<Option<Appended>, VolumeError> {
        let pieces = self.pieces(offset, data.len() as u64)?;
        self.check_writable()?;
        Counters::bump(&self.counters.bios_in_write);
        if fua {
            Counters::bump(&self.counters.bios_in_fua);
        }
        let mut last = None;
        let mut consumed = 0;
        for (lbn, within, len) in pieces {
            let piece = &data[consumed..consumed + len];
            consumed += len;
            let point = if len == BLOCK_SIZE {
                let block: &Block = piece.try_into().expect("a whole block");
                let _lbn = self.locks.lbn(lbn).write();
                self.write_block_locked(lbn, block)?
            } else {
                Counters::bump(&self.counters.bios_in_partial_write);
                self.modify_block(lbn, |block| {
                    block[within..within + len].copy_from_slice(piece);
                })?
            };
            last = last.max(point);
        }
        Ok(last)
    }

    /// Unmaps the range: it reads as zeros and frees its blocks. Partial blocks are zeroed.
    ///
    /// # Errors
    ///
    /// As [`Volume::write`].
    pub fn trim(&self, offset: u64, len: u64) -> Result<(), VolumeError> {
        self.discard(offset, len, Mapping::Unmapped)
    }

    /// Zeroes the range without writing data: whole blocks map to the zero block.
    ///
    /// # Errors
    ///
    /// As [`Volume::write`].
    pub fn write_zeroes(&self, offset: u64, len: u64) -> Result<(), VolumeError> {
        self.discard(offset, len, Mapping::Zero)
    }

    /// Makes every acknowledged write durable.
    ///
    /// # Errors
    ///
    /// `ReadOnly` in read-only mode; a store error (the volume is then read-only).
    pub fn flush(&self) -> Result<(), VolumeError> {
        Counters::bump(&self.counters.bios_in_flush);
        // Read-only mode writes no metadata, so nothing acknowledged since can become durable.
        self.check_writable()?;
        self.commit_through(None)
    }

    fn discard(&self, offset: u64, len: u64, whole: Mapping) -> Result<(), VolumeError> {
        let pieces = self.pieces(offset, len)?;
        self.check_writable()?;
        Counters::bump(&self.counters.bios_in_discard);
        let mut last = None;
        for (lbn, within, len) in pieces {
            let point = if len == BLOCK_SIZE {
                let _lbn = self.locks.lbn(lbn).write();
                self.remap(lbn, whole, None)?
            } else {
                self.modify_block(lbn, |block| block[within..within + len].fill(0))?
            };
            last = last.max(point);
        }
        self.finish_update(last, false)
    }

    /// Acknowledgement: wait for durability under sync or FUA; keep the unwritten journal
    /// bounded otherwise.
    fn finish_update(&self, last: Option<Appended>, fua: bool) -> Result<(), VolumeError> {
        let Some((point, sealed)) = last else {
            return if fua {
                self.commit_through(None)
            } else {
                Ok(())
            };
        };
        if fua || *self.policy.read() == ResolvedPolicy::Sync {
            return self.commit_through(Some(point));
        }
        if sealed >= UNWRITTEN_BLOCKS_MAX {
            self.commit_through(Some(point))
        } else if sealed >= COMMIT_SOON_BLOCKS {
            self.commit_if_idle()
        } else {
            Ok(())
        }
    }

    /// Read-modify-write of part of a block, under its LBN lock.
    fn modify_block(
        &self,
        lbn: Lbn,
        change: impl FnOnce(&mut Block),
    ) -> Result<Option<Appended>, VolumeError> {
        let _lbn = self.locks.lbn(lbn).write();
        let mut block: Block = [0; BLOCK_SIZE];
        self.read_block_locked(lbn, &mut block)?;
        change(&mut block);
        self.write_block_locked(lbn, &block)
    }

    /// Writes one whole block; the caller holds the LBN's write lock.
    fn write_block_locked(&self, lbn: Lbn, block: &Block) -> Result<Option<Appended>, VolumeError> {
        let (new, check_name) = if is_zero_block(block) {
            Counters::bump(&self.counters.zero_blocks_written);
            (Mapping::Zero, None)
        } else {
            let (new, check_name) = self.store_data(block)?;
            (new, Some(check_name))
        };
        match self.remap(lbn, new, check_name) {
            Ok(Some(appended)) => Ok(Some(appended)),
            Ok(None) => {
                self.release(new);
                Ok(None)
            }
            Err(e) => {
                self.release(new);
                Err(e)
            }
        }
    }

    /// Drops the reservation a write holds on its new block when it is not journaled.
    fn release(&self, mapping: Mapping) {
        if let Some(pbn) = mapping.pbn() {
            self.meta.lock().depot.release(pbn);
        }
    }

    /// Finds or writes a block holding `block`, returning its mapping with one reference
    /// reserved for the caller, and the name bits its journal entry's data check needs.
    fn store_data(&self, block: &Block) -> Result<(Mapping, u64), VolumeError> {
        if !self
            .deduplication
            .load(std::sync::atomic::Ordering::Acquire)
        {
            let check_name = self.namer.check_name(block);
            return Ok((self.write_new(block, None)?, check_name));
        }
        let (name, check_name) = self.namer.names(block);
        let _name = self.locks.name(name).lock();
        if let Some(pbn) = self.find_duplicate(name, block) {
            return Ok((Mapping::Data(pbn), check_name));
        }
        Ok((self.write_new(block, Some(name))?, check_name))
    }

    /// Asks the index and verifies its advice byte for byte; on success one reference on the
    /// returned block is reserved for the caller.
    fn find_duplicate(&self, name: u128, block: &Block) -> Option<Pbn> {
        let candidate = self.index.lookup(name)?;
        let share = {
            let mut meta = self.meta.lock();
            if meta.writing.contains(&candidate) {
                Share::NotData
            } else {
                meta.depot.try_share(candidate)
            }
        };
        match share {
            Share::Shared => {}
            Share::AtLimit => {
                Counters::bump(&self.counters.dedupe_advice_at_limit);
                return None;
            }
            Share::NotData => {
                Counters::bump(&self.counters.invalid_advice_pbn);
                self.index.forget(name, candidate);
                return None;
            }
        }
        // No lock is held here but the LBN's and the name's; the reservation keeps the
        // candidate from being freed and reused while it is read.
        let read = VERIFY_BUF.with_borrow_mut(|stored| {
            self.read_data(candidate, stored)
                .map(|()| stored[..] == block[..])
        });
        match read {
            Ok(true) => {
                Counters::bump(&self.counters.dedupe_advice_valid);
                Some(candidate)
            }
            Ok(false) => {
                Counters::bump(&self.counters.dedupe_advice_stale);
                self.index.forget(name, candidate);
                self.meta.lock().depot.release(candidate);
                None
            }
            Err(_) => {
                // SPEC section 5: a failed verify read stores the write as a new block.
                Counters::bump(&self.counters.verify_read_errors);
                self.meta.lock().depot.release(candidate);
                None
            }
        }
    }

    /// Allocates a block, writes the data there, and records it in the index.
    fn write_new(&self, block: &Block, name: Option<u128>) -> Result<Mapping, VolumeError> {
        let pbn = loop {
            let allocated = {
                let mut meta = self.meta.lock();
                let allocated = meta.depot.allocate_data();
                if let Ok(pbn) = allocated {
                    meta.writing.insert(pbn);
                }
                allocated
            };
            match allocated {
                Ok(pbn) => break pbn,
                // Recovering: room may be in a slab not yet scrubbed; scrub one and retry.
                Err(VolumeError::NoSpace { .. }) if self.scrub_now(false)? => {}
                // Blocks freed by remaps not yet committed come free at the commit.
                Err(VolumeError::NoSpace { .. }) if self.commit_to_free()? => {}
                Err(e) => {
                    if matches!(e, VolumeError::NoSpace { .. }) {
                        Counters::bump(&self.counters.no_space_errors);
                    }
                    return Err(e);
                }
            }
        };
        let written = self.staging.stage(&*self.store, pbn, block);
        Counters::bump(&self.counters.bios_out_write);
        {
            let mut meta = self.meta.lock();
            meta.writing.remove(&pbn);
            if written.is_err() {
                meta.depot.release(pbn);
            }
        }
        if let Err(e) = written {
            // SPEC section 5: a failed data write puts the volume in read-only mode.
            let e = VolumeError::from(e);
            self.enter_read_only(&e, None, pbn);
            return Err(e);
        }
        if let Some(name) = name {
            self.index.insert(name, pbn);
        }
        Ok(Mapping::Data(pbn))
    }

    /// Commits when appended entries wait for a commit, which applies their deferred
    /// decrements and so frees the blocks they unmapped; returns whether it committed (and
    /// an allocation is worth retrying).
    fn commit_to_free(&self) -> Result<bool, VolumeError> {
        if !self.meta.lock().journal.has_uncommitted() {
            return Ok(false);
        }
        self.commit_through(None)?;
        Ok(true)
    }

    /// Journals `lbn -> new` and updates the block map; checkpoints when the journal is full
    /// or the block map cache holds too many dirty pages.
    ///
    /// A journaled remap comes back with its point and the number of sealed journal blocks
    /// seen under the same hold of `meta` (for [`Volume::finish_update`], which would
    /// otherwise take the lock again); `None` when nothing changed.
    fn remap(
        &self,
        lbn: Lbn,
        new: Mapping,
        check_name: Option<u64>,
    ) -> Result<Option<Appended>, VolumeError> {
        let entries_needed = 1 + usize::from(TREE_HEIGHT);
        loop {
            let (outcome, pressure, sealed) = {
                let _barrier = self.barrier.read();
                let mut meta = self.meta.lock();
                if !meta.journal.has_space(entries_needed) {
                    (None, false, 0)
                } else {
                    let outcome = self.remap_in(&mut meta, lbn, new, check_name);
                    let pressure =
                        meta.block_map.over_budget() || meta.depot.needs_ref_count_writes();
                    (Some(outcome), pressure, meta.journal.sealed_blocks())
                }
            };
            match outcome {
                // Recovering: a tree page may fit in a slab not yet scrubbed.
                Some(Err(VolumeError::NoSpace { .. })) if self.scrub_now(false)? => {}
                Some(outcome) => {
                    // A damaged block map page on the way, or a broken invariant: read-only.
                    let outcome = self.on_damage(outcome, BlockType::BlockMapPage)?;
                    if pressure {
                        self.checkpoint(false)?;
                    }
                    return Ok(match outcome {
                        Remapped::At(point) => Some((point, sealed)),
                        Remapped::Unchanged => None,
                    });
                }
                None => {
                    Counters::bump(&self.counters.journal_disk_full);
                    self.checkpoint(false)?;
                }
            }
        }
    }

    fn remap_in(
        &self,
        meta: &mut Meta,
        lbn: Lbn,
        new: Mapping,
        check_name: Option<u64>,
    ) -> Result<Remapped, VolumeError> {
        let store = &*self.store;
        let Meta {
            block_map,
            depot,
            journal,
            ..
        } = meta;
        if new == Mapping::Unmapped && block_map.lookup(store, lbn)? == Mapping::Unmapped {
            return Ok(Remapped::Unchanged);
        }
        let leaf = block_map.prepare(store, lbn, &mut |allocation: PageAllocation| {
            let pbn = depot.allocate_tree_pair()?;
            let point = journal.append(
                RecoveryJournalEntry {
                    kind: EntryKind::PageAllocation,
                    slot: allocation.slot,
                    page: allocation.parent,
                    new: Mapping::Data(pbn),
                    old: Mapping::Unmapped,
                    lbn: allocation.lbn,
                },
                None,
            );
            Ok((pbn, point))
        })?;
        if leaf.old == new {
            return Ok(Remapped::Unchanged);
        }
        let entry = remap_entry(lbn, leaf.page, leaf.slot, new, leaf.old);
        let point = journal.append(entry, check_name);
        let old = block_map.set(lbn, new, point)?;
        if old != leaf.old {
            // `remap` puts the volume in read-only mode, charged to the leaf page.
            return Err(VolumeError::invariant(
                Some(lbn),
                Some(leaf.page),
                format!(
                    "slot {} changed between prepare ({:?}) and set ({old:?})",
                    leaf.slot, leaf.old
                ),
            ));
        }
        Ok(Remapped::At(point))
    }
}
