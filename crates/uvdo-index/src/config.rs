//! The index configuration and the geometry derived from it.
//!
//! Everything the index allocates is sized here, once, from `memory_bytes`: the table (delta
//! lists in dense mode, see the sizing module; buckets of packed slots in sparse mode), the
//! budget for per-chapter PBN maps (dense) or the chapter cache (sparse), the chapter size and
//! count, and the disk region. The derivation is deterministic, so a save can be checked
//! against the geometry of the config given to `load`.

use uvdo_format::index_page::INDEX_PAGE_CAPACITY;

use crate::error::IndexError;
use crate::sizing::{ListGeometry, dense_sizing};
use crate::slot::SlotCodec;

/// Default index memory, as in VDO (`--uds-memory-size 0.25`).
pub const DEFAULT_MEMORY_BYTES: u64 = 256 << 20;
/// Smallest accepted index memory.
pub const MEMORY_BYTES_MIN: u64 = 16 << 10;
/// Largest accepted index memory (sparse bucket addressing takes 30 name bits per shard). A
/// dense index is refused well below this, from about 3 GiB, where a lookup of an absent name
/// would meet more than one false candidate on average.
pub const MEMORY_BYTES_MAX: u64 = 64 << 30;
/// Slots per bucket of the sparse table; a name may live in either of two buckets, so a sparse
/// lookup reads 8 slots. (The dense table keeps delta lists instead.)
pub const BUCKET_SLOTS: usize = 4;
/// One name in this many is a hook in sparse mode (UDS samples 1 in 32).
pub const SPARSE_SAMPLE_RATE: u64 = 32;
/// Live entries a sparse table is sized for, per mille of its slots.
const SPARSE_LOAD_PER_MILLE: u64 = 850;
/// Load of the 32-bit slot table dense indexes had before delta lists; sparse geometry is
/// still derived from the window that table gave (see [`slot_era_dense_window`]).
const SLOT_ERA_LOAD_PER_MILLE: u64 = 930;
/// Sparse mode covers this many times the window a dense index had with the same memory before
/// dense indexes kept delta lists (about 8 times today's dense window of `memory_bytes / 4`
/// names): sparse geometry, and so the on-disk region of sparse volumes, did not change.
pub const SPARSE_WINDOW_FACTOR: u64 = 10;
/// Records of a sparse chapter on disk take this many bytes each (name bits, PBN).
pub(crate) const SPARSE_RECORD_BYTES: usize = 16;
/// Records one index page of chapter storage holds.
pub(crate) const RECORDS_PER_PAGE: usize = INDEX_PAGE_CAPACITY / SPARSE_RECORD_BYTES;
/// Bytes of a save's fixed header.
pub(crate) const SAVE_HEADER_BYTES: u64 = 128;
/// Memory charged per cached sparse record: the record, plus its entry in the cache's map.
pub(crate) const CACHE_BYTES_PER_RECORD: u64 = 96;

const SHARDS_MAX: u64 = 16;
/// Below this many fingerprint values a sparse lookup is mostly false positives.
const FINGERPRINTS_MIN: u64 = 8;
const CHAPTER_RECORDS_MAX: u64 = 1024;
const CHAPTER_RECORDS_MIN: u64 = 16;
const CHAPTERS_TARGET_MIN: u64 = 64;
const SPARSE_CHAPTER_RECORDS_MIN: u64 = 256;
/// Smallest memory for a sparse index: its cache must hold a chapter beside the open one.
pub const SPARSE_MEMORY_BYTES_MIN: u64 = 1 << 20;
const CACHE_CHAPTERS_MAX: u64 = 64;
/// Bytes charged per chapter of the dense ring: the pointer to its PBN map, and the count of
/// records appended before it opened.
pub(crate) const DENSE_RING_BYTES_PER_CHAPTER: u64 = 24;

/// What the engine asks of the index.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IndexConfig {
    /// Memory the index may use, all structures counted.
    pub memory_bytes: u64,
    /// Sparse mode: 10x the window for the same memory, closed chapters on disk.
    pub sparse: bool,
}

impl Default for IndexConfig {
    fn default() -> Self {
        Self {
            memory_bytes: DEFAULT_MEMORY_BYTES,
            sparse: false,
        }
    }
}

/// The sizes derived from a config (see the module doc).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Geometry {
    pub(crate) sparse: bool,
    pub(crate) shards: usize,
    pub(crate) chapter_records: u64,
    /// Chapters in the window (the ring).
    pub(crate) chapters: u64,
    /// The newest chapters whose every name is in the table (all of them in dense mode).
    pub(crate) dense_chapters: u64,
    pub(crate) table: TableShape,
    /// Dense: bytes the PBN maps of all chapters may take before the oldest is dropped.
    pub(crate) run_budget_bytes: u64,
    /// Sparse: chapters the cache holds.
    pub(crate) cache_chapters: u64,
    pub(crate) save_pages: u64,
    pub(crate) pages_per_chapter: u64,
}

