//! Prints the index's measured figures: geometry, bytes per entry at full load, throughput,
//! false-positive rate, and hit rate against an exact map on real files.
//!
//! `cargo run --release -p uvdo-index --example measure [data MiB cap, default 512]`

#![allow(
    clippy::cast_possible_truncation,
    clippy::cast_precision_loss,
    reason = "test and measurement sizes are far below 2^32 and 2^52"
)]

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use uvdo_format::{Nonce, Pbn};
use uvdo_index::{DedupeIndex, IndexConfig, IndexRegion};
use uvdo_io::memory::MemoryStore;

fn build(config: IndexConfig) -> DedupeIndex {
    let region = config.sparse.then(|| {
        let blocks = config.disk_blocks();
        IndexRegion {
            store: Arc::new(MemoryStore::new(blocks * 4096)),
            start: Pbn(0),
            blocks,
            nonce: Nonce(1),
        }
    });
    DedupeIndex::new(config, region).unwrap()
}

fn geometry() {
    for memory_bytes in [256_u64 << 20, 1 << 30] {
        for sparse in [false, true] {
            let config = IndexConfig {
                memory_bytes,
                sparse,
            };
            let window = config.window_entries();
            println!(
                "geometry {:>5} MiB {:6}: window {:>11} blocks = {:>7.1} GiB, disk {:>9} blocks",
                memory_bytes >> 20,
                if sparse { "sparse" } else { "dense" },
                window,
                (window * 4096) as f64 / f64::from(1 << 30),
                config.disk_blocks()
            );
        }
    }
}

fn full_load(config: IndexConfig) {
    let index = build(config);
    let mut rng = ChaCha8Rng::seed_from_u64(1);
    let window = config.window_entries();
    let names: Vec<u128> = (0..window).map(|_| rng.random()).collect();
    let start = Instant::now();
    for (i, &name) in names.iter().enumerate() {
        index.insert(name, Pbn(i as u64));
    }
    let insert_ns = start.elapsed().as_nanos() as f64 / window as f64;
    let probe = names.len().min(2_000_000);
    let start = Instant::now();
    let mut correct = 0_u64;
    for (i, &name) in names[names.len() - probe..].iter().enumerate() {
        let at = (names.len() - probe + i) as u64;
        correct += u64::from(index.lookup(name) == Some(Pbn(at)));
    }
    let hit_ns = start.elapsed().as_nanos() as f64 / probe as f64;
    let absent: Vec<u128> = (0..probe).map(|_| rng.random()).collect();
    let start = Instant::now();
    let false_positives = absent
        .iter()
        .filter(|&&n| index.lookup(n).is_some())
        .count();
    let miss_ns = start.elapsed().as_nanos() as f64 / probe as f64;
    let stats = index.stats();
    let live = index.live_entries();
    println!(
        "{:>4} MiB {:6}: window {} live {} memory {} B = {:.2} B/live entry \
         ({:.2} B/window entry); insert {:.0} ns, lookup hit {:.0} ns, miss {:.0} ns; \
         newest {} found {:.2}%; false positives {:.3}% (bound 8/{} = {:.3}%); \
         evicted early {}, cache loads {}",
        config.memory_bytes >> 20,
        if config.sparse { "sparse" } else { "dense" },
        window,
        live,
        stats.memory_bytes,
        stats.memory_bytes as f64 / live as f64,
        stats.memory_bytes as f64 / window as f64,
        insert_ns,
        hit_ns,
        miss_ns,
        probe,
        100.0 * correct as f64 / probe as f64,
        100.0 * false_positives as f64 / probe as f64,
        stats.fingerprints,
        800.0 / stats.fingerprints as f64,
        stats.evicted_early,
        stats.chapter_cache_loads,
    );
}

