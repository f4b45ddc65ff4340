//! The chapter ring: which records are in the window, and where their PBNs are kept.
//!
//! Chapter `c` holds the records numbered `c * K .. (c + 1) * K`. The open chapter takes new
//! records; when it has no room the append closes it and opens the next one, and the chapter
//! `chapters` back leaves the window. In sparse mode records are numbered in arrival order,
//! and a closing chapter's records (name bits, PBN) are written to its slot on disk; only the
//! open chapter's records are in memory. In dense mode a record's position within its chapter
//! follows its PBN (see the chapter PBN module), each chapter's PBNs stay in memory, and the
//! oldest chapters are also dropped early when those outgrow their budget, which keeps memory
//! bounded whatever the PBN pattern.
//!
//! Invariants: `oldest <= open`, `open - oldest < chapters`, so live chapters map to distinct
//! ring slots; `open_records <= K` (dense: positions given out in the open chapter);
//! `appended` counts every append.

use std::collections::HashMap;

use uvdo_format::SequenceNumber;

use crate::config::{Geometry, RECORDS_PER_PAGE, to_usize};
use crate::dense_ring::DenseRing;
use crate::error::IndexError;
use crate::region::{IndexRegion, PageReader, PageWriter};

/// A sparse chapter's record: the name bits compared exactly, and the PBN.
pub(crate) type Record = (u64, u64);

#[derive(Debug)]
pub(crate) struct Chapters {
    pub(crate) open: u64,
    pub(crate) oldest: u64,
    pub(crate) open_records: u64,
    /// Records ever appended (inserts and refreshes).
    pub(crate) appended: u64,
    pub(crate) body: Body,
    pub(crate) chapter_records: u64,
    pub(crate) chapters: u64,
}

#[derive(Debug)]
pub(crate) enum Body {
    Dense(DenseRing),
    Sparse {
        records: Vec<Record>,
        positions: HashMap<u64, u32>,
        region: IndexRegion,
        first_block: u64,
        pages_per_chapter: u64,
    },
}

/// Where an append put its record, and what it changed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Appended {
    pub(crate) chapter: u64,
    pub(crate) position: u64,
    pub(crate) closed: bool,
    pub(crate) dropped: u64,
    pub(crate) write_failed: bool,
}

impl Chapters {
    pub(crate) fn new(geometry: &Geometry, region: Option<&IndexRegion>) -> Self {
        let body = if geometry.sparse {
            Body::Sparse {
                records: Vec::with_capacity(to_usize(geometry.chapter_records)),
                positions: HashMap::with_capacity(to_usize(geometry.chapter_records)),
                region: region.expect("sparse mode has a region").clone(),
                first_block: geometry.save_pages,
                pages_per_chapter: geometry.pages_per_chapter,
            }
        } else {
            Body::Dense(DenseRing::new(
                geometry.chapters,
                geometry.chapter_records,
                geometry.run_budget_bytes,
            ))
        };
        Self {
            open: 0,
            oldest: 0,
            open_records: 0,
            appended: 0,
            body,
            chapter_records: geometry.chapter_records,
            chapters: geometry.chapters,
        }
    }

    /// Appends a record to the open chapter, closing it first when it has no room. Dense: a
    /// `refresh` carries an old PBN, and the record must get a higher number than `after`
    /// (the newest record its name may have).
    pub(crate) fn append(
        &mut self,
        bits: u64,
        pbn: u64,
        (refresh, after): (bool, Option<u64>),
    ) -> Appended {
        let mut result = Appended {
            chapter: self.open,
            position: 0,
            closed: false,
            dropped: 0,
            write_failed: false,
        };
        let position = loop {
            match &mut self.body {
                Body::Dense(ring) => {
                    let k = self.chapter_records;
                    let after = after.filter(|&r| r / k == self.open).map(|r| r % k);
                    if let Some(position) = ring.add(pbn, refresh, after) {
                        self.open_records = ring.open_positions();
                        break position;
                    }
                }
                Body::Sparse {
                    records, positions, ..
                } => {
                    if self.open_records < self.chapter_records {
                        let position = self.open_records;
                        records.push((bits, pbn));
                        positions.insert(bits, u32::try_from(position).expect("K fits u32"));
                        self.open_records += 1;
                        break position;
                    }
                }
            }
            result.write_failed |= self.close().is_err();
            result.closed = true;
            result.dropped += self.drop_expired();
        };
        self.appended += 1;
        result.dropped += self.enforce_budget();
        result.chapter = self.open;
        result.position = position;
        result
    }

    /// Closes the open chapter (writing it out in sparse mode) and opens the next.
    fn close(&mut self) -> Result<(), IndexError> {
        let closing = self.open;
        let mut outcome = Ok(());
        match &mut self.body {
            Body::Dense(ring) => ring.close(closing, self.appended),
            Body::Sparse {
                records,
                positions,
                region,
                first_block,
                pages_per_chapter,
            } => {
                let first = *first_block + (closing % self.chapters) * *pages_per_chapter;
                outcome = write_chapter(region, first, closing, records);
                records.clear();
                positions.clear();
            }
        }
        self.open += 1;
        self.open_records = 0;
        outcome
    }

