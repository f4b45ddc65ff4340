//! The memory of one dense shard: its delta lists laid end to end in one byte array.
//!
//! List `j` owns bytes `starts[j]..starts[j + 1]`: its image (see the list module), then zero
//! bytes up to the next list. The free bytes are thus spread between the lists; when a list
//! outgrows its allocation, the lists around it are moved to share out the free bytes of a
//! range of lists that has enough (as UDS's delta memory does), trying ranges of 3, 5, 9, ...
//! lists up to [`REACH_LISTS`] each side. Each rebalance spreads the free bytes of its range
//! evenly, so free space that one region gains flows to its neighbours over time. Only when
//! no range within reach has room must the caller make its list shorter (dropping its oldest
//! entries), so one store moves a bounded number of bytes.
//!
//! Invariants: `starts` never decreases, `starts[0] == 0`, the last start is the arena's size;
//! every byte of an allocation past its list's image is zero, so the image's length is found
//! from its last one bit; the guard bytes after the arena stay zero.

use crate::bits::{GUARD_BYTES, end_of_ones};

/// Lists each side of a growing list that a store may move.
pub(crate) const REACH_LISTS: usize = 1024;

#[derive(Debug)]
pub(crate) struct ListArena {
    data: Vec<u8>,
    starts: Vec<u32>,
}

/// Why an arena read back from a save is refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct ArenaCorrupt(pub(crate) &'static str);

impl ListArena {
    /// `lists` empty lists sharing `bytes` bytes evenly.
    pub(crate) fn new(bytes: usize, lists: usize) -> Self {
        assert!(lists > 0, "an arena holds at least one list");
        assert!(u32::try_from(bytes).is_ok(), "arena of {bytes} bytes");
        let starts = (0..=lists)
            .map(|j| u32::try_from(j * bytes / lists).expect("checked above"))
            .collect();
        Self {
            data: vec![0; bytes + GUARD_BYTES],
            starts,
        }
    }

    /// An arena read back from a save: `starts` (lists + 1 of them) and the arena's bytes.
    pub(crate) fn from_parts(starts: Vec<u32>, mut data: Vec<u8>) -> Result<Self, ArenaCorrupt> {
        let bytes = data.len();
        let well_formed = starts.len() >= 2
            && starts[0] == 0
            && starts.windows(2).all(|w| w[0] <= w[1])
            && starts.last().is_some_and(|&s| s as usize == bytes);
        if !well_formed {
            return Err(ArenaCorrupt("list starts"));
        }
        data.extend_from_slice(&[0; GUARD_BYTES]);
        Ok(Self { data, starts })
    }

    pub(crate) fn lists(&self) -> usize {
        self.starts.len() - 1
    }

    /// The arena's bytes, guard included (reads in range are always one load).
    pub(crate) fn data(&self) -> &[u8] {
        &self.data
    }

    /// The arena's bytes without the guard, and the list starts, for a save.
    pub(crate) fn parts(&self) -> (&[u32], &[u8]) {
        (&self.starts, &self.data[..self.data.len() - GUARD_BYTES])
    }

    /// Byte range of list `list`'s allocation.
    pub(crate) fn span(&self, list: usize) -> (usize, usize) {
        (self.starts[list] as usize, self.starts[list + 1] as usize)
    }

    /// Bit range of list `list`'s image.
    pub(crate) fn image_bits(&self, list: usize) -> (usize, usize) {
        let (start, end) = self.span(list);
        (start * 8, end_of_ones(&self.data, start, end))
    }

    fn image_bytes(&self, list: usize) -> usize {
        let (start, end) = self.image_bits(list);
        (end - start).div_ceil(8)
    }

    /// Bytes held, guard and bookkeeping included.
    pub(crate) fn memory_bytes(&self) -> usize {
        self.data.capacity() + self.starts.capacity() * 4
    }

    /// Bytes every arena of `bytes` bytes and `lists` lists holds.
    pub(crate) fn memory_bytes_for(bytes: usize, lists: usize) -> usize {
        bytes + GUARD_BYTES + (lists + 1) * 4
    }

    /// Replaces list `list`'s image with `image`; false when no range within reach has room.
    pub(crate) fn store(&mut self, list: usize, image: &[u8]) -> bool {
        debug_assert!(
            image.last().is_none_or(|&b| b != 0),
            "image ends in a zero byte"
        );
        let (start, end) = self.span(list);
        if image.len() <= end - start {
            let old = self.image_bytes(list);
            self.data[start..start + image.len()].copy_from_slice(image);
            if old > image.len() {
                self.data[start + image.len()..start + old].fill(0);
            }
            return true;
        }
        if !self.make_room(list, image.len()) {
            return false;
        }
        let (start, _) = self.span(list);
        self.data[start..start + image.len()].copy_from_slice(image);
        true
    }

