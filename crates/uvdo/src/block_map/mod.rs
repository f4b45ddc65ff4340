//! The block map: each LBN's [`Mapping`], in a forest of radix trees of block map pages behind
//! a bounded page cache (FORMAT.md, "The block map tree").
//!
//! `root_count` trees of height 5; the roots sit at fixed twin pairs written at format, every
//! other page is allocated lazily from slab data blocks through the caller's `allocate`
//! callback, which journals the allocation. All pages are twin pairs: a load keeps the newest
//! valid slot, and each write goes to the other slot one generation higher.
//!
//! The block map reads through the `&dyn Storage` it is given but never writes: `take_dirty`
//! hands encoded blocks to the caller, which orders them after the journal commits and flushes
//! they depend on. The engine calls every method under its metadata lock.
//!
//! Invariants:
//! - a walk is a loop over the levels from the root down, bounded by `TREE_HEIGHT`, and every
//!   page is decoded (or found resident) at the level its parent implies, so a bad pointer can
//!   never make a walk cycle;
//! - interior entries are `Unmapped` or `Data(base of an aligned twin pair of slab data
//!   blocks)`; anything else read from disk is `Corrupt`;
//! - a dirty page stays resident until `take_dirty` returns it; it remembers the oldest and the
//!   newest journal point that changed it since its last write;
//! - a page never written has generation 0 and slot B as its "newest", so its first write is
//!   generation 1 in slot A, like a root written at format.
//!
//! What the caller must guarantee (not checkable here):
//! - the recovery journal is durable through the newest point of every page `take_dirty`
//!   returns (`newest_dirty_point`), because a page is written with all its current content;
//! - the returned blocks are written before the next `lookup`, `prepare` or `for_each_*` call
//!   (a page evicted and reloaded before its write lands would be read stale), and made
//!   durable (flush) before the same page can be returned again: two unflushed writes of one
//!   page would overwrite both twin slots;
//! - `set` follows the `prepare` of the same LBN;
//! - during crash recovery (`replay`, in `replay.rs`), entries come in journal order from the
//!   block map head, and every page replay dirtied is written (`take_dirty`) before the
//!   journal head moves past them.

mod cache;
mod forest;
mod page;
pub(crate) mod rebuild;
// `allow`, not `expect`: the engine's recovery is being wired to `replay` in parallel, and an
// unfulfilled expectation would then fail its build.
#[cfg_attr(
    not(test),
    allow(
        dead_code,
        reason = "crash recovery calls replay; until it lands only tests do"
    )
)]
mod replay;

#[cfg(test)]
mod tests;

use uvdo_format::block_map_page::{
    BlockMapPage, LBN_LIMIT, LEAF_LEVEL, ROOT_LEVEL, TREE_HEIGHT, TreeAddress,
};
use uvdo_format::layout::Layout;
use uvdo_format::mapping::{COMPRESSED_SLOTS, PBN_MAX};
use uvdo_format::twin::TwinSlot;
use uvdo_format::{
    BLOCK_SIZE, Block, BlockType, FormatError, JournalPoint, Lbn, Mapping, Nonce, Pbn, Problem,
    SequenceNumber,
};
use uvdo_io::Storage;

use crate::error::VolumeError;
use cache::{Frame, PageCache};

/// A tree page the block map needs allocated, passed to the `allocate` callback of
/// [`BlockMap::prepare`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct PageAllocation {
    /// Twin base of the parent page whose slot will point at the new page.
    pub parent: Pbn,
    /// The slot in the parent.
    pub slot: u16,
    /// The level of the new page (0 for a leaf).
    pub level: u8,
    /// The LBN whose write needs the page.
    pub lbn: Lbn,
}

/// Where an LBN's mapping lives, returned by [`BlockMap::prepare`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct LeafSlot {
    /// Twin base of the leaf page.
    pub page: Pbn,
    /// The slot in the leaf (`lbn % 812`).
    pub slot: u16,
    /// The mapping the slot holds now.
    pub old: Mapping,
}

