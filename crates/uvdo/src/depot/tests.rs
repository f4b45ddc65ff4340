//! Depot tests on tiny layouts over a memory store: allocation, sharing, deferred decrements,
//! the slab journal bounds, persistence round trips, damage on open, and a model-based test.

use std::collections::HashMap;

use proptest::prelude::*;
use uvdo_format::header::Expected;
use uvdo_format::layout::{LayoutParams, REGION_COUNT};
use uvdo_format::ref_counts::{BLOCK_MAP_REFERENCE, REFERENCE_MAX};
use uvdo_format::slab_journal::{SlabJournalBlock, SlabJournalEntry};
use uvdo_format::slab_summary::{SlabSummaryBlock, SummaryEntry};
use uvdo_format::twin::TwinSlot;
use uvdo_format::{BlockCount, BlockType, Lbn, SequenceNumber};
use uvdo_io::memory::MemoryStore;

use super::slab::journal_region;
use super::*;

pub(super) const NONCE: Nonce = Nonce(0x5eed_dee9_0000_0001);

pub(super) fn layout(slab_blocks: u64, journal_blocks: u64, slabs: u64) -> Layout {
    let params = LayoutParams {
        slab_blocks: BlockCount(slab_blocks),
        slab_journal_blocks: BlockCount(journal_blocks),
        recovery_journal_blocks: BlockCount(8),
        root_count: 1,
        index_blocks: BlockCount(1),
    };
    let depot = params.regions().unwrap()[REGION_COUNT - 1].start.0;
    Layout::compute(params, BlockCount(depot + slabs * slab_blocks)).unwrap()
}

/// A formatted store, its depot, and the next recovery journal point to record at.
struct Harness {
    layout: Layout,
    store: MemoryStore,
    depot: SlabDepot,
    point: JournalPoint,
    lbn: u64,
}

impl Harness {
    fn new(layout: Layout) -> Self {
        let store = MemoryStore::new(layout.physical_blocks().to_bytes());
        write(&store, SlabDepot::format_summary(&layout, NONCE));
        let depot = SlabDepot::open(&store, layout, NONCE).unwrap();
        Self {
            layout,
            store,
            depot,
            point: JournalPoint {
                sequence: SequenceNumber(1),
                entry: 0,
            },
            lbn: 0,
        }
    }

    fn data_pbns(&self) -> Vec<Pbn> {
        let mut pbns = Vec::new();
        self.depot.for_each_count(&mut |pbn, _| pbns.push(pbn));
        pbns
    }

    fn counts(&self) -> Vec<(Pbn, u8)> {
        let mut counts = Vec::new();
        self.depot
            .for_each_count(&mut |pbn, c| counts.push((pbn, c)));
        counts
    }

    fn next_point(&mut self) -> JournalPoint {
        let point = self.point;
        self.point.entry += 1;
        if self.point.entry == recovery_journal::ENTRIES_PER_BLOCK_U16 {
            self.point = JournalPoint {
                sequence: self.point.sequence.next(),
                entry: 0,
            };
        }
        point
    }

    fn record(&mut self, entry: &RecoveryJournalEntry) -> Result<JournalPoint, VolumeError> {
        let point = self.next_point();
        self.depot.record(point, entry).map(|()| point)
    }

    fn remap(&mut self, new: Mapping, old: Mapping) -> Result<JournalPoint, VolumeError> {
        self.lbn += 1;
        let entry = remap_entry(self.lbn, new, old);
        self.record(&entry)
    }

    fn allocate_page(&mut self, base: Pbn) -> Result<JournalPoint, VolumeError> {
        let entry = RecoveryJournalEntry {
            kind: EntryKind::PageAllocation,
            slot: 3,
            page: Pbn(1),
            new: Mapping::Data(base),
            old: Mapping::Unmapped,
            lbn: Lbn(self.lbn),
        };
        self.record(&entry)
    }

    /// Step 3 of the protocol: durable dirty marks for slabs that changed.
    fn mark(&mut self) {
        write(&self.store, self.depot.take_summary_writes(false));
        self.depot.summary_durable();
    }

    /// Steps 3 and 5 of the protocol, with a dirty summary update after them.
    fn drain(&mut self, all_dirty: bool) {
        self.mark();
        write(&self.store, self.depot.take_slab_journal_writes(true));
        write(&self.store, self.depot.take_ref_count_writes(all_dirty));
        self.depot.ref_counts_durable();
        write(&self.store, self.depot.take_summary_writes(false));
    }

