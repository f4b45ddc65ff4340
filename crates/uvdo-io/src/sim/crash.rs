//! Power cuts: which of the pending writes reach the durable image, whole or torn.
//!
//! A crash starts from the durable image and applies, in completion order, the FUA writes
//! (always) and each pending write according to its [`PendingFate`]. Lost writes are never
//! applied. A torn write applies a subset of its 512-byte sectors whole, and at most one more
//! sector half-written: a prefix from the new data, the rest as it was. Nothing else ever
//! reaches the image, so every byte after a crash comes from the durable image or from a write
//! that completed before the crash.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use uvdo_format::SECTOR_SIZE;

use super::cache::{Cache, Durability, Entry};
use super::image::Image;

/// What a power cut leaves of the pending writes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CrashPlan {
    /// Only the durable image: every pending write is dropped.
    KeepNone,
    /// Every pending write is applied whole.
    KeepAll,
    /// The first `n` pending writes in completion order are applied whole, the rest dropped.
    KeepPrefix(usize),
    /// Each pending write is independently dropped, applied or torn, drawn from this seed.
    Seeded(u64),
    /// One fate per pending write, in completion order; the length must equal the pending
    /// count (see `SimStore::pending_count`).
    Explicit(Vec<PendingFate>),
}

/// What a crash does to one pending write.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PendingFate {
    /// The write never reached the media.
    Dropped,
    /// The whole write reached the media.
    Applied,
    /// Part of the write reached the media.
    Torn {
        /// One flag per 512-byte sector of the write: `true` where the sector was written.
        sectors: Vec<bool>,
        /// A sector (not flagged in `sectors`) of which only a prefix was written.
        half: Option<HalfSector>,
    },
}

/// A sector of a torn write of which only the first `new_bytes` bytes reached the media.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HalfSector {
    /// Index of the sector within the write.
    pub sector: usize,
    /// Bytes written from the start of the sector, in `1..512`.
    pub new_bytes: usize,
}

/// A pending write as a crash harness sees it: what it may drop, apply or tear.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PendingWrite {
    /// Index of the event that logged it.
    pub event: usize,
    /// Byte offset where it landed.
    pub offset: u64,
    /// Length in bytes; a torn fate needs one flag per 512-byte sector.
    pub len: u64,
}

/// The pending writes of `cache`, in completion order.
pub(super) fn pending_writes(cache: &Cache) -> Vec<PendingWrite> {
    cache
        .pending()
        .map(|entry| PendingWrite {
            event: entry.event,
            offset: entry.offset,
            len: entry.payload.len_bytes(),
        })
        .collect()
}

impl PendingFate {
    /// A torn fate for a write of `sector_count` sectors, sector `i` written where bit `i` of
    /// `mask` is set (bits at and beyond `sector_count` must be clear).
    ///
    /// # Panics
    ///
    /// If `mask` has a bit set at or beyond `sector_count`, or `sector_count` exceeds 64.
    #[must_use]
    pub fn torn_mask(mask: u64, sector_count: usize) -> Self {
        assert!(
            sector_count <= 64,
            "a sector mask covers at most 64 sectors"
        );
        assert!(
            sector_count == 64 || mask >> sector_count == 0,
            "sector mask {mask:#x} has bits beyond {sector_count} sectors"
        );
        Self::Torn {
            sectors: (0..sector_count).map(|bit| mask >> bit & 1 == 1).collect(),
            half: None,
        }
    }
}

/// Draws a fate for a write of `sector_count` sectors: a third each dropped, applied, torn.
fn draw_fate(rng: &mut ChaCha8Rng, sector_count: usize) -> PendingFate {
    match rng.random_range(0..3_u8) {
        0 => PendingFate::Dropped,
        1 => PendingFate::Applied,
        _ => {
            let sectors: Vec<bool> = (0..sector_count).map(|_| rng.random_bool(0.5)).collect();
            let unwritten: Vec<usize> = (0..sector_count).filter(|&i| !sectors[i]).collect();
            let half = if !unwritten.is_empty() && rng.random_bool(0.5) {
                Some(HalfSector {
                    sector: unwritten[rng.random_range(0..unwritten.len())],
                    new_bytes: rng.random_range(1..SECTOR_SIZE),
                })
            } else {
                None
            };
            PendingFate::Torn { sectors, half }
        }
    }
}