/// The shape of the table.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum TableShape {
    /// Dense: delta lists.
    Lists(ListGeometry),
    /// Sparse: two-choice buckets of packed 32-bit slots.
    Slots(SlotGeometry),
}

/// The sparse table's shape.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct SlotGeometry {
    pub(crate) buckets_per_shard: usize,
    pub(crate) codec: SlotCodec,
}

impl IndexConfig {
    /// Checks the config.
    ///
    /// # Errors
    ///
    /// `InvalidConfig` when the memory is outside
    /// [`MEMORY_BYTES_MIN`]..=[`MEMORY_BYTES_MAX`], or too large for a dense index to keep
    /// lookups of absent names under one false candidate on average (about 3 GiB).
    pub fn validate(&self) -> Result<(), IndexError> {
        self.geometry().map(|_| ())
    }

    /// Blocks (names) the dedupe window covers with this memory.
    ///
    /// # Panics
    ///
    /// If the config is invalid; call [`IndexConfig::validate`] first.
    #[must_use]
    pub fn window_entries(&self) -> u64 {
        let geometry = self.geometry().expect("validated index config");
        geometry.window_entries()
    }

    /// 4 KiB blocks of on-disk region the index needs: its save, plus chapters when sparse.
    ///
    /// # Panics
    ///
    /// If the config is invalid; call [`IndexConfig::validate`] first.
    #[must_use]
    pub fn disk_blocks(&self) -> u64 {
        let geometry = self.geometry().expect("validated index config");
        geometry.disk_blocks()
    }

    pub(crate) fn geometry(&self) -> Result<Geometry, IndexError> {
        if !(MEMORY_BYTES_MIN..=MEMORY_BYTES_MAX).contains(&self.memory_bytes) {
            return Err(IndexError::InvalidConfig {
                field: "memory_bytes",
                expected: "16 KiB..=64 GiB",
                found: self.memory_bytes,
            });
        }
        if self.sparse && self.memory_bytes < SPARSE_MEMORY_BYTES_MIN {
            return Err(IndexError::InvalidConfig {
                field: "memory_bytes",
                expected: "at least 1 MiB in sparse mode",
                found: self.memory_bytes,
            });
        }
        if self.sparse {
            let geometry = sparse_geometry(self.memory_bytes);
            if geometry.slot_geometry().codec.fingerprints < FINGERPRINTS_MIN {
                return Err(IndexError::InvalidConfig {
                    field: "memory_bytes",
                    expected: "a sparse window small enough for 3 fingerprint bits",
                    found: self.memory_bytes,
                });
            }
            return Ok(geometry);
        }
        dense_geometry(self.memory_bytes).ok_or(IndexError::InvalidConfig {
            field: "memory_bytes",
            expected: "a dense index small enough for one false candidate per lookup (about 3 GiB)",
            found: self.memory_bytes,
        })
    }
}

/// Table slots for `table_bytes`, rounded down to whole buckets in every shard.
fn table_layout(table_bytes: u64) -> (usize, usize) {
    let slots = table_bytes / 4;
    let mut shards = SHARDS_MAX;
    while shards > 1 && slots / (shards * BUCKET_SLOTS as u64) < 64 {
        shards /= 2;
    }
    let buckets = slots / (shards * BUCKET_SLOTS as u64);
    (to_usize(shards), to_usize(buckets))
}

/// The window, and chapter size, that a dense index of `memory_bytes` had with two-choice
/// buckets of 32-bit slots at 93 % load and a run budget of the rest. Sparse geometry is
/// derived from it unchanged, so that existing sparse volumes, whose index region was sized
/// by it, still fit.
fn slot_era_dense_window(memory_bytes: u64) -> (u64, u64) {
    let mut table_bytes = (memory_bytes - fixed_bytes(to_usize(SHARDS_MAX))) / 8 * 7;
    loop {
        let (shards, buckets_per_shard) = table_layout(table_bytes);
        let slots = (shards * buckets_per_shard * BUCKET_SLOTS) as u64;
        let target = slots * SLOT_ERA_LOAD_PER_MILLE / 1000;
        let chapter_records = sparse_chapter_records_for(target);
        let chapters = target / chapter_records;
        let ring_bytes = chapters * DENSE_RING_BYTES_PER_CHAPTER;
        let used = slots * 4 + ring_bytes + fixed_bytes(shards);
        if memory_bytes.saturating_sub(used) >= 2 * chapter_records * 8 {
            return (chapters * chapter_records, chapter_records);
        }
        table_bytes -= table_bytes / 16;
    }
}

/// Sparse chapters: a 64th of the window, within 16..=1024 records.
fn sparse_chapter_records_for(window: u64) -> u64 {
    let target = (window / CHAPTERS_TARGET_MIN).max(1);
    let power = 1_u64 << (63 - target.leading_zeros());
    power.clamp(CHAPTER_RECORDS_MIN, CHAPTER_RECORDS_MAX)
}

