//! Group commit and checkpoints: the only places metadata reaches the store.
//!
//! A commit (one at a time, under `commit`): take every journal entry appended so far and
//! make the blocks holding them durable after the data those entries point at, in one of two
//! ways:
//! - a single-flush batch (at most `SINGLE_FLUSH_BLOCKS_MAX` blocks, journal/mod.rs): write
//!   the staged data and the journal blocks, then one flush makes both durable. A crash in
//!   that flush may leave a block durable and some of its data not; the block's data check
//!   tells recovery so (journal/scan.rs), which then ends the log before it. This is what a
//!   write + flush costs: one device flush, as a raw `pwrite` + `fdatasync` does;
//! - a larger batch: flush the store, so the data is durable first, then write the journal
//!   blocks as one FUA write (`write_at_fua`, `RWF_DSYNC` on files: it makes only them
//!   durable, not every write other threads issued since the flush; a batch that wraps the
//!   circular log is written block by block and flushed). Recovery never reads data back for
//!   these blocks.
//!
//! Async-unsafe writes every batch the first way without data checks: its one flush makes
//! the data durable, and after a crash in it a block may map to data that never landed.
//! Then, in journal order, the entries go to the slab depot, which appends slab journal
//! entries and applies the deferred decrements. Full slab journal blocks go out after the
//! journal they follow. Writers that need durability wait on `commit`; whoever gets it next
//! finds their point already durable or commits everything that queued meanwhile: that is the
//! group commit.
//!
//! Before the first slab journal or reference count write of a slab since it was last marked
//! clean, the summary marking it dirty is written and flushed (`write_dirty_marks_locked`): one
//! extra flush, only in a commit that dirtied a new slab. Recovery trusts a clean summary entry
//! and does not scan that slab.
//!
//! A checkpoint (under `commit` and the write side of `barrier`, so no remap runs): commit,
//! then write every dirty block map page and every slab journal tail, flush, write reference
//! counts where slab journals need room (all of them at close), flush, write the slab
//! summary, flush, and only then move the journal head: everything the old journal blocks
//! protected is now on disk. In recovering mode, unrecovered slabs' counts are not written
//! (their journals are, and keep their heads); one whose journal comes under pressure is
//! scrubbed first.

use uvdo_format::recovery_journal::ENTRIES_PER_BLOCK;
use uvdo_format::{BLOCK_SIZE, Block, BlockType, JournalPoint, Pbn, SequenceNumber};
use uvdo_io::aligned::AlignedBuf;

use super::Volume;
use super::stats::Counters;
use crate::config::ResolvedPolicy;
use crate::error::VolumeError;

impl Volume {
    /// Makes everything appended up to `point` durable (everything, with `None`), and the
    /// store's cache flushed.
    pub(crate) fn commit_through(&self, point: Option<JournalPoint>) -> Result<(), VolumeError> {
        let _commit = self.commit.lock();
        if let Some(point) = point
            && self.meta.lock().journal.is_durable(point)
        {
            return Ok(());
        }
        if !self.commit_locked()? {
            self.flush_store()?;
        }
        Ok(())
    }

    /// Commits if no one else is committing; used by writers to keep the unwritten journal
    /// bounded without waiting.
    pub(crate) fn commit_if_idle(&self) -> Result<(), VolumeError> {
        if let Some(_commit) = self.commit.try_lock() {
            self.commit_locked()?;
        }
        Ok(())
    }

