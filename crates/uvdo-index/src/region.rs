//! The on-disk area the engine gives the index, and streams of index pages within it.
//!
//! A stream is a run of [`IndexPage`]s at consecutive blocks of the region, all stamped with
//! one generation, each holding up to 4048 bytes of the stream. The save is one stream at the
//! start of the region; in sparse mode each chapter slot after it holds one stream whose
//! generation is the chapter number, so a page left from an earlier lap of the chapter ring is
//! stale and detected. The reader refuses a page that is damaged, stale, misdirected, foreign
//! or of another page count, and a stream that ends early or has bytes left over.

use std::sync::Arc;

use uvdo_format::index_page::{INDEX_PAGE_CAPACITY, IndexPage};
use uvdo_format::{BLOCK_SIZE, Block, Expected, Nonce, Pbn, SequenceNumber};
use uvdo_io::storage::Storage;

use crate::error::IndexError;

/// Pages written or read with one store call.
const BATCH_PAGES: usize = 64;

/// The PBN range of the volume's backing store that belongs to the index.
#[derive(Clone, Debug)]
pub struct IndexRegion {
    /// The backing store.
    pub store: Arc<dyn Storage>,
    /// First block of the region.
    pub start: Pbn,
    /// Blocks in the region.
    pub blocks: u64,
    /// The volume's nonce, stamped into every page.
    pub nonce: Nonce,
}

impl IndexRegion {
    /// Checks that the region holds `needed` blocks and that the store holds the region.
    pub(crate) fn check(&self, needed: u64) -> Result<(), IndexError> {
        if self.blocks < needed {
            return Err(IndexError::RegionTooSmall {
                needed,
                found: self.blocks,
            });
        }
        let store_blocks = self.store.size_bytes() / BLOCK_SIZE as u64;
        let available = store_blocks.saturating_sub(self.start.0);
        if available < self.blocks {
            return Err(IndexError::RegionTooSmall {
                needed: self.blocks,
                found: available,
            });
        }
        Ok(())
    }
}

/// Writes a stream of pages of known length.
pub(crate) struct PageWriter<'a> {
    region: &'a IndexRegion,
    first: u64,
    generation: SequenceNumber,
    page_count: u32,
    next_page: u32,
    data: Vec<u8>,
    batch: Vec<u8>,
    batch_first: u32,
}

impl<'a> PageWriter<'a> {
    /// A writer of `bytes` bytes at block `first` of the region.
    pub(crate) fn new(
        region: &'a IndexRegion,
        first: u64,
        generation: SequenceNumber,
        bytes: u64,
    ) -> Self {
        let pages = bytes.div_ceil(INDEX_PAGE_CAPACITY as u64).max(1);
        assert!(
            first + pages <= region.blocks,
            "index stream of {pages} pages at {first} overruns the region"
        );
        Self {
            region,
            first,
            generation,
            page_count: u32::try_from(pages).expect("index streams fit u32 pages"),
            next_page: 0,
            data: Vec::with_capacity(INDEX_PAGE_CAPACITY),
            batch: Vec::with_capacity(BATCH_PAGES * BLOCK_SIZE),
            batch_first: 0,
        }
    }

    pub(crate) fn put(&mut self, mut bytes: &[u8]) -> Result<(), IndexError> {
        while !bytes.is_empty() {
            let room = INDEX_PAGE_CAPACITY - self.data.len();
            let take = room.min(bytes.len());
            self.data.extend_from_slice(&bytes[..take]);
            bytes = &bytes[take..];
            if self.data.len() == INDEX_PAGE_CAPACITY {
                self.seal_page()?;
            }
        }
        Ok(())
    }

    pub(crate) fn put_u64(&mut self, value: u64) -> Result<(), IndexError> {
        self.put(&value.to_le_bytes())
    }

    fn seal_page(&mut self) -> Result<(), IndexError> {
        assert!(
            self.next_page < self.page_count,
            "index stream longer than its {} pages",
            self.page_count
        );
        let page = IndexPage {
            page_number: self.next_page,
            page_count: self.page_count,
            data: std::mem::take(&mut self.data),
        };
        let mut block: Block = [0; BLOCK_SIZE];
        let pbn = self.pbn(self.next_page);
        page.encode(self.region.nonce, pbn, self.generation, &mut block);
        self.data = page.data;
        self.data.clear();
        if self.batch.is_empty() {
            self.batch_first = self.next_page;
        }
        self.batch.extend_from_slice(&block);
        self.next_page += 1;
        if self.batch.len() == BATCH_PAGES * BLOCK_SIZE {
            self.write_batch()?;
        }
        Ok(())
    }