    /// Drops chapters the open one has pushed out of the ring.
    fn drop_expired(&mut self) -> u64 {
        let floor = (self.open + 1).saturating_sub(self.chapters);
        let mut dropped = 0;
        while self.oldest < floor {
            self.drop_oldest();
            dropped += 1;
        }
        dropped
    }

    fn drop_oldest(&mut self) {
        assert!(self.oldest < self.open, "dropping the open chapter");
        if let Body::Dense(ring) = &mut self.body {
            ring.drop_chapter(self.oldest);
        }
        self.oldest += 1;
    }

    /// Dense: drops the oldest chapters while the PBN maps are over budget.
    fn enforce_budget(&mut self) -> u64 {
        let mut dropped = 0;
        while let Body::Dense(ring) = &self.body {
            if !ring.over_budget() || self.oldest == self.open {
                break;
            }
            self.drop_oldest();
            dropped += 1;
        }
        dropped
    }

    /// The number of records appended before the oldest live chapter opened.
    pub(crate) fn oldest_record(&self) -> u64 {
        match &self.body {
            Body::Dense(ring) => ring.start(self.oldest),
            Body::Sparse { .. } => self.oldest * self.chapter_records,
        }
    }

    pub(crate) fn is_live(&self, chapter: u64) -> bool {
        (self.oldest..=self.open).contains(&chapter)
    }

    /// Dense: the PBN of record `position` of `chapter`, if the chapter is still live.
    pub(crate) fn resolve(&self, chapter: u64, position: u64) -> Option<u64> {
        let Body::Dense(ring) = &self.body else {
            return None;
        };
        if !self.is_live(chapter) {
            return None;
        }
        ring.resolve(chapter, self.open, position)
    }

    /// Sparse: the PBN of `bits` in the open chapter.
    pub(crate) fn find_open(&self, bits: u64) -> Option<u64> {
        let Body::Sparse {
            records, positions, ..
        } = &self.body
        else {
            return None;
        };
        let position = *positions.get(&bits)?;
        Some(records[position as usize].1)
    }

    /// Sparse: stops returning `pbn` for `bits` from the open chapter.
    pub(crate) fn forget_open(&mut self, bits: u64, pbn: u64) -> bool {
        if let Body::Sparse {
            positions, records, ..
        } = &mut self.body
            && let Some(&position) = positions.get(&bits)
            && records[position as usize].1 == pbn
        {
            positions.remove(&bits);
            return true;
        }
        false
    }

    /// Sparse: where closed chapters are, for reads without holding the ring lock.
    pub(crate) fn disk(&self) -> Option<ChapterDisk> {
        match &self.body {
            Body::Sparse {
                region,
                first_block,
                pages_per_chapter,
                ..
            } => Some(ChapterDisk {
                region: region.clone(),
                first_block: *first_block,
                pages_per_chapter: *pages_per_chapter,
                chapters: self.chapters,
                chapter_records: self.chapter_records,
            }),
            Body::Dense { .. } => None,
        }
    }

    /// Whether a refresh may append a record (see [`DenseRing::refresh_has_room`]).
    pub(crate) fn refresh_has_room(&self) -> bool {
        match &self.body {
            Body::Dense(ring) => ring.refresh_has_room(),
            Body::Sparse { .. } => true,
        }
    }

    /// Bytes of memory the ring holds.
    pub(crate) fn memory_bytes(&self) -> u64 {
        match &self.body {
            Body::Dense(ring) => ring.memory_bytes(),
            Body::Sparse {
                records, positions, ..
            } => records.capacity() as u64 * 16 + positions.capacity() as u64 * 24,
        }
    }
}

/// Where a sparse index keeps its closed chapters.
#[derive(Clone, Debug)]
pub(crate) struct ChapterDisk {
    region: IndexRegion,
    first_block: u64,
    pages_per_chapter: u64,
    chapters: u64,
    chapter_records: u64,
}

impl ChapterDisk {
    pub(crate) fn read(&self, chapter: u64) -> Result<Vec<Record>, IndexError> {
        let first = self.first_block + (chapter % self.chapters) * self.pages_per_chapter;
        read_chapter(
            &self.region,
            first,
            chapter,
            self.pages_per_chapter,
            self.chapter_records,
        )
    }
}

fn write_chapter(
    region: &IndexRegion,
    first: u64,
    chapter: u64,
    records: &[Record],
) -> Result<(), IndexError> {
    let bytes = records.len() as u64 * 16;
    debug_assert!(
        records.len() <= RECORDS_PER_PAGE * 1024,
        "chapter too large"
    );
    let mut writer = PageWriter::new(region, first, SequenceNumber(chapter), bytes);
    for &(bits, pbn) in records {
        writer.put_u64(bits)?;
        writer.put_u64(pbn)?;
    }
    // No flush: chapters are advice, and a save flushes them before it counts as clean.
    writer.finish(false)
}

fn read_chapter(
    region: &IndexRegion,
    first: u64,
    chapter: u64,
    pages: u64,
    records: u64,
) -> Result<Vec<Record>, IndexError> {
    let mut reader = PageReader::open(region, first, SequenceNumber(chapter), pages)?;
    let mut out = Vec::with_capacity(to_usize(records));
    for _ in 0..records {
        let bits = reader.take_u64()?;
        out.push((bits, reader.take_u64()?));
    }
    reader.finish()?;
    Ok(out)
}
