//! SPEC section 5, each injected fault and its exact outcome, on the simulated store:
//!
//! | fault | outcome |
//! |---|---|
//! | data read EIO | that read fails (EIO); normal |
//! | dedupe-verify read EIO | the write is stored as a new block; normal; data correct |
//! | data write EIO | the write fails; read-only; earlier data reads |
//! | metadata write EIO (each structure) | read-only, the structure and PBN recorded |
//! | flush failure | read-only |
//! | physical space exhausted | `NoSpace`; normal (tests/space.rs) |
//! | damaged block map page | read-only (block map page, PBN); that request fails (EIO) |
//! | damaged reference counts or summary | open fails `Corrupt`; read-only persisted |
//! | one damaged super block slot | opens from the other |
//! | both super block slots damaged | open fails `Corrupt`, nothing written |
//! | damaged geometry | `NotAVolume` |
//!
//! Read-only mode, its reason and structure persist across reopen, and opening a read-only
//! volume, dirty or clean, writes nothing.

mod common;

use std::ops::Range;
use std::sync::Arc;

use common::{BLOCK, BLOCK_U64, Data, read_block, unique_block, write_block};
use uvdo::{FormatConfig, OpenOptions, OperatingMode, Volume, VolumeError};
use uvdo_format::geometry::Geometry;
use uvdo_format::layout::{Layout, RegionId};
use uvdo_format::super_block::{ReadOnlyReason, SuperBlock, WritePolicy};
use uvdo_format::{BlockCount, BlockType, Problem, SlabNumber};
use uvdo_io::Storage;
use uvdo_io::sim::{FaultEffect, FaultRule, SimStore, Trigger};

const STORE_BYTES: u64 = 4 << 20;
const LOGICAL_BLOCKS: u64 = 2048;
/// An LBN under block map root 1 (LBN 0 is under root 0).
const OTHER_LBN: u64 = 812;

/// The tiny geometry with two block map roots.
fn config() -> FormatConfig {
    FormatConfig {
        root_count: 2,
        ..common::tiny(LOGICAL_BLOCKS)
    }
}

/// A big cache, so that a read after the first of an LBN touches no block map page.
fn options() -> OpenOptions {
    OpenOptions {
        block_map_cache_pages: Some(64),
        ..OpenOptions::default()
    }
}

fn layout() -> Layout {
    let physical = BlockCount(STORE_BYTES / BLOCK_U64);
    Layout::compute(config().layout_params(), physical).expect("layout")
}

fn new_volume() -> (Arc<SimStore>, Volume) {
    let store = Arc::new(SimStore::with_seed(STORE_BYTES, 7));
    Volume::format(&*store, &config()).expect("format");
    let volume = open(&store).expect("open after format");
    (store, volume)
}

fn open(store: &Arc<SimStore>) -> Result<Volume, VolumeError> {
    Volume::open(Arc::clone(store) as Arc<dyn Storage>, &options())
}

/// The byte range of the blocks `blocks` from `start`.
fn blocks(start: u64, count: u64) -> Range<u64> {
    start * BLOCK_U64..(start + count) * BLOCK_U64
}

fn region(id: RegionId) -> Range<u64> {
    let region = config()
        .layout_params()
        .regions()
        .expect("regions")
        .into_iter()
        .find(|r| r.id == id)
        .expect("region");
    blocks(region.start.0, region.blocks.0)
}

/// Where the data block holding `data` was written, from the store's log.
fn data_offset(store: &SimStore, data: &Data) -> u64 {
    store
        .events()
        .iter()
        .find_map(|event| match event {
            uvdo_io::sim::Event::Write {
                offset, data: d, ..
            } if **d == data[..] => Some(*offset),
            _ => None,
        })
        .expect("the data block was written")
}

/// The read-only reason the super block on `store` records.
fn persisted_reason(store: &dyn Storage) -> Option<ReadOnlyReason> {
    let mut block = [0; BLOCK];
    store.read_at(0, &mut block).expect("read geometry");
    let nonce = Geometry::decode(&block).expect("geometry").nonce;
    let mut b = [0; BLOCK];
    store.read_at(BLOCK_U64, &mut block).expect("read slot A");
    store.read_at(2 * BLOCK_U64, &mut b).expect("read slot B");
    let chosen = SuperBlock::read_twins(&block, &b, nonce).expect("super block");
    chosen.value.read_only_reason
}

fn assert_errno(result: Result<(), VolumeError>, errno: i32, what: &str) {
    match result {
        Err(e) => assert_eq!(e.errno(), errno, "{what}: {e}"),
        Ok(()) => panic!("{what}: succeeded"),
    }
}

