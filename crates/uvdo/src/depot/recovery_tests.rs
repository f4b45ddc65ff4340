//! Crash recovery of the depot: a random workload driven through the protocol the engine
//! follows (`volume/commit.rs`), crashed after every event with any subset of the unflushed
//! writes landed, some torn; then `open_dirty` with the recovery journal entries since the last
//! head move, compared with a model; then a crash while writing the recovered state, and
//! `open_dirty` again.

use std::collections::HashMap;
use std::sync::Mutex;

use uvdo_format::damage::torn;
use uvdo_format::ref_counts::BLOCK_MAP_REFERENCE;
use uvdo_format::{BlockType, Lbn, SequenceNumber};
use uvdo_io::IoError;
use uvdo_io::memory::MemoryStore;

use super::tests::{NONCE, layout, remap_entry, write};
use super::*;

/// What the simulated engine did, in order.
#[derive(Clone, Debug)]
enum Event {
    Write(Pbn, Box<Block>),
    Flush,
    /// A recovery journal entry became durable and was given to the depot.
    Record(JournalPoint, RecoveryJournalEntry),
    /// A checkpoint made everything durable: the recovery journal's head moved.
    HeadMove,
}

/// A small deterministic generator; every failure message carries the seed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1);
        self.0 >> 33
    }

    fn below(&mut self, n: usize) -> usize {
        usize::try_from(self.next()).unwrap() % n
    }
}

/// The engine's side of the protocol over a memory store, logging every event.
struct Sim {
    layout: Layout,
    store: MemoryStore,
    depot: SlabDepot,
    events: Vec<Event>,
    point: JournalPoint,
    lbn: u64,
    /// One PBN per journaled reference.
    references: Vec<Pbn>,
}

impl Sim {
    fn new(layout: Layout) -> Self {
        let store = MemoryStore::new(layout.physical_blocks().to_bytes());
        let mut events = Vec::new();
        for (pbn, block) in SlabDepot::format_summary(&layout, NONCE) {
            write(&store, vec![(pbn, block)]);
            events.push(Event::Write(pbn, Box::new(block)));
        }
        events.push(Event::Flush);
        let depot = SlabDepot::open(&store, layout, NONCE).unwrap();
        Self {
            layout,
            store,
            depot,
            events,
            point: JournalPoint {
                sequence: SequenceNumber(1),
                entry: 0,
            },
            lbn: 0,
            references: Vec::new(),
        }
    }

    fn write(&mut self, blocks: Vec<(Pbn, Block)>) {
        for (pbn, block) in blocks {
            write(&self.store, vec![(pbn, block)]);
            self.events.push(Event::Write(pbn, Box::new(block)));
        }
    }

    fn flush(&mut self) {
        self.events.push(Event::Flush);
    }

    fn record(&mut self, entry: RecoveryJournalEntry) {
        let point = self.point;
        self.point.entry += 1;
        if self.point.entry == recovery_journal::ENTRIES_PER_BLOCK_U16 {
            self.point = JournalPoint {
                sequence: point.sequence.next(),
                entry: 0,
            };
        }
        self.depot.record(point, &entry).unwrap();
        self.events.push(Event::Record(point, entry));
    }

    /// `write_dirty_marks_locked`.
    fn mark(&mut self) {
        if self.depot.needs_dirty_marks() {
            let summary = self.depot.take_summary_writes(false);
            self.write(summary);
            self.flush();
            self.depot.summary_durable();
        }
    }

    /// `write_ref_counts_locked`.
    fn write_ref_counts(&mut self, all_dirty: bool) {
        self.mark();
        let journal = self.depot.take_slab_journal_writes(true);
        self.write(journal);
        self.flush();
        let refs = self.depot.take_ref_count_writes(all_dirty);
        self.write(refs);
        self.flush();
        self.depot.ref_counts_durable();
    }

    /// `commit_locked`: the flushes before and after the recovery journal write, the records,
    /// then the slab journal writes.
    fn commit(&mut self, entries: Vec<RecoveryJournalEntry>) {
        self.flush();
        for entry in entries {
            self.record(entry);
        }
        self.mark();
        let journal = self.depot.take_slab_journal_writes(false);
        self.write(journal);
        if self.depot.needs_ref_count_writes() {
            self.write_ref_counts(false);
        }
    }

