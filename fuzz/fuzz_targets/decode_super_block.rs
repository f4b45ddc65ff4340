#![no_main]
//! A super block slot: any bytes decode or fail cleanly; valid blocks round-trip; the twin
//! reader never panics on two arbitrary slots.

use libfuzzer_sys::fuzz_target;
use uvdo_format::super_block::{self, SuperBlock};
use uvdo_format::{BlockType, Pbn};

fuzz_target!(|data: &[u8]| {
    let (block, expected) =
        uvdo_fuzz::shape(data, BlockType::SuperBlock, super_block::VERSION, |_| Pbn(1));
    if let Ok(decoded) = SuperBlock::decode(&block, expected) {
        uvdo_fuzz::assert_round_trip(&block, |out| decoded.encode(out));
    }
    let _ = SuperBlock::read_twins(&block, &block, uvdo_fuzz::NONCE);
});
