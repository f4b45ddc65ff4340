//! The PBNs of one dense chapter, by blocks of positions.
//!
//! A chapter's `K` positions are cut into blocks of `B`. An aligned block stands for the `B`
//! PBNs `range * B .. (range + 1) * B` and holds PBN `p` at position `block * B + p % B`. A
//! new record goes to the open chapter's block for its PBN's range when there is one and that
//! position is free, else to a new aligned block: writers whose inserts interleave, or come a
//! little out of PBN order, fill blocks with no cost per record. Aligned blocks given out one
//! after the other for consecutive ranges form one run, so a chapter of sequential PBNs is a
//! single run whatever the order within it. A refresh (its PBN is old) or a record whose
//! position is taken (the same PBN twice in a chapter) goes to an exception block instead,
//! whose positions are in arrival order and whose PBNs are kept one by one.
//!
//! ```text
//! run          u64: first block (low 16 bits), range (high 48 bits); a run covers blocks up
//!              to the next run's first, its block i standing for range + (i - first)
//! exception    u64: a PBN (0 for the positions of an exception block left unused)
//! closed chapter, packed in one slice of u64:
//!   word 0     runs r (low 32 bits), exception blocks e (high 32 bits)
//!   1..        the r runs by first block, then the e exception block numbers, two per word
//!              (low half first), then the exceptions, B per exception block in order
//! ```
//!
//! Positions never given out resolve to a PBN no entry points at, which is harmless.
//!
//! Invariants: runs strictly increase by first block; exception blocks strictly increase; a
//! block is aligned or an exception block, never both; PBNs are below [`PBN_LIMIT`].

use crate::config::{to_u64, to_usize};

/// Bytes of one run or exception.
pub(crate) const UNIT_BYTES: u64 = 8;
/// PBNs the map can hold (VDO's are 36 bits).
pub(crate) const PBN_LIMIT: u64 = 1 << 48;
const FIRST_BITS: u32 = 16;
const FIRST_MASK: u64 = (1 << FIRST_BITS) - 1;

/// Positions per block for chapters of `chapter_records` positions: at most 64 (one word of
/// free bits), at least 16 blocks a chapter.
pub(crate) fn block_positions(chapter_records: u64) -> u64 {
    (chapter_records / 16).clamp(1, 64)
}

/// Bytes of the open chapter's block tables (sized once, for every block).
pub(crate) fn open_table_bytes(chapter_records: u64) -> u64 {
    let blocks = chapter_records / block_positions(chapter_records);
    blocks * to_u64(8 + std::mem::size_of::<Aligned>() + 4)
}

/// An aligned block of the open chapter.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Aligned {
    range: u64,
    block: u32,
    /// Bit `i` set: position `block * B + i` is free.
    free: u64,
}

/// The open chapter's PBNs, and what a new record's position is.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct OpenPbns {
    block_positions: u64,
    blocks_max: u32,
    blocks: u32,
    runs: Vec<u64>,
    aligned: Vec<Aligned>,
    exception_blocks: Vec<u32>,
    exceptions: Vec<u64>,
}

/// A closed chapter's PBNs, packed (see the module doc).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct ClosedPbns {
    words: Box<[u64]>,
}

/// Why a saved chapter is refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct PbnsCorrupt(pub(crate) &'static str);

fn pack_run(first: u32, range: u64) -> u64 {
    (range << FIRST_BITS) | u64::from(first)
}

fn run_first(run: u64) -> u64 {
    run & FIRST_MASK
}

/// The PBN at `block`, `offset` of a chapter with `runs` and exceptions (`exception_block(i)`
/// the i-th of `exception_count` exception blocks).
fn resolve(
    (block, offset, positions): (u64, u64, u64),
    runs: &[u64],
    exception_count: usize,
    exception_block: impl Fn(usize) -> u64,
    exceptions: &[u64],
) -> Option<u64> {
    let (mut lo, mut hi) = (0, exception_count);
    while lo < hi {
        let mid = lo + (hi - lo) / 2;
        match exception_block(mid).cmp(&block) {
            std::cmp::Ordering::Less => lo = mid + 1,
            std::cmp::Ordering::Greater => hi = mid,
            std::cmp::Ordering::Equal => {
                let at = to_u64(mid) * positions + offset;
                return exceptions.get(to_usize(at)).copied();
            }
        }
    }
    let after = runs.partition_point(|&run| run_first(run) <= block);
    let run = runs[after.checked_sub(1)?];
    let range = (run >> FIRST_BITS) + (block - run_first(run));
    Some(range * positions + offset)
}

