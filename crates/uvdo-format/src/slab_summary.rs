//! A slab summary block: what opening a volume needs to know about 252 slabs, so that it does
//! not read every slab.
//!
//! ```text
//! offset size field
//!      0   32 header        type 7; location = this twin slot's PBN; sequence = write generation
//!     32    4 first slab    block index * 252
//!     36    4 entry count   0..=252, and first slab + entry count <= 8192
//!     40   24 reserved      zero
//!     64 4032 entries       252 entries of 16 bytes; entry i describes slab first slab + i;
//!                           entries past entry count are zero
//!
//! entry
//!      0    8 journal tail  the next slab journal sequence to be written; all before are durable
//!      8    4 free blocks   free data blocks in the slab (a hint; exact when clean)
//!     12    1 flags         bit 0 clean, bit 1 ref counts written, bits 2..7 zero
//!     13    3 reserved      zero
//! ```
//!
//! The region holds [`SUMMARY_BLOCKS`] (33) blocks, each a twin pair, covering [`SLABS_MAX`]
//! (8192) slabs. Block `k` describes slabs `252k..252k + 251`.
//!
//! # Detection
//!
//! Each block is a twin pair ([`crate::twin`]); [`read_twins`] keeps the valid copy with the
//! higher generation. A torn write fails the CRC and can only hit the older slot. A lost write
//! leaves the older generation: an entry is written only after the slab journal and reference
//! count blocks it describes are durable, and the recovery journal keeps the entries behind a
//! summary update until that update is durable, so replay repairs the older copy. A
//! misdirected write fails the location check, a foreign block the nonce check, and a block
//! valid in the header but written for another index (a layout bug) fails the `first slab`
//! check.

use crate::block::{BLOCK_SIZE, Block};
use crate::error::{FormatError, Problem};
use crate::header::{self, BlockHeader, BlockType, Expected, HEADER_SIZE};
use crate::le::{get_u8, get_u32, get_u64, put_u8, put_u32, put_u64};
use crate::numbers::{BlockCount, Nonce, Pbn, SequenceNumber, SlabNumber};
use crate::twin::{self, Chosen, TwinSlot};

/// Layout version of slab summary blocks.
pub const VERSION: u8 = 1;
/// Entries in one summary block.
pub const ENTRIES_PER_BLOCK: usize = 252;
/// Most slabs a volume can have.
pub const SLABS_MAX: u32 = 8192;
/// Summary blocks (each a twin pair) needed for [`SLABS_MAX`] slabs.
pub const SUMMARY_BLOCKS: u32 = SLABS_MAX.div_ceil(ENTRIES_PER_BLOCK_U32);

const ENTRIES_PER_BLOCK_U32: u32 = 252;
const FIRST_SLAB_OFFSET: usize = HEADER_SIZE;
const ENTRY_COUNT_OFFSET: usize = 36;
const RESERVED_OFFSET: usize = 40;
const ENTRIES_OFFSET: usize = 64;
const ENTRY_SIZE: usize = 16;

const ENTRY_TAIL_OFFSET: usize = 0;
const ENTRY_FREE_OFFSET: usize = 8;
const ENTRY_FLAGS_OFFSET: usize = 12;
const ENTRY_RESERVED_OFFSET: usize = 13;

const FLAG_CLEAN: u8 = 1;
const FLAG_REF_COUNTS_WRITTEN: u8 = 2;
const FLAGS_KNOWN: u8 = FLAG_CLEAN | FLAG_REF_COUNTS_WRITTEN;

const _: () = assert!(ENTRIES_PER_BLOCK_U32 as usize == ENTRIES_PER_BLOCK);
const _: () = assert!(SUMMARY_BLOCKS == 33);
const _: () = assert!(ENTRY_COUNT_OFFSET == FIRST_SLAB_OFFSET + 4);
const _: () = assert!(RESERVED_OFFSET == ENTRY_COUNT_OFFSET + 4);
const _: () = assert!(ENTRIES_OFFSET + ENTRIES_PER_BLOCK * ENTRY_SIZE == BLOCK_SIZE);
const _: () = assert!(ENTRY_RESERVED_OFFSET == ENTRY_FLAGS_OFFSET + 1);
const _: () = assert!(ENTRY_RESERVED_OFFSET + 3 == ENTRY_SIZE);

