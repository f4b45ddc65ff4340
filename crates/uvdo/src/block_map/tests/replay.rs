//! Crash recovery: journal replay onto the pages a crash left, against a model of the journal.
//!
//! Every `prepare` allocation and every `set` is recorded as the journal entry the engine
//! would append, each at its own point. A checkpoint writes everything; later page writes are
//! in flight until the next write batch (the engine flushes between batches), and a crash
//! loses, keeps or tears each in-flight write. A new map then replays the window and must hold
//! exactly what the durable journal prefix says.

use uvdo_format::recovery_journal::{EntryKind, RecoveryJournalEntry};

use super::*;

/// One journal entry as the engine would have appended it.
#[derive(Clone, Copy, Debug)]
struct Logged {
    point: JournalPoint,
    entry: RecoveryJournalEntry,
    /// For an allocation, the new page's level.
    level: u8,
}

/// A page write that reached the store's cache but not yet a flush.
struct InFlight {
    at: Pbn,
    old: Block,
    new: Block,
}

/// What a crash does to one in-flight write.
#[derive(Clone, Copy, Debug)]
enum Fate {
    Lost,
    Landed,
    Torn(u8),
}

struct Journal {
    log: Vec<Logged>,
    in_flight: Vec<InFlight>,
    /// Entries the journal must hold durably: the engine commits through the newest dirty
    /// point before it takes dirty pages.
    durable_min: usize,
}

impl Journal {
    fn new() -> Self {
        Self {
            log: Vec::new(),
            in_flight: Vec::new(),
            durable_min: 0,
        }
    }
}

fn next_point(sequence: &mut u64) -> JournalPoint {
    *sequence += 1;
    JournalPoint {
        sequence: SequenceNumber(*sequence),
        entry: 0,
    }
}

/// Prepares and sets `lbn`, logging an entry per allocation and one for the remap.
fn put(fx: &mut Fixture, map: &mut BlockMap, journal: &mut Journal, lbn: u64, new: Mapping) {
    let (allocator, sequence, log) = (&mut fx.allocator, &mut fx.sequence, &mut journal.log);
    let leaf = map
        .prepare(&fx.store, Lbn(lbn), &mut |request| {
            let point = next_point(sequence);
            let (child, point) = allocator.allocate(request, point)?;
            let entry = RecoveryJournalEntry {
                kind: EntryKind::PageAllocation,
                slot: request.slot,
                page: request.parent,
                new: Mapping::Data(child),
                old: Mapping::Unmapped,
                lbn: Lbn(lbn),
            };
            log.push(Logged {
                point,
                entry,
                level: request.level,
            });
            Ok((child, point))
        })
        .unwrap();
    let point = next_point(sequence);
    assert_eq!(map.set(Lbn(lbn), new, point).unwrap(), leaf.old);
    let entry = RecoveryJournalEntry {
        kind: EntryKind::DataRemap,
        slot: leaf.slot,
        page: leaf.page,
        new,
        old: leaf.old,
        lbn: Lbn(lbn),
    };
    log.push(Logged {
        point,
        entry,
        level: LEAF_LEVEL,
    });
}

/// Flushes the previous batch, then takes the pages first dirtied at or before `upto` and
/// writes them, in flight until the next batch or a crash.
fn write_batch(fx: &Fixture, map: &mut BlockMap, journal: &mut Journal, upto: SequenceNumber) {
    journal.in_flight.clear();
    journal.durable_min = journal.log.len();
    for (at, new) in map.take_dirty(upto) {
        let old = fx.read(at);
        fx.write(&[(at, new)]);
        journal.in_flight.push(InFlight { at, old, new });
    }
}

/// Applies `fates` (cycled; all landed when empty) to the in-flight writes and forgets them.
fn crash(fx: &Fixture, journal: &mut Journal, fates: &[Fate]) {
    for (i, write) in journal.in_flight.drain(..).enumerate() {
        let fate = fates.get(i % fates.len().max(1)).copied();
        let block = match fate.unwrap_or(Fate::Landed) {
            Fate::Lost => write.old,
            Fate::Landed => write.new,
            Fate::Torn(mask) => torn(&write.old, &write.new, mask),
        };
        fx.write(&[(write.at, block)]);
    }
}