    /// Rebalances the smallest range around `list` that fits `need` bytes for it.
    fn make_room(&mut self, list: usize, need: usize) -> bool {
        let last = self.lists() - 1;
        let mut reach = 1;
        loop {
            let (lo, hi) = (list.saturating_sub(reach), (list + reach).min(last));
            if self.rebalance(lo, hi, list, need) {
                return true;
            }
            if (lo == 0 && hi == last) || reach >= REACH_LISTS {
                return false;
            }
            reach = (reach * 2).min(REACH_LISTS);
        }
    }

    /// Moves lists `lo..=hi` so that `list` has `need` bytes and the free bytes of the range
    /// are shared evenly; `list`'s old image is dropped (its new one is written after). False,
    /// with nothing changed, when the range is too full.
    ///
    /// Lists moving left are moved first, in order, then lists moving right, in reverse
    /// order: either way a list lands only on bytes no list still to move occupies. The bytes
    /// a move vacates are zeroed at once, so a list's image is always followed by zeros up to
    /// the next list's start, and its length can be found again at any point.
    fn rebalance(&mut self, lo: usize, hi: usize, list: usize, need: usize) -> bool {
        let size = |arena: &Self, j: usize| {
            if j == list {
                need
            } else {
                arena.image_bytes(j)
            }
        };
        let region_start = self.starts[lo] as usize;
        let region = self.starts[hi + 1] as usize - region_start;
        let used: usize = (lo..=hi).map(|j| size(self, j)).sum();
        if used > region {
            return false;
        }
        let (share, extra) = (
            (region - used) / (hi - lo + 1),
            (region - used) % (hi - lo + 1),
        );
        let slot = |j: usize, bytes: usize| bytes + share + usize::from(j - lo < extra);
        let (start, _) = self.span(list);
        let old = self.image_bytes(list);
        self.data[start..start + old].fill(0);
        let mut at = region_start;
        for j in lo..=hi {
            let bytes = size(self, j);
            let from = self.starts[j] as usize;
            if at < from {
                if j != list {
                    self.data.copy_within(from..from + bytes, at);
                    self.data[(at + bytes).max(from)..from + bytes].fill(0);
                }
                self.starts[j] = to_u32(at);
            }
            at += slot(j, bytes);
        }
        let mut end = region_start + region;
        for j in (lo..=hi).rev() {
            let bytes = size(self, j);
            let from = self.starts[j] as usize;
            let to = end - slot(j, bytes);
            if to > from {
                if j != list {
                    self.data.copy_within(from..from + bytes, to);
                    self.data[from..(from + bytes).min(to)].fill(0);
                }
                self.starts[j] = to_u32(to);
            }
            end = to;
        }
        debug_assert_eq!(end, region_start);
        true
    }
}

fn to_u32(offset: usize) -> u32 {
    u32::try_from(offset).expect("within the arena")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn image(list: usize, len: usize) -> Vec<u8> {
        (0..len)
            .map(|i| u8::try_from((list * 7 + i) % 255 + 1).unwrap())
            .collect()
    }

    fn check(arena: &ListArena, lens: &[usize]) {
        for (list, &len) in lens.iter().enumerate() {
            let (start, end) = arena.span(list);
            assert!(end - start >= len, "list {list}");
            assert_eq!(&arena.data()[start..start + len], &image(list, len)[..]);
            assert!(arena.data()[start + len..end].iter().all(|&b| b == 0));
        }
    }

    #[test]
    fn lists_grow_into_their_neighbours_free_bytes_until_the_arena_is_full() {
        let mut arena = ListArena::new(1000, 10);
        let mut lens = vec![0; 10];
        for (list, len) in lens.iter_mut().enumerate() {
            *len = 60 + list;
            assert!(arena.store(list, &image(list, *len)));
        }
        check(&arena, &lens);
        lens[4] = 250;
        assert!(arena.store(4, &image(4, 250)));
        check(&arena, &lens);
        lens[0] = 150;
        assert!(arena.store(0, &image(0, 150)));
        lens[9] = 100;
        assert!(arena.store(9, &image(9, 100)));
        check(&arena, &lens);
        let free = 1000 - lens.iter().sum::<usize>();
        assert!(!arena.store(5, &image(5, lens[5] + free + 1)));
        check(&arena, &lens);
        lens[5] += free;
        assert!(arena.store(5, &image(5, lens[5])));
        check(&arena, &lens);
        lens[4] = 10;
        assert!(arena.store(4, &image(4, 10)));
        check(&arena, &lens);
        let (starts, data) = arena.parts();
        let copy = ListArena::from_parts(starts.to_vec(), data.to_vec()).unwrap();
        check(&copy, &lens);
        assert!(ListArena::from_parts(vec![0, 5, 3, 1000], data.to_vec()).is_err());
        assert!(ListArena::from_parts(vec![0, 999], data.to_vec()).is_err());
    }
}
