//! Twin slots: how a structure rewritten in place survives a torn write.
//!
//! The super block, block map pages, reference count blocks and slab summary blocks are
//! rewritten in place many times. Each lives in two adjacent blocks, slot A at its base PBN and
//! slot B at base + 1. Every write goes to the slot *not* holding the newest valid copy, with a
//! generation (the header's sequence number) one above it. A reader decodes both and keeps the
//! valid copy with the higher generation.
//!
//! Why it survives a crash: a write in flight can only damage the slot it targets, which holds
//! the older copy; the newer copy, the one any durable state depends on, is untouched. A torn
//! target fails its CRC and the reader takes the other slot. This holds without assuming that
//! 512-byte sectors are atomic.
//!
//! # Detection
//!
//! Both slots invalid is corruption (reported with the first slot's error), except when both are
//! simply unwritten, which the caller may treat as "never written". Two valid copies with the
//! same generation cannot come from uvdo's writes; the reader keeps slot A and reports nothing,
//! because both copies passed every check and replay repairs content from the journal.

use crate::error::FormatError;
use crate::numbers::{Pbn, SequenceNumber};

/// Which of the two slots.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TwinSlot {
    /// The slot at the base PBN.
    A,
    /// The slot at base PBN + 1.
    B,
}

impl TwinSlot {
    /// The other slot.
    #[must_use]
    pub fn other(self) -> Self {
        match self {
            Self::A => Self::B,
            Self::B => Self::A,
        }
    }

    /// The PBN of this slot for a twin pair based at `base`.
    #[must_use]
    pub fn pbn(self, base: Pbn) -> Pbn {
        match self {
            Self::A => base,
            Self::B => base.offset(1),
        }
    }
}

/// The copy a reader keeps, and where the next write goes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Chosen<T> {
    /// The decoded value of the newest valid copy.
    pub value: T,
    /// The slot it was read from.
    pub slot: TwinSlot,
    /// Its generation.
    pub generation: SequenceNumber,
    /// Why the other slot was not used, if it failed to decode.
    pub other_error: Option<FormatError>,
}

impl<T> Chosen<T> {
    /// Where and with which generation the next write of this structure goes.
    #[must_use]
    pub fn next_write(&self) -> (TwinSlot, SequenceNumber) {
        (self.slot.other(), self.generation.next())
    }
}

/// Picks the newest valid copy from the decode results of slot A and slot B.
///
/// # Errors
///
/// Slot A's error when neither slot is valid (its problem is `Unwritten` only when both slots
/// are unwritten).
pub fn choose<T>(
    a: Result<(T, SequenceNumber), FormatError>,
    b: Result<(T, SequenceNumber), FormatError>,
) -> Result<Chosen<T>, FormatError> {
    match (a, b) {
        (Ok((va, ga)), Ok((vb, gb))) => Ok(if gb > ga {
            Chosen {
                value: vb,
                slot: TwinSlot::B,
                generation: gb,
                other_error: None,
            }
        } else {
            Chosen {
                value: va,
                slot: TwinSlot::A,
                generation: ga,
                other_error: None,
            }
        }),
        (Ok((value, generation)), Err(e)) => Ok(Chosen {
            value,
            slot: TwinSlot::A,
            generation,
            other_error: Some(e),
        }),
        (Err(e), Ok((value, generation))) => Ok(Chosen {
            value,
            slot: TwinSlot::B,
            generation,
            other_error: Some(e),
        }),
        (Err(ea), Err(eb)) => Err(if ea.is_unwritten() && !eb.is_unwritten() {
            eb
        } else {
            ea
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::Problem;
    use crate::header::BlockType;

    fn err(problem: Problem) -> FormatError {
        FormatError::new(BlockType::SuperBlock, Pbn(1), problem)
    }

    fn ok(v: u32, g: u64) -> Result<(u32, SequenceNumber), FormatError> {
        Ok((v, SequenceNumber(g)))
    }

    #[test]
    fn newest_valid_copy_wins() {
        let c = choose(ok(1, 4), ok(2, 5)).unwrap();
        assert_eq!(
            (c.value, c.slot, c.generation),
            (2, TwinSlot::B, SequenceNumber(5))
        );
        assert_eq!(c.next_write(), (TwinSlot::A, SequenceNumber(6)));
        let c = choose(ok(1, 7), ok(2, 5)).unwrap();
        assert_eq!((c.value, c.slot), (1, TwinSlot::A));
    }

    #[test]
    fn a_torn_slot_falls_back_to_the_other() {
        let torn = err(Problem::Checksum {
            stored: 1,
            computed: 2,
        });
        let c = choose(Err(torn.clone()), ok(2, 5)).unwrap();
        assert_eq!(c.next_write(), (TwinSlot::A, SequenceNumber(6)));
        assert_eq!(
            (c.value, c.slot, c.other_error),
            (2, TwinSlot::B, Some(torn))
        );
    }

    #[test]
    fn both_unwritten_is_unwritten_and_damage_is_reported_over_it() {
        let e = choose::<u32>(Err(err(Problem::Unwritten)), Err(err(Problem::Unwritten)));
        assert!(e.unwrap_err().is_unwritten());
        let bad = err(Problem::WrongNonce {
            expected: 1,
            found: 2,
        });
        let e = choose::<u32>(Err(err(Problem::Unwritten)), Err(bad.clone()));
        assert_eq!(e.unwrap_err(), bad);
    }

    #[test]
    fn slots_are_adjacent() {
        assert_eq!(TwinSlot::A.pbn(Pbn(10)), Pbn(10));
        assert_eq!(TwinSlot::B.pbn(Pbn(10)), Pbn(11));
        assert_eq!(TwinSlot::A.other(), TwinSlot::B);
    }
}
