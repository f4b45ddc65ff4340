//! Saving the whole index to its region at a clean shutdown, and loading it back.
//!
//! The save is one page stream (see the region module) at block 0 of the region, stamped with
//! the generation the engine gives:
//!
//! ```text
//! offset  size            field
//!      0     8            magic "uvdoidx1"
//!      8     8            version (2)
//!     16     8            sparse (0 or 1)
//!     24     8            memory_bytes of the config
//!     32     8            table size: lists (dense) or slots (sparse), all shards
//!     40     8            chapters in the window
//!     48     8            records per chapter
//!     56     8            open chapter
//!     64     8            oldest live chapter
//!     72     8            records in the open chapter (dense: positions given out)
//!     80     8            records ever appended
//!     88    40            zero
//!    128                  the table, shard after shard:
//!                           dense:  list starts, (lists per shard + 1) u32 each, then
//!                                   the shard's arena bytes (see the list module)
//!                           sparse: slots, u32 each
//!   then  dense:          per live chapter, oldest first: records appended before it opened
//!                           u64, word count u64, its PBN map's words (see the chapter PBN
//!                           module); for the open chapter then a word count and its block
//!                           tables (blocks given out, then range, block, free bits of each
//!                           aligned block)
//!         sparse:         the open chapter's records: name bits u64, PBN u64
//! ```
//!
//! Version 1 (32-bit dense slots) is refused like any other version: the engine then starts
//! with an empty index.
//!
//! # Detection
//!
//! Each page carries the save generation, its page number and the page count, so a torn,
//! stale, misdirected or foreign page fails its check; the stream must end exactly where its
//! contents say; the header must match the config given to `load`; every sparse slot must be
//! in the codec's range, every dense list must decode exactly to its last one bit with its
//! records in order and below the record count, the list starts must be in order, and every
//! chapter's PBN map must be well formed and within the budget. Any failure fails the whole load and the engine starts
//! with an empty index: the index holds advice, never data.

use parking_lot::RwLock;
use uvdo_format::SequenceNumber;

use crate::chapters::{Body, Chapters};
use crate::config::{BUCKET_SLOTS, Geometry, IndexConfig, SAVE_HEADER_BYTES, TableShape, to_u64};
use crate::dense_shard::{DenseShard, ShardCorrupt};
use crate::error::IndexError;
use crate::index::{DedupeIndex, Table};
use crate::region::{IndexRegion, PageReader, PageWriter};
use crate::sizing::ListGeometry;
use crate::table::Shard;

