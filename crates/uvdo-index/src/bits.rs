//! Bit streams over byte slices, least significant bit first, for the dense delta lists.
//!
//! Bit `p` of a stream is bit `p % 8` of byte `p / 8`. Reads take up to [`PEEK_BITS`] bits with
//! one unaligned 8-byte load (64 with a 16-byte one), so every slice read must have 16
//! readable bytes from the byte of the first bit read: the list arena and the writer's buffer
//! keep a guard of [`GUARD_BYTES`] zero bytes at their end.

/// Bits one read returns (64 less the 7 that a bit offset within a byte can cost).
pub(crate) const PEEK_BITS: u32 = 57;
/// Zero bytes kept after the last byte a stream may use, so any read in range is one load.
pub(crate) const GUARD_BYTES: usize = 16;

/// A mask of the low `bits` bits.
pub(crate) fn mask(bits: u32) -> u64 {
    if bits >= 64 {
        u64::MAX
    } else {
        (1 << bits) - 1
    }
}

/// The bits of `data` from bit `pos` on, bit `pos` first; the low [`PEEK_BITS`] are valid.
#[inline]
pub(crate) fn peek(data: &[u8], pos: usize) -> u64 {
    let byte = pos / 8;
    let word: [u8; 8] = data[byte..byte + 8].try_into().expect("an 8-byte slice");
    u64::from_le_bytes(word) >> (pos % 8)
}

/// The 64 bits of `data` from bit `pos` on, bit `pos` first.
#[inline]
fn peek64(data: &[u8], pos: usize) -> u64 {
    let byte = pos / 8;
    let word: [u8; 16] = data[byte..byte + 16].try_into().expect("a 16-byte slice");
    low_u64(u128::from_le_bytes(word) >> (pos % 8))
}

/// `bits` (at most [`PEEK_BITS`]) bits of `data` from bit `pos`.
#[inline]
pub(crate) fn read(data: &[u8], pos: usize, bits: u32) -> u64 {
    debug_assert!(bits <= PEEK_BITS, "read of {bits} bits");
    peek(data, pos) & mask(bits)
}

/// The last one bit at or after `floor` and before `before`, if any.
pub(crate) fn last_one_before(data: &[u8], floor: usize, before: usize) -> Option<usize> {
    let mut high = before;
    while high > floor {
        let low = high.saturating_sub(PEEK_BITS as usize).max(floor);
        let bits = u32::try_from(high - low).expect("at most 57");
        let window = peek(data, low) & mask(bits);
        if window != 0 {
            return Some(low + 63 - window.leading_zeros() as usize);
        }
        high = low;
    }
    None
}

/// The bit just after the last one bit of `data[..end_byte]` at or after byte `start_byte`,
/// or `start_byte * 8` when those bytes are all zero.
pub(crate) fn end_of_ones(data: &[u8], start_byte: usize, mut end_byte: usize) -> usize {
    // Whole words first: free space between lists can be long.
    while end_byte >= start_byte + 8 {
        let word: [u8; 8] = data[end_byte - 8..end_byte]
            .try_into()
            .expect("an 8-byte slice");
        let word = u64::from_le_bytes(word);
        if word != 0 {
            return (end_byte - 8) * 8 + (64 - word.leading_zeros() as usize);
        }
        end_byte -= 8;
    }
    match data[start_byte..end_byte].iter().rposition(|&b| b != 0) {
        Some(at) => {
            let byte = start_byte + at;
            byte * 8 + (8 - data[byte].leading_zeros() as usize)
        }
        None => start_byte * 8,
    }
}

/// Reads one byte of every cache line of `data[start..end]`, so that the loads of a list about
/// to be decoded are in flight together rather than one after the other.
#[inline]
pub(crate) fn touch(data: &[u8], start: usize, end: usize) {
    let mut sum = 0_u8;
    let mut at = start;
    while at < end {
        sum ^= data[at];
        at += 64;
    }
    std::hint::black_box(sum);
}

/// Appends bits to a byte buffer.
#[derive(Debug)]
pub(crate) struct BitWriter<'a> {
    out: &'a mut Vec<u8>,
    pending: u128,
    pending_bits: u32,
    written: usize,
}

