//! The dedupe index: the table shards, the chapter ring, and (sparse) the chapter cache.
//!
//! Locks: each shard of the table has its own lock, chosen by name bits, so concurrent writers
//! rarely meet; the chapter ring has one lock, held only to append a record or resolve a PBN.
//! The order is shard, then ring, then cache; the ring lock is never held while taking a shard
//! lock, which is why the sweep after a chapter close runs after the ring lock is released.
//! The open and oldest chapter numbers and the record count are mirrored in atomics so a shard
//! operation can decide liveness without the ring lock; they are read after the shard lock is
//! taken, so they are at least as new as any entry in that shard.
//!
//! The dense and sparse paths differ in their table (see the `dense` and `sparse` submodules);
//! this module holds what they share.

mod dense;
mod sparse;

use std::sync::atomic::{AtomicU64, Ordering};

use parking_lot::{Mutex, RwLock};
use uvdo_format::Pbn;

use crate::cache::ChapterCache;
use crate::chapters::{Appended, ChapterDisk, Chapters};
use crate::config::{Geometry, IndexConfig, TableShape, fixed_bytes, to_usize};
use crate::dense_shard::DenseShard;
use crate::error::IndexError;
use crate::region::IndexRegion;
use crate::stats::{Counters, IndexStats, bump, get};
use crate::table::Shard;

/// The deduplication index (see the crate doc).
#[derive(Debug)]
pub struct DedupeIndex {
    pub(crate) config: IndexConfig,
    pub(crate) geometry: Geometry,
    pub(crate) table: Table,
    pub(crate) chapters: RwLock<Chapters>,
    pub(crate) cache: Option<Mutex<ChapterCache>>,
    pub(crate) disk: Option<ChapterDisk>,
    pub(crate) region: Option<IndexRegion>,
    pub(crate) open: AtomicU64,
    pub(crate) oldest: AtomicU64,
    /// The first record number not given out yet: `open * K` plus the open chapter's
    /// positions given out. Every stored record is below it.
    pub(crate) frontier: AtomicU64,
    pub(crate) counters: Counters,
}

/// The table's shards: delta lists (dense) or slot buckets (sparse).
#[derive(Debug)]
pub(crate) enum Table {
    Dense(Vec<RwLock<DenseShard>>),
    Sparse(Vec<RwLock<Shard>>),
}

impl DedupeIndex {
    /// An empty index; `region` is needed in sparse mode and for `save`.
    ///
    /// # Errors
    ///
    /// `InvalidConfig`, `SparseNeedsRegion`, or `RegionTooSmall` when the region is smaller
    /// than [`IndexConfig::disk_blocks`] or lies past the end of its store.
    pub fn new(config: IndexConfig, region: Option<IndexRegion>) -> Result<Self, IndexError> {
        let geometry = config.geometry()?;
        if geometry.sparse && region.is_none() {
            return Err(IndexError::SparseNeedsRegion);
        }
        if let Some(region) = &region {
            region.check(geometry.disk_blocks())?;
        }
        let chapters = Chapters::new(&geometry, region.as_ref());
        let table = match &geometry.table {
            TableShape::Lists(lists) => Table::Dense(
                (0..geometry.shards)
                    .map(|_| RwLock::new(DenseShard::new(lists)))
                    .collect(),
            ),
            TableShape::Slots(slots) => Table::Sparse(
                (0..geometry.shards)
                    .map(|_| RwLock::new(Shard::new(slots.buckets_per_shard)))
                    .collect(),
            ),
        };
        Ok(Self::assemble(config, geometry, region, table, chapters))
    }

    pub(crate) fn assemble(
        config: IndexConfig,
        geometry: Geometry,
        region: Option<IndexRegion>,
        table: Table,
        chapters: Chapters,
    ) -> Self {
        let cache = geometry.sparse.then(|| {
            let records = to_usize(geometry.chapter_records);
            Mutex::new(ChapterCache::new(
                to_usize(geometry.cache_chapters),
                records,
            ))
        });
        let frontier = chapters.open * geometry.chapter_records + chapters.open_records;
        Self {
            config,
            geometry,
            open: AtomicU64::new(chapters.open),
            oldest: AtomicU64::new(chapters.oldest),
            frontier: AtomicU64::new(frontier),
            disk: chapters.disk(),
            chapters: RwLock::new(chapters),
            table,
            cache,
            region,
            counters: Counters::default(),
        }
    }

    /// The configuration the index was built with.
    #[must_use]
    pub fn config(&self) -> IndexConfig {
        self.config
    }

    /// Advice for `name`: a PBN that may hold the same data, or None.
    ///
    /// The answer is a hint: it may be stale or a fingerprint false positive, so the caller
    /// compares the block's bytes before sharing it.
    pub fn lookup(&self, name: u128) -> Option<Pbn> {
        bump(&self.counters.lookups, 1);
        let found = match &self.table {
            Table::Dense(shards) => self.lookup_dense(shards, name),
            Table::Sparse(shards) => self.lookup_sparse(shards, name),
        };
        let (chapter, pbn) = found?;
        bump(&self.counters.hits, 1);
        let open = self.open.load(Ordering::Acquire);
        let old = open.saturating_sub(chapter) >= self.geometry.dense_chapters / 2;
        if old && self.chapters.read().refresh_has_room() {
            bump(&self.counters.refreshes, 1);
            self.put(name, pbn, true);
        }
        Some(Pbn(pbn))
    }

