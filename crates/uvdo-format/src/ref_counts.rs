//! A reference count block: one byte per slab data block, 4032 counts to a block.
//!
//! ```text
//! offset size field
//!      0   32 header        type 6; location = this twin slot's PBN; sequence = write generation
//!     32    8 commit seq    slab journal sequence number of the commit point
//!     40    2 commit entry  entry within that slab journal block
//!     42    2 reserved      zero
//!     44    4 slab          slab number
//!     48    4 block index   which of the slab's reference count blocks this is
//!     52   12 reserved      zero
//!     64 4032 counts        byte i counts slab data block block_index * 4032 + i
//! ```
//!
//! Count values: 0 free, 1..=[`REFERENCE_MAX`] (254) references to a data block,
//! [`BLOCK_MAP_REFERENCE`] (255) a block map tree page. A provisional count (allocated, not yet
//! journaled) exists only in the engine's memory and is never written.
//!
//! The commit point is the slab journal point whose changes these counts include. Replaying the
//! slab journal skips every entry at or before it, so replaying twice changes nothing.
//!
//! Invariants: counts past the number valid in this block (the last block of a slab is partly
//! used) are zero; `slab` and `block index` name the block's place in the depot.
//!
//! # Detection
//!
//! Each block is a twin pair ([`crate::twin`]); [`read_twins`] keeps the valid copy with the
//! higher generation. A torn write fails the CRC and can only hit the older slot. A stale copy
//! (a lost write) has the lower generation and loses; if it is the only valid copy its commit
//! point is older, so replay reapplies the journal entries after it. A misdirected write fails
//! the location check, a foreign block the nonce check. A block valid in every header check but
//! written for another slab or index (a layout bug) fails the `slab` or `block index` check.

use crate::block::{BLOCK_SIZE, Block};
use crate::error::{FormatError, Problem};
use crate::header::{self, BlockHeader, BlockType, Expected, HEADER_SIZE};
use crate::le::{get_u16, get_u32, get_u64, put_u16, put_u32, put_u64};
use crate::numbers::{JournalPoint, Nonce, Pbn, SequenceNumber, SlabNumber};
use crate::reserved::require_zero;
use crate::twin::{self, Chosen, TwinSlot};

/// Layout version of reference count blocks.
pub const VERSION: u8 = 1;
/// Counts held by one block.
pub const COUNTS_PER_BLOCK: usize = 4032;
/// Most references a data block can hold: the dedupe sharing limit. The next duplicate of a
/// block at this count is written as a new copy.
pub const REFERENCE_MAX: u8 = 254;
/// The count of a block map tree page. Tree pages are never shared, so no data count reaches it.
pub const BLOCK_MAP_REFERENCE: u8 = 255;

const COMMIT_SEQUENCE_OFFSET: usize = HEADER_SIZE;
const COMMIT_ENTRY_OFFSET: usize = 40;
const RESERVED_SHORT_OFFSET: usize = 42;
const SLAB_OFFSET: usize = 44;
const BLOCK_INDEX_OFFSET: usize = 48;
const RESERVED_OFFSET: usize = 52;
const COUNTS_OFFSET: usize = 64;

const _: () = assert!(COMMIT_ENTRY_OFFSET == COMMIT_SEQUENCE_OFFSET + 8);
const _: () = assert!(RESERVED_SHORT_OFFSET == COMMIT_ENTRY_OFFSET + 2);
const _: () = assert!(SLAB_OFFSET == RESERVED_SHORT_OFFSET + 2);
const _: () = assert!(BLOCK_INDEX_OFFSET == SLAB_OFFSET + 4);
const _: () = assert!(RESERVED_OFFSET == BLOCK_INDEX_OFFSET + 4);
const _: () = assert!(COUNTS_OFFSET + COUNTS_PER_BLOCK == BLOCK_SIZE);
const _: () = assert!(REFERENCE_MAX < BLOCK_MAP_REFERENCE);

