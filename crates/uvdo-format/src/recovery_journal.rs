//! A recovery journal block: the write-ahead log of every remapping, for the block map and the
//! slab depot together.
//!
//! ```text
//! offset size field
//!      0   32 common header: type 4, location = journal_start + sequence mod journal_blocks,
//!             sequence = this block's journal sequence number (>= 1)
//!     32    8 block_map_head         oldest sequence still needed by dirty block map pages
//!     40    8 slab_journal_head      oldest sequence still needed by slab journals
//!     48    8 logical_blocks_used    as of the end of this block
//!     56    8 block_map_data_blocks  as of the end of this block
//!     64    8 epoch                  the volume's recovery count when written
//!     72    2 entry_count            0..=167
//!     74    1 flags                  bit 0: data_check is set; other bits zero
//!     75    1 reserved               zero
//!     76    4 durable_back           sequence - durable_through (1..=journal_blocks);
//!                                    0: not recorded
//!     80 4008 entries                167 slots of 24 bytes; unused slots zero
//!   4088    8 data_check             with flag bit 0: the fold of the names of the data
//!                                    the entries map to; otherwise zero
//!
//! entry (24 bytes, one per remapping)
//!      0    1 kind      1 data remap, 2 block map page allocation
//!      1    1 reserved  zero
//!      2    2 slot      0..812, the slot that changes in `page`
//!      4    5 page      packed Data mapping: the leaf page (remap) or the parent (allocation)
//!      9    5 new       the slot's new mapping (allocation: Data, the child's twin base)
//!     14    5 old       the slot's old mapping (allocation: Unmapped)
//!     19    5 lbn       40-bit LE; for an allocation, the LBN whose write caused it
//! ```
//!
//! The log is circular and write-once: sequence `s` is written exactly once, at position
//! `s mod journal_blocks`, and never rewritten (FORMAT.md, "Logs are write-once").
//!
//! `durable_through` and `data_check` serve the single-flush commit (FORMAT.md, "Recovery
//! journal"): a block written with the data its entries map to, both made durable by one
//! flush, carries a check of that data, which recovery verifies for every block newer than
//! the newest `durable_through` it finds. Blocks of the first layout (both fields zero) read
//! as "data flushed before the block, nothing recorded", which is what they were.
//!
//! # Detection
//!
//! - torn: only the newest block can be torn, and nothing durable depends on it; it fails its
//!   CRC and ends the log.
//! - stale (an earlier lap at the same position): its sequence is lower by a multiple of the
//!   journal length; [`RecoveryJournalBlock::decode_at`] reports `WrongSequence`. A block of an
//!   earlier epoch decodes (it is a well-formed block), and the recovery scan rejects it by
//!   comparing `epoch` with the volume's recovery count.
//! - misdirected: the header location, and the sequence's congruence with the position it was
//!   read from (`WrongSequence`, expecting the nearest congruent sequence).
//! - foreign: the nonce.
//! - garbage in a valid block (an engine bug): every field is range checked, reserved and unused
//!   bytes must be zero, and a data remap's slot must be its LBN's leaf slot.

use std::fmt;

use crate::block::{BLOCK_SIZE, Block, ZERO_BLOCK};
use crate::block_map_page::{ENTRIES_PER_PAGE, ENTRIES_PER_PAGE_U64, LBN_LIMIT};
use crate::error::{FormatError, Problem};
use crate::header::{self, BlockHeader, BlockType, Expected, HEADER_SIZE};
use crate::le::{array, get_u8, get_u16, get_u32, get_u64, put_u8, put_u16, put_u32, put_u64};
use crate::mapping::{Mapping, PACKED_MAPPING_SIZE, PBN_MAX};
use crate::numbers::{BlockCount, Lbn, Nonce, Pbn, SequenceNumber};
use crate::reserved::require_zero;

/// Layout version of recovery journal blocks.
pub const VERSION: u8 = 1;
/// Bytes of one entry.
pub const ENTRY_SIZE: usize = 24;
/// Entries one block holds.
pub const ENTRIES_PER_BLOCK: usize = (BLOCK_SIZE - ENTRIES_OFFSET) / ENTRY_SIZE;
/// [`ENTRIES_PER_BLOCK`] as the width of `entry_count`.
pub const ENTRIES_PER_BLOCK_U16: u16 = 167;

const BLOCK_MAP_HEAD_OFFSET: usize = HEADER_SIZE;
const SLAB_JOURNAL_HEAD_OFFSET: usize = 40;
const LOGICAL_BLOCKS_USED_OFFSET: usize = 48;
const BLOCK_MAP_DATA_BLOCKS_OFFSET: usize = 56;
const EPOCH_OFFSET: usize = 64;
const ENTRY_COUNT_OFFSET: usize = 72;
const FLAGS_OFFSET: usize = 74;
const RESERVED_OFFSET: usize = 75;
const DURABLE_BACK_OFFSET: usize = 76;
const ENTRIES_OFFSET: usize = 80;
const DATA_CHECK_OFFSET: usize = BLOCK_SIZE - 8;