/// Counters and gauges of the block map.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct BlockMapStats {
    /// Pages the cache keeps resident when none is dirty (its budget).
    pub capacity_pages: u64,
    /// Pages resident in the cache.
    pub pages_cached: u64,
    /// Memory the resident pages hold (`cache::RESIDENT_PAGE_BYTES` each).
    pub cache_bytes: u64,
    /// Resident pages changed since they were last written.
    pub dirty_pages: u64,
    /// Page accesses answered from the cache.
    pub cache_hits: u64,
    /// Page accesses that read the store.
    pub cache_misses: u64,
    /// Pages read (each one twin pair, in one read).
    pub pages_read: u64,
    /// Pages handed to the caller to write.
    pub pages_written: u64,
    /// Clean pages dropped to make room.
    pub evictions: u64,
    /// Tree pages allocated by this instance.
    pub tree_pages_allocated: u64,
}

/// The LBN to mapping forest and its page cache.
#[derive(Debug)]
pub(crate) struct BlockMap {
    layout: Layout,
    nonce: Nonce,
    root_count: u16,
    cache: PageCache,
    /// The last prepared LBN and its leaf's twin base (pinned in the cache).
    prepared: Option<(Lbn, Pbn)>,
    tree_pages_allocated: u64,
}

impl BlockMap {
    /// Blocks to write at format: every root page empty, generation 1, in slot A.
    pub(crate) fn format_roots(layout: &Layout, nonce: Nonce) -> Vec<(Pbn, Block)> {
        (0..layout.params().root_count)
            .map(|root| {
                let mut page = BlockMapPage::new_empty(ROOT_LEVEL);
                page.generation = SequenceNumber(1);
                let at = TwinSlot::A.pbn(layout.root_base(root));
                let mut block = [0; BLOCK_SIZE];
                page.encode(nonce, at, &mut block);
                (at, block)
            })
            .collect()
    }

    /// An empty cache over the forest of `layout`; `cache_pages` is raised to 2, the fewest a
    /// walk needs (a parent and the child it loads).
    pub(crate) fn new(layout: Layout, nonce: Nonce, cache_pages: usize) -> Self {
        Self {
            layout,
            nonce,
            root_count: u16::from(layout.params().root_count),
            cache: PageCache::new(cache_pages.max(2)),
            prepared: None,
            tree_pages_allocated: 0,
        }
    }

    /// The depot grew to `layout` (more slabs, nothing else moved): tree pages in the new
    /// slabs are valid children from now on.
    pub(crate) fn grow(&mut self, layout: Layout) {
        assert_eq!(layout.params(), self.layout.params(), "same parameters");
        self.layout = layout;
    }

    /// The mapping of `lbn`; loads pages through the cache; never allocates: an LBN under an
    /// unallocated subtree is `Unmapped`.
    ///
    /// # Errors
    ///
    /// `InvalidArgument` for an LBN of 2^40 or more; `Io` when a read fails; `Corrupt` when a
    /// page on the way fails its checks (both twin slots, including both unwritten).
    pub(crate) fn lookup(&mut self, store: &dyn Storage, lbn: Lbn) -> Result<Mapping, VolumeError> {
        let (addr, mut base) = self.root_of(lbn)?;
        for level in (LEAF_LEVEL + 1..TREE_HEIGHT).rev() {
            let slot = self.load(store, base, level)?;
            match self.child_at(slot, addr.slots[usize::from(level)])? {
                Some(child) => base = child,
                None => return Ok(Mapping::Unmapped),
            }
        }
        let slot = self.load(store, base, LEAF_LEVEL)?;
        Ok(self
            .cache
            .frame(slot)
            .page
            .entries
            .get(usize::from(addr.slots[0])))
    }

    /// The leaf page and slot of `lbn` and its current mapping, allocating missing tree pages
    /// top-down through `allocate`, which journals each allocation and returns the new page's
    /// twin base and journal point. The new page is created empty and dirty with that point,
    /// and the parent's slot is set to point at it (the parent dirty with the same point). The
    /// leaf stays resident until the next `prepare`.
    ///
    /// # Errors
    ///
    /// As [`BlockMap::lookup`]; whatever `allocate` returns; `Invariant` when `allocate`
    /// returns a base that cannot be a tree page or is already resident. Pages allocated
    /// before an error stay in the tree.
    pub(crate) fn prepare(
        &mut self,
        store: &dyn Storage,
        lbn: Lbn,
        allocate: &mut dyn FnMut(PageAllocation) -> Result<(Pbn, JournalPoint), VolumeError>,
    ) -> Result<LeafSlot, VolumeError> {
        let (addr, mut base) = self.root_of(lbn)?;
        for level in (LEAF_LEVEL + 1..TREE_HEIGHT).rev() {
            let parent = self.load(store, base, level)?;
            let slot = addr.slots[usize::from(level)];
            base = match self.child_at(parent, slot)? {
                Some(child) => child,
                None => {
                    let request = PageAllocation {
                        parent: base,
                        slot,
                        level: level - 1,
                        lbn,
                    };
                    self.allocate_child(parent, request, allocate)?
                }
            };
        }
        let leaf = self.load(store, base, LEAF_LEVEL)?;
        self.cache.pin(base);
        self.prepared = Some((lbn, base));
        Ok(LeafSlot {
            page: base,
            slot: addr.slots[0],
            old: self
                .cache
                .frame(leaf)
                .page
                .entries
                .get(usize::from(addr.slots[0])),
        })
    }