/// One fate per pending entry of `cache`, as `plan` says.
fn fates(cache: &Cache, plan: CrashPlan, seed: u64) -> Vec<PendingFate> {
    let pending: Vec<&Entry> = cache.pending().collect();
    let fates = match plan {
        CrashPlan::KeepNone => vec![PendingFate::Dropped; pending.len()],
        CrashPlan::KeepAll => vec![PendingFate::Applied; pending.len()],
        CrashPlan::KeepPrefix(kept) => (0..pending.len())
            .map(|index| {
                if index < kept {
                    PendingFate::Applied
                } else {
                    PendingFate::Dropped
                }
            })
            .collect(),
        CrashPlan::Seeded(crash_seed) => {
            let mut rng = ChaCha8Rng::seed_from_u64(crash_seed);
            pending
                .iter()
                .map(|entry| draw_fate(&mut rng, entry.sector_count()))
                .collect()
        }
        CrashPlan::Explicit(fates) => fates,
    };
    assert_eq!(
        fates.len(),
        pending.len(),
        "crash plan gives {} fates for {} pending writes (store seed {seed})",
        fates.len(),
        pending.len()
    );
    fates
}

/// Applies the parts of `entry` that `fate` says reached the media.
fn apply_fate(image: &mut Image, entry: &Entry, fate: &PendingFate, seed: u64) {
    match fate {
        PendingFate::Dropped => {}
        PendingFate::Applied => entry.apply(image),
        PendingFate::Torn { sectors, half } => {
            let count = entry.sector_count();
            assert_eq!(
                sectors.len(),
                count,
                "torn fate for the write of event {} has {} sector flags for {count} sectors \
                 (store seed {seed})",
                entry.event,
                sectors.len()
            );
            for (index, _) in sectors.iter().enumerate().filter(|(_, written)| **written) {
                entry.apply_sector_prefix(image, index, SECTOR_SIZE);
            }
            if let Some(half) = half {
                assert!(
                    half.sector < count && !sectors[half.sector],
                    "half-written sector {} of the write of event {} is out of range or also \
                     written whole (store seed {seed})",
                    half.sector,
                    entry.event
                );
                assert!(
                    (1..SECTOR_SIZE).contains(&half.new_bytes),
                    "half-written sector with {} new bytes (store seed {seed})",
                    half.new_bytes
                );
                entry.apply_sector_prefix(image, half.sector, half.new_bytes);
            }
        }
    }
}

