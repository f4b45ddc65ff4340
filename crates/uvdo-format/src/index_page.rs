//! A page of the saved dedupe index: a container of opaque bytes, numbered within one save.
//!
//! ```text
//! offset size field
//!      0   32 header        type 8; location = the page's PBN; sequence = save generation
//!     32    4 page number   0..page count
//!     36    4 page count    pages in this save, at least 1
//!     40    4 used bytes    0..=4048
//!     44    4 reserved      zero
//!     48 4048 data          used bytes of index data, then zeros
//! ```
//!
//! A save writes pages `0..page count`, all with the same generation, one higher than the
//! previous save's. What the data bytes mean belongs to the index, not to this container.
//!
//! # Detection
//!
//! The save area is rewritten in place, so a crash during a save leaves a mix of pages from two
//! generations, and a torn page. A torn page fails the CRC. A page left from another save (a
//! stale page: a lost write or an unfinished save) has another generation and fails with
//! `WrongSequence`, so a save is used only when every page carries the expected generation and
//! the expected page number. A misdirected write fails the location check, a foreign block the
//! nonce check. Losing the index loses only dedupe opportunities, never data (SPEC I5), so a
//! save that does not read back whole is discarded and the index starts empty.

use crate::block::{BLOCK_SIZE, Block};
use crate::error::{FormatError, Problem};
use crate::header::{self, BlockHeader, BlockType, Expected, HEADER_SIZE};
use crate::le::{get_u32, put_u32};
use crate::numbers::{Nonce, Pbn, SequenceNumber};

/// Layout version of index pages.
pub const VERSION: u8 = 1;
/// Data bytes one page holds.
pub const INDEX_PAGE_CAPACITY: usize = 4048;

const PAGE_NUMBER_OFFSET: usize = HEADER_SIZE;
const PAGE_COUNT_OFFSET: usize = 36;
const USED_OFFSET: usize = 40;
const RESERVED_OFFSET: usize = 44;
const DATA_OFFSET: usize = 48;

const CAPACITY_U32: u32 = 4048;

const _: () = assert!(PAGE_COUNT_OFFSET == PAGE_NUMBER_OFFSET + 4);
const _: () = assert!(USED_OFFSET == PAGE_COUNT_OFFSET + 4);
const _: () = assert!(RESERVED_OFFSET == USED_OFFSET + 4);
const _: () = assert!(DATA_OFFSET == RESERVED_OFFSET + 4);
const _: () = assert!(DATA_OFFSET + INDEX_PAGE_CAPACITY == BLOCK_SIZE);
const _: () = assert!(CAPACITY_U32 as usize == INDEX_PAGE_CAPACITY);

/// One page of a saved index.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct IndexPage {
    /// This page's position in the save, below `page_count`.
    pub page_number: u32,
    /// Pages in the save this page belongs to.
    pub page_count: u32,
    /// The page's data, at most [`INDEX_PAGE_CAPACITY`] bytes.
    pub data: Vec<u8>,
}

impl IndexPage {
    /// Encodes the page for `pbn` as part of save `generation`.
    ///
    /// # Panics
    ///
    /// If the page number is not below the page count or the data is over
    /// [`INDEX_PAGE_CAPACITY`]: engine bugs.
    pub fn encode(&self, nonce: Nonce, pbn: Pbn, generation: SequenceNumber, out: &mut Block) {
        assert!(
            self.page_number < self.page_count,
            "index page {} of a save of {}",
            self.page_number,
            self.page_count
        );
        let used = u32::try_from(self.data.len()).expect("data length fits in u32");
        assert!(
            used <= CAPACITY_U32,
            "{used} bytes do not fit in an index page"
        );
        out.fill(0);
        put_u32(out, PAGE_NUMBER_OFFSET, self.page_number);
        put_u32(out, PAGE_COUNT_OFFSET, self.page_count);
        put_u32(out, USED_OFFSET, used);
        out[DATA_OFFSET..DATA_OFFSET + self.data.len()].copy_from_slice(&self.data);
        let header = BlockHeader {
            block_type: BlockType::IndexPage,
            version: VERSION,
            nonce,
            location: pbn,
            sequence: generation,
        };
        header::seal(out, &header);
    }

