//! A block map entry: where one logical block's data lives, packed in 5 bytes.
//!
//! ```text
//! byte 0: bits 7..4 state, bits 3..0 PBN bits 35..32
//! bytes 1..5: PBN bits 31..0, little-endian
//!
//! state 0      unmapped (never written, or trimmed); PBN must be 0
//! state 1      uncompressed: PBN 0 means the zero block, any other PBN holds the data
//! state 2..15  compressed, fragment slot 0..13 of the packed block at PBN (PBN != 0)
//! ```
//!
//! The same encoding names tree pages in interior block map pages (state 1, PBN of the page's
//! first twin slot) and old and new locations in recovery journal entries.
//!
//! # Detection
//!
//! An entry has no checksum of its own: the page or journal block holding it does. Decoding
//! still refuses the two impossible combinations (unmapped with a PBN, compressed at PBN 0), so
//! a bug that writes garbage into a valid block is caught on the next read.

use crate::error::Problem;
use crate::le::{get_u32, put_u32};
use crate::numbers::Pbn;

/// Bytes of one packed entry.
pub const PACKED_MAPPING_SIZE: usize = 5;
/// Largest PBN an entry can hold: PBNs are 36 bits (256 TiB of 4 KiB blocks).
pub const PBN_MAX: u64 = (1 << 36) - 1;
/// Number of fragment slots a compressed block can hold (VDO's limit, kept for the packer).
pub const COMPRESSED_SLOTS: u8 = 14;

const STATE_UNMAPPED: u8 = 0;
const STATE_UNCOMPRESSED: u8 = 1;
const STATE_COMPRESSED_FIRST: u8 = 2;

/// Where a logical block's contents are.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Mapping {
    /// Never written, or trimmed: reads as zeros, holds no reference.
    #[default]
    Unmapped,
    /// Written with all zeros: reads as zeros, holds no reference, counts as used.
    Zero,
    /// Stored uncompressed at this PBN.
    Data(Pbn),
    /// Stored compressed in fragment `slot` of the packed block at `pbn`.
    Compressed {
        /// The packed block.
        pbn: Pbn,
        /// The fragment slot, `0..COMPRESSED_SLOTS`.
        slot: u8,
    },
}

impl Mapping {
    /// The physical block this mapping holds a reference on, if any.
    #[must_use]
    pub fn pbn(self) -> Option<Pbn> {
        match self {
            Self::Unmapped | Self::Zero => None,
            Self::Data(pbn) | Self::Compressed { pbn, .. } => Some(pbn),
        }
    }

    /// True for every mapping except `Unmapped`: the logical block counts as used.
    #[must_use]
    pub fn is_mapped(self) -> bool {
        self != Self::Unmapped
    }

    /// Packs the entry into `out`.
    ///
    /// # Panics
    ///
    /// If the PBN is over [`PBN_MAX`], the PBN of a data or compressed mapping is 0, or the slot
    /// is out of range: these are engine bugs, never on-disk input.
    pub fn encode(self, out: &mut [u8; PACKED_MAPPING_SIZE]) {
        let (state, pbn) = match self {
            Self::Unmapped => (STATE_UNMAPPED, 0),
            Self::Zero => (STATE_UNCOMPRESSED, 0),
            Self::Data(pbn) => {
                assert_ne!(pbn.0, 0, "data mapped to PBN 0");
                (STATE_UNCOMPRESSED, pbn.0)
            }
            Self::Compressed { pbn, slot } => {
                assert_ne!(pbn.0, 0, "compressed fragment at PBN 0");
                assert!(
                    slot < COMPRESSED_SLOTS,
                    "compressed slot {slot} out of range"
                );
                (STATE_COMPRESSED_FIRST + slot, pbn.0)
            }
        };
        assert!(pbn <= PBN_MAX, "PBN {pbn} does not fit in 36 bits");
        let high = u8::try_from(pbn >> 32).expect("checked against PBN_MAX");
        out[0] = (state << 4) | high;
        put_u32(out, 1, (pbn & 0xffff_ffff) as u32);
    }

    /// Unpacks an entry, refusing impossible combinations.
    ///
    /// # Errors
    ///
    /// `Problem::InvalidField` for an unmapped entry with a PBN or a compressed one at PBN 0.
    #[inline]
    pub fn decode(bytes: &[u8; PACKED_MAPPING_SIZE]) -> Result<Self, Problem> {
        let state = bytes[0] >> 4;
        let pbn = (u64::from(bytes[0] & 0x0f) << 32) | u64::from(get_u32(bytes, 1));
        match state {
            STATE_UNMAPPED if pbn == 0 => Ok(Self::Unmapped),
            STATE_UNMAPPED => Err(Problem::InvalidField {
                field: "unmapped entry PBN",
                expected: "0",
                found: pbn,
            }),
            STATE_UNCOMPRESSED if pbn == 0 => Ok(Self::Zero),
            STATE_UNCOMPRESSED => Ok(Self::Data(Pbn(pbn))),
            _ if pbn == 0 => Err(Problem::InvalidField {
                field: "compressed entry PBN",
                expected: "not 0",
                found: 0,
            }),
            _ => Ok(Self::Compressed {
                pbn: Pbn(pbn),
                slot: state - STATE_COMPRESSED_FIRST,
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn any_mapping() -> impl Strategy<Value = Mapping> {
        prop_oneof![
            Just(Mapping::Unmapped),
            Just(Mapping::Zero),
            (1..=PBN_MAX).prop_map(|p| Mapping::Data(Pbn(p))),
            (1..=PBN_MAX, 0..COMPRESSED_SLOTS)
                .prop_map(|(p, slot)| Mapping::Compressed { pbn: Pbn(p), slot }),
        ]
    }

    proptest! {
        #[test]
        fn round_trips(mapping in any_mapping()) {
            let mut bytes = [0_u8; PACKED_MAPPING_SIZE];
            mapping.encode(&mut bytes);
            prop_assert_eq!(Mapping::decode(&bytes), Ok(mapping));
        }

        #[test]
        fn any_bytes_decode_without_panic(bytes in any::<[u8; PACKED_MAPPING_SIZE]>()) {
            if let Ok(mapping) = Mapping::decode(&bytes) {
                let mut again = [0_u8; PACKED_MAPPING_SIZE];
                mapping.encode(&mut again);
                prop_assert_eq!(again, bytes);
            }
        }
    }

    #[test]
    fn layout_matches_the_diagram() {
        let mut bytes = [0_u8; PACKED_MAPPING_SIZE];
        Mapping::Compressed {
            pbn: Pbn(0x9_1234_5678),
            slot: 3,
        }
        .encode(&mut bytes);
        assert_eq!(bytes, [0x59, 0x78, 0x56, 0x34, 0x12]);
        Mapping::Zero.encode(&mut bytes);
        assert_eq!(bytes, [0x10, 0, 0, 0, 0]);
    }

    #[test]
    fn impossible_combinations_are_refused() {
        assert!(Mapping::decode(&[0x00, 1, 0, 0, 0]).is_err());
        assert!(Mapping::decode(&[0x20, 0, 0, 0, 0]).is_err());
        assert_eq!(Mapping::decode(&[0; 5]), Ok(Mapping::Unmapped));
    }
}
