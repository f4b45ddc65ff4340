//! Statistics: the counters the engine keeps, and the snapshot `stats()` returns, with the
//! fields `vdostats --verbose` prints that apply to uvdo (research/vdo_cli.md section 3.2).

use std::sync::atomic::{AtomicU64, Ordering};

/// Live counters, bumped on the I/O paths without locks.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(crate) bios_in_read: AtomicU64,
    pub(crate) bios_in_write: AtomicU64,
    pub(crate) bios_in_discard: AtomicU64,
    pub(crate) bios_in_flush: AtomicU64,
    pub(crate) bios_in_fua: AtomicU64,
    pub(crate) bios_in_partial_write: AtomicU64,
    pub(crate) bios_out_read: AtomicU64,
    pub(crate) bios_out_write: AtomicU64,
    pub(crate) bios_meta_write: AtomicU64,
    pub(crate) bios_journal_write: AtomicU64,
    pub(crate) flushes_out: AtomicU64,
    pub(crate) fua_out: AtomicU64,
    pub(crate) dedupe_advice_valid: AtomicU64,
    pub(crate) dedupe_advice_stale: AtomicU64,
    pub(crate) dedupe_advice_at_limit: AtomicU64,
    pub(crate) invalid_advice_pbn: AtomicU64,
    pub(crate) verify_read_errors: AtomicU64,
    pub(crate) zero_blocks_written: AtomicU64,
    pub(crate) no_space_errors: AtomicU64,
    pub(crate) read_only_errors: AtomicU64,
    pub(crate) journal_disk_full: AtomicU64,
}

impl Counters {
    pub(crate) fn bump(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    pub(crate) fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }
}

/// Requests by kind, as VDO's bio counters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BioCounts {
    /// Reads.
    pub read: u64,
    /// Writes.
    pub write: u64,
    /// Discards (trim and write-zeroes).
    pub discard: u64,
    /// Flushes.
    pub flush: u64,
    /// Writes with FUA.
    pub fua: u64,
}