/// A fresh map that replays `window` as recovery does, in one call.
fn recover(fx: &Fixture, cache_pages: usize, window: &[Logged]) -> BlockMap {
    let mut map = fx.open(cache_pages);
    let entries: Vec<_> = window.iter().map(|l| (l.point, l.entry)).collect();
    map.replay_entries(&fx.store, &entries)
        .unwrap_or_else(|e| panic!("replaying {} entries: {e}", window.len()));
    map
}

/// Replays `window` one entry per call: no run of remaps reuses a leaf.
fn replay_all(fx: &Fixture, map: &mut BlockMap, window: &[Logged]) {
    for logged in window {
        map.replay(&fx.store, logged.point, &logged.entry)
            .unwrap_or_else(|e| panic!("replaying {logged:?}: {e}"));
    }
}

/// What a journal prefix says: every mapping in LBN order, and every tree page.
struct JournalSays {
    mappings: Vec<(u64, Mapping)>,
    pages: BTreeSet<(Pbn, u8)>,
}

fn model_of(log: &[Logged]) -> JournalSays {
    let mut live = BTreeMap::new();
    let mut pages = BTreeSet::new();
    for logged in log {
        match (logged.entry.kind, logged.entry.new) {
            (EntryKind::PageAllocation, Mapping::Data(child)) => {
                pages.insert((child, logged.level));
            }
            (EntryKind::PageAllocation, other) => panic!("allocation of {other:?}"),
            (EntryKind::DataRemap, m) if m.is_mapped() => {
                live.insert(logged.entry.lbn.0, m);
            }
            (EntryKind::DataRemap, _) => {
                live.remove(&logged.entry.lbn.0);
            }
        }
    }
    JournalSays {
        mappings: model_mappings(&live),
        pages,
    }
}

fn tree_pages(map: &mut BlockMap, store: &dyn Storage) -> BTreeSet<(Pbn, u8)> {
    let mut pages = BTreeSet::new();
    map.for_each_tree_page(store, &mut |base, level| {
        assert!(pages.insert((base, level)), "page {base} seen twice");
    })
    .unwrap();
    pages
}

fn assert_matches_model(fx: &Fixture, map: &mut BlockMap, log: &[Logged], what: &str) {
    let expected = model_of(log);
    assert_eq!(
        mappings(map, &fx.store),
        expected.mappings,
        "{what}: mappings"
    );
    assert_eq!(
        tree_pages(map, &fx.store),
        expected.pages,
        "{what}: tree pages"
    );
    for &(lbn, mapping) in &expected.mappings {
        assert_eq!(
            map.lookup(&fx.store, Lbn(lbn)).unwrap(),
            mapping,
            "{what}: LBN {lbn}"
        );
    }
}

fn corrupt(result: Result<(), VolumeError>) -> FormatError {
    match result {
        Err(VolumeError::Corrupt(e)) => e,
        other => panic!("expected a Corrupt error, got {other:?}"),
    }
}

#[test]
fn nothing_written_after_the_checkpoint_replays_to_the_journal() {
    let mut fx = Fixture::new(2, 16);
    let mut journal = Journal::new();
    let mut map = fx.open(4);
    for (i, &lbn) in (1_u64..).zip(&spread_lbns()[..6]) {
        put(&mut fx, &mut map, &mut journal, lbn, data(i));
    }
    fx.flush(&mut map);
    let head = journal.log.len();
    for (i, &lbn) in (100_u64..).zip(&spread_lbns()) {
        put(&mut fx, &mut map, &mut journal, lbn, data(i));
    }
    put(&mut fx, &mut map, &mut journal, 1, Mapping::Unmapped);
    // The crash loses every page dirtied since the checkpoint.
    let mut recovered = recover(&fx, 2, &journal.log[head..]);
    assert!(
        recovered.dirty_pages() > 2,
        "dirty pages stay past the budget"
    );
    assert_matches_model(&fx, &mut recovered, &journal.log, "once");
    replay_all(&fx, &mut recovered, &journal.log[head..]);
    assert_matches_model(&fx, &mut recovered, &journal.log, "twice");
    // Recovery writes its pages; the tree is whole on disk without the journal.
    fx.flush(&mut recovered);
    assert_matches_model(
        &fx,
        &mut fx.open(2),
        &journal.log,
        "after recovery's writes",
    );
}

