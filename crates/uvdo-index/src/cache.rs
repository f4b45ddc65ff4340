//! The sparse index's bounded cache of closed chapters read back from disk.
//!
//! A hook hit (or a dense-part hit) on a closed chapter loads all of its records here; with
//! locality, the names written after it in the original stream are then found in the cache
//! even though the table no longer holds them. One map over every cached record answers
//! "is this name in any cached chapter" in one probe, newest chapter winning.
//!
//! Invariants: at most `capacity` chapters; every map entry points at a cached chapter.

use std::collections::{HashMap, VecDeque};

use crate::chapters::Record;

#[derive(Debug)]
pub(crate) struct ChapterCache {
    capacity: usize,
    /// Cached chapter numbers, least recently used first.
    order: VecDeque<u64>,
    chapters: HashMap<u64, Vec<Record>>,
    /// Name bits to (chapter, PBN).
    names: HashMap<u64, (u64, u64)>,
    pub(crate) loads: u64,
}

/// Bytes charged per entry of a `HashMap` over records (key, value, control byte, slack).
const MAP_ENTRY_BYTES: u64 = 32;

impl ChapterCache {
    pub(crate) fn new(capacity: usize, chapter_records: usize) -> Self {
        assert!(capacity > 0, "a chapter cache holds at least one chapter");
        Self {
            capacity,
            order: VecDeque::with_capacity(capacity),
            chapters: HashMap::with_capacity(capacity),
            // Sized once, so the memory charged never grows past the config's budget.
            names: HashMap::with_capacity(capacity * chapter_records),
            loads: 0,
        }
    }

    pub(crate) fn contains(&self, chapter: u64) -> bool {
        self.chapters.contains_key(&chapter)
    }

    /// The PBN of `bits` in cached `chapter`.
    pub(crate) fn find_in(&mut self, chapter: u64, bits: u64) -> Option<Option<u64>> {
        let records = self.chapters.get(&chapter)?;
        let found = records.iter().rev().find(|r| r.0 == bits).map(|r| r.1);
        self.touch(chapter);
        Some(found)
    }

    /// The newest cached chapter holding `bits`, and the PBN there.
    pub(crate) fn search(&self, bits: u64) -> Option<(u64, u64)> {
        self.names.get(&bits).copied()
    }

    fn touch(&mut self, chapter: u64) {
        if let Some(at) = self.order.iter().position(|&c| c == chapter) {
            self.order.remove(at);
            self.order.push_back(chapter);
        }
    }

    pub(crate) fn insert(&mut self, chapter: u64, records: Vec<Record>) {
        if self.contains(chapter) {
            return;
        }
        while self.order.len() >= self.capacity {
            let evicted = self.order.pop_front().expect("a full cache has chapters");
            self.chapters.remove(&evicted);
            self.names.retain(|_, (c, _)| *c != evicted);
        }
        for &(bits, pbn) in &records {
            let newer = self.names.get(&bits).is_none_or(|&(c, _)| c <= chapter);
            if newer {
                self.names.insert(bits, (chapter, pbn));
            }
        }
        self.chapters.insert(chapter, records);
        self.order.push_back(chapter);
        self.loads += 1;
    }

    /// Stops returning `pbn` for `bits`; true if the cache held it.
    pub(crate) fn forget(&mut self, bits: u64, pbn: u64) -> bool {
        let Some(&(chapter, found)) = self.names.get(&bits) else {
            return false;
        };
        if found != pbn {
            return false;
        }
        self.names.remove(&bits);
        if let Some(records) = self.chapters.get_mut(&chapter) {
            records.retain(|r| *r != (bits, pbn));
        }
        true
    }

    pub(crate) fn memory_bytes(&self) -> u64 {
        let records: u64 = self
            .chapters
            .values()
            .map(|r| r.capacity() as u64 * 16)
            .sum();
        records + self.names.capacity() as u64 * MAP_ENTRY_BYTES
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn eviction_keeps_capacity_and_the_name_map_in_step() {
        let mut cache = ChapterCache::new(2, 2);
        cache.insert(1, vec![(10, 100), (11, 101)]);
        cache.insert(2, vec![(10, 200)]);
        assert_eq!(cache.search(10), Some((2, 200)));
        assert_eq!(cache.find_in(1, 11), Some(Some(101)));
        cache.insert(3, vec![(12, 300)]);
        assert!(!cache.contains(2), "chapter 2 was least recently used");
        assert_eq!(cache.search(10), None);
        assert_eq!(cache.search(11), Some((1, 101)));
        assert!(cache.forget(11, 101));
        assert_eq!(cache.find_in(1, 11), Some(None));
        assert_eq!(cache.loads, 3);
    }
}
