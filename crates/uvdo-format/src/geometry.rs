//! The geometry block at PBN 0: the volume's identity and the sizes fixed at format.
//!
//! Written once, last, at format, and never again (growing the store only appends slabs, so
//! nothing here changes). Header: type 1, location 0, sequence 0, nonce = the volume's nonce,
//! which a reader learns from this block.
//!
//! ```text
//! offset size field
//!      0   32 common header (sequence 0)
//!     32    4 format_version           volume format version, 1
//!     36    4 block_size               4096
//!     40   16 uuid
//!     56    8 creation_time_s          unix seconds
//!     64  192 hash_secret              per-volume xxh3 secret, random at format
//!    256    8 slab_blocks              LayoutParams
//!    264    8 slab_journal_blocks
//!    272    8 recovery_journal_blocks
//!    280    8 index_blocks
//!    288    8 index_memory_bytes       index configuration
//!    296    1 root_count               LayoutParams
//!    297    1 index_sparse             0 or 1
//!    298    2 region_count             6
//!    300    4 reserved (zero)
//!    304  144 region table: 6 entries of 24 bytes, in region id order
//!             +0 id u16 (1 super block, 2 recovery journal, 3 slab summary,
//!                        4 block map roots, 5 index, 6 slab depot)
//!             +2 reserved (6 bytes, zero)
//!             +8 start u64 (PBN)
//!            +16 blocks u64 (0 for the slab depot: to the end of the store)
//!    448 3648 reserved (zero)
//! ```
//!
//! # Detection
//!
//! A torn or bit-flipped geometry fails the CRC; format writes it last, so a store whose
//! format was interrupted has no valid geometry and is not recognised as a volume. The block
//! is never rewritten, so it cannot be stale: its sequence must be 0. A misdirected block fails
//! the location check (it must say PBN 0). A foreign geometry (another volume's) cannot be told
//! apart by itself, since its nonce defines the volume; every other block is then checked
//! against this nonce. The region table is redundant with the parameters and must equal what
//! `layout` computes from them, so a bug or corruption that passes the CRC is still caught.

use crate::block::{BLOCK_SIZE, Block};
use crate::error::{FormatError, Problem};
use crate::header::{self, BlockHeader, BlockType, Expected, HEADER_SIZE, MAGIC};
use crate::layout::{
    GEOMETRY_PBN, INDEX_MEMORY_BYTES_MAX, LayoutError, LayoutParams, REGION_COUNT, Region,
    index_blocks_for,
};
use crate::le::{array, get_u8, get_u16, get_u32, get_u64};
use crate::le::{put_u8, put_u16, put_u32, put_u64};
use crate::numbers::{BlockCount, Nonce, SequenceNumber};

/// Layout version of the geometry block.
pub const VERSION: u8 = 1;
/// The volume format version this build writes and reads.
pub const FORMAT_VERSION: u32 = 1;
/// Bytes of the per-volume hash secret.
pub const HASH_SECRET_SIZE: usize = 192;

const FORMAT_VERSION_OFFSET: usize = HEADER_SIZE;
const BLOCK_SIZE_OFFSET: usize = 36;
const UUID_OFFSET: usize = 40;
const CREATION_TIME_OFFSET: usize = 56;
const HASH_SECRET_OFFSET: usize = 64;
const SLAB_BLOCKS_OFFSET: usize = 256;
const SLAB_JOURNAL_OFFSET: usize = 264;
const RECOVERY_JOURNAL_OFFSET: usize = 272;
const INDEX_BLOCKS_OFFSET: usize = 280;
const INDEX_MEMORY_OFFSET: usize = 288;
const ROOT_COUNT_OFFSET: usize = 296;
const SPARSE_OFFSET: usize = 297;
const REGION_COUNT_OFFSET: usize = 298;
const RESERVED_OFFSET: usize = 300;
const REGIONS_OFFSET: usize = 304;
const REGION_ENTRY_SIZE: usize = 24;
const REGION_START_AT: usize = 8;
const REGION_BLOCKS_AT: usize = 16;
const REGION_COUNT_CODE: u16 = 6;
const TAIL_OFFSET: usize = REGIONS_OFFSET + REGION_COUNT * REGION_ENTRY_SIZE;