    /// Drains when the depot asks, as the engine does after each record batch.
    fn maintain(&mut self) {
        if self.depot.needs_ref_count_writes() {
            self.drain(false);
        }
        for slab in &self.depot.slabs {
            let journal = &slab.journal;
            assert!(journal.blocks_in_use() < self.layout.slab().journal_blocks.0);
        }
    }

    /// Writes everything and marks the summary clean, as at close.
    fn close(&mut self) {
        self.drain(true);
        write(&self.store, self.depot.take_summary_writes(true));
    }

    fn reopen(&self) -> Result<SlabDepot, VolumeError> {
        SlabDepot::open(&self.store, self.layout, NONCE)
    }
}

pub(super) fn remap_entry(lbn: u64, new: Mapping, old: Mapping) -> RecoveryJournalEntry {
    RecoveryJournalEntry {
        kind: EntryKind::DataRemap,
        slot: u16::try_from(lbn % 812).unwrap(),
        page: Pbn(1),
        new,
        old,
        lbn: Lbn(lbn),
    }
}

pub(super) fn write(store: &MemoryStore, blocks: Vec<(Pbn, Block)>) {
    for (pbn, block) in blocks {
        store.write_at(pbn.byte_offset(), &block).unwrap();
    }
}

fn read(store: &MemoryStore, pbn: Pbn) -> Block {
    let mut block = [0; 4096];
    store.read_at(pbn.byte_offset(), &mut block).unwrap();
    block
}

#[test]
fn allocation_is_sequential_fills_every_block_then_reports_no_space() {
    let mut h = Harness::new(layout(16, 8, 3));
    let all = h.data_pbns();
    assert_eq!(all.len(), 18);
    let mut got: Vec<Pbn> = (0..18).map(|_| h.depot.allocate_data().unwrap()).collect();
    // Each slab's six blocks come in order, one slab after another.
    for run in got.chunks(6) {
        assert!(run.windows(2).all(|w| w[1] == w[0].offset(1)), "{run:?}");
    }
    got.sort();
    assert_eq!(got, all);
    assert!(matches!(
        h.depot.allocate_data(),
        Err(VolumeError::NoSpace { data_blocks: 18 })
    ));
    h.depot.release(all[4]);
    assert_eq!(h.depot.allocate_data().unwrap(), all[4]);
    // A journaled reference removed by a journaled decrement frees the block too.
    h.remap(Mapping::Data(all[7]), Mapping::Unmapped).unwrap();
    h.remap(Mapping::Zero, Mapping::Data(all[7])).unwrap();
    assert_eq!(h.depot.count(all[7]), Some(0));
    assert_eq!(h.depot.allocate_data().unwrap(), all[7]);
    let stats = h.depot.stats();
    assert_eq!((stats.free_blocks, stats.data_blocks_used), (0, 18));
    assert_eq!((stats.slab_count, stats.data_blocks_total), (3, 18));
    assert_eq!(stats.slab_journal_entries, 2);
}

#[test]
fn new_data_goes_to_the_emptiest_slab_when_the_current_one_fills() {
    let mut h = Harness::new(layout(16, 8, 3));
    let slab_of = |h: &Harness, pbn| h.layout.slab_of(pbn).unwrap().0;
    let first: Vec<Pbn> = (0..6).map(|_| h.depot.allocate_data().unwrap()).collect();
    assert!(first.iter().all(|&p| slab_of(&h, p) == SlabNumber(0)));
    let second = h.depot.allocate_data().unwrap();
    assert_eq!(slab_of(&h, second), SlabNumber(1));
    for &p in &first[..3] {
        h.depot.release(p);
    }
    // Slab 1 is not full, so new data stays in it, in order.
    for i in 1..6 {
        assert_eq!(h.depot.allocate_data().unwrap(), second.offset(i));
    }
    // Slab 2 (6 free) now beats slab 0 (3 free).
    let third = h.depot.allocate_data().unwrap();
    assert_eq!(slab_of(&h, third), SlabNumber(2));
}

