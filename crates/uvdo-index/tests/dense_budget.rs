//! Dense mode's memory budget: at most 4 bytes per block of window from 1 MiB up, an
//! accounting that stays within the config at a full window, and the false-positive and hit
//! rates there.

#![allow(
    clippy::cast_possible_truncation,
    clippy::cast_precision_loss,
    reason = "test and measurement sizes are far below 2^32 and 2^52"
)]

mod common;

use common::names;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use uvdo_format::Pbn;
use uvdo_format::index_page::INDEX_PAGE_CAPACITY;
use uvdo_index::{DedupeIndex, IndexConfig, IndexStats};

const MIB: u64 = 1 << 20;

fn dense(memory_bytes: u64) -> IndexConfig {
    IndexConfig {
        memory_bytes,
        sparse: false,
    }
}

/// Every eighth of a power of two from 1 MiB to 2 GiB, plus a few odd sizes.
fn guaranteed_sizes() -> Vec<u64> {
    let mut sizes: Vec<u64> = (20..31)
        .flat_map(|e| (8..16).map(move |m| (1_u64 << e) / 8 * m))
        .collect();
    sizes.extend([2 << 30, MIB + 1, MIB + 12_345, 100_000_000, (256 << 20) - 1]);
    sizes
}

#[test]
fn the_window_costs_at_most_four_bytes_per_block_from_one_mib_to_two_gib() {
    for memory_bytes in guaranteed_sizes() {
        let config = dense(memory_bytes);
        assert!(config.validate().is_ok(), "{memory_bytes} refused");
        let window = config.window_entries();
        assert!(
            window * 4 >= memory_bytes,
            "{memory_bytes} B: window {window}, {:.4} B/block",
            memory_bytes as f64 / window as f64
        );
    }
    // Below 1 MiB the fixed parts weigh more and tiny windows keep wide fingerprints: the
    // window may be smaller, but never below an eighth of memory_bytes / 4.
    for memory_bytes in [16 << 10, 20_000, 64 << 10, 256 << 10, MIB - 1] {
        let window = dense(memory_bytes).window_entries();
        assert!(
            window * 32 >= memory_bytes,
            "{memory_bytes} B: window {window}"
        );
    }
}

#[test]
fn a_dense_save_fits_the_region_engines_reserve() {
    // Volumes reserve max(disk_blocks, ceil(memory / 4048)) blocks; existing volumes were
    // sized by the older geometry, so a dense save must fit ceil(memory / 4048).
    let mut sizes = guaranteed_sizes();
    sizes.extend([16 << 10, 64 << 10, 256 << 10, MIB - 1]);
    for memory_bytes in sizes {
        let blocks = dense(memory_bytes).disk_blocks();
        let reserved = memory_bytes.div_ceil(INDEX_PAGE_CAPACITY as u64);
        assert!(
            blocks <= reserved,
            "{memory_bytes} B: {blocks} > {reserved} blocks"
        );
    }
}

/// Fills the window of `memory_bytes`, then slides it on by a quarter, checking the memory
/// accounting as it goes.
fn full(memory_bytes: u64, seed: u64) -> (DedupeIndex, Vec<u128>) {
    let index = DedupeIndex::new(dense(memory_bytes), None).unwrap();
    let window = dense(memory_bytes).window_entries() as usize;
    let names = names(seed, window + window / 4);
    for (i, &name) in names.iter().enumerate() {
        index.insert(name, Pbn(i as u64));
        if i % 65_536 == 0 {
            let stats = index.stats();
            assert!(stats.memory_bytes <= memory_bytes, "after {i}: {stats:?}");
        }
    }
    let stats = index.stats();
    assert!(stats.memory_bytes <= memory_bytes, "{stats:?}");
    assert_eq!(stats.evicted_early, 0, "{stats:?}");
    (index, names)
}

fn live(stats: &IndexStats) -> u64 {
    stats.records - stats.oldest_record
}

#[test]
fn a_full_window_stays_within_its_memory_and_keeps_every_name() {
    for memory_bytes in [MIB, 4 * MIB] {
        let (index, _) = full(memory_bytes, 31);
        let stats = index.stats();
        let window = stats.window_entries;
        // The window is whole but for the part of its oldest chapter already dropped.
        assert!(live(&stats) * 64 >= window * 63, "{stats:?}");
        assert_eq!(index.live_entries(), live(&stats), "{stats:?}");
        // Expired entries linger until their list is next written: about one per list.
        assert!(stats.entries <= live(&stats) + window / 50, "{stats:?}");
    }
}

#[test]
fn absent_names_give_advice_at_most_one_time_in_ten_at_full_load() {
    for memory_bytes in [MIB, 4 * MIB] {
        let (index, _) = full(memory_bytes, 32);
        let probes = 200_000;
        let false_positives = names(33, probes)
            .iter()
            .filter(|&&name| index.lookup(name).is_some())
            .count();
        let rate = false_positives as f64 / probes as f64;
        let bound = 8.0 / index.stats().fingerprints as f64;
        let limit = bound + 4.0 * (bound / probes as f64).sqrt();
        assert!(rate <= 0.10, "{memory_bytes} B: rate {rate}");
        assert!(
            rate <= limit,
            "{memory_bytes} B: rate {rate}, bound {bound}"
        );
    }
}

#[test]
fn names_inside_a_full_window_are_found() {
    let (index, names) = full(MIB, 34);
    let stats = index.stats();
    let probes = 50_000_u64;
    // A hit on an old name refreshes it, which slides the window by a record: leave the
    // oldest records out of the sample so that it stays inside the window throughout.
    let (oldest, records) = (stats.oldest_record + probes, stats.records);
    let mut rng = ChaCha8Rng::seed_from_u64(35);
    let found = (0..probes)
        .filter(|_| {
            let i = rng.random_range(oldest..records);
            index.lookup(names[i as usize]) == Some(Pbn(i))
        })
        .count();
    assert!(
        found as f64 >= 0.999 * probes as f64,
        "{found} of {probes} found: {:?}",
        index.stats()
    );
}