impl<'a> BitWriter<'a> {
    /// A writer that replaces the contents of `out`.
    pub(crate) fn new(out: &'a mut Vec<u8>) -> Self {
        out.clear();
        Self {
            out,
            pending: 0,
            pending_bits: 0,
            written: 0,
        }
    }

    /// Appends the low `bits` (at most 64) bits of `value`.
    #[inline]
    pub(crate) fn put(&mut self, value: u64, bits: u32) {
        debug_assert!(bits <= 64, "put of {bits} bits");
        self.pending |= u128::from(value & mask(bits)) << self.pending_bits;
        self.pending_bits += bits;
        self.written += bits as usize;
        if self.pending_bits >= 64 {
            self.out
                .extend_from_slice(&low_u64(self.pending).to_le_bytes());
            self.pending >>= 64;
            self.pending_bits -= 64;
        }
    }

    /// Appends `count` zero bits.
    pub(crate) fn put_zeros(&mut self, mut count: usize) {
        while count > 0 {
            let bits = count.min(64);
            self.put(0, u32::try_from(bits).expect("at most 64"));
            count -= bits;
        }
    }

    /// Appends bits `from..to` of `data` (which has its guard bytes).
    pub(crate) fn copy(&mut self, data: &[u8], mut from: usize, to: usize) {
        while to - from >= 64 {
            self.put(peek64(data, from), 64);
            from += 64;
        }
        if from < to {
            let bits = u32::try_from(to - from).expect("below 64");
            self.put(peek64(data, from) & mask(bits), bits);
        }
    }

    /// Bits written so far.
    pub(crate) fn bits(&self) -> usize {
        self.written
    }

    /// Flushes the last partial byte; returns the stream's length in bytes.
    pub(crate) fn finish(self) -> usize {
        let bytes = self.pending_bits.div_ceil(8) as usize;
        self.out
            .extend_from_slice(&low_u64(self.pending).to_le_bytes()[..bytes]);
        debug_assert_eq!(self.out.len(), self.written.div_ceil(8));
        self.out.len()
    }
}

#[expect(
    clippy::cast_possible_truncation,
    reason = "keeps the low 64 bits on purpose"
)]
fn low_u64(value: u128) -> u64 {
    value as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn written_fields_read_back_at_every_offset() {
        let mut buffer = Vec::new();
        let mut writer = BitWriter::new(&mut buffer);
        let fields: Vec<(u64, u32)> = (1..=64)
            .map(|bits| {
                (
                    0x9e37_79b9_7f4a_7c15_u64.rotate_left(bits) & mask(bits),
                    bits,
                )
            })
            .collect();
        for &(value, bits) in &fields {
            writer.put(value, bits);
        }
        writer.put_zeros(70);
        writer.put(1, 1);
        let total = writer.bits();
        let bytes = writer.finish();
        assert_eq!(bytes, total.div_ceil(8));
        buffer.extend_from_slice(&[0; GUARD_BYTES]);
        let mut pos = 0;
        for &(value, bits) in &fields {
            let low = bits.min(PEEK_BITS);
            let mut got = read(&buffer, pos, low);
            if bits > low {
                got |= read(&buffer, pos + low as usize, bits - low) << low;
            }
            assert_eq!(got, value, "{bits}-bit field at {pos}");
            pos += bits as usize;
        }
        assert_eq!(end_of_ones(&buffer, 0, bytes), total);
        assert_eq!(last_one_before(&buffer, 0, total), Some(total - 1));
        assert_eq!(last_one_before(&buffer, pos, total - 1), None);
        assert_eq!(
            last_one_before(&buffer, 0, pos).map(|b| b < pos),
            Some(true)
        );
        let mut copy = Vec::new();
        let mut writer = BitWriter::new(&mut copy);
        writer.put(1, 3);
        writer.copy(&buffer, 5, total);
        writer.finish();
        copy.extend_from_slice(&[0; GUARD_BYTES]);
        for bit in 5..total {
            assert_eq!(read(&copy, bit - 2, 1), read(&buffer, bit, 1), "bit {bit}");
        }
    }
}
