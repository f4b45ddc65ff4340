//! The backing-store trait: what the engine needs from a disk, and nothing more.
//!
//! Offsets and lengths are in bytes and must be multiples of [`SECTOR_SIZE`]; the engine reads
//! and writes whole 4 KiB blocks, the sector granularity exists for the simulated store's torn
//! writes and for 512-byte devices. Discard and resize are separate capabilities, asked for with
//! [`Storage::discard`] and [`Storage::resize`] returning `Unsupported` where a store lacks them.
//!
//! Durability contract, the same as a disk with a volatile write cache: a completed `write_at`
//! may still be lost in a crash until a later `flush` completes; a completed `write_at_fua` is
//! durable on return (only that write, not earlier ones).

use uvdo_format::SECTOR_SIZE;

use crate::error::{IoError, IoOp};

/// A backing store holding one volume.
pub trait Storage: Send + Sync + std::fmt::Debug {
    /// Reads `buf.len()` bytes at byte `offset`.
    ///
    /// # Errors
    ///
    /// An [`IoError`] naming the operation and the range.
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<(), IoError>;

    /// Writes `buf` at byte `offset`. Not durable until a later [`Storage::flush`].
    ///
    /// # Errors
    ///
    /// An [`IoError`] naming the operation and the range.
    fn write_at(&self, offset: u64, buf: &[u8]) -> Result<(), IoError>;

    /// Writes `buf` at byte `offset` and makes this write durable before returning (FUA).
    ///
    /// The default writes then flushes, which is correct but makes earlier writes durable too.
    ///
    /// # Errors
    ///
    /// An [`IoError`] naming the operation and the range.
    fn write_at_fua(&self, offset: u64, buf: &[u8]) -> Result<(), IoError> {
        self.write_at(offset, buf)?;
        self.flush()
    }

    /// Makes every completed write durable.
    ///
    /// # Errors
    ///
    /// An [`IoError`]; after a failed flush nothing about earlier writes is known.
    fn flush(&self) -> Result<(), IoError>;

    /// Size of the store in bytes.
    fn size_bytes(&self) -> u64;

    /// Whether completed writes can still be lost until a flush: `Some(true)` for a device
    /// with a volatile write cache, `Some(false)` when every completed write is durable,
    /// `None` when it cannot be told (the `auto` write policy then assumes a cache).
    fn volatile_write_cache(&self) -> Option<bool> {
        None
    }

    /// Tells the store the range no longer holds data. Reads of it afterwards may return zeros
    /// or the old contents.
    ///
    /// # Errors
    ///
    /// `IoError::Unsupported` where the store cannot discard.
    fn discard(&self, offset: u64, len: u64) -> Result<(), IoError> {
        let _ = (offset, len);
        Err(IoError::Unsupported { op: IoOp::Discard })
    }

    /// Changes the size of the store (grow physical).
    ///
    /// # Errors
    ///
    /// `IoError::Unsupported` where the store cannot be resized.
    fn resize(&self, size_bytes: u64) -> Result<(), IoError> {
        let _ = size_bytes;
        Err(IoError::Unsupported { op: IoOp::Resize })
    }
}

/// Checks that `offset..offset+len` is sector-aligned and inside a store of `size_bytes`.
///
/// # Errors
///
/// `IoError::Misaligned` or `IoError::OutOfRange`.
pub fn check_range(op: IoOp, offset: u64, len: u64, size_bytes: u64) -> Result<(), IoError> {
    let sector = SECTOR_SIZE as u64;
    if !offset.is_multiple_of(sector) || !len.is_multiple_of(sector) {
        return Err(IoError::Misaligned { op, offset, len });
    }
    match offset.checked_add(len) {
        Some(end) if end <= size_bytes => Ok(()),
        _ => Err(IoError::OutOfRange {
            op,
            offset,
            len,
            size_bytes,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_are_checked_for_alignment_and_bounds() {
        assert!(check_range(IoOp::Read, 0, 4096, 4096).is_ok());
        assert!(matches!(
            check_range(IoOp::Read, 1, 512, 4096),
            Err(IoError::Misaligned { .. })
        ));
        assert!(matches!(
            check_range(IoOp::Write, 512, 100, 4096),
            Err(IoError::Misaligned { .. })
        ));
        assert!(matches!(
            check_range(IoOp::Write, 4096, 512, 4096),
            Err(IoError::OutOfRange { .. })
        ));
        assert!(matches!(
            check_range(IoOp::Write, u64::MAX - 511, 512, 4096),
            Err(IoError::OutOfRange { .. })
        ));
    }
}
