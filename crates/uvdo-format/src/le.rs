//! Little-endian field access at named offsets.
//!
//! Every on-disk integer is little-endian and fixed-width (FORMAT.md, "Conventions"). Codecs
//! name each field's offset as a constant and read or write it through these helpers, so no
//! codec ever touches host-endian bytes.

/// Reads a `u8` at `offset`.
#[must_use]
#[inline]
pub fn get_u8(bytes: &[u8], offset: usize) -> u8 {
    bytes[offset]
}

/// Reads a little-endian `u16` at `offset`.
#[must_use]
#[inline]
pub fn get_u16(bytes: &[u8], offset: usize) -> u16 {
    u16::from_le_bytes(array(bytes, offset))
}

/// Reads a little-endian `u32` at `offset`.
#[must_use]
#[inline]
pub fn get_u32(bytes: &[u8], offset: usize) -> u32 {
    u32::from_le_bytes(array(bytes, offset))
}

/// Reads a little-endian `u64` at `offset`.
#[must_use]
#[inline]
pub fn get_u64(bytes: &[u8], offset: usize) -> u64 {
    u64::from_le_bytes(array(bytes, offset))
}

/// Writes a `u8` at `offset`.
#[inline]
pub fn put_u8(bytes: &mut [u8], offset: usize, value: u8) {
    bytes[offset] = value;
}

/// Writes a little-endian `u16` at `offset`.
#[inline]
pub fn put_u16(bytes: &mut [u8], offset: usize, value: u16) {
    bytes[offset..offset + 2].copy_from_slice(&value.to_le_bytes());
}

/// Writes a little-endian `u32` at `offset`.
#[inline]
pub fn put_u32(bytes: &mut [u8], offset: usize, value: u32) {
    bytes[offset..offset + 4].copy_from_slice(&value.to_le_bytes());
}

/// Writes a little-endian `u64` at `offset`.
#[inline]
pub fn put_u64(bytes: &mut [u8], offset: usize, value: u64) {
    bytes[offset..offset + 8].copy_from_slice(&value.to_le_bytes());
}

/// Copies `N` bytes starting at `offset`.
#[must_use]
pub fn array<const N: usize>(bytes: &[u8], offset: usize) -> [u8; N] {
    let mut out = [0_u8; N];
    out.copy_from_slice(&bytes[offset..offset + N]);
    out
}

/// True when every byte in `bytes` is zero. Used to insist reserved fields are zero.
#[must_use]
pub fn all_zero(bytes: &[u8]) -> bool {
    bytes.iter().all(|&b| b == 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_are_little_endian() {
        let mut bytes = [0_u8; 16];
        put_u64(&mut bytes, 0, 0x0102_0304_0506_0708);
        put_u32(&mut bytes, 8, 0x0a0b_0c0d);
        put_u16(&mut bytes, 12, 0x1122);
        put_u8(&mut bytes, 14, 0x33);
        assert_eq!(bytes[..8], [8, 7, 6, 5, 4, 3, 2, 1]);
        assert_eq!(bytes[8..12], [0x0d, 0x0c, 0x0b, 0x0a]);
        assert_eq!(bytes[12..14], [0x22, 0x11]);
        assert_eq!(get_u64(&bytes, 0), 0x0102_0304_0506_0708);
        assert_eq!(get_u32(&bytes, 8), 0x0a0b_0c0d);
        assert_eq!(get_u16(&bytes, 12), 0x1122);
        assert_eq!(get_u8(&bytes, 14), 0x33);
        assert!(all_zero(&bytes[15..]));
        assert!(!all_zero(&bytes[14..]));
    }
}