impl OpenPbns {
    pub(crate) fn new(chapter_records: u64) -> Self {
        let block_positions = block_positions(chapter_records);
        let blocks_max = u32::try_from(chapter_records / block_positions).expect("K < 2^32");
        let blocks = to_usize(u64::from(blocks_max));
        Self {
            block_positions,
            blocks_max,
            blocks: 0,
            runs: Vec::with_capacity(blocks),
            aligned: Vec::with_capacity(blocks),
            exception_blocks: Vec::with_capacity(blocks),
            exceptions: Vec::new(),
        }
    }

    /// The position of a new record of `pbn`, or None when the chapter has no block left for
    /// it. A refresh, or a record that must come after position `after` (a newer record of the
    /// same name must not sort before an older one), goes to an exception block, whose new
    /// positions follow every position given out so far.
    ///
    /// # Panics
    ///
    /// If `pbn` is 2^48 or more: an engine bug.
    pub(crate) fn add(&mut self, pbn: u64, refresh: bool, after: Option<u64>) -> Option<u64> {
        assert!(pbn < PBN_LIMIT, "pbn {pbn} beyond the index's 48-bit limit");
        let b = self.block_positions;
        let (range, offset) = (pbn / b, pbn % b);
        let follows = |position: u64| after.is_none_or(|after| position > after);
        if !refresh {
            // The newest blocks are the likeliest: a writer's next PBN is in its last block.
            if let Some(aligned) = self.aligned.iter_mut().rev().find(|a| a.range == range) {
                let position = u64::from(aligned.block) * b + offset;
                if aligned.free & (1 << offset) != 0 && follows(position) {
                    aligned.free &= !(1 << offset);
                    return Some(position);
                }
            } else {
                let block = self.new_block()?;
                self.aligned.push(Aligned {
                    range,
                    block,
                    free: !(1 << offset),
                });
                self.extend_runs(block, range);
                return Some(u64::from(block) * b + offset);
            }
        }
        let used = to_u64(self.exceptions.len()) % b;
        let block = match self.exception_blocks.last() {
            Some(&block) if used != 0 && follows(u64::from(block) * b + used) => block,
            _ => {
                let block = self.new_block()?;
                // A block left part empty is padded, so exception i stays at position i.
                let padding = if used == 0 { 0 } else { b - used };
                self.exceptions.extend((0..padding).map(|_| 0));
                self.exception_blocks.push(block);
                block
            }
        };
        let position = u64::from(block) * b + to_u64(self.exceptions.len()) % b;
        self.exceptions.push(pbn);
        Some(position)
    }

    fn new_block(&mut self) -> Option<u32> {
        (self.blocks < self.blocks_max).then(|| {
            self.blocks += 1;
            self.blocks - 1
        })
    }

    fn extend_runs(&mut self, block: u32, range: u64) {
        if let Some(&last) = self.runs.last() {
            let expected = (last >> FIRST_BITS) + (u64::from(block) - run_first(last));
            if expected == range {
                return;
            }
        }
        self.runs.push(pack_run(block, range));
    }

    /// The PBN at `position`, if its block was given out.
    pub(crate) fn resolve(&self, position: u64) -> Option<u64> {
        let b = self.block_positions;
        if position >= u64::from(self.blocks) * b {
            return None;
        }
        let blocks = &self.exception_blocks;
        resolve(
            (position / b, position % b, b),
            &self.runs,
            blocks.len(),
            |i| u64::from(blocks[i]),
            &self.exceptions,
        )
    }

    /// Positions given out so far (whole blocks).
    pub(crate) fn positions(&self) -> u64 {
        u64::from(self.blocks) * self.block_positions
    }

    /// Runs and exceptions held.
    pub(crate) fn units(&self) -> u64 {
        to_u64(self.runs.len() + self.exceptions.len())
    }

    /// Bytes held, the block tables included.
    pub(crate) fn bytes(&self) -> u64 {
        let tables = self.runs.capacity() * 8
            + self.aligned.capacity() * std::mem::size_of::<Aligned>()
            + self.exception_blocks.capacity() * 4;
        to_u64(tables) + to_u64(self.exceptions.capacity()) * UNIT_BYTES
    }

