//! Errors of the dedupe index, each with the context needed to act on it.

use uvdo_format::{FormatError, Pbn};
use uvdo_io::IoError;

/// What can go wrong building, saving or loading the index.
///
/// None of these ever costs data: the engine answers any load error by starting with an empty
/// index (SPEC I5), and advice is always verified before it is used.
#[derive(Debug, thiserror::Error)]
pub enum IndexError {
    /// A configuration value is out of range.
    #[error("index config {field} = {found}: expected {expected}")]
    InvalidConfig {
        /// The field or derived quantity at fault.
        field: &'static str,
        /// What a valid value looks like.
        expected: &'static str,
        /// The value given.
        found: u64,
    },
    /// Sparse mode keeps closed chapters on disk, so it cannot run without a region.
    #[error("a sparse index needs an on-disk region")]
    SparseNeedsRegion,
    /// `save` was called on an index built without a region.
    #[error("the index has no on-disk region to save to")]
    NoRegion,
    /// The region the engine gave is smaller than [`crate::IndexConfig::disk_blocks`].
    #[error("index region of {found} blocks is too small: {needed} needed")]
    RegionTooSmall {
        /// Blocks the configuration needs.
        needed: u64,
        /// Blocks the region has.
        found: u64,
    },
    /// The store failed a read or write of an index page.
    #[error("index {what} at pbn {pbn}: {source}")]
    Io {
        /// The structure being read or written.
        what: &'static str,
        /// The block at fault.
        pbn: Pbn,
        /// The store's error.
        source: IoError,
    },
    /// A page of the save is damaged, stale, misdirected or missing.
    #[error("index save page {page}: {source}")]
    Page {
        /// The page number within the save.
        page: u32,
        /// What the page check found.
        source: FormatError,
    },
    /// The save decoded page by page but its contents are inconsistent.
    #[error("index save {structure}: expected {expected}, found {found}")]
    Corrupt {
        /// The part of the save at fault.
        structure: &'static str,
        /// What a valid value looks like.
        expected: &'static str,
        /// The value read.
        found: u64,
    },
    /// The save was made with another configuration than the one given to `load`.
    #[error("index save made with {field} = {found}, config says {expected}")]
    ConfigMismatch {
        /// The configuration quantity that differs.
        field: &'static str,
        /// The value the config derives.
        expected: u64,
        /// The value in the save.
        found: u64,
    },
}