#[test]
fn tree_pairs_are_aligned_free_pairs_counted_as_block_map() {
    let mut h = Harness::new(layout(16, 8, 2));
    let data = h.depot.allocate_data().unwrap();
    let mut pairs = Vec::new();
    while let Ok(base) = h.depot.allocate_tree_pair() {
        let (_, block) = h.layout.slab_of(base).unwrap();
        assert_eq!(block.0 % 2, 0, "pair at {base}");
        assert_eq!(h.depot.count(base), Some(BLOCK_MAP_REFERENCE));
        assert_eq!(h.depot.count(base.offset(1)), Some(BLOCK_MAP_REFERENCE));
        pairs.push(base);
    }
    // Block 0 of the first slab holds data, so its pair (0, 1) is not free: 5 pairs remain.
    assert_eq!(pairs.len(), 5);
    assert!(!pairs.contains(&data));
    let stats = h.depot.stats();
    assert_eq!((stats.block_map_blocks, stats.data_blocks_used), (10, 1));
    assert_eq!(stats.free_blocks, 1);
    assert!(matches!(
        h.depot.allocate_tree_pair(),
        Err(VolumeError::NoSpace { .. })
    ));
    h.allocate_page(pairs[0]).unwrap();
    h.depot.release(pairs[1]);
    h.depot.release(pairs[1].offset(1));
    assert_eq!(h.depot.count(pairs[1]), Some(0));
    assert_eq!(h.depot.allocate_tree_pair().unwrap(), pairs[1]);
}

#[test]
fn try_share_stops_at_the_limit_and_refuses_free_and_tree_blocks() {
    let mut h = Harness::new(layout(16, 8, 1));
    let p = h.depot.allocate_data().unwrap();
    for _ in 1..REFERENCE_MAX {
        assert_eq!(h.depot.try_share(p), Share::Shared);
    }
    assert_eq!(h.depot.count(p), Some(REFERENCE_MAX));
    assert_eq!(h.depot.try_share(p), Share::AtLimit);
    let tree = h.depot.allocate_tree_pair().unwrap();
    assert_eq!(h.depot.try_share(tree), Share::NotData);
    assert_eq!(h.depot.try_share(tree.offset(1)), Share::NotData);
    let free = h.data_pbns()[5];
    assert_eq!(h.depot.count(free), Some(0));
    assert_eq!(h.depot.try_share(free), Share::NotData);
    assert_eq!(h.depot.try_share(Pbn(0)), Share::NotData);
    assert_eq!(h.depot.count(Pbn(0)), None);
    h.depot.release(p);
    assert_eq!(h.depot.try_share(p), Share::Shared);
}

#[test]
fn a_freed_block_is_not_reallocated_until_its_decrement_is_recorded() {
    let mut h = Harness::new(layout(16, 8, 1));
    let blocks: Vec<Pbn> = (0..6).map(|_| h.depot.allocate_data().unwrap()).collect();
    for &p in &blocks {
        h.remap(Mapping::Data(p), Mapping::Unmapped).unwrap();
    }
    // The engine has overwritten the block holding blocks[2]'s only reference, but the
    // journal entry is not durable yet: the block stays allocated.
    let overwrite = remap_entry(99, Mapping::Zero, Mapping::Data(blocks[2]));
    assert!(matches!(
        h.depot.allocate_data(),
        Err(VolumeError::NoSpace { .. })
    ));
    assert_eq!(h.depot.count(blocks[2]), Some(1));
    let point = h.next_point();
    h.depot.record(point, &overwrite).unwrap();
    assert_eq!(h.depot.count(blocks[2]), Some(0));
    assert_eq!(h.depot.allocate_data().unwrap(), blocks[2]);
}

#[test]
fn a_remap_to_the_same_block_increments_before_it_decrements() {
    let mut h = Harness::new(layout(16, 8, 1));
    let p = h.depot.allocate_data().unwrap();
    h.remap(Mapping::Data(p), Mapping::Unmapped).unwrap();
    assert_eq!(h.depot.try_share(p), Share::Shared);
    let compressed = Mapping::Compressed { pbn: p, slot: 2 };
    h.remap(compressed, Mapping::Data(p)).unwrap();
    assert_eq!(h.depot.count(p), Some(1));
    h.remap(Mapping::Unmapped, compressed).unwrap();
    assert_eq!(h.depot.count(p), Some(0));
}