    /// Sets `lbn`'s slot in its leaf, which the last [`BlockMap::prepare`] made resident,
    /// marks the leaf dirty with `point`, and returns the old mapping.
    ///
    /// # Errors
    ///
    /// `Invariant` when `lbn` is not the last prepared LBN or `new` cannot be encoded (PBN 0
    /// or over 36 bits, compressed slot out of range).
    pub(crate) fn set(
        &mut self,
        lbn: Lbn,
        new: Mapping,
        point: JournalPoint,
    ) -> Result<Mapping, VolumeError> {
        let leaf = match self.prepared {
            Some((prepared, leaf)) if prepared == lbn => leaf,
            _ => {
                return Err(VolumeError::invariant(
                    Some(lbn),
                    None,
                    "set without prepare",
                ));
            }
        };
        check_leaf_mapping(lbn, new)?;
        let slot = self.cache.peek(leaf).ok_or_else(|| {
            VolumeError::invariant(Some(lbn), Some(leaf), "prepared leaf not resident")
        })?;
        let index = usize::from(TreeAddress::of(lbn, self.root_count).slots[0]);
        let frame = self.cache.frame_mut(slot);
        assert_eq!(
            frame.page.level, LEAF_LEVEL,
            "prepared page {leaf} is a leaf"
        );
        let old = frame.page.entries.set(index, new);
        self.cache.mark_dirty(slot, point);
        Ok(old)
    }

    /// Number of dirty pages.
    #[cfg(test)]
    pub(crate) fn dirty_pages(&self) -> usize {
        self.cache.dirty_count()
    }

    /// The newest point among dirty pages: the journal must be durable through it before
    /// `take_dirty` returns everything.
    pub(crate) fn newest_dirty_point(&self) -> Option<JournalPoint> {
        self.cache.newest_dirty_point()
    }

    /// The oldest point among dirty pages: the journal must keep every entry from it on (its
    /// block map head), until the pages written since are durable.
    #[cfg(test)]
    pub(crate) fn oldest_dirty_point(&self) -> Option<JournalPoint> {
        self.cache.oldest_dirty_point()
    }

    /// True when dirty pages exceed half the cache budget: the engine then commits the journal
    /// and writes pages (dirty pages are never evicted; clean ones are).
    pub(crate) fn over_budget(&self) -> bool {
        self.cache.dirty_count() > self.cache.capacity() / 2
    }

    /// Every dirty page whose oldest dirtying point has sequence <= `upto`, encoded into its
    /// next twin slot with generation + 1 and marked clean, as (slot PBN, block) to write.
    /// Order: oldest dirtying point first, ties by twin base (children and parents mixed).
    pub(crate) fn take_dirty(&mut self, upto: SequenceNumber) -> Vec<(Pbn, Block)> {
        self.cache.take_dirty(upto, self.nonce)
    }

    /// Counters and gauges.
    pub(crate) fn stats(&self) -> BlockMapStats {
        let c = self.cache.counters;
        BlockMapStats {
            capacity_pages: self.cache.capacity() as u64,
            pages_cached: self.cache.len() as u64,
            cache_bytes: self.cache.bytes_held() as u64,
            dirty_pages: self.cache.dirty_count() as u64,
            cache_hits: c.hits,
            cache_misses: c.misses,
            pages_read: c.reads,
            pages_written: c.writes,
            evictions: c.evictions,
            tree_pages_allocated: self.tree_pages_allocated,
        }
    }

