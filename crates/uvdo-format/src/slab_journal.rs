//! A slab journal block: the log of reference count changes of one slab.
//!
//! ```text
//! offset size field
//!      0   32 common header: type 5, location = slab journal start + sequence mod length,
//!             sequence = this block's slab journal sequence number (>= 1)
//!     32    8 head                      oldest slab journal sequence still needed
//!     40    8 recovery point sequence   recovery journal point of this block's last entry
//!     48    2 recovery point entry        (0..167)
//!     50    2 entry_count               0..=1008
//!     52    4 slab                      the slab this journal belongs to
//!     56    8 reserved                  zero
//!     64 4032 entries                   1008 slots of 4 bytes; unused slots zero
//!
//! entry (u32 LE)
//!   bits  0..24 slab block number   below the slab's data block count
//!   bits 24..32 operation           1 data increment, 2 data decrement,
//!                                   3 block map page increment
//! ```
//!
//! Like the recovery journal, the log is circular and write-once: sequence `s` is written once,
//! at position `s mod length`, and a partly filled block is written and the log moves on.
//!
//! Entries of one slab appear in the same order as their recovery journal entries. Replay
//! after a crash relies on it: it appends to the slab journal only the recovery journal entries
//! that come after the recovery point of the slab journal's newest block, so replaying twice
//! adds nothing twice.
//!
//! # Detection
//!
//! - torn: only the newest block can be torn; it fails its CRC and ends the log.
//! - stale (an earlier lap at the same position): [`SlabJournalBlock::decode_at`] reports
//!   `WrongSequence` with the sequence the caller expected.
//! - misdirected: the header location; the sequence's congruence with the position
//!   (`WrongSequence`, expecting the nearest congruent sequence); the slab number.
//! - foreign: the nonce.
//! - garbage in a valid block: operation codes, block numbers below the slab's data blocks,
//!   `head` within one journal length, reserved and unused bytes zero.

use crate::block::{BLOCK_SIZE, Block, ZERO_BLOCK};
use crate::error::{FormatError, Problem};
use crate::header::{self, BlockHeader, BlockType, Expected, HEADER_SIZE};
use crate::le::{get_u16, get_u32, get_u64, put_u16, put_u32, put_u64};
use crate::numbers::{JournalPoint, Nonce, Pbn, SequenceNumber, SlabBlockNumber, SlabNumber};
use crate::recovery_journal::{self, JournalRegion};
use crate::reserved::require_zero;

/// Layout version of slab journal blocks.
pub const VERSION: u8 = 1;
/// Bytes of one entry.
pub const ENTRY_SIZE: usize = 4;
/// Entries one block holds.
pub const ENTRIES_PER_BLOCK: usize = (BLOCK_SIZE - ENTRIES_OFFSET) / ENTRY_SIZE;
/// [`ENTRIES_PER_BLOCK`] as the width of `entry_count`.
pub const ENTRIES_PER_BLOCK_U16: u16 = 1008;
/// Slab block numbers are 24 bits in an entry: a slab has at most this many data blocks.
pub const SLAB_DATA_BLOCKS_MAX: u32 = 1 << BLOCK_NUMBER_BITS;

const HEAD_OFFSET: usize = HEADER_SIZE;
const RECOVERY_SEQUENCE_OFFSET: usize = 40;
const RECOVERY_ENTRY_OFFSET: usize = 48;
const ENTRY_COUNT_OFFSET: usize = 50;
const SLAB_OFFSET: usize = 52;
const RESERVED_OFFSET: usize = 56;
const ENTRIES_OFFSET: usize = 64;

const BLOCK_NUMBER_BITS: u32 = 24;
const BLOCK_NUMBER_MASK: u32 = (1 << BLOCK_NUMBER_BITS) - 1;

const OP_DATA_INCREMENT: u8 = 1;
const OP_DATA_DECREMENT: u8 = 2;
const OP_BLOCK_MAP_INCREMENT: u8 = 3;

const _: () = assert!(SLAB_OFFSET + 4 == RESERVED_OFFSET);
const _: () = assert!(ENTRIES_PER_BLOCK == 1008);
const _: () = assert!(ENTRIES_PER_BLOCK == ENTRIES_PER_BLOCK_U16 as usize);
const _: () = assert!(ENTRIES_OFFSET + ENTRIES_PER_BLOCK * ENTRY_SIZE == BLOCK_SIZE);