#[test]
fn record_refuses_bad_entries_and_changes_nothing() {
    let mut h = Harness::new(layout(16, 8, 1));
    let pbns = h.data_pbns();
    let p = h.depot.allocate_data().unwrap();
    let good = h.remap(Mapping::Data(p), Mapping::Unmapped).unwrap();
    let before = (h.counts(), h.depot.stats());
    let invariant = |r: Result<(), VolumeError>| matches!(r, Err(VolumeError::Invariant { .. }));
    let again = remap_entry(5, Mapping::Zero, Mapping::Data(p));
    // Not after the previous point, or not a valid point.
    assert!(invariant(h.depot.record(good, &again)));
    let bad_entry = JournalPoint {
        sequence: SequenceNumber(9),
        entry: recovery_journal::ENTRIES_PER_BLOCK_U16,
    };
    assert!(invariant(h.depot.record(bad_entry, &again)));
    let next = JournalPoint {
        sequence: SequenceNumber(10),
        entry: 0,
    };
    let cases = [
        // Increment without a reservation, with a valid decrement beside it.
        remap_entry(6, Mapping::Data(pbns[3]), Mapping::Data(p)),
        // Decrement of a free block.
        remap_entry(7, Mapping::Zero, Mapping::Data(pbns[4])),
        // Not a slab data block.
        remap_entry(8, Mapping::Data(Pbn(3)), Mapping::Unmapped),
        // Page allocation without a tree reservation, and misaligned.
        RecoveryJournalEntry {
            kind: EntryKind::PageAllocation,
            ..remap_entry(9, Mapping::Data(pbns[2]), Mapping::Unmapped)
        },
        RecoveryJournalEntry {
            kind: EntryKind::PageAllocation,
            ..remap_entry(9, Mapping::Data(pbns[1]), Mapping::Unmapped)
        },
    ];
    for entry in &cases {
        assert!(invariant(h.depot.record(next, entry)), "{entry:?}");
    }
    assert_eq!((h.counts(), h.depot.stats()), before);
    // A decrement of a tree page.
    let tree = h.depot.allocate_tree_pair().unwrap();
    h.allocate_page(tree).unwrap();
    let entry = remap_entry(10, Mapping::Zero, Mapping::Data(tree));
    let point = h.next_point();
    assert!(invariant(h.depot.record(point, &entry)));
    assert_eq!(h.depot.count(tree), Some(BLOCK_MAP_REFERENCE));
}

/// The entries recorded, per slab, with the recovery point of each.
type Recorded = HashMap<u32, Vec<(SlabJournalEntry, JournalPoint)>>;

fn decode_journal(h: &Harness, slab: u32, sequence: u64) -> SlabJournalBlock {
    let number = SlabNumber(slab);
    let region = journal_region(&h.layout, number);
    let sequence = SequenceNumber(sequence);
    let pbn = h.layout.slab_journal_pbn(number, sequence);
    let expected = Expected::new(NONCE, pbn);
    SlabJournalBlock::decode_at(&read(&h.store, pbn), expected, &region, sequence).unwrap()
}

#[test]
fn slab_journal_blocks_hold_the_recorded_entries_in_order() {
    let mut h = Harness::new(layout(32, 4, 2));
    let mut recorded = Recorded::new();
    let mut note = |h: &Harness, pbn: Pbn, operation, point| {
        let (slab, block) = h.layout.slab_of(pbn).unwrap();
        let entry = SlabJournalEntry { block, operation };
        recorded.entry(slab.0).or_default().push((entry, point));
    };
    let tree = h.depot.allocate_tree_pair().unwrap();
    let point = h.allocate_page(tree).unwrap();
    note(&h, tree, SlabOperation::BlockMapIncrement, point);
    note(&h, tree.offset(1), SlabOperation::BlockMapIncrement, point);
    let mut live = Vec::new();
    for i in 0..60 {
        let new = h.depot.allocate_data().unwrap();
        let old = if i % 3 == 2 { live.pop() } else { None };
        let point = h.remap(
            Mapping::Data(new),
            old.map_or(Mapping::Unmapped, Mapping::Data),
        );
        let point = point.unwrap();
        note(&h, new, SlabOperation::DataIncrement, point);
        if let Some(old) = old {
            note(&h, old, SlabOperation::DataDecrement, point);
        }
        live.push(new);
    }
    assert_eq!(recorded.len(), 2);
    h.mark();
    assert!(h.depot.take_slab_journal_writes(false).is_empty());
    let writes = h.depot.take_slab_journal_writes(true);
    assert_eq!(writes.len(), 2);
    write(&h.store, writes);
    assert_eq!(h.depot.stats().slab_journal_blocks_written, 2);
    for (&slab, expected) in &recorded {
        let block = decode_journal(&h, slab, 1);
        let entries: Vec<_> = expected.iter().map(|(e, _)| *e).collect();
        assert_eq!(block.entries, entries);
        assert_eq!(block.recovery_point, expected.last().unwrap().1);
        assert_eq!(block.head, SequenceNumber(1));
    }
    // The next entry starts sequence 2; after reference counts are durable the head passes 1.
    h.drain(true);
    let p = h.depot.allocate_data().unwrap();
    h.remap(Mapping::Data(p), Mapping::Unmapped).unwrap();
    let (slab, _) = h.layout.slab_of(p).unwrap();
    write(&h.store, h.depot.take_slab_journal_writes(true));
    let block = decode_journal(&h, slab.0, 2);
    assert_eq!(block.head, SequenceNumber(2));
    assert_eq!(block.entries.len(), 1);
}