/// What the summary records about one slab.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SummaryEntry {
    /// The next slab journal sequence number to be written; every block before it is durable.
    pub journal_tail: SequenceNumber,
    /// Free data blocks in the slab: a hint for allocation, exact when `clean`. At most
    /// `u32::MAX`.
    pub free_blocks: BlockCount,
    /// The reference count blocks on disk are complete: the slab journal need not be replayed.
    pub clean: bool,
    /// Reference count blocks exist on disk; otherwise every count of the slab is zero.
    pub ref_counts_written: bool,
}

/// One block of the slab summary.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SlabSummaryBlock {
    /// Which summary block this is, `0..SUMMARY_BLOCKS`.
    pub block_index: u32,
    /// Entries for slabs `first_slab()` onwards, at most [`ENTRIES_PER_BLOCK`].
    pub entries: Vec<SummaryEntry>,
}

/// The summary block and the entry within it that describe `slab`.
///
/// # Panics
///
/// If `slab` is not below [`SLABS_MAX`].
#[must_use]
pub fn locate(slab: SlabNumber) -> (u32, usize) {
    assert!(slab.0 < SLABS_MAX, "slab {slab} beyond the summary");
    let entry = slab.0 % ENTRIES_PER_BLOCK_U32;
    (slab.0 / ENTRIES_PER_BLOCK_U32, entry as usize)
}

impl SlabSummaryBlock {
    /// The slab described by the first entry.
    #[must_use]
    pub fn first_slab(&self) -> SlabNumber {
        SlabNumber(self.block_index * ENTRIES_PER_BLOCK_U32)
    }

    /// Encodes the block for twin slot `pbn` with write generation `generation`.
    ///
    /// # Panics
    ///
    /// If the block index is out of range, there are too many entries, or an entry's free
    /// block count does not fit in 32 bits: engine bugs.
    pub fn encode(&self, nonce: Nonce, pbn: Pbn, generation: SequenceNumber, out: &mut Block) {
        assert!(
            self.block_index < SUMMARY_BLOCKS,
            "summary block {} out of range",
            self.block_index
        );
        let count = u32::try_from(self.entries.len()).expect("entry count fits in u32");
        assert!(
            count <= entries_max(self.block_index),
            "{count} entries in summary block {}",
            self.block_index
        );
        out.fill(0);
        put_u32(out, FIRST_SLAB_OFFSET, self.first_slab().0);
        put_u32(out, ENTRY_COUNT_OFFSET, count);
        for (i, entry) in self.entries.iter().enumerate() {
            entry.encode(&mut out[entry_range(i)]);
        }
        let header = BlockHeader {
            block_type: BlockType::SlabSummary,
            version: VERSION,
            nonce,
            location: pbn,
            sequence: generation,
        };
        header::seal(out, &header);
    }

    /// Decodes summary block `block_index`.
    ///
    /// # Errors
    ///
    /// A header problem, or `InvalidField` for a wrong first slab, an entry count out of
    /// range, unknown flag bits, or nonzero reserved bytes or unused entries.
    ///
    /// # Panics
    ///
    /// If `block_index` is not below [`SUMMARY_BLOCKS`]: a caller bug, not bad bytes.
    pub fn decode(
        block: &Block,
        expected: Expected,
        block_index: u32,
    ) -> Result<Self, FormatError> {
        decode_generation(block, expected, block_index).map(|(value, _)| value)
    }
}

impl SummaryEntry {
    fn encode(&self, out: &mut [u8]) {
        let free = u32::try_from(self.free_blocks.0).expect("free blocks fit in 32 bits");
        let mut flags = 0;
        if self.clean {
            flags |= FLAG_CLEAN;
        }
        if self.ref_counts_written {
            flags |= FLAG_REF_COUNTS_WRITTEN;
        }
        put_u64(out, ENTRY_TAIL_OFFSET, self.journal_tail.0);
        put_u32(out, ENTRY_FREE_OFFSET, free);
        put_u8(out, ENTRY_FLAGS_OFFSET, flags);
    }

