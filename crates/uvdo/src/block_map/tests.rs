//! Block map tests over a memory store and a tiny geometry (64-block slabs).

use std::collections::{BTreeMap, BTreeSet};

use proptest::prelude::*;
use uvdo_format::block_map_page::{BlockMapPage, ENTRIES_PER_PAGE_U64, LBN_LIMIT, TreeAddress};
use uvdo_format::damage::torn;
use uvdo_format::layout::{Layout, LayoutParams};
use uvdo_format::mapping::{COMPRESSED_SLOTS, PBN_MAX};
use uvdo_format::{BlockCount, Expected, SlabBlockNumber, SlabNumber};
use uvdo_io::memory::MemoryStore;

use super::*;

mod replay;

const NONCE: Nonce = Nonce(0x5eed_0fb1_0c4a_1100);
const ALL: SequenceNumber = SequenceNumber(u64::MAX);

fn tiny_layout(root_count: u8, slabs: u64) -> Layout {
    let params = LayoutParams {
        slab_blocks: BlockCount(64),
        slab_journal_blocks: BlockCount(8),
        recovery_journal_blocks: BlockCount(8),
        root_count,
        index_blocks: BlockCount(1),
    };
    let depot = params.regions().unwrap()[5].start.0;
    Layout::compute(params, BlockCount(depot + slabs * 64)).unwrap()
}

/// Hands out aligned twin pairs of slab data blocks in order, and records every request.
struct Allocator {
    layout: Layout,
    next_pair: u64,
    calls: Vec<PageAllocation>,
    handed: Vec<(Pbn, u8)>,
}

impl Allocator {
    fn allocate(
        &mut self,
        request: PageAllocation,
        point: JournalPoint,
    ) -> Result<(Pbn, JournalPoint), VolumeError> {
        let pairs = self.layout.slab().data_blocks.0 / 2;
        let slab = self.next_pair / pairs;
        if slab >= u64::from(self.layout.slab_count()) {
            return Err(VolumeError::NoSpace { data_blocks: 0 });
        }
        let block = (self.next_pair % pairs) * 2;
        self.next_pair += 1;
        let base = self.layout.data_pbn(
            SlabNumber(u32::try_from(slab).unwrap()),
            SlabBlockNumber(u32::try_from(block).unwrap()),
        );
        self.calls.push(request);
        self.handed.push((base, request.level));
        Ok((base, point))
    }
}

struct Fixture {
    layout: Layout,
    store: MemoryStore,
    allocator: Allocator,
    sequence: u64,
}

impl Fixture {
    fn new(root_count: u8, slabs: u64) -> Self {
        let layout = tiny_layout(root_count, slabs);
        let fx = Self {
            layout,
            store: MemoryStore::new(layout.physical_blocks().to_bytes()),
            allocator: Allocator {
                layout,
                next_pair: 0,
                calls: Vec::new(),
                handed: Vec::new(),
            },
            sequence: 0,
        };
        fx.write(&BlockMap::format_roots(&layout, NONCE));
        fx
    }

    fn open(&self, cache_pages: usize) -> BlockMap {
        BlockMap::new(self.layout, NONCE, cache_pages)
    }

    fn write(&self, blocks: &[(Pbn, Block)]) {
        for (pbn, block) in blocks {
            self.store.write_at(pbn.byte_offset(), block).unwrap();
        }
    }

    fn read(&self, pbn: Pbn) -> Block {
        let mut block = [0; BLOCK_SIZE];
        self.store.read_at(pbn.byte_offset(), &mut block).unwrap();
        block
    }

    fn next_point(&mut self) -> JournalPoint {
        self.sequence += 1;
        JournalPoint {
            sequence: SequenceNumber(self.sequence),
            entry: 0,
        }
    }