// The header's type byte; header.rs keeps its offsets private.
const MAGIC_OFFSET: usize = 4;
const TYPE_OFFSET: usize = 6;

const _: () = assert!(HASH_SECRET_OFFSET + HASH_SECRET_SIZE == SLAB_BLOCKS_OFFSET);
const _: () = assert!(REGION_COUNT_CODE as usize == REGION_COUNT);
const _: () = assert!(REGION_COUNT_OFFSET + 2 == RESERVED_OFFSET);
const _: () = assert!(TAIL_OFFSET == 448 && TAIL_OFFSET <= BLOCK_SIZE);

/// How the dedupe index is configured.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct IndexConfig {
    /// Memory the index may use, in bytes; one saved image takes `index_blocks_for` of it.
    pub memory_bytes: u64,
    /// Sparse index: a larger dedupe window for the same memory.
    pub sparse: bool,
}

/// The decoded geometry block.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Geometry {
    /// The volume's nonce, stamped into every metadata block.
    pub nonce: Nonce,
    /// The volume's UUID.
    pub uuid: [u8; 16],
    /// The secret keying the content hash, so collisions cannot be crafted offline.
    pub hash_secret: [u8; HASH_SECRET_SIZE],
    /// When the volume was formatted, in unix seconds.
    pub creation_time_s: u64,
    /// The sizes the layout is computed from.
    pub params: LayoutParams,
    /// The dedupe index configuration.
    pub index: IndexConfig,
}

fn invalid(field: &'static str, expected: &'static str, found: u64) -> FormatError {
    FormatError::new(
        BlockType::Geometry,
        GEOMETRY_PBN,
        Problem::InvalidField {
            field,
            expected,
            found,
        },
    )
}

fn layout_problem(error: &LayoutError) -> FormatError {
    match *error {
        LayoutError::OutOfRange {
            field,
            expected,
            found,
        } => invalid(field, expected, found),
        LayoutError::NotPowerOfTwo { field, found } => invalid(field, "a power of two", found),
        LayoutError::TooSmall { found, .. }
        | LayoutError::TooManySlabs { found, .. }
        | LayoutError::TooLarge { found, .. } => {
            invalid("layout", "parameters valid without a store size", found)
        }
    }
}

impl Geometry {
    /// True when `block` carries uvdo's magic and the geometry type, valid or not.
    ///
    /// Format uses this to refuse overwriting a volume, so a damaged geometry still counts.
    #[must_use]
    pub fn looks_like_uvdo(block: &Block) -> bool {
        block[MAGIC_OFFSET..MAGIC_OFFSET + 2] == MAGIC
            && get_u8(block, TYPE_OFFSET) == BlockType::Geometry as u8
    }

    /// Checks the invariants `decode` checks; encoding a geometry that breaks them is a bug.
    fn assert_valid(&self) {
        assert!(self.params.validate().is_ok(), "{:?}", self.params);
        assert!(self.index.memory_bytes <= INDEX_MEMORY_BYTES_MAX);
        assert!(self.params.index_blocks >= index_blocks_for(self.index.memory_bytes));
    }