/// The durable image a power cut could leave, as `plan` says. `seed` is the store's, for
/// messages.
pub(super) fn crash_image(cache: &Cache, plan: CrashPlan, seed: u64) -> Image {
    let fates = fates(cache, plan, seed);
    let mut image = cache.durable().clone();
    let mut fates = fates.iter();
    for entry in cache.entries() {
        match entry.durability {
            Durability::Cached => {
                let fate = fates.next().expect("one fate per pending write");
                apply_fate(&mut image, entry, fate, seed);
            }
            Durability::Fua => entry.apply(&mut image),
            Durability::Lost => {}
        }
    }
    image
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::super::cache::Payload;
    use super::*;

    fn cached(event: usize, offset: u64, data: Vec<u8>) -> Entry {
        Entry {
            event,
            offset,
            payload: Payload::Bytes(Arc::from(data)),
            durability: Durability::Cached,
        }
    }

    /// 4 KiB of old data, and one pending 4 KiB write of new data over it.
    fn one_pending_block() -> (Cache, Vec<u8>, Vec<u8>) {
        let old: Vec<u8> = (0..4096_u32).map(|i| (i % 200) as u8).collect();
        let new: Vec<u8> = (0..4096_u32).map(|i| 201 + (i % 50) as u8).collect();
        let mut cache = Cache::new(Image::from_bytes(&old));
        cache.push(cached(0, 0, new.clone()));
        (cache, old, new)
    }

    #[test]
    fn torn_writes_mix_old_and_new_sectors_and_nothing_else() {
        let (cache, old, new) = one_pending_block();
        let (mut saw_mixed, mut saw_half) = (false, false);
        for crash_seed in 0..200 {
            let image = crash_image(&cache, CrashPlan::Seeded(crash_seed), 0).to_vec();
            let mut kinds = [0_usize; 3];
            let mut halves = 0;
            for sector in 0..8 {
                let range = sector * 512..(sector + 1) * 512;
                let (got, was, now) = (&image[range.clone()], &old[range.clone()], &new[range]);
                if got == was {
                    kinds[0] += 1;
                } else if got == now {
                    kinds[1] += 1;
                } else {
                    let split = (1..512).find(|&k| got[..k] == now[..k] && got[k..] == was[k..]);
                    assert!(
                        split.is_some(),
                        "crash seed {crash_seed}: sector {sector} foreign"
                    );
                    halves += 1;
                }
            }
            assert!(
                halves <= 1,
                "crash seed {crash_seed}: {halves} half-written sectors"
            );
            saw_half |= halves == 1;
            saw_mixed |= kinds[0] > 0 && kinds[1] > 0;
        }
        assert!(saw_mixed && saw_half, "mixed {saw_mixed}, half {saw_half}");
    }

    #[test]
    fn explicit_fates_tear_exactly_as_told() {
        let (cache, old, new) = one_pending_block();
        let fate = PendingFate::Torn {
            sectors: vec![true, false, false, true, false, false, false, false],
            half: Some(HalfSector {
                sector: 5,
                new_bytes: 100,
            }),
        };
        let image = crash_image(&cache, CrashPlan::Explicit(vec![fate]), 0).to_vec();
        let mut expected = old.clone();
        expected[..512].copy_from_slice(&new[..512]);
        expected[1536..2048].copy_from_slice(&new[1536..2048]);
        expected[2560..2660].copy_from_slice(&new[2560..2660]);
        assert_eq!(image, expected);
    }

    #[test]
    fn torn_masks_set_the_named_sectors() {
        let PendingFate::Torn { sectors, half } = PendingFate::torn_mask(0b1000_0101, 8) else {
            panic!("torn_mask made another fate");
        };
        assert_eq!(
            sectors,
            [true, false, true, false, false, false, false, true]
        );
        assert_eq!(half, None);
    }

    #[test]
    #[should_panic(expected = "store seed 77")]
    fn a_wrong_fate_count_names_the_seed() {
        let (cache, _, _) = one_pending_block();
        let _ = crash_image(&cache, CrashPlan::Explicit(Vec::new()), 77);
    }

    #[test]
    #[should_panic(expected = "also written whole")]
    fn a_half_sector_that_is_also_whole_is_refused() {
        let (cache, _, _) = one_pending_block();
        let fate = PendingFate::Torn {
            sectors: vec![true; 8],
            half: Some(HalfSector {
                sector: 0,
                new_bytes: 1,
            }),
        };
        let _ = crash_image(&cache, CrashPlan::Explicit(vec![fate]), 0);
    }

    #[test]
    fn prefix_plans_keep_the_first_writes() {
        let mut cache = Cache::new(Image::zeroed(4096));
        for (index, byte) in [1_u8, 2, 3].into_iter().enumerate() {
            cache.push(cached(index, 512 * index as u64, vec![byte; 512]));
        }
        let image = crash_image(&cache, CrashPlan::KeepPrefix(2), 0).to_vec();
        assert_eq!(image[..1536], [[1; 512], [2; 512], [0; 512]].concat()[..]);
    }

    #[test]
    fn seeded_crashes_of_a_mebibyte_hold_only_old_or_new_sectors() {
        let base: Vec<u8> = (0..1 << 20).map(|i: u32| (i % 253) as u8).collect();
        let mut cache = Cache::new(Image::from_bytes(&base));
        let mut written = std::collections::BTreeMap::new();
        for index in 0..50_u32 {
            let offset = u64::from(index * 7 % 256) * 4096;
            let byte = u8::try_from(index).unwrap();
            written.entry(offset).or_insert_with(Vec::new).push(byte);
            cache.push(cached(index as usize, offset, vec![byte; 4096]));
        }
        for crash_seed in 0..200_u64 {
            let image = crash_image(&cache, CrashPlan::Seeded(crash_seed), 0).to_vec();
            assert_eq!(image.len(), 1 << 20);
            for (sector, bytes) in image.chunks(512).enumerate() {
                let start = sector * 512;
                let offset = (start - start % 4096) as u64;
                let old = &base[start..start + 512];
                let new_values = written.get(&offset).map_or(&[][..], Vec::as_slice);
                // Whole new sector, or a half-written one: a prefix of new bytes, then old.
                let is_new = new_values.iter().any(|&v| {
                    let prefix = bytes.iter().take_while(|&&b| b == v).count();
                    bytes[prefix..] == old[prefix..]
                });
                assert!(
                    bytes == old || is_new,
                    "seed {crash_seed}: sector {sector} is foreign"
                );
            }
        }
    }
}