fn dense_geometry(memory_bytes: u64) -> Option<Geometry> {
    let sizing = dense_sizing(memory_bytes)?;
    let lists = sizing.lists;
    let shards = to_u64(sizing.shards);
    let arenas = shards * (to_u64(lists.lists_per_shard + 1) * 4 + to_u64(lists.arena_bytes));
    // Per chapter its start and word count, the maps (within their budget), and the open
    // chapter's block tables with their count.
    let k = sizing.chapter_records;
    let tables = 16 + 24 * (k / crate::chapter_pbns::block_positions(k));
    let save_bytes =
        SAVE_HEADER_BYTES + arenas + sizing.chapters * 16 + sizing.run_budget_bytes + tables;
    Some(Geometry {
        sparse: false,
        shards: sizing.shards,
        chapter_records: sizing.chapter_records,
        chapters: sizing.chapters,
        dense_chapters: sizing.chapters,
        table: TableShape::Lists(lists),
        run_budget_bytes: sizing.run_budget_bytes,
        cache_chapters: 0,
        save_pages: save_bytes.div_ceil(INDEX_PAGE_CAPACITY as u64),
        pages_per_chapter: 0,
    })
}

fn sparse_geometry(memory_bytes: u64) -> Geometry {
    let (dense_window, dense_chapter_records) = slot_era_dense_window(memory_bytes);
    let (shards, buckets_per_shard) = table_layout(memory_bytes / 16 * 15);
    let slots = (shards * buckets_per_shard * BUCKET_SLOTS) as u64;
    // Hooks are the oldest entries; a lower load keeps bucket overflow from reaching them.
    let capacity = slots * SPARSE_LOAD_PER_MILLE / 1000;
    let cache_bytes = memory_bytes / 16 - fixed_bytes(shards).min(memory_bytes / 32);
    // Small chapters for small memories, so the cache still holds a few (plus the open one).
    // At least 256 records, so a chapter almost surely holds a hook (e^-8 that it does not).
    let cache_fit = (cache_bytes / (5 * CACHE_BYTES_PER_RECORD)).max(SPARSE_CHAPTER_RECORDS_MIN);
    let chapter_records = dense_chapter_records.min(1 << (63 - cache_fit.leading_zeros()));
    let chapters = dense_window * SPARSE_WINDOW_FACTOR / chapter_records;
    let hooks = chapters * chapter_records / SPARSE_SAMPLE_RATE;
    // Dense names D plus hooks of the rest: D + (W - D) / 32 <= capacity.
    let dense_names =
        (capacity.saturating_sub(hooks)) * SPARSE_SAMPLE_RATE / (SPARSE_SAMPLE_RATE - 1);
    let dense_chapters = (dense_names / chapter_records).clamp(1, chapters);
    let per_chapter = chapter_records * CACHE_BYTES_PER_RECORD;
    // The open chapter's records and map come out of the same budget as the cache.
    let cache_chapters = (cache_bytes / per_chapter).saturating_sub(1);
    let codec = SlotCodec::new(chapters, 1, true);
    let save_bytes = SAVE_HEADER_BYTES + slots * 4 + chapter_records * 16;
    let pages_per_chapter = to_u64(to_usize(chapter_records).div_ceil(RECORDS_PER_PAGE));
    Geometry {
        sparse: true,
        shards,
        chapter_records,
        chapters,
        dense_chapters,
        table: TableShape::Slots(SlotGeometry {
            buckets_per_shard,
            codec,
        }),
        run_budget_bytes: 0,
        cache_chapters: cache_chapters.clamp(1, CACHE_CHAPTERS_MAX),
        save_pages: save_bytes.div_ceil(INDEX_PAGE_CAPACITY as u64),
        pages_per_chapter,
    }
}

/// Memory charged for the index's fixed structures: shard headers, locks, counters.
pub(crate) fn fixed_bytes(shards: usize) -> u64 {
    1024 + to_u64(shards) * 128
}

impl Geometry {
    pub(crate) fn window_entries(&self) -> u64 {
        self.chapters * self.chapter_records
    }

    /// Sparse: the slot table's shape.
    pub(crate) fn slot_geometry(&self) -> &SlotGeometry {
        match &self.table {
            TableShape::Slots(slots) => slots,
            TableShape::Lists(_) => panic!("a dense geometry has no slots"),
        }
    }

    /// Sparse: table slots.
    pub(crate) fn slots(&self) -> usize {
        self.shards * self.slot_geometry().buckets_per_shard * BUCKET_SLOTS
    }

    /// Fingerprint values per entry, scaled so that `8 / fingerprints` bounds the chance a
    /// lookup of an absent name gives advice (see [`crate::IndexStats::fingerprints`]).
    pub(crate) fn fingerprints(&self) -> u64 {
        match &self.table {
            TableShape::Lists(lists) => lists.fingerprints,
            TableShape::Slots(slots) => slots.codec.fingerprints,
        }
    }

    pub(crate) fn disk_blocks(&self) -> u64 {
        self.save_pages + self.chapters * self.pages_per_chapter
    }
}

pub(crate) fn to_usize(value: u64) -> usize {
    usize::try_from(value).expect("index sizes fit in usize")
}

pub(crate) fn to_u64(value: usize) -> u64 {
    u64::try_from(value).expect("usize fits in u64")
}
