//! The bounded page cache: resident block map pages, their dirty state, and CLOCK eviction.
//!
//! Frames live in a slab of slots (`frames`) found by twin base through a hash map, so a
//! resident page costs one hash lookup. Eviction is CLOCK with credits: an access gives a leaf
//! one credit and an interior page [`INTERIOR_CREDIT`], the hand takes one credit per pass and
//! evicts a clean page found with none. Interior pages (about one per 812 leaves) therefore
//! survive several sweeps that evict leaves.
//!
//! A resident page holds its entries packed as on disk (`PackedEntries`, 4060 bytes on the
//! heap), a [`Frame`] and an index bucket: [`RESIDENT_PAGE_BYTES`], within 2% of the 4 KiB per
//! page the cache budget counts. Dirty pages also hold two small ordered-set entries until
//! written, and the allocator rounds the entries up by a few bytes.
//!
//! Invariants:
//! - `index` maps exactly the twin bases of the occupied frames to their slot;
//! - dirty frames and the pinned frame are never evicted, so the cache may exceed its capacity
//!   while more than `capacity` pages are dirty (`BlockMap::over_budget` tells the engine);
//! - `by_oldest` holds `(oldest point, base)` and `newest` counts the newest point of exactly
//!   the dirty frames; `dirty_count` is their number.

use std::collections::{BTreeMap, BTreeSet};

use uvdo_format::block_map_page::{BlockMapPage, LEAF_LEVEL, PACKED_ENTRIES_SIZE};
use uvdo_format::twin::TwinSlot;
use uvdo_format::{Block, JournalPoint, Nonce, Pbn, SequenceNumber};

use crate::int_hash::{IntBuildHasher, IntMap};

/// Credits an access gives an interior page; a leaf gets one.
const INTERIOR_CREDIT: u8 = 3;

/// Bytes one resident page holds: its packed entries, its frame slot, and its index bucket
/// (key, value and control byte). What `stats` reports per page (docs/ARCHITECTURE.md).
pub(super) const RESIDENT_PAGE_BYTES: usize =
    PACKED_ENTRIES_SIZE + size_of::<Option<Frame>>() + size_of::<(Pbn, usize)>() + 1;
const _: () = assert!(
    RESIDENT_PAGE_BYTES <= uvdo_format::BLOCK_SIZE * 102 / 100,
    "a resident page stays within 2% of the 4 KiB the cache budget counts"
);

/// The journal points that dirtied a page since it was last written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Dirty {
    /// The oldest: the journal must keep every entry from here until the page is durable.
    pub(super) oldest: JournalPoint,
    /// The newest: the journal must be durable through here before the page is written.
    pub(super) newest: JournalPoint,
}

/// One resident page.
#[derive(Debug)]
pub(super) struct Frame {
    /// The twin base of the page.
    pub(super) base: Pbn,
    /// The page; `page.generation` is the generation of the newest copy in `written`.
    pub(super) page: BlockMapPage,
    /// The slot holding the newest copy; `B` for a page never written, so its first write is
    /// generation 1 in slot A (the same as a root written at format).
    pub(super) written: TwinSlot,
    pub(super) dirty: Option<Dirty>,
    credit: u8,
}

impl Frame {
    /// A page read from disk (`generation` already in the page) or created empty.
    pub(super) fn new(base: Pbn, page: BlockMapPage, written: TwinSlot) -> Self {
        Self {
            base,
            page,
            written,
            dirty: None,
            credit: 0,
        }
    }

    fn touch(&mut self) {
        let credit = if self.page.level == LEAF_LEVEL {
            1
        } else {
            INTERIOR_CREDIT
        };
        self.credit = self.credit.max(credit);
    }
}

/// Event counters reported by `BlockMap::stats`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(super) struct Counters {
    pub(super) hits: u64,
    pub(super) misses: u64,
    pub(super) reads: u64,
    pub(super) writes: u64,
    pub(super) evictions: u64,
}

