//! A zeroed heap buffer aligned for `O_DIRECT`.
//!
//! `O_DIRECT` wants the buffer address, the file offset and the length aligned to the device's
//! logical block size. We align buffers to [`ALIGNMENT_BYTES`] (4096), which satisfies every
//! device we expect, so one bounce buffer type serves all of them.
//!
//! Invariants: the address is a multiple of [`ALIGNMENT_BYTES`]; the length is a multiple of
//! [`SECTOR_SIZE`]; the bytes start as zeros; the buffer owns its allocation exclusively.

use std::alloc::{self, Layout};
use std::fmt;
use std::ops::{Deref, DerefMut};
use std::ptr::NonNull;

use uvdo_format::SECTOR_SIZE;

/// Alignment of every [`AlignedBuf`], in bytes.
pub const ALIGNMENT_BYTES: usize = 4096;

/// A type with the buffer's alignment, only used to get a well-aligned dangling pointer for
/// empty buffers (a zero-size allocation is not allowed).
#[repr(C, align(4096))]
struct Page([u8; ALIGNMENT_BYTES]);

/// A heap buffer whose address is a multiple of 4096 bytes, zeroed on creation.
pub struct AlignedBuf {
    ptr: NonNull<u8>,
    len: usize,
}

// SAFETY: `AlignedBuf` owns its allocation exclusively, like a `Vec<u8>`; moving it to another
// thread moves that ownership.
unsafe impl Send for AlignedBuf {}
// SAFETY: shared references only allow reads of the bytes, which is safe from any thread.
unsafe impl Sync for AlignedBuf {}

impl AlignedBuf {
    /// A zeroed buffer of `len_bytes` bytes.
    ///
    /// # Panics
    ///
    /// If `len_bytes` is not a multiple of [`SECTOR_SIZE`] (a caller bug), or if the allocation
    /// fails (through [`alloc::handle_alloc_error`]).
    #[must_use]
    pub fn zeroed(len_bytes: usize) -> Self {
        assert!(
            len_bytes.is_multiple_of(SECTOR_SIZE),
            "aligned buffer length {len_bytes} is not a multiple of {SECTOR_SIZE}"
        );
        if len_bytes == 0 {
            return Self {
                ptr: NonNull::<Page>::dangling().cast(),
                len: 0,
            };
        }
        let layout = Self::layout(len_bytes);
        // SAFETY: the layout has a non-zero size (checked above) and a valid power-of-two
        // alignment.
        let raw = unsafe { alloc::alloc_zeroed(layout) };
        let ptr = NonNull::new(raw).unwrap_or_else(|| alloc::handle_alloc_error(layout));
        let buf = Self {
            ptr,
            len: len_bytes,
        };
        assert!(buf.ptr.as_ptr().addr().is_multiple_of(ALIGNMENT_BYTES));
        buf
    }

    /// A buffer holding a copy of `bytes`.
    ///
    /// # Panics
    ///
    /// If `bytes.len()` is not a multiple of [`SECTOR_SIZE`].
    #[must_use]
    pub fn copy_of(bytes: &[u8]) -> Self {
        let mut buf = Self::zeroed(bytes.len());
        buf.copy_from_slice(bytes);
        buf
    }

    fn layout(len_bytes: usize) -> Layout {
        // Cannot fail for a length below isize::MAX rounded to the alignment; a larger length
        // could never be allocated anyway.
        Layout::from_size_align(len_bytes, ALIGNMENT_BYTES)
            .expect("aligned buffer length exceeds the address space")
    }
}

impl Deref for AlignedBuf {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        // SAFETY: `ptr` is non-null, aligned, and valid for `len` initialised bytes (zeroed at
        // allocation, or a dangling pointer with `len == 0`); `&self` forbids mutation.
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.len) }
    }
}

impl DerefMut for AlignedBuf {
    fn deref_mut(&mut self) -> &mut [u8] {
        // SAFETY: as in `deref`, and `&mut self` makes this the only reference to the bytes.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.as_ptr(), self.len) }
    }
}

impl Drop for AlignedBuf {
    fn drop(&mut self) {
        if self.len != 0 {
            // SAFETY: `ptr` came from `alloc_zeroed` with exactly this layout and is freed once.
            unsafe { alloc::dealloc(self.ptr.as_ptr(), Self::layout(self.len)) };
        }
    }
}

impl fmt::Debug for AlignedBuf {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AlignedBuf")
            .field("len", &self.len)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buffers_are_aligned_and_zeroed() {
        for len in [0, 512, 4096, 8192 + 512, 1 << 20] {
            let buf = AlignedBuf::zeroed(len);
            assert_eq!(buf.len(), len);
            assert!(
                buf.as_ptr().addr().is_multiple_of(ALIGNMENT_BYTES),
                "len {len}"
            );
            assert!(buf.iter().all(|&b| b == 0), "len {len}");
        }
    }

    #[test]
    fn writes_are_kept() {
        let mut buf = AlignedBuf::zeroed(1024);
        buf[1000] = 7;
        buf[..3].copy_from_slice(&[1, 2, 3]);
        assert_eq!(&buf[..4], &[1, 2, 3, 0]);
        assert_eq!(buf[1000], 7);
        let copy = AlignedBuf::copy_of(&buf);
        assert_eq!(&copy[..], &buf[..]);
    }

    #[test]
    #[should_panic(expected = "not a multiple of 512")]
    fn odd_lengths_are_refused() {
        let _ = AlignedBuf::zeroed(100);
    }
}