    /// Prepares and sets `lbn` as the engine does, at a new journal point.
    fn put(&mut self, map: &mut BlockMap, lbn: u64, mapping: Mapping) -> LeafSlot {
        let point = self.next_point();
        let allocator = &mut self.allocator;
        let leaf = map
            .prepare(&self.store, Lbn(lbn), &mut |r| allocator.allocate(r, point))
            .unwrap();
        assert_eq!(map.set(Lbn(lbn), mapping, point).unwrap(), leaf.old);
        leaf
    }

    /// Writes every dirty page; returns how many.
    fn flush(&self, map: &mut BlockMap) -> usize {
        let blocks = map.take_dirty(ALL);
        self.write(&blocks);
        blocks.len()
    }
}

fn data(pbn: u64) -> Mapping {
    Mapping::Data(Pbn(pbn))
}

fn mappings(map: &mut BlockMap, store: &dyn Storage) -> Vec<(u64, Mapping)> {
    let mut seen = Vec::new();
    map.for_each_mapping(store, &mut |lbn, m| seen.push((lbn.0, m)))
        .unwrap();
    seen
}

fn model_mappings(model: &BTreeMap<u64, Mapping>) -> Vec<(u64, Mapping)> {
    model.iter().map(|(&l, &m)| (l, m)).collect()
}

/// LBNs in both trees, in shared and separate leaves, up to the last 40-bit LBN.
fn spread_lbns() -> Vec<u64> {
    let e = ENTRIES_PER_PAGE_U64;
    vec![
        0,
        1,
        e - 1,
        e,
        e + 1,
        2 * e + 7,
        e * e * 3 + 5,
        e * e * e * 2 + 11,
        e * e * e * e + 19,
        1 << 30,
        123_456_789_012,
        LBN_LIMIT - e,
        LBN_LIMIT - 1,
    ]
}

fn corrupt_problem(result: Result<Mapping, VolumeError>) -> Problem {
    match result {
        Err(VolumeError::Corrupt(e)) => e.problem,
        other => panic!("expected a Corrupt error, got {other:?}"),
    }
}

#[test]
fn format_roots_are_empty_generation_one_in_slot_a() {
    let layout = tiny_layout(3, 4);
    let roots = BlockMap::format_roots(&layout, NONCE);
    assert_eq!(roots.len(), 3);
    for (root, (at, block)) in (0_u8..).zip(&roots) {
        assert_eq!(*at, layout.root_base(root));
        let page = BlockMapPage::decode(block, Expected::new(NONCE, *at), ROOT_LEVEL).unwrap();
        assert_eq!(page, {
            let mut empty = BlockMapPage::new_empty(ROOT_LEVEL);
            empty.generation = SequenceNumber(1);
            empty
        });
    }
}

#[test]
fn an_empty_map_is_unmapped_everywhere_and_allocates_nothing() {
    let fx = Fixture::new(2, 4);
    let mut map = fx.open(2);
    for lbn in spread_lbns() {
        assert_eq!(map.lookup(&fx.store, Lbn(lbn)).unwrap(), Mapping::Unmapped);
    }
    assert!(mappings(&mut map, &fx.store).is_empty());
    let mut pages = 0;
    map.for_each_tree_page(&fx.store, &mut |_, _| pages += 1)
        .unwrap();
    assert_eq!(pages, 0);
    let stats = map.stats();
    assert_eq!((stats.dirty_pages, stats.tree_pages_allocated), (0, 0));
    assert_eq!(stats.pages_read, stats.cache_misses);
    assert!(stats.cache_hits > 0 && stats.pages_cached == 2);
}

#[test]
fn lbns_beyond_40_bits_are_invalid_arguments() {
    let mut fx = Fixture::new(1, 4);
    let mut map = fx.open(4);
    assert!(matches!(
        map.lookup(&fx.store, Lbn(LBN_LIMIT)),
        Err(VolumeError::InvalidArgument { .. })
    ));
    let point = fx.next_point();
    let allocator = &mut fx.allocator;
    let r = map.prepare(&fx.store, Lbn(u64::MAX), &mut |r| {
        allocator.allocate(r, point)
    });
    assert!(matches!(r, Err(VolumeError::InvalidArgument { .. })));
    assert!(fx.allocator.calls.is_empty());
}

