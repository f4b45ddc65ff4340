//! The recovery journal entries a crash recovery replays: an ordered list that can be cut at
//! a journal point.
//!
//! A full journal holds millions of entries, so a scan keeps them packed ([`PackedEntry`], 24
//! bytes; decoded, an entry takes 56), grouped by the journal block they came from. Replay
//! walks them in journal order and names each entry by its point (the block's sequence and
//! the entry's index in it). Consumers take any [`ReplayEntries`]: the scan's
//! [`JournalEntries`], or a slice of `(point, entry)` pairs (tests, and callers that build
//! entries by hand).
//!
//! Invariants of [`JournalEntries`]: block sequences strictly increase (consecutive for a
//! scan), so every point is unique and in journal order; an entry unpacks to exactly the
//! entry packed.

use uvdo_format::mapping::PBN_MAX;
use uvdo_format::recovery_journal::{ENTRIES_PER_BLOCK, EntryKind, RecoveryJournalEntry};
use uvdo_format::{JournalPoint, Lbn, Mapping, Pbn, SequenceNumber};

/// Entries to replay, in journal order.
pub(crate) trait ReplayEntries {
    /// Every entry at or after `from`, in journal order, with its point.
    fn entries_from(
        &self,
        from: JournalPoint,
    ) -> impl Iterator<Item = (JournalPoint, RecoveryJournalEntry)>;

    /// Every entry, in journal order, with its point.
    fn entries(&self) -> impl Iterator<Item = (JournalPoint, RecoveryJournalEntry)> {
        self.entries_from(JournalPoint::default())
    }

    /// Calls `f` with every entry at or after `from`, in journal order, until it fails: the
    /// loop replay runs over millions of entries, which an implementation may make tighter
    /// than `entries_from`'s iterator.
    ///
    /// # Errors
    ///
    /// The first error `f` returns.
    fn try_for_each_from<E>(
        &self,
        from: JournalPoint,
        mut f: impl FnMut(JournalPoint, RecoveryJournalEntry) -> Result<(), E>,
    ) -> Result<(), E> {
        self.entries_from(from)
            .try_for_each(|(point, entry)| f(point, entry))
    }

    /// The point of the last entry.
    fn last_point(&self) -> Option<JournalPoint>;
}

/// A slice of `(point, entry)` pairs, meant to be in journal order: `entries_from` finds its
/// start by binary search, so on a slice out of order it starts somewhere (callers that take
/// any slice check the order first).
impl ReplayEntries for [(JournalPoint, RecoveryJournalEntry)] {
    fn entries_from(
        &self,
        from: JournalPoint,
    ) -> impl Iterator<Item = (JournalPoint, RecoveryJournalEntry)> {
        let start = self.partition_point(|(point, _)| *point < from);
        self[start..].iter().copied()
    }

    fn last_point(&self) -> Option<JournalPoint> {
        self.last().map(|(point, _)| *point)
    }
}

impl ReplayEntries for Vec<(JournalPoint, RecoveryJournalEntry)> {
    fn entries_from(
        &self,
        from: JournalPoint,
    ) -> impl Iterator<Item = (JournalPoint, RecoveryJournalEntry)> {
        self.as_slice().entries_from(from)
    }

    fn last_point(&self) -> Option<JournalPoint> {
        self.as_slice().last_point()
    }
}

/// The entries of a replayed run of journal blocks, in journal order.
#[derive(Debug, Default)]
pub(crate) struct JournalEntries {
    blocks: Vec<EntryBlock>,
    /// Entries in `blocks`, kept as blocks are pushed or cut.
    len: usize,
}

/// The entries of one journal block, packed.
#[derive(Debug)]
pub(crate) struct EntryBlock {
    sequence: SequenceNumber,
    entries: Vec<PackedEntry>,
}

impl EntryBlock {
    /// The entries of the journal block `sequence`.
    pub(crate) fn pack(sequence: SequenceNumber, entries: &[RecoveryJournalEntry]) -> Self {
        Self {
            sequence,
            entries: entries.iter().map(PackedEntry::pack).collect(),
        }
    }
}

impl JournalEntries {
    /// Appends the entries of the next block of the run.
    ///
    /// # Panics
    ///
    /// If its sequence does not follow the last block's.
    pub(crate) fn push(&mut self, block: EntryBlock) {
        if let Some(last) = self.blocks.last() {
            assert!(
                block.sequence > last.sequence,
                "journal block {} pushed after {}",
                block.sequence,
                last.sequence
            );
        }
        self.len += block.entries.len();
        self.blocks.push(block);
    }

