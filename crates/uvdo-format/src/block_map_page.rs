//! A page of the block map: one node of a radix tree that maps logical blocks to data.
//!
//! ```text
//! offset size field
//!      0   32 common header: type 3, location = this twin slot's own PBN,
//!             sequence = the page's write generation
//!     32    1 level      0 = leaf .. 4 = root
//!     33    3 reserved   zero
//!     36 4060 entries    812 packed mappings of 5 bytes (mapping.rs)
//! ```
//!
//! A leaf (level 0) maps 812 consecutive LBNs of its tree; any mapping is valid there. An
//! interior page (levels 1 to 4) maps child pages: each entry is `Unmapped` (child not yet
//! allocated) or `Data(pbn)` with the PBN of the child's twin base. `Zero` and `Compressed`
//! cannot name a page and are refused in interior pages.
//!
//! Pages are twins (`twin.rs`): slot A at the base PBN, slot B at base + 1, and the header
//! sequence is the generation the twin reader compares. Any generation is valid on its own.
//!
//! In memory a page keeps its entries packed exactly as on disk ([`PackedEntries`], 4060 bytes
//! on the heap), so a page in the engine's cache costs about the 4 KiB its cache budget counts.
//! Invariant: every 5-byte entry of a `PackedEntries` decodes (decode checks them all, `set`
//! writes only through `Mapping::encode`), so reading a slot cannot fail.
//!
//! [`TreeAddress`] is the pure arithmetic that places an LBN in the forest (FORMAT.md, "The block
//! map tree").
//!
//! # Detection
//!
//! - torn: the CRC covers the whole page; the tear can only hit the older twin slot, and the
//!   reader keeps the other one.
//! - stale: a lost write leaves the older generation in its slot; the twin reader prefers the
//!   higher generation, and journal replay from `block_map_head` re-applies what the lost write
//!   held.
//! - misdirected: the header location is the slot's own PBN, so a page written to the wrong
//!   block, or a parent entry pointing at the wrong pair, fails `WrongLocation`. The caller
//!   passes the level the parent implies, so a pointer to a page of another level (which could
//!   make the tree walk cycle) fails `InvalidField { field: "level" }`.
//! - foreign: the nonce.

use crate::block::{BLOCK_SIZE, Block, ZERO_BLOCK};
use crate::error::{FormatError, Problem};
use crate::header::{self, BlockHeader, BlockType, Expected, HEADER_SIZE};
use crate::le::{get_u8, put_u8};
use crate::mapping::{Mapping, PACKED_MAPPING_SIZE};
use crate::numbers::{Lbn, Nonce, Pbn, SequenceNumber};
use crate::reserved::require_zero;

/// Layout version of block map pages.
pub const VERSION: u8 = 1;
/// Entries (slots) in every page.
pub const ENTRIES_PER_PAGE: usize = 812;
/// [`ENTRIES_PER_PAGE`] as a number for LBN arithmetic.
pub const ENTRIES_PER_PAGE_U64: u64 = 812;
/// Levels in each tree: 0 (leaves) to `TREE_HEIGHT - 1` (the root).
pub const TREE_HEIGHT: u8 = 5;
/// The level of leaf pages.
pub const LEAF_LEVEL: u8 = 0;
/// The level of root pages.
pub const ROOT_LEVEL: u8 = TREE_HEIGHT - 1;
/// LBNs are 40 bits on disk: every LBN is below this.
pub const LBN_LIMIT: u64 = 1 << 40;

const LEVEL_OFFSET: usize = HEADER_SIZE;
const RESERVED_OFFSET: usize = 33;
const ENTRIES_OFFSET: usize = 36;

const _: () = assert!(LEVEL_OFFSET + 1 == RESERVED_OFFSET);
/// Bytes of a page's packed entries: 812 x 5 = 4060.
pub const PACKED_ENTRIES_SIZE: usize = ENTRIES_PER_PAGE * PACKED_MAPPING_SIZE;