#[test]
fn needs_ref_count_writes_fires_before_a_two_block_journal_overflows() {
    let mut h = Harness::new(layout(16, 2, 2));
    let p = h.depot.allocate_data().unwrap();
    assert!(!h.depot.needs_ref_count_writes());
    h.remap(Mapping::Data(p), Mapping::Unmapped).unwrap();
    // One block in use of two: one free block left is the threshold.
    assert!(h.depot.needs_ref_count_writes());
    let (slab, _) = h.layout.slab_of(p).unwrap();
    let journal = |h: &Harness| {
        let j = &h.depot.slabs[slab.0 as usize].journal;
        (j.head(), j.next_write())
    };
    h.mark();
    write(&h.store, h.depot.take_slab_journal_writes(true));
    assert_eq!(journal(&h), (SequenceNumber(1), SequenceNumber(2)));
    let refs = h.depot.take_ref_count_writes(false);
    assert_eq!(refs.len(), 1);
    write(&h.store, refs);
    assert_eq!(
        journal(&h).0,
        SequenceNumber(1),
        "heads wait for durability"
    );
    h.depot.ref_counts_durable();
    assert_eq!(journal(&h), (SequenceNumber(2), SequenceNumber(2)));
    assert!(!h.depot.needs_ref_count_writes());
    // A long run, draining whenever asked: the journal never outgrows the disk (`maintain`
    // asserts it) and every block is written at most once per sequence.
    let mut live = vec![p];
    for i in 0..500 {
        let new = match h.depot.allocate_data() {
            Ok(new) => new,
            Err(_) => {
                let old = live.remove(0);
                h.remap(Mapping::Zero, Mapping::Data(old)).unwrap();
                h.maintain();
                continue;
            }
        };
        let old = (i % 4 == 0 && live.len() > 3).then(|| live.remove(1));
        h.remap(
            Mapping::Data(new),
            old.map_or(Mapping::Unmapped, Mapping::Data),
        )
        .unwrap();
        live.push(new);
        h.maintain();
    }
    let stats = h.depot.stats();
    assert!(stats.slab_journal_blocks_written > 100, "{stats:?}");
    assert!(stats.ref_count_blocks_written > 100, "{stats:?}");
}

#[test]
fn record_buffers_a_bounded_overflow_then_refuses() {
    let mut h = Harness::new(layout(16, 2, 1));
    let p = h.depot.allocate_data().unwrap();
    h.remap(Mapping::Data(p), Mapping::Unmapped).unwrap();
    // Each remap of p onto itself adds two entries; nothing is ever drained.
    let bound = usize::try_from(2 + slab_journal::BUFFERED_BLOCKS_MAX).unwrap() * 1008;
    let mut entries = 1;
    loop {
        assert!(h.depot.needs_ref_count_writes());
        assert_eq!(h.depot.try_share(p), Share::Shared);
        let result = h.remap(Mapping::Data(p), Mapping::Data(p));
        if entries + 2 > bound {
            assert!(matches!(result, Err(VolumeError::Invariant { .. })));
            break;
        }
        result.unwrap();
        entries += 2;
    }
    assert_eq!(h.depot.stats().slab_journal_entries, entries as u64);
    h.depot.release(p);
    // Only two blocks fit on disk until the head moves.
    h.mark();
    assert_eq!(h.depot.take_slab_journal_writes(true).len(), 2);
    write(&h.store, h.depot.take_ref_count_writes(false));
    h.depot.ref_counts_durable();
    assert_eq!(h.depot.take_slab_journal_writes(true).len(), 2);
}