    fn pbn(&self, page: u32) -> Pbn {
        self.region.start.offset(self.first + u64::from(page))
    }

    fn write_batch(&mut self) -> Result<(), IndexError> {
        let pbn = self.pbn(self.batch_first);
        let result = self.region.store.write_at(pbn.byte_offset(), &self.batch);
        self.batch.clear();
        result.map_err(|source| IndexError::Io {
            what: "page write",
            pbn,
            source,
        })
    }

    /// Seals the last page, writes what is buffered and, if asked, flushes the store.
    pub(crate) fn finish(mut self, flush: bool) -> Result<(), IndexError> {
        if !self.data.is_empty() || self.next_page == 0 {
            self.seal_page()?;
        }
        assert_eq!(
            self.next_page, self.page_count,
            "index stream shorter than announced"
        );
        if !self.batch.is_empty() {
            self.write_batch()?;
        }
        if !flush {
            return Ok(());
        }
        let pbn = self.pbn(0);
        self.region.store.flush().map_err(|source| IndexError::Io {
            what: "flush",
            pbn,
            source,
        })
    }
}

/// Reads a stream of pages back, checking every page.
pub(crate) struct PageReader<'a> {
    region: &'a IndexRegion,
    first: u64,
    generation: SequenceNumber,
    page_count: u32,
    next_page: u32,
    data: Vec<u8>,
    used: usize,
}

impl<'a> PageReader<'a> {
    /// Opens the stream at block `first`, refusing one of more than `pages_max` pages.
    pub(crate) fn open(
        region: &'a IndexRegion,
        first: u64,
        generation: SequenceNumber,
        pages_max: u64,
    ) -> Result<Self, IndexError> {
        let mut reader = Self {
            region,
            first,
            generation,
            page_count: 1,
            next_page: 0,
            data: Vec::new(),
            used: 0,
        };
        let page = reader.read_page()?;
        if u64::from(page.page_count) > pages_max {
            return Err(IndexError::Corrupt {
                structure: "page count",
                expected: "at most the pages the config reserves",
                found: u64::from(page.page_count),
            });
        }
        reader.page_count = page.page_count;
        reader.data = page.data;
        Ok(reader)
    }

    fn read_page(&mut self) -> Result<IndexPage, IndexError> {
        let page_number = self.next_page;
        let pbn = self
            .region
            .start
            .offset(self.first + u64::from(page_number));
        let mut block: Block = [0; BLOCK_SIZE];
        self.region
            .store
            .read_at(pbn.byte_offset(), &mut block)
            .map_err(|source| IndexError::Io {
                what: "page read",
                pbn,
                source,
            })?;
        let expected = Expected::new(self.region.nonce, pbn);
        let page = IndexPage::decode(&block, expected, self.generation, page_number).map_err(
            |source| IndexError::Page {
                page: page_number,
                source,
            },
        )?;
        if page_number > 0 && page.page_count != self.page_count {
            return Err(IndexError::Corrupt {
                structure: "page count",
                expected: "the same in every page of a stream",
                found: u64::from(page.page_count),
            });
        }
        self.next_page += 1;
        Ok(page)
    }

    pub(crate) fn take(&mut self, out: &mut [u8]) -> Result<(), IndexError> {
        let mut filled = 0;
        while filled < out.len() {
            if self.used == self.data.len() {
                if self.next_page == self.page_count {
                    return Err(IndexError::Corrupt {
                        structure: "stream length",
                        expected: "more bytes in the last page",
                        found: u64::from(self.page_count),
                    });
                }
                self.data = self.read_page()?.data;
                self.used = 0;
            }
            let take = (self.data.len() - self.used).min(out.len() - filled);
            out[filled..filled + take].copy_from_slice(&self.data[self.used..self.used + take]);
            filled += take;
            self.used += take;
        }
        Ok(())
    }

    pub(crate) fn take_u64(&mut self) -> Result<u64, IndexError> {
        let mut bytes = [0; 8];
        self.take(&mut bytes)?;
        Ok(u64::from_le_bytes(bytes))
    }

    /// Checks that the whole stream was consumed.
    pub(crate) fn finish(self) -> Result<(), IndexError> {
        let left = (self.data.len() - self.used) as u64;
        if left > 0 || self.next_page != self.page_count {
            return Err(IndexError::Corrupt {
                structure: "stream length",
                expected: "no bytes or pages past the end",
                found: left + u64::from(self.page_count - self.next_page),
            });
        }
        Ok(())
    }
}
