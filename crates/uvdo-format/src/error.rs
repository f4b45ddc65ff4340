//! What can be wrong with a block read from disk.
//!
//! Every decode failure names the structure it expected, where it read it, and what exactly
//! did not match, with the expected and found values (STYLE.md rule 4). Bad bytes give an error,
//! never a panic.

use crate::header::BlockType;
use crate::numbers::Pbn;

/// A block failed to decode as the structure the caller expected.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{structure} block at PBN {location}: {problem}")]
pub struct FormatError {
    /// The structure the caller tried to decode.
    pub structure: BlockType,
    /// Where the caller read the block from.
    pub location: Pbn,
    /// What was wrong.
    pub problem: Problem,
}

/// The specific check a block failed, in the order checks run.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Problem {
    /// The block is all zeros: never written since the region was zeroed.
    #[error("never written (all zeros)")]
    Unwritten,
    /// The CRC does not match: a torn write, a bit flip, or not a metadata block at all.
    #[error("checksum mismatch: stored {stored:#010x}, computed {computed:#010x}")]
    Checksum {
        /// CRC stored in the block.
        stored: u32,
        /// CRC computed over the block's contents.
        computed: u32,
    },
    /// The checksum is right but the magic is not uvdo's.
    #[error("not a uvdo metadata block: magic {found:02x?}, expected {expected:02x?}")]
    BadMagic {
        /// The magic uvdo writes.
        expected: [u8; 2],
        /// The magic found.
        found: [u8; 2],
    },
    /// A valid uvdo block of another kind (a misdirected write or a wrong pointer).
    #[error("wrong block type: expected {expected}, found type code {found}")]
    WrongType {
        /// The type the caller asked for.
        expected: BlockType,
        /// The type code in the block.
        found: u8,
    },
    /// A block written by a format version this build cannot read.
    #[error("unsupported version {found}; this build reads version {supported}")]
    UnsupportedVersion {
        /// The newest version this build reads.
        supported: u8,
        /// The version in the block.
        found: u8,
    },
    /// A valid block of another volume (a foreign block).
    #[error("foreign block: nonce {found:#018x}, this volume's is {expected:#018x}")]
    WrongNonce {
        /// This volume's nonce.
        expected: u64,
        /// The nonce in the block.
        found: u64,
    },
    /// A valid block of this volume that belongs elsewhere (a misdirected write).
    #[error("misdirected block: it belongs at PBN {found}, read from PBN {expected}")]
    WrongLocation {
        /// Where the block was read from.
        expected: u64,
        /// Where the block says it belongs.
        found: u64,
    },
    /// A valid block whose sequence number is not the one its position requires (stale or from
    /// a later lap of a circular log).
    #[error("wrong sequence number: expected {expected}, found {found}")]
    WrongSequence {
        /// The sequence number the caller expected.
        expected: u64,
        /// The sequence number in the block.
        found: u64,
    },
    /// A field holds a value outside its valid range.
    #[error("invalid {field}: found {found}, expected {expected}")]
    InvalidField {
        /// The field's name as in FORMAT.md.
        field: &'static str,
        /// What the field must hold.
        expected: &'static str,
        /// What it holds.
        found: u64,
    },
}

impl FormatError {
    /// An error for `structure` read from `location`.
    #[must_use]
    pub fn new(structure: BlockType, location: Pbn, problem: Problem) -> Self {
        Self {
            structure,
            location,
            problem,
        }
    }

    /// True when the block was simply never written, as opposed to damaged.
    #[must_use]
    pub fn is_unwritten(&self) -> bool {
        matches!(self.problem, Problem::Unwritten)
    }
}
