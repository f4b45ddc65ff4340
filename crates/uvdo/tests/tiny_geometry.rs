//! The tiny geometry (STYLE rule 12) makes every background mechanism run within a few hundred
//! writes: the 8-block recovery journal wraps and checkpoints, 16-block slabs fill and write
//! their slab journals and reference counts, and the 2-page block map cache evicts and reloads
//! pages. Everything must still read back after a close and reopen.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use common::{
    BLOCK_U64, Data, assert_audit_clean, describe, memory_store, read_block, unique_block,
    write_block,
};
use uvdo::{OpenOptions, Volume, VolumeStats};
use uvdo_format::block_map_page::ENTRIES_PER_PAGE_U64;

const PAGES: u64 = 4;
const JOURNAL_BLOCKS: u64 = 8;

/// LBN `i` of the test, round-robin over the leaf pages so the 2-page cache must evict.
fn lbn_of(i: u64) -> u64 {
    (i % PAGES) * ENTRIES_PER_PAGE_U64 + i / PAGES
}

fn check(volume: &Volume, model: &BTreeMap<u64, Data>, when: &str) {
    for (&lbn, want) in model {
        let got = read_block(volume, lbn);
        assert!(
            got == *want,
            "{when}: LBN {lbn} reads {} instead of {}",
            describe(&got),
            describe(want)
        );
    }
}

fn assert_usage(stats: &VolumeStats, model: &BTreeMap<u64, Data>) {
    let distinct: BTreeSet<&Data> = model.values().filter(|b| **b != [0; 4096]).collect();
    assert_eq!(stats.logical_blocks_used, model.len() as u64, "{stats:#?}");
    assert_eq!(stats.data_blocks_used, distinct.len() as u64, "{stats:#?}");
}

fn assert_machinery_ran(stats: &VolumeStats) {
    assert!(stats.journal_checkpoints > 0, "{stats:#?}");
    assert!(
        stats.journal_blocks_written > JOURNAL_BLOCKS,
        "the recovery journal never wrapped: {stats:#?}"
    );
    assert!(stats.slab_journal_blocks_written > 0, "{stats:#?}");
    assert!(stats.reference_blocks_written > 0, "{stats:#?}");
    assert!(stats.block_map_pages_saved > 0, "{stats:#?}");
    assert!(
        stats.block_map_fetch_required > 0 && stats.block_map_pages_loaded > 0,
        "the block map cache never reloaded an evicted page: {stats:#?}"
    );
}

#[test]
fn tiny_geometry_runs_every_mechanism_and_survives_reopen() {
    let store = memory_store(8 << 20);
    let config = common::tiny(PAGES * ENTRIES_PER_PAGE_U64);
    Volume::format(&*store, &config).expect("format");
    let volume = Volume::open(Arc::clone(&store), &OpenOptions::default()).expect("open");
    let mut model = BTreeMap::new();
    // Unique data with every fifth block a duplicate, then overwrites of every third LBN
    // (freeing blocks), trims of every seventh and zeroes for every eleventh.
    for i in 0..400 {
        let data = if i % 5 == 4 {
            unique_block(i / 5)
        } else {
            unique_block(i)
        };
        write_block(&volume, lbn_of(i), &data);
        model.insert(lbn_of(i), data);
    }
    check(&volume, &model, "after the first pass");
    for i in (0..400).step_by(3) {
        let data = unique_block(10_000 + i);
        write_block(&volume, lbn_of(i), &data);
        model.insert(lbn_of(i), data);
    }
    for i in (0..400).step_by(7) {
        volume.trim(lbn_of(i) * BLOCK_U64, BLOCK_U64).expect("trim");
        model.remove(&lbn_of(i));
    }
    for i in (0..400).step_by(11) {
        let lbn = lbn_of(i);
        volume
            .write_zeroes(lbn * BLOCK_U64, BLOCK_U64)
            .expect("zeroes");
        model.insert(lbn, [0; 4096]);
    }
    volume.flush().expect("flush");
    check(&volume, &model, "after overwrites");
    let stats = volume.stats();
    assert_machinery_ran(&stats);
    assert_usage(&stats, &model);
    assert_audit_clean(&volume, "before close");
    volume.close().expect("close");

    let volume = Volume::open(store, &OpenOptions::default()).expect("reopen");
    check(&volume, &model, "after reopen");
    let stats = volume.stats();
    assert_usage(&stats, &model);
    assert!(
        stats.block_map_fetch_required > 0,
        "reads over 4 leaf pages with a 2-page cache: {stats:#?}"
    );
    assert_audit_clean(&volume, "after reopen");
    volume.close().expect("close");
}