    /// Records that `pbn` holds the data named `name`; a later lookup returns the newest.
    ///
    /// # Panics
    ///
    /// If `pbn` is 2^48 or more (VDO's PBNs are 36 bits): an engine bug.
    pub fn insert(&self, name: u128, pbn: Pbn) {
        bump(&self.counters.inserts, 1);
        self.put(name, pbn.0, false);
    }

    /// Records `pbn` for `name`; a `refresh` re-records an old hit in the open chapter.
    fn put(&self, name: u128, pbn: u64, refresh: bool) {
        match &self.table {
            Table::Dense(shards) => self.put_dense(shards, name, pbn, refresh),
            Table::Sparse(shards) => self.put_sparse(shards, name, pbn),
        }
    }

    /// Appends a record to the open chapter, sweeping after a chapter close (see
    /// [`Chapters::append`] for `order`).
    fn append(&self, bits: u64, pbn: u64, order: (bool, Option<u64>)) -> Appended {
        let appended = {
            let mut chapters = self.chapters.write();
            let appended = chapters.append(bits, pbn, order);
            self.open.store(chapters.open, Ordering::Release);
            self.oldest.store(chapters.oldest, Ordering::Release);
            let frontier = chapters.open * self.geometry.chapter_records + chapters.open_records;
            self.frontier.store(frontier, Ordering::Release);
            appended
        };
        bump(&self.counters.chapters_dropped, appended.dropped);
        if appended.write_failed {
            bump(&self.counters.chapter_io_errors, 1);
        }
        if appended.closed {
            self.sweep_after_close();
        }
        appended
    }

    /// Clears expired entries from a slice of every shard, so that each slot or list is
    /// visited at least once every `lag` chapter closes (see the slot and list modules).
    fn sweep_after_close(&self) {
        match &self.table {
            Table::Dense(shards) => self.sweep_dense(shards, false),
            Table::Sparse(shards) => self.sweep_sparse(shards, false),
        }
    }

    /// Clears expired entries from the whole table (after a load).
    pub(crate) fn sweep_all(&self) {
        match &self.table {
            Table::Dense(shards) => self.sweep_dense(shards, true),
            Table::Sparse(shards) => self.sweep_sparse(shards, true),
        }
    }

    /// Stops returning `pbn` as advice for `name` (the engine found it stale).
    pub fn forget(&self, name: u128, pbn: Pbn) {
        let forgotten = match &self.table {
            Table::Dense(shards) => self.forget_dense(shards, name, pbn.0),
            Table::Sparse(shards) => self.forget_sparse(shards, name, pbn.0),
        };
        bump(&self.counters.stale_forgotten, forgotten.min(1));
    }

    /// Live entries in the table, by a full scan (O(table): for tests and measurements).
    #[must_use]
    pub fn live_entries(&self) -> u64 {
        match &self.table {
            Table::Dense(shards) => self.live_dense(shards),
            Table::Sparse(shards) => self.live_sparse(shards),
        }
    }

    /// Memory held now by every structure of the index.
    fn memory_bytes(&self) -> u64 {
        let table = match &self.table {
            Table::Dense(shards) => shards.iter().map(|s| s.read().memory_bytes()).sum(),
            Table::Sparse(_) => crate::config::to_u64(self.geometry.slots()) * 4,
        };
        let chapters = self.chapters.read().memory_bytes();
        let cache = self.cache.as_ref().map_or(0, |c| c.lock().memory_bytes());
        table + chapters + cache + fixed_bytes(self.geometry.shards)
    }

    /// A snapshot of the counters and sizes.
    #[must_use]
    pub fn stats(&self) -> IndexStats {
        let c = &self.counters;
        let entries = match &self.table {
            Table::Dense(shards) => shards.iter().map(|s| s.read().entries()).sum(),
            Table::Sparse(shards) => shards.iter().map(|s| s.read().occupied()).sum(),
        };
        let (records, oldest_record) = {
            let chapters = self.chapters.read();
            (chapters.appended, chapters.oldest_record())
        };
        IndexStats {
            entries,
            window_entries: self.geometry.window_entries(),
            memory_bytes: self.memory_bytes(),
            memory_bytes_max: self.config.memory_bytes,
            lookups: get(&c.lookups),
            hits: get(&c.hits),
            inserts: get(&c.inserts),
            refreshes: get(&c.refreshes),
            stale_forgotten: get(&c.stale_forgotten),
            chapters_dropped: get(&c.chapters_dropped),
            evicted_early: get(&c.evicted_early),
            records,
            oldest_record,
            chapter_cache_loads: self.cache.as_ref().map_or(0, |c| c.lock().loads),
            chapter_io_errors: get(&c.chapter_io_errors),
            fingerprints: self.geometry.fingerprints(),
        }
    }
}