    /// Decodes page `page_number` of save `generation`.
    ///
    /// # Errors
    ///
    /// A header problem; `WrongSequence` for a page of another save; `InvalidField` for another
    /// page number, a page count not above the page number, too many used bytes, a nonzero
    /// reserved field or nonzero bytes past the used ones.
    pub fn decode(
        block: &Block,
        expected: Expected,
        generation: SequenceNumber,
        page_number: u32,
    ) -> Result<Self, FormatError> {
        let header = header::open(block, BlockType::IndexPage, VERSION, expected)?;
        let fail = |problem| FormatError::new(BlockType::IndexPage, expected.pbn, problem);
        let invalid = |field, expected_text, found| {
            fail(Problem::InvalidField {
                field,
                expected: expected_text,
                found,
            })
        };
        if header.sequence != generation {
            return Err(fail(Problem::WrongSequence {
                expected: generation.0,
                found: header.sequence.0,
            }));
        }
        let found_page = get_u32(block, PAGE_NUMBER_OFFSET);
        if found_page != page_number {
            return Err(invalid(
                "page number",
                "the page number read",
                u64::from(found_page),
            ));
        }
        let page_count = get_u32(block, PAGE_COUNT_OFFSET);
        if page_count <= page_number {
            return Err(invalid(
                "page count",
                "above the page number",
                u64::from(page_count),
            ));
        }
        let used = get_u32(block, USED_OFFSET);
        if used > CAPACITY_U32 {
            return Err(invalid("used bytes", "at most 4048", u64::from(used)));
        }
        let reserved = get_u32(block, RESERVED_OFFSET);
        if reserved != 0 {
            return Err(invalid("reserved", "0", u64::from(reserved)));
        }
        let end = DATA_OFFSET + used as usize;
        if let Some(&found) = block[end..].iter().find(|&&b| b != 0) {
            return Err(invalid("data past used bytes", "0", u64::from(found)));
        }
        Ok(Self {
            page_number,
            page_count,
            data: block[DATA_OFFSET..end].to_vec(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::damage::{assert_detects_damage, reseal};
    use crate::le::get_u64;
    use proptest::prelude::*;

    const NONCE: Nonce = Nonce(0xabcd_ef01_2345_6789);
    const PBN: Pbn = Pbn(123);
    const GENERATION: SequenceNumber = SequenceNumber(17);

    fn expected() -> Expected {
        Expected::new(NONCE, PBN)
    }

    fn sample(len: usize, fill: u8) -> IndexPage {
        IndexPage {
            page_number: 3,
            page_count: 10,
            data: (0..len)
                .map(|i| (u8::try_from(i % 255).unwrap() + 1) ^ fill)
                .collect(),
        }
    }

    fn encoded(value: &IndexPage, generation: SequenceNumber) -> Block {
        let mut block = [0_u8; BLOCK_SIZE];
        value.encode(NONCE, PBN, generation, &mut block);
        block
    }

    fn decode_sample(block: &Block, expected: Expected) -> Result<IndexPage, FormatError> {
        IndexPage::decode(block, expected, GENERATION, 3)
    }

    fn field_of(block: &Block) -> &'static str {
        match decode_sample(block, expected()).unwrap_err().problem {
            Problem::InvalidField { field, .. } => field,
            other => panic!("expected an invalid field, got {other}"),
        }
    }

    fn any_page() -> impl Strategy<Value = IndexPage> {
        (
            1..=u32::MAX,
            prop::collection::vec(any::<u8>(), 0..=INDEX_PAGE_CAPACITY),
        )
            .prop_flat_map(|(page_count, data)| {
                (0..page_count).prop_map(move |page_number| IndexPage {
                    page_number,
                    page_count,
                    data: data.clone(),
                })
            })
    }

    proptest! {
        #[test]
        fn round_trips(value in any_page(), generation in any::<u64>(), pbn in any::<u64>()) {
            let mut block = [0_u8; BLOCK_SIZE];
            let generation = SequenceNumber(generation);
            value.encode(NONCE, Pbn(pbn), generation, &mut block);
            let expected = Expected::new(NONCE, Pbn(pbn));
            let decoded = IndexPage::decode(&block, expected, generation, value.page_number);
            prop_assert_eq!(decoded, Ok(value));
        }

        #[test]
        fn arbitrary_blocks_decode_without_panic(
            bytes in prop::collection::vec(any::<u8>(), BLOCK_SIZE),
            page_number in any::<u32>(),
        ) {
            let block: Block = bytes.try_into().unwrap();
            let result = IndexPage::decode(&block, expected(), GENERATION, page_number);
            prop_assert!(result.is_err());
        }

        #[test]
        fn mutated_blocks_decode_without_panic_and_canonically(
            edits in prop::collection::vec((0..BLOCK_SIZE, any::<u8>()), 1..8),
        ) {
            let mut block = encoded(&sample(2000, 0), GENERATION);
            for (offset, byte) in edits {
                block[offset] = byte;
            }
            reseal(&mut block);
            if let Ok(value) = decode_sample(&block, expected()) {
                prop_assert_eq!(encoded(&value, GENERATION), block);
            }
        }
    }

    #[test]
    fn damage_is_detected() {
        let older = encoded(&sample(2000, 0), GENERATION);
        let newer = encoded(&sample(3000, 0x33), GENERATION);
        assert_detects_damage(decode_sample, &older, &newer, expected());
    }

    #[test]
    fn layout_matches_the_diagram() {
        let block = encoded(&sample(5, 0), GENERATION);
        assert_eq!(get_u32(&block, 32), 3);
        assert_eq!(get_u32(&block, 36), 10);
        assert_eq!(get_u32(&block, 40), 5);
        assert_eq!(block[48..53], sample(5, 0).data[..]);
        assert!(block[53..].iter().all(|&b| b == 0));
        assert_eq!(
            get_u64(&block, 24),
            17,
            "header sequence is the save generation"
        );
    }

    #[test]
    fn a_page_of_another_save_is_stale() {
        let block = encoded(&sample(100, 0), SequenceNumber(16));
        assert_eq!(
            decode_sample(&block, expected()).unwrap_err().problem,
            Problem::WrongSequence {
                expected: 17,
                found: 16
            }
        );
        let block = encoded(&sample(100, 0), SequenceNumber(18));
        assert_eq!(
            decode_sample(&block, expected()).unwrap_err().problem,
            Problem::WrongSequence {
                expected: 17,
                found: 18
            }
        );
    }

    #[test]
    fn each_field_check_reports_its_own_error() {
        let valid = encoded(&sample(2000, 0), GENERATION);
        let patched = |offset: usize, value: u32| {
            let mut block = valid;
            put_u32(&mut block, offset, value);
            reseal(&mut block);
            field_of(&block)
        };
        assert_eq!(patched(PAGE_NUMBER_OFFSET, 4), "page number");
        assert_eq!(patched(PAGE_COUNT_OFFSET, 3), "page count");
        assert_eq!(patched(PAGE_COUNT_OFFSET, 0), "page count");
        assert_eq!(patched(USED_OFFSET, 4049), "used bytes");
        assert_eq!(patched(USED_OFFSET, u32::MAX), "used bytes");
        assert_eq!(patched(RESERVED_OFFSET, 1 << 24), "reserved");
        assert_eq!(patched(USED_OFFSET, 1999), "data past used bytes");
        assert_eq!(patched(BLOCK_SIZE - 4, 1 << 24), "data past used bytes");
        assert_eq!(patched(DATA_OFFSET + 2000, 1), "data past used bytes");
        assert!(decode_sample(&valid, expected()).is_ok());
    }

    #[test]
    fn a_full_and_an_empty_page_round_trip() {
        for len in [0, INDEX_PAGE_CAPACITY] {
            let value = sample(len, 0xff);
            let block = encoded(&value, GENERATION);
            assert_eq!(decode_sample(&block, expected()), Ok(value));
        }
    }
}
