//! The sparse paths of the index: a slot table of hooks and recent names, chapters on disk,
//! and the chapter cache.

use std::sync::atomic::Ordering;

use parking_lot::RwLock;

use super::DedupeIndex;
use crate::config::{BUCKET_SLOTS, to_usize};
use crate::slot::{Entry, NameKey};
use crate::stats::bump;
use crate::table::{Candidate, Liveness, Placement, Shard};

impl DedupeIndex {
    fn liveness(&self) -> Liveness {
        let open = self.open.load(Ordering::Acquire);
        let oldest = self.oldest.load(Ordering::Acquire);
        let dense_floor = (open + 1).saturating_sub(self.geometry.dense_chapters);
        Liveness {
            open,
            oldest,
            dense_oldest: oldest.max(dense_floor),
        }
    }

    fn sparse_key(&self, name: u128) -> NameKey {
        let g = &self.geometry;
        let slots = g.slot_geometry();
        slots.codec.key(name, g.shards, slots.buckets_per_shard)
    }

    pub(super) fn lookup_sparse(&self, shards: &[RwLock<Shard>], name: u128) -> Option<(u64, u64)> {
        let key = self.sparse_key(name);
        let candidates = {
            let shard = shards[key.shard].read();
            shard.matches(&self.geometry.slot_geometry().codec, &key, &self.liveness())
        };
        self.resolve_sparse(&key, candidates.as_slice())
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

    /// The PBN of `bits` in `chapter`, from the open chapter or the cache, reading the chapter
    /// from disk into the cache if needed.
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

    pub(super) fn put_sparse(&self, shards: &[RwLock<Shard>], name: u128, pbn: u64) {
        let key = self.sparse_key(name);
        let appended = self.append(key.bits, pbn, (false, None));
        let codec = &self.geometry.slot_geometry().codec;
        let mut shard = shards[key.shard].write();
        let live = self.liveness();
        if appended.chapter < live.oldest {
            return;
        }
        let candidates = shard.matches(codec, &key, &live);
        // Fingerprints are wide in sparse mode: a match is this name's older entry.
        let replace = candidates.as_slice().first().map(|c| c.index);
        let slot = codec.encode(Entry {
            fingerprint: key.fingerprint,
            tag: codec.tag_of(appended.chapter),
            position: 0,
        });
        if shard.put(codec, &key, &live, slot, replace) == Placement::EvictedEarly {
            bump(&self.counters.evicted_early, 1);
        }
    }

    pub(super) fn forget_sparse(&self, shards: &[RwLock<Shard>], name: u128, pbn: u64) -> u64 {
        let key = self.sparse_key(name);
        let mut shard = shards[key.shard].write();
        let live = self.liveness();
        let candidates = shard.matches(&self.geometry.slot_geometry().codec, &key, &live);
        let mut forgotten = 0;
        for candidate in candidates.as_slice() {
            if self.sparse_record(candidate.chapter, key.bits) == Some(pbn) {
                shard.clear(candidate.index);
                forgotten += 1;
            }
        }
        drop(shard);
        forgotten += u64::from(self.chapters.write().forget_open(key.bits, pbn));
        let mut cache = self
            .cache
            .as_ref()
            .expect("sparse index has a cache")
            .lock();
        forgotten + u64::from(cache.forget(key.bits, pbn))
    }

    /// Clears expired slots: a `1 / lag` slice of every shard, or all of them.
    pub(super) fn sweep_sparse(&self, shards: &[RwLock<Shard>], all: bool) {
        let slots = self.geometry.slot_geometry();
        let per_shard = slots.buckets_per_shard * BUCKET_SLOTS;
        let count = if all {
            per_shard
        } else {
            per_shard.div_ceil(to_usize(slots.codec.lag))
        };
        for shard in shards {
            let mut shard = shard.write();
            let live = self.liveness();
            shard.sweep(&slots.codec, &live, count);
        }
    }

    pub(super) fn live_sparse(&self, shards: &[RwLock<Shard>]) -> u64 {
        let codec = &self.geometry.slot_geometry().codec;
        shards
            .iter()
            .map(|shard| shard.read().count_live(codec, &self.liveness()))
            .sum()
    }
}
