//! Prints the index's measured figures: geometry, bytes per window entry at full load, insert
//! and lookup times, false-positive rate and hit rates (dense), or hit rates against an exact
//! map on real files.
//!
//! `cargo run --release -p uvdo-index --example measure [dense MiB ...]` (default 16 256)
//! `cargo run --release -p uvdo-index --example measure --real [data MiB cap, default 512]`
//!
//! It uses only the public API, so the same file measures an older version of the crate.

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

fn geometry(sizes_mib: &[u64]) {
    for &mib in sizes_mib {
        for sparse in [false, true] {
            let config = IndexConfig {
                memory_bytes: mib << 20,
                sparse,
            };
            if let Err(e) = config.validate() {
                println!("geometry {mib:>5} MiB {:6}: refused: {e}", mode(sparse));
                continue;
            }
            let window = config.window_entries();
            println!(
                "geometry {mib:>5} MiB {:6}: window {window:>11} blocks = {:>7.1} GiB = \
                 {:.3} B/block, disk {:>9} blocks",
                mode(sparse),
                (window * 4096) as f64 / f64::from(1 << 30),
                config.memory_bytes as f64 / window as f64,
                config.disk_blocks()
            );
        }
    }
}

fn mode(sparse: bool) -> &'static str {
    if sparse { "sparse" } else { "dense" }
}

/// The i-th name of a measurement: distinct, uniformly spread, computed rather than stored.
fn name(seed: u64, i: u64) -> u128 {
    let mix = |mut z: u64| {
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    };
    let low = mix(i ^ seed.rotate_left(32));
    let high = mix(low ^ 0x9e37_79b9_7f4a_7c15 ^ seed);
    (u128::from(high) << 64) | u128::from(low)
}

fn ns_per(start: Instant, count: u64) -> f64 {
    start.elapsed().as_nanos() as f64 / count.max(1) as f64
}

/// Fills the window, slides it a quarter on, then measures hits and false positives.
///
/// Hit rates: of the newest names (young enough that a hit does not refresh them), and of a
/// uniform sample of the whole live window minus its oldest `probes` records (a hit on an old
/// name refreshes it, which slides the window by one record).
fn full_load(config: IndexConfig) {
    let index = build(config);
    let window = config.window_entries();
    let start = Instant::now();
    for i in 0..window {
        index.insert(name(1, i), Pbn(i));
    }
    let fill_ns = ns_per(start, window);
    let slide = (window / 4).min(4_000_000);
    let start = Instant::now();
    for i in window..window + slide {
        index.insert(name(1, i), Pbn(i));
    }
    let steady_ns = ns_per(start, slide);
    let total = window + slide;
    let stats = index.stats();
    let probes = (window / 20).clamp(1000, 200_000);
    let newest = probes.min(window / 4);
    let start = Instant::now();
    let mut newest_found = 0;
    for i in total - newest..total {
        newest_found += u64::from(index.lookup(name(1, i)) == Some(Pbn(i)));
    }
    let hit_ns = ns_per(start, newest);
    let mut rng = ChaCha8Rng::seed_from_u64(7);
    let (oldest, records) = (stats.oldest_record + probes, stats.records);
    let mut sampled_found = 0;
    for _ in 0..probes {
        let i = rng.random_range(oldest..records);
        sampled_found += u64::from(index.lookup(name(1, i)) == Some(Pbn(i)));
    }
    let start = Instant::now();
    let false_positives: u64 = (0..probes)
        .map(|i| u64::from(index.lookup(name(2, i)).is_some()))
        .sum();
    let miss_ns = ns_per(start, probes);
    let after = index.stats();
    println!(
        "{:>5} MiB {:6}: window {window} live {} memory {} B = {:.3} B/window entry \
         ({:.3} B/live entry); insert fill {fill_ns:.0} ns, steady {steady_ns:.0} ns; \
         lookup hit {hit_ns:.0} ns, miss {miss_ns:.0} ns; hits: newest {newest} {:.3}%, \
         whole window sample {probes} {:.3}%; false positives {:.3}% (bound 8/{} = {:.3}%); \
         evicted early {}, chapters dropped {}",
        config.memory_bytes >> 20,
        mode(config.sparse),
        stats.records - stats.oldest_record,
        after.memory_bytes,
        after.memory_bytes as f64 / window as f64,
        after.memory_bytes as f64 / (stats.records - stats.oldest_record) as f64,
        100.0 * newest_found as f64 / newest as f64,
        100.0 * sampled_found as f64 / probes as f64,
        100.0 * false_positives as f64 / probes as f64,
        after.fingerprints,
        800.0 / after.fingerprints as f64,
        after.evicted_early,
        after.chapters_dropped,
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
    let args: Vec<String> = std::env::args().skip(1).collect();
    if let Some(at) = args.iter().position(|a| a == "--real") {
        let cap_mib = args.get(at + 1).and_then(|a| a.parse().ok()).unwrap_or(512);
        real_data(cap_mib);
        return;
    }
    let sizes: Vec<u64> = args.iter().filter_map(|a| a.parse().ok()).collect();
    let sizes = if sizes.is_empty() {
        vec![16, 256]
    } else {
        sizes
    };
    geometry(&sizes);
    for &mib in &sizes {
        let config = IndexConfig {
            memory_bytes: mib << 20,
            sparse: false,
        };
        if config.validate().is_ok() {
            full_load(config);
        }
    }
}