    /// Packs the chapter and empties this one for the next chapter.
    pub(crate) fn close(&mut self) -> ClosedPbns {
        let closed = ClosedPbns::pack(&self.runs, &self.exception_blocks, &self.exceptions);
        self.blocks = 0;
        self.runs.clear();
        self.aligned.clear();
        self.exception_blocks.clear();
        self.exceptions = Vec::new();
        closed
    }

    /// The open chapter for a save: as a closed chapter, and its block tables: the blocks
    /// given out, then for each aligned block its range, block and free bits.
    pub(crate) fn to_words(&self) -> (ClosedPbns, Vec<u64>) {
        let packed = ClosedPbns::pack(&self.runs, &self.exception_blocks, &self.exceptions);
        let mut tables = vec![u64::from(self.blocks)];
        for aligned in &self.aligned {
            tables.extend([aligned.range, u64::from(aligned.block), aligned.free]);
        }
        (packed, tables)
    }

    /// The open chapter read back from a save: `packed` as a closed chapter's words, `rest`
    /// the blocks given out and the aligned blocks.
    pub(crate) fn from_words(
        chapter_records: u64,
        packed: &ClosedPbns,
        rest: &[u64],
    ) -> Result<Self, PbnsCorrupt> {
        let mut open = Self::new(chapter_records);
        let (&blocks, aligned) = rest
            .split_first()
            .ok_or(PbnsCorrupt("open chapter blocks"))?;
        open.blocks = u32::try_from(blocks)
            .ok()
            .filter(|&b| b <= open.blocks_max)
            .ok_or(PbnsCorrupt("open chapter blocks"))?;
        let (runs, exception_blocks, exceptions) = packed.parts();
        let in_range = |block: u64| block < blocks;
        let runs_ok = runs.iter().all(|&r| in_range(run_first(r)));
        let blocks_ok = (0..exception_blocks).all(|i| in_range(packed.exception_block(i)));
        if !runs_ok || !blocks_ok || aligned.len() % 3 != 0 {
            return Err(PbnsCorrupt("open chapter blocks"));
        }
        open.runs.extend_from_slice(runs);
        open.exception_blocks.extend(
            (0..exception_blocks)
                .map(|i| u32::try_from(packed.exception_block(i)).expect("checked below blocks")),
        );
        open.exceptions.extend_from_slice(exceptions);
        for triple in aligned.chunks_exact(3) {
            let block = u32::try_from(triple[1])
                .ok()
                .filter(|&b| b < open.blocks)
                .ok_or(PbnsCorrupt("aligned block"))?;
            open.aligned.push(Aligned {
                range: triple[0],
                block,
                free: triple[2],
            });
        }
        Ok(open)
    }
}

impl ClosedPbns {
    fn pack(runs: &[u64], exception_blocks: &[u32], exceptions: &[u64]) -> Self {
        let mut words = Vec::with_capacity(
            1 + runs.len() + exception_blocks.len().div_ceil(2) + exceptions.len(),
        );
        words.push(to_u64(runs.len()) | to_u64(exception_blocks.len()) << 32);
        words.extend_from_slice(runs);
        words.extend(
            exception_blocks.chunks(2).map(|pair| {
                u64::from(pair[0]) | pair.get(1).map_or(0, |&high| u64::from(high) << 32)
            }),
        );
        words.extend_from_slice(exceptions);
        Self {
            words: words.into_boxed_slice(),
        }
    }

    /// Runs, exception block count, exceptions.
    fn parts(&self) -> (&[u64], usize, &[u64]) {
        let Some(&header) = self.words.first() else {
            return (&[], 0, &[]);
        };
        let runs = to_usize(header & 0xffff_ffff);
        let blocks = to_usize(header >> 32);
        let exceptions = 1 + runs + blocks.div_ceil(2);
        (&self.words[1..=runs], blocks, &self.words[exceptions..])
    }

    fn exception_block(&self, i: usize) -> u64 {
        let runs = to_usize(self.words[0] & 0xffff_ffff);
        (self.words[1 + runs + i / 2] >> (32 * (i % 2))) & 0xffff_ffff
    }

    /// The PBN at `position` (of a chapter with `block_positions` positions a block).
    pub(crate) fn resolve(&self, position: u64, block_positions: u64) -> Option<u64> {
        let (runs, blocks, exceptions) = self.parts();
        let b = block_positions;
        let at = (position / b, position % b, b);
        resolve(at, runs, blocks, |i| self.exception_block(i), exceptions)
    }

