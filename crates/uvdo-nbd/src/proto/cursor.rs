//! Reading and writing big-endian fields: the only place the codec touches byte order.
#![expect(
    clippy::big_endian_bytes,
    reason = "NBD integers are big-endian on the wire"
)]

use super::ProtoError;

/// A position in a message being decoded.
#[derive(Debug)]
pub struct Cursor<'a> {
    bytes: &'a [u8],
    what: &'static str,
}

impl<'a> Cursor<'a> {
    /// A cursor over `bytes`, naming `what` in its errors.
    #[must_use]
    pub fn new(bytes: &'a [u8], what: &'static str) -> Self {
        Self { bytes, what }
    }

    /// The next `n` bytes.
    ///
    /// # Errors
    ///
    /// `Truncated` when fewer remain.
    pub fn take(&mut self, n: usize) -> Result<&'a [u8], ProtoError> {
        if self.bytes.len() < n {
            return Err(ProtoError::Truncated {
                what: self.what,
                needed: n,
                found: self.bytes.len(),
            });
        }
        let (head, tail) = self.bytes.split_at(n);
        self.bytes = tail;
        Ok(head)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], ProtoError> {
        let mut out = [0; N];
        out.copy_from_slice(self.take(N)?);
        Ok(out)
    }

    /// A big-endian u16.
    ///
    /// # Errors
    ///
    /// `Truncated`.
    pub fn u16(&mut self) -> Result<u16, ProtoError> {
        Ok(u16::from_be_bytes(self.array()?))
    }

    /// A big-endian u32.
    ///
    /// # Errors
    ///
    /// `Truncated`.
    pub fn u32(&mut self) -> Result<u32, ProtoError> {
        Ok(u32::from_be_bytes(self.array()?))
    }

    /// A big-endian u64.
    ///
    /// # Errors
    ///
    /// `Truncated`.
    pub fn u64(&mut self) -> Result<u64, ProtoError> {
        Ok(u64::from_be_bytes(self.array()?))
    }

    /// Bytes not read yet.
    #[must_use]
    pub fn rest(&self) -> &'a [u8] {
        self.bytes
    }

    /// Succeeds only when every byte was read.
    ///
    /// # Errors
    ///
    /// `Malformed` when bytes are left over.
    pub fn finish(self) -> Result<(), ProtoError> {
        if self.bytes.is_empty() {
            Ok(())
        } else {
            Err(ProtoError::Malformed { what: self.what })
        }
    }
}

/// Appends a big-endian u16.
pub fn put_u16(out: &mut Vec<u8>, v: u16) {
    out.extend_from_slice(&v.to_be_bytes());
}

/// Appends a big-endian u32.
pub fn put_u32(out: &mut Vec<u8>, v: u32) {
    out.extend_from_slice(&v.to_be_bytes());
}

/// Appends a big-endian u64.
pub fn put_u64(out: &mut Vec<u8>, v: u64) {
    out.extend_from_slice(&v.to_be_bytes());
}

/// Appends a length as a u32; callers bound lengths far below 4 GiB.
pub fn put_len(out: &mut Vec<u8>, len: usize) {
    put_u32(
        out,
        u32::try_from(len).expect("lengths are bounded by the protocol limits"),
    );
}