    /// Number of entries.
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// Drops every entry at or after `point` and keeps those before it.
    pub(crate) fn truncate(&mut self, point: JournalPoint) {
        let keep_blocks = self
            .blocks
            .partition_point(|b| b.sequence <= point.sequence);
        self.blocks.truncate(keep_blocks);
        if let Some(last) = self.blocks.last_mut()
            && last.sequence == point.sequence
        {
            last.entries.truncate(usize::from(point.entry));
        }
        self.len = self.blocks.iter().map(|b| b.entries.len()).sum();
    }
}

impl ReplayEntries for JournalEntries {
    fn entries_from(
        &self,
        from: JournalPoint,
    ) -> impl Iterator<Item = (JournalPoint, RecoveryJournalEntry)> {
        let start = self.blocks.partition_point(|b| b.sequence < from.sequence);
        self.blocks[start..].iter().flat_map(move |block| {
            let skip = if block.sequence == from.sequence {
                usize::from(from.entry)
            } else {
                0
            };
            (0_u16..)
                .zip(&block.entries)
                .skip(skip)
                .map(move |(entry, packed)| {
                    let point = JournalPoint {
                        sequence: block.sequence,
                        entry,
                    };
                    (point, packed.unpack())
                })
        })
    }

    fn try_for_each_from<E>(
        &self,
        from: JournalPoint,
        mut f: impl FnMut(JournalPoint, RecoveryJournalEntry) -> Result<(), E>,
    ) -> Result<(), E> {
        let start = self.blocks.partition_point(|b| b.sequence < from.sequence);
        // A block's entries are unpacked together, then handed out: an entry read just after
        // it was unpacked field by field would stall on its wide loads.
        let mut unpacked = Vec::with_capacity(ENTRIES_PER_BLOCK);
        for block in &self.blocks[start..] {
            let first = if block.sequence == from.sequence {
                usize::from(from.entry)
            } else {
                0
            };
            unpacked.clear();
            unpacked.extend(block.entries.iter().skip(first).map(|p| p.unpack()));
            for (entry, unpacked) in (0_u16..).skip(first).zip(&unpacked) {
                let point = JournalPoint {
                    sequence: block.sequence,
                    entry,
                };
                f(point, *unpacked)?;
            }
        }
        Ok(())
    }

    fn last_point(&self) -> Option<JournalPoint> {
        let block = self.blocks.iter().rev().find(|b| !b.entries.is_empty())?;
        let entry = u16::try_from(block.entries.len() - 1).expect("at most 167 entries");
        Some(JournalPoint {
            sequence: block.sequence,
            entry,
        })
    }
}

/// A [`RecoveryJournalEntry`] in three words, 24 bytes (decoded, an entry takes 56), for
/// memory only (never written):
///
/// ```text
/// word  bits    field
///    0  0..40   lbn
///    0  40..50  slot
///    0  50      kind (1 = page allocation)
///    0  51..57  new mapping's code: state (0 unmapped, 1 zero, 2 data, 3 compressed)
///               | fragment slot << 2
///    0  57..63  old mapping's code
///    1  0..36   page PBN
///    1  36..64  new mapping's PBN, bits 0..28
///    2  0..8    new mapping's PBN, bits 28..36
///    2  8..44   old mapping's PBN
/// ```
///
/// Every field of an entry fits (a decoded entry has an LBN below 2^40, a slot below 812, PBNs
/// below 2^36 and fragment slots below 14; `pack` asserts it), so unpacking gives it back.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct PackedEntry([u64; 3]);

const LBN_BITS: u32 = 40;
const SLOT_BITS: u32 = 10;
const KIND_SHIFT: u32 = LBN_BITS + SLOT_BITS;
const NEW_CODE_SHIFT: u32 = KIND_SHIFT + 1;
const OLD_CODE_SHIFT: u32 = NEW_CODE_SHIFT + CODE_BITS;
const CODE_BITS: u32 = 6;
const PBN_BITS: u32 = 36;
/// The new mapping's PBN bits that fit in word 1, after the page.
const NEW_LOW_BITS: u32 = 64 - PBN_BITS;
const OLD_PBN_SHIFT: u32 = PBN_BITS - NEW_LOW_BITS;

const _: () = assert!(OLD_CODE_SHIFT + CODE_BITS <= 64);
const _: () = assert!(OLD_PBN_SHIFT + PBN_BITS <= 64);
const _: () = assert!(PBN_MAX < 1 << PBN_BITS);

/// The low `bits` bits of `value`.
const fn low(value: u64, bits: u32) -> u64 {
    value & ((1 << bits) - 1)
}