/// Flag bit 0: the block carries a data check.
const FLAG_DATA_CHECK: u8 = 1;

const ENTRY_KIND: usize = 0;
const ENTRY_RESERVED: usize = 1;
const ENTRY_SLOT: usize = 2;
const ENTRY_PAGE: usize = 4;
const ENTRY_NEW: usize = 9;
const ENTRY_OLD: usize = 14;
const ENTRY_LBN: usize = 19;

const KIND_DATA_REMAP: u8 = 1;
const KIND_PAGE_ALLOCATION: u8 = 2;

const _: () = assert!(ENTRY_COUNT_OFFSET + 2 == FLAGS_OFFSET);
const _: () = assert!(DURABLE_BACK_OFFSET + 4 == ENTRIES_OFFSET);
const _: () = assert!(ENTRY_LBN + 5 == ENTRY_SIZE);
const _: () = assert!(ENTRY_OLD + PACKED_MAPPING_SIZE == ENTRY_LBN);
const _: () = assert!(ENTRIES_PER_BLOCK == 167);
const _: () = assert!(ENTRIES_PER_BLOCK == ENTRIES_PER_BLOCK_U16 as usize);
const _: () = assert!(ENTRIES_OFFSET + ENTRIES_PER_BLOCK * ENTRY_SIZE <= DATA_CHECK_OFFSET);

/// One step of a block's data check: folds in the 64-bit name of the data one entry maps to.
/// For a fixed `check`, a bijection of `name`, so changing one block's data changes the fold.
#[must_use]
pub fn fold_data_check(check: u64, name: u64) -> u64 {
    (check.rotate_left(23) ^ name).wrapping_mul(0x9e37_79b9_7f4a_7c15)
}

/// The volume's recovery count when a journal block was written. Recovery increments it, so
/// blocks of an older epoch are recognisably from before the last recovery.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Epoch(pub u64);

impl fmt::Display for Epoch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

/// A circular write-once log on disk: `blocks` blocks from `start`; sequence `s` lives at
/// `start + s mod blocks`. Shared by the recovery journal and every slab journal.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct JournalRegion {
    /// The first block of the log.
    pub start: Pbn,
    /// Its length in blocks (at least 1).
    pub blocks: u64,
}

impl JournalRegion {
    /// Where sequence `sequence` is written.
    ///
    /// # Panics
    ///
    /// If the region is empty.
    #[must_use]
    pub fn pbn_of(self, sequence: SequenceNumber) -> Pbn {
        assert!(self.blocks > 0, "empty journal region");
        self.start.offset(sequence.0 % self.blocks)
    }

    /// True when `pbn` is one of the log's blocks.
    #[must_use]
    pub fn contains(self, pbn: Pbn) -> bool {
        pbn.0 >= self.start.0 && pbn.0 - self.start.0 < self.blocks
    }

    /// The sequence number (>= 1) nearest `found` that may be written at `pbn`.
    ///
    /// # Panics
    ///
    /// If `pbn` is not in the region.
    #[must_use]
    pub fn nearest_sequence_at(self, pbn: Pbn, found: SequenceNumber) -> SequenceNumber {
        assert!(self.contains(pbn), "PBN {pbn} outside the journal region");
        let blocks = u128::from(self.blocks);
        let found = u128::from(found.0);
        let here = found - found % blocks + u128::from(pbn.0 - self.start.0);
        let best = [here.checked_sub(blocks), Some(here), Some(here + blocks)]
            .into_iter()
            .flatten()
            .filter_map(|c| u64::try_from(c).ok().filter(|&c| c >= 1))
            .min_by_key(|&c| u128::from(c).abs_diff(found))
            .expect("one of three consecutive laps holds a sequence in 1..=u64::MAX");
        SequenceNumber(best)
    }

    /// Checks that the block read at `pbn` may hold `found`, and that it is `wanted` if given.
    pub(crate) fn check_sequence(
        self,
        pbn: Pbn,
        found: SequenceNumber,
        wanted: Option<SequenceNumber>,
    ) -> Result<(), Problem> {
        if found.0 == 0 || self.pbn_of(found) != pbn {
            return Err(Problem::WrongSequence {
                expected: self.nearest_sequence_at(pbn, found).0,
                found: found.0,
            });
        }
        match wanted {
            Some(wanted) if wanted != found => Err(Problem::WrongSequence {
                expected: wanted.0,
                found: found.0,
            }),
            _ => Ok(()),
        }
    }

