//! uvdo-io: the storage layer under the engine.
//!
//! This crate owns the [`Storage`] trait and its implementations: a file or block-device store
//! (`pread`/`pwrite`/`fdatasync`, optional `O_DIRECT`), an `io_uring` store that falls back to
//! the file store where io_uring is unavailable, a memory store, and the simulated store that
//! models a volatile write cache, crashes, torn writes and injected faults for tests. It also
//! answers whether the device under a path has a volatile write cache (for the `auto` write
//! policy). It never interprets the bytes it moves: formats belong to `uvdo-format`, policy to
//! the engine.

pub mod aligned;
pub mod error;
pub mod file;
pub mod memory;
pub mod open;
pub mod sim;
pub mod storage;
pub mod uring;
pub mod write_cache;

pub use error::{IoError, IoOp};
pub use storage::Storage;