/// One reference count block of a slab.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RefCountBlock {
    /// The slab journal point whose changes the counts include.
    pub commit_point: JournalPoint,
    /// The slab the counts belong to.
    pub slab: SlabNumber,
    /// Which of the slab's reference count blocks this is (0-based).
    pub block_index: u32,
    /// The valid counts, at most [`COUNTS_PER_BLOCK`]; the rest of the block is zero.
    pub counts: Vec<u8>,
}

impl RefCountBlock {
    /// Encodes the block for twin slot `pbn` with write generation `generation`.
    ///
    /// # Panics
    ///
    /// If there are more than [`COUNTS_PER_BLOCK`] counts: an engine bug.
    pub fn encode(&self, nonce: Nonce, pbn: Pbn, generation: SequenceNumber, out: &mut Block) {
        assert!(
            self.counts.len() <= COUNTS_PER_BLOCK,
            "{} counts do not fit in a reference count block",
            self.counts.len()
        );
        out.fill(0);
        put_u64(out, COMMIT_SEQUENCE_OFFSET, self.commit_point.sequence.0);
        put_u16(out, COMMIT_ENTRY_OFFSET, self.commit_point.entry);
        put_u32(out, SLAB_OFFSET, self.slab.0);
        put_u32(out, BLOCK_INDEX_OFFSET, self.block_index);
        out[COUNTS_OFFSET..COUNTS_OFFSET + self.counts.len()].copy_from_slice(&self.counts);
        let header = BlockHeader {
            block_type: BlockType::RefCounts,
            version: VERSION,
            nonce,
            location: pbn,
            sequence: generation,
        };
        header::seal(out, &header);
    }

    /// Decodes reference count block `block_index` of `slab`, whose first `counts_used` counts
    /// are valid.
    ///
    /// # Errors
    ///
    /// A header problem, or `InvalidField` for a nonzero reserved byte, another slab or block
    /// index, or a nonzero count past `counts_used`.
    ///
    /// # Panics
    ///
    /// If `counts_used` is over [`COUNTS_PER_BLOCK`]: a caller bug, not bad bytes.
    pub fn decode(
        block: &Block,
        expected: Expected,
        slab: SlabNumber,
        block_index: u32,
        counts_used: usize,
    ) -> Result<Self, FormatError> {
        decode_generation(block, expected, slab, block_index, counts_used).map(|(value, _)| value)
    }
}

/// Reads twin pair `a` (at `base`) and `b` (at `base + 1`) of reference count block
/// `block_index` of `slab`, keeping the newest valid copy.
///
/// # Errors
///
/// When neither slot decodes (see [`twin::choose`]).
pub fn read_twins(
    a: &Block,
    b: &Block,
    nonce: Nonce,
    base: Pbn,
    slab: SlabNumber,
    block_index: u32,
    counts_used: usize,
) -> Result<Chosen<RefCountBlock>, FormatError> {
    let read = |block: &Block, slot: TwinSlot| {
        let expected = Expected::new(nonce, slot.pbn(base));
        decode_generation(block, expected, slab, block_index, counts_used)
    };
    twin::choose(read(a, TwinSlot::A), read(b, TwinSlot::B))
}

