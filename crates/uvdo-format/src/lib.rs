//! uvdo-format: every on-disk structure of a uvdo volume, as pure codecs.
//!
//! This crate owns the bytes: the layout of the backing store, and for each metadata structure
//! a native type with `encode` into a 4 KiB block and `decode` from one. It never performs I/O,
//! never allocates physical blocks and never decides policy; the engine does that and asks this
//! crate only to turn values into bytes and back.
//!
//! Invariants every codec keeps:
//! - `decode(encode(x)) == x` for every valid `x`;
//! - `decode` never panics, whatever the bytes; it returns a [`FormatError`] naming the
//!   structure, the location, and the check that failed with expected and found values;
//! - every metadata block starts with the common [`header`] (CRC, magic, type, version, nonce,
//!   own location, sequence), so torn, stale, misdirected and foreign blocks are detected
//!   everywhere, not only in the geometry and super block as in VDO;
//! - only little-endian fixed-width integers reach the disk (the workspace lints forbid
//!   host-endian conversions; `usize` never goes to disk).
//!
//! `docs/FORMAT.md` is the prose version of this crate, with byte diagrams.

pub mod block;
pub mod block_map_page;
#[cfg(any(test, feature = "testing"))]
pub mod damage;
pub mod error;
pub mod geometry;
pub mod header;
pub mod index_page;
pub mod layout;
pub mod le;
pub mod mapping;
pub mod numbers;
pub mod recovery_journal;
pub mod ref_counts;
pub mod reserved;
pub mod slab_journal;
pub mod slab_summary;
pub mod super_block;
pub mod twin;

pub use block::{BLOCK_SIZE, Block, SECTOR_SIZE};
pub use error::{FormatError, Problem};
pub use header::{BlockHeader, BlockType, Expected};
pub use mapping::Mapping;
pub use numbers::{
    BlockCount, JournalPoint, Lbn, Nonce, Pbn, SequenceNumber, SlabBlockNumber, SlabNumber,
};
