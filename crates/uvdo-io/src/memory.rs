//! A store held in memory, for tests and tools.
//!
//! Memory is durable for the store's lifetime, so a completed write is as durable as it will
//! ever be and `flush` has nothing to do. Discard zeroes the range (one of the two answers the
//! trait allows). Use the simulated store when crashes matter.

use std::fmt;
use std::ops::Range;

use parking_lot::RwLock;
use uvdo_format::SECTOR_SIZE;

use crate::error::{IoError, IoOp};
use crate::storage::{Storage, check_range};

/// A [`Storage`] over a `Vec<u8>`.
pub struct MemoryStore {
    bytes: RwLock<Vec<u8>>,
}

impl MemoryStore {
    /// A zeroed store of `size_bytes`.
    ///
    /// # Panics
    ///
    /// If `size_bytes` is not whole sectors or does not fit in memory's address space.
    #[must_use]
    pub fn new(size_bytes: u64) -> Self {
        let len = usize::try_from(size_bytes).expect("memory store larger than the address space");
        Self::from_image(vec![0; len])
    }

    /// A store holding `image`.
    ///
    /// # Panics
    ///
    /// If the image is not whole sectors.
    #[must_use]
    pub fn from_image(image: Vec<u8>) -> Self {
        assert!(
            image.len().is_multiple_of(SECTOR_SIZE),
            "memory store of {} bytes is not whole sectors",
            image.len()
        );
        Self {
            bytes: RwLock::new(image),
        }
    }

    /// A copy of the whole store.
    #[must_use]
    pub fn snapshot(&self) -> Vec<u8> {
        self.bytes.read().clone()
    }
}

/// The bytes of a range that `check_range` accepted against a store held in memory.
fn span(offset: u64, len: u64) -> Range<usize> {
    let start = usize::try_from(offset).expect("checked offset fits in memory");
    let len = usize::try_from(len).expect("checked length fits in memory");
    start..start + len
}

impl Storage for MemoryStore {
    fn volatile_write_cache(&self) -> Option<bool> {
        // Memory holds what was written for the store's whole life: nothing to lose.
        Some(false)
    }

    fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<(), IoError> {
        let bytes = self.bytes.read();
        check_range(IoOp::Read, offset, buf.len() as u64, bytes.len() as u64)?;
        buf.copy_from_slice(&bytes[span(offset, buf.len() as u64)]);
        Ok(())
    }

    fn write_at(&self, offset: u64, buf: &[u8]) -> Result<(), IoError> {
        let mut bytes = self.bytes.write();
        check_range(IoOp::Write, offset, buf.len() as u64, bytes.len() as u64)?;
        bytes[span(offset, buf.len() as u64)].copy_from_slice(buf);
        Ok(())
    }

    fn write_at_fua(&self, offset: u64, buf: &[u8]) -> Result<(), IoError> {
        self.write_at(offset, buf)
    }

    fn flush(&self) -> Result<(), IoError> {
        Ok(())
    }

    fn size_bytes(&self) -> u64 {
        self.bytes.read().len() as u64
    }

    fn discard(&self, offset: u64, len: u64) -> Result<(), IoError> {
        let mut bytes = self.bytes.write();
        check_range(IoOp::Discard, offset, len, bytes.len() as u64)?;
        bytes[span(offset, len)].fill(0);
        Ok(())
    }

    fn resize(&self, size_bytes: u64) -> Result<(), IoError> {
        if !size_bytes.is_multiple_of(SECTOR_SIZE as u64) {
            return Err(IoError::Misaligned {
                op: IoOp::Resize,
                offset: size_bytes,
                len: 0,
            });
        }
        let len = usize::try_from(size_bytes)
            .map_err(|_| IoError::from_errno(IoOp::Resize, size_bytes, 0, libc::ENOMEM))?;
        self.bytes.write().resize(len, 0);
        Ok(())
    }
}

impl fmt::Debug for MemoryStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MemoryStore")
            .field("size_bytes", &self.size_bytes())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_read_back_and_discard_zeroes() {
        let store = MemoryStore::new(8192);
        store.write_at(512, &[7; 1024]).unwrap();
        let mut buf = [0; 2048];
        store.read_at(0, &mut buf).unwrap();
        assert_eq!(&buf[..512], &[0; 512]);
        assert_eq!(&buf[512..1536], &[7; 1024]);
        store.discard(1024, 512).unwrap();
        let image = store.snapshot();
        assert_eq!(&image[512..1024], &[7; 512]);
        assert_eq!(&image[1024..1536], &[0; 512]);
    }

    #[test]
    fn resize_grows_with_zeros_and_shrinks() {
        let store = MemoryStore::from_image(vec![9; 1024]);
        store.resize(2048).unwrap();
        assert_eq!(store.size_bytes(), 2048);
        assert_eq!(&store.snapshot()[1024..], &[0; 1024]);
        store.resize(512).unwrap();
        assert_eq!(store.snapshot(), vec![9; 512]);
        assert!(matches!(
            store.resize(100),
            Err(IoError::Misaligned {
                op: IoOp::Resize,
                ..
            })
        ));
        assert!(matches!(
            store.read_at(512, &mut [0; 512]),
            Err(IoError::OutOfRange {
                size_bytes: 512,
                ..
            })
        ));
    }
}
