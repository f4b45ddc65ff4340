//! Recovering mode (SPEC section 5): after an unclean shutdown the journal is replayed at
//! open, then the reference counts of the slabs the crash may have changed are rebuilt in the
//! background while reads and writes are served.
//!
//! Scrubbing is made deterministic with the `testing_scrub_paused` hook: the background
//! scrubber waits for `resume_scrubbing`; only writers and committers that cannot wait scrub
//! (and these tests leave free blocks in recovered slabs, so they do not).

mod common;

use std::sync::Arc;

use common::{BLOCK_U64, Data, assert_audit_clean, read_block, unique_block, write_block};
use uvdo::{FormatConfig, OpenOptions, OperatingMode, Volume};
use uvdo_format::BlockCount;
use uvdo_io::Storage;
use uvdo_io::sim::{CrashPlan, SimStore};

const STORE_BYTES: u64 = 4 << 20;
const LOGICAL_BLOCKS: u64 = 2048;
/// LBNs the crashed volume holds: with 16-block slabs, they span many slabs.
const WRITTEN: u64 = 120;

/// The tiny geometry with slab journals long enough that a dirty slab is not under journal
/// pressure at open (a slab under pressure is scrubbed before the volume comes online).
fn config() -> FormatConfig {
    FormatConfig {
        slab_journal_blocks: BlockCount(8),
        ..common::tiny(LOGICAL_BLOCKS)
    }
}

fn paused() -> OpenOptions {
    OpenOptions {
        testing_scrub_paused: true,
        ..OpenOptions::default()
    }
}

fn open(store: &Arc<SimStore>, options: &OpenOptions) -> Volume {
    Volume::open(Arc::clone(store) as Arc<dyn Storage>, options).expect("open")
}

/// A volume crashed with many dirty slabs: `WRITTEN` unique blocks, every third one then
/// overwritten (a decrement in an older slab), all flushed; then the power is cut. Returns
/// the crashed store and what each LBN must read.
fn crashed() -> (Arc<SimStore>, Vec<Data>) {
    let store = Arc::new(SimStore::with_seed(STORE_BYTES, 11));
    Volume::format(&*store, &config()).expect("format");
    let volume = open(&store, &OpenOptions::default());
    let mut expected = Vec::new();
    for lbn in 0..WRITTEN {
        let data = unique_block(lbn);
        write_block(&volume, lbn, &data);
        expected.push(data);
    }
    volume.flush().expect("flush");
    for lbn in (0..WRITTEN).step_by(3) {
        let data = unique_block(1000 + lbn);
        write_block(&volume, lbn, &data);
        expected[usize::try_from(lbn).unwrap()] = data;
    }
    volume.flush().expect("flush");
    drop(volume);
    (Arc::new(store.crash(CrashPlan::KeepNone)), expected)
}

fn check_data(volume: &Volume, expected: &[Data], when: &str) {
    for (lbn, want) in (0_u64..).zip(expected) {
        assert!(read_block(volume, lbn) == *want, "LBN {lbn} {when}");
    }
}

