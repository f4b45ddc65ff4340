//! Saving the whole index to its region at a clean shutdown, and loading it back.
//!
//! The save is one page stream (see the region module) at block 0 of the region, stamped with
//! the generation the engine gives:
//!
//! ```text
//! offset  size            field
//!      0     8            magic "uvdoidx1"
//!      8     8            version (1)
//!     16     8            sparse (0 or 1)
//!     24     8            memory_bytes of the config
//!     32     8            table slots
//!     40     8            chapters in the window
//!     48     8            records per chapter
//!     56     8            open chapter
//!     64     8            oldest live chapter
//!     72     8            records in the open chapter
//!     80    48            zero
//!    128  4 * slots       the table, shard after shard, u32 each
//!   then  dense:          per live chapter, oldest first: run count u64, runs u64 each
//!         sparse:         the open chapter's records: name bits u64, PBN u64
//! ```
//!
//! # Detection
//!
//! Each page carries the save generation, its page number and the page count, so a torn,
//! stale, misdirected or foreign page fails its check; the stream must end exactly where its
//! contents say; the header must match the config given to `load`; every slot must be in the
//! codec's range and every chapter's runs well formed. Any failure fails the whole load and
//! the engine starts with an empty index: the index holds advice, never data.

use parking_lot::RwLock;
use uvdo_format::SequenceNumber;

use crate::chapters::{Body, Chapters};
use crate::config::{BUCKET_SLOTS, Geometry, IndexConfig, SAVE_HEADER_BYTES, to_u64};
use crate::error::IndexError;
use crate::index::DedupeIndex;
use crate::region::{IndexRegion, PageReader, PageWriter};
use crate::runs::PbnRuns;
use crate::table::Shard;

const MAGIC: u64 = u64::from_le_bytes(*b"uvdoidx1");
const VERSION: u64 = 1;
const HEADER_FIELDS: usize = 10;
const HEADER_PAD_BYTES: usize = 128 - HEADER_FIELDS * 8;
const _: () = assert!(SAVE_HEADER_BYTES == 128);
const SLOTS_PER_CHUNK: usize = 1024;

impl DedupeIndex {
    /// Writes the whole index to its region as save `generation`, then flushes the store.
    ///
    /// Inserts wait while the save runs; call it at a clean shutdown.
    ///
    /// # Errors
    ///
    /// `NoRegion` for a memory-only index; `Io` when the store fails.
    pub fn save(&self, generation: SequenceNumber) -> Result<(), IndexError> {
        let region = self.region.as_ref().ok_or(IndexError::NoRegion)?;
        let shards: Vec<_> = self.shards.iter().map(RwLock::read).collect();
        let chapters = self.chapters.read();
        let g = &self.geometry;
        let body_bytes = match &chapters.body {
            Body::Dense { ring, .. } => (chapters.oldest..=chapters.open)
                .map(|c| 8 + to_u64(ring[ring_index(g, c)].raw().len()) * 8)
                .sum(),
            Body::Sparse { .. } => chapters.open_records * 16,
        };
        let bytes = SAVE_HEADER_BYTES + to_u64(g.slots()) * 4 + body_bytes;
        let mut writer = PageWriter::new(region, 0, generation, bytes);
        let header = [
            MAGIC,
            VERSION,
            u64::from(g.sparse),
            self.config.memory_bytes,
            to_u64(g.slots()),
            g.chapters,
            g.chapter_records,
            chapters.open,
            chapters.oldest,
            chapters.open_records,
        ];
        for field in header {
            writer.put_u64(field)?;
        }
        writer.put(&[0; HEADER_PAD_BYTES])?;
        let mut chunk = Vec::with_capacity(SLOTS_PER_CHUNK * 4);
        for shard in &shards {
            for slots in shard.slots.chunks(SLOTS_PER_CHUNK) {
                chunk.clear();
                chunk.extend(slots.iter().flat_map(|s| s.to_le_bytes()));
                writer.put(&chunk)?;
            }
        }
        match &chapters.body {
            Body::Dense { ring, .. } => {
                for chapter in chapters.oldest..=chapters.open {
                    let runs = ring[ring_index(g, chapter)].raw();
                    writer.put_u64(to_u64(runs.len()))?;
                    for &run in runs {
                        writer.put_u64(run)?;
                    }
                }
            }
            Body::Sparse { records, .. } => {
                for &(bits, pbn) in records {
                    writer.put_u64(bits)?;
                    writer.put_u64(pbn)?;
                }
            }
        }
        writer.finish(true)
    }

