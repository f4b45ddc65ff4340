//! What a workload runs against: the engine (`Volume`) or the raw store under it, through one
//! small interface, so both see the same offsets, data and threads.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use uvdo::Volume;
use uvdo_io::{IoError, Storage};

pub(crate) type BenchError = Box<dyn std::error::Error + Send + Sync>;

/// A block device as the benchmark sees it.
pub(crate) trait Target: Sync {
    fn write(&self, offset: u64, data: &[u8]) -> Result<(), BenchError>;
    fn read(&self, offset: u64, buf: &mut [u8]) -> Result<(), BenchError>;
    fn flush(&self) -> Result<(), BenchError>;
}

impl Target for Volume {
    fn write(&self, offset: u64, data: &[u8]) -> Result<(), BenchError> {
        Ok(Volume::write(self, offset, data, false)?)
    }

    fn read(&self, offset: u64, buf: &mut [u8]) -> Result<(), BenchError> {
        Ok(Volume::read(self, offset, buf)?)
    }

    fn flush(&self) -> Result<(), BenchError> {
        Ok(Volume::flush(self)?)
    }
}

/// The raw baseline: the store's own `write_at`/`read_at`/`flush` at the engine's offsets.
pub(crate) struct Raw(pub(crate) Arc<dyn Storage>);

impl Target for Raw {
    fn write(&self, offset: u64, data: &[u8]) -> Result<(), BenchError> {
        Ok(self.0.write_at(offset, data)?)
    }

    fn read(&self, offset: u64, buf: &mut [u8]) -> Result<(), BenchError> {
        Ok(self.0.read_at(offset, buf)?)
    }

    fn flush(&self) -> Result<(), BenchError> {
        Ok(self.0.flush()?)
    }
}

/// A store that counts what reaches it: the cross-check of the engine's own counters, and
/// the only way to see what `close` writes (the volume's stats are gone by then).
#[derive(Debug)]
pub(crate) struct CountingStore {
    inner: Arc<dyn Storage>,
    writes: AtomicU64,
    flushes: AtomicU64,
}

impl CountingStore {
    pub(crate) fn new(inner: Arc<dyn Storage>) -> Self {
        Self {
            inner,
            writes: AtomicU64::new(0),
            flushes: AtomicU64::new(0),
        }
    }

    /// 4 KiB-block writes and flushes so far.
    pub(crate) fn counts(&self) -> (u64, u64) {
        (
            self.writes.load(Ordering::Relaxed),
            self.flushes.load(Ordering::Relaxed),
        )
    }
}

impl Storage for CountingStore {
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<(), IoError> {
        self.inner.read_at(offset, buf)
    }

    fn write_at(&self, offset: u64, buf: &[u8]) -> Result<(), IoError> {
        self.writes
            .fetch_add(blocks_of(buf.len()), Ordering::Relaxed);
        self.inner.write_at(offset, buf)
    }

    fn write_at_fua(&self, offset: u64, buf: &[u8]) -> Result<(), IoError> {
        self.writes
            .fetch_add(blocks_of(buf.len()), Ordering::Relaxed);
        self.flushes.fetch_add(1, Ordering::Relaxed);
        self.inner.write_at_fua(offset, buf)
    }

    fn flush(&self) -> Result<(), IoError> {
        self.flushes.fetch_add(1, Ordering::Relaxed);
        self.inner.flush()
    }

    fn size_bytes(&self) -> u64 {
        self.inner.size_bytes()
    }
}

fn blocks_of(len: usize) -> u64 {
    (len as u64).div_ceil(uvdo_format::BLOCK_SIZE as u64)
}
