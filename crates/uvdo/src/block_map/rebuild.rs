//! The force rebuild's walk of the whole forest (volume/rebuild.rs drives it).
//!
//! Level by level from the roots down (a loop over `TREE_HEIGHT` levels, never recursion), as
//! `forest.rs` scans, but damage is repaired instead of reported:
//!
//! - a root whose twins both fail their checks: an empty root; its whole tree is lost;
//! - an interior entry that cannot name a tree page, or names one the sink refuses (already a
//!   tree page): the entry is unmapped; the subtree is lost;
//! - a page whose twins both fail their checks: the parent's entry is unmapped; the subtree is
//!   lost;
//! - a leaf entry the sink refuses: the entry is unmapped.
//!
//! The sink claims each tree page when its parent is read (so every tree page is known before
//! the first leaf entry is counted) and gives the claim back if the page itself turns out
//! unreadable. Leaves are visited in LBN order, so "the first 254 references" is well defined.
//! Every page changed is resident and dirty with the given point until `take_dirty`.
//!
//! A store error (`Io`) ends the walk: nothing is written, and the rebuild can be run again.

use uvdo_format::block_map_page::{
    BlockMapPage, ENTRIES_PER_PAGE_U64, LBN_LIMIT, LEAF_LEVEL, PackedEntries, ROOT_LEVEL, first_lbn,
};
use uvdo_format::twin::TwinSlot;
use uvdo_format::{JournalPoint, Lbn, Mapping, Pbn};
use uvdo_io::Storage;

use super::cache::Frame;
use super::{BlockMap, check_resident_level, page};
use crate::error::VolumeError;

/// Lost pages listed in full; past this only counted.
const LOST_PAGES_LISTED_MAX: usize = 100;

/// What the walk asks of its caller.
pub(crate) trait RebuildSink {
    /// Claims the tree page at twin base `base` (at `level`); false refuses it, and the
    /// pointer to it is dropped.
    fn claim_tree_page(&mut self, base: Pbn, level: u8) -> bool;
    /// Gives back a claim: the page could not be read.
    fn release_tree_page(&mut self, base: Pbn);
    /// A mapped leaf entry, in LBN order; false drops it (the slot becomes `Unmapped`).
    fn mapping(&mut self, lbn: Lbn, mapping: Mapping) -> bool;
    /// Progress of one level: pages done of pages at `level`.
    fn progress(&mut self, level: u8, done: u64, total: u64);
}

/// A subtree the walk gave up.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct LostPage {
    /// Twin base of the page (or of the page the bad pointer named).
    pub(crate) base: Pbn,
    /// Its level (0 for a leaf).
    pub(crate) level: u8,
    /// LBNs below the logical size it covered.
    pub(crate) lbns: u64,
}

/// What the walk repaired.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct ForestRepair {
    /// Pages whose twins both failed their checks (roots included).
    pub(crate) unreadable_pages: u64,
    /// Interior entries dropped: not a tree page, or a page already claimed.
    pub(crate) bad_pointers: u64,
    /// LBNs (below the logical size) under lost subtrees.
    pub(crate) lbns_lost: u64,
    /// The first lost subtrees.
    pub(crate) lost: Vec<LostPage>,
    /// Leaf entries the sink dropped.
    pub(crate) mappings_dropped: u64,
}

impl ForestRepair {
    fn lose(&mut self, page: LostPage) {
        self.lbns_lost += page.lbns;
        if self.lost.len() < LOST_PAGES_LISTED_MAX {
            self.lost.push(page);
        }
    }
}

/// A page to visit.
#[derive(Clone, Copy, Debug)]
struct Node {
    base: Pbn,
    root: u16,
    /// Its index among the pages of its level in its tree.
    index: u64,
    /// The parent's twin base and the slot naming this page; `None` for a root.
    parent: Option<(Pbn, u16)>,
}

/// One page of the walk and what every step needs.
#[derive(Clone, Copy, Debug)]
struct Step {
    node: Node,
    level: u8,
    logical_blocks: u64,
    point: JournalPoint,
}