#[test]
fn set_then_lookup_over_the_whole_range() {
    let mut fx = Fixture::new(2, 16);
    let mut map = fx.open(64);
    let lbns = spread_lbns();
    for (i, &lbn) in (100_u64..).zip(&lbns) {
        let leaf = fx.put(&mut map, lbn, data(i));
        assert_eq!(leaf.old, Mapping::Unmapped);
        assert_eq!(u64::from(leaf.slot), lbn % ENTRIES_PER_PAGE_U64);
    }
    for (i, &lbn) in (100_u64..).zip(&lbns) {
        assert_eq!(
            map.lookup(&fx.store, Lbn(lbn)).unwrap(),
            data(i),
            "LBN {lbn}"
        );
    }
    // Neighbours share pages but not slots.
    assert_eq!(map.lookup(&fx.store, Lbn(2)).unwrap(), Mapping::Unmapped);
    assert_eq!(
        map.lookup(&fx.store, Lbn(LBN_LIMIT - 2)).unwrap(),
        Mapping::Unmapped
    );
    let allocated = fx.allocator.calls.len() as u64;
    assert_eq!(map.stats().tree_pages_allocated, allocated);
    assert_eq!(
        map.dirty_pages() as u64,
        allocated + 2,
        "every new page and both roots"
    );
    let leaf = fx.put(&mut map, 0, Mapping::Zero);
    assert_eq!(leaf.old, data(100));
}

#[test]
fn allocations_come_top_down_with_parent_slot_and_level() {
    let mut fx = Fixture::new(1, 4);
    let mut map = fx.open(8);
    let lbn = LBN_LIMIT - 1;
    let leaf = fx.put(&mut map, lbn, data(9));
    let addr = TreeAddress::of(Lbn(lbn), 1);
    assert_eq!(fx.allocator.calls.len(), 4);
    let mut parent = fx.layout.root_base(0);
    for (i, level) in (0..4).zip([3_u8, 2, 1, 0]) {
        let expected = PageAllocation {
            parent,
            slot: addr.slots[usize::from(level) + 1],
            level,
            lbn: Lbn(lbn),
        };
        assert_eq!(fx.allocator.calls[i], expected);
        assert_eq!(fx.allocator.handed[i].1, level);
        parent = fx.allocator.handed[i].0;
    }
    assert_eq!(leaf.page, parent);
    // Same leaf: nothing to allocate.
    fx.put(&mut map, lbn - 1, data(10));
    assert_eq!(fx.allocator.calls.len(), 4);
    // The previous leaf shares the level-1 page: only the leaf is new.
    let sibling = lbn - ENTRIES_PER_PAGE_U64;
    assert_eq!(TreeAddress::of(Lbn(sibling), 1).slots[2..], addr.slots[2..]);
    fx.put(&mut map, sibling, data(11));
    assert_eq!(fx.allocator.calls.len(), 5);
    let call = fx.allocator.calls[4];
    assert_eq!((call.parent, call.level), (fx.allocator.handed[2].0, 0));
}

