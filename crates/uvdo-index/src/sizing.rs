//! How a dense index divides its memory: chapters, the PBN map budget, and the delta lists.
//!
//! The window is `memory_bytes / 4` names (rounded up to whole chapters) from
//! [`DENSE_WINDOW_GUARANTEE_BYTES`] up. Below that, where the fixed parts weigh more, the
//! window is the largest one, down to an eighth of that, whose expected false-positive rate
//! is at most `memory_bytes / 2^30` (2^-16 at 16 KiB): tiny indexes keep fingerprints about as
//! wide as they always had.
//!
//! For a window, the sizing picks the number of lists and the fingerprint width `f` that
//! minimise the false candidates a lookup of an absent name meets, `n / 2^f` for lists of
//! mean length `n` (at most [`LIST_ENTRIES_MEAN_MAX`], which bounds a lookup's work), such
//! that the lists' expected size, plus [`RESERVE_PER_MILLE`] of free space, fits the memory
//! left after the chapter ring, the PBN map budget, the fixed parts, the list starts and the
//! shards' scratch buffers. A list's expected size counts its header, `n` live entries and
//! [`LINGER_ENTRIES`] expired ones (dropped at the list's next insert or sweep), each entry
//! being `f` fingerprint bits and a Rice code of mean `k + 1 + E[q]` for gaps geometric
//! with mean `lists`. Whatever memory is left goes to the arenas, so the free space is at
//! least the reserve. A config whose lookups would meet more than one false candidate on
//! average (from about 3 GiB) is refused.
//!
//! Chapters have about `sqrt(1.5 * window)` records, which balances the ring's bytes per
//! chapter against the PBN map budget's floor. That budget is every chapter's header and
//! first run, the open chapter's block tables, and `memory_bytes / 256` more (at least two
//! chapters of one 8-byte unit per record): PBNs that come in order, interleaved or not, cost
//! about nothing more, and beyond the budget the oldest chapters leave the window early.
//!
//! The arithmetic is integers and IEEE-exact float operations (no `exp` or `log`), so the
//! same config always gives the same geometry, which a save is checked against.

use crate::arena::ListArena;
use crate::bits::GUARD_BYTES;
use crate::chapter_pbns::{UNIT_BYTES, open_table_bytes};
use crate::config::{DENSE_RING_BYTES_PER_CHAPTER, to_u64, to_usize};
use crate::list::{Item, ListCodec};

/// From this memory up the dense window is at least `memory_bytes / 4` names.
pub(crate) const DENSE_WINDOW_GUARANTEE_BYTES: u64 = 1 << 20;
/// Free space the arenas keep beyond the lists' expected size, per mille.
const RESERVE_PER_MILLE: u64 = 5;
/// Expired entries a list holds on average: about one expires between two inserts.
const LINGER_ENTRIES: f64 = 1.0;
/// Longest mean list a lookup scans.
pub(crate) const LIST_ENTRIES_MEAN_MAX: u64 = 128;
const LIST_ENTRIES_MEAN_MIN: u64 = 8;
const FP_BITS_MAX: u32 = 32;
/// A dense config is refused when a lookup of an absent name would meet more false candidates
/// than this on average.
const FALSE_CANDIDATES_MAX: f64 = 1.0;
const SHARDS_MAX: u64 = 16;
const SHARD_BYTES_MIN: u64 = 1 << 20;
const CHAPTER_RECORDS_MIN: u64 = 16;
/// A PBN run keeps its first block in 16 bits: chapters this long have 1024 blocks.
const CHAPTER_RECORDS_MAX: u64 = 1 << 16;

/// The dense table's shape.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct ListGeometry {
    pub(crate) lists_per_shard: usize,
    pub(crate) arena_bytes: usize,
    pub(crate) codec: ListCodec,
    /// Every list is swept at least once every `lag` chapter closes.
    pub(crate) lag: u64,
    /// Entries of a list, on average at a full window (rounded up).
    pub(crate) mean_entries: usize,
    /// Fingerprint values per entry, times 8, over the mean list length: a lookup of an
    /// absent name gives advice with probability at most `8 / fingerprints`.
    pub(crate) fingerprints: u64,
}

/// Everything the dense geometry derives from the memory size.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct DenseSizing {
    pub(crate) shards: usize,
    pub(crate) chapter_records: u64,
    pub(crate) chapters: u64,
    pub(crate) run_budget_bytes: u64,
    pub(crate) lists: ListGeometry,
    /// Mean false candidates per lookup of an absent name, `n / 2^f`.
    pub(crate) false_candidates: f64,
}

/// The dense sizing for `memory_bytes`, or None when no layout fits or it would give more
/// than one false candidate per lookup.
pub(crate) fn dense_sizing(memory_bytes: u64) -> Option<DenseSizing> {
    let full = memory_bytes.div_ceil(4);
    let sizing = if memory_bytes >= DENSE_WINDOW_GUARANTEE_BYTES {
        sizing_for(memory_bytes, full)?
    } else {
        small_sizing(memory_bytes, full)?
    };
    (sizing.false_candidates <= FALSE_CANDIDATES_MAX).then_some(sizing)
}