    /// `checkpoint`, and at close a reopen.
    fn checkpoint(&mut self, close: bool) {
        self.mark();
        let journal = self.depot.take_slab_journal_writes(true);
        self.write(journal);
        self.flush();
        if close || self.depot.needs_ref_count_writes() {
            self.write_ref_counts(close);
        }
        let summary = self.depot.take_summary_writes(close);
        self.write(summary);
        self.flush();
        self.depot.summary_durable();
        self.events.push(Event::HeadMove);
        if close {
            self.depot = SlabDepot::open(&self.store, self.layout, NONCE).unwrap();
        }
    }

    fn entry(&mut self, new: Mapping, old: Mapping) -> RecoveryJournalEntry {
        self.lbn += 1;
        remap_entry(self.lbn, new, old)
    }

    fn take_reference(&mut self, rng: &mut Rng) -> Option<Pbn> {
        let n = self.references.len();
        (n > 0).then(|| self.references.swap_remove(rng.below(n)))
    }

    /// One commit batch of one to three random remaps and page allocations.
    fn step(&mut self, rng: &mut Rng) {
        let mut batch = Vec::new();
        for _ in 0..=rng.below(3) {
            match rng.below(8) {
                0..=2 => match self.depot.allocate_data() {
                    Ok(p) => {
                        let old = if rng.below(3) == 0 {
                            self.take_reference(rng)
                        } else {
                            None
                        };
                        let old = old.map_or(Mapping::Unmapped, Mapping::Data);
                        batch.push(self.entry(Mapping::Data(p), old));
                        self.references.push(p);
                    }
                    Err(_) => {
                        if let Some(q) = self.take_reference(rng) {
                            batch.push(self.entry(Mapping::Zero, Mapping::Data(q)));
                        }
                    }
                },
                3 | 4 if !self.references.is_empty() => {
                    let p = self.references[rng.below(self.references.len())];
                    if self.depot.try_share(p) == Share::Shared {
                        let new = Mapping::Compressed { pbn: p, slot: 1 };
                        batch.push(self.entry(new, Mapping::Unmapped));
                        self.references.push(p);
                    }
                }
                5 | 6 => {
                    if let Some(q) = self.take_reference(rng) {
                        batch.push(self.entry(Mapping::Zero, Mapping::Data(q)));
                    }
                }
                _ => {
                    if let Ok(base) = self.depot.allocate_tree_pair() {
                        self.lbn += 1;
                        batch.push(RecoveryJournalEntry {
                            kind: EntryKind::PageAllocation,
                            slot: 0,
                            page: Pbn(1),
                            new: Mapping::Data(base),
                            old: Mapping::Unmapped,
                            lbn: Lbn(self.lbn),
                        });
                    }
                }
            }
        }
        self.commit(batch);
        match rng.below(12) {
            0 => self.checkpoint(false),
            1 if rng.below(3) == 0 => self.checkpoint(true),
            _ => {}
        }
    }
}

/// The counts every recorded entry adds up to.
fn model(layout: &Layout, events: &[Event]) -> Vec<(Pbn, u8)> {
    let mut counts: HashMap<Pbn, u8> = HashMap::new();
    for event in events {
        let Event::Record(_, entry) = event else {
            continue;
        };
        match entry.kind {
            EntryKind::DataRemap => {
                if let Some(p) = entry.new.pbn() {
                    *counts.entry(p).or_default() += 1;
                }
                if let Some(p) = entry.old.pbn() {
                    *counts.get_mut(&p).unwrap() -= 1;
                }
            }
            EntryKind::PageAllocation => {
                let base = entry.new.pbn().unwrap();
                counts.insert(base, BLOCK_MAP_REFERENCE);
                counts.insert(base.offset(1), BLOCK_MAP_REFERENCE);
            }
        }
    }
    let mut out = Vec::new();
    for slab in 0..layout.slab_count() {
        for block in 0..super::slab::data_blocks(layout) {
            let pbn = layout.data_pbn(SlabNumber(slab), SlabBlockNumber(block));
            out.push((pbn, counts.get(&pbn).copied().unwrap_or(0)));
        }
    }
    out
}

