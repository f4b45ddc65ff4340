//! What a volume is formatted with and opened with.

use uvdo_format::layout::{
    BLOCK_MAP_ROOTS_DEFAULT, LayoutParams, RECOVERY_JOURNAL_BLOCKS_DEFAULT, SLAB_BLOCKS_DEFAULT,
    SLAB_JOURNAL_BLOCKS_DEFAULT, index_blocks_for,
};
use uvdo_format::super_block::{BLOCK_MAP_CACHE_PAGES_DEFAULT, WritePolicy};
use uvdo_format::{BLOCK_SIZE, BlockCount};
use uvdo_index::IndexConfig;

/// Everything `Volume::format` needs to lay out a new volume.
#[derive(Clone, Debug)]
pub struct FormatConfig {
    /// Logical size the volume presents, in 4 KiB blocks (up to 2^40: 4 PiB).
    pub logical_blocks: BlockCount,
    /// Blocks per slab: a power of two, 16..=2^23 (default 2^19, 2 GiB).
    pub slab_blocks: BlockCount,
    /// Slab journal blocks per slab (default 224).
    pub slab_journal_blocks: BlockCount,
    /// Recovery journal blocks (default 32768, 128 MiB).
    pub recovery_journal_blocks: BlockCount,
    /// Block map trees (default 16).
    pub root_count: u8,
    /// Dedupe index memory and mode.
    pub index: IndexConfig,
    /// Write policy stored in the volume.
    pub write_policy: WritePolicy,
    /// Whether deduplication is enabled.
    pub deduplication: bool,
    /// Whether compression is enabled (stored; the packer is a later milestone).
    pub compression: bool,
    /// Block map cache size in pages, counted as 4 KiB each (default 32768 = 128 MiB). A
    /// resident page holds its entries packed as on disk (4060 bytes) plus its frame and
    /// index bucket: 4157 bytes, so a full cache holds within 2% of its size.
    pub block_map_cache_pages: u32,
    /// Overwrite an existing volume or filesystem signature.
    pub force: bool,
}

impl FormatConfig {
    /// Defaults (VDO's) for a volume of `logical_blocks`.
    #[must_use]
    pub fn new(logical_blocks: BlockCount) -> Self {
        Self {
            logical_blocks,
            slab_blocks: BlockCount(SLAB_BLOCKS_DEFAULT),
            slab_journal_blocks: BlockCount(SLAB_JOURNAL_BLOCKS_DEFAULT),
            recovery_journal_blocks: BlockCount(RECOVERY_JOURNAL_BLOCKS_DEFAULT),
            root_count: BLOCK_MAP_ROOTS_DEFAULT,
            index: IndexConfig::default(),
            write_policy: WritePolicy::Auto,
            deduplication: true,
            compression: false,
            block_map_cache_pages: BLOCK_MAP_CACHE_PAGES_DEFAULT,
            force: false,
        }
    }

    /// The tiny geometry of STYLE.md rule 12: 16-block slabs, 8-block journal, a 2-page block
    /// map cache, a small index; journal wrap, full slabs and eviction happen in milliseconds.
    #[must_use]
    pub fn tiny(logical_blocks: BlockCount) -> Self {
        Self {
            slab_blocks: BlockCount(16),
            slab_journal_blocks: BlockCount(2),
            recovery_journal_blocks: BlockCount(8),
            root_count: 1,
            index: IndexConfig {
                memory_bytes: 1 << 20,
                sparse: false,
            },
            block_map_cache_pages: 2,
            ..Self::new(logical_blocks)
        }
    }

    /// The layout parameters, with the index area sized for the index configuration.
    #[must_use]
    pub fn layout_params(&self) -> LayoutParams {
        LayoutParams {
            slab_blocks: self.slab_blocks,
            slab_journal_blocks: self.slab_journal_blocks,
            recovery_journal_blocks: self.recovery_journal_blocks,
            root_count: self.root_count,
            // The index's own estimate, but never below one saved image of its memory, which
            // the geometry requires (a save writes its memory out as index pages).
            index_blocks: BlockCount(
                self.index
                    .disk_blocks()
                    .max(index_blocks_for(self.index.memory_bytes).0),
            ),
        }
    }

