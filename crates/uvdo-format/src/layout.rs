//! Where everything lives on the backing store: sizing rules and region arithmetic.
//!
//! Pure arithmetic, no codec. Regions, front to back:
//!
//! ```text
//! PBN 0                 geometry block
//! PBN 1, 2              super block twins
//! journal_start = 3     recovery journal: recovery_journal_blocks blocks
//! summary_start         slab summary: 33 twin pairs = 66 blocks
//! roots_start           block map roots: root_count twin pairs
//! index_start           dedupe index save area: index_blocks blocks
//! depot_start           slab i at depot_start + i * slab_blocks, up to the last whole slab
//! ```
//!
//! Inside a slab: `D` data blocks, then `R = ceil(D / 4032)` reference count twin pairs, then
//! the slab journal; `D` is the largest value that fits.
//!
//! Invariants:
//! - every region start depends only on [`LayoutParams`], never on the physical size, so growing
//!   the store only appends slabs and the geometry's region table stays true;
//! - regions are disjoint, in the order above, and inside the store;
//! - a slab's data, reference count and journal blocks are disjoint and inside the slab;
//! - every PBN is below 2^36 (the width of a block map entry's PBN).

use crate::numbers::{BlockCount, Pbn, SequenceNumber, SlabBlockNumber, SlabNumber};

/// Smallest slab (tests use 16-block slabs to make full slabs cheap).
pub const SLAB_BLOCKS_MIN: u64 = 16;
/// Largest slab: 2^23 blocks (32 GiB).
pub const SLAB_BLOCKS_MAX: u64 = 1 << 23;
/// VDO's default slab: 2^19 blocks (2 GiB).
pub const SLAB_BLOCKS_DEFAULT: u64 = 1 << 19;
/// Most slabs a depot may hold (the slab summary has one entry per slab).
pub const SLAB_COUNT_MAX: u64 = 8192;
/// Fewest slab journal blocks per slab.
pub const SLAB_JOURNAL_BLOCKS_MIN: u64 = 2;
/// Most slab journal blocks per slab.
pub const SLAB_JOURNAL_BLOCKS_MAX: u64 = 256;
/// VDO's default slab journal length.
pub const SLAB_JOURNAL_BLOCKS_DEFAULT: u64 = 224;
/// Reference counts held by one reference count block (one byte per data block).
pub const REFERENCE_COUNTS_PER_BLOCK: u64 = 4032;
/// Fewest recovery journal blocks.
pub const RECOVERY_JOURNAL_BLOCKS_MIN: u64 = 4;
/// Most recovery journal blocks: 2^20 (4 GiB).
pub const RECOVERY_JOURNAL_BLOCKS_MAX: u64 = 1 << 20;
/// VDO's default recovery journal: 32768 blocks (128 MiB).
pub const RECOVERY_JOURNAL_BLOCKS_DEFAULT: u64 = 32768;
/// Largest logical size: 2^40 blocks (4 PiB).
pub const LOGICAL_BLOCKS_MAX: u64 = 1 << 40;
/// Largest physical size: 2^36 blocks (256 TiB), so every PBN fits in 36 bits.
pub const PHYSICAL_BLOCKS_MAX: u64 = 1 << 36;
/// Fewest block map roots.
pub const BLOCK_MAP_ROOTS_MIN: u8 = 1;
/// Most block map roots.
pub const BLOCK_MAP_ROOTS_MAX: u8 = 60;
/// VDO's default number of block map roots.
pub const BLOCK_MAP_ROOTS_DEFAULT: u8 = 16;
/// Slab summary entries in one slab summary block.
pub const SLAB_SUMMARY_ENTRIES_PER_BLOCK: u64 = 252;
/// Distinct slab summary blocks: enough for [`SLAB_COUNT_MAX`] slabs.
pub const SLAB_SUMMARY_BLOCKS: u64 = SLAB_COUNT_MAX.div_ceil(SLAB_SUMMARY_ENTRIES_PER_BLOCK);
/// Blocks of the slab summary region: each summary block is a twin pair.
pub const SLAB_SUMMARY_REGION_BLOCKS: u64 = 2 * SLAB_SUMMARY_BLOCKS;
/// Payload bytes of one saved index page.
pub const INDEX_PAGE_PAYLOAD_BYTES: u64 = 4048;
/// Largest index memory: 1 TiB (VDO accepts up to 1024 GB).
pub const INDEX_MEMORY_BYTES_MAX: u64 = 1 << 40;
/// Default index memory: 256 MiB (VDO's 0.25 GB).
pub const INDEX_MEMORY_BYTES_DEFAULT: u64 = 256 << 20;
/// Largest index save area: one image of [`INDEX_MEMORY_BYTES_MAX`].
pub const INDEX_BLOCKS_MAX: u64 = INDEX_MEMORY_BYTES_MAX.div_ceil(INDEX_PAGE_PAYLOAD_BYTES);
/// Default block map cache: 128 MiB (32768 pages).
pub const BLOCK_MAP_CACHE_BYTES_DEFAULT: u64 = 128 << 20;