    /// Unpacks an entry, or names the field that is wrong and what it holds.
    fn decode(bytes: &[u8]) -> Result<Self, (&'static str, &'static str, u64)> {
        let flags = get_u8(bytes, ENTRY_FLAGS_OFFSET);
        if flags & !FLAGS_KNOWN != 0 {
            return Err(("entry flags", "only bits 0 and 1", u64::from(flags)));
        }
        let reserved = &bytes[ENTRY_RESERVED_OFFSET..ENTRY_SIZE];
        if let Some(&found) = reserved.iter().find(|&&b| b != 0) {
            return Err(("entry reserved", "0", u64::from(found)));
        }
        Ok(Self {
            journal_tail: SequenceNumber(get_u64(bytes, ENTRY_TAIL_OFFSET)),
            free_blocks: BlockCount(u64::from(get_u32(bytes, ENTRY_FREE_OFFSET))),
            clean: flags & FLAG_CLEAN != 0,
            ref_counts_written: flags & FLAG_REF_COUNTS_WRITTEN != 0,
        })
    }
}

/// Reads twin pair `a` (at `base`) and `b` (at `base + 1`) of summary block `block_index`,
/// keeping the newest valid copy.
///
/// # Errors
///
/// When neither slot decodes (see [`twin::choose`]).
pub fn read_twins(
    a: &Block,
    b: &Block,
    nonce: Nonce,
    base: Pbn,
    block_index: u32,
) -> Result<Chosen<SlabSummaryBlock>, FormatError> {
    let read = |block: &Block, slot: TwinSlot| {
        decode_generation(block, Expected::new(nonce, slot.pbn(base)), block_index)
    };
    twin::choose(read(a, TwinSlot::A), read(b, TwinSlot::B))
}

/// Most entries block `block_index` can hold: 252, fewer in the last block.
fn entries_max(block_index: u32) -> u32 {
    (SLABS_MAX - block_index * ENTRIES_PER_BLOCK_U32).min(ENTRIES_PER_BLOCK_U32)
}

fn entry_range(i: usize) -> std::ops::Range<usize> {
    let start = ENTRIES_OFFSET + i * ENTRY_SIZE;
    start..start + ENTRY_SIZE
}