/// Where one slab's journal is, and what its entries may name.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct SlabJournalRegion {
    /// The slab.
    pub slab: SlabNumber,
    /// The first block of its journal.
    pub start: Pbn,
    /// The journal's length in blocks.
    pub blocks: u64,
    /// The slab's data block count: every entry's block number is below it.
    pub data_blocks: u32,
}

impl SlabJournalRegion {
    /// The circular log these blocks occupy.
    #[must_use]
    pub fn log(&self) -> JournalRegion {
        JournalRegion {
            start: self.start,
            blocks: self.blocks,
        }
    }
}

/// A reference count change.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SlabOperation {
    /// A mapping to the data block was added.
    DataIncrement,
    /// A mapping to the data block was removed.
    DataDecrement,
    /// The block became a block map tree page (reference value 255).
    BlockMapIncrement,
}

impl SlabOperation {
    fn code(self) -> u8 {
        match self {
            Self::DataIncrement => OP_DATA_INCREMENT,
            Self::DataDecrement => OP_DATA_DECREMENT,
            Self::BlockMapIncrement => OP_BLOCK_MAP_INCREMENT,
        }
    }

    fn from_code(code: u8) -> Option<Self> {
        match code {
            OP_DATA_INCREMENT => Some(Self::DataIncrement),
            OP_DATA_DECREMENT => Some(Self::DataDecrement),
            OP_BLOCK_MAP_INCREMENT => Some(Self::BlockMapIncrement),
            _ => None,
        }
    }
}

/// One change to one data block's reference count.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct SlabJournalEntry {
    /// The data block, within the slab.
    pub block: SlabBlockNumber,
    /// What happened to its count.
    pub operation: SlabOperation,
}

/// One block of a slab journal.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SlabJournalBlock {
    /// The slab whose journal this is.
    pub slab: SlabNumber,
    /// This block's slab journal sequence number (>= 1): the header sequence.
    pub sequence: SequenceNumber,
    /// Oldest slab journal sequence still needed (reference counts not yet durable).
    pub head: SequenceNumber,
    /// Recovery journal point of this block's last entry.
    pub recovery_point: JournalPoint,
    /// The changes, in recovery journal order; at most [`ENTRIES_PER_BLOCK`].
    pub entries: Vec<SlabJournalEntry>,
}

impl SlabJournalBlock {
    /// Writes the block at its place in the slab's journal, for the volume with `nonce`.
    ///
    /// # Panics
    ///
    /// If the block breaks a rule decode checks (wrong slab, sequence 0, head out of range, too
    /// many entries, a block number past the slab): an engine bug, never written to disk.
    pub fn encode(&self, nonce: Nonce, region: &SlabJournalRegion, out: &mut Block) {
        if let Err(problem) = self.check(region) {
            panic!("refusing to write an invalid slab journal block: {problem}");
        }
        *out = ZERO_BLOCK;
        put_u64(out, HEAD_OFFSET, self.head.0);
        put_u64(
            out,
            RECOVERY_SEQUENCE_OFFSET,
            self.recovery_point.sequence.0,
        );
        put_u16(out, RECOVERY_ENTRY_OFFSET, self.recovery_point.entry);
        let count = u16::try_from(self.entries.len()).expect("checked against 1008");
        put_u16(out, ENTRY_COUNT_OFFSET, count);
        put_u32(out, SLAB_OFFSET, self.slab.0);
        for (i, entry) in self.entries.iter().enumerate() {
            let packed = entry.block.0 | (u32::from(entry.operation.code()) << BLOCK_NUMBER_BITS);
            put_u32(out, ENTRIES_OFFSET + i * ENTRY_SIZE, packed);
        }
        header::seal(
            out,
            &BlockHeader {
                block_type: BlockType::SlabJournal,
                version: VERSION,
                nonce,
                location: region.log().pbn_of(self.sequence),
                sequence: self.sequence,
            },
        );
    }

    /// Reads the block at `expected.pbn` of the slab's journal, whatever lap it is from.
    ///
    /// # Errors
    ///
    /// A header problem; `WrongSequence` when the sequence is 0 or does not belong at this
    /// position (expected: the nearest sequence that does); `InvalidField` for a wrong slab, a
    /// field out of range, an unknown operation, nonzero reserved or unused bytes.
    ///
    /// # Panics
    ///
    /// If `expected.pbn` is not in the region or the region's data block count is over
    /// [`SLAB_DATA_BLOCKS_MAX`]: the caller's arguments, not the block's bytes.
    pub fn decode(
        block: &Block,
        expected: Expected,
        region: &SlabJournalRegion,
    ) -> Result<Self, FormatError> {
        Self::decode_checked(block, expected, region, None)
    }