const MAGIC: u64 = u64::from_le_bytes(*b"uvdoidx1");
const VERSION: u64 = 2;
const HEADER_FIELDS: usize = 11;
const HEADER_PAD_BYTES: usize = 128 - HEADER_FIELDS * 8;
const _: () = assert!(SAVE_HEADER_BYTES == 128);
const WORDS_PER_CHUNK: usize = 1024;

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
        let table = TableGuard::read(&self.table);
        let chapters = self.chapters.read();
        let g = &self.geometry;
        let dense_chapters: Vec<(u64, Vec<u64>, Vec<u64>)> = match &chapters.body {
            Body::Dense(ring) => (chapters.oldest..=chapters.open)
                .map(|c| ring.save_words(c, chapters.open))
                .collect(),
            Body::Sparse { .. } => Vec::new(),
        };
        let body_bytes = match &chapters.body {
            Body::Dense(_) => {
                dense_chapters
                    .iter()
                    .map(|(_, words, tables)| 16 + to_u64(words.len() + tables.len()) * 8)
                    .sum::<u64>()
                    + 8
            }
            Body::Sparse { .. } => chapters.open_records * 16,
        };
        let bytes = SAVE_HEADER_BYTES + table_bytes(g) + body_bytes;
        let mut writer = PageWriter::new(region, 0, generation, bytes);
        let header = [
            MAGIC,
            VERSION,
            u64::from(g.sparse),
            self.config.memory_bytes,
            table_size(g),
            g.chapters,
            g.chapter_records,
            chapters.open,
            chapters.oldest,
            chapters.open_records,
            chapters.appended,
        ];
        for field in header {
            writer.put_u64(field)?;
        }
        writer.put(&[0; HEADER_PAD_BYTES])?;
        table.write(&mut writer)?;
        match &chapters.body {
            Body::Dense(_) => {
                for (start, words, _) in &dense_chapters {
                    writer.put_u64(*start)?;
                    writer.put_u64(to_u64(words.len()))?;
                    for &word in words {
                        writer.put_u64(word)?;
                    }
                }
                let (_, _, tables) = dense_chapters.last().expect("the open chapter is live");
                writer.put_u64(to_u64(tables.len()))?;
                for &word in tables {
                    writer.put_u64(word)?;
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
        let now = chapters.open * geometry.chapter_records + chapters.open_records;
        let table = match &geometry.table {
            TableShape::Lists(lists) => read_lists(&mut reader, &geometry, lists, now)?,
            TableShape::Slots(_) => {
                let mut shards = Vec::with_capacity(geometry.shards);
                for _ in 0..geometry.shards {
                    let slots = read_slots(&mut reader, &geometry)?;
                    shards.push(RwLock::new(Shard::from_slots(slots)));
                }
                Table::Sparse(shards)
            }
        };
        read_body(&mut reader, &geometry, &mut chapters)?;
        reader.finish()?;
        let index = Self::assemble(config, geometry, Some(region), table, chapters);
        index.sweep_all();
        Ok(index)
    }
}

/// The table's shards, read-locked for a save.
enum TableGuard<'a> {
    Dense(Vec<parking_lot::RwLockReadGuard<'a, DenseShard>>),
    Sparse(Vec<parking_lot::RwLockReadGuard<'a, Shard>>),
}

impl<'a> TableGuard<'a> {
    fn read(table: &'a Table) -> Self {
        match table {
            Table::Dense(shards) => Self::Dense(shards.iter().map(RwLock::read).collect()),
            Table::Sparse(shards) => Self::Sparse(shards.iter().map(RwLock::read).collect()),
        }
    }

    fn write(&self, writer: &mut PageWriter<'_>) -> Result<(), IndexError> {
        let mut chunk = Vec::with_capacity(WORDS_PER_CHUNK * 4);
        match self {
            Self::Dense(shards) => {
                for shard in shards {
                    let (starts, data) = shard.parts();
                    for words in starts.chunks(WORDS_PER_CHUNK) {
                        chunk.clear();
                        chunk.extend(words.iter().flat_map(|s| s.to_le_bytes()));
                        writer.put(&chunk)?;
                    }
                    writer.put(data)?;
                }
            }
            Self::Sparse(shards) => {
                for shard in shards {
                    for slots in shard.slots.chunks(WORDS_PER_CHUNK) {
                        chunk.clear();
                        chunk.extend(slots.iter().flat_map(|s| s.to_le_bytes()));
                        writer.put(&chunk)?;
                    }
                }
            }
        }
        Ok(())
    }
}

/// The header's table size: lists (dense) or slots (sparse).
fn table_size(g: &Geometry) -> u64 {
    match &g.table {
        TableShape::Lists(lists) => to_u64(lists.lists_per_shard * g.shards),
        TableShape::Slots(_) => to_u64(g.slots()),
    }
}

/// Bytes of the saved table.
fn table_bytes(g: &Geometry) -> u64 {
    match &g.table {
        TableShape::Lists(lists) => {
            let per_shard = (lists.lists_per_shard + 1) * 4 + lists.arena_bytes;
            to_u64(per_shard * g.shards)
        }
        TableShape::Slots(_) => to_u64(g.slots()) * 4,
    }
}

fn read_lists(
    reader: &mut PageReader<'_>,
    g: &Geometry,
    lists: &ListGeometry,
    now: u64,
) -> Result<Table, IndexError> {
    let mut shards = Vec::with_capacity(g.shards);
    for _ in 0..g.shards {
        let mut bytes = vec![0; (lists.lists_per_shard + 1) * 4];
        reader.take(&mut bytes)?;
        let starts = bytes
            .chunks_exact(4)
            .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect();
        let mut data = vec![0; lists.arena_bytes];
        reader.take(&mut data)?;
        let shard = DenseShard::from_parts(lists, starts, data, now).map_err(|e| match e {
            ShardCorrupt::Arena(cause) => corrupt("dense list starts", cause.0, 0),
            ShardCorrupt::List { list, cause } => corrupt("dense list", cause.0, to_u64(list)),
        })?;
        shards.push(RwLock::new(shard));
    }
    Ok(Table::Dense(shards))
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
        return Err(corrupt("version", "2", field[1]));
    }
    let wanted = [
        ("sparse", u64::from(g.sparse)),
        ("memory_bytes", config.memory_bytes),
        ("table size", table_size(g)),
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
    let [open, oldest, open_records, appended] = [field[7], field[8], field[9], field[10]];
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
    chapters.appended = appended;
    Ok(chapters)
}

fn read_slots(reader: &mut PageReader<'_>, g: &Geometry) -> Result<Vec<u32>, IndexError> {
    let count = g.slot_geometry().buckets_per_shard * BUCKET_SLOTS;
    let mut bytes = vec![0; count * 4];
    reader.take(&mut bytes)?;
    let slots: Vec<u32> = bytes
        .chunks_exact(4)
        .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect();
    let max = g.slot_geometry().codec.slot_max();
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
        Body::Dense(ring) => {
            // A chapter holds at most a unit per position, and a few header words per block.
            let words_max = 2 * g.chapter_records + 2;
            let take_words = |reader: &mut PageReader<'_>| -> Result<Vec<u64>, IndexError> {
                let count = reader.take_u64()?;
                if count > words_max {
                    return Err(corrupt("chapter words", "at most two a record", count));
                }
                (0..count).map(|_| reader.take_u64()).collect()
            };
            let mut saved = Vec::new();
            for chapter in oldest..=open {
                let start = reader.take_u64()?;
                saved.push((chapter, start, take_words(reader)?));
            }
            let tables = take_words(reader)?;
            let mut last_start = 0;
            for (chapter, start, words) in saved {
                if start < last_start || start > chapters.appended {
                    return Err(corrupt(
                        "chapter start",
                        "in order, at most the records",
                        start,
                    ));
                }
                last_start = start;
                let tables = if chapter == open {
                    tables.clone()
                } else {
                    Vec::new()
                };
                ring.load_chapter((chapter, open), (start, words, tables), g.chapter_records)
                    .map_err(|e| corrupt("chapter PBNs", e.0, chapter))?;
            }
            if ring.open_positions() != open_records {
                return Err(corrupt(
                    "open records",
                    "the positions given out",
                    open_records,
                ));
            }
            if !ring.within(g.run_budget_bytes) {
                return Err(corrupt("chapter PBNs", "within the budget", open));
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

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use uvdo_format::{Nonce, Pbn};
    use uvdo_io::memory::MemoryStore;

    use super::*;

    #[test]
    fn a_save_of_version_1_is_refused_cleanly() {
        let config = IndexConfig {
            memory_bytes: 64 << 10,
            sparse: false,
        };
        let blocks = config.disk_blocks();
        let region = IndexRegion {
            store: Arc::new(MemoryStore::new(blocks * 4096)),
            start: Pbn(0),
            blocks,
            nonce: Nonce(7),
        };
        let index = DedupeIndex::new(config, Some(region.clone())).unwrap();
        index.insert(1, Pbn(5));
        index.save(SequenceNumber(3)).unwrap();
        assert!(DedupeIndex::load(config, region.clone(), SequenceNumber(3)).is_ok());
        // A save whose pages are sound but whose header says version 1 (32-bit dense slots).
        let mut writer = PageWriter::new(&region, 0, SequenceNumber(4), SAVE_HEADER_BYTES);
        for field in [MAGIC, 1, 0, config.memory_bytes] {
            writer.put_u64(field).unwrap();
        }
        writer.put(&[0; 128 - 32]).unwrap();
        writer.finish(true).unwrap();
        let result = DedupeIndex::load(config, region, SequenceNumber(4));
        assert!(
            matches!(
                result,
                Err(IndexError::Corrupt {
                    structure: "version",
                    found: 1,
                    ..
                })
            ),
            "{result:?}"
        );
    }
}