const _: () = assert!(ENTRIES_OFFSET + PACKED_ENTRIES_SIZE == BLOCK_SIZE);
const _: () = assert!(ENTRIES_PER_PAGE as u64 == ENTRIES_PER_PAGE_U64);
// One tree (root_count = 1) must reach every LBN: 812 slots in each of the 5 levels.
const _: () = assert!(
    ENTRIES_PER_PAGE_U64.pow(TREE_HEIGHT as u32) >= LBN_LIMIT,
    "a tree of height 5 addresses every 40-bit LBN"
);

/// One block map page, leaf or interior.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BlockMapPage {
    /// 0 for a leaf, up to [`ROOT_LEVEL`] for a root.
    pub level: u8,
    /// Write generation: the header sequence the twin reader compares.
    pub generation: SequenceNumber,
    /// The slots; in interior pages only `Unmapped` or `Data(child twin base)`.
    pub entries: PackedEntries,
}

/// The 812 slots of a page, packed as on disk: 5 bytes each, all zeros for all `Unmapped`.
///
/// Every entry always decodes (module invariant), so [`get`](Self::get) cannot fail. Whether
/// the entry kinds suit the page's level is the page's rule, checked by encode and decode.
#[derive(Clone, PartialEq, Eq)]
pub struct PackedEntries(Box<[u8; PACKED_ENTRIES_SIZE]>);

impl PackedEntries {
    /// Every slot unmapped.
    #[must_use]
    pub fn new() -> Self {
        Self(Box::new([0; PACKED_ENTRIES_SIZE]))
    }

    /// Copies the entries of a page's bytes, refusing the first one that does not decode.
    fn decode(bytes: &[u8; PACKED_ENTRIES_SIZE]) -> Result<Self, Problem> {
        for packed in bytes.as_chunks::<PACKED_MAPPING_SIZE>().0 {
            Mapping::decode(packed)?;
        }
        Ok(Self(Box::new(*bytes)))
    }

    /// The packed bytes, as they go to disk.
    #[must_use]
    pub fn as_bytes(&self) -> &[u8; PACKED_ENTRIES_SIZE] {
        &self.0
    }

    /// The mapping in `slot`.
    ///
    /// # Panics
    ///
    /// If `slot` is not below [`ENTRIES_PER_PAGE`].
    #[must_use]
    #[inline]
    pub fn get(&self, slot: usize) -> Mapping {
        unpack(self.packed(slot))
    }

    /// Sets `slot` to `mapping` and returns the mapping it held.
    ///
    /// # Panics
    ///
    /// If `slot` is not below [`ENTRIES_PER_PAGE`], or `mapping` cannot be packed (see
    /// `Mapping::encode`): engine bugs.
    #[inline]
    pub fn set(&mut self, slot: usize, mapping: Mapping) -> Mapping {
        let at = slot * PACKED_MAPPING_SIZE;
        let packed: &mut [u8; PACKED_MAPPING_SIZE] = (&mut self.0[at..at + PACKED_MAPPING_SIZE])
            .try_into()
            .expect("entry width");
        let old = unpack(packed);
        mapping.encode(packed);
        old
    }

    /// The mappings of every slot, in slot order.
    #[inline]
    pub fn iter(&self) -> impl ExactSizeIterator<Item = Mapping> + '_ {
        self.0
            .as_chunks::<PACKED_MAPPING_SIZE>()
            .0
            .iter()
            .map(unpack)
    }

    /// The number of slots: always [`ENTRIES_PER_PAGE`].
    #[must_use]
    pub const fn len(&self) -> usize {
        ENTRIES_PER_PAGE
    }

    /// Always false: a page has [`ENTRIES_PER_PAGE`] slots.
    #[must_use]
    pub const fn is_empty(&self) -> bool {
        false
    }

    #[inline]
    fn packed(&self, slot: usize) -> &[u8; PACKED_MAPPING_SIZE] {
        let at = slot * PACKED_MAPPING_SIZE;
        (&self.0[at..at + PACKED_MAPPING_SIZE])
            .try_into()
            .expect("entry width")
    }
}

