//! Choosing a volume geometry for a store size, for `uvdo-nbd-serve --format` and tests.

use uvdo::FormatConfig;
use uvdo_format::{BLOCK_SIZE, BlockCount};

/// A geometry that fits `physical` bytes: VDO's defaults for large stores, scaled down (at
/// least 8 slabs, a journal of at most 1/64 of the store, a small index) for small ones.
#[must_use]
pub fn format_config_for(physical: u64, logical: u64) -> FormatConfig {
    let block = BLOCK_SIZE as u64;
    let mut config = FormatConfig::new(BlockCount(logical.div_ceil(block)));
    let blocks = physical / block;
    let slab = (blocks / 8).max(16);
    let slab = 1_u64 << (63 - slab.leading_zeros());
    config.slab_blocks = BlockCount(slab.min(config.slab_blocks.0));
    config.slab_journal_blocks = BlockCount(
        config
            .slab_journal_blocks
            .0
            .min(config.slab_blocks.0 / 4)
            .max(2),
    );
    config.recovery_journal_blocks =
        BlockCount(config.recovery_journal_blocks.0.min((blocks / 64).max(8)));
    if physical < (64 << 30) {
        config.index.memory_bytes = 1 << 20;
    }
    config
}