fn read_blocks(cap_bytes: u64) -> Vec<u128> {
    let secret = 0x0123_4567_89ab_cdef;
    let mut names = Vec::new();
    let mut total = 0_u64;
    let mut stack = vec![
        std::path::PathBuf::from("/usr/lib/x86_64-linux-gnu"),
        std::path::PathBuf::from("/usr/share"),
    ];
    while let Some(path) = stack.pop() {
        if total >= cap_bytes {
            break;
        }
        let Ok(meta) = std::fs::symlink_metadata(&path) else {
            continue;
        };
        if meta.is_dir() {
            let Ok(entries) = std::fs::read_dir(&path) else {
                continue;
            };
            let mut children: Vec<_> = entries.filter_map(|e| e.ok().map(|e| e.path())).collect();
            children.sort();
            children.reverse();
            stack.extend(children);
        } else if meta.is_file() {
            let Ok(bytes) = std::fs::read(&path) else {
                continue;
            };
            for block in bytes.chunks(4096) {
                let mut padded = [0_u8; 4096];
                padded[..block.len()].copy_from_slice(block);
                names.push(xxhash_rust::xxh3::xxh3_128_with_seed(&padded, secret));
            }
            total += bytes.len() as u64;
        }
    }
    names
}

/// Writes `passes` of names; returns (index hits that were right, exact hits) per pass.
fn replay(config: IndexConfig, passes: &[Vec<u128>]) -> Vec<(u64, u64, u64)> {
    let index = build(config);
    let mut exact: HashMap<u128, u64> = HashMap::new();
    let mut next_pbn = 1_u64;
    let mut out = Vec::new();
    for pass in passes {
        let (mut ours, mut wrong, mut theirs) = (0, 0, 0);
        for &name in pass {
            let truth = exact.get(&name).copied();
            theirs += u64::from(truth.is_some());
            match index.lookup(name) {
                Some(pbn) if Some(pbn.0) == truth => ours += 1,
                answer => {
                    wrong += u64::from(answer.is_some());
                    if let Some(pbn) = answer {
                        index.forget(name, pbn);
                    }
                    let pbn = truth.unwrap_or_else(|| {
                        next_pbn += 1;
                        exact.insert(name, next_pbn);
                        next_pbn
                    });
                    index.insert(name, Pbn(pbn));
                }
            }
        }
        out.push((ours, wrong, theirs));
    }
    out
}

fn real_data(cap_mib: u64) {
    let names = read_blocks(cap_mib << 20);
    let distinct = names.iter().collect::<std::collections::HashSet<_>>().len();
    println!(
        "data: {} blocks ({} MiB), {} distinct",
        names.len(),
        names.len() / 256,
        distinct
    );
    let mut shuffled = names.clone();
    shuffled.shuffle(&mut ChaCha8Rng::seed_from_u64(9));
    let blocks = names.len() as u64;
    // A dense window smaller than the data set, then 1 MiB (sparse's minimum), then default.
    let small = IndexConfig {
        memory_bytes: (blocks * 2).max(64 << 10),
        sparse: false,
    };
    let mut configs = vec![small];
    for memory_bytes in [1 << 20, 256 << 20] {
        for sparse in [false, true] {
            configs.push(IndexConfig {
                memory_bytes,
                sparse,
            });
        }
    }
    for config in configs {
        {
            let sparse = config.sparse;
            let results = replay(config, &[names.clone(), names.clone(), shuffled.clone()]);
            let rates: Vec<String> = results
                .iter()
                .zip(["first pass", "second pass", "shuffled third pass"])
                .map(|(&(ours, wrong, exact), what)| {
                    format!(
                        "{what}: {ours}/{exact} = {:.2}% ({wrong} wrong advice)",
                        100.0 * ours as f64 / exact.max(1) as f64
                    )
                })
                .collect();
            println!(
                "{:>6} KiB {:6} window {:>9}: {}",
                config.memory_bytes >> 10,
                if sparse { "sparse" } else { "dense" },
                config.window_entries(),
                rates.join("; ")
            );
        }
    }
}

fn main() {
    let cap_mib = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(512);
    geometry();
    for config in [
        IndexConfig::default(),
        IndexConfig {
            memory_bytes: 8 << 20,
            sparse: false,
        },
        IndexConfig {
            memory_bytes: 8 << 20,
            sparse: true,
        },
    ] {
        full_load(config);
    }
    real_data(cap_mib);
}