    /// Reads save `generation` back from `region`.
    ///
    /// # Errors
    ///
    /// Any damaged, stale, misdirected, foreign or missing page (`Page`), inconsistent
    /// contents (`Corrupt`), a save made with another config (`ConfigMismatch`), or a store
    /// failure (`Io`). The caller then starts with an empty index.
    pub fn load(
        config: IndexConfig,
        region: IndexRegion,
        generation: SequenceNumber,
    ) -> Result<Self, IndexError> {
        let geometry = config.geometry()?;
        region.check(geometry.disk_blocks())?;
        let mut reader = PageReader::open(&region, 0, generation, geometry.save_pages)?;
        let mut chapters = read_header(&mut reader, &config, &geometry, &region)?;
        let mut shards = Vec::with_capacity(geometry.shards);
        for _ in 0..geometry.shards {
            let slots = read_slots(&mut reader, &geometry)?;
            shards.push(RwLock::new(Shard::from_slots(slots)));
        }
        read_body(&mut reader, &geometry, &mut chapters)?;
        reader.finish()?;
        let index = Self::assemble(config, geometry, Some(region), shards, chapters);
        index.sweep_all();
        Ok(index)
    }
}

fn ring_index(geometry: &Geometry, chapter: u64) -> usize {
    crate::config::to_usize(chapter % geometry.chapters)
}

fn corrupt(structure: &'static str, expected: &'static str, found: u64) -> IndexError {
    IndexError::Corrupt {
        structure,
        expected,
        found,
    }
}

fn read_header(
    reader: &mut PageReader<'_>,
    config: &IndexConfig,
    g: &Geometry,
    region: &IndexRegion,
) -> Result<Chapters, IndexError> {
    let mut field = [0; HEADER_FIELDS];
    for value in &mut field {
        *value = reader.take_u64()?;
    }
    if field[0] != MAGIC {
        return Err(corrupt("magic", "uvdoidx1", field[0]));
    }
    if field[1] != VERSION {
        return Err(corrupt("version", "1", field[1]));
    }
    let wanted = [
        ("sparse", u64::from(g.sparse)),
        ("memory_bytes", config.memory_bytes),
        ("slots", to_u64(g.slots())),
        ("chapters", g.chapters),
        ("chapter records", g.chapter_records),
    ];
    for (i, (name, expected)) in wanted.into_iter().enumerate() {
        if field[2 + i] != expected {
            return Err(IndexError::ConfigMismatch {
                field: name,
                expected,
                found: field[2 + i],
            });
        }
    }
    let [open, oldest, open_records] = [field[7], field[8], field[9]];
    if oldest > open || open - oldest >= g.chapters {
        return Err(corrupt(
            "oldest chapter",
            "within the window of the open one",
            oldest,
        ));
    }
    if open_records > g.chapter_records {
        return Err(corrupt("open records", "at most a chapter", open_records));
    }
    let mut pad = [0; HEADER_PAD_BYTES];
    reader.take(&mut pad)?;
    if let Some(&byte) = pad.iter().find(|&&b| b != 0) {
        return Err(corrupt("header padding", "zero", u64::from(byte)));
    }
    let mut chapters = Chapters::new(g, Some(region));
    chapters.open = open;
    chapters.oldest = oldest;
    chapters.open_records = open_records;
    Ok(chapters)
}

fn read_slots(reader: &mut PageReader<'_>, g: &Geometry) -> Result<Vec<u32>, IndexError> {
    let count = g.buckets_per_shard * BUCKET_SLOTS;
    let mut bytes = vec![0; count * 4];
    reader.take(&mut bytes)?;
    let slots: Vec<u32> = bytes
        .chunks_exact(4)
        .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect();
    let max = g.codec.slot_max();
    if let Some(&bad) = slots.iter().find(|&&s| u64::from(s) > max) {
        return Err(corrupt(
            "table slot",
            "within the slot codec's range",
            u64::from(bad),
        ));
    }
    Ok(slots)
}

fn read_body(
    reader: &mut PageReader<'_>,
    g: &Geometry,
    chapters: &mut Chapters,
) -> Result<(), IndexError> {
    let (open, oldest, open_records) = (chapters.open, chapters.oldest, chapters.open_records);
    match &mut chapters.body {
        Body::Dense {
            ring,
            run_bytes,
            budget_bytes,
        } => {
            for chapter in oldest..=open {
                let records = if chapter == open {
                    open_records
                } else {
                    g.chapter_records
                };
                let count = reader.take_u64()?;
                if count > records {
                    return Err(corrupt("run count", "at most the chapter's records", count));
                }
                let mut runs = Vec::with_capacity(crate::config::to_usize(count));
                for _ in 0..count {
                    runs.push(reader.take_u64()?);
                }
                let runs = PbnRuns::from_raw(runs, records)
                    .ok_or_else(|| corrupt("runs", "starts increasing from 0", chapter))?;
                *run_bytes += runs.bytes();
                ring[ring_index(g, chapter)] = runs;
            }
            if *run_bytes > *budget_bytes + g.chapter_records * 8 {
                return Err(corrupt("run bytes", "within the run budget", *run_bytes));
            }
        }
        Body::Sparse {
            records, positions, ..
        } => {
            for position in 0..open_records {
                let bits = reader.take_u64()?;
                records.push((bits, reader.take_u64()?));
                positions.insert(bits, u32::try_from(position).expect("K fits u32"));
            }
        }
    }
    Ok(())
}
