//! The engine end to end on a memory store: the path every other test builds on.

use std::sync::Arc;

use uvdo::{FormatConfig, OpenOptions, Volume};
use uvdo_format::BlockCount;
use uvdo_io::Storage;
use uvdo_io::memory::MemoryStore;

fn block(seed: u8) -> Vec<u8> {
    (0..4096_u32)
        .map(|i| seed.wrapping_add((i % 251) as u8))
        .collect()
}

#[test]
fn write_dedupe_close_reopen_audit() {
    let store: Arc<dyn Storage> = Arc::new(MemoryStore::new(4 << 20));
    let config = FormatConfig::tiny(BlockCount(4096));
    let summary = Volume::format(&*store, &config).unwrap();
    assert!(summary.data_blocks > 0);
    let volume = Volume::open(Arc::clone(&store), &OpenOptions::default()).unwrap();
    for lbn in 0..20_u64 {
        volume
            .write(lbn * 4096, &block((lbn % 5) as u8), false)
            .unwrap();
    }
    volume.write_zeroes(20 * 4096, 4096).unwrap();
    volume.write(21 * 4096 + 512, &[7; 1024], false).unwrap();
    volume.trim(3 * 4096, 4096).unwrap();
    volume.flush().unwrap();
    let stats = volume.stats();
    assert_eq!(stats.logical_blocks_used, 21, "{stats:#?}");
    assert_eq!(stats.data_blocks_used, 6, "{stats:#?}");
    let report = volume.audit().unwrap();
    assert!(report.is_clean(), "{report:#?}");
    volume.close().unwrap();

    let volume = Volume::open(Arc::clone(&store), &OpenOptions::default()).unwrap();
    let mut buf = vec![0; 4096];
    for lbn in 0..20_u64 {
        volume.read(lbn * 4096, &mut buf).unwrap();
        let want = if lbn == 3 {
            vec![0; 4096]
        } else {
            block((lbn % 5) as u8)
        };
        assert_eq!(buf, want, "lbn {lbn}");
    }
    volume.read(21 * 4096, &mut buf).unwrap();
    assert_eq!(buf[..512], [0; 512]);
    assert_eq!(buf[512..1536], [7; 1024]);
    assert!(volume.audit().unwrap().is_clean());
    assert_eq!(volume.stats().data_blocks_used, 6);
    volume.close().unwrap();
}

#[test]
fn auto_policy_resolves_from_the_store_write_cache() {
    let policy_on = |store: Arc<dyn Storage>, hint: Option<bool>| {
        Volume::format(&*store, &FormatConfig::tiny(BlockCount(64))).unwrap();
        let options = OpenOptions {
            volatile_write_cache: hint,
            ..OpenOptions::default()
        };
        Volume::open(store, &options).unwrap().write_policy()
    };
    let memory = || -> Arc<dyn Storage> { Arc::new(MemoryStore::new(2 << 20)) };
    let sim = || -> Arc<dyn Storage> { Arc::new(uvdo_io::sim::SimStore::new(2 << 20)) };
    // A memory store loses nothing on completion: auto means sync.
    assert_eq!(policy_on(memory(), None), uvdo::ResolvedPolicy::Sync);
    // The simulated store models a volatile cache: auto means async.
    assert_eq!(policy_on(sim(), None), uvdo::ResolvedPolicy::Async);
    // The caller's word wins over the store's.
    assert_eq!(policy_on(memory(), Some(true)), uvdo::ResolvedPolicy::Async);
}

#[test]
fn an_inspection_open_writes_nothing_and_still_counts() {
    let sim = Arc::new(uvdo_io::sim::SimStore::new(4 << 20));
    let store: Arc<dyn Storage> = sim.clone();
    Volume::format(&*store, &FormatConfig::tiny(BlockCount(4096))).unwrap();
    let volume = Volume::open(Arc::clone(&store), &OpenOptions::default()).unwrap();
    for lbn in 0..10_u64 {
        volume
            .write(lbn * 4096, &block((lbn % 3) as u8), false)
            .unwrap();
    }
    volume.close().unwrap();
    let inspect = OpenOptions {
        inspect_only: true,
        ..OpenOptions::default()
    };
    for (when, image) in [
        ("clean", sim.crash(uvdo_io::sim::CrashPlan::KeepAll)),
        ("after a crash", {
            let live = Volume::open(Arc::clone(&store), &OpenOptions::default()).unwrap();
            live.write(20 * 4096, &block(9), false).unwrap();
            live.flush().unwrap();
            drop(live);
            sim.crash(uvdo_io::sim::CrashPlan::KeepAll)
        }),
    ] {
        let image = Arc::new(image);
        let volume = Volume::open(image.clone(), &inspect).unwrap();
        let stats = volume.stats();
        assert_eq!(
            stats.data_blocks_used,
            3 + u64::from(when != "clean"),
            "{when}"
        );
        let mut buf = vec![0; 4096];
        volume.read(4096, &mut buf).unwrap();
        assert_eq!(buf, block(1), "{when}");
        assert!(matches!(
            volume.write(0, &block(7), false),
            Err(uvdo::VolumeError::ReadOnly { .. })
        ));
        volume.close().unwrap();
        assert_eq!(
            image.event_count(),
            0,
            "{when}: an inspection wrote to the store"
        );
    }
}

