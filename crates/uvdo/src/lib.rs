//! uvdo: a deduplicating, thin-provisioned block volume as an embedded library.
//!
//! This crate owns the engine: the block map (LBN to physical mapping, a radix tree of pages
//! behind a bounded cache), the slab depot (reference counts, slab journals, slab summary,
//! allocation), the recovery journal (the write-ahead log of remappings, with group commit),
//! deduplication (hashing, verification before sharing, the index from `uvdo-index`), and the
//! `Volume` API over them. It never encodes bytes itself (`uvdo-format` does) and never touches
//! a device except through `uvdo-io`'s `Storage`.
//!
//! Invariants (SPEC section 3; checked by `audit`):
//! - every reference count equals the number of block-map references to its block;
//! - no block is both free and mapped; every mapping is in range;
//! - data is durable before the journal entry that points at it, and a journal entry is
//!   durable before any metadata that depends on it is written;
//! - a block whose last reference is removed becomes free only once that removal is durable.
//!
//! `docs/ARCHITECTURE.md` describes the life of a write and a read step by step.
//!
//! ```
//! use std::sync::Arc;
//! use uvdo::{FormatConfig, OpenOptions, Volume};
//! use uvdo_format::BlockCount;
//! use uvdo_io::memory::MemoryStore;
//!
//! let store = Arc::new(MemoryStore::new(64 << 20));
//! let mut config = FormatConfig::new(BlockCount(1 << 20)); // 4 GiB logical
//! config.slab_blocks = BlockCount(1 << 12); // 16 MiB slabs
//! config.recovery_journal_blocks = BlockCount(1024); // 4 MiB journal
//! config.index.memory_bytes = 1 << 20;
//! Volume::format(&*store, &config)?;
//! let volume = Volume::open(store.clone(), &OpenOptions::default())?;
//! volume.write(0, &[7_u8; 4096], false)?;
//! volume.write(4096, &[7_u8; 4096], false)?; // the same data: stored once
//! volume.flush()?;
//! assert_eq!(volume.stats().data_blocks_used, 1);
//! volume.close()?;
//! # Ok::<(), uvdo::VolumeError>(())
//! ```

mod block_map;
pub mod config;
mod depot;
pub mod error;
mod hash;
mod int_hash;
mod journal;
mod staging;
mod volume;
pub mod zero;

pub use config::{FormatConfig, OpenOptions, ResolvedPolicy};
pub use error::VolumeError;
pub use uvdo_format::super_block::{OperatingMode, Owner, WritePolicy};
pub use uvdo_index::IndexConfig;
pub use volume::{
    AuditReport, BioCounts, CountMismatch, Extent, ExtentKind, FormatSummary, RecoveryReport,
    Volume, VolumeStats,
};
pub use volume::{DroppedMappings, LostSubtree, RebuildPhase, RebuildProgress, RebuildReport};
