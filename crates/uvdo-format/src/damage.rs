//! Damage a valid block in every way the device can, and check the decoder notices.
//!
//! Each codec's tests call [`assert_detects_damage`] with two valid encodings of its structure
//! (an older and a newer image of the same block) and its decode function. Only compiled for
//! tests and for the `testing` feature, which other crates' tests and the fuzz targets enable.

use crate::block::{BLOCK_SIZE, Block, SECTOR_SIZE, SECTORS_PER_BLOCK};
use crate::error::{FormatError, Problem};
use crate::header::{BlockType, Expected, HEADER_SIZE};
use crate::le::{get_u8, get_u64, put_u8, put_u64};
use crate::numbers::Pbn;

const TYPE_OFFSET: usize = 6;
const NONCE_OFFSET: usize = 8;
const LOCATION_OFFSET: usize = 16;

/// Recomputes the CRC of a block after a test changed its header, so the change reaches the
/// later checks instead of failing the CRC.
pub fn reseal(block: &mut Block) {
    let crc = crc32fast::hash(&block[4..]);
    block[..4].copy_from_slice(&crc.to_le_bytes());
}

/// Mixes two images sector by sector: sector `i` comes from `new` when bit `i` of `mask` is set.
#[must_use]
pub fn torn(old: &Block, new: &Block, mask: u8) -> Block {
    let mut out = *old;
    for sector in 0..SECTORS_PER_BLOCK {
        if mask & (1 << sector) != 0 {
            let range = sector * SECTOR_SIZE..(sector + 1) * SECTOR_SIZE;
            out[range.clone()].copy_from_slice(&new[range]);
        }
    }
    out
}

/// Asserts that `decode` accepts `older` and `newer` and rejects every damaged variant with
/// the right problem, without panicking:
///
/// - every single-bit flip of `newer` fails the checksum;
/// - every tear between `older` and `newer` at sector boundaries that differs from both, and a
///   tear inside a sector, fails the checksum;
/// - an all-zero block is `Unwritten`;
/// - a block of another type is `WrongType`, of another nonce `WrongNonce`, written for another
///   location `WrongLocation` (each resealed so the CRC passes).
///
/// # Panics
///
/// When any of these does not hold: this is a test assertion.
pub fn assert_detects_damage<T, F>(decode: F, older: &Block, newer: &Block, expected: Expected)
where
    F: Fn(&Block, Expected) -> Result<T, FormatError>,
{
    assert!(
        decode(older, expected).is_ok(),
        "the older image must decode"
    );
    assert!(
        decode(newer, expected).is_ok(),
        "the newer image must decode"
    );
    assert_ne!(
        older, newer,
        "the two images must differ for tears to be visible"
    );
    let problem = |b: &Block, e| match decode(b, e) {
        Ok(_) => None,
        Err(err) => Some(err.problem),
    };
    let is_checksum = |p: Option<Problem>| matches!(p, Some(Problem::Checksum { .. }));

    for bit in 0..BLOCK_SIZE * 8 {
        let mut b = *newer;
        b[bit / 8] ^= 1 << (bit % 8);
        assert!(
            is_checksum(problem(&b, expected)),
            "bit flip {bit} not detected"
        );
    }
    for mask in 1..u8::MAX {
        let b = torn(older, newer, mask);
        if b != *older && b != *newer {
            assert!(
                is_checksum(problem(&b, expected)),
                "tear with mask {mask:#04x} missed"
            );
        }
    }
    let differing = (HEADER_SIZE..BLOCK_SIZE).find(|&i| older[i] != newer[i]);
    if let Some(i) = differing {
        let sector_start = i - i % SECTOR_SIZE;
        let mut b = *newer;
        b[i..sector_start + SECTOR_SIZE].copy_from_slice(&older[i..sector_start + SECTOR_SIZE]);
        assert!(
            is_checksum(problem(&b, expected)),
            "tear inside sector at {i} missed"
        );
    }

    assert_eq!(
        problem(&[0; BLOCK_SIZE], expected),
        Some(Problem::Unwritten)
    );

    let mut b = *newer;
    let code = get_u8(&b, TYPE_OFFSET);
    put_u8(&mut b, TYPE_OFFSET, if code == 8 { 1 } else { code + 1 });
    reseal(&mut b);
    assert!(
        matches!(problem(&b, expected), Some(Problem::WrongType { .. })),
        "other type"
    );

    let mut b = *newer;
    let nonce = get_u64(&b, NONCE_OFFSET);
    put_u64(&mut b, NONCE_OFFSET, nonce ^ 0x5555);
    reseal(&mut b);
    assert!(
        matches!(problem(&b, expected), Some(Problem::WrongNonce { .. })),
        "other nonce"
    );

    let mut b = *newer;
    let location = get_u64(&b, LOCATION_OFFSET);
    put_u64(&mut b, LOCATION_OFFSET, location + 1);
    reseal(&mut b);
    assert!(
        matches!(problem(&b, expected), Some(Problem::WrongLocation { .. })),
        "misdirected block"
    );
    let elsewhere = Expected::new(expected.nonce, Pbn(expected.pbn.0 + 7));
    assert!(
        matches!(
            problem(newer, elsewhere),
            Some(Problem::WrongLocation { .. })
        ),
        "block read from another location"
    );
}

/// Asserts that `decode` returns an error (never panics) for every block of another type that
/// `make_other` can produce; used to check cross-type confusion per codec.
///
/// # Panics
///
/// When a block of another type decodes.
pub fn assert_rejects_type<T, F>(
    decode: F,
    other: &Block,
    other_type: BlockType,
    expected: Expected,
) where
    F: Fn(&Block, Expected) -> Result<T, FormatError>,
{
    match decode(other, expected) {
        Ok(_) => panic!("a {other_type} block decoded as another type"),
        Err(e) => assert!(matches!(e.problem, Problem::WrongType { .. }), "{e}"),
    }
}