#[test]
fn a_crashed_volume_serves_while_recovering_then_returns_to_normal() {
    let (store, mut expected) = crashed();
    let volume = open(&store, &paused());
    assert_eq!(volume.operating_mode(), OperatingMode::Recovering);
    assert!(volume.last_recovery().is_some());
    let stats = volume.stats();
    assert_eq!(stats.operating_mode, "recovering");
    let progress = stats
        .recovery_progress_percent
        .expect("progress while recovering");
    assert!(progress < 100, "progress {progress}");
    assert!(!stats.counts_available());
    assert!(stats.counts_unavailable.is_some());
    assert_eq!(stats.saving_percent(), None);
    assert_eq!(stats.used_percent_available(), None);

    check_data(&volume, &expected, "while recovering");
    // New data goes to recovered slabs; overwrites journal decrements into unrecovered ones.
    for lbn in (0..WRITTEN).step_by(5).chain(WRITTEN..WRITTEN + 20) {
        let data = unique_block(5000 + lbn);
        write_block(&volume, lbn, &data);
        let index = usize::try_from(lbn).unwrap();
        if index < expected.len() {
            expected[index] = data;
        } else {
            expected.push(data);
        }
    }
    // A duplicate of a block in an unrecovered slab is stored as a new block.
    write_block(&volume, WRITTEN + 20, &expected[1]);
    expected.push(expected[1]);
    volume
        .trim(7 * BLOCK_U64, BLOCK_U64)
        .expect("trim while recovering");
    expected[7] = [0; common::BLOCK];
    volume.flush().expect("flush while recovering");
    check_data(&volume, &expected, "after writes while recovering");
    assert_eq!(volume.operating_mode(), OperatingMode::Recovering);

    volume.resume_scrubbing();
    volume.wait_recovered().expect("recovered");
    assert_eq!(volume.operating_mode(), OperatingMode::Normal);
    let stats = volume.stats();
    assert_eq!(stats.operating_mode, "normal");
    assert_eq!(stats.recovery_progress_percent, None);
    assert!(stats.counts_available());
    assert_audit_clean(&volume, "after scrubbing");
    check_data(&volume, &expected, "after scrubbing");
    volume.close().expect("close");

    let volume = open(&store, &paused());
    assert_eq!(volume.operating_mode(), OperatingMode::Normal);
    assert!(volume.last_recovery().is_none());
    assert_audit_clean(&volume, "after a clean close");
    check_data(&volume, &expected, "after a clean close");
}

#[test]
fn a_clean_close_while_recovering_resumes_recovery_at_the_next_open() {
    let (store, mut expected) = crashed();
    let volume = open(&store, &paused());
    assert_eq!(volume.operating_mode(), OperatingMode::Recovering);
    let before = volume.stats().recovery_progress_percent;
    for lbn in (1..WRITTEN).step_by(4) {
        let data = unique_block(7000 + lbn);
        write_block(&volume, lbn, &data);
        expected[usize::try_from(lbn).unwrap()] = data;
    }
    volume.close().expect("close while recovering");

    let volume = open(&store, &paused());
    assert_eq!(volume.operating_mode(), OperatingMode::Recovering);
    // Nothing is replayed: the recovery resumes, it does not start again.
    assert!(volume.last_recovery().is_none());
    assert!(volume.stats().recovery_progress_percent.is_some());
    assert!(before.is_some());
    check_data(&volume, &expected, "reopened while recovering");
    volume.resume_scrubbing();
    volume.wait_recovered().expect("recovered");
    assert_eq!(volume.operating_mode(), OperatingMode::Normal);
    assert_audit_clean(&volume, "after the resumed recovery");
    check_data(&volume, &expected, "after the resumed recovery");
    volume.close().expect("close");

    let volume = open(&store, &OpenOptions::default());
    assert_eq!(volume.operating_mode(), OperatingMode::Normal);
    assert_audit_clean(&volume, "after a second clean close");
}

#[test]
fn recover_offline_rebuilds_every_count_before_open_returns() {
    let (store, expected) = crashed();
    let options = OpenOptions {
        recover_offline: true,
        ..paused()
    };
    let volume = open(&store, &options);
    assert_eq!(volume.operating_mode(), OperatingMode::Normal);
    assert!(volume.stats().counts_available());
    assert_audit_clean(&volume, "after an offline recovery");
    check_data(&volume, &expected, "after an offline recovery");
}

