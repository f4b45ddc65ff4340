//! A store over a regular file or a block device, with `pread`/`pwrite` and `fdatasync`.
//!
//! Every request is checked with [`check_range`] before it reaches the OS, and every OS error
//! comes back as [`IoError::Device`] naming the caller's operation, offset and length. Short
//! transfers and `EINTR` are retried until the request completes or fails.
//!
//! With `direct` (`O_DIRECT`) a request whose buffer address, offset or length is not a
//! multiple of 4096 goes through an [`AlignedBuf`] covering the enclosing 4 KiB blocks; a write
//! that covers only part of a block is a read-modify-write of that block. Such writes hold an
//! exclusive lock and aligned direct writes a shared one, so no write to the same block can
//! land between the read and the write.
//!
//! FUA is `pwritev2(RWF_DSYNC)`; where the kernel refuses the flag the store remembers it and
//! uses `pwrite` then `fdatasync`, which is correct but also makes earlier writes durable.
//!
//! The io_uring store reuses this store for opening, checking, bouncing, discard and resize,
//! passing its own transfer functions to [`FileStore::read_via`] and [`FileStore::write_via`].

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileExt, FileTypeExt, OpenOptionsExt};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use nix::fcntl::{FallocateFlags, fallocate};
use parking_lot::RwLock;
use uvdo_format::SECTOR_SIZE;

use crate::aligned::{ALIGNMENT_BYTES, AlignedBuf};
use crate::error::{IoError, IoOp};
use crate::storage::{Storage, check_range};

/// How to open a [`FileStore`] (and the io_uring store built on it).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FileOptions {
    /// Open with `O_DIRECT`, bypassing the page cache.
    pub direct: bool,
    /// Open read-only; writes, discards and resizes fail with `EROFS`.
    pub read_only: bool,
    /// Create a new sparse file of this size; opening fails if the path exists, so an existing
    /// volume is never truncated.
    pub create_size: Option<u64>,
}

/// What the store was opened on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FileKind {
    /// A regular file: discard punches holes, resize sets the length.
    RegularFile,
    /// A block device: size from `BLKGETSIZE64`, discard is `BLKDISCARD`, no resize.
    BlockDevice,
}

/// A raw transfer at a byte offset, as the file and io_uring stores implement it.
pub(crate) type ReadFn<'a> = dyn FnMut(u64, &mut [u8]) -> io::Result<()> + 'a;
/// A raw write at a byte offset (plain or FUA).
pub(crate) type WriteFn<'a> = dyn FnMut(u64, &[u8]) -> io::Result<()> + 'a;

mod ioctl {
    // BLKGETSIZE64 is _IOR(0x12, 114, size_t); size_t is 8 bytes on the 64-bit targets we build.
    nix::ioctl_read!(blkgetsize64, 0x12, 114, u64);
    // BLKDISCARD is declared _IO(0x12, 119) although it takes a pointer to [start, len].
    nix::ioctl_write_ptr_bad!(blkdiscard, nix::request_code_none!(0x12, 119), [u64; 2]);
}

/// A [`Storage`] over a regular file or a block device.
#[derive(Debug)]
pub struct FileStore {
    file: File,
    kind: FileKind,
    direct: bool,
    read_only: bool,
    size_bytes: AtomicU64,
    /// Shared by aligned direct writes, exclusive for read-modify-write bounces.
    rmw_lock: RwLock<()>,
    /// False once the kernel refused `RWF_DSYNC`.
    dsync_writes: AtomicBool,
    /// What the device under the path says about its write cache, read at open.
    write_cache: crate::write_cache::WriteCache,
}

impl FileStore {
    /// Opens (or, with `create_size`, creates) the store at `path`.
    ///
    /// # Errors
    ///
    /// `IoError::Device` with `op: Open` if the path cannot be opened or is neither a regular
    /// file nor a block device; `IoError::Misaligned` if `create_size` is not whole sectors.
    pub fn open(path: &Path, opts: &FileOptions) -> Result<Self, IoError> {
        if opts.read_only && opts.create_size.is_some() {
            return Err(open_error(io::Error::new(
                io::ErrorKind::InvalidInput,
                "a read-only store cannot be created",
            )));
        }
        if let Some(size) = opts.create_size {
            check_range(IoOp::Open, 0, size, u64::MAX)?;
            create_sparse(path, size).map_err(open_error)?;
            // The file is ours: do not leave it behind if it cannot be opened as asked (e.g.
            // O_DIRECT refused by the filesystem).
            return Self::open_existing(path, opts).inspect_err(|_| {
                let _ = std::fs::remove_file(path);
            });
        }
        Self::open_existing(path, opts)
    }

