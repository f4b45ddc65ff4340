//! Counters the index keeps, and the snapshot it reports.

use std::sync::atomic::{AtomicU64, Ordering};

/// A snapshot of the index's state and counters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct IndexStats {
    /// Entries stored: live ones, plus expired ones not yet swept or reused (sparse: at most
    /// about 1/16 of the window; dense: about one per list, 1 % of the window).
    /// [`crate::DedupeIndex::live_entries`] counts exactly.
    pub entries: u64,
    /// Names the window covers (capacity).
    pub window_entries: u64,
    /// Memory held now, every structure counted.
    pub memory_bytes: u64,
    /// Memory the config allows.
    pub memory_bytes_max: u64,
    /// Lookups answered.
    pub lookups: u64,
    /// Lookups that returned advice (true hits and false positives).
    pub hits: u64,
    /// Inserts by the engine.
    pub inserts: u64,
    /// Entries moved into the open chapter because a hit found them old (UDS does the same).
    pub refreshes: u64,
    /// Entries cleared by `forget`.
    pub stale_forgotten: u64,
    /// Chapters that left the window (ring wrap, or dense PBN maps over their budget).
    pub chapters_dropped: u64,
    /// Live entries dropped before their chapter left the window: both of a name's buckets were
    /// full (sparse), or a list found no room in its arena or reached its longest (dense).
    pub evicted_early: u64,
    /// Records ever appended to chapters (inserts and refreshes).
    pub records: u64,
    /// Records appended before the oldest chapter still in the window opened: a record
    /// appended as number `records` at the time is live while this is at or below that.
    pub oldest_record: u64,
    /// Sparse: chapters read from disk into the chapter cache.
    pub chapter_cache_loads: u64,
    /// Sparse: chapters that failed to write or read back (their names are lost, not data).
    pub chapter_io_errors: u64,
    /// Fingerprint values per entry, scaled so that one lookup of an absent name gives a false
    /// positive with probability at most `8 / fingerprints`: sparse, a lookup compares 8
    /// slots and this is the values a slot's fingerprint takes; dense, a lookup compares the
    /// `n` live entries of a list (about 100 at a full window) and this is `8 * 2^f / n` for
    /// `f` fingerprint bits.
    pub fingerprints: u64,
}

#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(crate) lookups: AtomicU64,
    pub(crate) hits: AtomicU64,
    pub(crate) inserts: AtomicU64,
    pub(crate) refreshes: AtomicU64,
    pub(crate) stale_forgotten: AtomicU64,
    pub(crate) chapters_dropped: AtomicU64,
    pub(crate) evicted_early: AtomicU64,
    pub(crate) chapter_io_errors: AtomicU64,
}

pub(crate) fn bump(counter: &AtomicU64, by: u64) {
    counter.fetch_add(by, Ordering::Relaxed);
}

pub(crate) fn get(counter: &AtomicU64) -> u64 {
    counter.load(Ordering::Relaxed)
}