    /// Logical size in bytes.
    #[must_use]
    pub fn logical_bytes(&self) -> u64 {
        self.logical_blocks.0 * BLOCK_SIZE as u64
    }
}

/// How `Volume::open` runs.
#[derive(Clone, Debug, Default)]
pub struct OpenOptions {
    /// Whether the device has a volatile write cache, for resolving the `auto` policy. `None`
    /// asks the store (`Storage::volatile_write_cache`: sysfs for files and block devices);
    /// when the store cannot tell either, `auto` resolves to `async`, which is always safe
    /// because it honours flushes.
    pub volatile_write_cache: Option<bool>,
    /// Overrides the block map cache size stored in the volume, in pages (4 KiB each, as
    /// `FormatConfig::block_map_cache_pages` counts them).
    pub block_map_cache_pages: Option<u32>,
    /// Open for inspection only: nothing is written to the store (a dirty volume is replayed
    /// in memory, a pending force rebuild is not run), and every write is refused as
    /// read-only. For statistics and audits of a stopped volume.
    pub inspect_only: bool,
    /// Test hook: every block hashes to the same name, so every dedupe hit must be rejected by
    /// the byte comparison (the "no false sharing" test). Never set outside tests.
    #[doc(hidden)]
    pub testing_constant_hash: bool,
    /// After an unclean shutdown, rebuild every reference count before `open` returns (the
    /// volume opens in normal mode), instead of in the background in recovering mode. For
    /// tools and tests that need every recovery write to happen inside `open`.
    pub recover_offline: bool,
    /// Test hook: in recovering mode, the background scrubber waits for
    /// `Volume::resume_scrubbing` (writers and committers still scrub what they must).
    #[doc(hidden)]
    pub testing_scrub_paused: bool,
}

/// The policy in force once `auto` is resolved.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ResolvedPolicy {
    /// Acknowledge after the data and its journal entry are durable.
    Sync,
    /// Acknowledge once recorded in memory; durable at the next flush or FUA.
    Async,
    /// As async, without flushing before journal writes.
    AsyncUnsafe,
}

impl ResolvedPolicy {
    /// Resolves a stored policy; `auto` is sync only on a device known to have no volatile
    /// write cache.
    #[must_use]
    pub fn resolve(policy: WritePolicy, volatile_write_cache: Option<bool>) -> Self {
        match policy {
            WritePolicy::Sync => Self::Sync,
            WritePolicy::Async => Self::Async,
            WritePolicy::AsyncUnsafe => Self::AsyncUnsafe,
            WritePolicy::Auto => match volatile_write_cache {
                Some(false) => Self::Sync,
                Some(true) | None => Self::Async,
            },
        }
    }

    /// The name shown in stats and status.
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            Self::Sync => "sync",
            Self::Async => "async",
            Self::AsyncUnsafe => "async-unsafe",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auto_is_sync_only_without_a_volatile_cache() {
        let r = |c| ResolvedPolicy::resolve(WritePolicy::Auto, c);
        assert_eq!(r(Some(false)), ResolvedPolicy::Sync);
        assert_eq!(r(Some(true)), ResolvedPolicy::Async);
        assert_eq!(r(None), ResolvedPolicy::Async);
        assert_eq!(
            ResolvedPolicy::resolve(WritePolicy::Sync, Some(true)),
            ResolvedPolicy::Sync
        );
    }

    #[test]
    fn default_index_sizes_lay_out() {
        // Regression: the 256 MiB default index failed the geometry's index-area rule.
        for memory_bytes in [256 << 20, 2 << 20, 1 << 30, 64 << 10] {
            for sparse in [false, true] {
                let mut config = FormatConfig::new(BlockCount(1 << 30));
                config.index = IndexConfig {
                    memory_bytes,
                    sparse,
                };
                if config.index.validate().is_err() {
                    continue;
                }
                let params = config.layout_params();
                params.validate().unwrap();
                assert!(
                    params.index_blocks >= index_blocks_for(memory_bytes),
                    "{memory_bytes}"
                );
                let layout = uvdo_format::layout::Layout::compute(params, BlockCount(1 << 28));
                layout.unwrap();
            }
        }
    }

    #[test]
    fn tiny_geometry_lays_out() {
        let config = FormatConfig::tiny(BlockCount(1000));
        config.layout_params().validate().unwrap();
    }
}
