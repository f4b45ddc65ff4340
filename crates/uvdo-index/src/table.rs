//! One shard of the sparse slot table: buckets of 4 packed slots, two buckets per name. (The
//! dense table keeps delta lists instead: see the dense shard module.)
//!
//! A name may sit in either of its two buckets; an insert takes a free slot in the emptier one
//! and, when all 8 are live, evicts the oldest entry among them (counted as an early eviction:
//! the window is FIFO, so the oldest of 8 is usually near its end anyway). A slot is free when
//! it is empty or holds an entry whose chapter has left the window: expiry is lazy, and the
//! sweeper clears expired entries within `lag` chapter closes so their tags can be reused.

use crate::config::BUCKET_SLOTS;
use crate::slot::{Entry, NameKey, SlotCodec};

/// Which chapters are in the window, read once per shard operation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Liveness {
    pub(crate) open: u64,
    pub(crate) oldest: u64,
    /// Entries of non-hook names older than this have left the dense part (sparse mode).
    pub(crate) dense_oldest: u64,
}

impl Liveness {
    /// The chapter of a live entry, or None for an expired one.
    pub(crate) fn chapter(&self, codec: &SlotCodec, entry: Entry) -> Option<u64> {
        let chapter = codec.chapter_of(entry.tag, self.open)?;
        let oldest = if codec.is_hook_fingerprint(entry.fingerprint) {
            self.oldest
        } else {
            self.dense_oldest
        };
        (chapter >= oldest).then_some(chapter)
    }
}

/// A live slot whose fingerprint matches a name.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Candidate {
    pub(crate) index: usize,
    pub(crate) chapter: u64,
    pub(crate) position: u64,
}

/// Up to 8 candidates, newest first.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Candidates {
    items: [Candidate; 2 * BUCKET_SLOTS],
    len: usize,
}

impl Candidates {
    pub(crate) fn as_slice(&self) -> &[Candidate] {
        &self.items[..self.len]
    }
}

/// How an insert found room.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Placement {
    Replaced,
    Free,
    /// The oldest live entry of the two buckets was dropped before its chapter expired.
    EvictedEarly,
}

#[derive(Debug)]
pub(crate) struct Shard {
    pub(crate) slots: Vec<u32>,
    sweep_cursor: usize,
    occupied: u64,
}

impl Shard {
    pub(crate) fn new(buckets: usize) -> Self {
        Self {
            slots: vec![0; buckets * BUCKET_SLOTS],
            sweep_cursor: 0,
            occupied: 0,
        }
    }

    /// A shard holding `slots` read back from a save.
    pub(crate) fn from_slots(slots: Vec<u32>) -> Self {
        let occupied = slots.iter().filter(|&&s| s != 0).count() as u64;
        Self {
            slots,
            sweep_cursor: 0,
            occupied,
        }
    }

    pub(crate) fn occupied(&self) -> u64 {
        self.occupied
    }

    fn slot_range(key: &NameKey, which: usize) -> std::ops::Range<usize> {
        let first = key.buckets[which] * BUCKET_SLOTS;
        first..first + BUCKET_SLOTS
    }

    /// The live slots of the name's buckets with its fingerprint, newest first.
    pub(crate) fn matches(&self, codec: &SlotCodec, key: &NameKey, live: &Liveness) -> Candidates {
        let mut found = Candidates::default();
        let second = if key.buckets[0] == key.buckets[1] {
            1
        } else {
            2
        };
        for which in 0..second {
            for index in Self::slot_range(key, which) {
                let Some(entry) = codec.decode(self.slots[index]) else {
                    continue;
                };
                if entry.fingerprint != key.fingerprint {
                    continue;
                }
                if let Some(chapter) = live.chapter(codec, entry) {
                    found.items[found.len] = Candidate {
                        index,
                        chapter,
                        position: entry.position,
                    };
                    found.len += 1;
                }
            }
        }
        found.items[..found.len]
            .sort_unstable_by_key(|c| std::cmp::Reverse((c.chapter, c.position)));
        found
    }