/// Every kind of update fails with `ReadOnly` (EROFS); reads of `lbn` still return `data`.
fn assert_read_only(volume: &Volume, lbn: u64, data: &Data) {
    assert_eq!(volume.operating_mode(), OperatingMode::ReadOnly);
    let stats = volume.stats();
    assert_eq!(stats.operating_mode, "read-only", "{stats:#?}");
    assert!(stats.read_only_reason.is_some(), "{stats:#?}");
    let block = unique_block(999);
    assert_errno(volume.write(0, &block, false), libc::EROFS, "write");
    assert_errno(volume.trim(0, BLOCK_U64), libc::EROFS, "trim");
    assert_errno(
        volume.write_zeroes(0, BLOCK_U64),
        libc::EROFS,
        "write_zeroes",
    );
    assert!(
        read_block(volume, lbn) == *data,
        "LBN {lbn} after read-only"
    );
}

/// Reopens `store` and checks it is read-only with `reason`, having written nothing.
fn assert_reopens_read_only(store: &Arc<SimStore>, reason: &ReadOnlyReason) -> Volume {
    let events = store.event_count();
    let volume = open(store).expect("reopen read-only");
    assert_eq!(
        store.event_count(),
        events,
        "opening a read-only volume wrote"
    );
    assert_eq!(volume.operating_mode(), OperatingMode::ReadOnly);
    assert_eq!(persisted_reason(&**store).as_ref(), Some(reason));
    volume
}

#[test]
fn data_read_eio_fails_that_read_and_mode_stays_normal() {
    let (store, volume) = new_volume();
    let data = unique_block(1);
    write_block(&volume, 1, &data);
    volume.flush().expect("flush");
    assert!(read_block(&volume, 1) == data, "warms the block map cache");
    let at = data_offset(&store, &data);
    store.inject(
        FaultRule::new(Trigger::Countdown(1), FaultEffect::ReadError).in_range(at..at + 4096),
    );
    let mut buf = [0; BLOCK];
    assert_errno(volume.read(BLOCK_U64, &mut buf), libc::EIO, "faulted read");
    assert_eq!(volume.operating_mode(), OperatingMode::Normal);
    assert!(read_block(&volume, 1) == data, "the next read works");
    write_block(&volume, 2, &unique_block(2));
    volume.close().expect("close");
    assert_eq!(persisted_reason(&*store), None);
}

#[test]
fn dedupe_verify_read_eio_stores_the_write_as_a_new_block() {
    let (store, volume) = new_volume();
    let data = unique_block(1);
    write_block(&volume, 0, &data);
    volume.flush().expect("flush");
    let at = data_offset(&store, &data);
    store.inject(
        FaultRule::new(Trigger::Countdown(1), FaultEffect::ReadError).in_range(at..at + 4096),
    );
    write_block(&volume, 1, &data);
    let stats = volume.stats();
    assert_eq!(stats.operating_mode, "normal", "{stats:#?}");
    assert_eq!(stats.dedupe_advice_valid, 0, "{stats:#?}");
    assert_eq!(stats.data_blocks_used, 2, "a new block: {stats:#?}");
    assert!(read_block(&volume, 0) == data);
    assert!(read_block(&volume, 1) == data);
    common::assert_audit_clean(&volume, "after the verify read failed");
    volume.close().expect("close");
}

#[test]
fn data_write_eio_fails_the_write_and_enters_read_only_for_good() {
    data_write_eio(WritePolicy::Sync);
}

#[test]
fn data_write_eio_after_the_ack_fails_the_flush_and_enters_read_only_for_good() {
    data_write_eio(WritePolicy::Async);
}