    /// The address of `lbn` and the twin base of its tree's root.
    fn root_of(&self, lbn: Lbn) -> Result<(TreeAddress, Pbn), VolumeError> {
        if lbn.0 >= LBN_LIMIT {
            return Err(VolumeError::invalid(format!("LBN {lbn} is beyond 2^40")));
        }
        let addr = TreeAddress::of(lbn, self.root_count);
        let root = u8::try_from(addr.root).expect("root below root_count, at most 60");
        Ok((addr, self.layout.root_base(root)))
    }

    /// The cache slot of the page at `base`, read from the store on a miss.
    fn load(&mut self, store: &dyn Storage, base: Pbn, level: u8) -> Result<usize, VolumeError> {
        if let Some(slot) = self.cache.find(base) {
            self.cache.counters.hits += 1;
            check_resident_level(base, self.cache.frame(slot).page.level, level)?;
            return Ok(slot);
        }
        self.cache.counters.misses += 1;
        self.cache.counters.reads += 1;
        let (page, written) = page::read_twins(store, self.nonce, base, level)?;
        Ok(self.cache.insert(Frame::new(base, page, written)))
    }

    /// The child named by `slot` of the interior page in cache slot `frame`, if allocated.
    fn child_at(&self, frame: usize, slot: u16) -> Result<Option<Pbn>, VolumeError> {
        let frame = self.cache.frame(frame);
        match frame.page.entries.get(usize::from(slot)) {
            Mapping::Unmapped => Ok(None),
            Mapping::Data(child) => {
                page::check_child(&self.layout, frame.written.pbn(frame.base), child)?;
                Ok(Some(child))
            }
            other => Err(VolumeError::invariant(
                None,
                Some(frame.base),
                format!("interior page holds {other:?} in slot {slot}"),
            )),
        }
    }

    /// Allocates the page `request` describes under the parent in cache slot `parent`.
    fn allocate_child(
        &mut self,
        parent: usize,
        request: PageAllocation,
        allocate: &mut dyn FnMut(PageAllocation) -> Result<(Pbn, JournalPoint), VolumeError>,
    ) -> Result<Pbn, VolumeError> {
        let (child, point) = allocate(request)?;
        let lbn = Some(request.lbn);
        if page::check_child(&self.layout, request.parent, child).is_err() {
            let what = format!("allocated tree page {child} is not an aligned data block pair");
            return Err(VolumeError::invariant(lbn, Some(child), what));
        }
        if self.cache.peek(child).is_some() {
            let what = format!("allocated tree page {child} is already in the tree");
            return Err(VolumeError::invariant(lbn, Some(child), what));
        }
        // The parent first: once dirty it cannot be evicted by the child's insert.
        let parent_page = &mut self.cache.frame_mut(parent).page;
        parent_page
            .entries
            .set(usize::from(request.slot), Mapping::Data(child));
        self.cache.mark_dirty(parent, point);
        let page = BlockMapPage::new_empty(request.level);
        let slot = self.cache.insert(Frame::new(child, page, TwinSlot::B));
        self.cache.mark_dirty(slot, point);
        self.tree_pages_allocated += 1;
        Ok(child)
    }
}

/// A resident page reached at another level than its parent implies: two parents name it.
fn check_resident_level(base: Pbn, found: u8, expected: u8) -> Result<(), FormatError> {
    if found == expected {
        return Ok(());
    }
    Err(FormatError::new(
        BlockType::BlockMapPage,
        base,
        Problem::InvalidField {
            field: "level",
            expected: "the level the parent page implies (0..=4)",
            found: u64::from(found),
        },
    ))
}

/// Refuses a mapping the leaf encoder would panic on.
fn check_leaf_mapping(lbn: Lbn, mapping: Mapping) -> Result<(), VolumeError> {
    let ok = match mapping {
        Mapping::Unmapped | Mapping::Zero => true,
        Mapping::Data(pbn) => (1..=PBN_MAX).contains(&pbn.0),
        Mapping::Compressed { pbn, slot } => {
            (1..=PBN_MAX).contains(&pbn.0) && slot < COMPRESSED_SLOTS
        }
    };
    if ok {
        Ok(())
    } else {
        let what = format!("mapping {mapping:?} cannot be stored");
        Err(VolumeError::invariant(Some(lbn), mapping.pbn(), what))
    }
}
