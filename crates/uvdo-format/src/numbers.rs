//! The numbered things of a volume, each with its own type (STYLE.md rule 3).
//!
//! A raw `u64` could be a logical block, a physical block, a count or a sequence number; mixing
//! them up is how a block map points at the wrong block. Each newtype is a transparent wrapper
//! with the on-disk width of the field that stores it.

use std::fmt;

macro_rules! number {
    ($(#[$doc:meta])* $name:ident($inner:ty)) => {
        $(#[$doc])*
        #[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub struct $name(pub $inner);

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Display::fmt(&self.0, f)
            }
        }
    };
}

number!(
    /// Logical block number: what the user addresses, in 4 KiB blocks (40 bits on disk).
    Lbn(u64)
);
number!(
    /// Physical block number on the backing store, in 4 KiB blocks (36 bits on disk).
    Pbn(u64)
);
number!(
    /// Index of a slab within the slab depot.
    SlabNumber(u32)
);
number!(
    /// Index of a block within one slab's data blocks.
    SlabBlockNumber(u32)
);
number!(
    /// A position in a log (recovery journal or slab journal) or a write generation.
    SequenceNumber(u64)
);
number!(
    /// The volume's random identity, stamped into every metadata block.
    Nonce(u64)
);
number!(
    /// A number of 4 KiB blocks.
    BlockCount(u64)
);

impl Pbn {
    /// The block `count` blocks after this one.
    #[must_use]
    pub fn offset(self, count: u64) -> Self {
        Self(self.0 + count)
    }

    /// Byte offset of this block on the backing store.
    #[must_use]
    pub fn byte_offset(self) -> u64 {
        self.0 * crate::block::BLOCK_SIZE_BYTES
    }
}

impl BlockCount {
    /// The count in bytes.
    #[must_use]
    pub fn to_bytes(self) -> u64 {
        self.0 * crate::block::BLOCK_SIZE_BYTES
    }
}

impl SequenceNumber {
    /// The next sequence number.
    #[must_use]
    pub fn next(self) -> Self {
        Self(self.0 + 1)
    }
}

/// A position inside a journal: the block's sequence number and the entry within that block.
///
/// Replay compares points to decide whether a change is already reflected in a structure, which
/// is what makes recovery idempotent (SPEC I6).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct JournalPoint {
    /// Sequence number of the journal block.
    pub sequence: SequenceNumber,
    /// Index of the entry within that block.
    pub entry: u16,
}

impl fmt::Display for JournalPoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.sequence, self.entry)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn journal_points_order_by_sequence_then_entry() {
        let a = JournalPoint {
            sequence: SequenceNumber(3),
            entry: 9,
        };
        let b = JournalPoint {
            sequence: SequenceNumber(4),
            entry: 0,
        };
        let c = JournalPoint {
            sequence: SequenceNumber(4),
            entry: 1,
        };
        assert!(a < b && b < c);
        assert_eq!(c.to_string(), "4.1");
    }

    #[test]
    fn block_arithmetic_is_in_4k_units() {
        assert_eq!(Pbn(3).byte_offset(), 12288);
        assert_eq!(Pbn(3).offset(2), Pbn(5));
        assert_eq!(BlockCount(2).to_bytes(), 8192);
    }
}