#[test]
fn counts_survive_a_clean_close_and_reopen() {
    let mut h = Harness::new(layout(32, 3, 3));
    let mut live: Vec<Pbn> = Vec::new();
    let mut seed = 0x1234_5678_u64;
    let mut next = || {
        seed = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
        seed >> 33
    };
    for _ in 0..300 {
        match next() % 5 {
            0 | 1 => {
                if let Ok(p) = h.depot.allocate_data() {
                    h.remap(Mapping::Data(p), Mapping::Unmapped).unwrap();
                    live.push(p);
                }
            }
            2 if !live.is_empty() => {
                let i = usize::try_from(next()).unwrap() % live.len();
                let p = live[i];
                if h.depot.try_share(p) == Share::Shared {
                    h.remap(Mapping::Data(p), Mapping::Unmapped).unwrap();
                    live.push(p);
                }
            }
            3 if !live.is_empty() => {
                let i = usize::try_from(next()).unwrap() % live.len();
                let p = live.swap_remove(i);
                h.remap(Mapping::Unmapped, Mapping::Data(p)).unwrap();
            }
            _ => {
                if let Ok(base) = h.depot.allocate_tree_pair() {
                    h.allocate_page(base).unwrap();
                }
            }
        }
        h.maintain();
    }
    // A reservation outstanding at close is not written.
    let reserved = match h.depot.allocate_data() {
        Ok(p) => p,
        Err(_) => {
            assert_eq!(h.depot.try_share(live[0]), Share::Shared);
            live[0]
        }
    };
    h.close();
    h.depot.release(reserved);
    let reopened = h.reopen().unwrap();
    let mut counts = Vec::new();
    reopened.for_each_count(&mut |pbn, c| counts.push((pbn, c)));
    assert_eq!(counts, h.counts());
    for (a, b) in h.depot.slabs.iter().zip(&reopened.slabs) {
        assert_eq!(a.counts.free(), b.counts.free());
        assert_eq!(a.journal.next_write(), b.journal.next_write());
    }
    let (old, new) = (h.depot.stats(), reopened.stats());
    assert_eq!(
        (old.free_blocks, old.data_blocks_used, old.block_map_blocks),
        (new.free_blocks, new.data_blocks_used, new.block_map_blocks)
    );
}

#[test]
fn a_dirty_summary_needs_recovery() {
    let mut h = Harness::new(layout(16, 8, 2));
    let p = h.depot.allocate_data().unwrap();
    h.remap(Mapping::Data(p), Mapping::Unmapped).unwrap();
    h.drain(true);
    let (slab, _) = h.layout.slab_of(p).unwrap();
    match h.reopen() {
        Err(VolumeError::NeedsRecovery { state }) => {
            assert_eq!(state, format!("dirty slab {slab}"));
        }
        other => panic!("{other:?}"),
    }
}

/// Closes cleanly with one reference, then in a second session writes newer reference counts
/// for the slab but its dirty mark never reaches the disk (a device that lost a flushed write):
/// `open` must still notice counts newer than a clean summary entry. Returns the twin slot of
/// the newer write and its intended image.
fn crash_after_ref_count_write(h: &mut Harness) -> (Pbn, Block, Vec<(Pbn, u8)>) {
    let p = h.depot.allocate_data().unwrap();
    h.remap(Mapping::Data(p), Mapping::Unmapped).unwrap();
    h.close();
    let closed = h.counts();
    h.depot = h.reopen().unwrap();
    let q = h.depot.allocate_data().unwrap();
    h.remap(Mapping::Data(q), Mapping::Unmapped).unwrap();
    let lost_mark = h.depot.take_summary_writes(false);
    assert_eq!(lost_mark.len(), 1);
    h.depot.summary_durable();
    write(&h.store, h.depot.take_slab_journal_writes(true));
    let mut refs = h.depot.take_ref_count_writes(true);
    assert_eq!(refs.len(), 1);
    let (pbn, image) = refs.pop().unwrap();
    (pbn, image, closed)
}

#[test]
fn a_torn_newest_ref_count_slot_falls_back_to_the_previous_copy() {
    let mut h = Harness::new(layout(16, 8, 1));
    let (pbn, image, closed) = crash_after_ref_count_write(&mut h);
    // A tear inside the first sector: the header landed, the counts did not.
    let mut torn = image;
    torn[64..512].copy_from_slice(&read(&h.store, pbn)[64..512]);
    write(&h.store, vec![(pbn, torn)]);
    let reopened = h.reopen().unwrap();
    let mut counts = Vec::new();
    reopened.for_each_count(&mut |p, c| counts.push((p, c)));
    assert_eq!(counts, closed);
    assert_eq!(counts.iter().filter(|(_, c)| *c == 1).count(), 1);
    // Had the write landed whole, the counts would be newer than the clean summary entry.
    write(&h.store, vec![(pbn, image)]);
    assert!(matches!(h.reopen(), Err(VolumeError::NeedsRecovery { .. })));
}

fn assert_corrupt(result: Result<SlabDepot, VolumeError>, structure: BlockType) {
    match result {
        Err(VolumeError::Corrupt(e)) => assert_eq!(e.structure, structure, "{e}"),
        other => panic!("expected corruption of {structure:?}, got {other:?}"),
    }
}