    /// One commit. The caller holds `commit`. Returns false when there was nothing to commit.
    pub(super) fn commit_locked(&self) -> Result<bool, VolumeError> {
        // Read-only mode writes no metadata: the writers still waiting fail with its reason.
        self.check_writable()?;
        let unsafe_policy = *self.policy.read() == ResolvedPolicy::AsyncUnsafe;
        let Some(batch) = self.meta.lock().journal.take_commit_batch(!unsafe_policy) else {
            return Ok(false);
        };
        if unsafe_policy || batch.single_flush {
            // One flush after the journal blocks makes them and the data durable together.
            self.write_journal(&batch.blocks, false)?;
            self.flush_store()?;
        } else {
            self.flush_store()?;
            self.write_journal(&batch.blocks, true)?;
        }
        Counters::add(&self.counters.bios_journal_write, batch.blocks.len() as u64);
        self.meta.lock().journal.mark_durable(&batch);
        // The slab journals are sized for one recovery journal block's entries between two
        // looks at their pressure (slab_journal.rs), and a batch holds up to 256 blocks: look
        // after every block's worth, and write reference counts (which frees slab journal
        // blocks) before going on when a slab journal is close to full.
        for chunk in batch.entries.chunks(ENTRIES_PER_BLOCK) {
            let pressure = {
                let mut meta = self.meta.lock();
                for (point, entry) in chunk {
                    if let Err(e) = meta.depot.record(*point, entry) {
                        drop(meta);
                        self.enter_read_only(&e, Some(BlockType::SlabJournal), entry.page);
                        return Err(e);
                    }
                }
                meta.depot.needs_ref_count_writes()
            };
            if pressure {
                self.write_ref_counts_locked(false)?;
            }
        }
        self.write_dirty_marks_locked()?;
        let (slab_journal, pressure) = {
            let mut meta = self.meta.lock();
            (
                meta.depot.take_slab_journal_writes(false),
                meta.depot.needs_ref_count_writes(),
            )
        };
        self.write_metadata(&slab_journal, BlockType::SlabJournal)?;
        if pressure {
            self.write_ref_counts_locked(false)?;
        }
        Ok(true)
    }

    /// Writes and flushes the summary when a slab changed since it was last marked clean and
    /// no summary says so yet: the depot holds back that slab's journal and reference count
    /// blocks until then. The caller holds `commit`.
    pub(super) fn write_dirty_marks_locked(&self) -> Result<(), VolumeError> {
        let summary = {
            let mut meta = self.meta.lock();
            if !meta.depot.needs_dirty_marks() {
                return Ok(());
            }
            meta.depot.take_summary_writes(false)
        };
        self.write_metadata(&summary, BlockType::SlabSummary)?;
        self.flush_store()?;
        self.meta.lock().depot.summary_durable();
        Ok(())
    }

    /// Writes reference counts (of slabs whose journals need room, or all dirty ones), after
    /// making the slab journal entries they include durable; then slab journal heads move.
    /// An unrecovered slab whose journal is under pressure is scrubbed first (recovering
    /// mode): only then can its counts be written and its journal head move.
    fn write_ref_counts_locked(&self, all_dirty: bool) -> Result<(), VolumeError> {
        while self.meta.lock().depot.needs_urgent_scrub() {
            if !self.scrub_now(true)? {
                break;
            }
        }
        self.write_dirty_marks_locked()?;
        let slab_journal = self.meta.lock().depot.take_slab_journal_writes(true);
        self.write_metadata(&slab_journal, BlockType::SlabJournal)?;
        self.flush_store()?;
        let refs = self.meta.lock().depot.take_ref_count_writes(all_dirty);
        self.write_metadata(&refs, BlockType::RefCounts)?;
        self.flush_store()?;
        self.meta.lock().depot.ref_counts_durable();
        Ok(())
    }