/// A snapshot of everything the volume counts.
#[derive(Clone, Debug, PartialEq)]
pub struct VolumeStats {
    /// Physical blocks holding user data (reference count 1..=254). An estimate while
    /// `counts_unavailable` says why (vdostats prints N/A).
    pub data_blocks_used: u64,
    /// Physical blocks used by metadata: every block that is not a slab data block, plus
    /// allocated block map tree pages.
    pub overhead_blocks_used: u64,
    /// Logical blocks mapped (zero blocks count; trimmed ones do not).
    pub logical_blocks_used: u64,
    /// Physical blocks of the store.
    pub physical_blocks: u64,
    /// Logical blocks of the volume.
    pub logical_blocks: u64,
    /// Block map cache size in bytes: the budget in force (the stored setting, or the
    /// `OpenOptions` override), counted as 4 KiB per page. `block_map_cache_bytes` says what
    /// the resident pages actually hold.
    pub block_map_cache_size: u64,
    /// Block size in bytes (4096).
    pub block_size: u64,
    /// Recoveries completed (crash recoveries plus rebuilds).
    pub completed_recovery_count: u64,
    /// Read-only rebuilds completed.
    pub read_only_recovery_count: u64,
    /// "normal", "recovering" or "read-only".
    pub operating_mode: String,
    /// Why the volume is read-only, when it is.
    pub read_only_reason: Option<String>,
    /// The write policy in force ("sync", "async", "async-unsafe").
    pub write_policy: String,
    /// Slabs in the depot.
    pub slab_count: u64,
    /// Free slab data blocks. An estimate while `counts_unavailable` says why.
    pub free_blocks: u64,
    /// Why the statistics that depend on reference counts (data blocks used, free blocks,
    /// used and saving percent) are unavailable: in recovering mode, some slabs' counts are
    /// not rebuilt yet and only their counts on disk are known. `None` when exact.
    pub counts_unavailable: Option<String>,
    /// In recovering mode, the percentage of the slabs to rebuild that are rebuilt.
    pub recovery_progress_percent: Option<u8>,
    /// Recovery journal entries appended.
    pub journal_entries_written: u64,
    /// Recovery journal blocks written.
    pub journal_blocks_written: u64,
    /// Group commits (each: flush, journal blocks, flush).
    pub journal_commits: u64,
    /// Checkpoints (block map pages, slab journals, summary written; journal head moved).
    pub journal_checkpoints: u64,
    /// Times a write found the journal full and had to checkpoint first.
    pub journal_disk_full_count: u64,
    /// Slab journal entries recorded.
    pub slab_journal_entries: u64,
    /// Slab journal blocks written.
    pub slab_journal_blocks_written: u64,
    /// Slab summary blocks written.
    pub slab_summary_blocks_written: u64,
    /// Reference count blocks written.
    pub reference_blocks_written: u64,
    /// Block map pages in the cache.
    pub block_map_pages_cached: u64,
    /// Memory the cached block map pages hold: per page, its entries packed as on disk (4060
    /// bytes), its cache frame and index bucket (4157 bytes in all).
    pub block_map_cache_bytes: u64,
    /// Dirty block map pages.
    pub block_map_dirty_pages: u64,
    /// Block map lookups served from the cache.
    pub block_map_found_in_cache: u64,
    /// Block map lookups that had to read a page.
    pub block_map_fetch_required: u64,
    /// Block map pages read.
    pub block_map_pages_loaded: u64,
    /// Block map pages written.
    pub block_map_pages_saved: u64,
    /// Dedupe advice that verified: the block was shared.
    pub dedupe_advice_valid: u64,
    /// Dedupe advice whose block held other data.
    pub dedupe_advice_stale: u64,
    /// Dedupe advice for a block already at the reference limit: a new copy was written.
    pub dedupe_advice_at_limit: u64,
    /// Advice naming a block that holds no data (free, metadata, out of range).
    pub invalid_advice_pbn_count: u64,
    /// Writes refused for lack of space.
    pub no_space_error_count: u64,
    /// Writes refused because the volume is read-only.
    pub read_only_error_count: u64,
    /// All-zero blocks written (they take no space).
    pub zero_blocks_written: u64,
    /// Requests received.
    pub bios_in: BioCounts,
    /// Writes smaller than a block (read-modify-write).
    pub bios_in_partial_write: u64,
    /// Data reads and writes sent to the store.
    pub bios_out: BioCounts,
    /// Metadata blocks written (journal, pages, slab journals, reference counts, summary).
    pub bios_meta_write: u64,
    /// Recovery journal blocks written.
    pub bios_journal_write: u64,
    /// Flushes sent to the store.
    pub flush_out: u64,
    /// Names in the dedupe index.
    pub index_entries: u64,
    /// Blocks the index's window covers.
    pub index_window_entries: u64,
    /// Bytes of memory the index uses.
    pub index_memory_bytes: u64,
    /// Index lookups that returned advice.
    pub index_hits: u64,
    /// Index lookups.
    pub index_lookups: u64,
}

impl VolumeStats {
    /// Used blocks as vdostats counts them: data plus overhead.
    #[must_use]
    pub fn used_blocks(&self) -> u64 {
        self.data_blocks_used + self.overhead_blocks_used
    }

    /// Percentage of physical blocks used, rounded as vdostats does.
    #[must_use]
    pub fn used_percent(&self) -> u64 {
        if self.physical_blocks == 0 {
            return 0;
        }
        (self.used_blocks() * 100)
            .div_ceil(self.physical_blocks)
            .min(100)
    }

    /// Whether the statistics that depend on reference counts are exact.
    #[must_use]
    pub fn counts_available(&self) -> bool {
        self.counts_unavailable.is_none()
    }

    /// Percentage of physical blocks used, rounded as vdostats does; `None` while counts are
    /// unavailable (vdostats prints N/A).
    #[must_use]
    pub fn used_percent_available(&self) -> Option<u64> {
        self.counts_available().then(|| self.used_percent())
    }

    /// Space saving: (logical used - data used) / logical used, in percent; `None` when
    /// nothing is used, the result would be negative, or counts are unavailable (vdostats
    /// prints N/A).
    #[must_use]
    pub fn saving_percent(&self) -> Option<u64> {
        if !self.counts_available()
            || self.logical_blocks_used == 0
            || self.data_blocks_used > self.logical_blocks_used
        {
            return None;
        }
        Some((self.logical_blocks_used - self.data_blocks_used) * 100 / self.logical_blocks_used)
    }

    /// (metadata writes + data writes) / requested writes; 0 with no writes.
    #[must_use]
    pub fn write_amplification_ratio(&self) -> f64 {
        if self.bios_in.write == 0 {
            return 0.0;
        }
        #[expect(clippy::cast_precision_loss, reason = "a ratio for display")]
        let ratio = (self.bios_meta_write + self.bios_out.write) as f64 / self.bios_in.write as f64;
        ratio
    }
}