/// Below the guarantee: the largest window, down to `full / 8`, that meets the false-positive
/// target `memory_bytes / 2^30`.
fn small_sizing(memory_bytes: u64, full: u64) -> Option<DenseSizing> {
    let target = memory_bytes as f64 / f64::from(1 << 30);
    let meets = |window| sizing_for(memory_bytes, window).filter(|s| s.false_candidates <= target);
    if let Some(sizing) = meets(full) {
        return Some(sizing);
    }
    let (mut lo, mut hi) = (full / 8, full);
    let mut best = meets(lo).or_else(|| sizing_for(memory_bytes, lo))?;
    while hi - lo > CHAPTER_RECORDS_MIN {
        let mid = lo + (hi - lo) / 2;
        match meets(mid) {
            Some(sizing) => {
                best = sizing;
                lo = mid;
            }
            None => hi = mid,
        }
    }
    Some(best)
}

fn shards_for(memory_bytes: u64) -> u64 {
    let mut shards = SHARDS_MAX;
    while shards > 1 && memory_bytes / shards < SHARD_BYTES_MIN {
        shards /= 2;
    }
    shards
}

/// Chapters of about `sqrt(1.5 * window)` records balance the ring's bytes per chapter against
/// the run budget's floor of two chapters of one run per record.
fn chapter_records_for(window: u64) -> u64 {
    let target = (window * 3 / 2).isqrt().max(1);
    let below = 1_u64 << (63 - target.leading_zeros());
    let nearest = if target - below > below * 2 - target {
        below * 2
    } else {
        below
    };
    nearest.clamp(CHAPTER_RECORDS_MIN, CHAPTER_RECORDS_MAX)
}

/// The best list layout for a window of (at least) `window` names, if any fits.
pub(crate) fn sizing_for(memory_bytes: u64, window: u64) -> Option<DenseSizing> {
    let shards = shards_for(memory_bytes);
    let chapter_records = chapter_records_for(window);
    let chapters = window.div_ceil(chapter_records);
    let window = chapters * chapter_records;
    // Every chapter's header and run, the open chapter's block tables, and on top of that
    // memory_bytes / 256, at least two chapters of a unit (8 bytes) per record: the open one
    // may need that much alone.
    let baseline = chapters * 2 * UNIT_BYTES + open_table_bytes(chapter_records);
    let run_budget_bytes = baseline + (2 * chapter_records * UNIT_BYTES).max(memory_bytes / 256);
    let ring = chapters * DENSE_RING_BYTES_PER_CHAPTER;
    let fixed = crate::config::fixed_bytes(to_usize(shards));
    let shared = ring + run_budget_bytes + fixed;
    let per_shard = memory_bytes.checked_sub(shared)? / shards;
    let lag = (chapters / 4).max(1);
    // The oldest record a list may hold, counted back from the newest one appended.
    let record_span = (chapters + 2 * lag + 2) * chapter_records;
    let shape = Shape {
        window,
        shards,
        per_shard,
        record_span,
    };
    let mut best: Option<(f64, ListGeometry)> = None;
    for fp_bits in 1..=FP_BITS_MAX {
        let Some(lists) = shape.most_lists(fp_bits) else {
            continue;
        };
        if best.is_none_or(|(candidates, _)| lists.0 < candidates) {
            best = Some(lists);
        }
    }
    let (false_candidates, lists) = best?;
    Some(DenseSizing {
        shards: to_usize(shards),
        chapter_records,
        chapters,
        run_budget_bytes,
        lists: ListGeometry { lag, ..lists },
        false_candidates,
    })
}

/// The quantities a list layout is fitted to.
struct Shape {
    window: u64,
    shards: u64,
    per_shard: u64,
    record_span: u64,
}

impl Shape {
    /// With `fp_bits` fingerprints: the most lists per shard that fit (the shortest lists,
    /// so the fewest false candidates), and the false candidates they give.
    fn most_lists(&self, fp_bits: u32) -> Option<(f64, ListGeometry)> {
        let fewest = self
            .window
            .div_ceil(self.shards * LIST_ENTRIES_MEAN_MAX)
            .max(1);
        let most = (self.window / (self.shards * LIST_ENTRIES_MEAN_MIN)).max(fewest);
        let mut fit = self.layout(fp_bits, fewest)?;
        let (mut lo, mut hi) = (fewest, most);
        while lo < hi {
            let mid = lo + (hi - lo).div_ceil(2);
            match self.layout(fp_bits, mid) {
                Some(layout) => {
                    fit = layout;
                    lo = mid;
                }
                None => hi = mid - 1,
            }
        }
        Some(fit)
    }