/// Decodes an entry of a [`PackedEntries`], which always decodes. Inlined, with
/// `Mapping::decode`, into the engine's loops: called out of line, its result went through
/// memory and the 812-entry walks of force rebuild ran twice as long.
#[inline]
fn unpack(packed: &[u8; PACKED_MAPPING_SIZE]) -> Mapping {
    Mapping::decode(packed).expect("packed entries hold only entries that decode")
}

impl Default for PackedEntries {
    fn default() -> Self {
        Self::new()
    }
}

impl std::fmt::Debug for PackedEntries {
    /// The mapped slots only: a page is mostly unmapped, and 812 lines help nobody.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_map()
            .entries(self.iter().enumerate().filter(|(_, m)| m.is_mapped()))
            .finish()
    }
}

impl BlockMapPage {
    /// A page of `level` with every slot unmapped, generation 0 (never written).
    ///
    /// # Panics
    ///
    /// If `level` is not below [`TREE_HEIGHT`].
    #[must_use]
    pub fn new_empty(level: u8) -> Self {
        assert!(level < TREE_HEIGHT, "block map level {level} out of range");
        Self {
            level,
            generation: SequenceNumber(0),
            entries: PackedEntries::new(),
        }
    }

    /// Writes the page for the twin slot at `location` of the volume with `nonce`.
    ///
    /// # Panics
    ///
    /// If the page breaks a rule decode checks (level range, interior entry kinds): an engine
    /// bug, never written to disk.
    pub fn encode(&self, nonce: Nonce, location: Pbn, out: &mut Block) {
        if let Err(problem) = self.check(self.level) {
            panic!("refusing to write an invalid block map page at {location}: {problem}");
        }
        *out = ZERO_BLOCK;
        put_u8(out, LEVEL_OFFSET, self.level);
        out[ENTRIES_OFFSET..].copy_from_slice(self.entries.as_bytes());
        header::seal(
            out,
            &BlockHeader {
                block_type: BlockType::BlockMapPage,
                version: VERSION,
                nonce,
                location,
                sequence: self.generation,
            },
        );
    }

    /// Reads the page at `expected.pbn`, which the tree walk expects at `level`.
    ///
    /// # Errors
    ///
    /// A header problem, `InvalidField` for a level other than `level`, nonzero reserved bytes,
    /// an impossible mapping, or a `Zero` or `Compressed` entry in an interior page.
    ///
    /// # Panics
    ///
    /// If `level` is not below [`TREE_HEIGHT`]: the caller's argument, not the block's bytes.
    pub fn decode(block: &Block, expected: Expected, level: u8) -> Result<Self, FormatError> {
        assert!(level < TREE_HEIGHT, "block map level {level} out of range");
        let header = header::open(block, BlockType::BlockMapPage, VERSION, expected)?;
        let fail = |problem| FormatError::new(BlockType::BlockMapPage, expected.pbn, problem);
        let found_level = get_u8(block, LEVEL_OFFSET);
        require_zero(&block[RESERVED_OFFSET..ENTRIES_OFFSET], "reserved").map_err(fail)?;
        let packed = block[ENTRIES_OFFSET..]
            .try_into()
            .expect("entries fill the block");
        let entries = PackedEntries::decode(packed).map_err(fail)?;
        let page = Self {
            level: found_level,
            generation: header.sequence,
            entries,
        };
        page.check(level).map_err(fail)?;
        Ok(page)
    }

    /// The rules both encode and decode enforce, so the two stay paired.
    fn check(&self, level: u8) -> Result<(), Problem> {
        if self.level != level || self.level >= TREE_HEIGHT {
            return Err(Problem::InvalidField {
                field: "level",
                expected: "the level the parent page implies (0..=4)",
                found: u64::from(self.level),
            });
        }
        if self.level == LEAF_LEVEL {
            return Ok(());
        }
        match self
            .entries
            .iter()
            .find(|m| !matches!(m, Mapping::Unmapped | Mapping::Data(_)))
        {
            None => Ok(()),
            Some(mapping) => Err(Problem::InvalidField {
                field: "interior entry",
                expected: "unmapped or the PBN of a child page",
                found: mapping.pbn().map_or(0, |p| p.0),
            }),
        }
    }
}

