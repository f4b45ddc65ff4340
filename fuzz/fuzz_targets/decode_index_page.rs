#![no_main]
//! A saved dedupe-index page: any bytes decode or fail cleanly; valid pages round-trip.

use libfuzzer_sys::fuzz_target;
use uvdo_format::index_page::{self, IndexPage};
use uvdo_format::{BlockType, Pbn};

fuzz_target!(|data: &[u8]| {
    let (block, expected) =
        uvdo_fuzz::shape(data, BlockType::IndexPage, index_page::VERSION, |_| Pbn(55));
    let generation = uvdo_fuzz::sequence(&block);
    let page_number = data.get(1).map_or(0, |b| u32::from(*b));
    if let Ok(decoded) = IndexPage::decode(&block, expected, generation, page_number) {
        uvdo_fuzz::assert_round_trip(&block, |out| {
            decoded.encode(uvdo_fuzz::NONCE, expected.pbn, generation, out);
        });
    }
});