    /// Writes the geometry into `out` (every byte), sealed for PBN 0.
    ///
    /// # Panics
    ///
    /// If the parameters are invalid or the index save area cannot hold the index memory.
    pub fn encode(&self, out: &mut Block) {
        self.assert_valid();
        let regions = self.params.regions().expect("validated above");
        out.fill(0);
        put_u32(out, FORMAT_VERSION_OFFSET, FORMAT_VERSION);
        put_u32(out, BLOCK_SIZE_OFFSET, 4096);
        out[UUID_OFFSET..UUID_OFFSET + 16].copy_from_slice(&self.uuid);
        put_u64(out, CREATION_TIME_OFFSET, self.creation_time_s);
        out[HASH_SECRET_OFFSET..SLAB_BLOCKS_OFFSET].copy_from_slice(&self.hash_secret);
        let p = &self.params;
        put_u64(out, SLAB_BLOCKS_OFFSET, p.slab_blocks.0);
        put_u64(out, SLAB_JOURNAL_OFFSET, p.slab_journal_blocks.0);
        put_u64(out, RECOVERY_JOURNAL_OFFSET, p.recovery_journal_blocks.0);
        put_u64(out, INDEX_BLOCKS_OFFSET, p.index_blocks.0);
        put_u64(out, INDEX_MEMORY_OFFSET, self.index.memory_bytes);
        put_u8(out, ROOT_COUNT_OFFSET, p.root_count);
        put_u8(out, SPARSE_OFFSET, u8::from(self.index.sparse));
        put_u16(out, REGION_COUNT_OFFSET, REGION_COUNT_CODE);
        for (i, region) in regions.iter().enumerate() {
            let at = REGIONS_OFFSET + i * REGION_ENTRY_SIZE;
            put_u16(out, at, region.id as u16);
            put_u64(out, at + REGION_START_AT, region.start.0);
            put_u64(out, at + REGION_BLOCKS_AT, region.blocks.0);
        }
        let header = BlockHeader {
            block_type: BlockType::Geometry,
            version: VERSION,
            nonce: self.nonce,
            location: GEOMETRY_PBN,
            sequence: SequenceNumber(0),
        };
        header::seal(out, &header);
    }

    /// Decodes the geometry read from PBN 0, learning the volume's nonce from it.
    ///
    /// # Errors
    ///
    /// The first check that fails (header, then every field).
    pub fn decode(block: &Block) -> Result<Self, FormatError> {
        let header = header::open_any_nonce(block, BlockType::Geometry, VERSION, GEOMETRY_PBN)?;
        Self::decode_payload(block, &header)
    }

    /// Decodes a geometry whose nonce is already known (e.g. re-read after format). A geometry
    /// only ever lives at PBN 0; `expected.pbn` says where this copy was read.
    ///
    /// # Errors
    ///
    /// The first check that fails, including `WrongNonce`.
    pub fn decode_expected(block: &Block, expected: Expected) -> Result<Self, FormatError> {
        let header = header::open(block, BlockType::Geometry, VERSION, expected)?;
        Self::decode_payload(block, &header)
    }

    fn decode_payload(block: &Block, header: &BlockHeader) -> Result<Self, FormatError> {
        if header.sequence.0 != 0 || header.location != GEOMETRY_PBN {
            let problem = if header.sequence.0 == 0 {
                Problem::WrongLocation {
                    expected: GEOMETRY_PBN.0,
                    found: header.location.0,
                }
            } else {
                Problem::WrongSequence {
                    expected: 0,
                    found: header.sequence.0,
                }
            };
            return Err(FormatError::new(
                BlockType::Geometry,
                header.location,
                problem,
            ));
        }
        let version = get_u32(block, FORMAT_VERSION_OFFSET);
        if version != FORMAT_VERSION {
            return Err(invalid("format_version", "1", u64::from(version)));
        }
        let block_size = get_u32(block, BLOCK_SIZE_OFFSET);
        if block_size != 4096 {
            return Err(invalid("block_size", "4096", u64::from(block_size)));
        }
        check_reserved(block)?;
        let params = LayoutParams {
            slab_blocks: BlockCount(get_u64(block, SLAB_BLOCKS_OFFSET)),
            slab_journal_blocks: BlockCount(get_u64(block, SLAB_JOURNAL_OFFSET)),
            recovery_journal_blocks: BlockCount(get_u64(block, RECOVERY_JOURNAL_OFFSET)),
            root_count: get_u8(block, ROOT_COUNT_OFFSET),
            index_blocks: BlockCount(get_u64(block, INDEX_BLOCKS_OFFSET)),
        };
        let regions = params.regions().map_err(|e| layout_problem(&e))?;
        let index = decode_index(block, &params)?;
        check_regions(block, &regions)?;
        let geometry = Self {
            nonce: header.nonce,
            uuid: array(block, UUID_OFFSET),
            hash_secret: array(block, HASH_SECRET_OFFSET),
            creation_time_s: get_u64(block, CREATION_TIME_OFFSET),
            params,
            index,
        };
        geometry.assert_valid();
        Ok(geometry)
    }
}