    /// Checks a head (oldest sequence still needed) recorded in the block `sequence`: it must
    /// be at most `sequence` and still on disk, within one log length of it.
    pub(crate) fn check_head(
        self,
        field: &'static str,
        head: SequenceNumber,
        sequence: SequenceNumber,
    ) -> Result<(), Problem> {
        let on_disk = head.0 >= 1 && head <= sequence && sequence.0 - head.0 < self.blocks;
        if on_disk {
            Ok(())
        } else {
            Err(Problem::InvalidField {
                field,
                expected: "1..=sequence and within one journal length of it",
                found: head.0,
            })
        }
    }

    fn assert_holds(self, pbn: Pbn) {
        assert!(
            self.blocks > 0 && self.contains(pbn),
            "PBN {pbn} is not in the journal region {self:?}"
        );
    }
}

/// What a recovery journal entry records.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum EntryKind {
    /// A logical block's mapping changed (write, dedupe, trim, zero).
    DataRemap,
    /// A new tree page was allocated and linked into its parent.
    PageAllocation,
}

/// One remapping: slot `slot` of `page` changes from `old` to `new`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct RecoveryJournalEntry {
    /// Data remap or page allocation.
    pub kind: EntryKind,
    /// The slot in `page`, `0..812`.
    pub slot: u16,
    /// Twin base PBN of the block map page that changes (the leaf, or the parent).
    pub page: Pbn,
    /// The slot's new mapping.
    pub new: Mapping,
    /// The slot's old mapping; its reference is the one to drop.
    pub old: Mapping,
    /// The LBN written (for an allocation, the LBN whose write caused it).
    pub lbn: Lbn,
}

impl RecoveryJournalEntry {
    fn check(&self) -> Result<(), Problem> {
        let invalid = |field, expected, found| {
            Err(Problem::InvalidField {
                field,
                expected,
                found,
            })
        };
        if usize::from(self.slot) >= ENTRIES_PER_PAGE {
            return invalid("entry slot", "below 812", u64::from(self.slot));
        }
        if self.lbn.0 >= LBN_LIMIT {
            return invalid("entry lbn", "below 2^40", self.lbn.0);
        }
        match self.kind {
            EntryKind::DataRemap if self.lbn.0 % ENTRIES_PER_PAGE_U64 != u64::from(self.slot) => {
                invalid(
                    "data remap slot",
                    "the LBN's slot in its leaf (lbn mod 812)",
                    u64::from(self.slot),
                )
            }
            EntryKind::PageAllocation if !matches!(self.new, Mapping::Data(_)) => invalid(
                "allocation new mapping",
                "the new page's PBN",
                self.new.pbn().map_or(0, |p| p.0),
            ),
            EntryKind::PageAllocation if self.old != Mapping::Unmapped => invalid(
                "allocation old mapping",
                "unmapped",
                self.old.pbn().map_or(0, |p| p.0),
            ),
            _ => Ok(()),
        }
    }

    fn encode(&self, out: &mut [u8]) {
        let code = match self.kind {
            EntryKind::DataRemap => KIND_DATA_REMAP,
            EntryKind::PageAllocation => KIND_PAGE_ALLOCATION,
        };
        put_u8(out, ENTRY_KIND, code);
        put_u16(out, ENTRY_SLOT, self.slot);
        put_mapping(out, ENTRY_PAGE, Mapping::Data(self.page));
        put_mapping(out, ENTRY_NEW, self.new);
        put_mapping(out, ENTRY_OLD, self.old);
        put_u32(out, ENTRY_LBN, (self.lbn.0 & 0xffff_ffff) as u32);
        put_u8(
            out,
            ENTRY_LBN + 4,
            u8::try_from(self.lbn.0 >> 32).expect("40-bit LBN"),
        );
    }

    fn decode(bytes: &[u8]) -> Result<Self, Problem> {
        let kind = match get_u8(bytes, ENTRY_KIND) {
            KIND_DATA_REMAP => EntryKind::DataRemap,
            KIND_PAGE_ALLOCATION => EntryKind::PageAllocation,
            code => {
                return Err(Problem::InvalidField {
                    field: "entry kind",
                    expected: "1 (data remap) or 2 (page allocation)",
                    found: u64::from(code),
                });
            }
        };
        let reserved = get_u8(bytes, ENTRY_RESERVED);
        if reserved != 0 {
            return Err(Problem::InvalidField {
                field: "entry reserved",
                expected: "zero",
                found: u64::from(reserved),
            });
        }
        let page = match Mapping::decode(&array(bytes, ENTRY_PAGE))? {
            Mapping::Data(pbn) => pbn,
            other => {
                return Err(Problem::InvalidField {
                    field: "entry page",
                    expected: "the PBN of a block map page",
                    found: other.pbn().map_or(0, |p| p.0),
                });
            }
        };
        let lbn =
            u64::from(get_u32(bytes, ENTRY_LBN)) | (u64::from(get_u8(bytes, ENTRY_LBN + 4)) << 32);
        let entry = Self {
            kind,
            slot: get_u16(bytes, ENTRY_SLOT),
            page,
            new: Mapping::decode(&array(bytes, ENTRY_NEW))?,
            old: Mapping::decode(&array(bytes, ENTRY_OLD))?,
            lbn: Lbn(lbn),
        };
        entry.check()?;
        Ok(entry)
    }
}

