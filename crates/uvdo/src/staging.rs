//! New data blocks on their way to the store, written as runs instead of one by one.
//!
//! The depot allocates new blocks sequentially, so the blocks written in a short span of time
//! sit side by side. A write copies its block into the open run (a window of
//! [`RUN_BLOCKS`] aligned PBNs) and returns; the run goes to the store as one write per
//! stretch of filled blocks when a block outside its window arrives, when it is full, or when
//! the engine drains the staging before a flush: one system call for up to 64 blocks instead
//! of one each. (Writing runs with `O_DIRECT` was tried and dropped: it leaves the new data
//! out of the page cache, and random reads of it then went to the device at a quarter of the
//! speed, docs/BENCHMARKS.md.)
//!
//! Until its run's write has completed, a staged block is read from here: `read` answers for
//! it, and reads and dedupe verifies ask it first. A run whose write failed stays here, so
//! no read returns what the store holds instead (the engine is read-only by then).
//!
//! Invariants: a PBN is filled in at most one run here (`stage` waits for an older run
//! holding it to be written first, so runs never race for a block); `drain` returns only when
//! every block staged before it was called is written (or failed, which it reports).

use std::sync::Arc;

use parking_lot::{Condvar, Mutex};
use uvdo_format::{BLOCK_SIZE, Block, Pbn};
use uvdo_io::aligned::AlignedBuf;
use uvdo_io::{IoError, Storage};

/// Blocks in one run's window (256 KiB): one bit each in `Run::filled`.
pub(crate) const RUN_BLOCKS: u64 = 64;
/// Bytes of one run's buffer.
const RUN_BYTES: usize = 64 * BLOCK_SIZE;

/// A window of staged blocks.
#[derive(Debug)]
struct Run {
    /// The first PBN of the window (a multiple of [`RUN_BLOCKS`]).
    base: u64,
    data: AlignedBuf,
    /// Bit i: block `base + i` holds staged data.
    filled: u64,
}

impl Run {
    /// A run over the window at `base`, in `data` (a recycled buffer: only filled slots are
    /// ever read or written, so what it held before does not matter).
    fn new(base: u64, data: AlignedBuf) -> Self {
        Self {
            base,
            data,
            filled: 0,
        }
    }

    /// The block's slot in this window, if it is one of its PBNs.
    fn slot(&self, pbn: Pbn) -> Option<usize> {
        let slot = pbn.0.checked_sub(self.base).filter(|&s| s < RUN_BLOCKS)?;
        Some(usize::try_from(slot).expect("below RUN_BLOCKS"))
    }

    fn holds(&self, pbn: Pbn) -> Option<usize> {
        self.slot(pbn).filter(|&s| self.filled & (1 << s) != 0)
    }

    fn block(&self, slot: usize) -> &[u8] {
        &self.data[slot * BLOCK_SIZE..(slot + 1) * BLOCK_SIZE]
    }

    /// Writes every stretch of filled blocks, one store write each.
    fn write(&self, store: &dyn Storage) -> Result<(), IoError> {
        let mut slot = 0;
        while slot < RUN_BLOCKS {
            if self.filled & (1 << slot) == 0 {
                slot += 1;
                continue;
            }
            let end = (slot..RUN_BLOCKS)
                .find(|&s| self.filled & (1 << s) == 0)
                .unwrap_or(RUN_BLOCKS);
            let bytes = usize::try_from(slot).expect("small") * BLOCK_SIZE
                ..usize::try_from(end).expect("small") * BLOCK_SIZE;
            store.write_at(Pbn(self.base + slot).byte_offset(), &self.data[bytes])?;
            slot = end;
        }
        Ok(())
    }
}

#[derive(Debug, Default)]
struct Inner {
    /// The window being filled.
    open: Option<Run>,
    /// Runs taken out of `open` whose write has not completed (or failed), oldest first.
    leaving: Vec<Arc<Run>>,
    /// A run write failed: its run stays in `leaving` for reads, and drains report it.
    failed: Option<IoError>,
    /// Buffers of written runs, for the next ones (zeroing 256 KiB per run showed up in
    /// profiles).
    spare: Vec<AlignedBuf>,
}

/// Run buffers kept for reuse.
const SPARE_BUFFERS_MAX: usize = 4;

/// The staging of new data blocks (see the module doc).
#[derive(Debug, Default)]
pub(crate) struct Staging {
    inner: Mutex<Inner>,
    /// Signalled whenever a run leaves `leaving`.
    written: Condvar,
}