    /// Writes everything the journal protects and moves its head; at close, also every
    /// reference count and a clean summary.
    pub(crate) fn checkpoint(&self, close: bool) -> Result<(), VolumeError> {
        let _commit = self.commit.lock();
        let _barrier = self.barrier.write();
        self.commit_locked()?;
        self.write_dirty_marks_locked()?;
        let (slab_journal, pressure) = {
            let mut meta = self.meta.lock();
            // Pages are written before `meta` is released: once taken they count as clean, and
            // a reader's lookup could otherwise evict one and read back its stale copy.
            if let Some(newest) = meta.block_map.newest_dirty_point() {
                assert!(
                    meta.journal.is_durable(newest),
                    "page dirtied at {newest} not durable"
                );
            }
            let pages = meta.block_map.take_dirty(SequenceNumber(u64::MAX));
            self.write_metadata(&pages, BlockType::BlockMapPage)?;
            let slab_journal = meta.depot.take_slab_journal_writes(true);
            (slab_journal, meta.depot.needs_ref_count_writes())
        };
        self.write_metadata(&slab_journal, BlockType::SlabJournal)?;
        self.flush_store()?;
        if close || pressure {
            self.write_ref_counts_locked(close)?;
        }
        let summary = self.meta.lock().depot.take_summary_writes(close);
        self.write_metadata(&summary, BlockType::SlabSummary)?;
        self.flush_store()?;
        let mut meta = self.meta.lock();
        meta.depot.summary_durable();
        meta.journal.checkpoint_done();
        Ok(())
    }

    /// Writes recovery journal blocks (in sequence order): a run of consecutive PBNs as one
    /// write, otherwise (a batch that wraps the log) block by block. With `fua` they are
    /// durable on return: the run as a FUA write, the blocks of a wrapping batch by a flush.
    /// A failure puts the volume in read-only mode.
    fn write_journal(&self, blocks: &[(Pbn, Block)], fua: bool) -> Result<(), VolumeError> {
        let Some(&(first, _)) = blocks.first() else {
            return Ok(());
        };
        let contiguous = blocks
            .iter()
            .enumerate()
            .all(|(i, (pbn, _))| pbn.0 == first.0 + i as u64);
        if !contiguous {
            self.write_metadata(blocks, BlockType::RecoveryJournal)?;
            return if fua { self.flush_store() } else { Ok(()) };
        }
        let write = |bytes: &[u8]| {
            if fua {
                self.store.write_at_fua(first.byte_offset(), bytes)
            } else {
                self.store.write_at(first.byte_offset(), bytes)
            }
        };
        let written = if let [(_, block)] = blocks {
            write(block)
        } else {
            let mut run = AlignedBuf::zeroed(blocks.len() * BLOCK_SIZE);
            for (chunk, (_, block)) in run.chunks_exact_mut(BLOCK_SIZE).zip(blocks) {
                chunk.copy_from_slice(block);
            }
            write(&run)
        };
        if let Err(e) = written {
            let e = VolumeError::from(e);
            self.enter_read_only(&e, Some(BlockType::RecoveryJournal), first);
            return Err(e);
        }
        Counters::add(&self.counters.bios_meta_write, blocks.len() as u64);
        if fua {
            Counters::bump(&self.counters.fua_out);
        }
        Ok(())
    }

    /// Writes metadata blocks; a failure puts the volume in read-only mode.
    pub(super) fn write_metadata(
        &self,
        blocks: &[(Pbn, Block)],
        kind: BlockType,
    ) -> Result<(), VolumeError> {
        for (pbn, block) in blocks {
            if let Err(e) = self.store.write_at(pbn.byte_offset(), block) {
                let e = VolumeError::from(e);
                self.enter_read_only(&e, Some(kind), *pbn);
                return Err(e);
            }
        }
        Counters::add(&self.counters.bios_meta_write, blocks.len() as u64);
        Ok(())
    }

    /// Writes every staged data block, then flushes the store; a failure puts the volume in
    /// read-only mode (after a failed flush nothing is known about what reached the media).
    pub(crate) fn flush_store(&self) -> Result<(), VolumeError> {
        Counters::bump(&self.counters.flushes_out);
        self.staging
            .drain(&*self.store)
            .and_then(|()| self.store.flush())
            .map_err(|e| {
                let e = VolumeError::from(e);
                self.enter_read_only(&e, None, Pbn(0));
                e
            })
    }
}
