#![no_main]
//! A slab summary block: any bytes decode or fail cleanly; valid blocks round-trip.

use libfuzzer_sys::fuzz_target;
use uvdo_format::slab_summary::{self, SlabSummaryBlock};
use uvdo_format::{BlockType, Pbn};

fuzz_target!(|data: &[u8]| {
    let block_index = data.get(1).map_or(0, |b| u32::from(*b % 33));
    let (block, expected) =
        uvdo_fuzz::shape(data, BlockType::SlabSummary, slab_summary::VERSION, |_| Pbn(100));
    if let Ok(decoded) = SlabSummaryBlock::decode(&block, expected, block_index) {
        let generation = uvdo_fuzz::sequence(&block);
        uvdo_fuzz::assert_round_trip(&block, |out| {
            decoded.encode(uvdo_fuzz::NONCE, expected.pbn, generation, out);
        });
    }
});
