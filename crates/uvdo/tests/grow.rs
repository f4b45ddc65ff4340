//! Growing a volume online (logical and physical size), the settings kept in the super block,
//! and the crash states of each grow: after a power cut at every event of a grow, keeping
//! none or all of the writes not yet flushed, the volume opens either at its old size or at
//! the new one, with a clean audit and every flushed block intact, and keeps working.

mod common;

use std::sync::Arc;

use common::{BLOCK_U64, Data, assert_audit_clean, read_block, unique_block, write_block};
use uvdo::{FormatConfig, OpenOptions, OperatingMode, Volume, VolumeError};
use uvdo_format::BlockCount;
use uvdo_format::layout::Layout;
use uvdo_format::super_block::Owner;
use uvdo_io::Storage;
use uvdo_io::sim::{CrashPlan, SimStore};

const LOGICAL_BLOCKS: u64 = 4096;
/// Data blocks of a tiny slab (16 blocks, 2 of journal, 2 of reference counts).
const DATA_PER_SLAB: u64 = 12;

fn config() -> FormatConfig {
    common::tiny(LOGICAL_BLOCKS)
}

/// Blocks of a store holding exactly `slabs` tiny slabs.
fn store_blocks(slabs: u64) -> u64 {
    let layout = Layout::compute(config().layout_params(), BlockCount(1 << 16)).unwrap();
    layout.depot_start().0 + slabs * layout.params().slab_blocks.0
}

fn offline() -> OpenOptions {
    OpenOptions {
        recover_offline: true,
        ..OpenOptions::default()
    }
}

fn open(store: &Arc<SimStore>) -> Volume {
    Volume::open(Arc::clone(store) as Arc<dyn Storage>, &offline()).expect("open")
}

/// A formatted volume of `slabs` slabs holding `blocks` unique blocks at LBNs 0.., flushed.
fn volume_with_data(slabs: u64, blocks: u64) -> (Arc<SimStore>, Volume, Vec<Data>) {
    let store = Arc::new(SimStore::with_seed(store_blocks(slabs) * BLOCK_U64, 3));
    Volume::format(&*store, &config()).expect("format");
    let volume = open(&store);
    let data: Vec<Data> = (0..blocks).map(unique_block).collect();
    for (lbn, d) in (0..).zip(&data) {
        write_block(&volume, lbn, d);
    }
    volume.flush().expect("flush");
    (store, volume, data)
}

fn check_data(volume: &Volume, data: &[Data], when: &str) {
    for (lbn, want) in (0..).zip(data) {
        assert!(read_block(volume, lbn) == *want, "LBN {lbn} {when}");
    }
}

/// Writes `count` new unique blocks after `data` and checks they need the space they take.
fn fill(volume: &Volume, data: &mut Vec<Data>, count: u64, when: &str) {
    for _ in 0..count {
        let lbn = data.len() as u64;
        let d = unique_block(10_000 + lbn);
        volume
            .write(lbn * BLOCK_U64, &d, false)
            .unwrap_or_else(|e| panic!("write of LBN {lbn} {when}: {e}"));
        data.push(d);
    }
    volume.flush().expect("flush");
}

#[test]
fn grow_logical_serves_the_new_blocks_and_refuses_to_shrink() {
    let (store, volume, data) = volume_with_data(4, 10);
    let end = LOGICAL_BLOCKS;
    let beyond = unique_block(77);
    assert!(volume.write(end * BLOCK_U64, &beyond, false).is_err());
    for (size, what) in [(end - 1, "can't shrink"), (end, "less than one block")] {
        let e = volume.grow_logical(BlockCount(size)).unwrap_err();
        assert!(matches!(e, VolumeError::InvalidArgument { .. }), "{e}");
        let text = e.to_string();
        assert!(
            text.contains(what) && text.contains(&end.to_string()),
            "{text}"
        );
    }
    let too_big = BlockCount(uvdo_format::layout::LOGICAL_BLOCKS_MAX + 1);
    assert!(volume.grow_logical(too_big).is_err());

    volume
        .grow_logical(BlockCount(2 * end))
        .expect("grow logical");
    assert_eq!(volume.logical_bytes(), 2 * end * BLOCK_U64);
    assert_eq!(volume.stats().logical_blocks, 2 * end);
    write_block(&volume, 2 * end - 1, &beyond);
    assert!(read_block(&volume, 2 * end - 1) == beyond);
    volume.close().expect("close");

    let volume = open(&store);
    assert_eq!(volume.stats().logical_blocks, 2 * end);
    assert!(read_block(&volume, 2 * end - 1) == beyond);
    check_data(&volume, &data, "after reopen");
    assert_audit_clean(&volume, "after reopen");
}