#[test]
fn dirty_counts_points_and_budget() {
    let mut fx = Fixture::new(1, 4);
    let mut map = fx.open(8);
    assert!(!map.over_budget());
    assert_eq!(map.newest_dirty_point(), None);
    fx.put(&mut map, 0, data(1)); // point 1: root and four new pages
    assert_eq!(map.dirty_pages(), 5);
    assert!(map.over_budget(), "5 dirty pages of an 8-page budget");
    assert!(map.take_dirty(SequenceNumber(0)).is_empty());
    assert_eq!(map.take_dirty(SequenceNumber(1)).len(), 5);
    assert_eq!((map.dirty_pages(), map.over_budget()), (0, false));
    fx.put(&mut map, 1, data(2)); // point 2: the leaf only
    fx.put(&mut map, ENTRIES_PER_PAGE_U64, data(3)); // point 3: a new leaf and its parent
    assert_eq!(map.dirty_pages(), 3);
    assert_eq!(
        map.oldest_dirty_point().unwrap().sequence,
        SequenceNumber(2)
    );
    assert_eq!(
        map.newest_dirty_point().unwrap().sequence,
        SequenceNumber(3)
    );
    let first = map.take_dirty(SequenceNumber(2));
    assert_eq!(first.len(), 1, "only the page first dirtied at 2");
    assert_eq!(map.dirty_pages(), 2);
    fx.put(&mut map, 2, data(4)); // point 4 re-dirties the first leaf
    assert_eq!(
        map.newest_dirty_point().unwrap().sequence,
        SequenceNumber(4)
    );
    assert_eq!(map.take_dirty(SequenceNumber(3)).len(), 2);
    assert_eq!(
        map.oldest_dirty_point().unwrap().sequence,
        SequenceNumber(4)
    );
    assert_eq!(map.stats().pages_written, 8);
}

#[test]
fn twin_writes_alternate_slots_and_generations() {
    let mut fx = Fixture::new(1, 4);
    let mut map = fx.open(8);
    let root = fx.layout.root_base(0);
    let mut leaf = Pbn(0);
    for generation in 1..=4_u64 {
        leaf = fx.put(&mut map, 7, data(generation)).page;
        let blocks = map.take_dirty(ALL);
        let slot_of = |base: Pbn| {
            blocks
                .iter()
                .find(|(at, _)| at.0.wrapping_sub(base.0) < 2)
                .map(|(at, block)| (at.0 - base.0, block))
                .unwrap()
        };
        let (leaf_slot, block) = slot_of(leaf);
        assert_eq!(leaf_slot, (generation - 1) % 2, "generation {generation}");
        let at = Pbn(leaf.0 + leaf_slot);
        let page = BlockMapPage::decode(block, Expected::new(NONCE, at), 0).unwrap();
        assert_eq!(page.generation, SequenceNumber(generation));
        if generation == 1 {
            // The root was generation 1 in slot A at format.
            assert_eq!(slot_of(root).0, 1);
            assert_eq!(blocks.len(), 5);
        } else {
            assert_eq!(blocks.len(), 1);
        }
        fx.write(&blocks);
    }
    let mut reopened = fx.open(2);
    assert_eq!(reopened.lookup(&fx.store, Lbn(7)).unwrap(), data(4));
    reopened
        .prepare(&fx.store, Lbn(7), &mut |_| unreachable!())
        .unwrap();
    reopened.set(Lbn(7), data(5), fx.next_point()).unwrap();
    let blocks = reopened.take_dirty(ALL);
    assert_eq!(blocks.len(), 1);
    assert_eq!(blocks[0].0, leaf, "generation 4 was in slot B; 5 goes to A");
}

#[test]
fn persistence_round_trip_with_a_two_page_cache() {
    let mut fx = Fixture::new(2, 16);
    let lbns = spread_lbns();
    let mut model = BTreeMap::new();
    for round in 0..4_u64 {
        let mut map = fx.open(2);
        for (i, &lbn) in (0_u64..).zip(&lbns) {
            let before = map.lookup(&fx.store, Lbn(lbn)).unwrap();
            assert_eq!(Some(&before).filter(|m| m.is_mapped()), model.get(&lbn));
            let mapping = data(1000 + round * 100 + i);
            fx.put(&mut map, lbn, mapping);
            model.insert(lbn, mapping);
        }
        assert!(map.stats().pages_cached > 2, "dirty pages stay resident");
        for &lbn in &lbns {
            assert_eq!(map.lookup(&fx.store, Lbn(lbn)).unwrap(), model[&lbn]);
        }
        assert_eq!(mappings(&mut map, &fx.store), model_mappings(&model));
        assert!(fx.flush(&mut map) > 0);
        for &lbn in &lbns {
            assert_eq!(map.lookup(&fx.store, Lbn(lbn)).unwrap(), model[&lbn]);
        }
        let stats = map.stats();
        assert!(
            stats.pages_cached <= 2,
            "clean pages evicted back to the budget"
        );
        assert!(stats.evictions > 0 && stats.pages_read > 0);
    }
    let mut map = fx.open(2);
    assert_eq!(mappings(&mut map, &fx.store), model_mappings(&model));
    let mut pages = BTreeSet::new();
    map.for_each_tree_page(&fx.store, &mut |base, level| {
        assert!(pages.insert((base, level)));
    })
    .unwrap();
    let handed: BTreeSet<(Pbn, u8)> = fx.allocator.handed.iter().copied().collect();
    assert_eq!(pages, handed);
}