fn put_mapping(out: &mut [u8], offset: usize, mapping: Mapping) {
    let packed: &mut [u8; PACKED_MAPPING_SIZE] = (&mut out[offset..offset + PACKED_MAPPING_SIZE])
        .try_into()
        .expect("entry width");
    mapping.encode(packed);
}

/// One block of the recovery journal.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RecoveryJournalBlock {
    /// This block's journal sequence number (>= 1): the header sequence.
    pub sequence: SequenceNumber,
    /// Oldest journal sequence still needed by dirty block map pages.
    pub block_map_head: SequenceNumber,
    /// Oldest journal sequence still needed by slab journals.
    pub slab_journal_head: SequenceNumber,
    /// Logical blocks mapped, as of the end of this block.
    pub logical_blocks_used: BlockCount,
    /// Blocks used by block map tree pages, as of the end of this block.
    pub block_map_data_blocks: BlockCount,
    /// The volume's recovery count when written.
    pub epoch: Epoch,
    /// The newest sequence known durable when this block was written (below `sequence`, at
    /// most one journal length before it); `None` when not recorded.
    pub durable_through: Option<SequenceNumber>,
    /// Set when the block was written together with the data its data remaps map to, one
    /// flush making both durable: the fold ([`fold_data_check`]) of the names of that data,
    /// in entry order. `None` when the data was flushed before the block was written.
    pub data_check: Option<u64>,
    /// The remappings, in journal order; at most [`ENTRIES_PER_BLOCK`].
    pub entries: Vec<RecoveryJournalEntry>,
}

impl RecoveryJournalBlock {
    /// Writes the block at its place in `region` for the volume with `nonce`.
    ///
    /// # Panics
    ///
    /// If the block breaks a rule decode checks (sequence 0, heads out of range, too many
    /// entries, an invalid entry): an engine bug, never written to disk.
    pub fn encode(&self, nonce: Nonce, region: JournalRegion, out: &mut Block) {
        if let Err(problem) = self.check(region) {
            panic!("refusing to write an invalid recovery journal block: {problem}");
        }
        *out = ZERO_BLOCK;
        put_u64(out, BLOCK_MAP_HEAD_OFFSET, self.block_map_head.0);
        put_u64(out, SLAB_JOURNAL_HEAD_OFFSET, self.slab_journal_head.0);
        put_u64(out, LOGICAL_BLOCKS_USED_OFFSET, self.logical_blocks_used.0);
        put_u64(
            out,
            BLOCK_MAP_DATA_BLOCKS_OFFSET,
            self.block_map_data_blocks.0,
        );
        put_u64(out, EPOCH_OFFSET, self.epoch.0);
        let count = u16::try_from(self.entries.len()).expect("checked against 167");
        put_u16(out, ENTRY_COUNT_OFFSET, count);
        if let Some(durable) = self.durable_through {
            let back = u32::try_from(self.sequence.0 - durable.0).expect("checked: one lap");
            put_u32(out, DURABLE_BACK_OFFSET, back);
        }
        if let Some(check) = self.data_check {
            put_u8(out, FLAGS_OFFSET, FLAG_DATA_CHECK);
            put_u64(out, DATA_CHECK_OFFSET, check);
        }
        for (i, entry) in self.entries.iter().enumerate() {
            let at = ENTRIES_OFFSET + i * ENTRY_SIZE;
            entry.encode(&mut out[at..at + ENTRY_SIZE]);
        }
        header::seal(
            out,
            &BlockHeader {
                block_type: BlockType::RecoveryJournal,
                version: VERSION,
                nonce,
                location: region.pbn_of(self.sequence),
                sequence: self.sequence,
            },
        );
    }

    /// Reads the block at `expected.pbn` of `region`, whatever lap of the log it is from.
    ///
    /// # Errors
    ///
    /// A header problem; `WrongSequence` when the sequence is 0 or does not belong at this
    /// position (expected: the nearest sequence that does); `InvalidField` for any field out of
    /// range, nonzero reserved or unused bytes.
    ///
    /// # Panics
    ///
    /// If `expected.pbn` is not in `region`: the caller's arguments, not the block's bytes.
    pub fn decode(
        block: &Block,
        expected: Expected,
        region: JournalRegion,
    ) -> Result<Self, FormatError> {
        Self::decode_checked(block, expected, region, None)
    }