    /// The layout with `fp_bits` and `lists_per_shard`, if it fits.
    fn layout(&self, fp_bits: u32, lists_per_shard: u64) -> Option<(f64, ListGeometry)> {
        let lists = lists_per_shard * self.shards;
        let mean = self.window as f64 / lists as f64;
        let (low_bits, code_bits) = rice(lists);
        let span_bits = 64 - (self.record_span + (1 << low_bits)).leading_zeros();
        let anchor_bits = span_bits.saturating_sub(low_bits);
        let mean_max = self.window.div_ceil(lists);
        let entries_max = mean_max + 8 * mean_max.isqrt() + 16;
        let count_bits = 64 - entries_max.leading_zeros();
        let bits_max = u64::from(anchor_bits + count_bits)
            + entries_max * u64::from(fp_bits + low_bits + 1)
            + (self.record_span >> low_bits)
            + 1;
        let codec = ListCodec {
            fp_bits,
            low_bits,
            anchor_bits,
            count_bits,
            entries_max: to_usize(entries_max),
            bits_max: to_usize(bits_max),
        };
        let lps = to_usize(lists_per_shard);
        let overhead = to_u64(ListArena::memory_bytes_for(0, lps) + scratch_bytes(&codec));
        let arena_bytes = self.per_shard.checked_sub(overhead)?;
        let list_bits = f64::from(anchor_bits + count_bits + 4)
            + (mean + LINGER_ENTRIES) * (f64::from(fp_bits) + code_bits);
        let needed =
            list_bits * lists_per_shard as f64 / 8.0 * 1000.0 / (1000 - RESERVE_PER_MILLE) as f64;
        let fits = needed <= arena_bytes as f64 && u32::try_from(arena_bytes).is_ok();
        let fingerprints = ((8_u128 << fp_bits) * u128::from(lists)) / u128::from(self.window);
        let false_candidates = mean / (1_u64 << fp_bits) as f64;
        fits.then(|| {
            let geometry = ListGeometry {
                lists_per_shard: lps,
                arena_bytes: to_usize(arena_bytes),
                codec,
                lag: 0,
                mean_entries: to_usize(mean_max),
                fingerprints: u64::try_from(fingerprints).unwrap_or(u64::MAX),
            };
            (false_candidates, geometry)
        })
    }
}

/// The Rice parameter for gaps geometric with mean `lists`, and the code's mean length.
fn rice(lists: u64) -> (u32, f64) {
    let stay = 1.0 - 1.0 / lists as f64;
    let mut best = (0, f64::INFINITY);
    // x = P(gap >= 2^k) = stay^(2^k); E[q] = x / (1 - x).
    let mut x = stay;
    for low_bits in 0..48 {
        let bits = f64::from(low_bits) + 1.0 + if x < 1.0 { x / (1.0 - x) } else { 1e300 };
        if bits < best.1 {
            best = (low_bits, bits);
        }
        x *= x;
    }
    best
}

/// Scratch memory one dense shard keeps for editing a list.
pub(crate) fn scratch_bytes(codec: &ListCodec) -> usize {
    let image = codec.bits_max.div_ceil(8) + GUARD_BYTES;
    let items = (codec.entries_max + 1) * std::mem::size_of::<Item>();
    let codes = (codec.entries_max + 2) * std::mem::size_of::<usize>();
    image + items + codes
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rice_codes_cost_about_the_entropy_of_their_gaps() {
        for lists in [100_u64, 1000, 654_321, 1 << 22] {
            let (low_bits, bits) = rice(lists);
            // A geometric gap of mean m carries about log2(m) + 1.443 bits.
            let entropy = (lists as f64).log2() + std::f64::consts::LOG2_E;
            assert!(
                bits >= entropy - 0.01 && bits <= entropy + 0.15,
                "{lists}: {bits}"
            );
            assert!(u64::from(low_bits).abs_diff(u64::from(64 - lists.leading_zeros())) <= 2);
        }
    }

    #[test]
    fn the_sizing_gives_at_most_one_false_positive_in_ten_up_to_256_mib() {
        // A lookup of an absent name gives advice with probability 1 - exp(-n / 2^f), below
        // the false candidates n / 2^f.
        for shift in 20..=28 {
            for memory_bytes in [1_u64 << shift, (1 << shift) / 4 * 5] {
                if memory_bytes > 256 << 20 {
                    continue;
                }
                let sizing = dense_sizing(memory_bytes).unwrap();
                assert!(sizing.false_candidates <= 0.1, "{memory_bytes}: {sizing:?}");
                let window = sizing.chapters * sizing.chapter_records;
                assert!(window * 4 >= memory_bytes, "{memory_bytes}: {sizing:?}");
            }
        }
        assert!(dense_sizing(2 << 30).is_some());
        assert!(dense_sizing(4 << 30).is_none());
    }

    #[test]
    fn chapters_are_about_the_square_root_of_the_window() {
        assert_eq!(chapter_records_for(4096), 64);
        assert_eq!(chapter_records_for(1 << 26), 8192);
        assert_eq!(chapter_records_for(u64::MAX >> 20), CHAPTER_RECORDS_MAX);
        assert_eq!(chapter_records_for(1), CHAPTER_RECORDS_MIN);
    }
}
