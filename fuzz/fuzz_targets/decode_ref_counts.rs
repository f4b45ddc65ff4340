#![no_main]
//! A reference count block, full or partly used: any bytes decode or fail cleanly; valid
//! blocks round-trip.

use libfuzzer_sys::fuzz_target;
use uvdo_format::ref_counts::{self, COUNTS_PER_BLOCK, RefCountBlock};
use uvdo_format::{BlockType, Pbn, SlabNumber};

fuzz_target!(|data: &[u8]| {
    let used = data.get(1).map_or(COUNTS_PER_BLOCK, |b| COUNTS_PER_BLOCK - usize::from(*b));
    let (block, expected) =
        uvdo_fuzz::shape(data, BlockType::RefCounts, ref_counts::VERSION, |_| Pbn(777));
    if let Ok(decoded) = RefCountBlock::decode(&block, expected, SlabNumber(0), 0, used) {
        let generation = uvdo_fuzz::sequence(&block);
        uvdo_fuzz::assert_round_trip(&block, |out| {
            decoded.encode(uvdo_fuzz::NONCE, expected.pbn, generation, out);
        });
    }
});
