//! uvdo's dedupe index: advice from a block's 128-bit name to a PBN that may hold the same
//! data, in memory bounded by the configured size: in dense mode at most 4 bytes per block of
//! window, everything counted, from 1 MiB up (the window is `memory_bytes / 4` blocks, about
//! 10 % false positives at 256 MiB); in sparse mode about 8 times that window for the same
//! memory.
//!
//! It owns the table (dense: delta lists, each the Rice-coded records of the names that hash
//! to it, in shards of byte arenas; sparse: two-choice buckets of packed slots), the chapter
//! ring (the sliding dedupe window, as in UDS), the per-chapter PBN maps (dense), the chapters
//! on disk and their cache (sparse), and the save and load of all that to the region the
//! engine gives it. It never reads or compares data blocks and never decides sharing: its
//! answers are hints that may be stale or false positives, and the engine verifies every one
//! byte for byte. Losing the index, or any part of it, loses dedupe opportunities, never data.
//! It never grows beyond `memory_bytes`: the oldest chapters are dropped, or a list's oldest
//! entries, instead.
//!
//! Invariants: only chapters `oldest..=open` are live, and `open - oldest < chapters`; an
//! entry is valid only while its chapter is live, and the sweeper visits every sparse slot
//! and dense list before its chapter tag or list anchor could be misread; a lookup returns the
//! newest live entry matching the name's fingerprint among the 8 slots of its two buckets
//! (sparse) or the entries of its list (dense); the memory charged (table, chapter maps or
//! cache, scratch, fixed parts) stays at or below `memory_bytes`.

mod arena;
mod bits;
mod cache;
mod chapter_pbns;
mod chapters;
mod config;
mod dense_ring;
mod dense_shard;
mod error;
mod index;
mod list;
mod persist;
mod region;
mod sizing;
mod slot;
mod stats;
mod table;

pub use config::{
    BUCKET_SLOTS, DEFAULT_MEMORY_BYTES, IndexConfig, MEMORY_BYTES_MAX, MEMORY_BYTES_MIN,
    SPARSE_MEMORY_BYTES_MIN, SPARSE_SAMPLE_RATE, SPARSE_WINDOW_FACTOR,
};
pub use error::IndexError;
pub use index::DedupeIndex;
pub use region::IndexRegion;
pub use stats::IndexStats;