    fn open_existing(path: &Path, opts: &FileOptions) -> Result<Self, IoError> {
        let mut options = std::fs::OpenOptions::new();
        options.read(true).write(!opts.read_only);
        if opts.direct {
            options.custom_flags(libc::O_DIRECT);
        }
        let file = options.open(path).map_err(open_error)?;
        let meta = file.metadata().map_err(open_error)?;
        let (kind, size_bytes) = if meta.file_type().is_block_device() {
            (FileKind::BlockDevice, block_device_size(&file)?)
        } else if meta.is_file() {
            (FileKind::RegularFile, meta.len())
        } else {
            return Err(open_error(io::Error::new(
                io::ErrorKind::InvalidInput,
                "not a regular file or a block device",
            )));
        };
        Ok(Self {
            file,
            kind,
            direct: opts.direct,
            read_only: opts.read_only,
            // A trailing partial sector is not part of the store.
            size_bytes: AtomicU64::new(size_bytes - size_bytes % SECTOR_SIZE as u64),
            rmw_lock: RwLock::new(()),
            dsync_writes: AtomicBool::new(true),
            write_cache: crate::write_cache::detect_write_cache(path),
        })
    }

    /// What the device under the store's path says about its write cache.
    #[must_use]
    pub fn write_cache(&self) -> &crate::write_cache::WriteCache {
        &self.write_cache
    }

    /// What the store was opened on.
    #[must_use]
    pub fn kind(&self) -> FileKind {
        self.kind
    }

    /// Whether the store bypasses the page cache.
    #[must_use]
    pub fn is_direct(&self) -> bool {
        self.direct
    }

    /// Whether the store refuses writes.
    #[must_use]
    pub fn is_read_only(&self) -> bool {
        self.read_only
    }

    pub(crate) fn file(&self) -> &File {
        &self.file
    }

    /// Checks a read, bounces it if `O_DIRECT` needs that, and runs it with `raw`.
    pub(crate) fn read_via(
        &self,
        offset: u64,
        buf: &mut [u8],
        raw: &mut ReadFn<'_>,
    ) -> Result<(), IoError> {
        let len = buf.len() as u64;
        check_range(IoOp::Read, offset, len, self.size_bytes())?;
        let result = if self.needs_bounce(offset, buf.as_ptr(), buf.len()) {
            self.bounced_read(offset, buf, raw)
        } else {
            raw(offset, buf)
        };
        result.map_err(|source| device_error(IoOp::Read, offset, len, source))
    }

    /// Checks a write, bounces it if `O_DIRECT` needs that, and runs it with `write` (reading
    /// the rest of a partly written block with `read`).
    pub(crate) fn write_via(
        &self,
        offset: u64,
        buf: &[u8],
        read: &mut ReadFn<'_>,
        write: &mut WriteFn<'_>,
    ) -> Result<(), IoError> {
        let len = buf.len() as u64;
        self.check_writable(IoOp::Write, offset, len)?;
        check_range(IoOp::Write, offset, len, self.size_bytes())?;
        let result = if !self.direct {
            write(offset, buf)
        } else if self.needs_bounce(offset, buf.as_ptr(), buf.len()) {
            let _exclusive = self.rmw_lock.write();
            self.bounced_write(offset, buf, read, write)
        } else {
            let _shared = self.rmw_lock.read();
            write(offset, buf)
        };
        result.map_err(|source| device_error(IoOp::Write, offset, len, source))
    }

    /// `EROFS` for a read-only store.
    pub(crate) fn check_writable(&self, op: IoOp, offset: u64, len: u64) -> Result<(), IoError> {
        if self.read_only {
            return Err(IoError::from_errno(op, offset, len, libc::EROFS));
        }
        Ok(())
    }

    fn needs_bounce(&self, offset: u64, ptr: *const u8, len: usize) -> bool {
        self.direct
            && !(offset.is_multiple_of(ALIGNMENT_BYTES as u64)
                && len.is_multiple_of(ALIGNMENT_BYTES)
                && ptr.addr().is_multiple_of(ALIGNMENT_BYTES))
    }

    /// The aligned range covering `offset..offset + len`, cut at the store's end (which is
    /// whole sectors, so the result stays a valid buffer length).
    fn envelope(&self, offset: u64, len: u64) -> (u64, usize) {
        let align = ALIGNMENT_BYTES as u64;
        let start = offset - offset % align;
        let end = (offset + len).div_ceil(align) * align;
        let end = end.min(self.size_bytes());
        (start, to_usize(end - start))
    }

    fn bounced_read(&self, offset: u64, buf: &mut [u8], raw: &mut ReadFn<'_>) -> io::Result<()> {
        let (start, envelope_len) = self.envelope(offset, buf.len() as u64);
        let mut bounce = AlignedBuf::zeroed(envelope_len);
        raw(start, &mut bounce)?;
        let skip = to_usize(offset - start);
        buf.copy_from_slice(&bounce[skip..skip + buf.len()]);
        Ok(())
    }