/// A data write fails with EIO: under sync the write that waits for it fails; under async
/// the write was acknowledged from the staging, and the flush that writes it fails. Either
/// way the volume is read-only for good, and reads still return what was acknowledged.
fn data_write_eio(policy: WritePolicy) {
    let (store, volume) = new_volume();
    volume
        .set_write_policy(policy, Some(true))
        .expect("set policy");
    let data = unique_block(1);
    write_block(&volume, 0, &data);
    volume.flush().expect("flush");
    write_block(&volume, 2, &unique_block(2));
    let depot = region(RegionId::SlabDepot).start..STORE_BYTES;
    store.inject(FaultRule::new(Trigger::Countdown(1), FaultEffect::WriteError).in_range(depot));
    let third = unique_block(3);
    let written = volume.write(BLOCK_U64, &third, false);
    if policy == WritePolicy::Sync {
        assert_errno(written, libc::EIO, "write");
    } else {
        written.expect("an async write is acknowledged before its data is written");
        assert_eq!(
            read_block(&volume, 1),
            third,
            "an acknowledged write reads back"
        );
        assert_errno(volume.flush(), libc::EIO, "the flush that writes the data");
        assert_eq!(
            read_block(&volume, 1),
            third,
            "read-only mode still reads back what was acknowledged, never the store's garbage"
        );
    }
    assert_read_only(&volume, 0, &data);
    assert_errno(volume.flush(), libc::EROFS, "flush in read-only mode");
    let reason = persisted_reason(&*store).expect("reason persisted");
    assert_eq!((reason.structure, reason.errno), (None, 5), "{reason:?}");
    let stats = volume.stats();
    assert!(stats.read_only_error_count >= 4, "{stats:#?}");
    let said = stats.read_only_reason.expect("reason");
    // Dropped without a clean close: the reopen sees a dirty read-only volume, and must not
    // recover it into normal mode.
    drop(volume);
    let volume = assert_reopens_read_only(&store, &reason);
    assert_read_only(&volume, 0, &data);
    assert_eq!(volume.stats().read_only_reason, Some(said));
    assert_eq!(
        read_block(&volume, 1),
        [0; BLOCK],
        "the failed write left nothing"
    );
    volume
        .close()
        .expect("close of a read-only volume writes nothing");
    assert_reopens_read_only(&store, &reason);
}

/// Fails every write to `range` from now, then writes and closes; the close fails, and the
/// volume is read-only with `structure` recorded at a PBN in `range`.
fn metadata_write_eio(range: Range<u64>, structure: BlockType) {
    let (store, volume) = new_volume();
    let data = unique_block(1);
    write_block(&volume, 0, &data);
    volume.flush().expect("LBN 0 durable");
    for lbn in 1..12 {
        write_block(&volume, lbn * 17, &unique_block(lbn));
    }
    let rule = FaultRule::new(Trigger::Always, FaultEffect::WriteError).in_range(range.clone());
    store.inject(rule);
    match volume.close() {
        Err(e) => assert_eq!(e.errno(), libc::EIO, "{structure}: {e}"),
        Ok(()) => panic!("{structure}: close succeeded"),
    }
    store.clear_faults();
    let reason = persisted_reason(&*store).expect("reason persisted");
    assert_eq!(reason.structure, Some(structure), "{reason:?}");
    assert!(range.contains(&reason.location.byte_offset()), "{reason:?}");
    let volume = assert_reopens_read_only(&store, &reason);
    let said = volume.stats().read_only_reason.expect("reason in stats");
    assert!(said.contains(&structure.to_string()), "{said}");
    assert_read_only(&volume, 0, &data);
}

#[test]
fn recovery_journal_write_eio_enters_read_only() {
    metadata_write_eio(
        region(RegionId::RecoveryJournal),
        BlockType::RecoveryJournal,
    );
}

#[test]
fn block_map_page_write_eio_enters_read_only() {
    metadata_write_eio(region(RegionId::BlockMapRoots), BlockType::BlockMapPage);
}

#[test]
fn slab_summary_write_eio_enters_read_only() {
    metadata_write_eio(region(RegionId::SlabSummary), BlockType::SlabSummary);
}

#[test]
fn ref_count_write_eio_enters_read_only() {
    let layout = layout();
    let start = layout.ref_counts_base(SlabNumber(0), 0).0;
    let pairs = layout.slab().ref_count_pairs.0;
    metadata_write_eio(blocks(start, 2 * pairs), BlockType::RefCounts);
}

#[test]
fn slab_journal_write_eio_enters_read_only() {
    let layout = layout();
    let slab = layout.slab();
    let end = layout.slab_start(SlabNumber(0)).0 + slab.slab_blocks.0;
    let journal = slab.journal_blocks.0;
    metadata_write_eio(blocks(end - journal, journal), BlockType::SlabJournal);
}

#[test]
fn flush_failure_enters_read_only() {
    let (store, volume) = new_volume();
    let data = unique_block(1);
    write_block(&volume, 0, &data);
    volume.flush().expect("flush");
    write_block(&volume, 1, &unique_block(2));
    store.inject(FaultRule::new(
        Trigger::Countdown(1),
        FaultEffect::FlushError,
    ));
    assert_errno(volume.flush(), libc::EIO, "failed flush");
    assert_read_only(&volume, 0, &data);
    let reason = persisted_reason(&*store).expect("reason persisted");
    assert_eq!(reason.structure, None);
    drop(volume);
    let volume = assert_reopens_read_only(&store, &reason);
    assert_read_only(&volume, 0, &data);
}

// Physical space exhausted -> `NoSpace` on the write, mode normal: tests/space.rs,
// `full_volume_refuses_new_data_then_recovers_after_trim`.