    pub(crate) fn units(&self) -> u64 {
        let (runs, _, exceptions) = self.parts();
        to_u64(runs.len() + exceptions.len())
    }

    /// Bytes held (the ring's pointer to them is charged per chapter).
    pub(crate) fn bytes(&self) -> u64 {
        to_u64(self.words.len()) * UNIT_BYTES
    }

    pub(crate) fn words(&self) -> &[u64] {
        &self.words
    }

    /// A chapter read back from a save, if well formed for `blocks_max` blocks.
    pub(crate) fn from_words(words: Vec<u64>, blocks_max: u64) -> Result<Self, PbnsCorrupt> {
        let header = *words.first().ok_or(PbnsCorrupt("chapter header"))?;
        let (runs, blocks) = (to_usize(header & 0xffff_ffff), to_usize(header >> 32));
        let fixed = 1 + runs + blocks.div_ceil(2);
        if words.len() < fixed || words.len() - fixed > blocks * to_usize(64) {
            return Err(PbnsCorrupt("chapter lengths"));
        }
        let closed = Self {
            words: words.into_boxed_slice(),
        };
        let (run_words, _, exceptions) = closed.parts();
        let runs_ok = run_words
            .windows(2)
            .all(|w| run_first(w[0]) < run_first(w[1]))
            && run_words.iter().all(|&r| run_first(r) < blocks_max);
        let exception_blocks: Vec<u64> = (0..blocks).map(|i| closed.exception_block(i)).collect();
        let blocks_ok = exception_blocks.windows(2).all(|w| w[0] < w[1])
            && exception_blocks.iter().all(|&b| b < blocks_max)
            && (blocks % 2 == 0 || closed.words[fixed - 1] >> 32 == 0);
        let pbns_ok = exceptions.iter().all(|&p| p < PBN_LIMIT)
            && run_words.iter().all(|&r| (r >> FIRST_BITS) < PBN_LIMIT);
        if !runs_ok || !blocks_ok || !pbns_ok {
            return Err(PbnsCorrupt("chapter runs or exceptions"));
        }
        Ok(closed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interleaved_and_reordered_writers_fill_blocks_without_runs() {
        let k = 1024;
        let b = block_positions(k);
        let mut open = OpenPbns::new(k);
        let mut placed = Vec::new();
        // Two writers, each slightly out of order, interleaved.
        for i in 0..200_u64 {
            for base in [1000, 50_000] {
                let pbn = base + (i ^ 1);
                placed.push((open.add(pbn, false, None).unwrap(), pbn));
            }
        }
        assert!(open.units() <= 8, "{} units", open.units());
        // A refresh and a repeated PBN go to exceptions.
        placed.push((open.add(7, true, None).unwrap(), 7));
        placed.push((open.add(1000, false, None).unwrap(), 1000));
        // A newer record of a name sorts after its older one.
        let (older, _) = placed[2];
        let newer = open.add(999, false, Some(older)).unwrap();
        assert!(newer > older);
        placed.push((newer, 999));
        for &(position, pbn) in &placed {
            assert_eq!(open.resolve(position), Some(pbn), "position {position}");
        }
        let (packed, tables) = open.to_words();
        let packed = ClosedPbns::from_words(packed.words().to_vec(), k / b).unwrap();
        let again = OpenPbns::from_words(k, &packed, &tables).unwrap();
        assert_eq!(again, open);
        let closed = open.close();
        for &(position, pbn) in &placed {
            assert_eq!(
                closed.resolve(position, b),
                Some(pbn),
                "position {position}"
            );
        }
        assert_eq!(
            ClosedPbns::from_words(closed.words().to_vec(), k / b),
            Ok(closed.clone())
        );
        assert!(ClosedPbns::from_words(vec![5], k / b).is_err());
        assert_eq!(open.positions(), 0);
    }

    #[test]
    fn a_full_chapter_refuses_new_blocks() {
        let mut open = OpenPbns::new(64);
        let b = block_positions(64);
        for i in 0..64 / b {
            assert!(open.add(i * 1000, false, None).is_some());
        }
        assert_eq!(open.add(999_999, false, None), None);
        assert_eq!(open.add(0, true, None), None);
        assert_eq!(open.add(1, false, None).map(|p| p % b), Some(1));
    }
}