#[test]
fn grow_physical_appends_slabs_that_take_data() {
    let (store, volume, mut data) = volume_with_data(3, 20);
    let old = volume.stats();
    assert_eq!(old.slab_count, 3);
    // Not larger: the store is the volume's size.
    let e = volume.grow_physical(None).unwrap_err();
    assert!(e.to_string().contains("adds no slab"), "{e}");
    let e = volume.grow_physical(Some(BlockCount(10))).unwrap_err();
    assert!(e.to_string().contains("can't shrink"), "{e}");
    // Part of a slab more is not enough.
    store.resize((store_blocks(3) + 8) * BLOCK_U64).unwrap();
    let e = volume.grow_physical(None).unwrap_err();
    assert!(e.to_string().contains("adds no slab"), "{e}");
    // Past the slab limit.
    let e = volume
        .grow_physical(Some(BlockCount(store_blocks(8193))))
        .unwrap_err();
    assert!(matches!(e, VolumeError::InvalidConfig(_)), "{e}");

    // The admin enlarged the store: grow into all of it.
    store.resize(store_blocks(5) * BLOCK_U64).unwrap();
    volume.grow_physical(None).expect("grow physical");
    let grown = volume.stats();
    assert_eq!(grown.slab_count, 5);
    assert_eq!(grown.physical_blocks, store_blocks(5));
    assert_eq!(grown.free_blocks, old.free_blocks + 2 * DATA_PER_SLAB);
    // The engine asks the store to grow.
    volume
        .grow_physical(Some(BlockCount(store_blocks(7))))
        .expect("grow physical with a size");
    assert_eq!(store.size_bytes(), store_blocks(7) * BLOCK_U64);
    assert_eq!(volume.stats().slab_count, 7);
    // More than the old slabs could hold.
    fill(&volume, &mut data, 3 * DATA_PER_SLAB, "after the grow");
    check_data(&volume, &data, "after filling");
    assert_audit_clean(&volume, "after filling");
    volume.close().expect("close");

    let volume = open(&store);
    assert_eq!(volume.stats().slab_count, 7);
    check_data(&volume, &data, "after reopen");
    assert_audit_clean(&volume, "after reopen");
}

#[test]
fn a_store_larger_than_the_volume_is_unused_until_a_grow() {
    let (store, volume, data) = volume_with_data(3, 5);
    volume.close().expect("close");
    store.resize(store_blocks(6) * BLOCK_U64).unwrap();
    let volume = open(&store);
    assert_eq!(volume.stats().slab_count, 3);
    assert_eq!(volume.stats().physical_blocks, store_blocks(3));
    volume.grow_physical(None).expect("grow");
    assert_eq!(volume.stats().slab_count, 6);
    check_data(&volume, &data, "after the grow");
    assert_audit_clean(&volume, "after the grow");
}

#[test]
fn grow_physical_waits_for_recovery() {
    let (store, volume, _) = volume_with_data(4, 30);
    drop(volume);
    let crashed = Arc::new(store.crash(CrashPlan::KeepNone));
    crashed.resize(store_blocks(6) * BLOCK_U64).unwrap();
    let paused = OpenOptions {
        testing_scrub_paused: true,
        ..OpenOptions::default()
    };
    let volume = Volume::open(Arc::clone(&crashed) as Arc<dyn Storage>, &paused).unwrap();
    assert_eq!(volume.operating_mode(), OperatingMode::Recovering);
    let e = volume.grow_physical(None).unwrap_err();
    assert!(e.to_string().contains("recovering"), "{e}");
    volume.resume_scrubbing();
    volume.wait_recovered().unwrap();
    volume.grow_physical(None).expect("grow once recovered");
    assert_eq!(volume.stats().slab_count, 6);
    assert_audit_clean(&volume, "after the grow");
}

#[test]
fn settings_are_durable_and_deduplication_switches_at_once() {
    let (store, volume, _) = volume_with_data(6, 0);
    let block = unique_block(5);
    assert!(volume.deduplication_enabled());
    write_block(&volume, 0, &block);
    write_block(&volume, 1, &block);
    volume.flush().unwrap();
    assert_eq!(volume.stats().data_blocks_used, 1);
    volume.set_deduplication(false).unwrap();
    assert!(!volume.deduplication_enabled());
    write_block(&volume, 2, &block);
    volume.flush().unwrap();
    assert_eq!(
        volume.stats().data_blocks_used,
        2,
        "a new copy without dedupe"
    );

    assert!(!volume.compression_enabled());
    volume.set_compression(true).unwrap();
    assert!(volume.compression_enabled());
    let owner = Owner {
        pid: 4242,
        since_s: 1_700_000_000,
        host: "host-a".into(),
    };
    volume.set_owner(Some(owner.clone())).unwrap();
    assert_eq!(volume.owner(), Some(owner.clone()));
    let long = Owner {
        host: "h".repeat(65),
        ..owner.clone()
    };
    assert!(volume.set_owner(Some(long)).is_err());
    drop(volume);

    // Durable without a clean close.
    let store = Arc::new(store.crash(CrashPlan::KeepNone));
    let volume = open(&store);
    assert!(!volume.deduplication_enabled());
    assert!(volume.compression_enabled());
    assert_eq!(volume.owner(), Some(owner));
    volume.set_owner(None).unwrap();
    volume.set_deduplication(true).unwrap();
    // The index was not saved (no clean close): the first copy is new, the next shares it.
    write_block(&volume, 3, &block);
    write_block(&volume, 4, &block);
    volume.flush().unwrap();
    assert_eq!(volume.stats().data_blocks_used, 3, "shared again");
    assert_audit_clean(&volume, "after switching back");
    volume.close().unwrap();
    let volume = open(&store);
    assert_eq!(volume.owner(), None);
    assert!(volume.deduplication_enabled());
}

