//! Opening a backing store by path, choosing the I/O engine.
//!
//! `Engine::Auto` uses io_uring where the kernel offers it and the file store otherwise; it
//! logs nothing, but the [`OpenedStore`] says which engine it chose and why it fell back, for
//! the caller to log and show in status.

use std::path::Path;
use std::sync::Arc;

use crate::error::IoError;
use crate::file::{FileOptions, FileStore};
use crate::storage::Storage;
use crate::uring::{self, UringStore};

/// Which I/O engine to use.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Engine {
    /// io_uring if available, else the file store.
    #[default]
    Auto,
    /// io_uring; opening fails where it is unavailable.
    Uring,
    /// `pread`/`pwrite`.
    File,
}

/// How to open a backing store.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct OpenOptions {
    /// The I/O engine.
    pub engine: Engine,
    /// Bypass the page cache (`O_DIRECT`).
    pub direct: bool,
    /// Refuse writes.
    pub read_only: bool,
    /// Create a new sparse file of this size (fails if the path exists).
    pub create_size: Option<u64>,
}

impl OpenOptions {
    fn file_options(&self) -> FileOptions {
        FileOptions {
            direct: self.direct,
            read_only: self.read_only,
            create_size: self.create_size,
        }
    }
}

/// The engine an [`OpenedStore`] uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EngineUsed {
    /// io_uring.
    Uring,
    /// `pread`/`pwrite`.
    File,
}

#[derive(Debug)]
enum Backend {
    File(FileStore),
    // Boxed: the ring is large and inline.
    Uring(Box<UringStore>),
}

/// A store opened by [`open`], which knows which engine it runs on.
#[derive(Debug)]
pub struct OpenedStore {
    backend: Backend,
    uring_unavailable: Option<String>,
}

impl OpenedStore {
    /// The engine in use.
    #[must_use]
    pub fn engine(&self) -> EngineUsed {
        match self.backend {
            Backend::File(_) => EngineUsed::File,
            Backend::Uring(_) => EngineUsed::Uring,
        }
    }

    /// Why `Engine::Auto` fell back to the file store, if it did.
    #[must_use]
    pub fn uring_unavailable(&self) -> Option<&str> {
        self.uring_unavailable.as_deref()
    }

    /// One line for logs and status, e.g. `io_uring, O_DIRECT`.
    #[must_use]
    pub fn describe(&self) -> String {
        let (engine, file) = match &self.backend {
            Backend::File(store) => ("pread/pwrite", store),
            Backend::Uring(store) => ("io_uring", store.file_store()),
        };
        let mut line = engine.to_owned();
        if file.is_direct() {
            line.push_str(", O_DIRECT");
        }
        if file.is_read_only() {
            line.push_str(", read-only");
        }
        if let Some(reason) = &self.uring_unavailable {
            line.push_str(&format!(" (io_uring unavailable: {reason})"));
        }
        line
    }

    fn store(&self) -> &dyn Storage {
        match &self.backend {
            Backend::File(store) => store,
            Backend::Uring(store) => &**store,
        }
    }
}

impl Storage for OpenedStore {
    fn volatile_write_cache(&self) -> Option<bool> {
        self.store().volatile_write_cache()
    }

    fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<(), IoError> {
        self.store().read_at(offset, buf)
    }

    fn write_at(&self, offset: u64, buf: &[u8]) -> Result<(), IoError> {
        self.store().write_at(offset, buf)
    }

    fn write_at_fua(&self, offset: u64, buf: &[u8]) -> Result<(), IoError> {
        self.store().write_at_fua(offset, buf)
    }

    fn flush(&self) -> Result<(), IoError> {
        self.store().flush()
    }

    fn size_bytes(&self) -> u64 {
        self.store().size_bytes()
    }

    fn discard(&self, offset: u64, len: u64) -> Result<(), IoError> {
        self.store().discard(offset, len)
    }

    fn resize(&self, size_bytes: u64) -> Result<(), IoError> {
        self.store().resize(size_bytes)
    }
}

/// Opens the store at `path` with the engine `opts` asks for.
///
/// # Errors
///
/// As [`FileStore::open`]; with `Engine::Uring`, also when io_uring is unavailable.
pub fn open(path: &Path, opts: &OpenOptions) -> Result<OpenedStore, IoError> {
    let file_opts = opts.file_options();
    let uring_unavailable = match opts.engine {
        Engine::File => None,
        Engine::Uring => {
            return Ok(OpenedStore {
                backend: Backend::Uring(Box::new(UringStore::open(path, &file_opts)?)),
                uring_unavailable: None,
            });
        }
        Engine::Auto => match uring::probe() {
            Ok(()) => {
                return Ok(OpenedStore {
                    backend: Backend::Uring(Box::new(UringStore::open(path, &file_opts)?)),
                    uring_unavailable: None,
                });
            }
            Err(IoError::Device { source, .. }) => Some(source.to_string()),
            Err(other) => Some(other.to_string()),
        },
    };
    Ok(OpenedStore {
        backend: Backend::File(FileStore::open(path, &file_opts)?),
        uring_unavailable,
    })
}

/// Opens the store at `path` as a shared [`Storage`]; [`open`] also tells which engine.
///
/// # Errors
///
/// As [`open`].
pub fn open_store(path: &Path, opts: &OpenOptions) -> Result<Arc<dyn Storage>, IoError> {
    Ok(Arc::new(open(path, opts)?))
}