    fn bounced_write(
        &self,
        offset: u64,
        buf: &[u8],
        read: &mut ReadFn<'_>,
        write: &mut WriteFn<'_>,
    ) -> io::Result<()> {
        let (start, envelope_len) = self.envelope(offset, buf.len() as u64);
        let mut bounce = AlignedBuf::zeroed(envelope_len);
        if envelope_len != buf.len() {
            read(start, &mut bounce)?;
        }
        let skip = to_usize(offset - start);
        bounce[skip..skip + buf.len()].copy_from_slice(buf);
        write(start, &bounce)
    }

    fn pread(&self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        // read_exact_at retries EINTR and short reads; EOF becomes UnexpectedEof.
        self.file.read_exact_at(buf, offset)
    }

    fn pwrite(&self, offset: u64, buf: &[u8]) -> io::Result<()> {
        self.file.write_all_at(buf, offset)
    }

    fn pwrite_fua(&self, offset: u64, buf: &[u8]) -> io::Result<()> {
        if self.dsync_writes.load(Ordering::Relaxed) {
            match pwrite_dsync(&self.file, offset, buf) {
                Err(e) if matches!(e.raw_os_error(), Some(libc::EOPNOTSUPP | libc::ENOSYS)) => {
                    self.dsync_writes.store(false, Ordering::Relaxed);
                }
                result => return result,
            }
        }
        self.pwrite(offset, buf)?;
        self.file.sync_data()
    }

    /// Discard and resize are the same for the io_uring store, which calls these.
    pub(crate) fn discard_range(&self, offset: u64, len: u64) -> Result<(), IoError> {
        self.check_writable(IoOp::Discard, offset, len)?;
        check_range(IoOp::Discard, offset, len, self.size_bytes())?;
        if len == 0 {
            return Ok(());
        }
        let result = match self.kind {
            FileKind::RegularFile => to_off(offset).and_then(|start| {
                let flags =
                    FallocateFlags::FALLOC_FL_PUNCH_HOLE | FallocateFlags::FALLOC_FL_KEEP_SIZE;
                fallocate(&self.file, flags, start, to_off(len)?).map_err(io::Error::from)
            }),
            FileKind::BlockDevice => {
                let range = [offset, len];
                // SAFETY: the descriptor is open for the call and `range` is a live [u64; 2],
                // which is what BLKDISCARD reads.
                unsafe { ioctl::blkdiscard(self.file.as_raw_fd(), &raw const range) }
                    .map(drop)
                    .map_err(io::Error::from)
            }
        };
        result.map_err(|source| device_error(IoOp::Discard, offset, len, source))
    }

    pub(crate) fn resize_to(&self, size_bytes: u64) -> Result<(), IoError> {
        if self.kind == FileKind::BlockDevice {
            return Err(IoError::Unsupported { op: IoOp::Resize });
        }
        self.check_writable(IoOp::Resize, size_bytes, 0)?;
        if !size_bytes.is_multiple_of(SECTOR_SIZE as u64) {
            return Err(IoError::Misaligned {
                op: IoOp::Resize,
                offset: size_bytes,
                len: 0,
            });
        }
        self.file
            .set_len(size_bytes)
            .map_err(|source| device_error(IoOp::Resize, size_bytes, 0, source))?;
        self.size_bytes.store(size_bytes, Ordering::Release);
        Ok(())
    }

    pub(crate) fn datasync(&self) -> Result<(), IoError> {
        self.file
            .sync_data()
            .map_err(|source| device_error(IoOp::Flush, 0, 0, source))
    }
}

impl Storage for FileStore {
    fn volatile_write_cache(&self) -> Option<bool> {
        match self.write_cache {
            crate::write_cache::WriteCache::WriteBack => Some(true),
            crate::write_cache::WriteCache::WriteThrough => Some(false),
            crate::write_cache::WriteCache::Unknown(_) => None,
        }
    }

    fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<(), IoError> {
        self.read_via(offset, buf, &mut |at, b| self.pread(at, b))
    }

    fn write_at(&self, offset: u64, buf: &[u8]) -> Result<(), IoError> {
        self.write_via(offset, buf, &mut |at, b| self.pread(at, b), &mut |at, b| {
            self.pwrite(at, b)
        })
    }

    fn write_at_fua(&self, offset: u64, buf: &[u8]) -> Result<(), IoError> {
        self.write_via(offset, buf, &mut |at, b| self.pread(at, b), &mut |at, b| {
            self.pwrite_fua(at, b)
        })
    }

    fn flush(&self) -> Result<(), IoError> {
        self.datasync()
    }

    fn size_bytes(&self) -> u64 {
        self.size_bytes.load(Ordering::Acquire)
    }

    fn discard(&self, offset: u64, len: u64) -> Result<(), IoError> {
        self.discard_range(offset, len)
    }

