//! Crash recovery: applying durable recovery journal entries to the tree.
//!
//! After a crash every page on disk is its newest valid twin, which holds some state at or
//! after the journal's block map head (a torn write falls back to the older twin). Replay
//! walks each entry's LBN path from the root and *sets* the slot the entry names, so the last
//! entry for a slot wins whatever the page held, and replaying the same entries again gives
//! the same tree (SPEC I6).
//!
//! Decision table for the child named by a page allocation entry:
//!
//! | child resident | a twin slot decodes at `parent.level - 1` | action                  |
//! |----------------|-------------------------------------------|-------------------------|
//! | yes            | -                                         | use it (level checked)  |
//! | no             | yes                                       | load the newest copy    |
//! | no             | no (unwritten, torn, or old data blocks)  | create empty, dirty     |
//!
//! Creating the child empty loses nothing: its allocation entry is in the replay window, so
//! every change the page ever saw comes after it in the journal and is replayed onto it. Its
//! slots may hold anything when neither decodes: never written, a first write torn, or the
//! contents of the data blocks the pair held before it became a tree page.
//!
//! Invariants: a walk is a loop bounded by `TREE_HEIGHT`; a page is dirtied only when replay
//! changes it (a newly created child always); replay never calls an allocator; an entry that
//! disagrees with the tree is `Corrupt`, never a panic.

use uvdo_format::block_map_page::{
    BlockMapPage, ENTRIES_PER_PAGE, ENTRIES_PER_PAGE_U64, LBN_LIMIT, LEAF_LEVEL, TREE_HEIGHT,
};
use uvdo_format::recovery_journal::{EntryKind, RecoveryJournalEntry};
use uvdo_format::twin::TwinSlot;
use uvdo_format::{BlockType, FormatError, JournalPoint, Mapping, Pbn, Problem};
use uvdo_io::Storage;

use super::cache::Frame;
use super::{BlockMap, check_leaf_mapping, check_resident_level, page};
use crate::error::VolumeError;
use crate::journal::entries::ReplayEntries;

impl BlockMap {
    /// Crash recovery: applies one durable journal entry at `point` to the tree, with set
    /// semantics, so applying the same entries again gives the same tree. Walks from the root
    /// toward `entry.lbn`, reading pages through the cache; never allocates.
    ///
    /// - `PageAllocation`: the page with twin base `entry.page` on the LBN's path gets
    ///   `Data(child)` in `entry.slot` (already holding it is fine: the parent was written
    ///   after the allocation); the child is loaded, or created empty at the level below when
    ///   neither of its twin slots decodes (see the module's decision table).
    /// - `DataRemap`: the LBN's leaf, which must be `entry.page`, gets `entry.new` in slot
    ///   `lbn % 812`.
    ///
    /// Each page replay changes is dirty with `point`. Dirty pages are never evicted, so the
    /// cache may grow past its budget until the caller writes them all with `take_dirty`.
    ///
    /// # Errors
    ///
    /// `Io` when a read fails; `Corrupt` when a page on the path fails its checks, or the entry
    /// disagrees with the tree: a malformed entry, an allocation whose parent is not on the
    /// path or whose slot holds another child, a remap under a missing page or naming another
    /// leaf. Pages changed before an error stay changed.
    pub(crate) fn replay(
        &mut self,
        store: &dyn Storage,
        point: JournalPoint,
        entry: &RecoveryJournalEntry,
    ) -> Result<(), VolumeError> {
        self.replay_entries(store, &[(point, *entry)][..])
    }

    /// Crash recovery: applies `entries`, in journal order, each as [`BlockMap::replay`] does.
    /// A run of remaps into one leaf (sequential LBNs) walks the tree once, for its first
    /// entry; see [`LastLeaf`].
    ///
    /// # Errors
    ///
    /// As [`BlockMap::replay`], for the first entry that fails; the entries after it are not
    /// applied.
    pub(crate) fn replay_entries(
        &mut self,
        store: &dyn Storage,
        entries: &(impl ReplayEntries + ?Sized),
    ) -> Result<(), VolumeError> {
        let mut leaf = None;
        let result = entries.try_for_each_from(JournalPoint::default(), |point, entry| {
            self.replay_one(store, point, &entry, &mut leaf)
        });
        self.leave_leaf(&mut leaf);
        result
    }

    #[inline]
    fn replay_one(
        &mut self,
        store: &dyn Storage,
        point: JournalPoint,
        entry: &RecoveryJournalEntry,
        leaf: &mut Option<LastLeaf>,
    ) -> Result<(), VolumeError> {
        check_entry(entry)?;
        match entry.kind {
            EntryKind::PageAllocation => {
                self.leave_leaf(leaf);
                self.replay_allocation(store, point, entry)
            }
            EntryKind::DataRemap => self.replay_remap(store, point, entry, leaf),
        }
    }