/// The ways a metadata block can be damaged on disk.
#[derive(Clone, Copy, Debug)]
enum Damage {
    BitFlip,
    Zeroed,
    /// Another volume's nonce, resealed so the CRC holds.
    WrongNonce,
    /// A valid block written for another location (a misdirected write).
    Misdirected {
        from: u64,
    },
}

const DAMAGE_KINDS: [Damage; 3] = [Damage::BitFlip, Damage::Zeroed, Damage::WrongNonce];

fn damage(store: &dyn Storage, pbn: u64, how: Damage) {
    let mut block = [0; BLOCK];
    match how {
        Damage::Misdirected { from } => {
            store.read_at(from * BLOCK_U64, &mut block).expect("read");
        }
        _ => store.read_at(pbn * BLOCK_U64, &mut block).expect("read"),
    }
    match how {
        Damage::BitFlip => block[100] ^= 0x10,
        Damage::Zeroed => block.fill(0),
        Damage::WrongNonce => {
            block[8] ^= 0xff;
            uvdo_format::damage::reseal(&mut block);
        }
        Damage::Misdirected { .. } => {}
    }
    store.write_at(pbn * BLOCK_U64, &block).expect("write");
    store.flush().expect("flush");
}

/// A closed volume with data at LBN 0 (root 0's tree) and `OTHER_LBN` (root 1's tree).
fn closed_volume() -> (Arc<SimStore>, Data, Data) {
    let (store, volume) = new_volume();
    let (a, b) = (unique_block(1), unique_block(2));
    write_block(&volume, 0, &a);
    write_block(&volume, OTHER_LBN, &b);
    volume.close().expect("close");
    (store, a, b)
}

fn root_kinds() -> Vec<Damage> {
    let other = layout().root_base(1).0;
    let mut kinds = DAMAGE_KINDS.to_vec();
    kinds.push(Damage::Misdirected { from: other });
    kinds
}

#[test]
fn damaged_block_map_page_fails_reads_with_eio_and_enters_read_only() {
    for how in root_kinds() {
        let (store, a, b) = closed_volume();
        let root = layout().root_base(0).0;
        let other = layout().root_base(1).0;
        for slot in 0..2 {
            let from = match how {
                Damage::Misdirected { .. } => Damage::Misdirected { from: other + slot },
                how => how,
            };
            damage(&*store, root + slot, from);
        }
        let volume = open(&store).expect("a clean open reads no block map page");
        assert_eq!(volume.operating_mode(), OperatingMode::Normal);
        let mut buf = [0; BLOCK];
        assert_errno(volume.read(0, &mut buf), libc::EIO, "read through the page");
        let reason = persisted_reason(&*store).expect("reason persisted");
        assert_eq!(reason.structure, Some(BlockType::BlockMapPage), "{how:?}");
        assert!(
            (root..root + 2).contains(&reason.location.0),
            "{how:?}: {reason:?}"
        );
        // Reads that do not need the page keep working; updates are refused.
        assert_read_only(&volume, OTHER_LBN, &b);
        assert_errno(volume.read(0, &mut buf), libc::EIO, "read again");
        drop(volume);
        let volume = assert_reopens_read_only(&store, &reason);
        assert_errno(volume.read(0, &mut buf), libc::EIO, "read after reopen");
        assert!(read_block(&volume, OTHER_LBN) == b);
        assert_ne!(buf, a, "{how:?}");
    }
}

#[test]
fn damaged_block_map_page_fails_writes_with_eio_and_enters_read_only() {
    let (store, _a, b) = closed_volume();
    let root = layout().root_base(0).0;
    damage(&*store, root, Damage::Zeroed);
    damage(&*store, root + 1, Damage::BitFlip);
    let volume = open(&store).expect("open");
    let result = volume.write(0, &unique_block(5), false);
    assert!(matches!(result, Err(VolumeError::Corrupt(_))), "{result:?}");
    assert_read_only(&volume, OTHER_LBN, &b);
    let reason = persisted_reason(&*store).expect("reason persisted");
    assert_eq!(reason.structure, Some(BlockType::BlockMapPage));
}

