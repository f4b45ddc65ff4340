//! A sparse, copy-on-write disk image.
//!
//! The image is a vector of 4 KiB chunks, each either absent (all zeros) or shared behind an
//! [`Arc`]. Cloning an image copies only the chunk pointers, and a write copies only the chunks
//! it touches that are still shared, so a crash harness can take thousands of images from one
//! run cheaply.
//!
//! Invariants: `chunks.len() == size_bytes.div_ceil(CHUNK_BYTES)`; bytes of the last chunk past
//! `size_bytes` are zero.

use std::fmt;
use std::sync::Arc;

/// Bytes in one chunk of the image.
const CHUNK_BYTES: usize = 4096;

type Chunk = [u8; CHUNK_BYTES];

/// Converts an in-memory offset to an index; images are in memory, so it always fits.
pub(super) fn to_index(value: u64) -> usize {
    usize::try_from(value).expect("a simulated image offset fits in usize")
}

/// Converts a buffer length to a byte count.
pub(super) fn to_bytes(len: usize) -> u64 {
    u64::try_from(len).expect("a buffer length fits in u64")
}

/// A disk image held sparsely in shared 4 KiB chunks.
#[derive(Clone)]
pub(super) struct Image {
    size_bytes: u64,
    chunks: Vec<Option<Arc<Chunk>>>,
}

/// One piece of a byte range that falls inside a single chunk.
struct Span {
    chunk: usize,
    within: usize,
    len: usize,
    /// Offset of this piece from the start of the whole range.
    from: usize,
}

/// Splits `offset..offset+len` into per-chunk spans.
fn spans(offset: u64, len: usize) -> impl Iterator<Item = Span> {
    let start = to_index(offset);
    let mut from = 0;
    std::iter::from_fn(move || {
        if from >= len {
            return None;
        }
        let position = start + from;
        let within = position % CHUNK_BYTES;
        let piece = (CHUNK_BYTES - within).min(len - from);
        let span = Span {
            chunk: position / CHUNK_BYTES,
            within,
            len: piece,
            from,
        };
        from += piece;
        Some(span)
    })
}

impl Image {
    /// An image of `size_bytes` zeros.
    pub(super) fn zeroed(size_bytes: u64) -> Self {
        let count = to_index(size_bytes.div_ceil(CHUNK_BYTES as u64));
        Self {
            size_bytes,
            chunks: vec![None; count],
        }
    }

    /// An image holding a copy of `bytes`; chunks of zeros stay absent.
    pub(super) fn from_bytes(bytes: &[u8]) -> Self {
        let mut image = Self::zeroed(to_bytes(bytes.len()));
        for (index, piece) in bytes.chunks(CHUNK_BYTES).enumerate() {
            if piece.iter().any(|&byte| byte != 0) {
                let mut chunk = [0; CHUNK_BYTES];
                chunk[..piece.len()].copy_from_slice(piece);
                image.chunks[index] = Some(Arc::new(chunk));
            }
        }
        image
    }

    pub(super) fn size_bytes(&self) -> u64 {
        self.size_bytes
    }

    fn assert_inside(&self, offset: u64, len: usize) {
        let end = offset.checked_add(to_bytes(len));
        assert!(
            end.is_some_and(|end| end <= self.size_bytes),
            "simulated image access of {len} bytes at {offset} beyond its end at {}",
            self.size_bytes
        );
    }

    /// Copies `buf.len()` bytes at `offset` into `buf`.
    pub(super) fn read(&self, offset: u64, buf: &mut [u8]) {
        self.assert_inside(offset, buf.len());
        for span in spans(offset, buf.len()) {
            let out = &mut buf[span.from..span.from + span.len];
            match &self.chunks[span.chunk] {
                Some(chunk) => out.copy_from_slice(&chunk[span.within..span.within + span.len]),
                None => out.fill(0),
            }
        }
    }

    /// Copies `data` into the image at `offset`.
    pub(super) fn write(&mut self, offset: u64, data: &[u8]) {
        self.assert_inside(offset, data.len());
        for span in spans(offset, data.len()) {
            let slot = &mut self.chunks[span.chunk];
            let chunk = Arc::make_mut(slot.get_or_insert_with(|| Arc::new([0; CHUNK_BYTES])));
            chunk[span.within..span.within + span.len]
                .copy_from_slice(&data[span.from..span.from + span.len]);
        }
    }

