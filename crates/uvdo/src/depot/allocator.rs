//! Where new blocks come from: a current slab and a cursor, so new data lands in long
//! sequential extents (SPEC section 10: unique random writes run at raw-file speed).
//!
//! Data: the first free block at or after the cursor in the current slab, wrapping to the
//! slab's start for blocks freed behind the cursor; when the current slab is full, the slab
//! with the most free blocks (the lowest number on a tie) becomes current, cursor at 0.
//!
//! Tree pairs (an even slab block number and the next, both free): the current slab from the
//! cursor first, so tree pages sit near the data that caused them, then the other slabs, most
//! free first. Tree pages are rare (one per 812 leaf entries), so the search may scan a slab.
//!
//! Unrecovered slabs (not yet scrubbed after a crash) are never chosen: their counts are not
//! known yet.
//!
//! The allocator only finds blocks; the depot reserves them. It never returns a block whose
//! live count is not 0, so a block freed by a decrement is reused only once the decrement is
//! journaled (`record` is what lowers the count).

use std::cmp::Reverse;

use super::slab::Slab;

/// The current slab and cursor.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Allocator {
    current: usize,
    cursor: u32,
}

/// The slab with the most free blocks, lowest number first on a tie; `None` when all are full.
fn emptiest(slabs: &[Slab]) -> Option<usize> {
    let (index, slab) = slabs
        .iter()
        .enumerate()
        .max_by_key(|(index, slab)| (slab.allocatable_free(), Reverse(*index)))?;
    (slab.allocatable_free() > 0).then_some(index)
}

/// The first free block at or after `from`, wrapping around.
fn free_from(counts: &[u8], from: u32) -> Option<u32> {
    let from = (from as usize).min(counts.len());
    let after = counts[from..]
        .iter()
        .position(|&c| c == 0)
        .map(|i| from + i);
    let found = after.or_else(|| counts[..from].iter().position(|&c| c == 0))?;
    Some(u32::try_from(found).expect("slab block numbers fit in u32"))
}

/// The first aligned free pair at or after `from` (rounded up to even), wrapping around.
fn pair_from(counts: &[u8], from: u32) -> Option<u32> {
    let first = (from as usize).div_ceil(2);
    let is_free = |pair: &[u8]| pair == [0, 0];
    let chunks = || counts.chunks_exact(2);
    let found = chunks()
        .skip(first)
        .position(is_free)
        .map(|i| first + i)
        .or_else(|| chunks().take(first).position(is_free))?;
    Some(u32::try_from(2 * found).expect("slab block numbers fit in u32"))
}

impl Allocator {
    /// Starts at the emptiest slab.
    pub(super) fn new(slabs: &[Slab]) -> Self {
        Self {
            current: emptiest(slabs).unwrap_or(0),
            cursor: 0,
        }
    }

    /// The slab index and block of the next free data block, or `None` when no block is free.
    pub(super) fn next_data(&mut self, slabs: &[Slab]) -> Option<(usize, u32)> {
        if slabs[self.current].allocatable_free() == 0 {
            self.current = emptiest(slabs)?;
            self.cursor = 0;
        }
        let counts = slabs[self.current].counts.live_counts();
        let block = free_from(counts, self.cursor).expect("the slab has a free block");
        self.cursor = block + 1;
        Some((self.current, block))
    }

    /// The slab index and even base block of a free aligned pair, or `None` when none is.
    pub(super) fn next_pair(&mut self, slabs: &[Slab]) -> Option<(usize, u32)> {
        let current = &slabs[self.current];
        let current_pair = (current.unrecovered.is_none())
            .then(|| pair_from(current.counts.live_counts(), self.cursor))
            .flatten();
        if let Some(base) = current_pair {
            if base == self.cursor {
                self.cursor += 2;
            }
            return Some((self.current, base));
        }
        let mut others: Vec<usize> = (0..slabs.len())
            .filter(|&i| i != self.current && slabs[i].allocatable_free() >= 2)
            .collect();
        others.sort_by_key(|&i| (Reverse(slabs[i].counts.free()), i));
        others.into_iter().find_map(|i| {
            let base = pair_from(slabs[i].counts.live_counts(), 0)?;
            Some((i, base))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn free_search_wraps_and_pairs_are_aligned() {
        assert_eq!(free_from(&[1, 0, 1, 1], 2), Some(1));
        assert_eq!(free_from(&[1, 0, 1, 0], 2), Some(3));
        assert_eq!(free_from(&[1, 1], 0), None);
        assert_eq!(free_from(&[1, 0], 2), Some(1));
        // 1..=2 is a free pair but not aligned.
        assert_eq!(pair_from(&[1, 0, 0, 1, 0, 0], 0), Some(4));
        assert_eq!(pair_from(&[0, 0, 1, 0, 0, 1], 1), Some(0));
        assert_eq!(pair_from(&[0, 0, 0], 2), Some(0));
        assert_eq!(pair_from(&[0, 1, 1, 0, 0], 0), None);
    }
}