/// What the recovery journal holds after `events`: the entries since the last head move.
fn replay_of(events: &[Event]) -> Vec<(JournalPoint, RecoveryJournalEntry)> {
    let start = events
        .iter()
        .rposition(|e| matches!(e, Event::HeadMove))
        .map_or(0, |i| i + 1);
    events[start..]
        .iter()
        .filter_map(|e| match e {
            Event::Record(point, entry) => Some((*point, *entry)),
            _ => None,
        })
        .collect()
}

/// Applies the writes of `events` to `store` as a crash leaves them: every write before the
/// last flush, and each later one landed whole, torn or not at all, as `rng` says (all of them
/// whole with `all_land`).
fn crash(store: &MemoryStore, events: &[Event], rng: &mut Rng, all_land: bool) {
    let flushed = events
        .iter()
        .rposition(|e| matches!(e, Event::Flush))
        .map_or(0, |i| i + 1);
    for (i, event) in events.iter().enumerate() {
        let Event::Write(pbn, block) = event else {
            continue;
        };
        let image = if i < flushed || all_land {
            **block
        } else {
            match rng.below(4) {
                0 => continue,
                1 => {
                    let mut old = [0; 4096];
                    store.read_at(pbn.byte_offset(), &mut old).unwrap();
                    let mask = u8::try_from(1 + rng.below(254)).unwrap();
                    torn(&old, block, mask)
                }
                _ => **block,
            }
        };
        write(store, vec![(*pbn, image)]);
    }
}

fn counts_of(depot: &SlabDepot) -> Vec<(Pbn, u8)> {
    let mut counts = Vec::new();
    depot.for_each_count(&mut |pbn, c| counts.push((pbn, c)));
    counts
}

/// Writes the recovered state as the module doc says, returning the events.
fn write_recovered(depot: &mut SlabDepot) -> Vec<Event> {
    let mut events = Vec::new();
    let push = |blocks: Vec<(Pbn, Block)>, events: &mut Vec<Event>| {
        events.extend(
            blocks
                .into_iter()
                .map(|(p, b)| Event::Write(p, Box::new(b))),
        );
        events.push(Event::Flush);
    };
    push(depot.take_summary_writes(false), &mut events);
    depot.summary_durable();
    push(depot.take_slab_journal_writes(true), &mut events);
    push(depot.take_ref_count_writes(true), &mut events);
    depot.ref_counts_durable();
    push(depot.take_summary_writes(true), &mut events);
    events
}

/// Recovers the crash image `image` and checks the counts; then crashes while writing the
/// recovered state at a random point, recovers again and checks again; then writes it all and
/// checks a clean open.
fn recover_and_check(layout: Layout, image: &[u8], history: &[Event], rng: &mut Rng) {
    let replay = replay_of(history);
    let expected = model(&layout, history);
    let store = MemoryStore::from_image(image.to_vec());
    let mut depot = SlabDepot::open_dirty(&store, layout, NONCE, &replay).unwrap();
    assert_eq!(counts_of(&depot), expected, "first recovery");
    let events = write_recovered(&mut depot);
    let cut = rng.below(events.len() + 1);
    let again = MemoryStore::from_image(image.to_vec());
    crash(&again, &events[..cut], rng, false);
    let depot = SlabDepot::open_dirty(&again, layout, NONCE, &replay).unwrap();
    assert_eq!(
        counts_of(&depot),
        expected,
        "recovery after a crash at {cut}"
    );
    crash(&store, &events, rng, true);
    let clean = SlabDepot::open(&store, layout, NONCE).unwrap();
    assert_eq!(counts_of(&clean), expected, "clean open after recovery");
}

fn crash_everywhere(layout: Layout, seed: u64, steps: usize) {
    let mut rng = Rng(seed);
    let mut sim = Sim::new(layout);
    for _ in 0..steps {
        sim.step(&mut rng);
    }
    let size = layout.physical_blocks().to_bytes();
    // The volume exists once its format is durable.
    let formatted = sim
        .events
        .iter()
        .position(|e| matches!(e, Event::Flush))
        .unwrap()
        + 1;
    for cut in formatted..=sim.events.len() {
        let history = &sim.events[..cut];
        let store = MemoryStore::new(size);
        let all_land = rng.below(4) == 0;
        crash(&store, history, &mut rng, all_land);
        let image = store.snapshot();
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            recover_and_check(layout, &image, history, &mut Rng(seed ^ cut as u64));
        }));
        assert!(result.is_ok(), "seed {seed:#x}, crash after event {cut}");
    }
}

