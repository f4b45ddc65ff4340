//! Errors of the storage layer.

use std::fmt;

/// The operation that failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum IoOp {
    /// A read.
    Read,
    /// A write (with or without FUA).
    Write,
    /// A flush of the write cache.
    Flush,
    /// A discard.
    Discard,
    /// A resize.
    Resize,
    /// Opening the store.
    Open,
}

impl fmt::Display for IoOp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Read => "read",
            Self::Write => "write",
            Self::Flush => "flush",
            Self::Discard => "discard",
            Self::Resize => "resize",
            Self::Open => "open",
        })
    }
}

/// A storage operation failed.
#[derive(Debug, thiserror::Error)]
pub enum IoError {
    /// The device reported an error (EIO, ENOSPC, ...).
    #[error("{op} of {len} bytes at byte {offset} failed: {source}")]
    Device {
        /// What was being done.
        op: IoOp,
        /// Byte offset of the request.
        offset: u64,
        /// Length of the request in bytes.
        len: u64,
        /// The operating system's error.
        #[source]
        source: std::io::Error,
    },
    /// The request reaches past the end of the store.
    #[error("{op} of {len} bytes at byte {offset} is beyond the store's end at {size_bytes}")]
    OutOfRange {
        /// What was being done.
        op: IoOp,
        /// Byte offset of the request.
        offset: u64,
        /// Length of the request in bytes.
        len: u64,
        /// Size of the store.
        size_bytes: u64,
    },
    /// The request is not sector-aligned.
    #[error("{op} of {len} bytes at byte {offset} is not aligned to 512-byte sectors")]
    Misaligned {
        /// What was being done.
        op: IoOp,
        /// Byte offset of the request.
        offset: u64,
        /// Length of the request in bytes.
        len: u64,
    },
    /// The store does not have this capability.
    #[error("{op} is not supported by this store")]
    Unsupported {
        /// What was asked for.
        op: IoOp,
    },
}

/// A copy for reporting one failure to several callers (`std::io::Error` is not `Clone`: the
/// copy keeps the OS error code, or the kind and message).
impl Clone for IoError {
    fn clone(&self) -> Self {
        match self {
            Self::Device {
                op,
                offset,
                len,
                source,
            } => Self::Device {
                op: *op,
                offset: *offset,
                len: *len,
                source: source.raw_os_error().map_or_else(
                    || std::io::Error::new(source.kind(), source.to_string()),
                    std::io::Error::from_raw_os_error,
                ),
            },
            Self::OutOfRange {
                op,
                offset,
                len,
                size_bytes,
            } => Self::OutOfRange {
                op: *op,
                offset: *offset,
                len: *len,
                size_bytes: *size_bytes,
            },
            Self::Misaligned { op, offset, len } => Self::Misaligned {
                op: *op,
                offset: *offset,
                len: *len,
            },
            Self::Unsupported { op } => Self::Unsupported { op: *op },
        }
    }
}

impl IoError {
    /// The POSIX errno that best describes this error, for the layers that must report one.
    #[must_use]
    pub fn errno(&self) -> i32 {
        match self {
            Self::Device { source, .. } => source.raw_os_error().unwrap_or(libc::EIO),
            Self::OutOfRange { .. } | Self::Misaligned { .. } => libc::EINVAL,
            Self::Unsupported { .. } => libc::EOPNOTSUPP,
        }
    }

    /// A device error with the given errno, as stores and fault injection produce.
    #[must_use]
    pub fn from_errno(op: IoOp, offset: u64, len: u64, errno: i32) -> Self {
        Self::Device {
            op,
            offset,
            len,
            source: std::io::Error::from_raw_os_error(errno),
        }
    }
}