fn decode_generation(
    block: &Block,
    expected: Expected,
    block_index: u32,
) -> Result<(SlabSummaryBlock, SequenceNumber), FormatError> {
    assert!(
        block_index < SUMMARY_BLOCKS,
        "summary block {block_index} out of range"
    );
    let header = header::open(block, BlockType::SlabSummary, VERSION, expected)?;
    let invalid = |field, expected_text, found| {
        FormatError::new(
            BlockType::SlabSummary,
            expected.pbn,
            Problem::InvalidField {
                field,
                expected: expected_text,
                found,
            },
        )
    };
    let first_slab = get_u32(block, FIRST_SLAB_OFFSET);
    if first_slab != block_index * ENTRIES_PER_BLOCK_U32 {
        return Err(invalid(
            "first slab",
            "block index * 252",
            u64::from(first_slab),
        ));
    }
    let count = get_u32(block, ENTRY_COUNT_OFFSET);
    if count > entries_max(block_index) {
        return Err(invalid(
            "entry count",
            "at most 252, and first slab + count <= 8192",
            u64::from(count),
        ));
    }
    if let Some(&found) = block[RESERVED_OFFSET..ENTRIES_OFFSET]
        .iter()
        .find(|&&b| b != 0)
    {
        return Err(invalid("reserved", "0", u64::from(found)));
    }
    let count = count as usize;
    let mut entries = Vec::with_capacity(count);
    for i in 0..count {
        let entry = SummaryEntry::decode(&block[entry_range(i)])
            .map_err(|(field, text, found)| invalid(field, text, found))?;
        entries.push(entry);
    }
    let unused = &block[ENTRIES_OFFSET + count * ENTRY_SIZE..];
    if let Some(&found) = unused.iter().find(|&&b| b != 0) {
        return Err(invalid("unused entry", "0", u64::from(found)));
    }
    let value = SlabSummaryBlock {
        block_index,
        entries,
    };
    Ok((value, header.sequence))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::damage::{assert_detects_damage, reseal};
    use proptest::prelude::*;

    const NONCE: Nonce = Nonce(0x5eed_0000_1111_2222);
    const PBN: Pbn = Pbn(40);
    const INDEX: u32 = 2;

    fn expected() -> Expected {
        Expected::new(NONCE, PBN)
    }

    fn sample(entries: usize, tail_base: u64) -> SlabSummaryBlock {
        let entries = (0..entries as u64)
            .map(|i| SummaryEntry {
                journal_tail: SequenceNumber(tail_base + i),
                free_blocks: BlockCount(1000 + i),
                clean: i % 2 == 0,
                ref_counts_written: i % 3 == 0,
            })
            .collect();
        SlabSummaryBlock {
            block_index: INDEX,
            entries,
        }
    }

    fn encoded(value: &SlabSummaryBlock, generation: u64) -> Block {
        let mut block = [0_u8; BLOCK_SIZE];
        value.encode(NONCE, PBN, SequenceNumber(generation), &mut block);
        block
    }

    fn decode_sample(block: &Block, expected: Expected) -> Result<SlabSummaryBlock, FormatError> {
        SlabSummaryBlock::decode(block, expected, INDEX)
    }

    fn field_of(block: &Block) -> &'static str {
        match decode_sample(block, expected()).unwrap_err().problem {
            Problem::InvalidField { field, .. } => field,
            other => panic!("expected an invalid field, got {other}"),
        }
    }

    fn any_entry() -> impl Strategy<Value = SummaryEntry> {
        (any::<u64>(), any::<u32>(), any::<bool>(), any::<bool>()).prop_map(
            |(tail, free, clean, ref_counts_written)| SummaryEntry {
                journal_tail: SequenceNumber(tail),
                free_blocks: BlockCount(u64::from(free)),
                clean,
                ref_counts_written,
            },
        )
    }

    fn any_block() -> impl Strategy<Value = SlabSummaryBlock> {
        (0..SUMMARY_BLOCKS).prop_flat_map(|block_index| {
            let max = entries_max(block_index) as usize;
            prop::collection::vec(any_entry(), 0..=max).prop_map(move |entries| SlabSummaryBlock {
                block_index,
                entries,
            })
        })
    }

    proptest! {
        #[test]
        fn round_trips(value in any_block(), generation in any::<u64>(), pbn in any::<u64>()) {
            let mut block = [0_u8; BLOCK_SIZE];
            value.encode(NONCE, Pbn(pbn), SequenceNumber(generation), &mut block);
            let expected = Expected::new(NONCE, Pbn(pbn));
            let decoded = decode_generation(&block, expected, value.block_index);
            prop_assert_eq!(decoded, Ok((value, SequenceNumber(generation))));
        }

        #[test]
        fn arbitrary_blocks_decode_without_panic(
            bytes in prop::collection::vec(any::<u8>(), BLOCK_SIZE),
            block_index in 0..SUMMARY_BLOCKS,
        ) {
            let block: Block = bytes.try_into().unwrap();
            let result = SlabSummaryBlock::decode(&block, expected(), block_index);
            prop_assert!(result.is_err());
        }

        #[test]
        fn mutated_blocks_decode_without_panic_and_canonically(
            edits in prop::collection::vec((0..BLOCK_SIZE, any::<u8>()), 1..8),
        ) {
            let mut block = encoded(&sample(100, 7), 5);
            for (offset, byte) in edits {
                block[offset] = byte;
            }
            reseal(&mut block);
            if let Ok((value, generation)) = decode_generation(&block, expected(), INDEX) {
                let mut again = [0_u8; BLOCK_SIZE];
                value.encode(NONCE, PBN, generation, &mut again);
                prop_assert_eq!(again, block);
            }
        }
    }

    #[test]
    fn damage_is_detected() {
        let older = encoded(&sample(100, 7), 4);
        let newer = encoded(&sample(120, 9), 5);
        assert_detects_damage(decode_sample, &older, &newer, expected());
    }

    #[test]
    fn layout_matches_the_diagram() {
        let block = encoded(&sample(3, 7), 4);
        assert_eq!(get_u32(&block, 32), 504);
        assert_eq!(get_u32(&block, 36), 3);
        assert_eq!(get_u64(&block, 64), 7);
        assert_eq!(get_u32(&block, 72), 1000);
        assert_eq!(block[76], 0b11, "entry 0 is clean with ref counts written");
        assert_eq!(get_u64(&block, 80), 8);
        assert_eq!(block[92], 0, "entry 1 is dirty with no ref counts");
        assert_eq!(block[108], 0b01, "entry 2 is clean only");
        assert!(block[64 + 3 * 16..].iter().all(|&b| b == 0));
        assert_eq!(get_u64(&block, 24), 4, "header sequence is the generation");
    }

    #[test]
    fn each_field_check_reports_its_own_error() {
        let valid = encoded(&sample(10, 7), 4);
        let patched = |offset: usize, byte: u8| {
            let mut block = valid;
            block[offset] = byte;
            reseal(&mut block);
            field_of(&block)
        };
        assert_eq!(patched(FIRST_SLAB_OFFSET, 0), "first slab");
        assert_eq!(patched(FIRST_SLAB_OFFSET + 3, 1), "first slab");
        assert_eq!(patched(ENTRY_COUNT_OFFSET, 253), "entry count");
        assert_eq!(patched(RESERVED_OFFSET, 1), "reserved");
        assert_eq!(patched(ENTRIES_OFFSET - 1, 1), "reserved");
        let entry = ENTRIES_OFFSET + 9 * ENTRY_SIZE;
        assert_eq!(patched(entry + ENTRY_FLAGS_OFFSET, 4), "entry flags");
        assert_eq!(patched(entry + ENTRY_FLAGS_OFFSET, 0x80), "entry flags");
        assert_eq!(patched(entry + ENTRY_RESERVED_OFFSET, 1), "entry reserved");
        assert_eq!(patched(entry + ENTRY_SIZE - 1, 1), "entry reserved");
        assert_eq!(patched(entry + ENTRY_SIZE, 1), "unused entry");
        assert_eq!(patched(BLOCK_SIZE - 1, 1), "unused entry");
        assert!(decode_sample(&valid, expected()).is_ok());
    }

    #[test]
    fn the_last_block_holds_only_the_slabs_below_the_limit() {
        let last = SUMMARY_BLOCKS - 1;
        assert_eq!(entries_max(last), 128);
        assert_eq!(locate(SlabNumber(SLABS_MAX - 1)), (last, 127));
        assert_eq!(locate(SlabNumber(252)), (1, 0));
        let value = SlabSummaryBlock {
            block_index: last,
            entries: vec![SummaryEntry::default(); 128],
        };
        let mut block = [0_u8; BLOCK_SIZE];
        value.encode(NONCE, PBN, SequenceNumber(1), &mut block);
        assert_eq!(
            SlabSummaryBlock::decode(&block, expected(), last),
            Ok(value)
        );
        put_u32(&mut block, ENTRY_COUNT_OFFSET, 129);
        reseal(&mut block);
        let err = SlabSummaryBlock::decode(&block, expected(), last).unwrap_err();
        assert!(matches!(
            err.problem,
            Problem::InvalidField {
                field: "entry count",
                found: 129,
                ..
            }
        ));
    }

    #[test]
    fn twins_keep_the_newest_valid_copy() {
        let base = Pbn(300);
        let write = |value: &SlabSummaryBlock, slot: TwinSlot, generation| {
            let mut block = [0_u8; BLOCK_SIZE];
            value.encode(
                NONCE,
                slot.pbn(base),
                SequenceNumber(generation),
                &mut block,
            );
            block
        };
        let old = sample(5, 1);
        let new = sample(6, 2);
        let a = write(&new, TwinSlot::A, 12);
        let b = write(&old, TwinSlot::B, 11);
        let chosen = read_twins(&a, &b, NONCE, base, INDEX).unwrap();
        assert_eq!(chosen.next_write(), (TwinSlot::B, SequenceNumber(13)));
        assert_eq!(chosen.value, new);

        let mut torn_a = a;
        torn_a[64..512].copy_from_slice(&b[64..512]);
        let chosen = read_twins(&torn_a, &b, NONCE, base, INDEX).unwrap();
        assert_eq!((chosen.value, chosen.slot), (old, TwinSlot::B));

        let err = read_twins(&a, &b, NONCE, base, INDEX + 1).unwrap_err();
        assert!(matches!(
            err.problem,
            Problem::InvalidField {
                field: "first slab",
                ..
            }
        ));
    }
}
