//! Deduplication: sharing only ever happens between identical blocks (even when every block
//! has the same name), and a block is never shared past the reference limit.

mod common;

use std::collections::BTreeSet;

use common::{
    BLOCK_U64, Data, assert_audit_clean, describe, format_open, memory_store, read_block, rng,
    unique_block, write_block,
};
use rand::Rng;
use uvdo::{OpenOptions, Volume};
use uvdo_format::ref_counts::REFERENCE_MAX;

fn constant_hash() -> OpenOptions {
    OpenOptions {
        testing_constant_hash: true,
        ..OpenOptions::default()
    }
}

fn check_all(volume: &Volume, written: &[Data], when: &str) {
    for (lbn, want) in (0..).zip(written) {
        let got = read_block(volume, lbn);
        assert!(
            got == *want,
            "{when}: LBN {lbn} reads {} instead of {}",
            describe(&got),
            describe(want)
        );
    }
}

/// Every block has the same name, so the index's advice is wrong for every write of new
/// content: only the byte comparison keeps different blocks from being shared.
#[test]
fn constant_hash_never_shares_different_blocks() {
    let (seed, _guard) = common::seed("constant_hash_never_shares_different_blocks");
    let mut rng = rng(seed);
    let store = memory_store(8 << 20);
    let volume = format_open(&store, &common::tiny(2048), &constant_hash());
    let pool: Vec<Data> = (0..40).map(unique_block).collect();
    let mut written = Vec::new();
    // Some back-to-back duplicates (the index holds the newest block for the name, so these
    // must share), then random picks from the pool with repeats.
    for block in &pool[..5] {
        written.push(*block);
        written.push(*block);
    }
    for _ in 0..150 {
        written.push(pool[rng.random_range(0..pool.len())]);
    }
    for (lbn, data) in (0..).zip(&written) {
        write_block(&volume, lbn, data);
    }
    check_all(&volume, &written, "before flush");
    volume.flush().expect("flush");

    let stats = volume.stats();
    let distinct = written.iter().collect::<BTreeSet<_>>().len() as u64;
    let writes = written.len() as u64;
    assert!(
        stats.dedupe_advice_stale > 0,
        "every new content must meet stale advice: {stats:#?}"
    );
    assert!(
        stats.dedupe_advice_valid >= 5,
        "back-to-back duplicates must share: {stats:#?}"
    );
    assert!(
        (distinct..=writes).contains(&stats.data_blocks_used),
        "data blocks used {} outside {distinct}..={writes}",
        stats.data_blocks_used
    );
    assert_eq!(stats.logical_blocks_used, writes);
    assert_audit_clean(&volume, "after writes");
    volume.close().expect("close");

    let volume = Volume::open(store, &constant_hash()).expect("reopen");
    check_all(&volume, &written, "after reopen");
    // Overwrite half with other pool blocks: still no false sharing.
    for lbn in (0..writes).step_by(2) {
        let data = pool[rng.random_range(0..pool.len())];
        write_block(&volume, lbn, &data);
        written[usize::try_from(lbn).expect("small")] = data;
    }
    check_all(&volume, &written, "after overwrites");
    assert_audit_clean(&volume, "after overwrites");
    volume.close().expect("close");
}

/// Writes of one block to more LBNs than one physical block can be shared by.
fn write_past_limit(copies: u64) {
    let store = memory_store(8 << 20);
    let volume = format_open(&store, &common::mid(2048), &OpenOptions::default());
    let data = unique_block(7);
    for lbn in 0..copies {
        write_block(&volume, lbn, &data);
    }
    volume.flush().expect("flush");
    let limit = u64::from(REFERENCE_MAX);
    let stats = volume.stats();
    assert_eq!(
        stats.data_blocks_used,
        copies.div_ceil(limit),
        "{copies} copies with a limit of {limit}: {stats:#?}"
    );
    assert_eq!(stats.logical_blocks_used, copies);
    if copies > limit {
        assert!(stats.dedupe_advice_at_limit > 0, "{stats:#?}");
    }
    for lbn in 0..copies {
        assert!(read_block(&volume, lbn) == data, "LBN {lbn}");
    }
    assert_audit_clean(&volume, "after writes");
    volume.close().expect("close");

    let volume = Volume::open(store, &OpenOptions::default()).expect("reopen");
    assert_eq!(volume.stats().data_blocks_used, copies.div_ceil(limit));
    for lbn in 0..copies {
        assert!(read_block(&volume, lbn) == data, "LBN {lbn} after reopen");
    }
    // Trimming every copy frees every block.
    volume.trim(0, copies * BLOCK_U64).expect("trim");
    volume.flush().expect("flush");
    let stats = volume.stats();
    assert_eq!(
        (stats.data_blocks_used, stats.logical_blocks_used),
        (0, 0),
        "{stats:#?}"
    );
    assert_audit_clean(&volume, "after trimming every copy");
    volume.close().expect("close");
}

#[test]
fn reference_limit_starts_a_new_copy() {
    write_past_limit(2 * u64::from(REFERENCE_MAX) + 10);
}

#[test]
fn reference_limit_exactly_reached_needs_one_block() {
    write_past_limit(u64::from(REFERENCE_MAX));
}
