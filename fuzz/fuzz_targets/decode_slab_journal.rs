#![no_main]
//! A slab journal block: any bytes decode or fail cleanly; valid blocks round-trip and decode
//! again at their own sequence.

use libfuzzer_sys::fuzz_target;
use uvdo_format::slab_journal::{self, SlabJournalBlock, SlabJournalRegion};
use uvdo_format::{BlockType, Pbn, SlabNumber};

const REGION: SlabJournalRegion =
    SlabJournalRegion { slab: SlabNumber(3), start: Pbn(9000), blocks: 8, data_blocks: 1000 };

fuzz_target!(|data: &[u8]| {
    let (block, expected) =
        uvdo_fuzz::shape(data, BlockType::SlabJournal, slab_journal::VERSION, |sequence| {
            REGION.log().pbn_of(sequence)
        });
    if let Ok(decoded) = SlabJournalBlock::decode(&block, expected, &REGION) {
        let sequence = uvdo_fuzz::sequence(&block);
        assert!(SlabJournalBlock::decode_at(&block, expected, &REGION, sequence).is_ok());
        uvdo_fuzz::assert_round_trip(&block, |out| decoded.encode(uvdo_fuzz::NONCE, &REGION, out));
    }
});
