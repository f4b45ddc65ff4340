//! Whole-forest scans: every allocated tree page, and every mapped LBN in order.
//!
//! A scan goes level by level from the roots down (a loop over `TREE_HEIGHT` levels, never
//! recursion), collecting each level's pages from the pointers of the level above. Resident
//! pages are used as they are (dirty ones hold the newest content); other pages are read and
//! decoded without entering the cache, so an audit does not evict the working set.

use uvdo_format::block_map_page::{
    BlockMapPage, ENTRIES_PER_PAGE_U64, LBN_LIMIT, LEAF_LEVEL, ROOT_LEVEL, first_lbn,
};
use uvdo_format::{BlockType, FormatError, Lbn, Mapping, Pbn, Problem};
use uvdo_io::Storage;

use super::{BlockMap, check_resident_level, page};
use crate::error::VolumeError;

/// A page found by a scan.
#[derive(Clone, Copy, Debug)]
struct Node {
    base: Pbn,
    root: u16,
    /// Its index among the pages of its level in its tree (the leaf index for leaves).
    index: u64,
}

/// A page as a scan sees it: in the cache, or read for the scan only.
enum Scanned {
    Resident(usize),
    Read(BlockMapPage, Pbn),
}

impl BlockMap {
    /// Calls `f` for every mapped (not `Unmapped`) leaf entry, in LBN order.
    ///
    /// # Errors
    ///
    /// `Io` or `Corrupt` from any page of the forest; `f` may have been called for LBNs before
    /// the failing page.
    pub(crate) fn for_each_mapping(
        &mut self,
        store: &dyn Storage,
        f: &mut dyn FnMut(Lbn, Mapping),
    ) -> Result<(), VolumeError> {
        let mut leaves = self.scan_levels(store, &mut |_, _| {})?;
        // Leaf page p = index * root_count + root, so this is LBN order.
        leaves.sort_unstable_by_key(|n| (n.index, n.root));
        for leaf in leaves {
            let first = first_lbn(leaf.root, leaf.index, self.root_count);
            if first.0 >= LBN_LIMIT {
                return Err(beyond_lbn_limit(leaf).into());
            }
            let scanned = self.scan_page(store, leaf.base, LEAF_LEVEL)?;
            let page = self.scanned_page(&scanned);
            for (lbn, mapping) in (first.0..).zip(page.entries.iter()) {
                if mapping.is_mapped() {
                    f(Lbn(lbn), mapping);
                }
            }
        }
        Ok(())
    }

    /// Calls `f(twin base, level)` for every allocated tree page other than the roots: level
    /// by level from 3 down to the leaves, each level in tree order.
    ///
    /// # Errors
    ///
    /// `Io` or `Corrupt` from any interior page.
    pub(crate) fn for_each_tree_page(
        &mut self,
        store: &dyn Storage,
        f: &mut dyn FnMut(Pbn, u8),
    ) -> Result<(), VolumeError> {
        self.scan_levels(store, f).map(drop)
    }

    /// Walks every tree from the roots to level 1, calling `visit` for each non-root page
    /// found, and returns the leaves.
    fn scan_levels(
        &mut self,
        store: &dyn Storage,
        visit: &mut dyn FnMut(Pbn, u8),
    ) -> Result<Vec<Node>, VolumeError> {
        let mut nodes: Vec<Node> = (0..self.layout.params().root_count)
            .map(|root| Node {
                base: self.layout.root_base(root),
                root: u16::from(root),
                index: 0,
            })
            .collect();
        for level in (LEAF_LEVEL + 1..=ROOT_LEVEL).rev() {
            let mut below = Vec::new();
            for node in &nodes {
                self.children(store, *node, level, &mut below)?;
            }
            for child in &below {
                visit(child.base, level - 1);
            }
            nodes = below;
        }
        Ok(nodes)
    }

    /// Appends the children of the interior page `node` at `level` to `out`, in slot order.
    fn children(
        &mut self,
        store: &dyn Storage,
        node: Node,
        level: u8,
        out: &mut Vec<Node>,
    ) -> Result<(), VolumeError> {
        let scanned = self.scan_page(store, node.base, level)?;
        let at = match &scanned {
            Scanned::Resident(slot) => {
                let frame = self.cache.frame(*slot);
                frame.written.pbn(frame.base)
            }
            Scanned::Read(_, at) => *at,
        };
        let page = self.scanned_page(&scanned);
        for (slot, entry) in (0_u64..).zip(page.entries.iter()) {
            match entry {
                Mapping::Unmapped => {}
                Mapping::Data(child) => {
                    page::check_child(&self.layout, at, child)?;
                    out.push(Node {
                        base: child,
                        root: node.root,
                        index: node.index * ENTRIES_PER_PAGE_U64 + slot,
                    });
                }
                other => {
                    let what = format!("interior page holds {other:?} in slot {slot}");
                    return Err(VolumeError::invariant(None, Some(node.base), what));
                }
            }
        }
        Ok(())
    }

    /// The page at `base` for a scan: the resident copy, or one read without caching it.
    fn scan_page(
        &mut self,
        store: &dyn Storage,
        base: Pbn,
        level: u8,
    ) -> Result<Scanned, VolumeError> {
        if let Some(slot) = self.cache.peek(base) {
            self.cache.counters.hits += 1;
            check_resident_level(base, self.cache.frame(slot).page.level, level)?;
            return Ok(Scanned::Resident(slot));
        }
        self.cache.counters.misses += 1;
        self.cache.counters.reads += 1;
        let (page, written) = page::read_twins(store, self.nonce, base, level)?;
        Ok(Scanned::Read(page, written.pbn(base)))
    }

    fn scanned_page<'a>(&'a self, scanned: &'a Scanned) -> &'a BlockMapPage {
        match scanned {
            Scanned::Resident(slot) => &self.cache.frame(*slot).page,
            Scanned::Read(page, _) => page,
        }
    }
}

/// A leaf whose LBNs would be 2^40 or beyond: no write can have allocated it.
fn beyond_lbn_limit(leaf: Node) -> FormatError {
    FormatError::new(
        BlockType::BlockMapPage,
        leaf.base,
        Problem::InvalidField {
            field: "leaf index",
            expected: "a leaf whose LBNs are below 2^40",
            found: leaf.index,
        },
    )
}