impl Staging {
    /// Stages `block` as the data of the newly allocated `pbn`. Writes the open run first
    /// when `pbn` is outside its window or the window is full after this block.
    ///
    /// # Errors
    ///
    /// The store's error writing a run (which stays staged, for reads).
    pub(crate) fn stage(
        &self,
        store: &dyn Storage,
        pbn: Pbn,
        block: &Block,
    ) -> Result<(), IoError> {
        let mut inner = self.inner.lock();
        // A block freed and allocated again while an older run holding it is being written:
        // let that write finish, so the newer data is the one that lands last.
        while inner.leaving.iter().any(|run| run.holds(pbn).is_some()) && inner.failed.is_none() {
            self.written.wait(&mut inner);
        }
        let mut full = None;
        if inner
            .open
            .as_ref()
            .is_some_and(|run| run.slot(pbn).is_none())
        {
            full = inner.open.take();
        }
        if inner.open.is_none() {
            let data = inner
                .spare
                .pop()
                .unwrap_or_else(|| AlignedBuf::zeroed(RUN_BYTES));
            inner.open = Some(Run::new(pbn.0 - pbn.0 % RUN_BLOCKS, data));
        }
        let run = inner.open.as_mut().expect("just opened");
        let slot = run.slot(pbn).expect("the open window holds pbn");
        run.data[slot * BLOCK_SIZE..(slot + 1) * BLOCK_SIZE].copy_from_slice(block);
        run.filled |= 1 << slot;
        if full.is_none() && run.filled == u64::MAX {
            full = inner.open.take();
        }
        match full {
            Some(run) => self.write_run(store, inner, run),
            None => Ok(()),
        }
    }

    /// Copies `pbn`'s staged data into `out`; false when it is not staged (read the store).
    pub(crate) fn read(&self, pbn: Pbn, out: &mut [u8]) -> bool {
        let inner = self.inner.lock();
        let runs = inner
            .open
            .iter()
            .chain(inner.leaving.iter().rev().map(|r| &**r));
        for run in runs {
            if let Some(slot) = run.holds(pbn) {
                out.copy_from_slice(run.block(slot));
                return true;
            }
        }
        false
    }

    /// Writes everything staged, waiting for runs other threads are writing; on return every
    /// block staged before the call is in the store (not yet flushed).
    ///
    /// # Errors
    ///
    /// The error of a failed run write, now or earlier.
    pub(crate) fn drain(&self, store: &dyn Storage) -> Result<(), IoError> {
        let mut inner = self.inner.lock();
        if let Some(run) = inner.open.take() {
            self.write_run(store, inner, run)?;
            inner = self.inner.lock();
        }
        while inner.failed.is_none() && !inner.leaving.is_empty() {
            self.written.wait(&mut inner);
        }
        inner.failed.clone().map_or(Ok(()), Err)
    }

    /// Blocks staged and not yet written.
    #[cfg(test)]
    fn staged_blocks(&self) -> u32 {
        let inner = self.inner.lock();
        inner
            .open
            .iter()
            .chain(inner.leaving.iter().map(|r| &**r))
            .map(|run| run.filled.count_ones())
            .sum()
    }