/// The resident pages.
#[derive(Debug)]
pub(super) struct PageCache {
    capacity: usize,
    frames: Vec<Option<Frame>>,
    free: Vec<usize>,
    index: IntMap<Pbn, usize>,
    hand: usize,
    pinned: Option<Pbn>,
    by_oldest: BTreeSet<(JournalPoint, Pbn)>,
    newest: BTreeMap<JournalPoint, usize>,
    dirty_count: usize,
    pub(super) counters: Counters,
}

impl PageCache {
    /// A cache of `capacity` pages (at least 2: a parent and the child being loaded).
    pub(super) fn new(capacity: usize) -> Self {
        assert!(capacity >= 2, "block map cache of {capacity} pages");
        Self {
            capacity,
            frames: Vec::with_capacity(capacity),
            free: Vec::new(),
            index: IntMap::with_capacity_and_hasher(capacity, IntBuildHasher::default()),
            hand: 0,
            pinned: None,
            by_oldest: BTreeSet::new(),
            newest: BTreeMap::new(),
            dirty_count: 0,
            counters: Counters::default(),
        }
    }

    pub(super) fn capacity(&self) -> usize {
        self.capacity
    }

    pub(super) fn len(&self) -> usize {
        self.index.len()
    }

    /// Memory the resident pages hold, [`RESIDENT_PAGE_BYTES`] each.
    pub(super) fn bytes_held(&self) -> usize {
        self.len() * RESIDENT_PAGE_BYTES
    }

    pub(super) fn dirty_count(&self) -> usize {
        self.dirty_count
    }

    pub(super) fn newest_dirty_point(&self) -> Option<JournalPoint> {
        self.newest.keys().next_back().copied()
    }

    #[cfg(test)]
    pub(super) fn oldest_dirty_point(&self) -> Option<JournalPoint> {
        self.by_oldest.first().map(|&(point, _)| point)
    }

    /// The slot of the resident page `base`, counting an access for eviction.
    pub(super) fn find(&mut self, base: Pbn) -> Option<usize> {
        let slot = *self.index.get(&base)?;
        self.frame_mut(slot).touch();
        Some(slot)
    }

    /// The slot of the resident page `base`, without counting an access.
    pub(super) fn peek(&self, base: Pbn) -> Option<usize> {
        self.index.get(&base).copied()
    }

    pub(super) fn frame(&self, slot: usize) -> &Frame {
        self.frames[slot].as_ref().expect("occupied cache slot")
    }

    pub(super) fn frame_mut(&mut self, slot: usize) -> &mut Frame {
        self.frames[slot].as_mut().expect("occupied cache slot")
    }

    /// Keeps `base` resident until another page is pinned (the prepared leaf).
    pub(super) fn pin(&mut self, base: Pbn) {
        assert!(
            self.index.contains_key(&base),
            "pinning a page not resident"
        );
        self.pinned = Some(base);
    }

    /// Makes `frame` resident, evicting a clean page first when the cache is full.
    pub(super) fn insert(&mut self, mut frame: Frame) -> usize {
        assert!(
            !self.index.contains_key(&frame.base),
            "page {} already resident",
            frame.base
        );
        // Down to capacity, after a burst of dirty pages was written and became evictable.
        while self.len() >= self.capacity && self.evict_one() {}
        assert!(frame.dirty.is_none(), "pages enter the cache clean");
        frame.touch();
        let base = frame.base;
        let slot = if let Some(slot) = self.free.pop() {
            self.frames[slot] = Some(frame);
            slot
        } else {
            self.frames.push(Some(frame));
            self.frames.len() - 1
        };
        self.index.insert(base, slot);
        slot
    }