    /// Stores `slot` for the name, over `replace` if given, else in a free or evicted slot.
    pub(crate) fn put(
        &mut self,
        codec: &SlotCodec,
        key: &NameKey,
        live: &Liveness,
        slot: u32,
        replace: Option<usize>,
    ) -> Placement {
        if let Some(index) = replace {
            assert!(self.slots[index] != 0, "replacing an empty slot {index}");
            self.slots[index] = slot;
            return Placement::Replaced;
        }
        let mut best_free: Option<(usize, usize)> = None;
        let mut oldest: Option<(usize, (u64, u64, u64))> = None;
        for which in 0..2 {
            let mut free_here = 0;
            let mut first_free = 0;
            for index in Self::slot_range(key, which) {
                match codec.decode(self.slots[index]) {
                    Some(entry) => match live.chapter(codec, entry) {
                        Some(chapter) => {
                            // Hooks stand for whole old chapters: evict other names first.
                            let hook = codec.is_hook_fingerprint(entry.fingerprint);
                            let age_key = (u64::from(hook), chapter, entry.position);
                            if oldest.is_none_or(|(_, k)| age_key < k) {
                                oldest = Some((index, age_key));
                            }
                        }
                        None => {
                            first_free = if free_here == 0 { index } else { first_free };
                            free_here += 1;
                        }
                    },
                    None => {
                        first_free = if free_here == 0 { index } else { first_free };
                        free_here += 1;
                    }
                }
            }
            if free_here > 0 && best_free.is_none_or(|(count, _)| free_here > count) {
                best_free = Some((free_here, first_free));
            }
        }
        if let Some((_, index)) = best_free {
            self.occupied += u64::from(self.slots[index] == 0);
            self.slots[index] = slot;
            return Placement::Free;
        }
        let (index, _) = oldest.expect("two full buckets hold a live entry");
        self.slots[index] = slot;
        Placement::EvictedEarly
    }

    pub(crate) fn clear(&mut self, index: usize) {
        if self.slots[index] != 0 {
            self.slots[index] = 0;
            self.occupied -= 1;
        }
    }

    /// Clears expired entries in the next `count` slots; returns how many it cleared.
    pub(crate) fn sweep(&mut self, codec: &SlotCodec, live: &Liveness, count: usize) -> u64 {
        let mut cleared = 0;
        for _ in 0..count.min(self.slots.len()) {
            let index = self.sweep_cursor;
            self.sweep_cursor = (self.sweep_cursor + 1) % self.slots.len();
            if let Some(entry) = codec.decode(self.slots[index])
                && live.chapter(codec, entry).is_none()
            {
                self.clear(index);
                cleared += 1;
            }
        }
        cleared
    }

    /// Live entries, by a full scan.
    pub(crate) fn count_live(&self, codec: &SlotCodec, live: &Liveness) -> u64 {
        let live_slot = |&&slot: &&u32| {
            codec
                .decode(slot)
                .is_some_and(|entry| live.chapter(codec, entry).is_some())
        };
        self.slots.iter().filter(live_slot).count() as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn setup() -> (SlotCodec, Liveness) {
        let codec = SlotCodec::new(16, 8, false);
        let live = Liveness {
            open: 20,
            oldest: 5,
            dense_oldest: 5,
        };
        (codec, live)
    }

    fn key(fingerprint: u64) -> NameKey {
        NameKey {
            shard: 0,
            buckets: [0, 1],
            fingerprint,
            hook: false,
            bits: 0,
        }
    }

    fn slot(codec: &SlotCodec, fingerprint: u64, chapter: u64, position: u64) -> u32 {
        codec.encode(Entry {
            fingerprint,
            tag: codec.tag_of(chapter),
            position,
        })
    }

    #[test]
    fn full_buckets_evict_the_oldest_and_expired_slots_are_free() {
        let (codec, live) = setup();
        let mut shard = Shard::new(2);
        for i in 0..8 {
            let placed = shard.put(&codec, &key(3), &live, slot(&codec, 3, 10 + i, 1), None);
            assert_eq!(placed, Placement::Free);
        }
        let placed = shard.put(&codec, &key(3), &live, slot(&codec, 3, 20, 0), None);
        assert_eq!(placed, Placement::EvictedEarly);
        let chapters: Vec<u64> = shard
            .matches(&codec, &key(3), &live)
            .as_slice()
            .iter()
            .map(|c| c.chapter)
            .collect();
        assert_eq!(chapters, [20, 17, 16, 15, 14, 13, 12, 11]);
        let later = Liveness {
            oldest: 12,
            dense_oldest: 12,
            ..live
        };
        assert_eq!(shard.sweep(&codec, &later, 8), 1);
        assert_eq!(shard.occupied(), 7);
        let placed = shard.put(&codec, &key(4), &later, slot(&codec, 4, 20, 2), None);
        assert_eq!(placed, Placement::Free);
        assert_eq!(shard.count_live(&codec, &later), 8);
    }
}
