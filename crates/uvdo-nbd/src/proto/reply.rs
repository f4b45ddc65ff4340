//! Transmission-phase replies: simple replies and structured reply chunks.
//!
//! ```text
//! simple:     u32 SIMPLE_MAGIC | u32 error | u64 cookie | [data for a successful READ]
//! structured: u32 STRUCTURED_MAGIC | u16 flags (DONE) | u16 type | u64 cookie | u32 length
//!   OFFSET_DATA:  u64 offset | data          OFFSET_HOLE: u64 offset | u32 length
//!   BLOCK_STATUS: u32 context id | n x (u32 length | u32 flags)
//!   ERROR:        u32 error | u16 message length | message
//! ```
//! An OFFSET_DATA chunk's data is not part of [`Chunk`]: the encoder writes the header and
//! offset, and the caller sends the data after it, to avoid copying up to 32 MiB.

use super::handshake::check_magic;
use super::{Cursor, NbdErrno, ProtoError, check_name, put_len, put_u16, put_u32, put_u64};

/// Starts a simple reply.
pub const SIMPLE_MAGIC: u32 = 0x6744_6698;
/// Starts a structured reply chunk.
pub const STRUCTURED_MAGIC: u32 = 0x668e_33ef;
/// Bytes of a simple reply header.
pub const SIMPLE_HEADER_BYTES: usize = 16;
/// Bytes of a structured chunk header.
pub const CHUNK_HEADER_BYTES: usize = 20;
/// Chunk flag: the last chunk of this reply.
pub const CHUNK_FLAG_DONE: u16 = 1;
/// `NBD_REPLY_TYPE_NONE`.
pub const TYPE_NONE: u16 = 0;
/// `NBD_REPLY_TYPE_OFFSET_DATA`.
pub const TYPE_OFFSET_DATA: u16 = 1;
/// `NBD_REPLY_TYPE_OFFSET_HOLE`.
pub const TYPE_OFFSET_HOLE: u16 = 2;
/// `NBD_REPLY_TYPE_BLOCK_STATUS`.
pub const TYPE_BLOCK_STATUS: u16 = 5;
/// `NBD_REPLY_TYPE_ERROR`.
pub const TYPE_ERROR: u16 = (1 << 15) + 1;
/// `base:allocation` flag: the range is a hole.
pub const STATE_HOLE: u32 = 1;
/// `base:allocation` flag: the range reads as zeros.
pub const STATE_ZERO: u32 = 2;
/// Extents in one BLOCK_STATUS chunk (the server caps its answers; 512 KiB of descriptors).
pub const EXTENTS_PER_CHUNK_MAX: usize = 1 << 16;
/// Longest error message the server sends.
pub const ERROR_MESSAGE_BYTES_MAX: usize = 4096;

/// A simple reply header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SimpleReply {
    /// 0 for success, else an NBD error value.
    pub error: u32,
    /// The request's cookie.
    pub cookie: u64,
}

impl SimpleReply {
    /// Appends the header.
    pub fn encode(self, out: &mut Vec<u8>) {
        put_u32(out, SIMPLE_MAGIC);
        put_u32(out, self.error);
        put_u64(out, self.cookie);
    }

    /// Decodes the header.
    ///
    /// # Errors
    ///
    /// `Truncated` or `BadMagic`.
    pub fn decode(bytes: &[u8]) -> Result<Self, ProtoError> {
        let mut c = Cursor::new(bytes, "simple reply");
        check_magic(c.u32()?.into(), SIMPLE_MAGIC.into(), "simple reply")?;
        let error = c.u32()?;
        let cookie = c.u64()?;
        c.finish()?;
        Ok(Self { error, cookie })
    }
}

/// One extent of a block status answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BlockDescriptor {
    /// Bytes.
    pub length: u32,
    /// `STATE_*` flags.
    pub flags: u32,
}

/// A structured reply chunk's payload.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Chunk {
    /// Data at `offset`; `len` bytes of data follow the encoded chunk.
    OffsetData {
        /// Byte offset of the data.
        offset: u64,
        /// Bytes of data the caller sends after the chunk.
        len: u32,
    },
    /// A range that reads as zeros.
    OffsetHole {
        /// Byte offset.
        offset: u64,
        /// Bytes.
        len: u32,
    },
    /// Extents of one metadata context.
    BlockStatus {
        /// The context.
        context_id: u32,
        /// The extents, in order from the request's offset.
        extents: Vec<BlockDescriptor>,
    },
    /// The request failed.
    Error {
        /// The NBD error.
        error: NbdErrno,
        /// For humans.
        message: String,
    },
    /// No payload (an empty final chunk).
    None,
}

/// A structured chunk with its header fields.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StructuredReply {
    /// Whether this is the reply's last chunk.
    pub done: bool,
    /// The request's cookie.
    pub cookie: u64,
    /// The payload.
    pub chunk: Chunk,
}

impl StructuredReply {
    /// Appends the chunk (for OFFSET_DATA, without its data).
    pub fn encode(&self, out: &mut Vec<u8>) {
        let mut payload = Vec::new();
        let (kind, extra) = match &self.chunk {
            Chunk::OffsetData { offset, len } => {
                put_u64(&mut payload, *offset);
                (TYPE_OFFSET_DATA, *len as usize)
            }
            Chunk::OffsetHole { offset, len } => {
                put_u64(&mut payload, *offset);
                put_u32(&mut payload, *len);
                (TYPE_OFFSET_HOLE, 0)
            }
            Chunk::BlockStatus {
                context_id,
                extents,
            } => {
                put_u32(&mut payload, *context_id);
                for e in extents {
                    put_u32(&mut payload, e.length);
                    put_u32(&mut payload, e.flags);
                }
                (TYPE_BLOCK_STATUS, 0)
            }
            Chunk::Error { error, message } => {
                let message = truncate(message, ERROR_MESSAGE_BYTES_MAX);
                put_u32(&mut payload, error.code());
                put_u16(
                    &mut payload,
                    u16::try_from(message.len()).expect("truncated to 4096"),
                );
                payload.extend_from_slice(message.as_bytes());
                (TYPE_ERROR, 0)
            }
            Chunk::None => (TYPE_NONE, 0),
        };
        put_u32(out, STRUCTURED_MAGIC);
        put_u16(out, if self.done { CHUNK_FLAG_DONE } else { 0 });
        put_u16(out, kind);
        put_u64(out, self.cookie);
        put_len(out, payload.len() + extra);
        out.extend_from_slice(&payload);
    }