    fn resize(&self, size_bytes: u64) -> Result<(), IoError> {
        self.resize_to(size_bytes)
    }
}

/// `pwritev2(RWF_DSYNC)` until all of `buf` is written; each completed part is durable.
fn pwrite_dsync(file: &File, offset: u64, buf: &[u8]) -> io::Result<()> {
    let mut done = 0;
    while done < buf.len() {
        let rest = &buf[done..];
        let iov = libc::iovec {
            iov_base: rest.as_ptr().cast_mut().cast(),
            iov_len: rest.len(),
        };
        let at = to_off(offset + done as u64)?;
        // SAFETY: `iov` describes `rest`, which stays borrowed and unchanged for the call; the
        // kernel only reads through it, and the descriptor is open.
        let written =
            unsafe { libc::pwritev2(file.as_raw_fd(), &raw const iov, 1, at, libc::RWF_DSYNC) };
        match usize::try_from(written) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => done += n,
            Err(_) => {
                let error = io::Error::last_os_error();
                if error.kind() != io::ErrorKind::Interrupted {
                    return Err(error);
                }
            }
        }
    }
    Ok(())
}

/// Creates a new file of `size_bytes` with no blocks allocated; fails if `path` exists.
fn create_sparse(path: &Path, size_bytes: u64) -> io::Result<()> {
    let file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path)?;
    file.set_len(size_bytes).inspect_err(|_| {
        let _ = std::fs::remove_file(path);
    })
}

fn block_device_size(file: &File) -> Result<u64, IoError> {
    let mut size_bytes = 0_u64;
    // SAFETY: the descriptor is an open block device and `size_bytes` is a live u64, which is
    // what BLKGETSIZE64 writes.
    unsafe { ioctl::blkgetsize64(file.as_raw_fd(), &raw mut size_bytes) }
        .map_err(|errno| open_error(errno.into()))?;
    Ok(size_bytes)
}

fn to_off(value: u64) -> io::Result<libc::off_t> {
    libc::off_t::try_from(value).map_err(|_| io::ErrorKind::InvalidInput.into())
}

/// A length already checked against a store held in memory or mapped by the OS.
fn to_usize(value: u64) -> usize {
    usize::try_from(value).expect("checked range fits in usize")
}

pub(crate) fn device_error(op: IoOp, offset: u64, len: u64, source: io::Error) -> IoError {
    IoError::Device {
        op,
        offset,
        len,
        source,
    }
}

fn open_error(source: io::Error) -> IoError {
    device_error(IoOp::Open, 0, 0, source)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(dir: &tempfile::TempDir, size: u64, direct: bool) -> FileStore {
        let opts = FileOptions {
            direct,
            create_size: Some(size),
            ..FileOptions::default()
        };
        FileStore::open(&dir.path().join("store"), &opts).unwrap()
    }

    #[test]
    fn envelope_covers_whole_blocks_inside_the_store() {
        let dir = tempfile::tempdir().unwrap();
        let store = scratch(&dir, 3 * 4096 + 1024, false);
        assert_eq!(store.envelope(512, 512), (0, 4096));
        assert_eq!(store.envelope(4096, 4096), (4096, 4096));
        assert_eq!(store.envelope(3584, 1024), (0, 8192));
        // The last, partial block is cut at the store's end.
        assert_eq!(store.envelope(3 * 4096 + 512, 512), (3 * 4096, 1024));
    }

    #[test]
    fn bouncing_is_only_for_direct_and_misaligned() {
        let dir = tempfile::tempdir().unwrap();
        let buffered = scratch(&dir, 8192, false);
        let aligned = AlignedBuf::zeroed(4096);
        assert!(!buffered.needs_bounce(512, aligned.as_ptr(), 512));
        drop(buffered);
        std::fs::remove_file(dir.path().join("store")).unwrap();
        let Ok(direct) = FileStore::open(
            &dir.path().join("store"),
            &FileOptions {
                direct: true,
                create_size: Some(8192),
                ..FileOptions::default()
            },
        ) else {
            println!("O_DIRECT unsupported on the temp filesystem; skipping");
            return;
        };
        assert!(!direct.needs_bounce(4096, aligned.as_ptr(), 4096));
        assert!(direct.needs_bounce(512, aligned.as_ptr(), 4096));
        assert!(direct.needs_bounce(0, aligned.as_ptr(), 512));
        assert!(direct.needs_bounce(0, aligned.as_ptr().wrapping_add(512), 4096));
    }

    #[test]
    fn a_trailing_partial_sector_is_not_part_of_the_store() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("odd");
        std::fs::write(&path, vec![1_u8; 1000]).unwrap();
        let store = FileStore::open(&path, &FileOptions::default()).unwrap();
        assert_eq!(store.size_bytes(), 512);
        assert_eq!(store.kind(), FileKind::RegularFile);
    }
}