impl PackedEntry {
    #[inline]
    fn pack(entry: &RecoveryJournalEntry) -> Self {
        assert!(
            entry.lbn.0 < 1 << LBN_BITS
                && entry.slot < 1 << SLOT_BITS
                && entry.page.0 < 1 << PBN_BITS,
            "entry fields beyond their width: {entry:?}"
        );
        let kind = match entry.kind {
            EntryKind::DataRemap => 0,
            EntryKind::PageAllocation => 1,
        };
        let (new_code, new_pbn) = pack_mapping(entry.new);
        let (old_code, old_pbn) = pack_mapping(entry.old);
        Self([
            entry.lbn.0
                | (u64::from(entry.slot) << LBN_BITS)
                | (kind << KIND_SHIFT)
                | (new_code << NEW_CODE_SHIFT)
                | (old_code << OLD_CODE_SHIFT),
            entry.page.0 | (low(new_pbn, NEW_LOW_BITS) << PBN_BITS),
            (new_pbn >> NEW_LOW_BITS) | (old_pbn << OLD_PBN_SHIFT),
        ])
    }

    #[inline]
    fn unpack(self) -> RecoveryJournalEntry {
        let [first, second, third] = self.0;
        let kind = if (first >> KIND_SHIFT) & 1 == 1 {
            EntryKind::PageAllocation
        } else {
            EntryKind::DataRemap
        };
        let slot = u16::try_from(low(first >> LBN_BITS, SLOT_BITS)).expect("10 bits");
        let new_pbn = (second >> PBN_BITS) | (low(third, OLD_PBN_SHIFT) << NEW_LOW_BITS);
        RecoveryJournalEntry {
            kind,
            slot,
            page: Pbn(low(second, PBN_BITS)),
            new: unpack_mapping(low(first >> NEW_CODE_SHIFT, CODE_BITS), new_pbn),
            old: unpack_mapping(
                low(first >> OLD_CODE_SHIFT, CODE_BITS),
                third >> OLD_PBN_SHIFT,
            ),
            lbn: Lbn(low(first, LBN_BITS)),
        }
    }
}

/// A mapping's code (state | fragment slot << 2) and PBN (0 when it has none).
#[inline]
fn pack_mapping(mapping: Mapping) -> (u64, u64) {
    let fits = |pbn: Pbn| {
        assert!(pbn.0 < 1 << PBN_BITS, "PBN {pbn} beyond 36 bits");
        pbn.0
    };
    match mapping {
        Mapping::Unmapped => (0, 0),
        Mapping::Zero => (1, 0),
        Mapping::Data(pbn) => (2, fits(pbn)),
        Mapping::Compressed { pbn, slot } => {
            assert!(slot < 16, "fragment slot {slot} beyond 4 bits");
            (3 | (u64::from(slot) << 2), fits(pbn))
        }
    }
}

