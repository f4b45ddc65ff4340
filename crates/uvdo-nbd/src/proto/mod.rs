//! The NBD wire protocol without I/O: decoders take bytes and return typed values or a typed
//! [`ProtoError`] (never a panic); encoders append to a `Vec<u8>`.
//!
//! Integers on the wire are big-endian (the NBD spec, `doc/proto.md`). Every limit the server
//! relies on is a named constant here, so a hostile peer meets the same bound in the codec, the
//! server and the fuzz target.
//!
//! Invariants: a decoder reads at most the bytes it is given and checks every length against
//! the bytes present and against its limit before using it; an encoder's output decodes to the
//! same value (the proptest round-trips in each module).

mod cursor;
pub mod flags;
pub mod handshake;
pub mod option;
pub mod option_reply;
pub mod reply;
pub mod request;

pub use cursor::{Cursor, put_len, put_u16, put_u32, put_u64};

/// Longest export name or metadata context name (the spec's MUST for strings).
pub const NAME_BYTES_MAX: usize = 4096;
/// Longest option payload the server reads; a longer one ends the session.
pub const OPTION_BYTES_MAX: u32 = 64 << 10;
/// Options a client may send in one session before the server gives up on it.
pub const OPTIONS_PER_SESSION_MAX: u32 = 64;
/// Metadata context queries in one LIST/SET_META_CONTEXT option.
pub const META_QUERIES_MAX: u32 = 128;
/// Information requests in one INFO/GO option.
pub const INFO_REQUESTS_MAX: u16 = 64;
/// Largest READ or WRITE payload (2^25, which the spec says is never a denial of service).
pub const PAYLOAD_BYTES_MAX: u32 = 32 << 20;
/// Advertised minimum block size: the engine's sector.
pub const BLOCK_SIZE_MIN: u32 = 512;
/// Advertised preferred block size: the engine's block.
pub const BLOCK_SIZE_PREFERRED: u32 = 4096;
/// Advertised maximum payload.
pub const BLOCK_SIZE_MAX: u32 = PAYLOAD_BYTES_MAX;
/// The only metadata context the server offers.
pub const BASE_ALLOCATION: &str = "base:allocation";
/// The id the server gives `base:allocation`.
pub const BASE_ALLOCATION_ID: u32 = 1;

/// A message that cannot be decoded.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ProtoError {
    /// Fewer bytes than the message needs.
    #[error("{what}: need {needed} bytes, have {found}")]
    Truncated {
        /// The message or field.
        what: &'static str,
        /// Bytes needed.
        needed: usize,
        /// Bytes present.
        found: usize,
    },
    /// A magic number is wrong: the stream is out of sync or not NBD.
    #[error("{what}: magic {found:#x}, expected {expected:#x}")]
    BadMagic {
        /// The message.
        what: &'static str,
        /// The magic the protocol requires.
        expected: u64,
        /// The magic received.
        found: u64,
    },
    /// A length over its limit.
    #[error("{what}: {found} bytes, at most {max}")]
    TooLong {
        /// The field.
        what: &'static str,
        /// The length received.
        found: u64,
        /// The limit.
        max: u64,
    },
    /// A string that is not UTF-8 or contains NUL.
    #[error("{what} is not a valid NBD string")]
    BadString {
        /// The field.
        what: &'static str,
    },
    /// Bytes left over after a complete message, or a field with an impossible value.
    #[error("malformed {what}")]
    Malformed {
        /// What was wrong.
        what: &'static str,
    },
    /// Client handshake flags the server does not know.
    #[error("unknown client flags {0:#x}")]
    UnknownClientFlags(u32),
}

/// NBD error values (the only ones the protocol allows on the wire).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u32)]
pub enum NbdErrno {
    /// Operation not permitted (write to a read-only export).
    Perm = 1,
    /// Input/output error.
    Io = 5,
    /// Out of memory.
    NoMem = 12,
    /// Invalid argument: out of range, misaligned, unknown command or flag.
    Inval = 22,
    /// No space left.
    NoSpc = 28,
    /// Value too large.
    Overflow = 75,
    /// Not supported (FAST_ZERO only).
    NotSup = 95,
    /// The server is shutting down.
    Shutdown = 108,
}

impl NbdErrno {
    /// The value on the wire.
    #[must_use]
    pub fn code(self) -> u32 {
        self as u32
    }

    /// The error for a wire value; unknown values read as EINVAL, as the spec tells clients.
    #[must_use]
    pub fn from_code(code: u32) -> Self {
        match code {
            1 => Self::Perm,
            5 => Self::Io,
            12 => Self::NoMem,
            28 => Self::NoSpc,
            75 => Self::Overflow,
            95 => Self::NotSup,
            108 => Self::Shutdown,
            _ => Self::Inval,
        }
    }
}

/// Checks an NBD string: UTF-8, no NUL, at most [`NAME_BYTES_MAX`] bytes.
///
/// # Errors
///
/// `TooLong` or `BadString`.
pub fn check_name(bytes: &[u8], what: &'static str) -> Result<String, ProtoError> {
    if bytes.len() > NAME_BYTES_MAX {
        return Err(ProtoError::TooLong {
            what,
            found: bytes.len() as u64,
            max: NAME_BYTES_MAX as u64,
        });
    }
    match std::str::from_utf8(bytes) {
        Ok(s) if !s.contains('\0') => Ok(s.to_owned()),
        _ => Err(ProtoError::BadString { what }),
    }
}

#[cfg(test)]
pub(crate) mod strategies {
    use proptest::prelude::*;

    /// NBD strings, biased to short ones, sometimes at the limit.
    pub(crate) fn name() -> impl Strategy<Value = String> {
        prop_oneof![
            "[a-z:/._-]{0,40}",
            "\\PC{0,20}",
            Just("x".repeat(super::NAME_BYTES_MAX)),
        ]
    }
}