/// The geometry block.
pub const GEOMETRY_PBN: Pbn = Pbn(0);
/// Slot A of the super block twins (slot B is the next block).
pub const SUPER_BLOCK_BASE: Pbn = Pbn(1);
/// First block of the recovery journal: right after the super block twins.
pub const JOURNAL_START: Pbn = Pbn(3);
/// Regions in the geometry's region table.
pub const REGION_COUNT: usize = 6;

const RANGE_SLAB_BLOCKS: &str = "a power of two in 16..=8388608";
const RANGE_SLAB_JOURNAL: &str = "2..=256";
const FIT_SLAB_JOURNAL: &str = "at most slab_blocks - 3 (one data block and one count pair)";
const RANGE_RECOVERY_JOURNAL: &str = "4..=1048576";
const RANGE_ROOTS: &str = "1..=60";
const RANGE_INDEX: &str = "0..=271618486";

const _: () = assert!(SLAB_SUMMARY_BLOCKS == 33);
const _: () = assert!(SLAB_BLOCKS_MIN.is_power_of_two() && SLAB_BLOCKS_MAX.is_power_of_two());
const _: () = assert!(SLAB_BLOCKS_MIN >= SLAB_JOURNAL_BLOCKS_MIN + 3);
const _: () = assert!(SLAB_COUNT_MAX * SLAB_BLOCKS_MAX <= PHYSICAL_BLOCKS_MAX);

/// A sizing rule the configuration or the store breaks.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum LayoutError {
    /// A parameter outside its range.
    #[error("{field} must be {expected}, found {found}")]
    OutOfRange {
        /// The parameter's name.
        field: &'static str,
        /// What it must be.
        expected: &'static str,
        /// What it is.
        found: u64,
    },
    /// A size that must be a power of two is not.
    #[error("{field} must be a power of two, found {found}")]
    NotPowerOfTwo {
        /// The parameter's name.
        field: &'static str,
        /// What it is.
        found: u64,
    },
    /// The store cannot hold the fixed regions and one whole slab.
    #[error("store of {found} blocks is too small: one slab needs at least {needed} blocks")]
    TooSmall {
        /// Blocks needed for the fixed regions and one slab.
        needed: u64,
        /// Blocks in the store.
        found: u64,
    },
    /// The store holds more slabs than the slab summary can describe.
    #[error("store holds {found} slabs, at most {max} are allowed")]
    TooManySlabs {
        /// The limit.
        max: u64,
        /// Whole slabs that would fit.
        found: u64,
    },
    /// The store has blocks past the 36-bit PBN limit.
    #[error("store of {found} blocks exceeds the 36-bit PBN limit of {max} blocks")]
    TooLarge {
        /// The limit.
        max: u64,
        /// Blocks in the store.
        found: u64,
    },
}

/// The sizes fixed at format time, recorded in the geometry.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct LayoutParams {
    /// Blocks per slab: a power of two in [`SLAB_BLOCKS_MIN`]..=[`SLAB_BLOCKS_MAX`].
    pub slab_blocks: BlockCount,
    /// Slab journal blocks per slab.
    pub slab_journal_blocks: BlockCount,
    /// Recovery journal blocks.
    pub recovery_journal_blocks: BlockCount,
    /// Block map roots (trees).
    pub root_count: u8,
    /// Blocks of the index save area.
    pub index_blocks: BlockCount,
}

impl Default for LayoutParams {
    /// VDO's defaults, with room for one image of a 256 MiB index.
    fn default() -> Self {
        Self {
            slab_blocks: BlockCount(SLAB_BLOCKS_DEFAULT),
            slab_journal_blocks: BlockCount(SLAB_JOURNAL_BLOCKS_DEFAULT),
            recovery_journal_blocks: BlockCount(RECOVERY_JOURNAL_BLOCKS_DEFAULT),
            root_count: BLOCK_MAP_ROOTS_DEFAULT,
            index_blocks: index_blocks_for(INDEX_MEMORY_BYTES_DEFAULT),
        }
    }
}

