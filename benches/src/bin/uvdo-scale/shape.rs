//! The volume one size is measured on: its format configuration and store size, derived
//! from the size to write and three knobs, and passed to each child process as arguments.
//!
//! The logical size is exactly the size written, so at the end every LBN is mapped to its
//! own data block. The slab data area holds 1.5x that plus [`IN_FLIGHT_BLOCKS`], rounded up
//! to whole slabs: room for the block map tree pages and for the overwrites that fill the
//! recovery journal, whose old blocks are freed only when their remaps are durable (a write
//! that finds no free block fails with `NoSpace`; it does not commit to free them).

use uvdo::{FormatConfig, IndexConfig, WritePolicy};
use uvdo_format::layout::Layout;
use uvdo_format::{BLOCK_SIZE, BlockCount};

use crate::BenchError;

/// 4 KiB, as a `u64` for byte arithmetic.
pub(crate) const BLOCK_BYTES: u64 = BLOCK_SIZE as u64;

/// Twice the remaps an async writer may have uncommitted (64 sealed journal blocks of 167
/// entries, `UNWRITTEN_BLOCKS_MAX` in crates/uvdo/src/journal/mod.rs): each can hold an old
/// block not yet freed. Matters only for the smoke sizes.
const IN_FLIGHT_BLOCKS: u64 = 2 * 64 * 167;

/// What one size's volume is made of.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Shape {
    /// Bytes of unique data written, and the logical size.
    pub(crate) size_bytes: u64,
    /// Blocks per slab (a power of two).
    pub(crate) slab_blocks: u64,
    /// Recovery journal blocks.
    pub(crate) journal_blocks: u64,
    /// Dense index memory.
    pub(crate) index_bytes: u64,
}

impl Shape {
    pub(crate) fn logical_blocks(&self) -> u64 {
        self.size_bytes / BLOCK_BYTES
    }

    pub(crate) fn format_config(&self) -> FormatConfig {
        let mut config = FormatConfig::new(BlockCount(self.logical_blocks()));
        config.slab_blocks = BlockCount(self.slab_blocks);
        config.recovery_journal_blocks = BlockCount(self.journal_blocks);
        config.index = IndexConfig {
            memory_bytes: self.index_bytes,
            sparse: false,
        };
        config.write_policy = WritePolicy::Async;
        config
    }

    /// The layout of the store this shape is formatted on.
    pub(crate) fn layout(&self) -> Result<Layout, BenchError> {
        let params = self.format_config().layout_params();
        let probe = Layout::compute(params, BlockCount(self.store_blocks_probe()))?;
        let data_per_slab = probe.slab().data_blocks.0;
        let wanted = self.logical_blocks() + self.logical_blocks() / 2 + IN_FLIGHT_BLOCKS;
        let slabs = wanted.div_ceil(data_per_slab).max(1);
        let physical = probe.depot_start().0 + slabs * self.slab_blocks;
        Ok(Layout::compute(params, BlockCount(physical))?)
    }

    /// A store size surely big enough for one slab (the fixed regions, generously counted),
    /// to learn where the depot starts.
    fn store_blocks_probe(&self) -> u64 {
        let params = self.format_config().layout_params();
        let fixed = params.recovery_journal_blocks.0 + params.index_blocks.0 + 1024;
        fixed + 2 * self.slab_blocks
    }

    /// The store's size in bytes.
    pub(crate) fn store_bytes(&self) -> Result<u64, BenchError> {
        Ok(self.layout()?.physical_blocks().0 * BLOCK_BYTES)
    }

    /// The arguments a child process parses back with [`Shape::from_args`].
    pub(crate) fn to_args(self) -> Vec<String> {
        [
            self.size_bytes,
            self.slab_blocks,
            self.journal_blocks,
            self.index_bytes,
        ]
        .iter()
        .map(u64::to_string)
        .collect()
    }

    pub(crate) fn from_args(args: &[String]) -> Result<Self, BenchError> {
        let number = |i: usize| -> Result<u64, BenchError> {
            let text = args.get(i).ok_or("child: missing shape argument")?;
            Ok(text.parse::<u64>()?)
        };
        Ok(Self {
            size_bytes: number(0)?,
            slab_blocks: number(1)?,
            journal_blocks: number(2)?,
            index_bytes: number(3)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shape(size_bytes: u64, slab_blocks: u64) -> Shape {
        Shape {
            size_bytes,
            slab_blocks,
            journal_blocks: 64,
            index_bytes: 1 << 20,
        }
    }

    #[test]
    fn data_area_holds_one_and_a_half_times_the_size_and_the_in_flight_in_whole_slabs() {
        for (size, slab) in [(16 << 20, 1 << 10), (1 << 30, 1 << 19), (64 << 20, 1 << 12)] {
            let s = shape(size, slab);
            let layout = s.layout().unwrap();
            let data = layout.data_blocks_total().0;
            let wanted = s.logical_blocks() * 3 / 2 + IN_FLIGHT_BLOCKS;
            assert!(data >= wanted, "{size} {slab}: {data}");
            let per_slab = layout.slab().data_blocks.0;
            assert!(data < wanted + per_slab, "{size} {slab}: {data}");
            assert_eq!(
                layout.physical_blocks().0,
                layout.depot_start().0 + u64::from(layout.slab_count()) * slab
            );
        }
    }

    #[test]
    fn shape_survives_the_child_arguments() {
        let s = shape(64 << 20, 1 << 12);
        assert_eq!(Shape::from_args(&s.to_args()).unwrap(), s);
        assert!(Shape::from_args(&s.to_args()[..3]).is_err());
    }
}
