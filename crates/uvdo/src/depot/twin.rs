//! Where the next write of a twin-slot structure (reference count block, summary block) goes,
//! and reading a twin pair from the store.
//!
//! Invariant: the slot a writer hands out is never the slot holding the newest copy on disk,
//! and each write is one generation above the previous one (FORMAT.md, "Two ways to survive a
//! torn write").

use uvdo_format::block::BLOCK_SIZE;
use uvdo_format::twin::{Chosen, TwinSlot};
use uvdo_format::{Block, Pbn, SequenceNumber};
use uvdo_io::Storage;

use crate::error::VolumeError;

/// The slot and generation of a structure's next write.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct TwinWriter {
    slot: TwinSlot,
    generation: SequenceNumber,
}

impl TwinWriter {
    /// A structure never written: its first write goes to slot A with generation 1.
    pub(super) const FIRST: Self = Self {
        slot: TwinSlot::A,
        generation: SequenceNumber(1),
    };

    /// The writer after the copy a reader chose.
    pub(super) fn after<T>(chosen: &Chosen<T>) -> Self {
        let (slot, generation) = chosen.next_write();
        Self { slot, generation }
    }

    /// Claims the next write of the pair based at `base`: the PBN to write and the generation
    /// to write with. The write after it goes to the other slot.
    pub(super) fn claim(&mut self, base: Pbn) -> (Pbn, SequenceNumber) {
        let claimed = (self.slot.pbn(base), self.generation);
        self.slot = self.slot.other();
        self.generation = self.generation.next();
        claimed
    }

    /// The slot holding the newest copy (the one not handed out next).
    pub(super) fn newest_pbn(&self, base: Pbn) -> Pbn {
        self.slot.other().pbn(base)
    }
}

/// Reads both slots of the twin pair based at `base` in one request.
pub(super) fn read_pair(store: &dyn Storage, base: Pbn) -> Result<(Block, Block), VolumeError> {
    let mut pair = [0_u8; 2 * BLOCK_SIZE];
    store.read_at(base.byte_offset(), &mut pair)?;
    let (a, b) = pair.split_at(BLOCK_SIZE);
    let a: Block = a.try_into().expect("half of two blocks is one block");
    let b: Block = b.try_into().expect("half of two blocks is one block");
    Ok((a, b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_alternate_slots_with_rising_generations() {
        let mut w = TwinWriter::FIRST;
        assert_eq!(w.claim(Pbn(10)), (Pbn(10), SequenceNumber(1)));
        assert_eq!(w.newest_pbn(Pbn(10)), Pbn(10));
        assert_eq!(w.claim(Pbn(10)), (Pbn(11), SequenceNumber(2)));
        assert_eq!(w.claim(Pbn(10)), (Pbn(10), SequenceNumber(3)));
        let chosen = Chosen {
            value: (),
            slot: TwinSlot::B,
            generation: SequenceNumber(7),
            other_error: None,
        };
        let mut w = TwinWriter::after(&chosen);
        assert_eq!(w.newest_pbn(Pbn(4)), Pbn(5));
        assert_eq!(w.claim(Pbn(4)), (Pbn(4), SequenceNumber(8)));
    }
}