fn check_range(
    field: &'static str,
    expected: &'static str,
    found: u64,
    range: std::ops::RangeInclusive<u64>,
) -> Result<(), LayoutError> {
    if range.contains(&found) {
        Ok(())
    } else {
        Err(LayoutError::OutOfRange {
            field,
            expected,
            found,
        })
    }
}

impl LayoutParams {
    /// Checks every sizing rule that does not depend on the store's size.
    ///
    /// # Errors
    ///
    /// The first rule broken.
    pub fn validate(&self) -> Result<(), LayoutError> {
        let slab = self.slab_blocks.0;
        check_range(
            "slab_blocks",
            RANGE_SLAB_BLOCKS,
            slab,
            SLAB_BLOCKS_MIN..=SLAB_BLOCKS_MAX,
        )?;
        if !slab.is_power_of_two() {
            return Err(LayoutError::NotPowerOfTwo {
                field: "slab_blocks",
                found: slab,
            });
        }
        let journal = self.slab_journal_blocks.0;
        check_range(
            "slab_journal_blocks",
            RANGE_SLAB_JOURNAL,
            journal,
            SLAB_JOURNAL_BLOCKS_MIN..=SLAB_JOURNAL_BLOCKS_MAX,
        )?;
        check_range(
            "slab_journal_blocks",
            FIT_SLAB_JOURNAL,
            journal,
            0..=slab - 3,
        )?;
        check_range(
            "recovery_journal_blocks",
            RANGE_RECOVERY_JOURNAL,
            self.recovery_journal_blocks.0,
            RECOVERY_JOURNAL_BLOCKS_MIN..=RECOVERY_JOURNAL_BLOCKS_MAX,
        )?;
        check_range(
            "root_count",
            RANGE_ROOTS,
            u64::from(self.root_count),
            u64::from(BLOCK_MAP_ROOTS_MIN)..=u64::from(BLOCK_MAP_ROOTS_MAX),
        )?;
        check_range(
            "index_blocks",
            RANGE_INDEX,
            self.index_blocks.0,
            0..=INDEX_BLOCKS_MAX,
        )
    }

    /// The region table: every region's start and size; the slab depot's size is 0, meaning
    /// "to the end of the store". It depends only on these parameters.
    ///
    /// # Errors
    ///
    /// When the parameters are invalid.
    pub fn regions(&self) -> Result<[Region; REGION_COUNT], LayoutError> {
        let s = Starts::new(self)?;
        let region = |id, start, blocks| Region {
            id,
            start,
            blocks: BlockCount(blocks),
        };
        Ok([
            region(RegionId::SuperBlock, SUPER_BLOCK_BASE, 2),
            region(
                RegionId::RecoveryJournal,
                JOURNAL_START,
                self.recovery_journal_blocks.0,
            ),
            region(RegionId::SlabSummary, s.summary, SLAB_SUMMARY_REGION_BLOCKS),
            region(
                RegionId::BlockMapRoots,
                s.roots,
                2 * u64::from(self.root_count),
            ),
            region(RegionId::Index, s.index, self.index_blocks.0),
            region(RegionId::SlabDepot, s.depot, 0),
        ])
    }
}

/// Blocks for one saved image of an index using `memory_bytes` of memory.
#[must_use]
pub fn index_blocks_for(memory_bytes: u64) -> BlockCount {
    BlockCount(memory_bytes.div_ceil(INDEX_PAGE_PAYLOAD_BYTES))
}

/// The regions of the geometry's region table. The code is stored on disk.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u16)]
pub enum RegionId {
    /// The super block twins.
    SuperBlock = 1,
    /// The recovery journal.
    RecoveryJournal = 2,
    /// The slab summary twins.
    SlabSummary = 3,
    /// The block map root twins.
    BlockMapRoots = 4,
    /// The dedupe index save area.
    Index = 5,
    /// The slab depot, to the end of the store.
    SlabDepot = 6,
}

/// One entry of the region table.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Region {
    /// Which region.
    pub id: RegionId,
    /// Its first block.
    pub start: Pbn,
    /// Its size; 0 for the slab depot, which runs to the end of the store.
    pub blocks: BlockCount,
}

/// Region starts, from the parameters alone.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Starts {
    summary: Pbn,
    roots: Pbn,
    index: Pbn,
    depot: Pbn,
}

