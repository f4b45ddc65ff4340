//! Dense-mode behaviour: lookups, the sliding window, memory bounds, forget, false positives.

#![allow(
    clippy::cast_possible_truncation,
    clippy::cast_precision_loss,
    reason = "test and measurement sizes are far below 2^32 and 2^52"
)]

mod common;

use common::names;
use uvdo_format::Pbn;
use uvdo_index::{DedupeIndex, IndexConfig, IndexError};

fn small(memory_bytes: u64) -> DedupeIndex {
    let config = IndexConfig {
        memory_bytes,
        sparse: false,
    };
    DedupeIndex::new(config, None).unwrap()
}

#[test]
fn inserted_names_are_found_and_the_newest_pbn_wins() {
    let index = small(1 << 20);
    let names = names(1, 20_000);
    for (i, &name) in names.iter().enumerate() {
        index.insert(name, Pbn(1000 + i as u64));
    }
    for (i, &name) in names.iter().enumerate() {
        assert_eq!(index.lookup(name), Some(Pbn(1000 + i as u64)), "name {i}");
    }
    for &name in &names[..100] {
        index.insert(name, Pbn(7));
    }
    for &name in &names[..100] {
        assert_eq!(index.lookup(name), Some(Pbn(7)));
    }
    let stats = index.stats();
    assert_eq!(stats.inserts, 20_100);
    assert_eq!(stats.evicted_early, 0);
}

#[test]
fn absent_names_give_false_positives_below_the_fingerprint_bound() {
    // 256 KiB keeps this quick; its window is small enough for many fingerprint values, so
    // the bound is checked on the default geometry through the same formula below.
    let index = small(256 << 10);
    let window = IndexConfig {
        memory_bytes: 256 << 10,
        sparse: false,
    }
    .window_entries();
    for (i, &name) in names(2, window as usize).iter().enumerate() {
        index.insert(name, Pbn(i as u64));
    }
    let probes = 200_000;
    let false_positives = names(3, probes)
        .iter()
        .filter(|&&name| index.lookup(name).is_some())
        .count();
    let fingerprints = index.stats().fingerprints;
    // A lookup compares at most 8 slots, each matching an absent name's fingerprint with
    // probability 1/fingerprints: expected rate <= 8/fingerprints. Allow 4 sigma of noise.
    let bound = 8.0 / fingerprints as f64;
    let expected_max = bound * probes as f64;
    let limit = expected_max + 4.0 * expected_max.sqrt() + 1.0;
    assert!(
        (false_positives as f64) < limit,
        "{false_positives} false positives in {probes}, bound {limit:.1}"
    );
    let default = IndexConfig::default();
    assert!(default.validate().is_ok());
    let big = IndexConfig {
        memory_bytes: 4 << 30,
        sparse: false,
    };
    assert!(matches!(
        big.validate(),
        Err(IndexError::InvalidConfig { .. })
    ));
}

#[test]
fn the_window_slides_and_memory_stays_within_the_config() {
    let memory_bytes = 64 << 10;
    let index = small(memory_bytes);
    let window = index.stats().window_entries;
    let names = names(4, 3 * window as usize);
    for (i, &name) in names.iter().enumerate() {
        index.insert(name, Pbn(i as u64));
        if i % 997 == 0 {
            assert!(
                index.stats().memory_bytes <= memory_bytes,
                "after {i} inserts"
            );
        }
    }
    let stats = index.stats();
    assert!(stats.memory_bytes <= memory_bytes);
    assert!(stats.chapters_dropped > 0);
    let total = names.len();
    let oldest_found = names[..window as usize]
        .iter()
        .filter(|&&n| index.lookup(n).is_some())
        .count();
    assert!(
        oldest_found < 10,
        "{oldest_found} names from two windows ago found"
    );
    let newest = &names[total - window as usize / 2..];
    let newest_found = newest
        .iter()
        .enumerate()
        .filter(|&(i, &n)| {
            let at = (total - newest.len() + i) as u64;
            index.lookup(n) == Some(Pbn(at))
        })
        .count();
    assert!(
        newest_found * 100 >= newest.len() * 97,
        "{newest_found} of the newest {} found",
        newest.len()
    );
    assert!(index.live_entries() <= window);
}

#[test]
fn random_pbns_shrink_the_window_but_never_break_the_memory_bound() {
    let memory_bytes = 64 << 10;
    let index = small(memory_bytes);
    let window = index.stats().window_entries;
    let names = names(5, 2 * window as usize);
    let pbns = names.iter().map(|&n| (n >> 80) as u64);
    for (&name, pbn) in names.iter().zip(pbns) {
        index.insert(name, Pbn(pbn));
    }
    let stats = index.stats();
    assert!(stats.memory_bytes <= memory_bytes, "{stats:?}");
    let last = *names.last().unwrap();
    assert_eq!(index.lookup(last), Some(Pbn((last >> 80) as u64)));
}

#[test]
fn forget_stops_the_stale_advice_only() {
    let index = small(1 << 20);
    let names = names(6, 3);
    index.insert(names[0], Pbn(10));
    index.insert(names[1], Pbn(11));
    index.insert(names[2], Pbn(12));
    index.insert(names[2], Pbn(13));
    index.forget(names[0], Pbn(99));
    assert_eq!(index.lookup(names[0]), Some(Pbn(10)));
    index.forget(names[0], Pbn(10));
    assert_eq!(index.lookup(names[0]), None);
    index.forget(names[2], Pbn(13));
    assert_eq!(
        index.lookup(names[2]),
        Some(Pbn(12)),
        "older advice remains"
    );
    assert_eq!(index.lookup(names[1]), Some(Pbn(11)));
    assert_eq!(index.stats().stale_forgotten, 2);
}

#[test]
fn old_hits_are_refreshed_into_the_open_chapter() {
    let index = small(64 << 10);
    let window = index.stats().window_entries as usize;
    let names = names(7, 2 * window);
    let popular = names[0];
    index.insert(popular, Pbn(5));
    for (i, &name) in names[1..].iter().enumerate() {
        index.insert(name, Pbn(100 + i as u64));
        if i % (window / 4) == 0 {
            assert_eq!(index.lookup(popular), Some(Pbn(5)), "after {i}");
        }
    }
    assert_eq!(index.lookup(popular), Some(Pbn(5)));
    assert!(index.stats().refreshes > 0);
}