impl super::Volume {
    /// A snapshot of every counter (`uvdostats --verbose`).
    #[must_use]
    pub fn stats(&self) -> VolumeStats {
        let (layout, depot, block_map, journal, logical_used, block_map_blocks) = {
            let meta = self.meta.lock();
            (
                meta.depot.layout(),
                meta.depot.stats(),
                meta.block_map.stats(),
                meta.journal.stats(),
                meta.journal.logical_blocks_used(),
                meta.journal.block_map_data_blocks(),
            )
        };
        let index = self.index.stats();
        let mode = self.mode.read().clone();
        let (complete_recoveries, read_only_recoveries) = {
            let sb = self.super_block.lock();
            (sb.complete_recoveries, sb.read_only_recoveries)
        };
        let physical = layout.physical_blocks().0;
        let unrecovered = depot.unrecovered_slabs as usize;
        let counts_unavailable = (unrecovered > 0).then(|| {
            format!(
                "recovering: reference counts of {unrecovered} of {} slabs are being rebuilt",
                depot.slab_count
            )
        });
        let c = &self.counters;
        let get = Counters::get;
        VolumeStats {
            data_blocks_used: depot.data_blocks_used,
            overhead_blocks_used: layout.overhead_blocks().0 + block_map_blocks,
            logical_blocks_used: logical_used,
            physical_blocks: physical,
            logical_blocks: self
                .logical_blocks
                .load(std::sync::atomic::Ordering::Acquire),
            block_map_cache_size: block_map.capacity_pages * uvdo_format::BLOCK_SIZE as u64,
            block_size: uvdo_format::BLOCK_SIZE as u64,
            completed_recovery_count: complete_recoveries,
            read_only_recovery_count: read_only_recoveries,
            operating_mode: mode.mode.to_string(),
            read_only_reason: mode.reason.as_ref().map(|r| super::describe(Some(r))),
            write_policy: self.write_policy().name().to_owned(),
            slab_count: u64::from(depot.slab_count),
            free_blocks: depot.free_blocks,
            counts_unavailable,
            recovery_progress_percent: self.recovery_progress(unrecovered),
            journal_entries_written: journal.entries_appended,
            journal_blocks_written: journal.blocks_written,
            journal_commits: journal.commits,
            journal_checkpoints: journal.checkpoints,
            journal_disk_full_count: get(&c.journal_disk_full),
            slab_journal_entries: depot.slab_journal_entries,
            slab_journal_blocks_written: depot.slab_journal_blocks_written,
            slab_summary_blocks_written: depot.summary_blocks_written,
            reference_blocks_written: depot.ref_count_blocks_written,
            block_map_pages_cached: block_map.pages_cached,
            block_map_cache_bytes: block_map.cache_bytes,
            block_map_dirty_pages: block_map.dirty_pages,
            block_map_found_in_cache: block_map.cache_hits,
            block_map_fetch_required: block_map.cache_misses,
            block_map_pages_loaded: block_map.pages_read,
            block_map_pages_saved: block_map.pages_written,
            dedupe_advice_valid: get(&c.dedupe_advice_valid),
            dedupe_advice_stale: get(&c.dedupe_advice_stale),
            dedupe_advice_at_limit: get(&c.dedupe_advice_at_limit),
            invalid_advice_pbn_count: get(&c.invalid_advice_pbn),
            no_space_error_count: get(&c.no_space_errors),
            read_only_error_count: get(&c.read_only_errors),
            zero_blocks_written: get(&c.zero_blocks_written),
            bios_in: BioCounts {
                read: get(&c.bios_in_read),
                write: get(&c.bios_in_write),
                discard: get(&c.bios_in_discard),
                flush: get(&c.bios_in_flush),
                fua: get(&c.bios_in_fua),
            },
            bios_in_partial_write: get(&c.bios_in_partial_write),
            bios_out: BioCounts {
                read: get(&c.bios_out_read),
                write: get(&c.bios_out_write),
                discard: 0,
                flush: get(&c.flushes_out),
                fua: get(&c.fua_out),
            },
            bios_meta_write: get(&c.bios_meta_write),
            bios_journal_write: get(&c.bios_journal_write),
            flush_out: get(&c.flushes_out),
            index_entries: index.entries,
            index_window_entries: index.window_entries,
            index_memory_bytes: index.memory_bytes,
            index_hits: index.hits,
            index_lookups: index.lookups,
        }
    }
}