    fn replay_allocation(
        &mut self,
        store: &dyn Storage,
        point: JournalPoint,
        entry: &RecoveryJournalEntry,
    ) -> Result<(), VolumeError> {
        let Mapping::Data(child) = entry.new else {
            unreachable!("check_entry accepts only Data for an allocation");
        };
        let (addr, mut base) = self.root_of(entry.lbn)?;
        for level in (LEAF_LEVEL + 1..TREE_HEIGHT).rev() {
            let frame = self.load(store, base, level)?;
            let slot = addr.slots[usize::from(level)];
            if base == entry.page {
                if entry.slot != slot {
                    let found = u64::from(entry.slot);
                    return Err(disagrees(base, "allocation slot", "the LBN's slot", found));
                }
                return self.link_child(store, frame, slot, child, point);
            }
            match self.child_at(frame, slot)? {
                Some(next) => base = next,
                None => break,
            }
        }
        Err(disagrees(
            entry.page,
            "allocation parent",
            "an interior page on the LBN's path",
            entry.page.0,
        ))
    }

    /// Points `slot` of the interior page in cache slot `parent` at `child`, then makes the
    /// child resident.
    fn link_child(
        &mut self,
        store: &dyn Storage,
        parent: usize,
        slot: u16,
        child: Pbn,
        point: JournalPoint,
    ) -> Result<(), VolumeError> {
        let frame = self.cache.frame(parent);
        let (base, level) = (frame.base, frame.page.level);
        let linked = frame.page.entries.get(usize::from(slot));
        page::check_child(&self.layout, frame.written.pbn(base), child)?;
        let child_level = level - 1;
        // Refuse a child already in the tree elsewhere before the parent changes.
        if let Some(resident) = self.cache.peek(child) {
            check_resident_level(child, self.cache.frame(resident).page.level, child_level)?;
        }
        match linked {
            Mapping::Data(pbn) if pbn == child => {}
            Mapping::Unmapped => {
                let entries = &mut self.cache.frame_mut(parent).page.entries;
                entries.set(usize::from(slot), Mapping::Data(child));
                // Dirty before the child's insert, which may evict clean pages.
                self.cache.mark_dirty(parent, point);
            }
            other => {
                let found = other.pbn().map_or(0, |p| p.0);
                return Err(disagrees(
                    base,
                    "allocated slot",
                    "unmapped or the child",
                    found,
                ));
            }
        }
        self.load_or_create(store, child, child_level, point)
    }

    /// Makes the page at `base` resident: as it is, read from its twins, or created empty and
    /// dirty with `point` when neither twin slot decodes.
    fn load_or_create(
        &mut self,
        store: &dyn Storage,
        base: Pbn,
        level: u8,
        point: JournalPoint,
    ) -> Result<(), VolumeError> {
        if let Some(slot) = self.cache.find(base) {
            self.cache.counters.hits += 1;
            return Ok(check_resident_level(
                base,
                self.cache.frame(slot).page.level,
                level,
            )?);
        }
        self.cache.counters.misses += 1;
        self.cache.counters.reads += 1;
        match page::read_twins(store, self.nonce, base, level) {
            Ok((page, written)) => {
                self.cache.insert(Frame::new(base, page, written));
            }
            Err(VolumeError::Corrupt(_)) => {
                let page = BlockMapPage::new_empty(level);
                let slot = self.cache.insert(Frame::new(base, page, TwinSlot::B));
                self.cache.mark_dirty(slot, point);
            }
            Err(e) => return Err(e),
        }
        Ok(())
    }

    #[inline]
    fn replay_remap(
        &mut self,
        store: &dyn Storage,
        point: JournalPoint,
        entry: &RecoveryJournalEntry,
        leaf: &mut Option<LastLeaf>,
    ) -> Result<(), VolumeError> {
        let page = entry.lbn.0 / ENTRIES_PER_PAGE_U64;
        let last = match leaf {
            Some(last) if last.page == page => last,
            _ => {
                self.leave_leaf(leaf);
                let frame = self.find_leaf(store, entry)?;
                leaf.insert(LastLeaf {
                    page,
                    base: entry.page,
                    frame,
                    newest_change: None,
                })
            }
        };
        if last.base != entry.page {
            return Err(disagrees(
                entry.page,
                "remap page",
                "the LBN's leaf",
                last.base.0,
            ));
        }
        let frame = self.cache.frame_mut(last.frame);
        let slot = usize::from(entry.slot);
        if frame.page.entries.get(slot) != entry.new {
            frame.page.entries.set(slot, entry.new);
            if frame.dirty.is_none() {
                // Dirty at once, so nothing can evict it before `leave_leaf`.
                self.cache.mark_dirty(last.frame, point);
            } else {
                last.newest_change = Some(point);
            }
        }
        Ok(())
    }