impl Starts {
    fn new(params: &LayoutParams) -> Result<Self, LayoutError> {
        params.validate()?;
        let summary = JOURNAL_START.offset(params.recovery_journal_blocks.0);
        let roots = summary.offset(SLAB_SUMMARY_REGION_BLOCKS);
        let index = roots.offset(2 * u64::from(params.root_count));
        let depot = index.offset(params.index_blocks.0);
        Ok(Self {
            summary,
            roots,
            index,
            depot,
        })
    }
}

/// How one slab is divided.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct SlabLayout {
    /// Blocks in the slab.
    pub slab_blocks: BlockCount,
    /// Data blocks, at slab offsets `0..data_blocks`.
    pub data_blocks: BlockCount,
    /// Reference count twin pairs, after the data blocks.
    pub ref_count_pairs: BlockCount,
    /// Slab journal blocks, at the end of the slab.
    pub journal_blocks: BlockCount,
}

impl SlabLayout {
    /// The largest data block count `D` with `D + 2 * ceil(D / 4032) + journal <= slab`.
    /// `journal + 3 <= slab` must hold (checked by [`LayoutParams::validate`]).
    fn new(slab_blocks: BlockCount, journal_blocks: BlockCount) -> Self {
        let room = slab_blocks.0 - journal_blocks.0;
        let cost = |d: u64| d + 2 * d.div_ceil(REFERENCE_COUNTS_PER_BLOCK);
        // A lower bound that fits; the true maximum is at most two above it.
        let mut data = room - 2 * room.div_ceil(REFERENCE_COUNTS_PER_BLOCK);
        while cost(data + 1) <= room {
            data += 1;
        }
        assert!(
            data >= 1 && cost(data) <= room,
            "slab of {slab_blocks} blocks"
        );
        Self {
            slab_blocks,
            data_blocks: BlockCount(data),
            ref_count_pairs: BlockCount(data.div_ceil(REFERENCE_COUNTS_PER_BLOCK)),
            journal_blocks,
        }
    }

    /// Slab offset of the first reference count block.
    #[must_use]
    pub fn ref_counts_offset(&self) -> u64 {
        self.data_blocks.0
    }

    /// Slab offset of the first slab journal block.
    #[must_use]
    pub fn journal_offset(&self) -> u64 {
        self.data_blocks.0 + 2 * self.ref_count_pairs.0
    }
}

/// Where every region and slab of one store is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Layout {
    params: LayoutParams,
    physical_blocks: BlockCount,
    starts: Starts,
    slab: SlabLayout,
    slab_count: u32,
}

impl Layout {
    /// The layout of a store of `physical_blocks` blocks formatted with `params`.
    ///
    /// # Errors
    ///
    /// When `params` are invalid, or the store is over 2^36 blocks, too small for the fixed
    /// regions and one slab, or holds more than [`SLAB_COUNT_MAX`] slabs.
    pub fn compute(params: LayoutParams, physical: BlockCount) -> Result<Self, LayoutError> {
        let physical_blocks = physical;
        let starts = Starts::new(&params)?;
        if physical_blocks.0 > PHYSICAL_BLOCKS_MAX {
            return Err(LayoutError::TooLarge {
                max: PHYSICAL_BLOCKS_MAX,
                found: physical_blocks.0,
            });
        }
        let needed = starts.depot.0 + params.slab_blocks.0;
        if physical_blocks.0 < needed {
            return Err(LayoutError::TooSmall {
                needed,
                found: physical_blocks.0,
            });
        }
        let slabs = (physical_blocks.0 - starts.depot.0) / params.slab_blocks.0;
        let slab_count = u32::try_from(slabs)
            .ok()
            .filter(|&n| u64::from(n) <= SLAB_COUNT_MAX)
            .ok_or(LayoutError::TooManySlabs {
                max: SLAB_COUNT_MAX,
                found: slabs,
            })?;
        Ok(Self {
            params,
            physical_blocks,
            starts,
            slab: SlabLayout::new(params.slab_blocks, params.slab_journal_blocks),
            slab_count,
        })
    }

    /// The parameters this layout was computed from.
    #[must_use]
    pub fn params(&self) -> LayoutParams {
        self.params
    }

    /// Blocks in the store.
    #[must_use]
    pub fn physical_blocks(&self) -> BlockCount {
        self.physical_blocks
    }

    /// How each slab is divided.
    #[must_use]
    pub fn slab(&self) -> SlabLayout {
        self.slab
    }

    /// Whole slabs in the depot.
    #[must_use]
    pub fn slab_count(&self) -> u32 {
        self.slab_count
    }