    /// As [`SlabJournalBlock::decode`], and the block must be sequence `sequence`: a block of
    /// an earlier or later lap is `WrongSequence`.
    ///
    /// # Errors
    ///
    /// As [`SlabJournalBlock::decode`], plus `WrongSequence { expected: sequence, .. }`.
    ///
    /// # Panics
    ///
    /// As [`SlabJournalBlock::decode`], and if `sequence` is not written at `expected.pbn`.
    pub fn decode_at(
        block: &Block,
        expected: Expected,
        region: &SlabJournalRegion,
        sequence: SequenceNumber,
    ) -> Result<Self, FormatError> {
        assert_eq!(
            region.log().pbn_of(sequence),
            expected.pbn,
            "sequence {sequence} is not written at PBN {}",
            expected.pbn
        );
        Self::decode_checked(block, expected, region, Some(sequence))
    }

    fn decode_checked(
        block: &Block,
        expected: Expected,
        region: &SlabJournalRegion,
        wanted: Option<SequenceNumber>,
    ) -> Result<Self, FormatError> {
        assert!(
            region.blocks > 0 && region.log().contains(expected.pbn),
            "PBN {} is not in the slab journal {region:?}",
            expected.pbn
        );
        assert!(
            region.data_blocks <= SLAB_DATA_BLOCKS_MAX,
            "slab of {} data blocks",
            region.data_blocks
        );
        let header = header::open(block, BlockType::SlabJournal, VERSION, expected)?;
        let fail = |problem| FormatError::new(BlockType::SlabJournal, expected.pbn, problem);
        region
            .log()
            .check_sequence(expected.pbn, header.sequence, wanted)
            .map_err(fail)?;
        Self::decode_payload(block, header.sequence)
            .and_then(|decoded| decoded.check(region).map(|()| decoded))
            .map_err(fail)
    }

    fn decode_payload(block: &Block, sequence: SequenceNumber) -> Result<Self, Problem> {
        require_zero(&block[RESERVED_OFFSET..ENTRIES_OFFSET], "reserved")?;
        let count = get_u16(block, ENTRY_COUNT_OFFSET);
        if count > ENTRIES_PER_BLOCK_U16 {
            return Err(Problem::InvalidField {
                field: "entry count",
                expected: "at most 1008",
                found: u64::from(count),
            });
        }
        let used_end = ENTRIES_OFFSET + usize::from(count) * ENTRY_SIZE;
        require_zero(&block[used_end..], "unused entry space")?;
        let entries = block[ENTRIES_OFFSET..used_end]
            .chunks_exact(ENTRY_SIZE)
            .map(|bytes| decode_entry(get_u32(bytes, 0)))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self {
            slab: SlabNumber(get_u32(block, SLAB_OFFSET)),
            sequence,
            head: SequenceNumber(get_u64(block, HEAD_OFFSET)),
            recovery_point: JournalPoint {
                sequence: SequenceNumber(get_u64(block, RECOVERY_SEQUENCE_OFFSET)),
                entry: get_u16(block, RECOVERY_ENTRY_OFFSET),
            },
            entries,
        })
    }

    /// The rules both encode and decode enforce, so the two stay paired.
    fn check(&self, region: &SlabJournalRegion) -> Result<(), Problem> {
        let invalid = |field, expected, found| {
            Err(Problem::InvalidField {
                field,
                expected,
                found,
            })
        };
        if self.slab != region.slab {
            return invalid(
                "slab",
                "the slab the journal belongs to",
                u64::from(self.slab.0),
            );
        }
        if self.sequence.0 == 0 {
            return Err(Problem::WrongSequence {
                expected: region.blocks,
                found: 0,
            });
        }
        region.log().check_head("head", self.head, self.sequence)?;
        if self.recovery_point.entry >= recovery_journal::ENTRIES_PER_BLOCK_U16 {
            return invalid(
                "recovery point entry",
                "below 167",
                u64::from(self.recovery_point.entry),
            );
        }
        if !self.entries.is_empty() && self.recovery_point.sequence.0 == 0 {
            return invalid(
                "recovery point sequence",
                "at least 1 when the block has entries",
                0,
            );
        }
        if self.entries.len() > ENTRIES_PER_BLOCK {
            return invalid("entry count", "at most 1008", self.entries.len() as u64);
        }
        match self
            .entries
            .iter()
            .find(|e| e.block.0 >= region.data_blocks)
        {
            Some(entry) => invalid(
                "entry slab block number",
                "below the slab's data block count",
                u64::from(entry.block.0),
            ),
            None => Ok(()),
        }
    }
}

