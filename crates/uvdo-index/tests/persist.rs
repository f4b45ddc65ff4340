//! Save and load on a memory store region, and detection of damaged or stale saves.

#![allow(
    clippy::cast_possible_truncation,
    clippy::cast_precision_loss,
    reason = "test and measurement sizes are far below 2^32 and 2^52"
)]

mod common;

use common::{names, region};
use uvdo_format::{Pbn, SequenceNumber};
use uvdo_index::{DedupeIndex, IndexConfig, IndexError};
use uvdo_io::storage::Storage;

const GENERATION: SequenceNumber = SequenceNumber(9);

fn filled(config: IndexConfig, count: usize) -> (DedupeIndex, Vec<u128>, common::Fixture) {
    let (store, region) = region(&config, 3);
    let index = DedupeIndex::new(config, Some(region.clone())).unwrap();
    let names = names(11, count);
    for (i, &name) in names.iter().enumerate() {
        index.insert(name, Pbn(50 + i as u64));
    }
    (index, names, (store, region))
}

fn check_found(index: &DedupeIndex, names: &[u128], skip: usize) {
    for (i, &name) in names.iter().enumerate().skip(skip) {
        assert_eq!(index.lookup(name), Some(Pbn(50 + i as u64)), "name {i}");
    }
}

#[test]
fn a_dense_save_loads_back_with_the_same_answers() {
    let config = IndexConfig {
        memory_bytes: 256 << 10,
        sparse: false,
    };
    let window = config.window_entries() as usize;
    let (index, names, (_, region)) = filled(config, 2 * window);
    index.save(GENERATION).unwrap();
    let loaded = DedupeIndex::load(config, region, GENERATION).unwrap();
    let skip = names.len() - window * 9 / 10;
    let mut found = 0;
    for (i, &name) in names.iter().enumerate().skip(skip) {
        let answer = loaded.lookup(name);
        assert_eq!(answer, index.lookup(name), "name {i}");
        found += usize::from(answer == Some(Pbn(50 + i as u64)));
    }
    assert!(found * 100 >= (names.len() - skip) * 90, "{found} found");
    assert_eq!(loaded.stats().oldest_record, index.stats().oldest_record);
}

#[test]
fn a_sparse_save_loads_back_and_keeps_its_chapters() {
    let config = IndexConfig {
        memory_bytes: 1 << 20,
        sparse: true,
    };
    let (index, names, (_, region)) = filled(config, 20_000);
    index.save(GENERATION).unwrap();
    let loaded = DedupeIndex::load(config, region, GENERATION).unwrap();
    check_found(&loaded, &names, 0);
}

#[test]
fn any_flipped_bit_or_stale_generation_fails_the_load() {
    let config = IndexConfig {
        memory_bytes: 64 << 10,
        sparse: false,
    };
    let (index, _, (store, region)) = filled(config, 5_000);
    index.save(GENERATION).unwrap();
    assert!(DedupeIndex::load(config, region.clone(), GENERATION).is_ok());
    let stale = DedupeIndex::load(config, region.clone(), GENERATION.next());
    assert!(
        matches!(stale, Err(IndexError::Page { page: 0, .. })),
        "{stale:?}"
    );
    let pages = config.disk_blocks();
    for page in [0, 1, pages / 2] {
        let offset = (region.start.0 + page) * 4096 + 100 + page * 7;
        let mut byte = [0; 512];
        let sector = offset / 512 * 512;
        store.read_at(sector, &mut byte).unwrap();
        byte[(offset - sector) as usize] ^= 0x10;
        store.write_at(sector, &byte).unwrap();
        let result = DedupeIndex::load(config, region.clone(), GENERATION);
        assert!(
            matches!(result, Err(IndexError::Page { .. })),
            "page {page}: {result:?}"
        );
        byte[(offset - sector) as usize] ^= 0x10;
        store.write_at(sector, &byte).unwrap();
    }
    assert!(DedupeIndex::load(config, region, GENERATION).is_ok());
}

#[test]
fn a_load_with_another_config_is_refused() {
    let config = IndexConfig {
        memory_bytes: 64 << 10,
        sparse: false,
    };
    let (index, _, (_, region)) = filled(config, 1000);
    index.save(GENERATION).unwrap();
    let other = IndexConfig {
        memory_bytes: 60 << 10,
        sparse: false,
    };
    let result = DedupeIndex::load(other, region, GENERATION);
    assert!(
        matches!(
            result,
            Err(IndexError::ConfigMismatch {
                field: "memory_bytes",
                ..
            })
        ),
        "{result:?}"
    );
}

#[test]
fn regions_are_checked_and_sparse_needs_one() {
    let sparse = IndexConfig {
        memory_bytes: 1 << 20,
        sparse: true,
    };
    assert!(matches!(
        DedupeIndex::new(sparse, None),
        Err(IndexError::SparseNeedsRegion)
    ));
    let (_, mut region) = region(&sparse, 0);
    region.blocks -= 1;
    assert!(matches!(
        DedupeIndex::new(sparse, Some(region)),
        Err(IndexError::RegionTooSmall { .. })
    ));
    let dense = DedupeIndex::new(IndexConfig::default(), None).unwrap();
    assert!(matches!(dense.save(GENERATION), Err(IndexError::NoRegion)));
}