#[test]
fn a_child_whose_twins_were_never_written_is_recreated_empty() {
    let mut fx = Fixture::new(1, 4);
    let mut journal = Journal::new();
    let mut map = fx.open(8);
    let lbn = ENTRIES_PER_PAGE_U64 * 3 + 9;
    put(&mut fx, &mut map, &mut journal, lbn, data(7));
    // Only the root reaches disk: it points at a level-3 page that was never written.
    let root = fx.layout.root_base(0);
    let blocks = map.take_dirty(ALL);
    let root_write: Vec<_> = blocks
        .into_iter()
        .filter(|(at, _)| at.0.wrapping_sub(root.0) < 2)
        .collect();
    assert_eq!(root_write.len(), 1);
    fx.write(&root_write);
    let problem = corrupt_problem(fx.open(4).lookup(&fx.store, Lbn(lbn)));
    assert_eq!(
        problem,
        Problem::Unwritten,
        "the disk points at an unwritten page"
    );
    let mut recovered = recover(&fx, 2, &journal.log);
    assert_eq!(recovered.lookup(&fx.store, Lbn(lbn)).unwrap(), data(7));
    // The root already pointed at the child: only the four recreated pages are dirty.
    assert_eq!(recovered.dirty_pages(), 4);
    assert_eq!(
        recovered.stats().tree_pages_allocated,
        0,
        "replay never allocates"
    );
    let written = recovered.take_dirty(ALL);
    for &(child, level) in &fx.allocator.handed {
        let (_, block) = written.iter().find(|(at, _)| *at == child).unwrap();
        let page = BlockMapPage::decode(block, Expected::new(NONCE, child), level).unwrap();
        assert_eq!(
            page.generation,
            SequenceNumber(1),
            "first write: slot A, generation 1"
        );
    }
    fx.write(&written);
    assert_matches_model(&fx, &mut fx.open(2), &journal.log, "after recovery");
}

#[test]
fn a_child_whose_only_write_tore_is_recreated_from_the_journal() {
    let mut fx = Fixture::new(1, 4);
    let mut journal = Journal::new();
    let mut map = fx.open(8);
    // Slots in the leaf's last sectors, so a tear keeping the first ones fails the CRC.
    put(&mut fx, &mut map, &mut journal, 700, data(1));
    put(&mut fx, &mut map, &mut journal, 701, data(2));
    write_batch(&fx, &mut map, &mut journal, ALL);
    let leaf = fx.allocator.handed[3].0;
    // Every write lands but the leaf's, which tears over the zeros it replaced.
    let fates: Vec<Fate> = journal
        .in_flight
        .iter()
        .map(|w| {
            if w.at == leaf {
                Fate::Torn(0x0f)
            } else {
                Fate::Landed
            }
        })
        .collect();
    crash(&fx, &mut journal, &fates);
    let problem = corrupt_problem(fx.open(4).lookup(&fx.store, Lbn(700)));
    assert!(matches!(problem, Problem::Checksum { .. }), "{problem:?}");
    let mut recovered = recover(&fx, 2, &journal.log);
    assert_eq!(recovered.dirty_pages(), 1, "only the leaf is rebuilt");
    assert_matches_model(&fx, &mut recovered, &journal.log, "recovered");
}

