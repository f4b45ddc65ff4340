#![no_main]
//! The geometry block at PBN 0: any bytes decode or fail cleanly; valid blocks round-trip.

use libfuzzer_sys::fuzz_target;
use uvdo_format::geometry::{self, Geometry};
use uvdo_format::{BlockType, Pbn};

fuzz_target!(|data: &[u8]| {
    let (block, expected) =
        uvdo_fuzz::shape(data, BlockType::Geometry, geometry::VERSION, |_| Pbn(0));
    let _ = Geometry::looks_like_uvdo(&block);
    if let Ok(geometry) = Geometry::decode(&block) {
        assert_eq!(Geometry::decode_expected(&block, expected).as_ref(), Ok(&geometry));
        uvdo_fuzz::assert_round_trip(&block, |out| geometry.encode(out));
    }
});