#[test]
fn every_crash_point_recovers_the_model_counts_twice_over() {
    for seed in 0..12_u64 {
        crash_everywhere(layout(16, 2, 3), 0x5eed_0000 + seed, 60);
        crash_everywhere(layout(32, 3, 2), 0x7eed_0000 + seed, 60);
    }
}

#[test]
fn the_crash_harness_notices_a_wrong_model() {
    // A recovery that ignored the replayed entries would fail this check.
    let mut sim = Sim::new(layout(16, 8, 1));
    let p = sim.depot.allocate_data().unwrap();
    let entry = sim.entry(Mapping::Data(p), Mapping::Unmapped);
    sim.commit(vec![entry]);
    let depot = SlabDepot::open_dirty(&sim.store, sim.layout, NONCE, &Vec::new()).unwrap();
    assert_ne!(counts_of(&depot), model(&sim.layout, &sim.events));
    let replay = replay_of(&sim.events);
    let depot = SlabDepot::open_dirty(&sim.store, sim.layout, NONCE, &replay).unwrap();
    assert_eq!(counts_of(&depot), model(&sim.layout, &sim.events));
}

#[test]
fn one_entry_whose_changes_straddle_a_block_boundary_is_replayed_once() {
    let mut sim = Sim::new(layout(16, 8, 1));
    let p = sim.depot.allocate_data().unwrap();
    let first = sim.entry(Mapping::Data(p), Mapping::Unmapped);
    sim.record(first);
    // Each remap of p onto itself adds an increment then a decrement: after 503 of them the
    // block holds 1007 entries, and the 504th puts its decrement in the next block.
    for _ in 0..504 {
        assert_eq!(sim.depot.try_share(p), Share::Shared);
        let entry = sim.entry(Mapping::Data(p), Mapping::Data(p));
        sim.record(entry);
    }
    sim.mark();
    let full = sim.depot.take_slab_journal_writes(false);
    assert_eq!(full.len(), 1);
    sim.write(full);
    let replay = replay_of(&sim.events);
    let depot = SlabDepot::open_dirty(&sim.store, sim.layout, NONCE, &replay).unwrap();
    assert_eq!(depot.count(p), Some(1));
    let slab = &depot.slabs[0];
    assert_eq!(slab.journal.next_write(), SequenceNumber(2));
    assert_eq!(slab.journal.tail(), 3, "the decrement waits in sequence 2");
}

/// Counts the bytes read in each PBN range.
#[derive(Debug)]
struct CountingStore<'a> {
    inner: &'a MemoryStore,
    reads: Mutex<Vec<(u64, usize)>>,
}

impl Storage for CountingStore<'_> {
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<(), IoError> {
        self.reads.lock().unwrap().push((offset, buf.len()));
        self.inner.read_at(offset, buf)
    }

    fn write_at(&self, offset: u64, buf: &[u8]) -> Result<(), IoError> {
        self.inner.write_at(offset, buf)
    }

    fn flush(&self) -> Result<(), IoError> {
        self.inner.flush()
    }

    fn size_bytes(&self) -> u64 {
        self.inner.size_bytes()
    }
}

impl CountingStore<'_> {
    fn read_journal_of(&self, layout: &Layout, slab: u32) -> bool {
        let region = super::slab::journal_region(layout, SlabNumber(slab));
        let start = region.start.byte_offset();
        let end = region.start.offset(region.blocks).byte_offset();
        let reads = self.reads.lock().unwrap();
        reads
            .iter()
            .any(|&(offset, len)| offset < end && offset + len as u64 > start)
    }
}

