//! Several threads inserting and looking up at once.

#![allow(
    clippy::cast_possible_truncation,
    clippy::cast_precision_loss,
    reason = "test and measurement sizes are far below 2^32 and 2^52"
)]

mod common;

use std::sync::Arc;

use common::names;
use uvdo_format::Pbn;
use uvdo_index::{DedupeIndex, IndexConfig};

#[test]
fn concurrent_writers_and_readers_see_their_own_inserts() {
    let config = IndexConfig {
        memory_bytes: 4 << 20,
        sparse: false,
    };
    let index = Arc::new(DedupeIndex::new(config, None).unwrap());
    let threads = 4;
    let per_thread = 20_000;
    let handles: Vec<_> = (0..threads)
        .map(|t| {
            let index = Arc::clone(&index);
            std::thread::spawn(move || {
                let mine = names(100 + t, per_thread);
                let base = t * 1_000_000;
                let mut wrong = 0;
                for (i, &name) in mine.iter().enumerate() {
                    index.insert(name, Pbn(base + i as u64));
                    let back = index.lookup(name);
                    assert!(back.is_some(), "thread {t} name {i} lost");
                    wrong += u64::from(back != Some(Pbn(base + i as u64)));
                }
                (mine, wrong)
            })
        })
        .collect();
    let all: Vec<(Vec<u128>, u64)> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    let mut wrong: u64 = all.iter().map(|(_, w)| w).sum();
    for (t, (mine, _)) in all.iter().enumerate() {
        for (i, &name) in mine.iter().enumerate() {
            let back = index.lookup(name);
            assert!(back.is_some(), "thread {t} name {i} lost");
            wrong += u64::from(back != Some(Pbn(t as u64 * 1_000_000 + i as u64)));
        }
    }
    let stats = index.stats();
    // A newer entry of another name with the same fingerprint in the same two buckets shadows
    // a name: at most 8 / fingerprints of lookups (plus noise) answer with its PBN.
    let lookups = 2 * threads * per_thread as u64;
    let expected_max = lookups as f64 * 8.0 / stats.fingerprints as f64;
    let limit = expected_max + 4.0 * expected_max.sqrt() + 1.0;
    assert!(
        (wrong as f64) < limit,
        "{wrong} shadowed answers, limit {limit:.1}"
    );
    assert_eq!(stats.inserts, threads * per_thread as u64);
    assert!(stats.memory_bytes <= config.memory_bytes);
}

#[test]
fn concurrent_sparse_inserts_do_not_lose_chapters() {
    let config = IndexConfig {
        memory_bytes: 1 << 20,
        sparse: true,
    };
    let (_, region) = common::region(&config, 0);
    let index = Arc::new(DedupeIndex::new(config, Some(region)).unwrap());
    let handles: Vec<_> = (0..3_u64)
        .map(|t| {
            let index = Arc::clone(&index);
            std::thread::spawn(move || {
                let mine = names(200 + t, 10_000);
                for (i, &name) in mine.iter().enumerate() {
                    index.insert(name, Pbn(t << 32 | i as u64));
                    index.lookup(mine[i / 2]);
                }
                mine
            })
        })
        .collect();
    let all: Vec<Vec<u128>> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    let found = all
        .iter()
        .enumerate()
        .flat_map(|(t, mine)| {
            mine.iter()
                .enumerate()
                .map(move |(i, &n)| (n, Pbn((t as u64) << 32 | i as u64)))
        })
        .filter(|&(n, pbn)| index.lookup(n) == Some(pbn))
        .count();
    assert!(found >= 29_000, "{found} of 30000 found");
    assert_eq!(index.stats().chapter_io_errors, 0);
}