    /// Decodes a chunk header: (flags, type, cookie, payload length).
    ///
    /// # Errors
    ///
    /// `Truncated` or `BadMagic`.
    pub fn decode_header(bytes: &[u8]) -> Result<(u16, u16, u64, u32), ProtoError> {
        let mut c = Cursor::new(bytes, "structured reply header");
        check_magic(c.u32()?.into(), STRUCTURED_MAGIC.into(), "structured reply")?;
        let flags = c.u16()?;
        let kind = c.u16()?;
        let cookie = c.u64()?;
        let len = c.u32()?;
        c.finish()?;
        Ok((flags, kind, cookie, len))
    }

    /// Decodes a chunk from its header and payload; for OFFSET_DATA the payload holds the
    /// offset and the data, and `len` is the data's length.
    ///
    /// # Errors
    ///
    /// As `decode_header`, or a malformed payload.
    pub fn decode(header: &[u8], payload: &[u8]) -> Result<Self, ProtoError> {
        let (flags, kind, cookie, len) = Self::decode_header(header)?;
        if usize::try_from(len).ok() != Some(payload.len()) {
            return Err(ProtoError::Malformed {
                what: "chunk length",
            });
        }
        let mut c = Cursor::new(payload, "structured reply payload");
        let chunk = match kind {
            TYPE_NONE => Chunk::None,
            TYPE_OFFSET_DATA => {
                let offset = c.u64()?;
                let data = c.take(c.rest().len())?;
                let len = u32::try_from(data.len()).map_err(|_| ProtoError::Malformed {
                    what: "data length",
                })?;
                Chunk::OffsetData { offset, len }
            }
            TYPE_OFFSET_HOLE => Chunk::OffsetHole {
                offset: c.u64()?,
                len: c.u32()?,
            },
            TYPE_BLOCK_STATUS => {
                let context_id = c.u32()?;
                let mut extents = Vec::new();
                while !c.rest().is_empty() {
                    extents.push(BlockDescriptor {
                        length: c.u32()?,
                        flags: c.u32()?,
                    });
                }
                Chunk::BlockStatus {
                    context_id,
                    extents,
                }
            }
            TYPE_ERROR => {
                let error = NbdErrno::from_code(c.u32()?);
                let n = c.u16()?;
                let message = check_name(c.take(n.into())?, "error message")?;
                Chunk::Error { error, message }
            }
            _ => return Err(ProtoError::Malformed { what: "chunk type" }),
        };
        c.finish()?;
        Ok(Self {
            done: flags & CHUNK_FLAG_DONE != 0,
            cookie,
            chunk,
        })
    }
}

fn truncate(s: &str, max: usize) -> &str {
    let mut end = s.len().min(max);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::strategies::name;
    use proptest::prelude::*;

    fn errno() -> impl Strategy<Value = NbdErrno> {
        proptest::sample::select(vec![
            NbdErrno::Perm,
            NbdErrno::Io,
            NbdErrno::NoMem,
            NbdErrno::Inval,
            NbdErrno::NoSpc,
            NbdErrno::Overflow,
            NbdErrno::NotSup,
            NbdErrno::Shutdown,
        ])
    }

    fn chunk() -> impl Strategy<Value = Chunk> {
        let extent = (any::<u32>(), any::<u32>())
            .prop_map(|(length, flags)| BlockDescriptor { length, flags });
        prop_oneof![
            (any::<u64>(), 0_u32..1024).prop_map(|(o, len)| Chunk::OffsetData { offset: o, len }),
            (any::<u64>(), any::<u32>())
                .prop_map(|(offset, len)| Chunk::OffsetHole { offset, len }),
            (any::<u32>(), proptest::collection::vec(extent, 0..20)).prop_map(
                |(context_id, extents)| Chunk::BlockStatus {
                    context_id,
                    extents
                }
            ),
            (errno(), name()).prop_map(|(error, message)| Chunk::Error { error, message }),
            Just(Chunk::None),
        ]
    }

    proptest! {
        #[test]
        fn simple_replies_round_trip(error: u32, cookie: u64) {
            let reply = SimpleReply { error, cookie };
            let mut out = Vec::new();
            reply.encode(&mut out);
            prop_assert_eq!(SimpleReply::decode(&out), Ok(reply));
        }

        #[test]
        fn chunks_round_trip(done: bool, cookie: u64, chunk in chunk()) {
            let reply = StructuredReply { done, cookie, chunk };
            let mut out = Vec::new();
            reply.encode(&mut out);
            if let Chunk::OffsetData { len, .. } = reply.chunk {
                out.resize(out.len() + len as usize, 0xa5);
            }
            let (header, payload) = out.split_at(CHUNK_HEADER_BYTES);
            prop_assert_eq!(StructuredReply::decode(header, payload), Ok(reply));
        }

        #[test]
        fn arbitrary_chunks_never_panic(header: [u8; CHUNK_HEADER_BYTES], payload: Vec<u8>) {
            let _ = StructuredReply::decode(&header, &payload);
        }
    }
}
