//! uvdo's dedupe index: advice from a block's 128-bit name to a PBN that may hold the same
//! data, in memory bounded by the configured size (about 4 bytes per indexed block in dense
//! mode, and 10x the window for the same memory in sparse mode).
//!
//! It owns the slot table, the chapter ring (the sliding dedupe window, as in UDS), the
//! per-chapter PBN runs (dense), the chapters on disk and their cache (sparse), and the save
//! and load of all that to the region the engine gives it. It never reads or compares data
//! blocks and never decides sharing: its answers are hints that may be stale or false
//! positives, and the engine verifies every one byte for byte. Losing the index, or any part
//! of it, loses dedupe opportunities, never data. It never grows beyond `memory_bytes`: the
//! oldest chapters are dropped instead.
//!
//! Invariants: only chapters `oldest..=open` are live, and `open - oldest < chapters`; a slot
//! is valid only while its chapter is live, and the sweeper clears expired slots before their
//! chapter tag can be reused; a lookup returns the newest live entry among the 8 slots of the
//! name's two buckets; the memory charged (table, chapter runs or cache, fixed parts) stays at
//! or below `memory_bytes`.

mod cache;
mod chapters;
mod config;
mod error;
mod index;
mod persist;
mod region;
mod runs;
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