/// Damages both copies of a depot block between close and open: the open fails with
/// `Corrupt`, and the super block says read-only with the structure, on every later open.
fn damaged_depot_block(base: u64, structure: BlockType) {
    for how in DAMAGE_KINDS {
        let (store, _a, _b) = closed_volume();
        damage(&*store, base, how);
        damage(&*store, base + 1, how);
        let result = open(&store);
        assert!(
            matches!(result, Err(VolumeError::Corrupt(_))),
            "{how:?}: {result:?}"
        );
        let reason = persisted_reason(&*store).expect("reason persisted");
        assert_eq!(reason.structure, Some(structure), "{how:?}: {reason:?}");
        assert!((base..base + 2).contains(&reason.location.0), "{reason:?}");
        let events = store.event_count();
        let again = open(&store);
        assert!(
            matches!(again, Err(VolumeError::Corrupt(_))),
            "{how:?}: {again:?}"
        );
        assert_eq!(store.event_count(), events, "a failed read-only open wrote");
        assert_eq!(persisted_reason(&*store), Some(reason));
    }
}

#[test]
fn damaged_ref_counts_persist_read_only_and_fail_the_open() {
    let base = layout().ref_counts_base(SlabNumber(0), 0).0;
    damaged_depot_block(base, BlockType::RefCounts);
}

#[test]
fn damaged_slab_summary_persists_read_only_and_fails_the_open() {
    damaged_depot_block(layout().summary_base(0).0, BlockType::SlabSummary);
}

#[test]
fn one_damaged_super_block_slot_opens_from_the_other() {
    for slot in 1..3 {
        for how in DAMAGE_KINDS {
            let (store, a, b) = closed_volume();
            damage(&*store, slot, how);
            let volume = open(&store).expect("open from the other slot");
            // The older slot may say dirty: recovery then finishes in the background.
            volume.wait_recovered().expect("recovered");
            assert_eq!(volume.operating_mode(), OperatingMode::Normal);
            assert!(read_block(&volume, 0) == a && read_block(&volume, OTHER_LBN) == b);
            common::assert_audit_clean(&volume, "after a super block slot was damaged");
            volume.close().expect("close");
        }
    }
}

#[test]
fn both_super_block_slots_damaged_fails_the_open_writing_nothing() {
    let (store, _a, _b) = closed_volume();
    damage(&*store, 1, Damage::BitFlip);
    damage(&*store, 2, Damage::WrongNonce);
    let events = store.event_count();
    let result = open(&store);
    match result {
        Err(VolumeError::Corrupt(e)) => assert_eq!(e.structure, BlockType::SuperBlock),
        other => panic!("expected Corrupt, got {other:?}"),
    }
    assert_eq!(store.event_count(), events);
}

#[test]
fn damaged_geometry_is_not_a_volume() {
    for how in [Damage::BitFlip, Damage::Zeroed] {
        let (store, _a, _b) = closed_volume();
        damage(&*store, 0, how);
        let result = open(&store);
        assert!(
            matches!(result, Err(VolumeError::NotAVolume(_))),
            "{how:?}: {result:?}"
        );
    }
}

/// A valid geometry of another volume (its nonce): the super blocks are not its own.
#[test]
fn foreign_geometry_fails_the_open_on_the_super_block_writing_nothing() {
    let (store, _a, _b) = closed_volume();
    damage(&*store, 0, Damage::WrongNonce);
    let events = store.event_count();
    match open(&store) {
        Err(VolumeError::Corrupt(e)) => {
            assert_eq!(e.structure, BlockType::SuperBlock);
            assert!(matches!(e.problem, Problem::WrongNonce { .. }), "{e:?}");
        }
        other => panic!("expected Corrupt, got {other:?}"),
    }
    assert_eq!(store.event_count(), events);
}

/// Damage recovery finds: the volume opens read-only (persisted), reads through the damaged
/// page fail with EIO, the rest read their durable data.
#[test]
fn damaged_block_map_page_found_by_recovery_opens_read_only() {
    let (store, volume) = new_volume();
    let (a, b) = (unique_block(1), unique_block(2));
    write_block(&volume, 0, &a);
    write_block(&volume, OTHER_LBN, &b);
    volume.flush().expect("flush");
    drop(volume);
    let root = layout().root_base(0).0;
    damage(&*store, root, Damage::BitFlip);
    damage(&*store, root + 1, Damage::BitFlip);
    let volume = open(&store).expect("opens read-only");
    let reason = persisted_reason(&*store).expect("reason persisted");
    assert_eq!(
        reason.structure,
        Some(BlockType::BlockMapPage),
        "{reason:?}"
    );
    let mut buf = [0; BLOCK];
    assert_errno(
        volume.read(0, &mut buf),
        libc::EIO,
        "read through the damaged root",
    );
    assert_read_only(&volume, OTHER_LBN, &b);
    drop(volume);
    let volume = assert_reopens_read_only(&store, &reason);
    assert_errno(volume.read(0, &mut buf), libc::EIO, "after reopen");
    assert!(read_block(&volume, OTHER_LBN) == b);
}