#[test]
fn entries_that_disagree_with_the_tree_are_corrupt_not_panics() {
    let mut fx = Fixture::new(1, 4);
    let mut journal = Journal::new();
    let mut map = fx.open(8);
    put(&mut fx, &mut map, &mut journal, 3, data(1));
    fx.flush(&mut map);
    let allocation = journal.log[0];
    let remap = *journal.log.last().unwrap();
    let leaf = remap.entry.page;
    let point = JournalPoint::default();
    let mut recovered = fx.open(4);
    let remap_with = |f: &dyn Fn(&mut RecoveryJournalEntry)| {
        let mut e = remap.entry;
        f(&mut e);
        e
    };
    let allocation_with = |f: &dyn Fn(&mut RecoveryJournalEntry)| {
        let mut e = allocation.entry;
        f(&mut e);
        e
    };
    let unused_pair = fx.layout.data_pbn(SlabNumber(1), SlabBlockNumber(0));
    let level_2_page = fx.allocator.handed[1].0;
    let bad = [
        // A remap naming another page than the LBN's leaf.
        remap_with(&|e| e.page = fx.allocator.handed[2].0),
        // A remap under a subtree nothing allocated.
        remap_with(&|e| e.lbn = Lbn(ENTRIES_PER_PAGE_U64 * ENTRIES_PER_PAGE_U64 * 9 + 3)),
        // Slots out of range or not the LBN's; an LBN out of range.
        remap_with(&|e| e.slot = 812),
        remap_with(&|e| e.slot = 4),
        allocation_with(&|e| e.slot = u16::MAX),
        remap_with(&|e| e.lbn = Lbn(LBN_LIMIT)),
        // A remap to a mapping no leaf can hold.
        remap_with(&|e| e.new = Mapping::Data(Pbn(PBN_MAX + 1))),
        // An allocation whose parent is not on the LBN's path (a leaf is no parent).
        allocation_with(&|e| e.page = leaf),
        // An allocation at the wrong slot of the right parent.
        allocation_with(&|e| e.slot += 1),
        // An allocation of a non-page, and of a pair that is no tree page.
        allocation_with(&|e| e.new = Mapping::Zero),
        allocation_with(&|e| e.new = Mapping::Data(fx.layout.journal_start())),
        // An allocation into a slot that already holds another child.
        allocation_with(&|e| e.new = Mapping::Data(unused_pair)),
        // An allocation of a page already in the tree at another level (now resident).
        allocation_with(&|e| e.new = Mapping::Data(level_2_page)),
    ];
    for entry in &bad {
        let e = corrupt(recovered.replay(&fx.store, point, entry));
        assert!(
            matches!(e.problem, Problem::InvalidField { .. }),
            "{entry:?}: {e}"
        );
    }
    assert_eq!(
        recovered.dirty_pages(),
        0,
        "no refused entry changed a page"
    );
    for logged in &journal.log {
        recovered.replay(&fx.store, point, &logged.entry).unwrap();
    }
    assert_eq!(recovered.dirty_pages(), 0, "everything was already on disk");
    assert_matches_model(&fx, &mut recovered, &journal.log, "after the refusals");
}

/// What replay left dirty, page by page: taking the pages in the order of their oldest
/// points, the blocks `take_dirty` encodes and the oldest and newest points still dirty.
fn dirty_state(map: &mut BlockMap, window: &[Logged]) -> Vec<DirtyStep> {
    let mut steps = Vec::new();
    for logged in window {
        let points = (map.oldest_dirty_point(), map.newest_dirty_point());
        steps.push((points.0, points.1, map.take_dirty(logged.point.sequence)));
    }
    steps
}

type DirtyStep = (
    Option<JournalPoint>,
    Option<JournalPoint>,
    Vec<(Pbn, Block)>,
);

#[test]
fn runs_of_remaps_into_one_leaf_replay_as_entries_one_by_one() {
    let mut fx = Fixture::new(2, 48);
    let mut journal = Journal::new();
    let mut map = fx.open(8);
    let e = ENTRIES_PER_PAGE_U64;
    // Sequential LBNs across leaf boundaries, in both trees, then the same LBNs again with
    // some mappings unchanged (a remap that changes nothing leaves its leaf clean).
    let lbns: Vec<u64> = (e - 5..e + 9).chain(3 * e - 2..3 * e + 2).collect();
    for (i, &lbn) in (1_u64..).zip(&lbns) {
        put(&mut fx, &mut map, &mut journal, lbn, data(i));
    }
    fx.flush(&mut map);
    let head = journal.log.len();
    for (i, &lbn) in (1_u64..).zip(&lbns) {
        let mapping = if i % 3 == 0 { data(i) } else { data(i + 500) };
        put(&mut fx, &mut map, &mut journal, lbn, mapping);
    }
    put(&mut fx, &mut map, &mut journal, e * e * 5, data(900));
    put(&mut fx, &mut map, &mut journal, e - 4, Mapping::Unmapped);
    // A last run into a leaf already dirty: its newest point is the window's.
    for lbn in e + 1..e + 5 {
        put(&mut fx, &mut map, &mut journal, lbn, data(lbn + 700));
    }
    let window = &journal.log[head..];
    let mut one_by_one = fx.open(4);
    replay_all(&fx, &mut one_by_one, window);
    let mut runs = recover(&fx, 4, window);
    let last = window.last().map(|l| l.point);
    assert_eq!(
        runs.newest_dirty_point(),
        last,
        "the last entry changed a page"
    );
    assert_eq!(
        dirty_state(&mut runs, window),
        dirty_state(&mut one_by_one, window)
    );
}