/// Where an LBN lives in the forest: which tree, which leaf of it, and the slot at each level.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct TreeAddress {
    /// The tree (root) number, `0..root_count`.
    pub root: u16,
    /// The leaf's index among the leaves of its tree.
    pub leaf_index: u64,
    /// `slots[0]` is the slot in the leaf; `slots[level]` the slot in the page of that level
    /// that leads towards the leaf; `slots[4]` is the slot in the root.
    pub slots: [u16; TREE_HEIGHT as usize],
}

impl TreeAddress {
    /// The address of `lbn` in a forest of `root_count` trees.
    ///
    /// # Panics
    ///
    /// If `root_count` is 0 or `lbn` is not below [`LBN_LIMIT`].
    #[must_use]
    pub fn of(lbn: Lbn, root_count: u16) -> Self {
        assert!(root_count > 0, "a forest needs at least one root");
        assert!(lbn.0 < LBN_LIMIT, "LBN {lbn} beyond 40 bits");
        let page = lbn.0 / ENTRIES_PER_PAGE_U64;
        let roots = u64::from(root_count);
        let root = u16::try_from(page % roots).expect("below root_count");
        let leaf_index = page / roots;
        let mut slots = [0_u16; TREE_HEIGHT as usize];
        slots[0] = slot_of(lbn.0);
        let mut above = leaf_index;
        for slot in &mut slots[1..] {
            *slot = slot_of(above);
            above /= ENTRIES_PER_PAGE_U64;
        }
        Self {
            root,
            leaf_index,
            slots,
        }
    }

    /// The LBN this address names (the inverse of [`TreeAddress::of`]).
    #[must_use]
    pub fn lbn(&self, root_count: u16) -> Lbn {
        let first = first_lbn(self.root, self.leaf_index, root_count);
        Lbn(first.0 + u64::from(self.slots[0]))
    }
}

/// The first LBN mapped by leaf `leaf_index` of tree `root` in a forest of `root_count` trees.
///
/// # Panics
///
/// If `root` is not below `root_count`.
#[must_use]
pub fn first_lbn(root: u16, leaf_index: u64, root_count: u16) -> Lbn {
    assert!(root < root_count, "root {root} of {root_count}");
    let page = leaf_index * u64::from(root_count) + u64::from(root);
    Lbn(page * ENTRIES_PER_PAGE_U64)
}