    /// As [`RecoveryJournalBlock::decode`], and the block must be sequence `sequence`: a block
    /// of an earlier or later lap is `WrongSequence`.
    ///
    /// # Errors
    ///
    /// As [`RecoveryJournalBlock::decode`], plus `WrongSequence { expected: sequence, .. }`.
    ///
    /// # Panics
    ///
    /// If `sequence` is not written at `expected.pbn`.
    pub fn decode_at(
        block: &Block,
        expected: Expected,
        region: JournalRegion,
        sequence: SequenceNumber,
    ) -> Result<Self, FormatError> {
        assert_eq!(
            region.pbn_of(sequence),
            expected.pbn,
            "sequence {sequence} is not written at PBN {}",
            expected.pbn
        );
        Self::decode_checked(block, expected, region, Some(sequence))
    }

    fn decode_checked(
        block: &Block,
        expected: Expected,
        region: JournalRegion,
        wanted: Option<SequenceNumber>,
    ) -> Result<Self, FormatError> {
        region.assert_holds(expected.pbn);
        let header = header::open(block, BlockType::RecoveryJournal, VERSION, expected)?;
        let fail = |problem| FormatError::new(BlockType::RecoveryJournal, expected.pbn, problem);
        region
            .check_sequence(expected.pbn, header.sequence, wanted)
            .map_err(fail)?;
        Self::decode_payload(block, header.sequence)
            .and_then(|decoded| decoded.check_fields(region).map(|()| decoded))
            .map_err(fail)
    }

    fn decode_payload(block: &Block, sequence: SequenceNumber) -> Result<Self, Problem> {
        let flags = get_u8(block, FLAGS_OFFSET);
        if flags & !FLAG_DATA_CHECK != 0 {
            return Err(Problem::InvalidField {
                field: "flags",
                expected: "only bit 0",
                found: u64::from(flags),
            });
        }
        require_zero(&block[RESERVED_OFFSET..DURABLE_BACK_OFFSET], "reserved")?;
        let back = u64::from(get_u32(block, DURABLE_BACK_OFFSET));
        let durable_through = match back {
            0 => None,
            back if back <= sequence.0 => Some(SequenceNumber(sequence.0 - back)),
            back => {
                return Err(Problem::InvalidField {
                    field: "durable back",
                    expected: "at most the sequence",
                    found: back,
                });
            }
        };
        let count = get_u16(block, ENTRY_COUNT_OFFSET);
        if count > ENTRIES_PER_BLOCK_U16 {
            return Err(Problem::InvalidField {
                field: "entry count",
                expected: "at most 167",
                found: u64::from(count),
            });
        }
        let used_end = ENTRIES_OFFSET + usize::from(count) * ENTRY_SIZE;
        require_zero(&block[used_end..DATA_CHECK_OFFSET], "unused entry space")?;
        let data_check = if flags & FLAG_DATA_CHECK == 0 {
            require_zero(&block[DATA_CHECK_OFFSET..], "data check without its flag")?;
            None
        } else {
            Some(get_u64(block, DATA_CHECK_OFFSET))
        };
        let mut entries = Vec::with_capacity(usize::from(count));
        for bytes in block[ENTRIES_OFFSET..used_end].chunks_exact(ENTRY_SIZE) {
            entries.push(RecoveryJournalEntry::decode(bytes)?);
        }
        Ok(Self {
            sequence,
            block_map_head: SequenceNumber(get_u64(block, BLOCK_MAP_HEAD_OFFSET)),
            slab_journal_head: SequenceNumber(get_u64(block, SLAB_JOURNAL_HEAD_OFFSET)),
            logical_blocks_used: BlockCount(get_u64(block, LOGICAL_BLOCKS_USED_OFFSET)),
            block_map_data_blocks: BlockCount(get_u64(block, BLOCK_MAP_DATA_BLOCKS_OFFSET)),
            epoch: Epoch(get_u64(block, EPOCH_OFFSET)),
            durable_through,
            data_check,
            entries,
        })
    }

    /// The rules both encode and decode enforce, so the two stay paired.
    fn check(&self, region: JournalRegion) -> Result<(), Problem> {
        self.check_fields(region)?;
        self.entries
            .iter()
            .try_for_each(RecoveryJournalEntry::check)
    }

