//! The memory, file and io_uring stores (buffered and O_DIRECT) run the same seeded random
//! workload and must all match a `Vec<u8>` model after every operation. A discarded sector may
//! read as zeros or as its old contents until it is written again.
//!
//! Set `UVDO_SEED=<n>` to replay one seed; every failure names its seed.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use uvdo_io::Storage;
use uvdo_io::file::{FileOptions, FileStore};
use uvdo_io::memory::MemoryStore;
use uvdo_io::uring::{self, UringStore};

const SECTOR_BYTES: usize = 512;
const STORE_BYTES: usize = 256 * 1024;
const SECTORS: usize = STORE_BYTES / SECTOR_BYTES;
const REQUEST_SECTORS_MAX: usize = 24;
const OPS_PER_SEED: usize = 250;
const SEEDS: [u64; 3] = [1, 0x5eed, 0xdead_beef];

struct Model {
    bytes: Vec<u8>,
    /// Per sector: discarded since last written, so zeros are also a right answer.
    discarded: Vec<bool>,
}

impl Model {
    fn write(&mut self, offset: usize, data: &[u8]) {
        self.bytes[offset..offset + data.len()].copy_from_slice(data);
        let first = offset / SECTOR_BYTES;
        self.discarded[first..first + data.len() / SECTOR_BYTES].fill(false);
    }

    fn discard(&mut self, offset: usize, len: usize) {
        let first = offset / SECTOR_BYTES;
        self.discarded[first..first + len / SECTOR_BYTES].fill(true);
    }

    /// The first sector of `got` (read at `offset`) that the model does not allow.
    fn first_mismatch(&self, offset: usize, got: &[u8]) -> Option<usize> {
        got.chunks(SECTOR_BYTES)
            .enumerate()
            .find_map(|(i, sector)| {
                let index = offset / SECTOR_BYTES + i;
                let at = index * SECTOR_BYTES;
                let expected = &self.bytes[at..at + SECTOR_BYTES];
                let zeros_ok = self.discarded[index] && sector.iter().all(|&b| b == 0);
                (sector != expected && !zeros_ok).then_some(index)
            })
    }
}

struct Named {
    name: String,
    store: Box<dyn Storage>,
}

fn open_stores(dir: &tempfile::TempDir) -> Vec<Named> {
    let mut stores = vec![Named {
        name: "memory".to_owned(),
        store: Box::new(MemoryStore::new(STORE_BYTES as u64)),
    }];
    let uring_ok = match uring::probe() {
        Ok(()) => true,
        Err(e) => {
            println!("io_uring NOT AVAILABLE here, its store is not tested: {e}");
            false
        }
    };
    for direct in [false, true] {
        for engine in ["file", "uring"] {
            if engine == "uring" && !uring_ok {
                continue;
            }
            let name = format!("{engine}{}", if direct { "+direct" } else { "" });
            let opts = FileOptions {
                direct,
                read_only: false,
                create_size: Some(STORE_BYTES as u64),
            };
            let path = dir.path().join(&name);
            let store: Result<Box<dyn Storage>, _> = if engine == "file" {
                FileStore::open(&path, &opts).map(|s| Box::new(s) as Box<dyn Storage>)
            } else {
                UringStore::open(&path, &opts).map(|s| Box::new(s) as Box<dyn Storage>)
            };
            match store {
                Ok(store) => stores.push(Named { name, store }),
                Err(e) if direct && e.errno() == libc::EINVAL => {
                    println!("{name}: O_DIRECT unsupported on the temp filesystem, skipped");
                }
                Err(e) => panic!("cannot open {name}: {e}"),
            }
        }
    }
    stores
}

/// A random sector-aligned range of 1..=REQUEST_SECTORS_MAX sectors inside the store.
fn random_range(rng: &mut ChaCha8Rng) -> (usize, usize) {
    let first = rng.random_range(0..SECTORS);
    let count = rng
        .random_range(1..=REQUEST_SECTORS_MAX)
        .min(SECTORS - first);
    (first * SECTOR_BYTES, count * SECTOR_BYTES)
}

/// Random bytes of `len`, placed at a random shift inside their allocation so O_DIRECT
/// stores see unaligned buffers too.
fn random_data(rng: &mut ChaCha8Rng, len: usize) -> (Vec<u8>, usize) {
    let shift = rng.random_range(0..8) * 64;
    let mut backing = vec![0_u8; len + shift];
    rng.fill(&mut backing[shift..]);
    (backing, shift)
}