fn decode_generation(
    block: &Block,
    expected: Expected,
    slab: SlabNumber,
    block_index: u32,
    counts_used: usize,
) -> Result<(RefCountBlock, SequenceNumber), FormatError> {
    assert!(
        counts_used <= COUNTS_PER_BLOCK,
        "{counts_used} counts asked of a reference count block"
    );
    let header = header::open(block, BlockType::RefCounts, VERSION, expected)?;
    let fail = |problem| FormatError::new(BlockType::RefCounts, expected.pbn, problem);
    let invalid = |field, expected_text, found| {
        FormatError::new(
            BlockType::RefCounts,
            expected.pbn,
            Problem::InvalidField {
                field,
                expected: expected_text,
                found,
            },
        )
    };
    let reserved_short = get_u16(block, RESERVED_SHORT_OFFSET);
    if reserved_short != 0 {
        return Err(invalid("reserved", "0", u64::from(reserved_short)));
    }
    require_zero(&block[RESERVED_OFFSET..COUNTS_OFFSET], "reserved").map_err(fail)?;
    let found_slab = get_u32(block, SLAB_OFFSET);
    if found_slab != slab.0 {
        return Err(invalid("slab", "the slab read", u64::from(found_slab)));
    }
    let found_index = get_u32(block, BLOCK_INDEX_OFFSET);
    if found_index != block_index {
        return Err(invalid(
            "block index",
            "the block index read",
            u64::from(found_index),
        ));
    }
    let counts = &block[COUNTS_OFFSET..];
    require_zero(&counts[counts_used..], "count past the slab's end").map_err(fail)?;
    let value = RefCountBlock {
        commit_point: JournalPoint {
            sequence: SequenceNumber(get_u64(block, COMMIT_SEQUENCE_OFFSET)),
            entry: get_u16(block, COMMIT_ENTRY_OFFSET),
        },
        slab,
        block_index,
        counts: counts[..counts_used].to_vec(),
    };
    Ok((value, header.sequence))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::damage::{assert_detects_damage, reseal};
    use crate::le::all_zero;
    use proptest::prelude::*;

    const NONCE: Nonce = Nonce(0x0123_4567_89ab_cdef);
    const PBN: Pbn = Pbn(9000);

    fn expected() -> Expected {
        Expected::new(NONCE, PBN)
    }

    fn sample(fill: u8) -> RefCountBlock {
        RefCountBlock {
            commit_point: JournalPoint {
                sequence: SequenceNumber(77),
                entry: 12,
            },
            slab: SlabNumber(3),
            block_index: 2,
            counts: (0..1000_u16).map(|i| i.to_le_bytes()[0] ^ fill).collect(),
        }
    }

    fn encoded(value: &RefCountBlock, generation: u64) -> Block {
        let mut block = [0_u8; BLOCK_SIZE];
        value.encode(NONCE, PBN, SequenceNumber(generation), &mut block);
        block
    }

    fn decode_sample(block: &Block, expected: Expected) -> Result<RefCountBlock, FormatError> {
        RefCountBlock::decode(block, expected, SlabNumber(3), 2, 1000)
    }

    fn field_of(block: &Block) -> &'static str {
        match decode_sample(block, expected()).unwrap_err().problem {
            Problem::InvalidField { field, .. } => field,
            other => panic!("expected an invalid field, got {other}"),
        }
    }

    fn any_block() -> impl Strategy<Value = RefCountBlock> {
        (
            any::<u64>(),
            any::<u16>(),
            any::<u32>(),
            any::<u32>(),
            prop::collection::vec(any::<u8>(), 0..=COUNTS_PER_BLOCK),
        )
            .prop_map(
                |(sequence, entry, slab, block_index, counts)| RefCountBlock {
                    commit_point: JournalPoint {
                        sequence: SequenceNumber(sequence),
                        entry,
                    },
                    slab: SlabNumber(slab),
                    block_index,
                    counts,
                },
            )
    }

    proptest! {
        #[test]
        fn round_trips(value in any_block(), generation in any::<u64>(), pbn in any::<u64>()) {
            let mut block = [0_u8; BLOCK_SIZE];
            value.encode(NONCE, Pbn(pbn), SequenceNumber(generation), &mut block);
            let expected = Expected::new(NONCE, Pbn(pbn));
            let decoded = decode_generation(
                &block, expected, value.slab, value.block_index, value.counts.len(),
            );
            prop_assert_eq!(decoded, Ok((value, SequenceNumber(generation))));
        }

        #[test]
        fn arbitrary_blocks_decode_without_panic(
            bytes in prop::collection::vec(any::<u8>(), BLOCK_SIZE),
            used in 0..=COUNTS_PER_BLOCK,
        ) {
            let block: Block = bytes.try_into().unwrap();
            let result = RefCountBlock::decode(&block, expected(), SlabNumber(3), 2, used);
            prop_assert!(result.is_err());
        }

        #[test]
        fn mutated_blocks_decode_without_panic_and_canonically(
            edits in prop::collection::vec((0..BLOCK_SIZE, any::<u8>()), 1..8),
        ) {
            let mut block = encoded(&sample(0), 5);
            for (offset, byte) in edits {
                block[offset] = byte;
            }
            reseal(&mut block);
            if let Ok((value, generation)) =
                decode_generation(&block, expected(), SlabNumber(3), 2, 1000)
            {
                let mut again = [0_u8; BLOCK_SIZE];
                value.encode(NONCE, PBN, generation, &mut again);
                prop_assert_eq!(again, block);
            }
        }
    }

    #[test]
    fn damage_is_detected() {
        let older = encoded(&sample(0), 4);
        let newer = encoded(&sample(0x5a), 6);
        assert_detects_damage(decode_sample, &older, &newer, expected());
    }

    #[test]
    fn layout_matches_the_diagram() {
        let block = encoded(&sample(0), 4);
        assert_eq!(get_u64(&block, 32), 77);
        assert_eq!(get_u16(&block, 40), 12);
        assert_eq!(get_u32(&block, 44), 3);
        assert_eq!(get_u32(&block, 48), 2);
        assert_eq!(block[64..64 + 300], sample(0).counts[..300]);
        assert!(all_zero(&block[64 + 1000..]));
        assert_eq!(get_u64(&block, 24), 4, "header sequence is the generation");
    }

    #[test]
    fn each_field_check_reports_its_own_error() {
        let valid = encoded(&sample(0), 4);
        let patched = |offset: usize, byte: u8| {
            let mut block = valid;
            block[offset] = byte;
            reseal(&mut block);
            field_of(&block)
        };
        assert_eq!(patched(RESERVED_SHORT_OFFSET + 1, 1), "reserved");
        assert_eq!(patched(RESERVED_OFFSET, 1), "reserved");
        assert_eq!(patched(COUNTS_OFFSET - 1, 1), "reserved");
        assert_eq!(patched(SLAB_OFFSET, 4), "slab");
        assert_eq!(patched(SLAB_OFFSET + 3, 1), "slab");
        assert_eq!(patched(BLOCK_INDEX_OFFSET, 3), "block index");
        assert_eq!(
            patched(COUNTS_OFFSET + 1000, 1),
            "count past the slab's end"
        );
        assert_eq!(patched(BLOCK_SIZE - 1, 255), "count past the slab's end");
        assert!(decode_sample(&valid, expected()).is_ok());
    }

    #[test]
    fn counts_past_the_valid_ones_must_be_zero() {
        let full = RefCountBlock {
            counts: vec![BLOCK_MAP_REFERENCE; COUNTS_PER_BLOCK],
            ..sample(0)
        };
        let block = encoded(&full, 1);
        let decode = |used| RefCountBlock::decode(&block, expected(), SlabNumber(3), 2, used);
        assert_eq!(decode(COUNTS_PER_BLOCK), Ok(full));
        assert!(matches!(
            decode(COUNTS_PER_BLOCK - 1).unwrap_err().problem,
            Problem::InvalidField {
                field: "count past the slab's end",
                found: 255,
                ..
            }
        ));
    }

    #[test]
    fn twins_keep_the_newest_valid_copy() {
        let base = Pbn(500);
        let write = |value: &RefCountBlock, slot: TwinSlot, generation| {
            let mut block = [0_u8; BLOCK_SIZE];
            value.encode(
                NONCE,
                slot.pbn(base),
                SequenceNumber(generation),
                &mut block,
            );
            block
        };
        let old = sample(0);
        let new = sample(1);
        let a = write(&old, TwinSlot::A, 8);
        let b = write(&new, TwinSlot::B, 9);
        let read = |a: &Block, b: &Block| read_twins(a, b, NONCE, base, SlabNumber(3), 2, 1000);
        let chosen = read(&a, &b).unwrap();
        assert_eq!(chosen.next_write(), (TwinSlot::A, SequenceNumber(10)));
        assert_eq!((chosen.value, chosen.slot), (new, TwinSlot::B));

        let mut torn_b = b;
        torn_b[2000] ^= 1;
        let chosen = read(&a, &torn_b).unwrap();
        assert_eq!((chosen.value, chosen.slot), (old, TwinSlot::A));
        assert!(chosen.other_error.is_some());

        let swapped = read(&b, &a).unwrap_err();
        assert!(matches!(swapped.problem, Problem::WrongLocation { .. }));
    }
}