fn check_reserved(block: &Block) -> Result<(), FormatError> {
    let zero = |range: std::ops::Range<usize>| {
        crate::reserved::require_zero(&block[range], "reserved bytes")
            .map_err(|problem| FormatError::new(BlockType::Geometry, GEOMETRY_PBN, problem))
    };
    zero(RESERVED_OFFSET..REGIONS_OFFSET)?;
    for i in 0..REGION_COUNT {
        let at = REGIONS_OFFSET + i * REGION_ENTRY_SIZE;
        zero(at + 2..at + REGION_START_AT)?;
    }
    zero(TAIL_OFFSET..BLOCK_SIZE)
}

fn decode_index(block: &Block, params: &LayoutParams) -> Result<IndexConfig, FormatError> {
    let sparse = match get_u8(block, SPARSE_OFFSET) {
        0 => false,
        1 => true,
        other => return Err(invalid("index_sparse", "0 or 1", u64::from(other))),
    };
    let memory_bytes = get_u64(block, INDEX_MEMORY_OFFSET);
    if memory_bytes > INDEX_MEMORY_BYTES_MAX {
        return Err(invalid("index_memory_bytes", "at most 2^40", memory_bytes));
    }
    if params.index_blocks < index_blocks_for(memory_bytes) {
        let found = params.index_blocks.0;
        return Err(invalid(
            "index_blocks",
            "at least ceil(index memory / 4048)",
            found,
        ));
    }
    Ok(IndexConfig {
        memory_bytes,
        sparse,
    })
}