/// A crash at every write of the online part (and of writes served meanwhile) recovers to
/// the volume an uninterrupted recovery gives.
#[test]
fn a_crash_during_the_online_scrub_recovers_the_same_volume() {
    let (store, mut expected) = crashed();
    let volume = open(&store, &paused());
    let online_from = store.event_count();
    for lbn in (2..WRITTEN).step_by(7) {
        let data = unique_block(9000 + lbn);
        write_block(&volume, lbn, &data);
        expected[usize::try_from(lbn).unwrap()] = data;
    }
    volume.flush().expect("flush");
    volume.resume_scrubbing();
    volume.wait_recovered().expect("recovered");
    let online_to = store.event_count();
    drop(volume);
    assert!(online_to > online_from, "the online part wrote");
    for event in online_from..online_to {
        for plan in [CrashPlan::KeepNone, CrashPlan::KeepAll] {
            let again = Arc::new(store.crash_at(event, plan.clone()));
            let volume = open(&again, &OpenOptions::default());
            assert_ne!(volume.operating_mode(), OperatingMode::ReadOnly);
            volume.wait_recovered().expect("recovered again");
            assert_audit_clean(&volume, &format!("crash at event {event} ({plan:?})"));
            // Everything flushed before the crash survives; the flush came before the scrub's
            // own writes, so from then on every LBN reads its final value.
            for (lbn, want) in (0_u64..).zip(&expected) {
                let got = read_block(&volume, lbn);
                let original = unique_block(lbn);
                let overwritten = unique_block(1000 + lbn);
                let ok = got == *want || got == original || got == overwritten;
                assert!(ok, "LBN {lbn} after a crash at event {event} ({plan:?})");
            }
        }
    }
    // The last events are the scrub's: once the flush completed, the data is final.
    let last = Arc::new(store.crash_at(online_to - 1, CrashPlan::KeepNone));
    let volume = open(&last, &OpenOptions::default());
    volume.wait_recovered().expect("recovered");
    check_data(
        &volume,
        &expected,
        "after a crash at the scrub's last write",
    );
}

/// A journal of thousands of entries (recovery replays a long one on two threads): sequential
/// overwrites, a crash, then a recovery, and a crash at events of that recovery recovered
/// again, each to the same data with exact counts.
#[test]
fn a_long_journal_recovers_and_recovers_again_after_a_crash_during_recovery() {
    const LBNS: u64 = 1500;
    let config = FormatConfig {
        slab_blocks: BlockCount(1024),
        slab_journal_blocks: BlockCount(64),
        recovery_journal_blocks: BlockCount(64),
        block_map_cache_pages: 64,
        ..common::tiny(LBNS)
    };
    let store = Arc::new(SimStore::with_seed(64 << 20, 23));
    Volume::format(&*store, &config).expect("format");
    let volume = open(&store, &OpenOptions::default());
    let mut expected = Vec::new();
    for lbn in 0..LBNS {
        let data = unique_block(lbn);
        write_block(&volume, lbn, &data);
        expected.push(data);
    }
    for lbn in 0..LBNS * 2 {
        let data = unique_block(10_000 + lbn);
        write_block(&volume, lbn % LBNS, &data);
        expected[usize::try_from(lbn % LBNS).unwrap()] = data;
        if lbn % 500 == 0 {
            volume.flush().expect("flush");
        }
    }
    volume.flush().expect("flush");
    drop(volume);
    let recovering = Arc::new(store.crash(CrashPlan::KeepNone));
    let from = recovering.event_count();
    let volume = open(&recovering, &OpenOptions::default());
    let replayed = volume.last_recovery().expect("recovered").entries_replayed;
    assert!(replayed > 4096, "{replayed} entries replayed");
    volume.wait_recovered().expect("recovered");
    assert_audit_clean(&volume, "after recovery");
    check_data(&volume, &expected, "after recovery");
    drop(volume);
    let to = recovering.event_count();
    for event in (from..to).step_by(((to - from) / 6).max(1)) {
        let again = Arc::new(recovering.crash_at(event, CrashPlan::KeepNone));
        let volume = open(&again, &OpenOptions::default());
        volume.wait_recovered().expect("recovered again");
        assert_audit_clean(&volume, &format!("recovered again after event {event}"));
        check_data(
            &volume,
            &expected,
            &format!("after a crash at event {event}"),
        );
    }
}
