//! Block and sector sizes.
//!
//! A block (4096 bytes) is the unit of mapping, dedupe, allocation and metadata. A sector
//! (512 bytes) is the unit a device may tear a write at; uvdo never assumes a sector write is
//! atomic either (FORMAT.md, "Assumptions about the device").

/// Bytes in a block.
pub const BLOCK_SIZE: usize = 4096;
/// Bytes in a block, as the on-disk width.
pub const BLOCK_SIZE_BYTES: u64 = 4096;
/// Bytes in a sector: the granularity of partial I/O and of torn writes.
pub const SECTOR_SIZE: usize = 512;
/// Sectors in a block.
pub const SECTORS_PER_BLOCK: usize = BLOCK_SIZE / SECTOR_SIZE;

/// One 4 KiB block.
pub type Block = [u8; BLOCK_SIZE];

/// A block of zeros, for comparisons and initial images.
pub const ZERO_BLOCK: Block = [0; BLOCK_SIZE];