    /// Records that `point` changed the page in `slot`.
    pub(super) fn mark_dirty(&mut self, slot: usize, point: JournalPoint) {
        let frame = self.frames[slot].as_mut().expect("occupied cache slot");
        let base = frame.base;
        let before = frame.dirty;
        let after = match before {
            None => Dirty {
                oldest: point,
                newest: point,
            },
            Some(d) => Dirty {
                oldest: d.oldest.min(point),
                newest: d.newest.max(point),
            },
        };
        frame.dirty = Some(after);
        // Points mostly arrive in order, so a dirty page's oldest point rarely moves: touch the
        // ordered sets only for what changed.
        match before {
            None => {
                self.dirty_count += 1;
                self.by_oldest.insert((after.oldest, base));
            }
            Some(d) => {
                if d.oldest != after.oldest {
                    self.by_oldest.remove(&(d.oldest, base));
                    self.by_oldest.insert((after.oldest, base));
                }
                if d.newest == after.newest {
                    return;
                }
                self.forget_newest(d.newest);
            }
        }
        *self.newest.entry(after.newest).or_insert(0) += 1;
    }

    fn forget_newest(&mut self, point: JournalPoint) {
        let count = self
            .newest
            .get_mut(&point)
            .expect("dirty page's newest point");
        *count -= 1;
        if *count == 0 {
            self.newest.remove(&point);
        }
    }

    /// Encodes every dirty page whose oldest point has sequence <= `upto` into its next twin
    /// slot, one generation higher, and marks it clean, then evicts clean pages down to the
    /// capacity. Order: oldest dirtying point first, ties by twin base.
    pub(super) fn take_dirty(&mut self, upto: SequenceNumber, nonce: Nonce) -> Vec<(Pbn, Block)> {
        let due: Vec<(JournalPoint, Pbn)> = self
            .by_oldest
            .iter()
            .take_while(|(point, _)| point.sequence <= upto)
            .copied()
            .collect();
        let mut out = Vec::with_capacity(due.len());
        for key in due {
            self.by_oldest.remove(&key);
            let slot = self.index[&key.1];
            let frame = self.frames[slot].as_mut().expect("occupied cache slot");
            let dirty = frame.dirty.take().expect("page in the dirty set is dirty");
            assert_eq!(
                dirty.oldest, key.0,
                "dirty set out of step with page {}",
                key.1
            );
            let target = frame.written.other();
            frame.page.generation = frame.page.generation.next();
            frame.written = target;
            let at = target.pbn(frame.base);
            let mut block = [0_u8; uvdo_format::BLOCK_SIZE];
            frame.page.encode(nonce, at, &mut block);
            out.push((at, block));
            self.forget_newest(dirty.newest);
            self.dirty_count -= 1;
        }
        self.counters.writes += out.len() as u64;
        // The written pages are evictable now: shrink back to the budget.
        while self.len() > self.capacity && self.evict_one() {}
        out
    }