#[test]
fn slabs_clean_in_the_summary_are_not_scanned_unless_replay_touches_them() {
    let layout = layout(16, 8, 3);
    let mut sim = Sim::new(layout);
    let mut rng = Rng(7);
    for _ in 0..20 {
        sim.step(&mut rng);
    }
    sim.checkpoint(true);
    // After the clean close, one new reference: only its slab becomes dirty.
    let p = sim.depot.allocate_data().unwrap();
    let entry = sim.entry(Mapping::Data(p), Mapping::Unmapped);
    sim.commit(vec![entry]);
    let (slab, _) = layout.slab_of(p).unwrap();
    let replay = replay_of(&sim.events);
    let counting = CountingStore {
        inner: &sim.store,
        reads: Mutex::new(Vec::new()),
    };
    let depot = SlabDepot::open_dirty(&counting, layout, NONCE, &replay).unwrap();
    assert_eq!(counts_of(&depot), model(&layout, &sim.events));
    for other in 0..3 {
        assert_eq!(
            counting.read_journal_of(&layout, other),
            other == slab.0,
            "slab {other}"
        );
    }
    // A replayed entry in a slab the summary calls clean (its dirty mark lost): scanned too.
    let other = (slab.0 + 1) % 3;
    let free = model(&layout, &sim.events)
        .into_iter()
        .find(|&(pbn, count)| count == 0 && layout.slab_of(pbn).unwrap().0 == SlabNumber(other));
    let q = free.expect("a free block in the other slab").0;
    let mut replay = replay;
    let at = JournalPoint {
        sequence: SequenceNumber(1000),
        entry: 0,
    };
    replay.push((at, remap_entry(999, Mapping::Data(q), Mapping::Unmapped)));
    let counting = CountingStore {
        inner: &sim.store,
        reads: Mutex::new(Vec::new()),
    };
    let depot = SlabDepot::open_dirty(&counting, layout, NONCE, &replay).unwrap();
    assert!(counting.read_journal_of(&layout, other));
    assert_eq!(depot.count(q), Some(1));
}

#[test]
fn damaged_twins_and_impossible_counts_are_errors_not_panics() {
    let layout = layout(16, 8, 2);
    let mut sim = Sim::new(layout);
    let p = sim.depot.allocate_data().unwrap();
    let entry = sim.entry(Mapping::Data(p), Mapping::Unmapped);
    sim.commit(vec![entry]);
    sim.write_ref_counts(true);
    let replay = replay_of(&sim.events);
    let (slab, _) = layout.slab_of(p).unwrap();
    let base = layout.ref_counts_base(slab, 0);
    // A decrement of a free block, and an increment of a tree page.
    let free = layout.data_pbn(slab, SlabBlockNumber(4));
    let next = JournalPoint {
        sequence: SequenceNumber(500),
        entry: 0,
    };
    for bad in [
        remap_entry(77, Mapping::Zero, Mapping::Data(free)),
        remap_entry(78, Mapping::Data(Pbn(2)), Mapping::Unmapped),
    ] {
        let mut replay = replay.clone();
        replay.push((next, bad));
        let result = SlabDepot::open_dirty(&sim.store, layout, NONCE, &replay);
        assert!(
            matches!(result, Err(VolumeError::Invariant { .. })),
            "{result:?}"
        );
    }
    // Replayed out of order.
    let mut backwards = replay.clone();
    backwards.push(replay[0]);
    let result = SlabDepot::open_dirty(&sim.store, layout, NONCE, &backwards);
    assert!(matches!(result, Err(VolumeError::Invariant { .. })));
    // One torn slot falls back to the other; both damaged is corruption.
    let mut block = [0; 4096];
    sim.store.read_at(base.byte_offset(), &mut block).unwrap();
    write(&sim.store, vec![(base, torn(&block, &[0x5a; 4096], 0x0f))]);
    let depot = SlabDepot::open_dirty(&sim.store, layout, NONCE, &replay).unwrap();
    assert_eq!(depot.count(p), Some(1));
    write(&sim.store, vec![(base.offset(1), [0xa5; 4096])]);
    match SlabDepot::open_dirty(&sim.store, layout, NONCE, &replay) {
        Err(VolumeError::Corrupt(e)) => assert_eq!(e.structure, BlockType::RefCounts),
        other => panic!("expected corrupt reference counts, got {other:?}"),
    }
}