    /// Sets `len` bytes at `offset` to zero, dropping chunks it covers whole.
    pub(super) fn zero(&mut self, offset: u64, len: u64) {
        let len = to_index(len);
        self.assert_inside(offset, len);
        for span in spans(offset, len) {
            let slot = &mut self.chunks[span.chunk];
            if span.len == CHUNK_BYTES {
                *slot = None;
            } else if let Some(chunk) = slot {
                Arc::make_mut(chunk)[span.within..span.within + span.len].fill(0);
            }
        }
    }

    /// Grows the image to `size_bytes` with zeros.
    pub(super) fn grow(&mut self, size_bytes: u64) {
        assert!(
            size_bytes >= self.size_bytes,
            "simulated image cannot shrink from {} to {size_bytes}",
            self.size_bytes
        );
        let count = to_index(size_bytes.div_ceil(CHUNK_BYTES as u64));
        self.chunks.resize(count, None);
        self.size_bytes = size_bytes;
    }

    /// The whole image as bytes.
    pub(super) fn to_vec(&self) -> Vec<u8> {
        let mut bytes = vec![0; to_index(self.size_bytes)];
        self.read(0, &mut bytes);
        bytes
    }
}

impl fmt::Debug for Image {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let present = self.chunks.iter().filter(|chunk| chunk.is_some()).count();
        f.debug_struct("Image")
            .field("size_bytes", &self.size_bytes)
            .field("chunks_present", &present)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pattern(len: usize, salt: u8) -> Vec<u8> {
        (0..len)
            .map(|index| u8::try_from(index % 251).unwrap() ^ salt)
            .collect()
    }

    #[test]
    fn writes_across_chunk_edges_read_back() {
        let mut image = Image::zeroed(5 * 4096 + 512);
        let data = pattern(9000, 7);
        image.write(3000, &data);
        let mut back = vec![0; 9000];
        image.read(3000, &mut back);
        assert_eq!(back, data);
        let whole = image.to_vec();
        assert!(whole[..3000].iter().all(|&b| b == 0));
        assert_eq!(&whole[3000..12000], &data[..]);
        assert!(whole[12000..].iter().all(|&b| b == 0));
    }

    #[test]
    fn clones_do_not_see_later_writes() {
        let mut image = Image::from_bytes(&pattern(8192, 1));
        let snapshot = image.clone();
        image.write(100, &[0xAA; 10]);
        assert_eq!(snapshot.to_vec(), pattern(8192, 1));
        assert_eq!(image.to_vec()[100..110], [0xAA; 10]);
    }

    #[test]
    fn zeroing_drops_whole_chunks_and_clears_partial_ones() {
        let mut image = Image::from_bytes(&pattern(3 * 4096, 3));
        image.zero(2048, 4096 + 2048);
        let whole = image.to_vec();
        assert_eq!(&whole[..2048], &pattern(2048, 3)[..]);
        assert!(whole[2048..8192].iter().all(|&b| b == 0));
        assert_eq!(&whole[8192..], &pattern(3 * 4096, 3)[8192..]);
        assert!(image.chunks[1].is_none());
    }

    #[test]
    fn from_bytes_keeps_zero_chunks_absent_and_a_partial_tail() {
        let mut bytes = vec![0; 2 * 4096 + 512];
        bytes[2 * 4096 + 10] = 9;
        let image = Image::from_bytes(&bytes);
        assert_eq!(image.chunks.len(), 3);
        assert!(image.chunks[0].is_none() && image.chunks[1].is_none());
        assert_eq!(image.to_vec(), bytes);
    }

    #[test]
    fn growing_adds_zeros() {
        let mut image = Image::from_bytes(&[5; 512]);
        image.grow(4096 + 512);
        let whole = image.to_vec();
        assert_eq!(whole.len(), 4608);
        assert!(whole[..512].iter().all(|&b| b == 5));
        assert!(whole[512..].iter().all(|&b| b == 0));
    }

    #[test]
    #[should_panic(expected = "beyond its end")]
    fn access_past_the_end_panics() {
        let mut image = Image::zeroed(4096);
        image.write(4000, &[1; 200]);
    }
}
