//! Reading one block map page from its twin pair, and checking the pointers that lead to it.
//!
//! Both slots are read in one 8 KiB read (they are adjacent) and decoded with the level the
//! parent implies; the newest valid copy wins (`twin::choose`). Both slots invalid, including
//! both unwritten, is corruption: every page a pointer names was written before the pointer
//! was (roots at format, tree pages by the caller writing children and parents together).

use uvdo_format::block_map_page::BlockMapPage;
use uvdo_format::layout::Layout;
use uvdo_format::twin::{self, TwinSlot};
use uvdo_format::{BLOCK_SIZE, Block, BlockType, Expected, FormatError, Nonce, Pbn, Problem};
use uvdo_io::Storage;

use crate::error::VolumeError;

/// The newest valid copy of the page at twin base `base`, which the walk expects at `level`,
/// and the slot it came from. `page.generation` is that copy's generation.
pub(super) fn read_twins(
    store: &dyn Storage,
    nonce: Nonce,
    base: Pbn,
    level: u8,
) -> Result<(BlockMapPage, TwinSlot), VolumeError> {
    let mut pair: [Block; 2] = [[0; BLOCK_SIZE]; 2];
    store.read_at(base.byte_offset(), pair.as_flattened_mut())?;
    let decode = |block: &Block, slot: TwinSlot| {
        BlockMapPage::decode(block, Expected::new(nonce, slot.pbn(base)), level).map(|page| {
            let generation = page.generation;
            (page, generation)
        })
    };
    let chosen = twin::choose(decode(&pair[0], TwinSlot::A), decode(&pair[1], TwinSlot::B))?;
    assert_eq!(chosen.value.level, level, "decode checked the level");
    assert_eq!(
        chosen.value.generation, chosen.generation,
        "generation from the header"
    );
    Ok((chosen.value, chosen.slot))
}

/// Checks that `child`, found in (or about to be stored in) the page read from `parent_at`, can
/// name a tree page: the base of an aligned twin pair of slab data blocks (FORMAT.md).
pub(super) fn check_child(layout: &Layout, parent_at: Pbn, child: Pbn) -> Result<(), FormatError> {
    if is_tree_page_base(layout, child) {
        return Ok(());
    }
    Err(FormatError::new(
        BlockType::BlockMapPage,
        parent_at,
        Problem::InvalidField {
            field: "child page PBN",
            expected: "an even slab data block followed by another data block",
            found: child.0,
        },
    ))
}

fn is_tree_page_base(layout: &Layout, child: Pbn) -> bool {
    layout.slab_of(child).is_some_and(|(_, block)| {
        block.0 % 2 == 0 && u64::from(block.0) + 1 < layout.slab().data_blocks.0
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use uvdo_format::layout::LayoutParams;
    use uvdo_format::{BlockCount, SlabBlockNumber, SlabNumber};

    fn layout() -> Layout {
        let params = LayoutParams {
            slab_blocks: BlockCount(16),
            slab_journal_blocks: BlockCount(8),
            recovery_journal_blocks: BlockCount(8),
            root_count: 1,
            index_blocks: BlockCount(1),
        };
        let depot = params.regions().unwrap()[5].start.0;
        Layout::compute(params, BlockCount(depot + 32)).unwrap()
    }

    #[test]
    fn only_aligned_pairs_of_data_blocks_are_children() {
        let l = layout();
        // 16-block slabs with 8 journal blocks hold 6 data blocks: pairs at 0, 2, 4.
        assert_eq!(l.slab().data_blocks, BlockCount(6));
        let at = |slab, block| l.data_pbn(SlabNumber(slab), SlabBlockNumber(block));
        for ok in [at(0, 0), at(0, 4), at(1, 2)] {
            assert!(check_child(&l, Pbn(1), ok).is_ok(), "{ok}");
        }
        for bad in [
            at(0, 1),
            at(1, 5),
            l.root_base(0),
            Pbn(0),
            l.depot_start().offset(6),
        ] {
            let e = check_child(&l, Pbn(1), bad).unwrap_err();
            assert!(matches!(e.problem, Problem::InvalidField { found, .. } if found == bad.0));
        }
    }
}