    /// First block of the recovery journal.
    #[must_use]
    pub fn journal_start(&self) -> Pbn {
        JOURNAL_START
    }

    /// First block of the slab summary.
    #[must_use]
    pub fn summary_start(&self) -> Pbn {
        self.starts.summary
    }

    /// First block of the block map roots.
    #[must_use]
    pub fn roots_start(&self) -> Pbn {
        self.starts.roots
    }

    /// First block of the index save area.
    #[must_use]
    pub fn index_start(&self) -> Pbn {
        self.starts.index
    }

    /// First block of the slab depot (slab 0).
    #[must_use]
    pub fn depot_start(&self) -> Pbn {
        self.starts.depot
    }

    /// Data blocks in all slabs.
    #[must_use]
    pub fn data_blocks_total(&self) -> BlockCount {
        BlockCount(u64::from(self.slab_count) * self.slab.data_blocks.0)
    }

    /// Every block that is not a slab data block: metadata and the unused tail.
    #[must_use]
    pub fn overhead_blocks(&self) -> BlockCount {
        BlockCount(self.physical_blocks.0 - self.data_blocks_total().0)
    }

    /// First block of slab `slab`.
    ///
    /// # Panics
    ///
    /// If the slab does not exist (an engine bug).
    #[must_use]
    pub fn slab_start(&self, slab: SlabNumber) -> Pbn {
        assert!(
            slab.0 < self.slab_count,
            "slab {slab} of {}",
            self.slab_count
        );
        self.starts
            .depot
            .offset(u64::from(slab.0) * self.params.slab_blocks.0)
    }

    /// The PBN of data block `block` of slab `slab`.
    ///
    /// # Panics
    ///
    /// If the slab or block does not exist.
    #[must_use]
    pub fn data_pbn(&self, slab: SlabNumber, block: SlabBlockNumber) -> Pbn {
        assert!(
            u64::from(block.0) < self.slab.data_blocks.0,
            "slab block {block} of {}",
            self.slab.data_blocks
        );
        self.slab_start(slab).offset(u64::from(block.0))
    }

    /// The slab and slab block of `pbn` if it is a slab data block; `None` for any other block.
    #[must_use]
    pub fn slab_of(&self, pbn: Pbn) -> Option<(SlabNumber, SlabBlockNumber)> {
        let offset = pbn.0.checked_sub(self.starts.depot.0)?;
        // A shift and a mask, not a division: `compute` validated `slab_blocks` a power of
        // two, and recovery locates every replayed mapping.
        let slab_blocks = self.params.slab_blocks.0;
        let slab = offset >> slab_blocks.trailing_zeros();
        let block = offset & (slab_blocks - 1);
        if slab >= u64::from(self.slab_count) || block >= self.slab.data_blocks.0 {
            return None;
        }
        Some((
            SlabNumber(u32::try_from(slab).ok()?),
            SlabBlockNumber(u32::try_from(block).ok()?),
        ))
    }

    /// Twin base (slot A) of reference count block `index` of slab `slab`.
    ///
    /// # Panics
    ///
    /// If the slab or block does not exist.
    #[must_use]
    pub fn ref_counts_base(&self, slab: SlabNumber, index: u32) -> Pbn {
        assert!(
            u64::from(index) < self.slab.ref_count_pairs.0,
            "reference count block {index} of {}",
            self.slab.ref_count_pairs
        );
        self.slab_start(slab)
            .offset(self.slab.ref_counts_offset() + 2 * u64::from(index))
    }

    /// Where slab `slab`'s journal block with `sequence` is written: `sequence mod length`.
    ///
    /// # Panics
    ///
    /// If the slab does not exist.
    #[must_use]
    pub fn slab_journal_pbn(&self, slab: SlabNumber, sequence: SequenceNumber) -> Pbn {
        let position = sequence.0 % self.slab.journal_blocks.0;
        self.slab_start(slab)
            .offset(self.slab.journal_offset() + position)
    }

    /// Where the recovery journal block with `sequence` is written: `sequence mod length`.
    #[must_use]
    pub fn recovery_journal_pbn(&self, sequence: SequenceNumber) -> Pbn {
        JOURNAL_START.offset(sequence.0 % self.params.recovery_journal_blocks.0)
    }

    /// Twin base of slab summary block `index`.
    ///
    /// # Panics
    ///
    /// If `index` is not below [`SLAB_SUMMARY_BLOCKS`].
    #[must_use]
    pub fn summary_base(&self, index: u32) -> Pbn {
        assert!(
            u64::from(index) < SLAB_SUMMARY_BLOCKS,
            "summary block {index}"
        );
        self.starts.summary.offset(2 * u64::from(index))
    }