fn decode_entry(packed: u32) -> Result<SlabJournalEntry, Problem> {
    let code = u8::try_from(packed >> BLOCK_NUMBER_BITS).expect("8 bits");
    let operation = SlabOperation::from_code(code).ok_or(Problem::InvalidField {
        field: "entry operation",
        expected: "1, 2 or 3",
        found: u64::from(code),
    })?;
    Ok(SlabJournalEntry {
        block: SlabBlockNumber(packed & BLOCK_NUMBER_MASK),
        operation,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::damage::{assert_detects_damage, reseal};
    use crate::le::all_zero;
    use crate::le::{put_u8, put_u16};
    use proptest::prelude::*;

    const NONCE: Nonce = Nonce(0x0102_0304_0506_0708);
    const REGION: SlabJournalRegion = SlabJournalRegion {
        slab: SlabNumber(9),
        start: Pbn(50_000),
        blocks: 16,
        data_blocks: 4000,
    };

    type Patch = fn(&mut Block);

    fn expected_for(sequence: u64) -> Expected {
        Expected::new(NONCE, REGION.log().pbn_of(SequenceNumber(sequence)))
    }

    fn any_operation() -> impl Strategy<Value = SlabOperation> {
        prop_oneof![
            Just(SlabOperation::DataIncrement),
            Just(SlabOperation::DataDecrement),
            Just(SlabOperation::BlockMapIncrement),
        ]
    }

    fn any_block() -> impl Strategy<Value = SlabJournalBlock> {
        let entry =
            (0..REGION.data_blocks, any_operation()).prop_map(|(b, operation)| SlabJournalEntry {
                block: SlabBlockNumber(b),
                operation,
            });
        (
            1..u64::MAX,
            0..REGION.blocks,
            1..u64::MAX,
            0..recovery_journal::ENTRIES_PER_BLOCK_U16,
            proptest::collection::vec(entry, 0..=ENTRIES_PER_BLOCK),
        )
            .prop_map(|(seq, back, rj_seq, rj_entry, entries)| SlabJournalBlock {
                slab: REGION.slab,
                sequence: SequenceNumber(seq),
                head: SequenceNumber(seq - back.min(seq - 1)),
                recovery_point: JournalPoint {
                    sequence: SequenceNumber(rj_seq),
                    entry: rj_entry,
                },
                entries,
            })
    }

    fn encoded(journal: &SlabJournalBlock) -> Block {
        let mut out = [0xc3; BLOCK_SIZE];
        journal.encode(NONCE, &REGION, &mut out);
        out
    }

    fn decode(block: &Block, sequence: u64) -> Result<SlabJournalBlock, FormatError> {
        SlabJournalBlock::decode(block, expected_for(sequence), &REGION)
    }

    fn sample(sequence: u64, entries: u32) -> SlabJournalBlock {
        let operations = [
            SlabOperation::DataIncrement,
            SlabOperation::DataDecrement,
            SlabOperation::BlockMapIncrement,
        ];
        SlabJournalBlock {
            slab: REGION.slab,
            sequence: SequenceNumber(sequence),
            head: SequenceNumber(sequence.saturating_sub(5).max(1)),
            recovery_point: JournalPoint {
                sequence: SequenceNumber(1234),
                entry: 166,
            },
            entries: (0..entries)
                .map(|i| SlabJournalEntry {
                    block: SlabBlockNumber((i * 37) % REGION.data_blocks),
                    operation: operations[i as usize % 3],
                })
                .collect(),
        }
    }

    fn problem_after(patch: impl FnOnce(&mut Block)) -> Problem {
        let mut block = encoded(&sample(40, 3));
        patch(&mut block);
        reseal(&mut block);
        decode(&block, 40).unwrap_err().problem
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(128))]

        #[test]
        fn round_trips(journal in any_block()) {
            let block = encoded(&journal);
            let seq = journal.sequence;
            let exp = Expected::new(NONCE, REGION.log().pbn_of(seq));
            prop_assert_eq!(SlabJournalBlock::decode_at(&block, exp, &REGION, seq), Ok(journal));
        }

        #[test]
        fn arbitrary_blocks_decode_without_panic(
            bytes in proptest::collection::vec(any::<u8>(), BLOCK_SIZE),
            sequence in 1_u64..1000,
        ) {
            let block: Block = bytes.try_into().unwrap();
            prop_assert!(decode(&block, sequence).is_err());
        }

        #[test]
        fn mutated_blocks_decode_without_panic_and_accepted_ones_are_canonical(
            journal in any_block(),
            edits in proptest::collection::vec((HEADER_SIZE..BLOCK_SIZE, any::<u8>()), 1..6),
        ) {
            let mut block = encoded(&journal);
            for (offset, value) in edits {
                block[offset] = value;
            }
            reseal(&mut block);
            if let Ok(decoded) = decode(&block, journal.sequence.0) {
                prop_assert_eq!(encoded(&decoded), block);
            }
        }
    }

    #[test]
    fn damage_is_detected() {
        // The older image is the previous lap's block at the same position.
        let older = encoded(&sample(24, 700));
        let newer = encoded(&sample(40, 3));
        let decode_any = |b: &Block, e| SlabJournalBlock::decode(b, e, &REGION);
        assert_detects_damage(decode_any, &older, &newer, expected_for(40));
    }

    #[test]
    fn layout_matches_the_diagram() {
        let block = encoded(&sample(40, 3));
        assert_eq!(block[16..24], 50_008_u64.to_le_bytes());
        assert_eq!(block[24..32], 40_u64.to_le_bytes());
        assert_eq!(block[32..40], 35_u64.to_le_bytes());
        assert_eq!(block[40..48], 1234_u64.to_le_bytes());
        assert_eq!(block[48..50], [166, 0]);
        assert_eq!(block[50..52], [3, 0]);
        assert_eq!(block[52..56], [9, 0, 0, 0]);
        assert!(all_zero(&block[56..64]));
        assert_eq!(block[64..68], [0, 0, 0, 1]);
        assert_eq!(block[68..72], [37, 0, 0, 2]);
        assert_eq!(block[72..76], [74, 0, 0, 3]);
        assert!(all_zero(&block[76..]));
    }

    #[test]
    fn stale_and_future_laps_are_wrong_sequence() {
        let block = encoded(&sample(40, 3));
        let at = |seq: u64| {
            SlabJournalBlock::decode_at(&block, expected_for(seq), &REGION, SequenceNumber(seq))
        };
        assert!(at(40).is_ok());
        for seq in [24, 56] {
            assert_eq!(
                at(seq).unwrap_err().problem,
                Problem::WrongSequence {
                    expected: seq,
                    found: 40
                }
            );
        }
    }

    #[test]
    fn incongruent_sequence_reports_the_nearest_congruent_one() {
        assert_eq!(
            problem_after(|b| put_u64(b, 24, 39)),
            Problem::WrongSequence {
                expected: 40,
                found: 39
            }
        );
        assert_eq!(
            problem_after(|b| put_u64(b, 24, 0)),
            Problem::WrongSequence {
                expected: 8,
                found: 0
            }
        );
    }

    #[test]
    fn each_field_check_reports_its_field() {
        let cases: [(&str, Patch); 12] = [
            ("head", |b| put_u64(b, 32, 41)),
            ("head", |b| put_u64(b, 32, 24)),
            ("head", |b| put_u64(b, 32, 0)),
            ("recovery point entry", |b| put_u16(b, 48, 167)),
            ("recovery point sequence", |b| put_u64(b, 40, 0)),
            ("entry count", |b| put_u16(b, 50, 1009)),
            ("slab", |b| put_u32(b, 52, 10)),
            ("reserved", |b| put_u8(b, 63, 1)),
            ("unused entry space", |b| put_u8(b, 76, 1)),
            ("unused entry space", |b| put_u8(b, BLOCK_SIZE - 1, 1)),
            ("entry operation", |b| put_u8(b, 67, 4)),
            ("entry slab block number", |b| put_u16(b, 68, 4000)),
        ];
        for (field, patch) in cases {
            match problem_after(patch) {
                Problem::InvalidField { field: found, .. } => assert_eq!(found, field),
                other => panic!("{field}: got {other}"),
            }
        }
        assert!(matches!(
            problem_after(|b| put_u8(b, 67, 0)),
            Problem::InvalidField {
                field: "entry operation",
                found: 0,
                ..
            }
        ));
    }

    #[test]
    fn an_empty_block_needs_no_recovery_point() {
        let mut journal = sample(3, 0);
        journal.recovery_point = JournalPoint::default();
        let block = encoded(&journal);
        assert_eq!(decode(&block, 3), Ok(journal));
    }

    #[test]
    #[should_panic(expected = "invalid slab journal block")]
    fn encoding_a_block_past_the_slab_panics() {
        let mut journal = sample(3, 1);
        journal.entries[0].block = SlabBlockNumber(REGION.data_blocks);
        let _ = encoded(&journal);
    }
}
