//! The header every metadata block starts with, and the checks that run on it.
//!
//! ```text
//! offset size field
//!      0    4 checksum   CRC-32 (IEEE) of bytes 4..4096 of the block
//!      4    2 magic      "uv"
//!      6    1 type       BlockType code
//!      7    1 version    version of this structure's layout
//!      8    8 nonce      the volume's nonce
//!     16    8 location   the PBN this block is written at
//!     24    8 sequence   meaning per structure (log position, generation)
//!     32 4064 payload    per structure
//! ```
//!
//! # Detection
//!
//! The checks run in this order, and the first failure is reported:
//!
//! | check | catches |
//! |---|---|
//! | all 4096 bytes zero | a block never written (`Unwritten`) |
//! | CRC over bytes 4..4096 | torn writes (any mix of old and new sectors that differ), bit flips, non-metadata data |
//! | magic | a block with a valid CRC by chance but not written by uvdo |
//! | type | a misdirected write of another structure, a wrong pointer |
//! | version | a block from a newer format |
//! | nonce | a block of another volume (foreign), e.g. a reused disk |
//! | location | a misdirected write of this volume's block, a block copied elsewhere |
//!
//! Sequence numbers are checked by each structure's decoder, which knows what they mean:
//! they catch stale blocks (lost writes, an earlier lap of a circular journal).

use std::fmt;

use crate::block::{BLOCK_SIZE, Block};
use crate::error::{FormatError, Problem};
use crate::le::{array, get_u8, get_u64, put_u8, put_u64};
use crate::numbers::{Nonce, Pbn, SequenceNumber};

/// Bytes taken by the header; the payload starts here.
pub const HEADER_SIZE: usize = 32;
/// Bytes of payload after the header.
pub const PAYLOAD_SIZE: usize = BLOCK_SIZE - HEADER_SIZE;
/// The magic at offset 4 of every metadata block.
pub const MAGIC: [u8; 2] = *b"uv";

const CHECKSUM_OFFSET: usize = 0;
const MAGIC_OFFSET: usize = 4;
const TYPE_OFFSET: usize = 6;
const VERSION_OFFSET: usize = 7;
const NONCE_OFFSET: usize = 8;
const LOCATION_OFFSET: usize = 16;
const SEQUENCE_OFFSET: usize = 24;
const CHECKED_FROM: usize = 4;

/// The kinds of metadata block. The code is stored at offset 6.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum BlockType {
    /// The geometry block at PBN 0.
    Geometry = 1,
    /// One of the two super block copies.
    SuperBlock = 2,
    /// A block map page (interior or leaf).
    BlockMapPage = 3,
    /// A recovery journal block.
    RecoveryJournal = 4,
    /// A slab journal block.
    SlabJournal = 5,
    /// A reference count block.
    RefCounts = 6,
    /// A slab summary block.
    SlabSummary = 7,
    /// A page of the saved dedupe index.
    IndexPage = 8,
}

impl BlockType {
    /// Every block type, for tests that go through them all.
    pub const ALL: [BlockType; 8] = [
        Self::Geometry,
        Self::SuperBlock,
        Self::BlockMapPage,
        Self::RecoveryJournal,
        Self::SlabJournal,
        Self::RefCounts,
        Self::SlabSummary,
        Self::IndexPage,
    ];

    /// The type with code `code`, if any.
    #[must_use]
    pub fn from_code(code: u8) -> Option<Self> {
        Self::ALL.into_iter().find(|t| *t as u8 == code)
    }

    /// The name used in messages and FORMAT.md.
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            Self::Geometry => "geometry",
            Self::SuperBlock => "super block",
            Self::BlockMapPage => "block map page",
            Self::RecoveryJournal => "recovery journal",
            Self::SlabJournal => "slab journal",
            Self::RefCounts => "reference count",
            Self::SlabSummary => "slab summary",
            Self::IndexPage => "index page",
        }
    }
}

impl fmt::Display for BlockType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The decoded header of a metadata block.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BlockHeader {
    /// What the block holds.
    pub block_type: BlockType,
    /// Layout version of that structure.
    pub version: u8,
    /// The volume the block belongs to.
    pub nonce: Nonce,
    /// Where the block is written.
    pub location: Pbn,
    /// Log position or write generation, per structure.
    pub sequence: SequenceNumber,
}

/// What a caller knows about a block before reading it: whose it must be and where it was read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Expected {
    /// The volume's nonce.
    pub nonce: Nonce,
    /// The PBN the block was read from.
    pub pbn: Pbn,
}

impl Expected {
    /// The expectation for the block at `pbn` of the volume with `nonce`.
    #[must_use]
    pub fn new(nonce: Nonce, pbn: Pbn) -> Self {
        Self { nonce, pbn }
    }
}

/// Writes `header` into the block, then the CRC over everything after the checksum field.
///
/// Call this last, after the payload is in place.
pub fn seal(block: &mut Block, header: &BlockHeader) {
    block[MAGIC_OFFSET..MAGIC_OFFSET + 2].copy_from_slice(&MAGIC);
    put_u8(block, TYPE_OFFSET, header.block_type as u8);
    put_u8(block, VERSION_OFFSET, header.version);
    put_u64(block, NONCE_OFFSET, header.nonce.0);
    put_u64(block, LOCATION_OFFSET, header.location.0);
    put_u64(block, SEQUENCE_OFFSET, header.sequence.0);
    let crc = checksum(block);
    block[CHECKSUM_OFFSET..CHECKSUM_OFFSET + 4].copy_from_slice(&crc.to_le_bytes());
}