#[test]
fn damaged_summary_and_ref_count_blocks_are_corrupt_not_panics() {
    let layout = layout(16, 8, 2);
    let h = Harness::new(layout);
    let base = layout.summary_base(0);
    let mut block = read(&h.store, base);
    block[100] ^= 1;
    write(&h.store, vec![(base, block)]);
    assert_corrupt(h.reopen(), BlockType::SlabSummary);
    // Garbage in both slots.
    write(
        &h.store,
        vec![(base, [0xa5; 4096]), (base.offset(1), [7; 4096])],
    );
    assert_corrupt(h.reopen(), BlockType::SlabSummary);

    // A well-formed summary that contradicts the counts, or has a zero tail.
    let entry = super::summary::formatted_entry(&layout);
    let bad = |e: SummaryEntry| {
        let value = SlabSummaryBlock {
            block_index: 0,
            entries: vec![entry, e],
        };
        let mut out = [0; 4096];
        value.encode(NONCE, TwinSlot::B.pbn(base), SequenceNumber(2), &mut out);
        write(&h.store, vec![(base.offset(1), out)]);
    };
    bad(SummaryEntry {
        free_blocks: BlockCount(5),
        ..entry
    });
    assert_corrupt(h.reopen(), BlockType::SlabSummary);
    bad(SummaryEntry {
        journal_tail: SequenceNumber(0),
        ..entry
    });
    assert_corrupt(h.reopen(), BlockType::SlabSummary);
    bad(SummaryEntry {
        ref_counts_written: true,
        ..entry
    });
    // The summary says counts are on disk, but both slots are unwritten.
    assert_corrupt(h.reopen(), BlockType::RefCounts);
}

#[test]
fn model_based_run_fails_on_a_wrong_count() {
    // The model checker itself must notice a difference, or the proptest proves nothing.
    let h = Harness::new(layout(16, 2, 1));
    let mut model = Model::new(&h);
    model.counts.insert(h.data_pbns()[0], 1);
    assert!(model.compare(&h).is_err());
}

/// Live counts, reservations and journaled references, as the depot should have them.
struct Model {
    counts: HashMap<Pbn, u8>,
    reservations: Vec<Reservation>,
    references: Vec<Pbn>,
}

#[derive(Clone, Copy, Debug)]
enum Reservation {
    Data(Pbn),
    Tree(Pbn),
}

#[derive(Clone, Copy, Debug)]
enum Op {
    Allocate,
    Share(usize),
    Release(usize),
    Commit {
        reservation: usize,
        old: Option<usize>,
        compressed: bool,
    },
    Drop(usize),
    Tree,
    Reopen,
}

fn any_op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => Just(Op::Allocate),
        2 => any::<usize>().prop_map(Op::Share),
        1 => any::<usize>().prop_map(Op::Release),
        5 => (any::<usize>(), any::<Option<usize>>(), any::<bool>()).prop_map(
            |(reservation, old, compressed)| Op::Commit { reservation, old, compressed }
        ),
        2 => any::<usize>().prop_map(Op::Drop),
        1 => Just(Op::Tree),
        1 => Just(Op::Reopen),
    ]
}

impl Model {
    fn new(h: &Harness) -> Self {
        Self {
            counts: h.data_pbns().into_iter().map(|p| (p, 0)).collect(),
            reservations: Vec::new(),
            references: Vec::new(),
        }
    }

    fn compare(&self, h: &Harness) -> Result<(), TestCaseError> {
        let mut mismatches = 0;
        h.depot.for_each_count(&mut |pbn, c| {
            mismatches += usize::from(self.counts.get(&pbn) != Some(&c));
        });
        prop_assert_eq!(mismatches, 0);
        let stats = h.depot.stats();
        let tally = |f: fn(u8) -> bool| self.counts.values().filter(|&&c| f(c)).count() as u64;
        prop_assert_eq!(stats.free_blocks, tally(|c| c == 0));
        prop_assert_eq!(stats.block_map_blocks, tally(|c| c == BLOCK_MAP_REFERENCE));
        prop_assert_eq!(
            stats.data_blocks_used,
            tally(|c| (1..=REFERENCE_MAX).contains(&c))
        );
        Ok(())
    }

    fn release(&mut self, h: &mut Harness, index: usize) {
        match self.reservations.swap_remove(index) {
            Reservation::Data(p) => {
                h.depot.release(p);
                *self.counts.get_mut(&p).unwrap() -= 1;
            }
            Reservation::Tree(base) => {
                h.depot.release(base);
                h.depot.release(base.offset(1));
                self.counts.insert(base, 0);
                self.counts.insert(base.offset(1), 0);
            }
        }
    }

