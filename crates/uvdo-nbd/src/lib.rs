//! uvdo-nbd: exports a uvdo [`Volume`](uvdo::Volume) over the Network Block Device protocol.
//!
//! This crate owns the NBD wire codec ([`proto`], pure and fuzzed: bytes in, typed values or
//! typed errors out), the threaded server ([`server`]: fixed newstyle negotiation, then per
//! connection a reader thread, a bounded worker pool calling the volume and replies written
//! as they complete), the listeners ([`listen`]: a Unix socket with mode 0600, TCP on
//! 127.0.0.1 only, or a socket-activated fd 3) and the `uvdo-nbd-serve` binary. It never
//! touches the volume's storage or metadata except through the `Volume` API, never runs an
//! async runtime, and never lets one connection's failure reach another or the process.
//!
//! Invariants:
//! - every limit is a named constant (`proto::*_MAX`, [`ServeConfig`]): option data, names,
//!   options per session, payloads, in-flight requests and bytes, handshake time;
//! - a reply is sent only after the volume call it reports has returned, so FLUSH and FUA
//!   durability is the volume's (FLUSH is volume-wide, which is what CAN_MULTI_CONN promises);
//! - engine errors become NBD errors in one function (`server::errno::nbd_errno`);
//! - a malformed request gets the protocol's error while the stream can stay in sync, and
//!   the connection is closed otherwise; neither panics nor buffers more than the limits.

pub mod listen;
pub mod proto;
pub mod server;
pub mod sizing;

pub use listen::Listener;
pub use server::{ServeConfig, ServerHandle, serve};