/// Checks the header of a block read from `expected.pbn` that should hold `block_type` at
/// layout `version` (see the module doc for the order of checks).
///
/// # Errors
///
/// The first check that fails, as a [`FormatError`].
pub fn open(
    block: &Block,
    block_type: BlockType,
    version: u8,
    expected: Expected,
) -> Result<BlockHeader, FormatError> {
    let header = open_any_nonce(block, block_type, version, expected.pbn)?;
    if header.nonce != expected.nonce {
        return Err(FormatError::new(
            block_type,
            expected.pbn,
            Problem::WrongNonce {
                expected: expected.nonce.0,
                found: header.nonce.0,
            },
        ));
    }
    Ok(header)
}

/// As [`open`], for the one block whose nonce is not known before it is read: the geometry.
///
/// # Errors
///
/// The first check that fails, as a [`FormatError`].
pub fn open_any_nonce(
    block: &Block,
    block_type: BlockType,
    version: u8,
    pbn: Pbn,
) -> Result<BlockHeader, FormatError> {
    let fail = |problem| Err(FormatError::new(block_type, pbn, problem));
    if crate::le::all_zero(block) {
        return fail(Problem::Unwritten);
    }
    let stored = crate::le::get_u32(block, CHECKSUM_OFFSET);
    let computed = checksum(block);
    if stored != computed {
        return fail(Problem::Checksum { stored, computed });
    }
    let magic: [u8; 2] = array(block, MAGIC_OFFSET);
    if magic != MAGIC {
        return fail(Problem::BadMagic {
            expected: MAGIC,
            found: magic,
        });
    }
    let code = get_u8(block, TYPE_OFFSET);
    if code != block_type as u8 {
        return fail(Problem::WrongType {
            expected: block_type,
            found: code,
        });
    }
    let found_version = get_u8(block, VERSION_OFFSET);
    if found_version != version {
        return fail(Problem::UnsupportedVersion {
            supported: version,
            found: found_version,
        });
    }
    let location = get_u64(block, LOCATION_OFFSET);
    if location != pbn.0 {
        return fail(Problem::WrongLocation {
            expected: pbn.0,
            found: location,
        });
    }
    Ok(BlockHeader {
        block_type,
        version,
        nonce: Nonce(get_u64(block, NONCE_OFFSET)),
        location: Pbn(location),
        sequence: SequenceNumber(get_u64(block, SEQUENCE_OFFSET)),
    })
}

fn checksum(block: &Block) -> u32 {
    crc32fast::hash(&block[CHECKED_FROM..])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> (Block, BlockHeader) {
        let header = BlockHeader {
            block_type: BlockType::SlabJournal,
            version: 1,
            nonce: Nonce(0xfeed),
            location: Pbn(77),
            sequence: SequenceNumber(5),
        };
        let mut block = [0x5a_u8; BLOCK_SIZE];
        seal(&mut block, &header);
        (block, header)
    }

    fn expect() -> Expected {
        Expected::new(Nonce(0xfeed), Pbn(77))
    }

    #[test]
    fn sealed_header_opens() {
        let (block, header) = sample();
        assert_eq!(
            open(&block, BlockType::SlabJournal, 1, expect()),
            Ok(header)
        );
    }

    #[test]
    fn every_single_bit_flip_is_detected() {
        let (block, _) = sample();
        for bit in 0..BLOCK_SIZE * 8 {
            let mut damaged = block;
            damaged[bit / 8] ^= 1 << (bit % 8);
            let err = open(&damaged, BlockType::SlabJournal, 1, expect()).unwrap_err();
            assert!(
                matches!(err.problem, Problem::Checksum { .. }),
                "bit {bit}: {err}"
            );
        }
    }

    #[test]
    fn each_header_check_reports_its_own_problem() {
        let (block, _) = sample();
        let zero = [0_u8; BLOCK_SIZE];
        let p = |b: &Block, t, v, e| open(b, t, v, e).unwrap_err().problem;
        assert_eq!(
            p(&zero, BlockType::SlabJournal, 1, expect()),
            Problem::Unwritten
        );
        assert!(matches!(
            p(&block, BlockType::RefCounts, 1, expect()),
            Problem::WrongType { found: 5, .. }
        ));
        assert!(matches!(
            p(&block, BlockType::SlabJournal, 2, expect()),
            Problem::UnsupportedVersion {
                supported: 2,
                found: 1
            }
        ));
        assert!(matches!(
            p(
                &block,
                BlockType::SlabJournal,
                1,
                Expected::new(Nonce(1), Pbn(77))
            ),
            Problem::WrongNonce {
                expected: 1,
                found: 0xfeed
            }
        ));
        assert!(matches!(
            p(
                &block,
                BlockType::SlabJournal,
                1,
                Expected::new(Nonce(0xfeed), Pbn(78))
            ),
            Problem::WrongLocation {
                expected: 78,
                found: 77
            }
        ));
    }

    #[test]
    fn wrong_magic_with_valid_crc_is_bad_magic() {
        let (mut block, _) = sample();
        block[MAGIC_OFFSET] = b'x';
        let crc = checksum(&block);
        block[..4].copy_from_slice(&crc.to_le_bytes());
        assert!(matches!(
            open(&block, BlockType::SlabJournal, 1, expect())
                .unwrap_err()
                .problem,
            Problem::BadMagic { .. }
        ));
    }

    #[test]
    fn type_codes_round_trip() {
        for t in BlockType::ALL {
            assert_eq!(BlockType::from_code(t as u8), Some(t));
        }
        assert_eq!(BlockType::from_code(0), None);
        assert_eq!(BlockType::from_code(9), None);
    }
}