    /// Twin base of block map root `root`.
    ///
    /// # Panics
    ///
    /// If `root` is not below the root count.
    #[must_use]
    pub fn root_base(&self, root: u8) -> Pbn {
        assert!(root < self.params.root_count, "root {root}");
        self.starts.roots.offset(2 * u64::from(root))
    }

    /// The block holding page `page` of the saved index.
    ///
    /// # Panics
    ///
    /// If `page` is outside the index save area.
    #[must_use]
    pub fn index_pbn(&self, page: u64) -> Pbn {
        assert!(page < self.params.index_blocks.0, "index page {page}");
        self.starts.index.offset(page)
    }
}

/// Strategies shared with the geometry's tests.
#[cfg(test)]
pub(crate) mod testing {
    use super::*;
    use proptest::prelude::*;

    /// Any valid parameters, small enough for a store to be computed quickly.
    pub(crate) fn valid_params() -> impl Strategy<Value = LayoutParams> {
        (4_u32..=23, 1_u8..=60, 0_u64..=5000, 4_u64..=5000).prop_flat_map(
            |(bits, roots, index, journal)| {
                let slab = 1_u64 << bits;
                let journal_max = SLAB_JOURNAL_BLOCKS_MAX.min(slab - 3);
                (SLAB_JOURNAL_BLOCKS_MIN..=journal_max).prop_map(move |sj| LayoutParams {
                    slab_blocks: BlockCount(slab),
                    slab_journal_blocks: BlockCount(sj),
                    recovery_journal_blocks: BlockCount(journal),
                    root_count: roots,
                    index_blocks: BlockCount(index),
                })
            },
        )
    }
}

#[cfg(test)]
mod tests {
    use super::testing::valid_params;
    use super::*;
    use proptest::prelude::*;

    fn tiny() -> LayoutParams {
        LayoutParams {
            slab_blocks: BlockCount(16),
            slab_journal_blocks: BlockCount(8),
            recovery_journal_blocks: BlockCount(8),
            root_count: 2,
            index_blocks: BlockCount(4),
        }
    }

    fn layout_for(params: LayoutParams, extra_slabs: u64, tail: u64) -> Layout {
        let depot = params.regions().unwrap()[REGION_COUNT - 1].start.0;
        let slabs = 1 + extra_slabs.min(SLAB_COUNT_MAX - 1);
        let physical = depot + slabs * params.slab_blocks.0 + tail % params.slab_blocks.0;
        Layout::compute(params, BlockCount(physical)).unwrap()
    }

    fn slab_ranges(l: &Layout, s: SlabNumber) -> [std::ops::Range<u64>; 3] {
        let start = l.slab_start(s).0;
        let slab = l.slab();
        [
            start..start + slab.data_blocks.0,
            start + slab.ref_counts_offset()..start + slab.journal_offset(),
            start + slab.journal_offset()..start + slab.journal_offset() + slab.journal_blocks.0,
        ]
    }