#[test]
fn a_torn_newest_twin_falls_back_to_the_previous_generation() {
    let mut fx = Fixture::new(1, 4);
    let mut map = fx.open(8);
    let leaf = fx.put(&mut map, 5000, data(11)).page;
    fx.flush(&mut map); // generation 1 in slot A
    fx.put(&mut map, 5000, data(12));
    fx.flush(&mut map); // generation 2 in slot B
    fx.put(&mut map, 5000, data(13));
    let blocks = map.take_dirty(ALL);
    assert_eq!(blocks.len(), 1);
    let (at, newest) = blocks[0];
    assert_eq!(at, leaf, "generation 3 goes to slot A");
    let older = fx.read(at);
    let mut tears = 0;
    for mask in 1..u8::MAX {
        let tear = torn(&older, &newest, mask);
        fx.write(&[(at, tear)]);
        let expected = if tear == newest {
            data(13)
        } else {
            tears += usize::from(tear != older);
            data(12)
        };
        let mut reopened = fx.open(2);
        let found = reopened.lookup(&fx.store, Lbn(5000)).unwrap();
        assert_eq!(found, expected, "mask {mask:#04x}");
    }
    assert!(tears > 0, "some masks mix the two images");
    fx.write(&blocks);
    assert_eq!(fx.open(2).lookup(&fx.store, Lbn(5000)).unwrap(), data(13));
}

#[test]
fn damaged_pages_are_corrupt_errors_not_panics() {
    let mut fx = Fixture::new(1, 4);
    let mut map = fx.open(8);
    let leaf = fx.put(&mut map, 42, data(1)).page;
    fx.flush(&mut map);
    fx.put(&mut map, 42, data(2));
    fx.flush(&mut map);
    for slot in [leaf, leaf.offset(1)] {
        let mut block = fx.read(slot);
        block[2000] ^= 0x10;
        fx.write(&[(slot, block)]);
    }
    let mut reopened = fx.open(4);
    let problem = corrupt_problem(reopened.lookup(&fx.store, Lbn(42)));
    assert!(matches!(problem, Problem::Checksum { .. }), "{problem:?}");
    assert!(matches!(
        reopened.for_each_mapping(&fx.store, &mut |_, _| {}),
        Err(VolumeError::Corrupt(_))
    ));
    // LBNs under other, intact subtrees still read.
    let elsewhere = ENTRIES_PER_PAGE_U64 * 5;
    assert_eq!(
        reopened.lookup(&fx.store, Lbn(elsewhere)).unwrap(),
        Mapping::Unmapped
    );
}

/// Writes a root whose slot 0 points at `child`, as generation 2 in slot B.
fn write_root_pointing_at(fx: &Fixture, child: Pbn) {
    let mut root = BlockMapPage::new_empty(ROOT_LEVEL);
    root.generation = SequenceNumber(2);
    root.entries.set(0, Mapping::Data(child));
    let at = fx.layout.root_base(0).offset(1);
    let mut block = [0; BLOCK_SIZE];
    root.encode(NONCE, at, &mut block);
    fx.write(&[(at, block)]);
}