    fn apply(&mut self, h: &mut Harness, op: Op) -> Result<(), TestCaseError> {
        match op {
            Op::Allocate => match h.depot.allocate_data() {
                Ok(p) => {
                    prop_assert_eq!(self.counts.insert(p, 1), Some(0));
                    self.reservations.push(Reservation::Data(p));
                }
                Err(VolumeError::NoSpace { .. }) => {
                    prop_assert!(self.counts.values().all(|&c| c != 0));
                }
                Err(e) => return Err(TestCaseError::fail(e.to_string())),
            },
            Op::Share(i) => {
                let pbns = h.data_pbns();
                let p = pbns[i % pbns.len()];
                let count = self.counts[&p];
                let expected = match count {
                    0 | BLOCK_MAP_REFERENCE => Share::NotData,
                    REFERENCE_MAX => Share::AtLimit,
                    _ => Share::Shared,
                };
                prop_assert_eq!(h.depot.try_share(p), expected);
                if expected == Share::Shared {
                    self.counts.insert(p, count + 1);
                    self.reservations.push(Reservation::Data(p));
                }
            }
            Op::Release(i) if !self.reservations.is_empty() => {
                self.release(h, i % self.reservations.len());
            }
            Op::Commit {
                reservation,
                old,
                compressed,
            } if !self.reservations.is_empty() => {
                let r = self
                    .reservations
                    .swap_remove(reservation % self.reservations.len());
                match r {
                    Reservation::Data(p) => {
                        let old = old
                            .filter(|_| !self.references.is_empty())
                            .map(|j| self.references.swap_remove(j % self.references.len()));
                        let new = if compressed {
                            Mapping::Compressed { pbn: p, slot: 1 }
                        } else {
                            Mapping::Data(p)
                        };
                        h.remap(new, old.map_or(Mapping::Unmapped, Mapping::Data))
                            .map_err(|e| TestCaseError::fail(e.to_string()))?;
                        if let Some(old) = old {
                            *self.counts.get_mut(&old).unwrap() -= 1;
                        }
                        self.references.push(p);
                    }
                    Reservation::Tree(base) => {
                        h.allocate_page(base)
                            .map_err(|e| TestCaseError::fail(e.to_string()))?;
                    }
                }
                h.maintain();
            }
            Op::Drop(i) if !self.references.is_empty() => {
                let q = self.references.swap_remove(i % self.references.len());
                h.remap(Mapping::Zero, Mapping::Data(q))
                    .map_err(|e| TestCaseError::fail(e.to_string()))?;
                *self.counts.get_mut(&q).unwrap() -= 1;
                h.maintain();
            }
            Op::Tree => {
                if let Ok(base) = h.depot.allocate_tree_pair() {
                    prop_assert_eq!(self.counts.insert(base, BLOCK_MAP_REFERENCE), Some(0));
                    let second = self.counts.insert(base.offset(1), BLOCK_MAP_REFERENCE);
                    prop_assert_eq!(second, Some(0));
                    self.reservations.push(Reservation::Tree(base));
                }
            }
            Op::Reopen => {
                while !self.reservations.is_empty() {
                    self.release(h, 0);
                }
                h.close();
                h.depot = h.reopen().map_err(|e| TestCaseError::fail(e.to_string()))?;
            }
            Op::Release(_) | Op::Commit { .. } | Op::Drop(_) => {}
        }
        Ok(())
    }
}

proptest! {
    #[test]
    fn counts_match_a_model(ops in prop::collection::vec(any_op(), 1..200)) {
        let mut h = Harness::new(layout(16, 2, 3));
        let mut model = Model::new(&h);
        for op in ops {
            model.apply(&mut h, op)?;
            model.compare(&h)?;
        }
        while !model.reservations.is_empty() {
            model.release(&mut h, 0);
        }
        h.close();
        h.depot = h.reopen().map_err(|e| TestCaseError::fail(e.to_string()))?;
        model.compare(&h)?;
    }
}

#[test]
#[should_panic(expected = "marked clean with changes not durable")]
fn a_clean_summary_with_changes_not_durable_is_refused() {
    let mut h = Harness::new(layout(16, 8, 1));
    let p = h.depot.allocate_data().unwrap();
    h.remap(Mapping::Data(p), Mapping::Unmapped).unwrap();
    h.mark();
    write(&h.store, h.depot.take_slab_journal_writes(true));
    let _ = h.depot.take_summary_writes(true);
}