impl BlockMap {
    /// Walks every tree, repairing as the module doc says; pages changed are dirty with
    /// `point`. `logical_blocks` bounds the LBNs counted as lost.
    ///
    /// # Errors
    ///
    /// `Io` when a read fails.
    pub(crate) fn rebuild_walk(
        &mut self,
        store: &dyn Storage,
        logical_blocks: u64,
        point: JournalPoint,
        sink: &mut dyn RebuildSink,
    ) -> Result<ForestRepair, VolumeError> {
        let mut repair = ForestRepair::default();
        let mut nodes: Vec<Node> = (0..self.layout.params().root_count)
            .map(|root| Node {
                base: self.layout.root_base(root),
                root: u16::from(root),
                index: 0,
                parent: None,
            })
            .collect();
        for level in (LEAF_LEVEL..=ROOT_LEVEL).rev() {
            if level == LEAF_LEVEL {
                // Leaf page p = index * root_count + root: this is LBN order.
                nodes.sort_unstable_by_key(|n| (n.index, n.root));
            }
            let mut below = Vec::new();
            let total = nodes.len() as u64;
            for (done, node) in (1_u64..).zip(&nodes) {
                let step = Step {
                    node: *node,
                    level,
                    logical_blocks,
                    point,
                };
                match self.read_or_give_up(store, step, &mut repair)? {
                    Some(entries) if level == LEAF_LEVEL => {
                        self.rebuild_leaf(store, step, &entries, sink, &mut repair)?;
                    }
                    Some(entries) => {
                        self.rebuild_interior(
                            store,
                            step,
                            &entries,
                            sink,
                            &mut repair,
                            &mut below,
                        )?;
                    }
                    None if node.parent.is_some() => sink.release_tree_page(node.base),
                    None => {}
                }
                sink.progress(level, done, total);
            }
            nodes = below;
        }
        Ok(repair)
    }

    /// The entries of the page of `step`; `None` when its twins both fail their checks: the
    /// subtree is given up, and the parent's entry unmapped (a root is started again, empty).
    fn read_or_give_up(
        &mut self,
        store: &dyn Storage,
        step: Step,
        repair: &mut ForestRepair,
    ) -> Result<Option<PackedEntries>, VolumeError> {
        let node = step.node;
        match self.rebuild_read(store, node.base, step.level) {
            Ok(entries) => return Ok(Some(entries)),
            Err(VolumeError::Corrupt(_)) => {}
            Err(e) => return Err(e),
        }
        repair.unreadable_pages += 1;
        let lbns = self.lbns_under(node.root, step.level, node.index, step.logical_blocks);
        repair.lose(LostPage {
            base: node.base,
            level: step.level,
            lbns,
        });
        match node.parent {
            Some((parent, slot)) => {
                self.unmap_slot(store, parent, step.level + 1, slot, step.point)?;
            }
            None => {
                // A root lives at a fixed place: start it again, empty. Its first write goes to
                // slot A with generation 1; slot B fails its checks and keeps failing them.
                let page = BlockMapPage::new_empty(ROOT_LEVEL);
                let slot = self.cache.insert(Frame::new(node.base, page, TwinSlot::B));
                self.cache.mark_dirty(slot, step.point);
            }
        }
        Ok(None)
    }

    /// Checks every entry of the interior page of `step`, claiming and queueing its children.
    fn rebuild_interior(
        &mut self,
        store: &dyn Storage,
        step: Step,
        entries: &PackedEntries,
        sink: &mut dyn RebuildSink,
        repair: &mut ForestRepair,
        below: &mut Vec<Node>,
    ) -> Result<(), VolumeError> {
        let (node, level) = (step.node, step.level);
        let mut dropped = Vec::new();
        for (slot, entry) in (0_u16..).zip(entries.iter()) {
            let child_index = node.index * ENTRIES_PER_PAGE_U64 + u64::from(slot);
            let child = match entry {
                Mapping::Unmapped => continue,
                Mapping::Data(child)
                    if page::check_child(&self.layout, node.base, child).is_ok()
                        && sink.claim_tree_page(child, level - 1) =>
                {
                    child
                }
                other => {
                    repair.bad_pointers += 1;
                    let lbns =
                        self.lbns_under(node.root, level - 1, child_index, step.logical_blocks);
                    repair.lose(LostPage {
                        base: other.pbn().unwrap_or(Pbn(0)),
                        level: level - 1,
                        lbns,
                    });
                    dropped.push(slot);
                    continue;
                }
            };
            below.push(Node {
                base: child,
                root: node.root,
                index: child_index,
                parent: Some((node.base, slot)),
            });
        }
        for slot in dropped {
            self.unmap_slot(store, node.base, level, slot, step.point)?;
        }
        Ok(())
    }

