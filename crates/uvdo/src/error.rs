//! Errors of the engine, and the one place each maps to an errno.

use uvdo_format::layout::LayoutError;
use uvdo_format::{FormatError, Lbn, Pbn};
use uvdo_io::IoError;

/// An engine operation failed.
#[derive(Clone, Debug, thiserror::Error)]
pub enum VolumeError {
    /// The volume is in read-only mode; writes, trims and zeroing are refused.
    #[error("the volume is read-only: {reason}")]
    ReadOnly {
        /// Why the volume entered read-only mode.
        reason: String,
    },
    /// No free physical block is left; trimming or deleting data frees space.
    #[error("no space left: all {data_blocks} physical data blocks are in use")]
    NoSpace {
        /// Data blocks the volume has in all.
        data_blocks: u64,
    },
    /// The backing store failed.
    #[error("backing store: {0}")]
    Io(#[from] IoError),
    /// A metadata block failed its checks.
    #[error("corrupt metadata: {0}")]
    Corrupt(#[from] FormatError),
    /// A request outside the volume, misaligned, or otherwise malformed.
    #[error("invalid request: {what}")]
    InvalidArgument {
        /// What was wrong with it.
        what: String,
    },
    /// A configuration that cannot be laid out.
    #[error("invalid configuration: {0}")]
    InvalidConfig(#[from] LayoutError),
    /// `format` found something on the store and was not forced.
    #[error("the store already holds {what}; format with force to overwrite it")]
    AlreadyFormatted {
        /// What was found (a uvdo volume, a filesystem signature, ...).
        what: String,
    },
    /// The store holds no uvdo volume.
    #[error("no uvdo volume on this store: {0}")]
    NotAVolume(FormatError),
    /// The volume was not shut down cleanly and this build cannot recover it.
    #[error("the volume was not shut down cleanly (state {state}); it needs recovery")]
    NeedsRecovery {
        /// The state recorded in the super block.
        state: String,
    },
    /// An internal invariant does not hold: a bug, or metadata damaged in a way the checks
    /// did not catch.
    #[error("invariant violated at LBN {lbn:?} PBN {pbn:?}: {what}")]
    Invariant {
        /// The logical block involved, if any.
        lbn: Option<Lbn>,
        /// The physical block involved, if any.
        pbn: Option<Pbn>,
        /// What does not hold.
        what: String,
    },
}

impl VolumeError {
    /// The errno this error is reported as, for every layer that needs one (NBD, FUSE, CLI).
    #[must_use]
    pub fn errno(&self) -> i32 {
        match self {
            Self::ReadOnly { .. } => libc::EROFS,
            Self::NoSpace { .. } => libc::ENOSPC,
            Self::Io(e) => e.errno(),
            Self::InvalidArgument { .. } | Self::InvalidConfig(_) => libc::EINVAL,
            Self::AlreadyFormatted { .. } => libc::EEXIST,
            Self::Corrupt(_) | Self::NotAVolume(_) | Self::NeedsRecovery { .. } => libc::EIO,
            Self::Invariant { .. } => libc::EIO,
        }
    }

    /// A request-shape error.
    pub(crate) fn invalid(what: impl Into<String>) -> Self {
        Self::InvalidArgument { what: what.into() }
    }

    /// An invariant failure.
    pub(crate) fn invariant(lbn: Option<Lbn>, pbn: Option<Pbn>, what: impl Into<String>) -> Self {
        Self::Invariant {
            lbn,
            pbn,
            what: what.into(),
        }
    }
}