fn slot_of(n: u64) -> u16 {
    u16::try_from(n % ENTRIES_PER_PAGE_U64).expect("slot below 812")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::damage::{assert_detects_damage, reseal};
    use crate::mapping::{COMPRESSED_SLOTS, PBN_MAX};
    use proptest::prelude::*;

    const NONCE: Nonce = Nonce(0x1234_5678_9abc_def0);
    const AT: Pbn = Pbn(4242);

    fn expected() -> Expected {
        Expected::new(NONCE, AT)
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

    fn child_mapping() -> impl Strategy<Value = Mapping> {
        prop_oneof![
            Just(Mapping::Unmapped),
            (1..=PBN_MAX).prop_map(|p| Mapping::Data(Pbn(p))),
        ]
    }

    fn any_page() -> impl Strategy<Value = BlockMapPage> {
        (0..TREE_HEIGHT, any::<u64>()).prop_flat_map(|(level, generation)| {
            let entry = if level == LEAF_LEVEL {
                any_mapping().boxed()
            } else {
                child_mapping().boxed()
            };
            proptest::collection::vec(entry, ENTRIES_PER_PAGE).prop_map(move |v| BlockMapPage {
                level,
                generation: SequenceNumber(generation),
                entries: packed(&v),
            })
        })
    }

    fn packed(mappings: &[Mapping]) -> PackedEntries {
        let mut entries = PackedEntries::new();
        for (slot, &mapping) in mappings.iter().enumerate() {
            entries.set(slot, mapping);
        }
        entries
    }

    fn encoded(page: &BlockMapPage) -> Block {
        let mut block = [0xa5; BLOCK_SIZE];
        page.encode(NONCE, AT, &mut block);
        block
    }

    fn sample_leaf(generation: u64) -> BlockMapPage {
        let mut page = BlockMapPage::new_empty(LEAF_LEVEL);
        page.generation = SequenceNumber(generation);
        page.entries.set(0, Mapping::Data(Pbn(77)));
        page.entries.set(1, Mapping::Zero);
        page.entries.set(
            811,
            Mapping::Compressed {
                pbn: Pbn(0x9_0000_0001),
                slot: 13,
            },
        );
        page
    }

    fn problem_of(block: &Block, level: u8) -> Problem {
        BlockMapPage::decode(block, expected(), level)
            .unwrap_err()
            .problem
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        #[test]
        fn round_trips(page in any_page()) {
            let block = encoded(&page);
            prop_assert_eq!(BlockMapPage::decode(&block, expected(), page.level), Ok(page));
        }

        #[test]
        fn arbitrary_blocks_decode_without_panic(
            bytes in proptest::collection::vec(any::<u8>(), BLOCK_SIZE),
            level in 0..TREE_HEIGHT,
        ) {
            let block: Block = bytes.try_into().expect("4096 bytes");
            prop_assert!(BlockMapPage::decode(&block, expected(), level).is_err());
        }

        #[test]
        fn mutated_blocks_decode_without_panic_and_accepted_ones_are_canonical(
            page in any_page(),
            edits in proptest::collection::vec((HEADER_SIZE..BLOCK_SIZE, any::<u8>()), 1..8),
        ) {
            let mut block = encoded(&page);
            for (offset, value) in edits {
                block[offset] = value;
            }
            reseal(&mut block);
            if let Ok(decoded) = BlockMapPage::decode(&block, expected(), page.level) {
                prop_assert_eq!(encoded(&decoded), block);
            }
        }
    }

    #[test]
    fn damage_is_detected() {
        let older = encoded(&sample_leaf(6));
        let mut newer_page = sample_leaf(7);
        newer_page.entries.set(500, Mapping::Data(Pbn(5)));
        let newer = encoded(&newer_page);
        assert_detects_damage(
            |b, e| BlockMapPage::decode(b, e, LEAF_LEVEL),
            &older,
            &newer,
            expected(),
        );
    }

    #[test]
    fn layout_matches_the_diagram() {
        let mut page = BlockMapPage::new_empty(2);
        page.generation = SequenceNumber(9);
        page.entries.set(1, Mapping::Data(Pbn(0x1_0203_0405)));
        let block = encoded(&page);
        assert_eq!(block[32], 2);
        assert_eq!(block[33..36], [0, 0, 0]);
        assert_eq!(block[41..46], [0x11, 0x05, 0x04, 0x03, 0x02]);
        assert_eq!(block[24..32], 9_u64.to_le_bytes());
        assert_eq!(block[16..24], AT.0.to_le_bytes());
    }

    #[test]
    fn wrong_level_is_invalid_level() {
        let block = encoded(&sample_leaf(1));
        assert!(matches!(
            problem_of(&block, 1),
            Problem::InvalidField {
                field: "level",
                found: 0,
                ..
            }
        ));
        let mut block = block;
        block[LEVEL_OFFSET] = TREE_HEIGHT;
        reseal(&mut block);
        for level in 0..TREE_HEIGHT {
            assert!(matches!(
                problem_of(&block, level),
                Problem::InvalidField {
                    field: "level",
                    found: 5,
                    ..
                }
            ));
        }
    }

    #[test]
    fn reserved_bytes_must_be_zero() {
        for offset in RESERVED_OFFSET..ENTRIES_OFFSET {
            let mut block = encoded(&sample_leaf(1));
            block[offset] = 0x40;
            reseal(&mut block);
            assert_eq!(
                problem_of(&block, LEAF_LEVEL),
                Problem::InvalidField {
                    field: "reserved",
                    expected: "zero",
                    found: 0x40
                }
            );
        }
    }

    #[test]
    fn impossible_entries_are_refused() {
        let mut block = encoded(&sample_leaf(1));
        let last = ENTRIES_OFFSET + (ENTRIES_PER_PAGE - 1) * PACKED_MAPPING_SIZE;
        block[last..last + PACKED_MAPPING_SIZE].copy_from_slice(&[0x00, 3, 0, 0, 0]);
        reseal(&mut block);
        assert!(matches!(
            problem_of(&block, LEAF_LEVEL),
            Problem::InvalidField {
                field: "unmapped entry PBN",
                found: 3,
                ..
            }
        ));
    }

    #[test]
    fn interior_pages_refuse_zero_and_compressed_entries() {
        let mut page = BlockMapPage::new_empty(ROOT_LEVEL);
        page.entries.set(3, Mapping::Data(Pbn(1000)));
        let good = encoded(&page);
        assert_eq!(
            BlockMapPage::decode(&good, expected(), ROOT_LEVEL),
            Ok(page)
        );
        let packed = [[0x10, 0, 0, 0, 0], [0x32, 0x34, 0x12, 0, 0]];
        for (bytes, found) in packed.into_iter().zip([0, 0x2_0000_1234]) {
            let mut block = good;
            let at = ENTRIES_OFFSET + 7 * PACKED_MAPPING_SIZE;
            block[at..at + PACKED_MAPPING_SIZE].copy_from_slice(&bytes);
            reseal(&mut block);
            assert_eq!(
                problem_of(&block, ROOT_LEVEL),
                Problem::InvalidField {
                    field: "interior entry",
                    expected: "unmapped or the PBN of a child page",
                    found
                }
            );
        }
    }

    #[test]
    #[should_panic(expected = "invalid block map page")]
    fn encoding_a_zero_entry_in_an_interior_page_panics() {
        let mut page = BlockMapPage::new_empty(1);
        page.entries.set(0, Mapping::Zero);
        let _ = encoded(&page);
    }

    #[test]
    fn a_resident_page_fits_in_its_4_kib_budget() {
        // The heap part is the packed array and nothing else; the page itself is a pointer,
        // the generation and the level.
        assert_eq!(size_of::<[u8; PACKED_ENTRIES_SIZE]>(), 4060);
        assert!(size_of::<[u8; PACKED_ENTRIES_SIZE]>() <= BLOCK_SIZE);
        assert_eq!(size_of::<PackedEntries>(), size_of::<usize>());
        assert!(
            size_of::<BlockMapPage>() <= 24,
            "{}",
            size_of::<BlockMapPage>()
        );
        let page = BlockMapPage::new_empty(LEAF_LEVEL);
        assert_eq!(size_of_val(&*page.entries.0), PACKED_ENTRIES_SIZE);
    }

    #[test]
    fn new_entries_are_all_unmapped_zero_bytes() {
        let entries = PackedEntries::new();
        assert!(entries.as_bytes().iter().all(|&b| b == 0));
        assert_eq!(entries.len(), ENTRIES_PER_PAGE);
        assert!(!entries.is_empty());
        assert_eq!(entries.iter().len(), ENTRIES_PER_PAGE);
        assert!(entries.iter().all(|m| m == Mapping::Unmapped));
        assert_eq!(entries, PackedEntries::default());
    }

    #[test]
    fn set_returns_the_old_mapping_and_touches_only_its_slot() {
        let mut entries = PackedEntries::new();
        let data = Mapping::Data(Pbn(0x1_0203_0405));
        assert_eq!(entries.set(1, data), Mapping::Unmapped);
        assert_eq!(entries.set(1, Mapping::Zero), data);
        assert_eq!(entries.get(1), Mapping::Zero);
        assert_eq!(entries.as_bytes()[5..10], [0x10, 0, 0, 0, 0]);
        assert_eq!(entries.set(1, Mapping::Unmapped), Mapping::Zero);
        assert_eq!(entries, PackedEntries::new());
        let last = Mapping::Compressed {
            pbn: Pbn(PBN_MAX),
            slot: COMPRESSED_SLOTS - 1,
        };
        entries.set(ENTRIES_PER_PAGE - 1, last);
        assert_eq!(entries.get(ENTRIES_PER_PAGE - 1), last);
        assert_eq!(entries.get(ENTRIES_PER_PAGE - 2), Mapping::Unmapped);
        assert_eq!(entries.as_bytes()[..PACKED_ENTRIES_SIZE - 5], [0; 4055]);
    }

    #[test]
    #[should_panic(expected = "data mapped to PBN 0")]
    fn setting_a_mapping_that_cannot_be_packed_panics() {
        PackedEntries::new().set(0, Mapping::Data(Pbn(0)));
    }

    #[test]
    #[should_panic(expected = "out of range")]
    fn a_slot_past_the_page_panics() {
        let _ = PackedEntries::new().get(ENTRIES_PER_PAGE);
    }

    #[test]
    fn debug_lists_the_mapped_slots() {
        let page = sample_leaf(1);
        let text = format!("{:?}", page.entries);
        assert_eq!(
            text,
            "{0: Data(Pbn(77)), 1: Zero, 811: Compressed { pbn: Pbn(38654705665), slot: 13 }}"
        );
    }

    proptest! {
        #[test]
        fn get_set_and_iter_agree_with_a_model(
            writes in proptest::collection::vec((0..ENTRIES_PER_PAGE, any_mapping()), 0..64),
        ) {
            let mut model = vec![Mapping::Unmapped; ENTRIES_PER_PAGE];
            let mut entries = PackedEntries::new();
            for (slot, mapping) in writes {
                prop_assert_eq!(entries.set(slot, mapping), model[slot]);
                model[slot] = mapping;
                prop_assert_eq!(entries.get(slot), mapping);
            }
            prop_assert_eq!(entries.iter().collect::<Vec<_>>(), model.clone());
            for (slot, &mapping) in model.iter().enumerate() {
                prop_assert_eq!(entries.get(slot), mapping);
                let at = slot * PACKED_MAPPING_SIZE;
                prop_assert_eq!(
                    Mapping::decode(&entries.as_bytes()[at..at + 5].try_into().unwrap()),
                    Ok(mapping)
                );
            }
        }
    }

    #[test]
    fn tree_address_follows_the_format() {
        let a = TreeAddress::of(Lbn(812 * 17 + 5), 16);
        assert_eq!(a.root, 1);
        assert_eq!(a.leaf_index, 1);
        assert_eq!(a.slots, [5, 1, 0, 0, 0]);
        let page = 3 * 16 + 812 * 812 * 16 * 2 + 812 * 16 * 4;
        let a = TreeAddress::of(Lbn(page * 812 + 811), 16);
        assert_eq!((a.root, a.slots), (0, [811, 3, 4, 2, 0]));
        assert_eq!(first_lbn(0, a.leaf_index, 16), Lbn(page * 812));
        let top = TreeAddress::of(Lbn(LBN_LIMIT - 1), 1);
        assert_eq!(top.lbn(1), Lbn(LBN_LIMIT - 1));
        assert!(top.slots.iter().all(|&s| usize::from(s) < ENTRIES_PER_PAGE));
    }

    fn leaf_index_from_slots(slots: &[u16; 5]) -> u64 {
        slots[1..]
            .iter()
            .rev()
            .fold(0, |acc, &s| acc * ENTRIES_PER_PAGE_U64 + u64::from(s))
    }

    proptest! {
        #[test]
        fn tree_addresses_invert_and_never_collide(
            lbn in 0..LBN_LIMIT,
            other in 0..LBN_LIMIT,
            delta in 1_u64..5_000_000,
            root_count in 1_u16..=60,
        ) {
            let a = TreeAddress::of(Lbn(lbn), root_count);
            prop_assert!(a.root < root_count);
            prop_assert_eq!(a.lbn(root_count), Lbn(lbn));
            prop_assert_eq!(leaf_index_from_slots(&a.slots), a.leaf_index);
            let near = (lbn + delta) % LBN_LIMIT;
            let strided = (lbn + delta * 812 * u64::from(root_count)) % LBN_LIMIT;
            for b in [other, near, strided] {
                let addr = TreeAddress::of(Lbn(b), root_count);
                if b != lbn {
                    prop_assert_ne!((addr.root, addr.slots), (a.root, a.slots));
                }
            }
        }
    }
}
