#![no_main]
//! A block map page at any level: any bytes decode or fail cleanly; valid pages round-trip.

use libfuzzer_sys::fuzz_target;
use uvdo_format::block_map_page::{self, BlockMapPage};
use uvdo_format::{BlockType, Pbn};

fuzz_target!(|data: &[u8]| {
    let level = data.get(1).map_or(0, |b| b % block_map_page::TREE_HEIGHT);
    let (block, expected) =
        uvdo_fuzz::shape(data, BlockType::BlockMapPage, block_map_page::VERSION, |_| Pbn(4242));
    if let Ok(page) = BlockMapPage::decode(&block, expected, level) {
        uvdo_fuzz::assert_round_trip(&block, |out| page.encode(uvdo_fuzz::NONCE, expected.pbn, out));
    }
});