#[derive(Clone, Debug)]
enum Op {
    Set(usize, Mapping),
    /// Write the pages first dirtied at least this many points ago.
    WriteOlder(u64),
    WriteAll,
}

fn any_op() -> impl Strategy<Value = Op> {
    prop_oneof![
        8 => (any::<usize>(), any_mapping()).prop_map(|(i, m)| Op::Set(i, m)),
        1 => (0_u64..8).prop_map(Op::WriteOlder),
        1 => Just(Op::WriteAll),
    ]
}

fn any_fate() -> impl Strategy<Value = Fate> {
    prop_oneof![
        Just(Fate::Lost),
        Just(Fate::Landed),
        any::<u8>().prop_map(Fate::Torn),
    ]
}

#[derive(Clone, Debug)]
/// One crash scenario; `head_back` and `extra` pick the replay window and the durable prefix.
struct Scenario {
    lbns: Vec<u64>,
    before: Vec<Op>,
    after: Vec<Op>,
    fates: Vec<Fate>,
    recovery_fates: Vec<Fate>,
    cache_pages: usize,
    root_count: u8,
    head_back: usize,
    extra: usize,
}

fn apply(fx: &mut Fixture, map: &mut BlockMap, journal: &mut Journal, lbns: &[u64], op: &Op) {
    match *op {
        Op::Set(i, mapping) => put(fx, map, journal, lbns[i % lbns.len()], mapping),
        Op::WriteOlder(age) => {
            let upto = SequenceNumber(fx.sequence.saturating_sub(age));
            write_batch(fx, map, journal, upto);
        }
        Op::WriteAll => write_batch(fx, map, journal, ALL),
    }
}

fn run_scenario(s: &Scenario) {
    let mut fx = Fixture::new(s.root_count, 48);
    let mut journal = Journal::new();
    let mut map = fx.open(s.cache_pages);
    for op in &s.before {
        apply(&mut fx, &mut map, &mut journal, &s.lbns, op);
    }
    // The checkpoint: everything written and flushed; the head moves to here.
    write_batch(&fx, &mut map, &mut journal, ALL);
    journal.in_flight.clear();
    let checkpoint = journal.log.len();
    for op in &s.after {
        apply(&mut fx, &mut map, &mut journal, &s.lbns, op);
    }
    crash(&fx, &mut journal, &s.fates);
    // An older head only replays entries already on disk again; any durable prefix that
    // covers the written pages may survive.
    let head = checkpoint - s.head_back % (checkpoint + 1);
    let durable_min = journal.durable_min.max(checkpoint);
    let durable = durable_min + s.extra % (journal.log.len() - durable_min + 1);
    let log = journal.log.clone();
    let (window, survived) = (&log[head..durable], &log[..durable]);
    let mut recovered = recover(&fx, s.cache_pages, window);
    assert_matches_model(&fx, &mut recovered, survived, "replayed once");
    replay_all(&fx, &mut recovered, window);
    assert_matches_model(&fx, &mut recovered, survived, "replayed twice");
    // A crash while recovery writes its pages, then recovery again from the same head.
    write_batch(&fx, &mut recovered, &mut journal, ALL);
    crash(&fx, &mut journal, &s.recovery_fates);
    let mut again = recover(&fx, s.cache_pages, window);
    assert_matches_model(&fx, &mut again, survived, "recovered again");
    fx.flush(&mut again);
    let mut reopened = fx.open(s.cache_pages);
    assert_matches_model(&fx, &mut reopened, survived, "reopened after recovery");
}

fn any_scenario() -> impl Strategy<Value = Scenario> {
    let ops = || proptest::collection::vec(any_op(), 0..24);
    let fates = || proptest::collection::vec(any_fate(), 0..16);
    (
        proptest::collection::vec(any_lbn(), 1..10),
        (ops(), ops()),
        (fates(), fates()),
        (2_usize..6, 1_u8..=3),
        (any::<usize>(), any::<usize>()),
    )
        .prop_map(
            |(lbns, (before, after), (fates, recovery_fates), (cache, roots), (back, extra))| {
                Scenario {
                    lbns,
                    before,
                    after,
                    fates,
                    recovery_fates,
                    cache_pages: cache,
                    root_count: roots,
                    head_back: back,
                    extra,
                }
            },
        )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn replay_after_any_crash_matches_the_durable_journal(s in any_scenario()) {
        run_scenario(&s);
    }
}