fn check_all(stores: &[Named], model: &Model, seed: u64, step: usize) {
    let mut image = vec![0_u8; STORE_BYTES];
    for named in stores {
        named.store.read_at(0, &mut image).unwrap_or_else(|e| {
            panic!(
                "seed {seed} step {step}: {} full read failed: {e}",
                named.name
            )
        });
        if let Some(sector) = model.first_mismatch(0, &image) {
            panic!(
                "seed {seed} step {step}: {} differs from the model at sector {sector}",
                named.name
            );
        }
    }
}

fn run_seed(seed: u64) {
    let dir = tempfile::tempdir().unwrap();
    let stores = open_stores(&dir);
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut model = Model {
        bytes: vec![0; STORE_BYTES],
        discarded: vec![false; SECTORS],
    };
    let mut counts = [0_usize; 5];
    for step in 0..OPS_PER_SEED {
        let kind = rng.random_range(0..100);
        let (offset, len) = random_range(&mut rng);
        let at = offset as u64;
        match kind {
            0..40 => {
                counts[0] += 1;
                let (backing, shift) = random_data(&mut rng, len);
                for named in &stores {
                    named
                        .store
                        .write_at(at, &backing[shift..])
                        .unwrap_or_else(|e| {
                            panic!("seed {seed} step {step}: {} write: {e}", named.name)
                        });
                }
                model.write(offset, &backing[shift..]);
            }
            40..55 => {
                counts[1] += 1;
                let (backing, shift) = random_data(&mut rng, len);
                for named in &stores {
                    named
                        .store
                        .write_at_fua(at, &backing[shift..])
                        .unwrap_or_else(|e| {
                            panic!("seed {seed} step {step}: {} FUA write: {e}", named.name)
                        });
                }
                model.write(offset, &backing[shift..]);
            }
            55..80 => {
                counts[2] += 1;
                let shift = rng.random_range(0..8) * 64;
                let mut backing = vec![0_u8; len + shift];
                for named in &stores {
                    named
                        .store
                        .read_at(at, &mut backing[shift..])
                        .unwrap_or_else(|e| {
                            panic!("seed {seed} step {step}: {} read: {e}", named.name)
                        });
                    if let Some(sector) = model.first_mismatch(offset, &backing[shift..]) {
                        panic!(
                            "seed {seed} step {step}: {} read sector {sector}",
                            named.name
                        );
                    }
                }
            }
            80..90 => {
                counts[3] += 1;
                for named in &stores {
                    named.store.flush().unwrap_or_else(|e| {
                        panic!("seed {seed} step {step}: {} flush: {e}", named.name)
                    });
                }
            }
            _ => {
                counts[4] += 1;
                for named in &stores {
                    named.store.discard(at, len as u64).unwrap_or_else(|e| {
                        panic!("seed {seed} step {step}: {} discard: {e}", named.name)
                    });
                }
                model.discard(offset, len);
            }
        }
        check_all(&stores, &model, seed, step);
    }
    let names: Vec<&str> = stores.iter().map(|n| n.name.as_str()).collect();
    println!(
        "seed {seed}: {names:?} agreed over {OPS_PER_SEED} ops \
         (writes, fua, reads, flushes, discards = {counts:?})"
    );
    // Every kind of operation ran, or the test proved less than it claims.
    assert!(
        counts.iter().all(|&c| c > 0),
        "seed {seed}: op mix {counts:?}"
    );
}

#[test]
fn stores_agree_with_the_model_on_random_workloads() {
    match std::env::var("UVDO_SEED") {
        Ok(seed) => run_seed(seed.parse().expect("UVDO_SEED is a u64")),
        Err(_) => SEEDS.into_iter().for_each(run_seed),
    }
}

#[test]
fn the_model_check_catches_a_wrong_sector() {
    let mut model = Model {
        bytes: vec![0; 4 * SECTOR_BYTES],
        discarded: vec![false; 4],
    };
    model.write(0, &[5; 4 * SECTOR_BYTES]);
    model.discard(SECTOR_BYTES, SECTOR_BYTES);
    let mut got = vec![5_u8; 4 * SECTOR_BYTES];
    assert_eq!(model.first_mismatch(0, &got), None);
    got[SECTOR_BYTES..2 * SECTOR_BYTES].fill(0);
    assert_eq!(
        model.first_mismatch(0, &got),
        None,
        "discarded may read as zeros"
    );
    got[2 * SECTOR_BYTES] = 0;
    assert_eq!(model.first_mismatch(0, &got), Some(2));
    assert_eq!(
        model.first_mismatch(2 * SECTOR_BYTES, &got[2 * SECTOR_BYTES..]),
        Some(2)
    );
}