    proptest! {
        #[test]
        fn regions_are_ordered_disjoint_and_inside(
            params in valid_params(), extra in 0_u64..20, tail in any::<u64>(),
        ) {
            let l = layout_for(params, extra, tail);
            let mut next = JOURNAL_START.0 - 2;
            for region in params.regions().unwrap() {
                prop_assert_eq!(region.start.0, next, "{:?}", region.id);
                next = region.start.0 + region.blocks.0;
            }
            prop_assert_eq!(l.depot_start().0, next);
            let end = l.slab_start(SlabNumber(l.slab_count() - 1)).0 + params.slab_blocks.0;
            prop_assert!(end <= l.physical_blocks().0);
            prop_assert!(l.physical_blocks().0 - end < params.slab_blocks.0);
            prop_assert_eq!(
                l.data_blocks_total().0 + l.overhead_blocks().0, l.physical_blocks().0
            );
        }

        #[test]
        fn slab_parts_are_disjoint_and_fill_the_slab(params in valid_params()) {
            let l = layout_for(params, 1, 0);
            let slab = l.slab();
            let [data, refs, journal] = slab_ranges(&l, SlabNumber(1));
            prop_assert_eq!(data.end, refs.start);
            prop_assert_eq!(refs.end, journal.start);
            prop_assert!(journal.end <= l.slab_start(SlabNumber(1)).0 + params.slab_blocks.0);
            prop_assert_eq!(refs.end - refs.start, 2 * slab.ref_count_pairs.0);
            let counts = slab.ref_count_pairs.0 * REFERENCE_COUNTS_PER_BLOCK;
            prop_assert!(counts >= data.end - data.start);
            // One more data block would not fit.
            let d = slab.data_blocks.0 + 1;
            let cost = d + 2 * d.div_ceil(REFERENCE_COUNTS_PER_BLOCK) + slab.journal_blocks.0;
            prop_assert!(cost > params.slab_blocks.0);
        }

        #[test]
        fn slab_of_inverts_data_pbn(
            params in valid_params(),
            extra in 0_u64..6,
            slab in any::<u32>(),
            block in any::<u32>(),
        ) {
            let l = layout_for(params, extra, 0);
            let slab = SlabNumber(slab % l.slab_count());
            let data = u32::try_from(l.slab().data_blocks.0).unwrap();
            let block = SlabBlockNumber(block % data);
            let pbn = l.data_pbn(slab, block);
            prop_assert_eq!(l.slab_of(pbn), Some((slab, block)));
            let [_, refs, journal] = slab_ranges(&l, slab);
            prop_assert_eq!(l.slab_of(Pbn(refs.start)), None);
            prop_assert_eq!(l.slab_of(Pbn(journal.end - 1)), None);
            prop_assert_eq!(l.slab_of(Pbn(l.depot_start().0 - 1)), None);
            prop_assert_eq!(l.slab_of(Pbn(l.physical_blocks().0)), None);
        }

        #[test]
        fn growing_only_appends_slabs(params in valid_params(), extra in 0_u64..100) {
            let small = layout_for(params, 0, 0);
            let big = layout_for(params, extra, params.slab_blocks.0 - 1);
            prop_assert_eq!(small.journal_start(), big.journal_start());
            prop_assert_eq!(small.summary_start(), big.summary_start());
            prop_assert_eq!(small.roots_start(), big.roots_start());
            prop_assert_eq!(small.index_start(), big.index_start());
            prop_assert_eq!(small.depot_start(), big.depot_start());
            prop_assert_eq!(small.slab(), big.slab());
            prop_assert_eq!(small.slab_start(SlabNumber(0)), big.slab_start(SlabNumber(0)));
            prop_assert_eq!(big.slab_count(), u32::try_from(1 + extra).unwrap());
        }
    }

    #[test]
    fn address_helpers_land_in_their_regions() {
        let l = layout_for(tiny(), 2, 5);
        assert_eq!(l.slab_count(), 3);
        assert_eq!(
            l.slab(),
            SlabLayout {
                slab_blocks: BlockCount(16),
                data_blocks: BlockCount(6),
                ref_count_pairs: BlockCount(1),
                journal_blocks: BlockCount(8),
            }
        );
        // 3 + 8 journal + 66 summary + 4 roots + 4 index.
        assert_eq!(l.depot_start(), Pbn(85));
        assert_eq!(l.recovery_journal_pbn(SequenceNumber(9)), Pbn(4));
        assert_eq!(l.summary_base(32), Pbn(11 + 64));
        assert_eq!(l.root_base(1), Pbn(77 + 2));
        assert_eq!(l.index_pbn(3), Pbn(84));
        assert_eq!(l.slab_start(SlabNumber(2)), Pbn(85 + 32));
        assert_eq!(l.ref_counts_base(SlabNumber(1), 0), Pbn(85 + 16 + 6));
        assert_eq!(
            l.slab_journal_pbn(SlabNumber(1), SequenceNumber(17)),
            Pbn(85 + 16 + 8 + 1)
        );
        assert_eq!(l.data_blocks_total(), BlockCount(18));
        assert_eq!(l.overhead_blocks(), BlockCount(85 + 48 + 5 - 18));
    }