    /// Walks from the root to the leaf of `entry.lbn`, which must be `entry.page`, and
    /// returns its cache slot.
    fn find_leaf(
        &mut self,
        store: &dyn Storage,
        entry: &RecoveryJournalEntry,
    ) -> Result<usize, VolumeError> {
        let (addr, mut base) = self.root_of(entry.lbn)?;
        for level in (LEAF_LEVEL + 1..TREE_HEIGHT).rev() {
            let frame = self.load(store, base, level)?;
            base = self
                .child_at(frame, addr.slots[usize::from(level)])?
                .ok_or_else(|| {
                    let what = "an allocated child (allocations precede remaps)";
                    disagrees(base, "remap path", what, entry.lbn.0)
                })?;
        }
        if base != entry.page {
            return Err(disagrees(
                entry.page,
                "remap page",
                "the LBN's leaf",
                base.0,
            ));
        }
        assert_eq!(entry.slot, addr.slots[0], "check_entry checked the slot");
        self.load(store, base, LEAF_LEVEL)
    }

    /// Done with the leaf of a run of remaps, if any: records its newest change.
    fn leave_leaf(&mut self, leaf: &mut Option<LastLeaf>) {
        if let Some(LastLeaf {
            frame,
            newest_change: Some(point),
            ..
        }) = leaf.take()
        {
            self.cache.mark_dirty(frame, point);
        }
    }
}

/// The leaf of the last remap replayed, kept so the next remap into the same leaf skips
/// the walk. Reusing it gives what a walk would: a path never changes during replay (an
/// allocation only fills an unmapped slot, and a slot naming another child is `Corrupt`), and
/// the leaf cannot leave the cache while the run lasts, because only the walk of another
/// entry loads pages (and leaves the run first), and a changed leaf is dirty.
///
/// Marking a page dirty costs two ordered-set updates, so a run marks its leaf at its first
/// change and once more, with its newest change, when it ends: the same dirty state (oldest
/// and newest point) as marking it at every change.
#[derive(Debug)]
struct LastLeaf {
    /// The leaf's page number: `lbn / 812`.
    page: u64,
    /// Its twin base, `entry.page` of the run's first entry.
    base: Pbn,
    /// Its cache slot.
    frame: usize,
    /// The newest change not yet marked.
    newest_change: Option<JournalPoint>,
}

/// The checks that keep a malformed entry from panicking a walk (the journal decoder makes
/// the same ones; replay takes any entry).
#[inline]
fn check_entry(entry: &RecoveryJournalEntry) -> Result<(), VolumeError> {
    let at = entry.page;
    if usize::from(entry.slot) >= ENTRIES_PER_PAGE {
        let found = u64::from(entry.slot);
        return Err(disagrees(at, "journal entry slot", "below 812", found));
    }
    if entry.lbn.0 >= LBN_LIMIT {
        return Err(disagrees(
            at,
            "journal entry lbn",
            "below 2^40",
            entry.lbn.0,
        ));
    }
    match entry.kind {
        EntryKind::PageAllocation if !matches!(entry.new, Mapping::Data(_)) => {
            let found = entry.new.pbn().map_or(0, |p| p.0);
            Err(disagrees(
                at,
                "allocation new mapping",
                "the child's PBN",
                found,
            ))
        }
        EntryKind::PageAllocation => Ok(()),
        EntryKind::DataRemap => {
            let slot = entry.lbn.0 % ENTRIES_PER_PAGE_U64;
            if slot != u64::from(entry.slot) {
                let found = u64::from(entry.slot);
                return Err(disagrees(at, "remap slot", "lbn mod 812", found));
            }
            check_leaf_mapping(entry.lbn, entry.new).map_err(|_| {
                let found = entry.new.pbn().map_or(0, |p| p.0);
                disagrees(at, "remap new mapping", "a mapping a leaf can hold", found)
            })
        }
    }
}

/// A journal entry that the tree contradicts, reported against the page involved.
fn disagrees(at: Pbn, field: &'static str, expected: &'static str, found: u64) -> VolumeError {
    FormatError::new(
        BlockType::BlockMapPage,
        at,
        Problem::InvalidField {
            field,
            expected,
            found,
        },
    )
    .into()
}