    /// [`Self::check`] but for the entries, which decode checks one by one as it reads them.
    fn check_fields(&self, region: JournalRegion) -> Result<(), Problem> {
        if self.sequence.0 == 0 {
            return Err(Problem::WrongSequence {
                expected: region.blocks,
                found: 0,
            });
        }
        region.check_head("block map head", self.block_map_head, self.sequence)?;
        region.check_head("slab journal head", self.slab_journal_head, self.sequence)?;
        if let Some(durable) = self.durable_through {
            let back = self.sequence.0.saturating_sub(durable.0);
            if back == 0 || back > region.blocks {
                return Err(Problem::InvalidField {
                    field: "durable back",
                    expected: "1..=journal blocks",
                    found: back,
                });
            }
        }
        if self.logical_blocks_used.0 > LBN_LIMIT {
            return Err(Problem::InvalidField {
                field: "logical blocks used",
                expected: "at most 2^40",
                found: self.logical_blocks_used.0,
            });
        }
        if self.block_map_data_blocks.0 > PBN_MAX {
            return Err(Problem::InvalidField {
                field: "block map data blocks",
                expected: "below 2^36",
                found: self.block_map_data_blocks.0,
            });
        }
        if self.entries.len() > ENTRIES_PER_BLOCK {
            return Err(Problem::InvalidField {
                field: "entry count",
                expected: "at most 167",
                found: self.entries.len() as u64,
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::damage::{assert_detects_damage, reseal};
    use crate::le::all_zero;
    use crate::mapping::COMPRESSED_SLOTS;
    use proptest::prelude::*;

    const NONCE: Nonce = Nonce(0xdead_beef_0bad_cafe);
    const REGION: JournalRegion = JournalRegion {
        start: Pbn(100),
        blocks: 64,
    };

    fn expected_for(sequence: u64) -> Expected {
        Expected::new(NONCE, REGION.pbn_of(SequenceNumber(sequence)))
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

    fn any_entry() -> impl Strategy<Value = RecoveryJournalEntry> {
        let remap = (0..LBN_LIMIT, 1..=PBN_MAX, any_mapping(), any_mapping()).prop_map(
            |(lbn, page, new, old)| RecoveryJournalEntry {
                kind: EntryKind::DataRemap,
                slot: u16::try_from(lbn % ENTRIES_PER_PAGE_U64).unwrap(),
                page: Pbn(page),
                new,
                old,
                lbn: Lbn(lbn),
            },
        );
        let allocation = (0..LBN_LIMIT, 0_u16..812, 1..=PBN_MAX, 1..=PBN_MAX).prop_map(
            |(lbn, slot, page, child)| RecoveryJournalEntry {
                kind: EntryKind::PageAllocation,
                slot,
                page: Pbn(page),
                new: Mapping::Data(Pbn(child)),
                old: Mapping::Unmapped,
                lbn: Lbn(lbn),
            },
        );
        prop_oneof![3 => remap, 1 => allocation]
    }

    fn any_block() -> impl Strategy<Value = RecoveryJournalBlock> {
        (1..u64::MAX, 0..REGION.blocks, 0..REGION.blocks).prop_flat_map(|(seq, back_a, back_b)| {
            let head = move |back: u64| SequenceNumber(seq - back.min(seq - 1));
            (
                0..=LBN_LIMIT,
                0..=PBN_MAX,
                any::<u64>(),
                proptest::option::of(1..=REGION.blocks),
                proptest::option::of(any::<u64>()),
                proptest::collection::vec(any_entry(), 0..=ENTRIES_PER_BLOCK),
            )
                .prop_map(
                    move |(used, tree, epoch, durable_back, data_check, entries)| {
                        RecoveryJournalBlock {
                            sequence: SequenceNumber(seq),
                            block_map_head: head(back_a),
                            slab_journal_head: head(back_b),
                            logical_blocks_used: BlockCount(used),
                            block_map_data_blocks: BlockCount(tree),
                            epoch: Epoch(epoch),
                            durable_through: durable_back
                                .filter(|&back| back < seq)
                                .map(|back| SequenceNumber(seq - back)),
                            data_check,
                            entries,
                        }
                    },
                )
        })
    }

    fn encoded(block: &RecoveryJournalBlock) -> Block {
        let mut out = [0x3c; BLOCK_SIZE];
        block.encode(NONCE, REGION, &mut out);
        out
    }

    fn decode(block: &Block, sequence: u64) -> Result<RecoveryJournalBlock, FormatError> {
        RecoveryJournalBlock::decode(block, expected_for(sequence), REGION)
    }

    fn sample(sequence: u64, entries: usize) -> RecoveryJournalBlock {
        let entry = |i: u64| RecoveryJournalEntry {
            kind: EntryKind::DataRemap,
            slot: u16::try_from((1000 + i) % 812).unwrap(),
            page: Pbn(5000 + i),
            new: Mapping::Data(Pbn(9000 + i)),
            old: Mapping::Compressed {
                pbn: Pbn(7),
                slot: 2,
            },
            lbn: Lbn(1000 + i),
        };
        let mut block = RecoveryJournalBlock {
            sequence: SequenceNumber(sequence),
            block_map_head: SequenceNumber(sequence.saturating_sub(3).max(1)),
            slab_journal_head: SequenceNumber(sequence.saturating_sub(2).max(1)),
            logical_blocks_used: BlockCount(300 + sequence),
            block_map_data_blocks: BlockCount(12),
            epoch: Epoch(2),
            durable_through: None,
            data_check: None,
            entries: (0..entries as u64).map(entry).collect(),
        };
        block.entries.push(RecoveryJournalEntry {
            kind: EntryKind::PageAllocation,
            slot: 811,
            page: Pbn(333),
            new: Mapping::Data(Pbn(444)),
            old: Mapping::Unmapped,
            lbn: Lbn(LBN_LIMIT - 1),
        });
        block
    }

    fn problem_after(patch: impl FnOnce(&mut Block)) -> Problem {
        let mut block = encoded(&sample(70, 3));
        patch(&mut block);
        reseal(&mut block);
        decode(&block, 70).unwrap_err().problem
    }

    type Patch = fn(&mut Block);

    fn field_of(problem: &Problem) -> &'static str {
        match problem {
            Problem::InvalidField { field, .. } => field,
            other => panic!("expected an invalid field, got {other}"),
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(128))]

        #[test]
        fn round_trips(journal in any_block()) {
            let block = encoded(&journal);
            let seq = journal.sequence;
            let exp = Expected::new(NONCE, REGION.pbn_of(seq));
            prop_assert_eq!(
                RecoveryJournalBlock::decode_at(&block, exp, REGION, seq),
                Ok(journal)
            );
        }

        #[test]
        fn arbitrary_blocks_decode_without_panic(
            bytes in proptest::collection::vec(any::<u8>(), BLOCK_SIZE),
            sequence in 1_u64..1000,
        ) {
            let block: Block = bytes.try_into().unwrap();
            prop_assert!(decode(&block, sequence).is_err());
        }

        #[test]
        fn mutated_blocks_decode_without_panic_and_accepted_ones_are_canonical(
            journal in any_block(),
            edits in proptest::collection::vec((HEADER_SIZE..BLOCK_SIZE, any::<u8>()), 1..6),
        ) {
            let mut block = encoded(&journal);
            for (offset, value) in edits {
                block[offset] = value;
            }
            reseal(&mut block);
            if let Ok(decoded) = decode(&block, journal.sequence.0) {
                prop_assert_eq!(encoded(&decoded), block);
            }
        }

        #[test]
        fn nearest_sequence_is_congruent_and_nearest(
            found in any::<u64>(),
            position in 0..REGION.blocks,
        ) {
            let pbn = REGION.start.offset(position);
            let nearest = REGION.nearest_sequence_at(pbn, SequenceNumber(found));
            prop_assert!(nearest.0 >= 1);
            prop_assert_eq!(REGION.pbn_of(nearest), pbn);
            prop_assert!(nearest.0.abs_diff(found) <= REGION.blocks);
        }
    }

    #[test]
    fn damage_is_detected() {
        // The older image is the previous lap's block at the same position.
        let older = encoded(&sample(6, 40));
        let newer = encoded(&sample(6 + REGION.blocks, 2));
        let decode_any = |b: &Block, e| RecoveryJournalBlock::decode(b, e, REGION);
        assert_detects_damage(decode_any, &older, &newer, expected_for(6));
    }

    #[test]
    fn layout_matches_the_diagram() {
        let journal = sample(70, 0);
        let block = encoded(&journal);
        assert_eq!(block[16..24], 106_u64.to_le_bytes());
        assert_eq!(block[24..32], 70_u64.to_le_bytes());
        assert_eq!(block[32..40], 67_u64.to_le_bytes());
        assert_eq!(block[40..48], 68_u64.to_le_bytes());
        assert_eq!(block[48..56], 370_u64.to_le_bytes());
        assert_eq!(block[56..64], 12_u64.to_le_bytes());
        assert_eq!(block[64..72], 2_u64.to_le_bytes());
        assert_eq!(block[72..74], [1, 0]);
        let entry = &block[80..104];
        assert_eq!(entry[..4], [2, 0, 0x2b, 0x03]);
        assert_eq!(entry[4..9], [0x10, 0x4d, 0x01, 0, 0]);
        assert_eq!(entry[9..14], [0x10, 0xbc, 0x01, 0, 0]);
        assert_eq!(entry[14..19], [0; 5]);
        assert_eq!(entry[19..24], [0xff; 5]);
        assert!(all_zero(&block[74..80]));
        assert!(all_zero(&block[104..]));
    }

    #[test]
    fn durable_through_and_data_check_sit_where_the_diagram_says() {
        let mut journal = sample(70, 0);
        journal.durable_through = Some(SequenceNumber(66));
        journal.data_check = Some(0x0102_0304_0506_0708);
        let block = encoded(&journal);
        assert_eq!(block[74..80], [1, 0, 4, 0, 0, 0]);
        assert_eq!(block[4088..], 0x0102_0304_0506_0708_u64.to_le_bytes());
        assert_eq!(decode(&block, 70), Ok(journal));
    }

    #[test]
    fn a_changed_name_changes_the_data_check() {
        let names = [3_u64, 0, u64::MAX, 0x5eed];
        let fold = |names: &[u64]| names.iter().fold(0, |c, &n| fold_data_check(c, n));
        let whole = fold(&names);
        for i in 0..names.len() {
            let mut changed = names;
            changed[i] ^= 1 << (i * 7);
            assert_ne!(fold(&changed), whole, "name {i}");
        }
        let mut swapped = names;
        swapped.swap(0, 1);
        assert_ne!(fold(&swapped), whole, "order matters");
    }

    #[test]
    fn stale_and_future_laps_are_wrong_sequence() {
        let block = encoded(&sample(70, 3));
        let at = |seq: u64| {
            RecoveryJournalBlock::decode_at(&block, expected_for(seq), REGION, SequenceNumber(seq))
        };
        assert!(at(70).is_ok());
        for seq in [6, 134] {
            assert_eq!(
                at(seq).unwrap_err().problem,
                Problem::WrongSequence {
                    expected: seq,
                    found: 70
                }
            );
        }
    }

    #[test]
    fn incongruent_sequence_reports_the_nearest_congruent_one() {
        // Position 6 holds 6, 70, 134...; a block claiming 71 there is misplaced.
        let problem = problem_after(|b| put_u64(b, 24, 71));
        assert_eq!(
            problem,
            Problem::WrongSequence {
                expected: 70,
                found: 71
            }
        );
        let problem = problem_after(|b| put_u64(b, 24, 0));
        assert!(matches!(
            problem,
            Problem::WrongSequence { expected: 6, .. }
        ));
    }

    #[test]
    fn each_header_field_check_reports_its_field() {
        let cases: [(&str, Patch); 13] = [
            ("flags", |b| put_u8(b, 74, 2)),
            ("reserved", |b| put_u8(b, 75, 1)),
            ("durable back", |b| put_u32(b, 76, 71)),
            ("durable back", |b| put_u32(b, 76, 65)),
            ("data check without its flag", |b| {
                put_u8(b, BLOCK_SIZE - 8, 1);
            }),
            ("block map head", |b| put_u64(b, 32, 71)),
            ("block map head", |b| put_u64(b, 32, 6)),
            ("slab journal head", |b| put_u64(b, 40, 0)),
            ("logical blocks used", |b| put_u64(b, 48, LBN_LIMIT + 1)),
            ("block map data blocks", |b| put_u64(b, 56, PBN_MAX + 1)),
            ("entry count", |b| put_u16(b, 72, 168)),
            ("unused entry space", |b| put_u8(b, 80 + 4 * 24, 1)),
            ("unused entry space", |b| put_u8(b, BLOCK_SIZE - 9, 1)),
        ];
        for (field, patch) in cases {
            assert_eq!(field_of(&problem_after(patch)), field);
        }
    }

    #[test]
    fn each_entry_field_check_reports_its_field() {
        let cases: [(&str, Patch); 10] = [
            ("entry kind", |b| put_u8(b, 80, 0)),
            ("entry kind", |b| put_u8(b, 80, 3)),
            ("entry reserved", |b| put_u8(b, 81, 9)),
            ("entry slot", |b| put_u16(b, 80 + 72 + 2, 812)),
            ("data remap slot", |b| put_u16(b, 82, 5)),
            ("entry page", |b| b[84..89].copy_from_slice(&[0; 5])),
            ("entry page", |b| {
                b[84..89].copy_from_slice(&[0x10, 0, 0, 0, 0]);
            }),
            ("unmapped entry PBN", |b| {
                b[89..94].copy_from_slice(&[0, 1, 0, 0, 0]);
            }),
            ("allocation new mapping", |b| b[152 + 9] = 0x20),
            ("allocation old mapping", |b| b[152 + 14] = 0x10),
        ];
        for (field, patch) in cases {
            assert_eq!(field_of(&problem_after(patch)), field, "{field}");
        }
    }

    #[test]
    #[should_panic(expected = "invalid recovery journal block")]
    fn encoding_a_head_past_the_sequence_panics() {
        let mut journal = sample(10, 1);
        journal.slab_journal_head = SequenceNumber(11);
        let _ = encoded(&journal);
    }
}
