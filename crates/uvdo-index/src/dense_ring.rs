//! The dense chapters' PBNs: one map per chapter of the ring (see the chapter PBN module),
//! the open chapter's being the one records are added to.
//!
//! The maps of all live chapters share a budget of bytes; the chapter ring drops its oldest
//! chapters while they are over it, so memory stays bounded whatever the PBN pattern (inserts
//! in PBN order, however interleaved, cost about a run per block of positions; a refresh or a
//! PBN seen twice in a chapter costs an exception).
//!
//! Invariants: `bytes` is the sum of the live chapters' bytes; `units` the sum of their runs
//! and exceptions, which unlike `bytes` is the same after a save and load.

use crate::chapter_pbns::{ClosedPbns, OpenPbns, PbnsCorrupt, UNIT_BYTES, block_positions};
use crate::config::{DENSE_RING_BYTES_PER_CHAPTER, to_u64, to_usize};

#[derive(Debug)]
pub(crate) struct DenseRing {
    /// Closed chapters by ring slot; the open chapter's slot is empty.
    closed: Vec<ClosedPbns>,
    open: OpenPbns,
    /// Records appended before each live chapter opened, by ring slot.
    starts: Vec<u64>,
    bytes: u64,
    units: u64,
    budget_bytes: u64,
    block_positions: u64,
}

impl DenseRing {
    pub(crate) fn new(chapters: u64, chapter_records: u64, budget_bytes: u64) -> Self {
        let open = OpenPbns::new(chapter_records);
        Self {
            closed: vec![ClosedPbns::default(); to_usize(chapters)],
            bytes: open.bytes(),
            open,
            starts: vec![0; to_usize(chapters)],
            units: 0,
            budget_bytes,
            block_positions: block_positions(chapter_records),
        }
    }

    fn slot(&self, chapter: u64) -> usize {
        to_usize(chapter % to_u64(self.closed.len()))
    }

    /// Adds a record of `pbn` to the open chapter (after position `after` of it, if given);
    /// its position, or None when it is full (see [`OpenPbns::add`]).
    pub(crate) fn add(&mut self, pbn: u64, refresh: bool, after: Option<u64>) -> Option<u64> {
        let before = (self.open.bytes(), self.open.units());
        let position = self.open.add(pbn, refresh, after)?;
        self.bytes = self.bytes + self.open.bytes() - before.0;
        self.units = self.units + self.open.units() - before.1;
        Some(position)
    }

    /// Positions the open chapter has given out.
    pub(crate) fn open_positions(&self) -> u64 {
        self.open.positions()
    }

    /// Closes chapter `closing` (the open one); `appended` records came before `closing + 1`.
    pub(crate) fn close(&mut self, closing: u64, appended: u64) {
        let before = self.open.bytes();
        let closed = self.open.close();
        self.bytes = self.bytes + self.open.bytes() + closed.bytes() - before;
        let slot = self.slot(closing);
        self.closed[slot] = closed;
        let next = self.slot(closing + 1);
        self.starts[next] = appended;
    }

    /// Forgets chapter `chapter` (the oldest, closed).
    pub(crate) fn drop_chapter(&mut self, chapter: u64) {
        let slot = self.slot(chapter);
        let gone = std::mem::take(&mut self.closed[slot]);
        self.bytes -= gone.bytes();
        self.units -= gone.units();
    }

    pub(crate) fn over_budget(&self) -> bool {
        self.bytes > self.budget_bytes
    }

    /// Whether a refresh may add an exception: refreshes stop while the maps hold more than
    /// half their budget, rather than push the oldest chapters out of the window.
    pub(crate) fn refresh_has_room(&self) -> bool {
        (self.units + 4) * UNIT_BYTES <= self.budget_bytes / 2
    }

    /// The PBN at `position` of live chapter `chapter` (`open` being the open one).
    pub(crate) fn resolve(&self, chapter: u64, open: u64, position: u64) -> Option<u64> {
        if chapter == open {
            self.open.resolve(position)
        } else {
            self.closed[self.slot(chapter)].resolve(position, self.block_positions)
        }
    }

    /// Records appended before `chapter` (live) opened.
    pub(crate) fn start(&self, chapter: u64) -> u64 {
        self.starts[self.slot(chapter)]
    }

    /// Bytes held: the maps, and a pointer and a start per chapter.
    pub(crate) fn memory_bytes(&self) -> u64 {
        self.bytes + to_u64(self.closed.len()) * DENSE_RING_BYTES_PER_CHAPTER
    }

    /// Chapter `chapter` for a save: its start, its words, and for the open chapter its
    /// block tables.
    pub(crate) fn save_words(&self, chapter: u64, open: u64) -> (u64, Vec<u64>, Vec<u64>) {
        let start = self.start(chapter);
        if chapter == open {
            let (packed, tables) = self.open.to_words();
            return (start, packed.words().to_vec(), tables);
        }
        let words = self.closed[self.slot(chapter)].words().to_vec();
        (start, words, Vec::new())
    }

    /// Restores chapter `chapter` from a save (see [`DenseRing::save_words`]).
    pub(crate) fn load_chapter(
        &mut self,
        (chapter, open): (u64, u64),
        (start, words, tables): (u64, Vec<u64>, Vec<u64>),
        chapter_records: u64,
    ) -> Result<(), PbnsCorrupt> {
        let blocks_max = chapter_records / self.block_positions;
        let slot = self.slot(chapter);
        self.starts[slot] = start;
        let closed = ClosedPbns::from_words(words, blocks_max)?;
        if chapter != open {
            self.bytes += closed.bytes();
            self.units += closed.units();
            self.closed[slot] = closed;
            return Ok(());
        }
        let before = self.open.bytes();
        self.open = OpenPbns::from_words(chapter_records, &closed, &tables)?;
        self.bytes = self.bytes + self.open.bytes() - before;
        self.units += self.open.units();
        Ok(())
    }

    /// Whether the maps fit what a save of this geometry may hold.
    pub(crate) fn within(&self, bytes_max: u64) -> bool {
        self.bytes <= bytes_max
    }
}