#[test]
fn bad_child_pointers_are_corrupt_errors() {
    let mut fx = Fixture::new(1, 4);
    // A child whose twin slots were never written.
    let never_written = fx.layout.depot_start();
    write_root_pointing_at(&fx, never_written);
    let problem = corrupt_problem(fx.open(4).lookup(&fx.store, Lbn(0)));
    assert_eq!(problem, Problem::Unwritten);
    // A child outside the slab data blocks (here the recovery journal).
    write_root_pointing_at(&fx, fx.layout.journal_start());
    let problem = corrupt_problem(fx.open(4).lookup(&fx.store, Lbn(0)));
    assert!(matches!(
        problem,
        Problem::InvalidField {
            field: "child page PBN",
            ..
        }
    ));
    // A child of the wrong level: the root points straight at a leaf.
    let mut map = fx.open(8);
    fx.write(&BlockMap::format_roots(&fx.layout, NONCE));
    fx.store
        .write_at(
            fx.layout.root_base(0).offset(1).byte_offset(),
            &[0; BLOCK_SIZE],
        )
        .unwrap();
    let leaf = fx.put(&mut map, 0, data(3)).page;
    fx.flush(&mut map);
    write_root_pointing_at(&fx, leaf);
    let mut reopened = fx.open(4);
    let problem = corrupt_problem(reopened.lookup(&fx.store, Lbn(0)));
    assert!(matches!(
        problem,
        Problem::InvalidField {
            field: "level",
            found: 0,
            ..
        }
    ));
    let point = fx.next_point();
    let allocator = &mut fx.allocator;
    let r = reopened.prepare(&fx.store, Lbn(0), &mut |r| allocator.allocate(r, point));
    assert!(matches!(r, Err(VolumeError::Corrupt(_))));
}

#[test]
fn set_refuses_unprepared_lbns_and_unencodable_mappings() {
    let mut fx = Fixture::new(1, 4);
    let mut map = fx.open(4);
    let point = fx.next_point();
    assert!(matches!(
        map.set(Lbn(3), data(1), point),
        Err(VolumeError::Invariant { .. })
    ));
    fx.put(&mut map, 3, data(1));
    assert!(matches!(
        map.set(Lbn(4), data(1), point),
        Err(VolumeError::Invariant { .. })
    ));
    let bad = [
        data(0),
        data(PBN_MAX + 1),
        Mapping::Compressed {
            pbn: Pbn(5),
            slot: COMPRESSED_SLOTS,
        },
    ];
    for mapping in bad {
        assert!(matches!(
            map.set(Lbn(3), mapping, point),
            Err(VolumeError::Invariant { .. })
        ));
    }
    assert_eq!(map.lookup(&fx.store, Lbn(3)).unwrap(), data(1));
    // A faulty allocator is refused before the tree changes.
    let root = fx.layout.root_base(0);
    let mut handed_root = |_: PageAllocation| Ok((root, point));
    let r = map.prepare(&fx.store, Lbn(ENTRIES_PER_PAGE_U64), &mut handed_root);
    assert!(matches!(r, Err(VolumeError::Invariant { .. })));
    assert_eq!(map.dirty_pages(), 5);
}

#[test]
fn dirty_pages_are_never_evicted_from_a_two_page_cache() {
    let mut fx = Fixture::new(1, 8);
    let mut map = fx.open(2);
    let leaves: Vec<u64> = (0..6).map(|i| i * ENTRIES_PER_PAGE_U64 * 1000).collect();
    for (i, &lbn) in (1_u64..).zip(&leaves) {
        fx.put(&mut map, lbn, data(i));
    }
    let dirty = map.dirty_pages() as u64;
    assert!(map.stats().pages_cached >= dirty && dirty > 6);
    // Nothing was written, so every mapping must come from the resident dirty pages.
    for (i, &lbn) in (1_u64..).zip(&leaves) {
        assert_eq!(map.lookup(&fx.store, Lbn(lbn)).unwrap(), data(i));
    }
    assert_eq!(map.stats().evictions, 0);
}

