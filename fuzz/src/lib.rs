//! Input shaping shared by the decoder fuzz targets.
//!
//! The first input byte chooses the mode: even, the rest of the input is the block as it is
//! (the decoder must reject it without panicking, almost always at the checksum); odd, the
//! block is first given a valid header (magic, type, version, this volume's nonce, the
//! location its sequence belongs at) and CRC, so the fuzzer explores the payload checks.

use uvdo_format::header::{self, BlockHeader, BlockType, Expected};
use uvdo_format::{BLOCK_SIZE, Block, Nonce, Pbn, SequenceNumber, le};

/// The nonce every target's volume has.
pub const NONCE: Nonce = Nonce(0x7576_646f_f022_2e01);

const SEQUENCE_OFFSET: usize = 24;

/// Builds the block a target decodes, and where it is read from. `pbn_for` maps the block's
/// sequence number to the PBN a block with that sequence lives at (constant for most types).
pub fn shape(
    data: &[u8],
    block_type: BlockType,
    version: u8,
    pbn_for: impl Fn(SequenceNumber) -> Pbn,
) -> (Block, Expected) {
    let (mode, rest) = data.split_first().unwrap_or((&0, &[]));
    let mut block = [0_u8; BLOCK_SIZE];
    let len = rest.len().min(BLOCK_SIZE);
    block[..len].copy_from_slice(&rest[..len]);
    let sequence = SequenceNumber(le::get_u64(&block, SEQUENCE_OFFSET));
    let pbn = pbn_for(sequence);
    if mode & 1 == 1 {
        let fixed = BlockHeader { block_type, version, nonce: NONCE, location: pbn, sequence };
        header::seal(&mut block, &fixed);
    }
    (block, Expected::new(NONCE, pbn))
}

/// The sequence number in a block's header.
#[must_use]
pub fn sequence(block: &Block) -> SequenceNumber {
    SequenceNumber(le::get_u64(block, SEQUENCE_OFFSET))
}

/// Asserts that re-encoding what decoded gives back the same bytes: every byte of a valid
/// block is either a field or a reserved byte checked to be zero.
pub fn assert_round_trip(original: &Block, encode: impl FnOnce(&mut Block)) {
    let mut again = [0_u8; BLOCK_SIZE];
    encode(&mut again);
    assert!(again[..] == original[..], "a decoded block did not re-encode to the same bytes");
}