fn check_regions(block: &Block, regions: &[Region; REGION_COUNT]) -> Result<(), FormatError> {
    let count = get_u16(block, REGION_COUNT_OFFSET);
    if count != REGION_COUNT_CODE {
        return Err(invalid("region_count", "6", u64::from(count)));
    }
    for (i, region) in regions.iter().enumerate() {
        let at = REGIONS_OFFSET + i * REGION_ENTRY_SIZE;
        let id = get_u16(block, at);
        if id != region.id as u16 {
            return Err(invalid("region id", "1..=6 in order", u64::from(id)));
        }
        let start = get_u64(block, at + REGION_START_AT);
        if start != region.start.0 {
            return Err(invalid(
                "region start",
                "as computed from the parameters",
                start,
            ));
        }
        let blocks = get_u64(block, at + REGION_BLOCKS_AT);
        if blocks != region.blocks.0 {
            return Err(invalid(
                "region blocks",
                "as computed from the parameters",
                blocks,
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::damage::{assert_detects_damage, reseal};
    use crate::layout::testing::valid_params;
    use crate::numbers::Pbn;
    use proptest::prelude::*;

    fn sample(nonce: u64, time: u64) -> Geometry {
        let mut hash_secret = [0_u8; HASH_SECRET_SIZE];
        for (i, b) in hash_secret.iter_mut().enumerate() {
            *b = u8::try_from(i % 251).unwrap();
        }
        Geometry {
            nonce: Nonce(nonce),
            uuid: *b"0123456789abcdef",
            hash_secret,
            creation_time_s: time,
            params: LayoutParams::default(),
            index: IndexConfig {
                memory_bytes: 256 << 20,
                sparse: false,
            },
        }
    }

    fn encoded(g: &Geometry) -> Block {
        let mut block = [0xa5_u8; BLOCK_SIZE];
        g.encode(&mut block);
        block
    }

    fn any_geometry() -> impl Strategy<Value = Geometry> {
        (
            valid_params(),
            any::<u64>(),
            any::<[u8; 16]>(),
            prop::collection::vec(any::<u8>(), HASH_SECRET_SIZE),
            any::<u64>(),
            any::<u64>(),
            any::<bool>(),
        )
            .prop_map(|(params, nonce, uuid, secret, time, memory, sparse)| {
                let memory_bytes = memory % (params.index_blocks.0 * 4048 + 1);
                Geometry {
                    nonce: Nonce(nonce),
                    uuid,
                    hash_secret: secret.try_into().unwrap(),
                    creation_time_s: time,
                    params,
                    index: IndexConfig {
                        memory_bytes,
                        sparse,
                    },
                }
            })
    }

    proptest! {
        #[test]
        fn round_trips(g in any_geometry()) {
            let block = encoded(&g);
            prop_assert_eq!(Geometry::decode(&block), Ok(g.clone()));
            let expected = Expected::new(g.nonce, GEOMETRY_PBN);
            prop_assert_eq!(Geometry::decode_expected(&block, expected), Ok(g));
            prop_assert!(Geometry::looks_like_uvdo(&block));
        }

        #[test]
        fn arbitrary_blocks_decode_without_panic(
            bytes in prop::collection::vec(any::<u8>(), BLOCK_SIZE),
        ) {
            let block: Block = bytes.try_into().unwrap();
            prop_assert!(Geometry::decode(&block).is_err());
        }

        #[test]
        fn mutated_blocks_decode_without_panic(
            edits in prop::collection::vec((0..BLOCK_SIZE, any::<u8>()), 1..8),
            resealed in any::<bool>(),
        ) {
            let mut block = encoded(&sample(7, 9));
            for (at, value) in edits {
                block[at] = value;
            }
            if resealed {
                reseal(&mut block);
            }
            if let Ok(g) = Geometry::decode(&block) {
                prop_assert_eq!(encoded(&g), block);
            }
        }
    }

    #[test]
    fn damage_is_detected() {
        let older = encoded(&sample(0x1234, 1_000));
        let newer = encoded(&sample(0x1234, 2_000));
        let decode = |b: &Block, e| Geometry::decode_expected(b, e);
        assert_detects_damage(decode, &older, &newer, Expected::new(Nonce(0x1234), Pbn(0)));
    }

    fn problem_after(patch: impl FnOnce(&mut Block)) -> Problem {
        let mut block = encoded(&sample(5, 6));
        patch(&mut block);
        reseal(&mut block);
        Geometry::decode(&block).unwrap_err().problem
    }

    fn field_after(patch: impl FnOnce(&mut Block)) -> &'static str {
        match problem_after(patch) {
            Problem::InvalidField { field, .. } => field,
            other => panic!("{other}"),
        }
    }

    #[test]
    fn each_field_check_reports_its_own_error() {
        assert_eq!(
            problem_after(|b| put_u64(b, 24, 1)),
            Problem::WrongSequence {
                expected: 0,
                found: 1
            }
        );
        assert_eq!(
            field_after(|b| put_u32(b, FORMAT_VERSION_OFFSET, 2)),
            "format_version"
        );
        assert_eq!(
            field_after(|b| put_u32(b, BLOCK_SIZE_OFFSET, 512)),
            "block_size"
        );
        assert_eq!(
            field_after(|b| b[RESERVED_OFFSET + 3] = 1),
            "reserved bytes"
        );
        assert_eq!(field_after(|b| b[REGIONS_OFFSET + 2] = 1), "reserved bytes");
        assert_eq!(field_after(|b| b[BLOCK_SIZE - 1] = 1), "reserved bytes");
        assert_eq!(
            field_after(|b| put_u64(b, SLAB_BLOCKS_OFFSET, 48)),
            "slab_blocks"
        );
        assert_eq!(
            field_after(|b| put_u64(b, SLAB_JOURNAL_OFFSET, 1)),
            "slab_journal_blocks"
        );
        let rj = field_after(|b| put_u64(b, RECOVERY_JOURNAL_OFFSET, 2));
        assert_eq!(rj, "recovery_journal_blocks");
        assert_eq!(field_after(|b| b[ROOT_COUNT_OFFSET] = 61), "root_count");
        assert_eq!(
            field_after(|b| put_u64(b, INDEX_BLOCKS_OFFSET, 1 << 40)),
            "index_blocks"
        );
        assert_eq!(field_after(|b| b[SPARSE_OFFSET] = 2), "index_sparse");
        let memory = field_after(|b| put_u64(b, INDEX_MEMORY_OFFSET, (1 << 40) + 1));
        assert_eq!(memory, "index_memory_bytes");
        assert_eq!(
            field_after(|b| put_u64(b, INDEX_MEMORY_OFFSET, 1 << 30)),
            "index_blocks"
        );
        assert_eq!(
            field_after(|b| put_u16(b, REGION_COUNT_OFFSET, 7)),
            "region_count"
        );
        let entry = REGIONS_OFFSET + 2 * REGION_ENTRY_SIZE;
        assert_eq!(field_after(|b| put_u16(b, entry, 4)), "region id");
        assert_eq!(field_after(|b| put_u64(b, entry + 8, 1)), "region start");
        assert_eq!(field_after(|b| put_u64(b, entry + 16, 67)), "region blocks");
        let depot = REGIONS_OFFSET + 5 * REGION_ENTRY_SIZE;
        assert_eq!(field_after(|b| put_u64(b, depot + 16, 1)), "region blocks");
    }

    #[test]
    fn a_changed_parameter_no_longer_matches_the_region_table() {
        // Valid parameters on their own, but the table was computed from others: the journal
        // entry's size is the first to differ.
        let field = field_after(|b| put_u64(b, RECOVERY_JOURNAL_OFFSET, 4096));
        assert_eq!(field, "region blocks");
    }

    #[test]
    fn the_nonce_is_learned_from_the_block() {
        let block = encoded(&sample(0xdead_beef, 6));
        assert_eq!(Geometry::decode(&block).unwrap().nonce, Nonce(0xdead_beef));
        let other = Expected::new(Nonce(1), GEOMETRY_PBN);
        let err = Geometry::decode_expected(&block, other).unwrap_err();
        assert!(matches!(err.problem, Problem::WrongNonce { .. }));
    }

    #[test]
    fn a_volume_is_recognised_even_when_damaged() {
        let mut block = encoded(&sample(3, 4));
        block[1000] ^= 1;
        assert!(Geometry::decode(&block).is_err());
        assert!(Geometry::looks_like_uvdo(&block));
        assert!(!Geometry::looks_like_uvdo(&[0; BLOCK_SIZE]));
        block[TYPE_OFFSET] = BlockType::SuperBlock as u8;
        assert!(!Geometry::looks_like_uvdo(&block));
    }

    #[test]
    fn layout_matches_the_diagram() {
        let block = encoded(&sample(1, 0x0102));
        assert_eq!(block[32..40], [1, 0, 0, 0, 0, 16, 0, 0]);
        assert_eq!(block[56..58], [2, 1]);
        assert_eq!(get_u64(&block, SLAB_BLOCKS_OFFSET), 1 << 19);
        assert_eq!(block[296], 16);
        assert_eq!(get_u16(&block, REGIONS_OFFSET), 1);
        assert_eq!(get_u64(&block, REGIONS_OFFSET + 8), 1);
        assert_eq!(get_u64(&block, REGIONS_OFFSET + 5 * 24 + 8), 99_183);
    }
}