    /// Gives every mapped entry of the leaf of `step` to the sink, unmapping those it drops.
    fn rebuild_leaf(
        &mut self,
        store: &dyn Storage,
        step: Step,
        entries: &PackedEntries,
        sink: &mut dyn RebuildSink,
        repair: &mut ForestRepair,
    ) -> Result<(), VolumeError> {
        let node = step.node;
        let first = first_lbn(node.root, node.index, self.root_count);
        let mut dropped = Vec::new();
        for (slot, mapping) in (0_u16..).zip(entries.iter()) {
            if !mapping.is_mapped() {
                continue;
            }
            // A leaf past 2^40 has no LBN the sink could keep: it gets one it refuses.
            let lbn = Lbn((first.0 + u64::from(slot)).min(LBN_LIMIT));
            if !sink.mapping(lbn, mapping) {
                dropped.push(slot);
            }
        }
        repair.mappings_dropped += dropped.len() as u64;
        for slot in dropped {
            self.unmap_slot(store, node.base, LEAF_LEVEL, slot, step.point)?;
        }
        Ok(())
    }

    /// The entries of the page at `base`: the resident copy (which replay may have changed),
    /// or one read from its twins without entering the cache.
    fn rebuild_read(
        &mut self,
        store: &dyn Storage,
        base: Pbn,
        level: u8,
    ) -> Result<PackedEntries, VolumeError> {
        if let Some(slot) = self.cache.peek(base) {
            let page = &self.cache.frame(slot).page;
            check_resident_level(base, page.level, level)?;
            return Ok(page.entries.clone());
        }
        self.cache.counters.reads += 1;
        let (page, _) = page::read_twins(store, self.nonce, base, level)?;
        Ok(page.entries)
    }

    /// Sets `slot` of the page at `base` to `Unmapped`, making the page resident and dirty.
    fn unmap_slot(
        &mut self,
        store: &dyn Storage,
        base: Pbn,
        level: u8,
        slot: u16,
        point: JournalPoint,
    ) -> Result<(), VolumeError> {
        let frame = self.load(store, base, level)?;
        self.cache
            .frame_mut(frame)
            .page
            .entries
            .set(usize::from(slot), Mapping::Unmapped);
        self.cache.mark_dirty(frame, point);
        Ok(())
    }

    /// LBNs below `logical_blocks` under the page of tree `root` at `level` with `index`.
    fn lbns_under(&self, root: u16, level: u8, index: u64, logical_blocks: u64) -> u64 {
        let per_page = ENTRIES_PER_PAGE_U64;
        let roots = u64::from(self.root_count);
        let root = u64::from(root);
        let span = per_page.pow(u32::from(level));
        // Leaf indexes j of this tree in [low, high); leaf page j * roots + root.
        let low = index.saturating_mul(span);
        let high = index.saturating_add(1).saturating_mul(span);
        let leaf_pages = logical_blocks.div_ceil(per_page);
        if leaf_pages <= root {
            return 0;
        }
        let high = high.min((leaf_pages - root).div_ceil(roots));
        if high <= low {
            return 0;
        }
        let pages = high - low;
        let mut lbns = pages * per_page;
        let last_page = (high - 1) * roots + root;
        if last_page == leaf_pages - 1 {
            lbns -= leaf_pages * per_page - logical_blocks;
        }
        lbns
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use uvdo_format::layout::{Layout, LayoutParams};
    use uvdo_format::{BlockCount, Nonce};

    fn map(root_count: u8) -> BlockMap {
        let params = LayoutParams {
            slab_blocks: BlockCount(16),
            slab_journal_blocks: BlockCount(8),
            recovery_journal_blocks: BlockCount(8),
            root_count,
            index_blocks: BlockCount(1),
        };
        let depot = params.regions().unwrap()[5].start.0;
        let layout = Layout::compute(params, BlockCount(depot + 32)).unwrap();
        BlockMap::new(layout, Nonce(1), 2)
    }

    #[test]
    fn lost_lbns_are_those_below_the_logical_size() {
        let one = map(1);
        assert_eq!(one.lbns_under(0, 0, 0, 1000), 812);
        assert_eq!(one.lbns_under(0, 0, 1, 1000), 188);
        assert_eq!(one.lbns_under(0, 0, 2, 1000), 0);
        assert_eq!(one.lbns_under(0, 1, 0, 1000), 1000);
        assert_eq!(one.lbns_under(0, ROOT_LEVEL, 0, 1 << 40), 1 << 40);
        // Three roots: leaf pages 0, 3, 6, .. belong to root 0.
        let three = map(3);
        assert_eq!(three.lbns_under(0, 1, 0, 812 * 7), 812 * 3);
        assert_eq!(three.lbns_under(1, 1, 0, 812 * 7), 812 * 2);
        assert_eq!(three.lbns_under(0, 1, 0, 812 * 6 + 5), 812 * 2 + 5);
        assert_eq!(three.lbns_under(2, 0, 0, 812 * 2), 0);
    }
}
