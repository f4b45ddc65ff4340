//! The dedupe index: the slot table shards, the chapter ring, and (sparse) the chapter cache.
//!
//! Locks: each shard of the table has its own lock, chosen by name bits, so concurrent writers
//! rarely meet; the chapter ring has one lock, held only to append a record or resolve a PBN.
//! The order is shard, then ring, then cache; the ring lock is never held while taking a shard
//! lock, which is why the sweep after a chapter close runs after the ring lock is released.
//! The open and oldest chapter numbers are mirrored in atomics so a shard operation can decide
//! liveness without the ring lock; they are read after the shard lock is taken, so they are at
//! least as new as any slot in that shard.

use std::sync::atomic::{AtomicU64, Ordering};

use parking_lot::{Mutex, RwLock};
use uvdo_format::Pbn;

use crate::cache::ChapterCache;
use crate::chapters::{Appended, ChapterDisk, Chapters};
use crate::config::{Geometry, IndexConfig, fixed_bytes, to_u64, to_usize};
use crate::error::IndexError;
use crate::region::IndexRegion;
use crate::slot::{Entry, NameKey};
use crate::stats::{Counters, IndexStats, bump, get};
use crate::table::{Candidate, Liveness, Placement, Shard};

/// The deduplication index (see the crate doc).
#[derive(Debug)]
pub struct DedupeIndex {
    pub(crate) config: IndexConfig,
    pub(crate) geometry: Geometry,
    pub(crate) shards: Vec<RwLock<Shard>>,
    pub(crate) chapters: RwLock<Chapters>,
    pub(crate) cache: Option<Mutex<ChapterCache>>,
    pub(crate) disk: Option<ChapterDisk>,
    pub(crate) region: Option<IndexRegion>,
    pub(crate) open: AtomicU64,
    pub(crate) oldest: AtomicU64,
    pub(crate) records: AtomicU64,
    pub(crate) counters: Counters,
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
        let shards = (0..geometry.shards)
            .map(|_| RwLock::new(Shard::new(geometry.buckets_per_shard)))
            .collect();
        Ok(Self::assemble(config, geometry, region, shards, chapters))
    }

    pub(crate) fn assemble(
        config: IndexConfig,
        geometry: Geometry,
        region: Option<IndexRegion>,
        shards: Vec<RwLock<Shard>>,
        chapters: Chapters,
    ) -> Self {
        let cache = geometry.sparse.then(|| {
            let records = to_usize(geometry.chapter_records);
            Mutex::new(ChapterCache::new(
                to_usize(geometry.cache_chapters),
                records,
            ))
        });
        let records = chapters.open * geometry.chapter_records + chapters.open_records;
        Self {
            config,
            geometry,
            open: AtomicU64::new(chapters.open),
            oldest: AtomicU64::new(chapters.oldest),
            records: AtomicU64::new(records),
            disk: chapters.disk(),
            chapters: RwLock::new(chapters),
            shards,
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

    pub(crate) fn liveness(&self) -> Liveness {
        let open = self.open.load(Ordering::Acquire);
        let oldest = self.oldest.load(Ordering::Acquire);
        let dense_floor = (open + 1).saturating_sub(self.geometry.dense_chapters);
        Liveness {
            open,
            oldest,
            dense_oldest: oldest.max(dense_floor),
        }
    }

    fn key(&self, name: u128) -> NameKey {
        let g = &self.geometry;
        g.codec.key(name, g.shards, g.buckets_per_shard)
    }

    /// Advice for `name`: a PBN that may hold the same data, or None.
    ///
    /// The answer is a hint: it may be stale or a fingerprint false positive, so the caller
    /// compares the block's bytes before sharing it.
    pub fn lookup(&self, name: u128) -> Option<Pbn> {
        bump(&self.counters.lookups, 1);
        let key = self.key(name);
        let candidates = {
            let shard = self.shards[key.shard].read();
            shard.matches(&self.geometry.codec, &key, &self.liveness())
        };
        let found = if self.geometry.sparse {
            self.resolve_sparse(&key, candidates.as_slice())
        } else {
            self.resolve_dense(candidates.as_slice())
        };
        let (chapter, pbn) = found?;
        bump(&self.counters.hits, 1);
        let open = self.open.load(Ordering::Acquire);
        if open.saturating_sub(chapter) >= self.geometry.dense_chapters / 2 {
            bump(&self.counters.refreshes, 1);
            self.put(name, pbn);
        }
        Some(Pbn(pbn))
    }

    fn resolve_dense(&self, candidates: &[Candidate]) -> Option<(u64, u64)> {
        let chapters = self.chapters.read();
        candidates.iter().find_map(|c| {
            chapters
                .resolve(c.chapter, c.position)
                .map(|pbn| (c.chapter, pbn))
        })
    }

    fn resolve_sparse(&self, key: &NameKey, candidates: &[Candidate]) -> Option<(u64, u64)> {
        for candidate in candidates {
            if let Some(pbn) = self.sparse_record(candidate.chapter, key.bits) {
                return Some((candidate.chapter, pbn));
            }
        }
        let cache = self
            .cache
            .as_ref()
            .expect("sparse index has a cache")
            .lock();
        let (chapter, pbn) = cache.search(key.bits)?;
        let live = chapter >= self.oldest.load(Ordering::Acquire);
        live.then_some((chapter, pbn))
    }

    /// Sparse: the PBN of `bits` in `chapter`, from the open chapter or the cache, reading
    /// the chapter from disk into the cache if needed.
    fn sparse_record(&self, chapter: u64, bits: u64) -> Option<u64> {
        {
            let chapters = self.chapters.read();
            if !chapters.is_live(chapter) {
                return None;
            }
            if chapter == chapters.open {
                return chapters.find_open(bits);
            }
        }
        let mut cache = self
            .cache
            .as_ref()
            .expect("sparse index has a cache")
            .lock();
        if let Some(found) = cache.find_in(chapter, bits) {
            return found;
        }
        let disk = self
            .disk
            .as_ref()
            .expect("sparse index has chapters on disk");
        match disk.read(chapter) {
            Ok(records) => {
                let found = records.iter().rev().find(|r| r.0 == bits).map(|r| r.1);
                cache.insert(chapter, records);
                found
            }
            Err(_) => {
                bump(&self.counters.chapter_io_errors, 1);
                None
            }
        }
    }

    /// Records that `pbn` holds the data named `name`; a later lookup returns the newest.
    ///
    /// # Panics
    ///
    /// If `pbn` is 2^48 or more (VDO's PBNs are 36 bits): an engine bug.
    pub fn insert(&self, name: u128, pbn: Pbn) {
        bump(&self.counters.inserts, 1);
        self.put(name, pbn.0);
    }

    fn put(&self, name: u128, pbn: u64) {
        let key = self.key(name);
        let appended = self.append(key.bits, pbn);
        let codec = &self.geometry.codec;
        let mut shard = self.shards[key.shard].write();
        let live = self.liveness();
        if appended.chapter < live.oldest {
            return;
        }
        let candidates = shard.matches(codec, &key, &live);
        let replace = if self.geometry.sparse {
            // Fingerprints are wide in sparse mode: a match is this name's older entry.
            candidates.as_slice().first().map(|c| c.index)
        } else {
            let chapters = self.chapters.read();
            candidates
                .as_slice()
                .iter()
                .find(|c| chapters.resolve(c.chapter, c.position) == Some(pbn))
                .map(|c| c.index)
        };
        let slot = codec.encode(Entry {
            fingerprint: key.fingerprint,
            tag: codec.tag_of(appended.chapter),
            position: if self.geometry.sparse {
                0
            } else {
                appended.position
            },
        });
        if shard.put(codec, &key, &live, slot, replace) == Placement::EvictedEarly {
            bump(&self.counters.evicted_early, 1);
        }
    }

    fn append(&self, bits: u64, pbn: u64) -> Appended {
        let appended = {
            let mut chapters = self.chapters.write();
            let appended = chapters.append(bits, pbn);
            self.open.store(chapters.open, Ordering::Release);
            self.oldest.store(chapters.oldest, Ordering::Release);
            self.records.fetch_add(1, Ordering::Relaxed);
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

    /// Clears expired entries from a slice of every shard, so that each slot is visited at
    /// least once every `lag` chapter closes (see the slot module's invariants).
    fn sweep_after_close(&self) {
        let per_shard = self.geometry.buckets_per_shard * crate::config::BUCKET_SLOTS;
        let count = per_shard.div_ceil(to_usize(self.geometry.codec.lag));
        for shard in &self.shards {
            let mut shard = shard.write();
            let live = self.liveness();
            shard.sweep(&self.geometry.codec, &live, count);
        }
    }

    /// Clears expired entries from the whole table (after a load).
    pub(crate) fn sweep_all(&self) {
        let per_shard = self.geometry.buckets_per_shard * crate::config::BUCKET_SLOTS;
        for shard in &self.shards {
            let mut shard = shard.write();
            let live = self.liveness();
            shard.sweep(&self.geometry.codec, &live, per_shard);
        }
    }

    /// Stops returning `pbn` as advice for `name` (the engine found it stale).
    pub fn forget(&self, name: u128, pbn: Pbn) {
        let key = self.key(name);
        let mut shard = self.shards[key.shard].write();
        let live = self.liveness();
        let candidates = shard.matches(&self.geometry.codec, &key, &live);
        let mut forgotten = 0;
        for candidate in candidates.as_slice() {
            let holds = if self.geometry.sparse {
                self.sparse_record(candidate.chapter, key.bits) == Some(pbn.0)
            } else {
                let chapters = self.chapters.read();
                chapters.resolve(candidate.chapter, candidate.position) == Some(pbn.0)
            };
            if holds {
                shard.clear(candidate.index);
                forgotten += 1;
            }
        }
        drop(shard);
        if self.geometry.sparse {
            forgotten += u64::from(self.chapters.write().forget_open(key.bits, pbn.0));
            let mut cache = self
                .cache
                .as_ref()
                .expect("sparse index has a cache")
                .lock();
            forgotten += u64::from(cache.forget(key.bits, pbn.0));
        }
        bump(&self.counters.stale_forgotten, forgotten.min(1));
    }

    /// Live entries in the table, by a full scan (O(slots): for tests and measurements).
    #[must_use]
    pub fn live_entries(&self) -> u64 {
        self.shards
            .iter()
            .map(|shard| {
                let shard = shard.read();
                shard.count_live(&self.geometry.codec, &self.liveness())
            })
            .sum()
    }

    /// Memory held now by every structure of the index.
    fn memory_bytes(&self) -> u64 {
        let table = to_u64(self.geometry.slots()) * 4;
        let chapters = self.chapters.read().memory_bytes();
        let cache = self.cache.as_ref().map_or(0, |c| c.lock().memory_bytes());
        table + chapters + cache + fixed_bytes(self.geometry.shards)
    }

    /// A snapshot of the counters and sizes.
    #[must_use]
    pub fn stats(&self) -> IndexStats {
        let c = &self.counters;
        let entries = self.shards.iter().map(|s| s.read().occupied()).sum();
        let oldest = self.oldest.load(Ordering::Acquire);
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
            records: self.records.load(Ordering::Relaxed),
            oldest_record: oldest * self.geometry.chapter_records,
            chapter_cache_loads: self.cache.as_ref().map_or(0, |c| c.lock().loads),
            chapter_io_errors: get(&c.chapter_io_errors),
            fingerprints: self.geometry.codec.fingerprints,
        }
    }
}