#[inline]
fn unpack_mapping(code: u64, pbn: u64) -> Mapping {
    match code & 3 {
        0 => Mapping::Unmapped,
        1 => Mapping::Zero,
        2 => Mapping::Data(Pbn(pbn)),
        _ => Mapping::Compressed {
            pbn: Pbn(pbn),
            slot: u8::try_from(code >> 2).expect("4 bits"),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::journal::remap_entry;
    use proptest::prelude::*;
    use uvdo_format::block_map_page::LBN_LIMIT;
    use uvdo_format::mapping::{COMPRESSED_SLOTS, PBN_MAX};

    fn entries(lbns: std::ops::Range<u64>) -> Vec<RecoveryJournalEntry> {
        lbns.map(|lbn| {
            let slot = u16::try_from(lbn % 812).unwrap();
            remap_entry(
                Lbn(lbn),
                Pbn(500),
                slot,
                Mapping::Data(Pbn(1000 + lbn)),
                Mapping::Unmapped,
            )
        })
        .collect()
    }

    fn point(sequence: u64, entry: u16) -> JournalPoint {
        JournalPoint {
            sequence: SequenceNumber(sequence),
            entry,
        }
    }

    /// Blocks 7, 8 and 9 with 4, 0 and 3 entries.
    fn sample() -> JournalEntries {
        let mut out = JournalEntries::default();
        out.push(EntryBlock::pack(SequenceNumber(7), &entries(0..4)));
        out.push(EntryBlock::pack(SequenceNumber(8), &entries(4..4)));
        out.push(EntryBlock::pack(SequenceNumber(9), &entries(4..7)));
        out
    }

    fn pairs_of(entries: &JournalEntries) -> Vec<(JournalPoint, RecoveryJournalEntry)> {
        entries.entries().collect()
    }

    fn lbns(it: impl Iterator<Item = (JournalPoint, RecoveryJournalEntry)>) -> Vec<u64> {
        it.map(|(_, e)| e.lbn.0).collect()
    }

    #[test]
    fn entries_come_in_journal_order_with_their_points() {
        let entries = sample();
        let pairs = pairs_of(&entries);
        let points: Vec<JournalPoint> = pairs.iter().map(|(p, _)| *p).collect();
        let expected = [(7, 0), (7, 1), (7, 2), (7, 3), (9, 0), (9, 1), (9, 2)];
        assert_eq!(points, expected.map(|(s, e)| point(s, e)));
        assert_eq!(lbns(entries.entries()), (0..7).collect::<Vec<_>>());
        assert_eq!(entries.len(), 7);
        assert_eq!(entries.last_point(), Some(point(9, 2)));
        assert_eq!(pairs.as_slice().last_point(), Some(point(9, 2)));
    }

    #[test]
    fn entries_from_a_point_agree_with_the_pairs() {
        let entries = sample();
        let pairs = pairs_of(&entries);
        for sequence in 6..11 {
            for entry in 0..5 {
                let from = point(sequence, entry);
                let expected: Vec<u64> = pairs
                    .iter()
                    .filter(|(p, _)| *p >= from)
                    .map(|(_, e)| e.lbn.0)
                    .collect();
                assert_eq!(lbns(entries.entries_from(from)), expected, "from {from}");
                let mut each = Vec::new();
                let done: Result<(), ()> = entries.try_for_each_from(from, |_, e| {
                    each.push(e.lbn.0);
                    Ok(())
                });
                assert_eq!((done, each), (Ok(()), expected.clone()), "each from {from}");
                let slice = pairs.as_slice();
                assert_eq!(
                    lbns(slice.entries_from(from)),
                    expected,
                    "pairs from {from}"
                );
            }
        }
    }

    #[test]
    fn truncating_at_a_point_keeps_exactly_the_entries_before_it() {
        let pairs = pairs_of(&sample());
        for sequence in 6..11 {
            for entry in 0..5 {
                let at = point(sequence, entry);
                let mut cut = sample();
                cut.truncate(at);
                let expected: Vec<u64> = pairs
                    .iter()
                    .filter(|(p, _)| *p < at)
                    .map(|(_, e)| e.lbn.0)
                    .collect();
                assert_eq!(lbns(cut.entries()), expected, "cut at {at}");
                assert_eq!(cut.len(), expected.len());
                let last = pairs.iter().map(|(p, _)| *p).filter(|p| *p < at).max();
                assert_eq!(cut.last_point(), last);
            }
        }
    }

    #[test]
    fn try_for_each_stops_at_the_first_error() {
        let mut seen = Vec::new();
        let result = sample().try_for_each_from(point(7, 2), |p, e| {
            seen.push(e.lbn.0);
            if p == point(9, 0) { Err(p) } else { Ok(()) }
        });
        assert_eq!(result, Err(point(9, 0)));
        assert_eq!(seen, [2, 3, 4]);
    }

    #[test]
    #[should_panic(expected = "pushed after")]
    fn blocks_out_of_order_are_refused() {
        let mut out = JournalEntries::default();
        out.push(EntryBlock::pack(SequenceNumber(9), &entries(0..1)));
        out.push(EntryBlock::pack(SequenceNumber(9), &entries(1..2)));
    }

    #[test]
    fn entries_at_the_edges_of_every_field_unpack_to_themselves() {
        let mappings = [
            Mapping::Unmapped,
            Mapping::Zero,
            Mapping::Data(Pbn(1)),
            Mapping::Data(Pbn(PBN_MAX)),
            Mapping::Compressed {
                pbn: Pbn(PBN_MAX),
                slot: COMPRESSED_SLOTS - 1,
            },
        ];
        for kind in [EntryKind::DataRemap, EntryKind::PageAllocation] {
            for (new, old) in mappings.iter().flat_map(|&n| mappings.map(|o| (n, o))) {
                for (lbn, slot, page) in [(0, 0, 1), (LBN_LIMIT - 1, 811, PBN_MAX)] {
                    let (page, lbn) = (Pbn(page), Lbn(lbn));
                    let entry = RecoveryJournalEntry {
                        kind,
                        slot,
                        page,
                        new,
                        old,
                        lbn,
                    };
                    assert_eq!(PackedEntry::pack(&entry).unpack(), entry);
                }
            }
        }
    }

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
        fn an_entry_unpacks_to_the_entry_packed(
            allocation: bool,
            slot in 0_u16..812,
            page in 1..=PBN_MAX,
            new in any_mapping(),
            old in any_mapping(),
            lbn in 0..LBN_LIMIT,
        ) {
            let kind = if allocation { EntryKind::PageAllocation } else { EntryKind::DataRemap };
            let (page, lbn) = (Pbn(page), Lbn(lbn));
            let entry = RecoveryJournalEntry { kind, slot, page, new, old, lbn };
            prop_assert_eq!(PackedEntry::pack(&entry).unpack(), entry);
        }
    }
}
