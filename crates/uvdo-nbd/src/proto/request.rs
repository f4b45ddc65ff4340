//! Transmission-phase requests.
//!
//! ```text
//! C: u32 REQUEST_MAGIC | u16 command flags | u16 type | u64 cookie | u64 offset | u32 length
//!    [length bytes of data for WRITE]
//! ```

use super::handshake::check_magic;
use super::{Cursor, ProtoError, put_u16, put_u32, put_u64};

/// Starts every request.
pub const REQUEST_MAGIC: u32 = 0x2560_9513;
/// Bytes of a request header.
pub const REQUEST_HEADER_BYTES: usize = 28;

/// `NBD_CMD_FLAG_FUA`: durable before the reply.
pub const FLAG_FUA: u16 = 1 << 0;
/// `NBD_CMD_FLAG_NO_HOLE` (WRITE_ZEROES): the range must stay allocated.
pub const FLAG_NO_HOLE: u16 = 1 << 1;
/// `NBD_CMD_FLAG_DF` (READ): one data chunk, no fragmentation.
pub const FLAG_DF: u16 = 1 << 2;
/// `NBD_CMD_FLAG_REQ_ONE` (BLOCK_STATUS): one extent per context.
pub const FLAG_REQ_ONE: u16 = 1 << 3;
/// `NBD_CMD_FLAG_FAST_ZERO` (WRITE_ZEROES): fail rather than zero slowly.
pub const FLAG_FAST_ZERO: u16 = 1 << 4;

/// A request type.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Command {
    /// `NBD_CMD_READ`.
    Read,
    /// `NBD_CMD_WRITE`: `length` bytes of data follow the header.
    Write,
    /// `NBD_CMD_DISC`: no reply; the server drains and closes.
    Disc,
    /// `NBD_CMD_FLUSH`.
    Flush,
    /// `NBD_CMD_TRIM`.
    Trim,
    /// `NBD_CMD_CACHE`.
    Cache,
    /// `NBD_CMD_WRITE_ZEROES`.
    WriteZeroes,
    /// `NBD_CMD_BLOCK_STATUS`.
    BlockStatus,
    /// Anything else (RESIZE included): answered with EINVAL, assumed to carry no data.
    Unknown(u16),
}

impl Command {
    /// Decodes a type.
    #[must_use]
    pub fn from_code(code: u16) -> Self {
        match code {
            0 => Self::Read,
            1 => Self::Write,
            2 => Self::Disc,
            3 => Self::Flush,
            4 => Self::Trim,
            5 => Self::Cache,
            6 => Self::WriteZeroes,
            7 => Self::BlockStatus,
            other => Self::Unknown(other),
        }
    }

    /// The type on the wire.
    #[must_use]
    pub fn code(self) -> u16 {
        match self {
            Self::Read => 0,
            Self::Write => 1,
            Self::Disc => 2,
            Self::Flush => 3,
            Self::Trim => 4,
            Self::Cache => 5,
            Self::WriteZeroes => 6,
            Self::BlockStatus => 7,
            Self::Unknown(code) => code,
        }
    }

    /// The flags this command accepts (FUA is valid on every command).
    #[must_use]
    pub fn allowed_flags(self) -> u16 {
        match self {
            Self::Read => FLAG_FUA | FLAG_DF,
            Self::WriteZeroes => FLAG_FUA | FLAG_NO_HOLE | FLAG_FAST_ZERO,
            Self::BlockStatus => FLAG_FUA | FLAG_REQ_ONE,
            Self::Write | Self::Disc | Self::Flush | Self::Trim | Self::Cache => FLAG_FUA,
            Self::Unknown(_) => 0,
        }
    }
}

/// A request header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Request {
    /// Command flags, unchecked (the server checks them against the command).
    pub flags: u16,
    /// The command.
    pub command: Command,
    /// Opaque; echoed in the reply.
    pub cookie: u64,
    /// Byte offset.
    pub offset: u64,
    /// Byte length (of data to write, or of the range).
    pub length: u32,
}

impl Request {
    /// Decodes a header. The caller reads a WRITE's data itself, after checking `length`.
    ///
    /// # Errors
    ///
    /// `Truncated`, or `BadMagic` (the stream is out of sync: the server closes).
    pub fn decode(bytes: &[u8]) -> Result<Self, ProtoError> {
        let mut c = Cursor::new(bytes, "request header");
        check_magic(c.u32()?.into(), REQUEST_MAGIC.into(), "request")?;
        let flags = c.u16()?;
        let command = Command::from_code(c.u16()?);
        let cookie = c.u64()?;
        let offset = c.u64()?;
        let length = c.u32()?;
        c.finish()?;
        Ok(Self {
            flags,
            command,
            cookie,
            offset,
            length,
        })
    }

    /// Appends the header (the client side, for tests).
    pub fn encode(&self, out: &mut Vec<u8>) {
        put_u32(out, REQUEST_MAGIC);
        put_u16(out, self.flags);
        put_u16(out, self.command.code());
        put_u64(out, self.cookie);
        put_u64(out, self.offset);
        put_u32(out, self.length);
    }

    /// The end of the range, or `None` when `offset + length` overflows.
    #[must_use]
    pub fn end(&self) -> Option<u64> {
        self.offset.checked_add(self.length.into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn requests_round_trip(
            flags: u16, code: u16, cookie: u64, offset: u64, length: u32,
        ) {
            let command = Command::from_code(code);
            let request = Request { flags, command, cookie, offset, length };
            let mut out = Vec::new();
            request.encode(&mut out);
            prop_assert_eq!(out.len(), REQUEST_HEADER_BYTES);
            prop_assert_eq!(Request::decode(&out), Ok(request));
        }

        #[test]
        fn arbitrary_headers_never_panic(bytes: Vec<u8>) {
            let _ = Request::decode(&bytes);
        }
    }

    #[test]
    fn command_codes_round_trip() {
        for code in 0..=u16::MAX {
            assert_eq!(Command::from_code(code).code(), code);
        }
    }
}