#[derive(Clone, Debug)]
enum Op {
    Set(usize, Mapping),
    Lookup(usize),
    /// Write the pages first dirtied at least this many points ago.
    WriteOlder(u64),
    WriteAll,
    Reopen,
    /// Reopen without writing: back to the state of the last full write.
    Crash,
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

fn any_op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (any::<usize>(), any_mapping()).prop_map(|(i, m)| Op::Set(i, m)),
        3 => any::<usize>().prop_map(Op::Lookup),
        1 => (0_u64..6).prop_map(Op::WriteOlder),
        1 => Just(Op::WriteAll),
        1 => Just(Op::Reopen),
        1 => Just(Op::Crash),
    ]
}

fn any_lbn() -> impl Strategy<Value = u64> {
    prop_oneof![0_u64..3000, 0..LBN_LIMIT, Just(LBN_LIMIT - 1)]
}

/// The model: what reads must return, and what a crash returns to.
struct Model {
    live: BTreeMap<u64, Mapping>,
    durable: BTreeMap<u64, Mapping>,
    /// A partial write since the last full one: the durable state is a mix, so a crash is
    /// replaced by a reopen after a full write.
    mixed: bool,
}

fn run_ops(lbns: &[u64], ops: &[Op], cache_pages: usize, root_count: u8) {
    let mut fx = Fixture::new(root_count, 48);
    let mut map = fx.open(cache_pages);
    let mut model = Model {
        live: BTreeMap::new(),
        durable: BTreeMap::new(),
        mixed: false,
    };
    for op in ops {
        match *op {
            Op::Set(i, mapping) => {
                let lbn = lbns[i % lbns.len()];
                let leaf = fx.put(&mut map, lbn, mapping);
                let old = model.live.get(&lbn).copied().unwrap_or(Mapping::Unmapped);
                assert_eq!(leaf.old, old, "old mapping of LBN {lbn}");
                if mapping.is_mapped() {
                    model.live.insert(lbn, mapping);
                } else {
                    model.live.remove(&lbn);
                }
            }
            Op::Lookup(i) => {
                let lbn = lbns[i % lbns.len()];
                let expected = model.live.get(&lbn).copied().unwrap_or(Mapping::Unmapped);
                assert_eq!(map.lookup(&fx.store, Lbn(lbn)).unwrap(), expected);
            }
            Op::WriteOlder(age) => {
                let upto = SequenceNumber(fx.sequence.saturating_sub(age));
                let blocks = map.take_dirty(upto);
                model.mixed |= !blocks.is_empty();
                fx.write(&blocks);
            }
            Op::WriteAll | Op::Reopen => {
                fx.flush(&mut map);
                model.durable.clone_from(&model.live);
                model.mixed = false;
                if matches!(op, Op::Reopen) {
                    map = fx.open(cache_pages);
                }
            }
            Op::Crash => {
                if model.mixed {
                    fx.flush(&mut map);
                    model.durable.clone_from(&model.live);
                    model.mixed = false;
                }
                map = fx.open(cache_pages);
                model.live.clone_from(&model.durable);
            }
        }
        // At most the pinned leaf and one page being walked through beyond the dirty ones.
        let cached = usize::try_from(map.stats().pages_cached).unwrap();
        assert!(
            cached <= cache_pages.max(map.dirty_pages() + 2),
            "{cached} pages cached"
        );
    }
    assert_eq!(mappings(&mut map, &fx.store), model_mappings(&model.live));
    fx.flush(&mut map);
    let mut reopened = fx.open(cache_pages);
    assert_eq!(
        mappings(&mut reopened, &fx.store),
        model_mappings(&model.live)
    );
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    fn behaves_like_a_btree_map_across_writes_reopens_and_crashes(
        lbns in proptest::collection::vec(any_lbn(), 1..12),
        ops in proptest::collection::vec(any_op(), 1..48),
        cache_pages in 2_usize..7,
        root_count in 1_u8..=3,
    ) {
        run_ops(&lbns, &ops, cache_pages, root_count);
    }
}