/// Under the sync policy, a batch of writes shares one commit; the same writes one by one
/// commit each. Every write of the batch reads back, and survives a crash (drop) at once.
#[test]
fn a_batch_of_sync_writes_shares_one_commit() {
    let store: Arc<dyn Storage> = Arc::new(MemoryStore::new(4 << 20));
    Volume::format(&*store, &FormatConfig::tiny(BlockCount(4096))).unwrap();
    let volume = Volume::open(Arc::clone(&store), &OpenOptions::default()).unwrap();
    volume
        .set_write_policy(uvdo_format::super_block::WritePolicy::Sync, Some(true))
        .unwrap();
    let blocks: Vec<Vec<u8>> = (0..16_u8).map(|i| block(i * 3 + 1)).collect();
    let before = volume.stats();
    for (lbn, data) in blocks.iter().enumerate() {
        volume.write(lbn as u64 * 4096, data, false).unwrap();
    }
    let one_by_one = volume.stats().bios_journal_write - before.bios_journal_write;
    let batch: Vec<(u64, &[u8], bool)> = blocks
        .iter()
        .enumerate()
        .map(|(i, data)| ((16 + i as u64) * 4096, data.as_slice(), false))
        .collect();
    let before = volume.stats();
    let results = volume.write_many(&batch);
    let batched = volume.stats().bios_journal_write - before.bios_journal_write;
    assert!(results.iter().all(Result::is_ok), "{results:?}");
    assert!(one_by_one >= 16, "each sync write commits: {one_by_one}");
    assert!(
        batched <= 2,
        "one commit for the batch: {batched} journal writes"
    );
    // A bad request in the batch fails alone.
    let bad = volume.write_many(&[(512 * 4096 * 4096, &blocks[0], false), batch[0]]);
    assert!(bad[0].is_err() && bad[1].is_ok(), "{bad:?}");
    drop(volume);
    let volume = Volume::open(Arc::clone(&store), &OpenOptions::default()).unwrap();
    let mut buf = vec![0; 4096];
    for (i, data) in blocks.iter().enumerate() {
        volume.read((16 + i as u64) * 4096, &mut buf).unwrap();
        assert_eq!(&buf, data, "batched write {i} is durable");
    }
}

/// One commit may carry far more slab journal entries than a slab journal holds (a flush
/// after thousands of async writes to one slab): the commit writes reference counts part way
/// through instead of overflowing the slab journal. It overflowed before, and the volume went
/// read-only with "slab N journal is full" (seen over NBD as EIO, then EPERM).
#[test]
fn a_commit_larger_than_a_slab_journal_writes_reference_counts_part_way() {
    let store: Arc<dyn Storage> = Arc::new(MemoryStore::new(96 << 20));
    let mut config = FormatConfig::tiny(BlockCount(8192));
    config.slab_blocks = BlockCount(16384);
    config.slab_journal_blocks = BlockCount(2);
    config.recovery_journal_blocks = BlockCount(512);
    config.block_map_cache_pages = 1024;
    config.write_policy = uvdo_format::super_block::WritePolicy::Async;
    Volume::format(&*store, &config).unwrap();
    let volume = Volume::open(Arc::clone(&store), &OpenOptions::default()).unwrap();
    let data = |lbn: u64, round: u64| -> Vec<u8> {
        let mut b = vec![0_u8; 4096];
        b[..8].copy_from_slice(&lbn.to_le_bytes());
        b[8..16].copy_from_slice(&round.to_le_bytes());
        b[16] = 1;
        b
    };
    // 5000 new blocks, then 5000 overwrites (an increment and a decrement each), every one
    // in the same slab, each round flushed as one commit: the second commit alone carries
    // 10000 slab journal entries, against a journal of 2 x 1008 (plus 2 buffered blocks).
    for round in 0..2 {
        for lbn in 0..5000 {
            volume.write(lbn * 4096, &data(lbn, round), false).unwrap();
        }
        volume.flush().unwrap();
    }
    assert_eq!(volume.operating_mode(), uvdo::OperatingMode::Normal);
    let report = volume.audit().unwrap();
    assert!(report.is_clean(), "{report:#?}");
    volume.close().unwrap();
    let volume = Volume::open(Arc::clone(&store), &OpenOptions::default()).unwrap();
    let mut buf = vec![0; 4096];
    for lbn in (0..5000).step_by(97) {
        volume.read(lbn * 4096, &mut buf).unwrap();
        assert_eq!(buf, data(lbn, 1), "LBN {lbn}");
    }
    assert!(volume.audit().unwrap().is_clean());
}