    /// Writes `run` outside the lock, keeping it readable meanwhile.
    fn write_run(
        &self,
        store: &dyn Storage,
        mut inner: parking_lot::MutexGuard<'_, Inner>,
        run: Run,
    ) -> Result<(), IoError> {
        let run = Arc::new(run);
        inner.leaving.push(Arc::clone(&run));
        drop(inner);
        let written = run.write(store);
        let mut inner = self.inner.lock();
        match &written {
            Ok(()) => {
                inner.leaving.retain(|r| !Arc::ptr_eq(r, &run));
                // Readers only borrow runs under the lock: this is the last reference.
                if let Ok(run) = Arc::try_unwrap(run)
                    && inner.spare.len() < SPARE_BUFFERS_MAX
                {
                    inner.spare.push(run.data);
                }
            }
            Err(e) => {
                inner.failed.get_or_insert_with(|| e.clone());
            }
        }
        drop(inner);
        self.written.notify_all();
        written
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use uvdo_io::memory::MemoryStore;

    fn block(byte: u8) -> Block {
        [byte; BLOCK_SIZE]
    }

    fn stored(store: &MemoryStore, pbn: u64) -> u8 {
        let mut out = [0; BLOCK_SIZE];
        store.read_at(Pbn(pbn).byte_offset(), &mut out).unwrap();
        out[0]
    }

    #[test]
    fn staged_blocks_are_read_from_memory_until_drained() {
        let store = MemoryStore::new(1 << 20);
        let staging = Staging::default();
        staging.stage(&store, Pbn(3), &block(7)).unwrap();
        staging.stage(&store, Pbn(5), &block(9)).unwrap();
        let mut out = [0; BLOCK_SIZE];
        assert!(staging.read(Pbn(3), &mut out));
        assert_eq!(out[0], 7);
        assert!(!staging.read(Pbn(4), &mut out));
        assert_eq!(stored(&store, 3), 0, "not written before a drain");
        staging.drain(&store).unwrap();
        assert_eq!(
            (stored(&store, 3), stored(&store, 4), stored(&store, 5)),
            (7, 0, 9)
        );
        assert!(!staging.read(Pbn(3), &mut out));
        assert_eq!(staging.staged_blocks(), 0);
    }

    #[test]
    fn a_block_outside_the_window_writes_the_open_run() {
        let store = MemoryStore::new(1 << 20);
        let staging = Staging::default();
        staging.stage(&store, Pbn(1), &block(1)).unwrap();
        staging
            .stage(&store, Pbn(RUN_BLOCKS + 1), &block(2))
            .unwrap();
        assert_eq!(stored(&store, 1), 1);
        assert_eq!(stored(&store, RUN_BLOCKS + 1), 0);
        assert_eq!(staging.staged_blocks(), 1);
    }

    #[test]
    fn a_full_window_is_written_at_once() {
        let store = MemoryStore::new(1 << 20);
        let staging = Staging::default();
        for pbn in (RUN_BLOCKS..2 * RUN_BLOCKS).rev() {
            staging
                .stage(&store, Pbn(pbn), &block(pbn.to_le_bytes()[0]))
                .unwrap();
        }
        assert_eq!(staging.staged_blocks(), 0);
        for pbn in RUN_BLOCKS..2 * RUN_BLOCKS {
            assert_eq!(stored(&store, pbn), pbn.to_le_bytes()[0]);
        }
    }

    #[test]
    fn a_recycled_buffer_writes_only_its_new_blocks() {
        let store = MemoryStore::new(1 << 20);
        let staging = Staging::default();
        for pbn in 0..RUN_BLOCKS {
            staging.stage(&store, Pbn(pbn), &block(0xaa)).unwrap();
        }
        assert_eq!(staging.staged_blocks(), 0, "the full run went out");
        let next = 2 * RUN_BLOCKS + 5;
        staging.stage(&store, Pbn(next), &block(1)).unwrap();
        staging.drain(&store).unwrap();
        assert_eq!(stored(&store, next), 1);
        for pbn in (2 * RUN_BLOCKS..3 * RUN_BLOCKS).filter(|&p| p != next) {
            assert_eq!(
                stored(&store, pbn),
                0,
                "pbn {pbn}: old buffer contents written"
            );
        }
    }

    #[test]
    fn restaging_a_block_keeps_the_newest_data() {
        let store = MemoryStore::new(1 << 20);
        let staging = Staging::default();
        staging.stage(&store, Pbn(2), &block(1)).unwrap();
        staging.stage(&store, Pbn(2), &block(2)).unwrap();
        let mut out = [0; BLOCK_SIZE];
        assert!(staging.read(Pbn(2), &mut out));
        assert_eq!(out[0], 2);
        staging.drain(&store).unwrap();
        assert_eq!(stored(&store, 2), 2);
    }

    #[test]
    fn concurrent_stagers_lose_nothing() {
        let store = Arc::new(MemoryStore::new(8 << 20));
        let staging = Arc::new(Staging::default());
        let next = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let (store, staging, next) = (store.clone(), staging.clone(), next.clone());
                std::thread::spawn(move || {
                    loop {
                        let pbn = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        if pbn >= 1000 {
                            return;
                        }
                        staging
                            .stage(&*store, Pbn(pbn), &block((pbn % 251) as u8 + 1))
                            .unwrap();
                        let mut out = [0; BLOCK_SIZE];
                        let staged = staging.read(Pbn(pbn), &mut out);
                        if !staged {
                            store.read_at(Pbn(pbn).byte_offset(), &mut out).unwrap();
                        }
                        assert_eq!(out[0], (pbn % 251) as u8 + 1);
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        staging.drain(&*store).unwrap();
        for pbn in 0..1000 {
            assert_eq!(stored(&store, pbn), (pbn % 251) as u8 + 1, "pbn {pbn}");
        }
    }
}
