//! Sparse mode: a rewritten stream is found far beyond the dense window.

#![allow(
    clippy::cast_possible_truncation,
    clippy::cast_precision_loss,
    reason = "test and measurement sizes are far below 2^32 and 2^52"
)]

mod common;

use common::{names, region};
use uvdo_format::Pbn;
use uvdo_index::{DedupeIndex, IndexConfig};

#[test]
fn a_stream_rewritten_in_order_dedupes_beyond_the_dense_window() {
    let memory_bytes = 1 << 20;
    let dense = IndexConfig {
        memory_bytes,
        sparse: false,
    };
    let config = IndexConfig {
        memory_bytes,
        sparse: true,
    };
    // Sparse geometry is that of the 32-bit slot era, 10x the dense window of then, which is
    // about 8x today's dense window of memory_bytes / 4 (sparse volumes keep their regions).
    assert!(config.window_entries() >= 8 * dense.window_entries());
    let (_, region) = region(&config, 1);
    let index = DedupeIndex::new(config, Some(region)).unwrap();
    let stream = names(21, 10_000);
    for (i, &name) in stream.iter().enumerate() {
        index.insert(name, Pbn(1 + i as u64));
    }
    // Push the stream five dense windows back.
    let filler = names(22, 5 * dense.window_entries() as usize);
    for (i, &name) in filler.iter().enumerate() {
        index.insert(name, Pbn(1_000_000 + i as u64));
    }
    let found = stream
        .iter()
        .enumerate()
        .filter(|&(i, &name)| index.lookup(name) == Some(Pbn(1 + i as u64)))
        .count();
    let stats = index.stats();
    assert!(
        // Names of a chapter before its first hook are missed: about 1/9 with 256-record
        // chapters (8 hooks expected), about 3% with the 1024 records of larger memories.
        found * 100 >= stream.len() * 85,
        "{found} of {} found: {stats:?}",
        stream.len()
    );
    assert!(stats.chapter_cache_loads > 0);
    assert!(stats.memory_bytes <= memory_bytes, "{stats:?}");
    let dense_index = DedupeIndex::new(dense, None).unwrap();
    for (i, &name) in stream.iter().chain(&filler).enumerate() {
        dense_index.insert(name, Pbn(i as u64));
    }
    let dense_found = stream
        .iter()
        .filter(|&&n| dense_index.lookup(n).is_some())
        .count();
    assert!(dense_found < stream.len() / 10, "dense found {dense_found}");
}

#[test]
fn sparse_forget_and_newest_wins() {
    let config = IndexConfig {
        memory_bytes: 1 << 20,
        sparse: true,
    };
    let (_, region) = region(&config, 0);
    let index = DedupeIndex::new(config, Some(region)).unwrap();
    let names = names(23, 5000);
    for (i, &name) in names.iter().enumerate() {
        index.insert(name, Pbn(i as u64));
    }
    index.insert(names[10], Pbn(77_777));
    assert_eq!(index.lookup(names[10]), Some(Pbn(77_777)));
    assert_eq!(index.lookup(names[11]), Some(Pbn(11)));
    index.forget(names[11], Pbn(11));
    assert_eq!(index.lookup(names[11]), None);
    assert_eq!(index.lookup(names[4999]), Some(Pbn(4999)));
    index.forget(names[4999], Pbn(4999));
    assert_eq!(index.lookup(names[4999]), None);
}