    /// Evicts one clean, unpinned page chosen by CLOCK; does nothing when every resident page
    /// is dirty or pinned (the cache then grows past its capacity until pages are written).
    /// Returns whether it evicted.
    fn evict_one(&mut self) -> bool {
        let pinned_clean = self
            .pinned
            .and_then(|base| self.index.get(&base))
            .is_some_and(|&slot| self.frame(slot).dirty.is_none());
        if self.len() <= self.dirty_count + usize::from(pinned_clean) {
            return false;
        }
        // Each occupied frame loses one credit per pass and holds at most INTERIOR_CREDIT, so
        // a clean frame is found within INTERIOR_CREDIT + 1 passes.
        let steps_max = self.frames.len() * (usize::from(INTERIOR_CREDIT) + 2);
        for _ in 0..steps_max {
            let slot = self.hand;
            self.hand = (self.hand + 1) % self.frames.len();
            let Some(frame) = self.frames[slot].as_mut() else {
                continue;
            };
            if frame.dirty.is_some() || Some(frame.base) == self.pinned {
                continue;
            }
            if frame.credit > 0 {
                frame.credit -= 1;
                continue;
            }
            let base = frame.base;
            self.frames[slot] = None;
            self.index.remove(&base);
            self.free.push(slot);
            self.counters.evictions += 1;
            return true;
        }
        unreachable!("a clean unpinned page exists but CLOCK found none");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn point(sequence: u64, entry: u16) -> JournalPoint {
        JournalPoint {
            sequence: SequenceNumber(sequence),
            entry,
        }
    }

    fn leaf(base: u64) -> Frame {
        Frame::new(Pbn(base), BlockMapPage::new_empty(LEAF_LEVEL), TwinSlot::B)
    }

    fn interior(base: u64) -> Frame {
        Frame::new(Pbn(base), BlockMapPage::new_empty(2), TwinSlot::A)
    }

    #[test]
    fn a_resident_page_costs_about_4_kib() {
        // docs/ARCHITECTURE.md, docs/BENCHMARKS.md, config.rs and VolumeStats quote these.
        assert_eq!(PACKED_ENTRIES_SIZE, 4060);
        assert_eq!(RESIDENT_PAGE_BYTES, 4157);
        let mut cache = PageCache::new(4);
        cache.insert(leaf(100));
        cache.insert(interior(10));
        assert_eq!(cache.bytes_held(), 2 * RESIDENT_PAGE_BYTES);
    }

    #[test]
    fn clean_pages_are_evicted_and_dirty_ones_kept() {
        let mut cache = PageCache::new(2);
        let a = cache.insert(leaf(100));
        cache.mark_dirty(a, point(1, 0));
        cache.insert(leaf(102));
        cache.insert(leaf(104));
        assert_eq!(cache.len(), 2);
        assert!(cache.peek(Pbn(100)).is_some(), "dirty page evicted");
        assert!(cache.peek(Pbn(102)).is_none());
        assert_eq!(cache.counters.evictions, 1);
        let c = cache.peek(Pbn(104)).unwrap();
        cache.mark_dirty(c, point(2, 0));
        cache.insert(leaf(106));
        assert_eq!(cache.len(), 3, "every page dirty: the cache grows");
    }

    #[test]
    fn interior_pages_outlive_leaves() {
        let mut cache = PageCache::new(3);
        cache.insert(interior(10));
        for base in (100..140).step_by(2) {
            // A walk passes through the interior page on its way to each leaf.
            assert!(
                cache.find(Pbn(10)).is_some(),
                "interior page evicted before leaves"
            );
            cache.insert(leaf(base));
        }
        assert!(
            cache.peek(Pbn(10)).is_some(),
            "interior page evicted before leaves"
        );
        assert_eq!(cache.len(), 3);
    }

    #[test]
    fn the_pinned_page_is_never_evicted() {
        let mut cache = PageCache::new(2);
        cache.insert(leaf(100));
        cache.pin(Pbn(100));
        for base in (102..120).step_by(2) {
            cache.insert(leaf(base));
        }
        assert!(cache.peek(Pbn(100)).is_some());
    }

    #[test]
    fn dirty_points_track_oldest_and_newest() {
        let mut cache = PageCache::new(4);
        let a = cache.insert(leaf(100));
        let b = cache.insert(leaf(102));
        cache.mark_dirty(a, point(5, 1));
        cache.mark_dirty(a, point(3, 0));
        cache.mark_dirty(b, point(4, 0));
        assert_eq!(cache.frame(a).dirty.unwrap().oldest, point(3, 0));
        assert_eq!(cache.frame(a).dirty.unwrap().newest, point(5, 1));
        assert_eq!(cache.newest_dirty_point(), Some(point(5, 1)));
        assert_eq!(cache.oldest_dirty_point(), Some(point(3, 0)));
        let written = cache.take_dirty(SequenceNumber(3), Nonce(1));
        assert_eq!(written.len(), 1);
        assert_eq!(
            written[0].0,
            Pbn(100),
            "never-written page goes to slot A first"
        );
        assert_eq!(cache.dirty_count(), 1);
        assert_eq!(cache.newest_dirty_point(), Some(point(4, 0)));
        let written = cache.take_dirty(SequenceNumber(9), Nonce(1));
        assert_eq!(written.len(), 1);
        assert_eq!((cache.dirty_count(), cache.newest_dirty_point()), (0, None));
        cache.mark_dirty(a, point(7, 0));
        let written = cache.take_dirty(SequenceNumber(7), Nonce(1));
        assert_eq!(written[0].0, Pbn(101), "second write alternates to slot B");
        assert_eq!(cache.frame(a).page.generation, SequenceNumber(2));
    }
}