/// Every crash state of a physical grow from `old_slabs` to `new_slabs` slabs.
fn crash_states_of_grow_physical(old_slabs: u64, new_slabs: u64, written: u64) {
    let (store, volume, data) = volume_with_data(old_slabs, written);
    let (old_blocks, new_blocks) = (store_blocks(old_slabs), store_blocks(new_slabs));
    let before = store.event_count();
    volume
        .grow_physical(Some(BlockCount(new_blocks)))
        .expect("grow physical");
    let after = store.event_count();
    assert!(
        after > before + 4,
        "resize, flushes, summary and super block"
    );
    drop(volume);
    let mut states = 0;
    for event in before - 1..after {
        for plan in [CrashPlan::KeepNone, CrashPlan::KeepAll] {
            let when = format!("crash after event {event} ({before}..{after}) {plan:?}");
            let crashed = Arc::new(store.crash_at(event, plan));
            let volume = open(&crashed);
            let stats = volume.stats();
            let grown = stats.physical_blocks == new_blocks;
            if grown {
                assert_eq!(stats.slab_count, new_slabs, "{when}");
            } else {
                assert_eq!(stats.physical_blocks, old_blocks, "{when}");
                assert_eq!(stats.slab_count, old_slabs, "{when}");
            }
            if event == after - 1 {
                assert!(grown, "the grow returned: {when}");
            }
            assert_audit_clean(&volume, &when);
            check_data(&volume, &data, &when);
            if !grown {
                // The interrupted grow can be done again.
                volume
                    .grow_physical(Some(BlockCount(new_blocks)))
                    .unwrap_or_else(|e| panic!("grow again {when}: {e}"));
            }
            // Use the new slabs: more blocks than the old ones had free.
            let mut data = data.clone();
            let extra = (new_slabs - old_slabs) * DATA_PER_SLAB / 2 + 4;
            fill(&volume, &mut data, extra, &when);
            assert_audit_clean(&volume, &format!("{when}, filled"));
            volume
                .close()
                .unwrap_or_else(|e| panic!("close {when}: {e}"));
            let volume = open(&crashed);
            assert_eq!(volume.stats().slab_count, new_slabs, "{when}");
            check_data(&volume, &data, &format!("{when}, reopened"));
            assert_audit_clean(&volume, &format!("{when}, reopened"));
            states += 1;
        }
    }
    assert!(states >= 10);
}

#[test]
fn every_crash_state_of_grow_physical_is_the_old_or_the_new_volume() {
    // The last summary block is partly used before and after.
    crash_states_of_grow_physical(3, 7, 18);
}

#[test]
fn every_crash_state_of_a_grow_into_a_new_summary_block() {
    // 250 slabs to 256: the grow rewrites summary block 0 and writes block 1.
    crash_states_of_grow_physical(250, 256, 40);
}

#[test]
fn every_crash_state_of_grow_logical_is_the_old_or_the_new_size() {
    let (store, volume, data) = volume_with_data(6, 12);
    let before = store.event_count();
    volume
        .grow_logical(BlockCount(2 * LOGICAL_BLOCKS))
        .expect("grow logical");
    let after = store.event_count();
    drop(volume);
    for event in before - 1..after {
        for plan in [CrashPlan::KeepNone, CrashPlan::KeepAll] {
            let when = format!("crash after event {event} ({before}..{after}) {plan:?}");
            let crashed = Arc::new(store.crash_at(event, plan));
            let volume = open(&crashed);
            let logical = volume.stats().logical_blocks;
            assert!(
                logical == LOGICAL_BLOCKS || logical == 2 * LOGICAL_BLOCKS,
                "{when}: {logical}"
            );
            if event == after - 1 {
                assert_eq!(logical, 2 * LOGICAL_BLOCKS, "the grow returned: {when}");
            }
            assert_audit_clean(&volume, &when);
            check_data(&volume, &data, &when);
            let last = 2 * LOGICAL_BLOCKS - 1;
            let block = unique_block(999);
            let wrote = volume.write(last * BLOCK_U64, &block, false);
            assert_eq!(wrote.is_ok(), logical > last, "{when}");
            volume.close().unwrap();
        }
    }
}