    #[test]
    fn each_rule_reports_its_own_error() {
        let with = |f: fn(&mut LayoutParams)| {
            let mut p = tiny();
            f(&mut p);
            p.validate().unwrap_err()
        };
        let field = |e: LayoutError| match e {
            LayoutError::OutOfRange { field, .. } => field,
            other => panic!("{other}"),
        };
        assert_eq!(
            field(with(|p| p.slab_blocks = BlockCount(8))),
            "slab_blocks"
        );
        assert_eq!(
            with(|p| p.slab_blocks = BlockCount(48)),
            LayoutError::NotPowerOfTwo {
                field: "slab_blocks",
                found: 48
            }
        );
        let journal = field(with(|p| p.slab_journal_blocks = BlockCount(1)));
        assert_eq!(journal, "slab_journal_blocks");
        assert_eq!(
            with(|p| p.slab_journal_blocks = BlockCount(14)),
            LayoutError::OutOfRange {
                field: "slab_journal_blocks",
                expected: FIT_SLAB_JOURNAL,
                found: 14
            }
        );
        assert!(tiny().validate().is_ok());
        let rj = field(with(|p| p.recovery_journal_blocks = BlockCount(3)));
        assert_eq!(rj, "recovery_journal_blocks");
        assert_eq!(field(with(|p| p.root_count = 0)), "root_count");
        assert_eq!(field(with(|p| p.root_count = 61)), "root_count");
        let index = field(with(|p| p.index_blocks = BlockCount(INDEX_BLOCKS_MAX + 1)));
        assert_eq!(index, "index_blocks");
    }

    #[test]
    fn store_size_rules() {
        let p = tiny();
        assert_eq!(
            Layout::compute(p, BlockCount(100)),
            Err(LayoutError::TooSmall {
                needed: 101,
                found: 100
            })
        );
        assert_eq!(Layout::compute(p, BlockCount(101)).unwrap().slab_count(), 1);
        let most = 85 + 16 * SLAB_COUNT_MAX;
        assert_eq!(
            Layout::compute(p, BlockCount(most + 15))
                .unwrap()
                .slab_count(),
            8192
        );
        assert_eq!(
            Layout::compute(p, BlockCount(most + 16)),
            Err(LayoutError::TooManySlabs {
                max: SLAB_COUNT_MAX,
                found: SLAB_COUNT_MAX + 1
            })
        );
        assert_eq!(
            Layout::compute(LayoutParams::default(), BlockCount(PHYSICAL_BLOCKS_MAX + 1)),
            Err(LayoutError::TooLarge {
                max: PHYSICAL_BLOCKS_MAX,
                found: PHYSICAL_BLOCKS_MAX + 1
            })
        );
    }

    #[test]
    fn range_texts_match_the_limits() {
        let text = format!("a power of two in {SLAB_BLOCKS_MIN}..={SLAB_BLOCKS_MAX}");
        assert_eq!(RANGE_SLAB_BLOCKS, text);
        let text = format!("{SLAB_JOURNAL_BLOCKS_MIN}..={SLAB_JOURNAL_BLOCKS_MAX}");
        assert_eq!(RANGE_SLAB_JOURNAL, text);
        let text = format!("{RECOVERY_JOURNAL_BLOCKS_MIN}..={RECOVERY_JOURNAL_BLOCKS_MAX}");
        assert_eq!(RANGE_RECOVERY_JOURNAL, text);
        assert_eq!(
            RANGE_ROOTS,
            format!("{BLOCK_MAP_ROOTS_MIN}..={BLOCK_MAP_ROOTS_MAX}")
        );
        assert_eq!(RANGE_INDEX, format!("0..={INDEX_BLOCKS_MAX}"));
    }

    #[test]
    fn worked_example_one_tib_with_defaults() {
        let physical = BlockCount((1_u64 << 40) / 4096);
        let l = Layout::compute(LayoutParams::default(), physical).unwrap();
        let overhead_permille = l.overhead_blocks().0 * 1000 / physical.0;
        println!(
            "journal {} summary {} roots {} index {} ({} blocks) depot {} slabs {} \
             slab data {} refs {} pairs, data total {} overhead {} ({} permille)",
            l.journal_start(),
            l.summary_start(),
            l.roots_start(),
            l.index_start(),
            l.params().index_blocks,
            l.depot_start(),
            l.slab_count(),
            l.slab().data_blocks,
            l.slab().ref_count_pairs,
            l.data_blocks_total(),
            l.overhead_blocks(),
            overhead_permille,
        );
        assert_eq!(l.params().index_blocks, BlockCount(66_314));
        assert_eq!(l.summary_start(), Pbn(32_771));
        assert_eq!(l.roots_start(), Pbn(32_837));
        assert_eq!(l.index_start(), Pbn(32_869));
        assert_eq!(l.depot_start(), Pbn(99_183));
        assert_eq!(l.slab_count(), 511);
        assert_eq!(l.slab().data_blocks, BlockCount(523_804));
        assert_eq!(l.slab().ref_count_pairs, BlockCount(130));
        assert_eq!(l.data_blocks_total(), BlockCount(267_663_844));
        assert_eq!(l.overhead_blocks(), BlockCount(771_612));
        assert_eq!(overhead_permille, 2);
    }
}
