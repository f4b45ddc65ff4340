//! The server's answers to options.
//!
//! ```text
//! S: u64 REPLY_MAGIC | u32 option | u32 reply type | u32 length | data[length]
//! ACK: no data          SERVER: u32 name length | name          META_CONTEXT: u32 id | name
//! INFO: u16 info type | EXPORT: u64 size, u16 flags | NAME: name | BLOCK_SIZE: 3 x u32
//! errors (bit 31 set): an optional UTF-8 message
//! EXPORT_NAME's success: u64 size | u16 transmission flags | [124 zero bytes unless NO_ZEROES]
//! ```

use super::{
    Cursor, NAME_BYTES_MAX, OPTION_BYTES_MAX, ProtoError, check_name, put_len, put_u16, put_u32,
    put_u64,
};
use crate::proto::handshake::check_magic;

/// Starts every option reply.
pub const REPLY_MAGIC: u64 = 0x0003_e889_0455_65a9;
/// Bytes of an option reply header.
pub const OPTION_REPLY_HEADER_BYTES: usize = 20;
/// `NBD_REP_ACK`.
pub const REP_ACK: u32 = 1;
/// `NBD_REP_SERVER`.
pub const REP_SERVER: u32 = 2;
/// `NBD_REP_INFO`.
pub const REP_INFO: u32 = 3;
/// `NBD_REP_META_CONTEXT`.
pub const REP_META_CONTEXT: u32 = 4;
/// `NBD_INFO_EXPORT`.
pub const INFO_EXPORT: u16 = 0;
/// `NBD_INFO_NAME`.
pub const INFO_NAME: u16 = 1;
/// `NBD_INFO_DESCRIPTION`.
pub const INFO_DESCRIPTION: u16 = 2;
/// `NBD_INFO_BLOCK_SIZE`.
pub const INFO_BLOCK_SIZE: u16 = 3;
/// Zero bytes after EXPORT_NAME's reply for clients without NO_ZEROES.
pub const EXPORT_NAME_PADDING_BYTES: usize = 124;

/// Option errors (`NBD_REP_ERR_*`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u32)]
pub enum OptionError {
    /// Unknown or unsupported option.
    Unsup = (1 << 31) + 1,
    /// Forbidden by policy.
    Policy = (1 << 31) + 2,
    /// Syntactically or semantically invalid.
    Invalid = (1 << 31) + 3,
    /// Not supported on this platform.
    Platform = (1 << 31) + 4,
    /// TLS is required first.
    TlsReqd = (1 << 31) + 5,
    /// No such export.
    Unknown = (1 << 31) + 6,
    /// The server is shutting down.
    Shutdown = (1 << 31) + 7,
    /// The client must ask for block sizes.
    BlockSizeReqd = (1 << 31) + 8,
    /// Too large to process.
    TooBig = (1 << 31) + 9,
}

impl OptionError {
    const ALL: [Self; 9] = [
        Self::Unsup,
        Self::Policy,
        Self::Invalid,
        Self::Platform,
        Self::TlsReqd,
        Self::Unknown,
        Self::Shutdown,
        Self::BlockSizeReqd,
        Self::TooBig,
    ];

    /// The reply type on the wire.
    #[must_use]
    pub fn code(self) -> u32 {
        self as u32
    }

    fn from_code(code: u32) -> Option<Self> {
        Self::ALL.into_iter().find(|e| e.code() == code)
    }
}

/// One `NBD_REP_INFO` item.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum InfoItem {
    /// Size and transmission flags.
    Export {
        /// Export size in bytes.
        size: u64,
        /// Transmission flags.
        flags: u16,
    },
    /// The export's canonical name.
    Name(String),
    /// A description.
    Description(String),
    /// Block size constraints.
    BlockSize {
        /// Minimum.
        min: u32,
        /// Preferred.
        preferred: u32,
        /// Maximum payload.
        max: u32,
    },
}

/// What an option reply says.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum OptionReplyKind {
    /// Done.
    Ack,
    /// One export (LIST).
    Server(String),
    /// One information item (INFO, GO).
    Info(InfoItem),
    /// One selected or listed metadata context.
    MetaContext {
        /// The id chunks will carry.
        id: u32,
        /// The context's name.
        name: String,
    },
    /// The option failed.
    Error {
        /// Why.
        error: OptionError,
        /// For humans.
        message: String,
    },
}

/// An option reply.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OptionReply {
    /// The option answered.
    pub option: u32,
    /// The answer.
    pub kind: OptionReplyKind,
}

fn put_string(out: &mut Vec<u8>, s: &str) {
    put_len(out, s.len());
    out.extend_from_slice(s.as_bytes());
}

impl OptionReply {
    /// Appends the reply.
    pub fn encode(&self, out: &mut Vec<u8>) {
        let mut data = Vec::new();
        let kind = match &self.kind {
            OptionReplyKind::Ack => REP_ACK,
            OptionReplyKind::Server(name) => {
                put_string(&mut data, name);
                REP_SERVER
            }
            OptionReplyKind::Info(item) => {
                item.encode(&mut data);
                REP_INFO
            }
            OptionReplyKind::MetaContext { id, name } => {
                put_u32(&mut data, *id);
                data.extend_from_slice(name.as_bytes());
                REP_META_CONTEXT
            }
            OptionReplyKind::Error { error, message } => {
                data.extend_from_slice(message.as_bytes());
                error.code()
            }
        };
        put_u64(out, REPLY_MAGIC);
        put_u32(out, self.option);
        put_u32(out, kind);
        put_len(out, data.len());
        out.extend_from_slice(&data);
    }

    /// Decodes a reply header: (option, reply type, data length).
    ///
    /// # Errors
    ///
    /// `Truncated`, `BadMagic`, or `TooLong` over [`OPTION_BYTES_MAX`].
    pub fn decode_header(bytes: &[u8]) -> Result<(u32, u32, u32), ProtoError> {
        let mut c = Cursor::new(bytes, "option reply header");
        check_magic(c.u64()?, REPLY_MAGIC, "option reply")?;
        let option = c.u32()?;
        let kind = c.u32()?;
        let len = c.u32()?;
        c.finish()?;
        if len > OPTION_BYTES_MAX {
            return Err(ProtoError::TooLong {
                what: "option reply data",
                found: len.into(),
                max: OPTION_BYTES_MAX.into(),
            });
        }
        Ok((option, kind, len))
    }

    /// Decodes a whole reply (the client side, for tests).
    ///
    /// # Errors
    ///
    /// As `decode_header`, or bad data.
    pub fn decode(bytes: &[u8]) -> Result<Self, ProtoError> {
        let mut c = Cursor::new(bytes, "option reply");
        let (option, kind, len) = Self::decode_header(c.take(OPTION_REPLY_HEADER_BYTES)?)?;
        let data = c.take(usize::try_from(len).unwrap_or(usize::MAX))?;
        c.finish()?;
        let mut d = Cursor::new(data, "option reply data");
        let kind = match kind {
            REP_ACK => OptionReplyKind::Ack,
            REP_SERVER => {
                let n = usize::try_from(d.u32()?).unwrap_or(usize::MAX);
                OptionReplyKind::Server(check_name(d.take(n)?, "export name")?)
            }
            REP_INFO => OptionReplyKind::Info(InfoItem::decode(&mut d)?),
            REP_META_CONTEXT => {
                let id = d.u32()?;
                let name = check_name(d.rest(), "context name")?;
                d.take(name.len())?;
                OptionReplyKind::MetaContext { id, name }
            }
            code => {
                let error = OptionError::from_code(code)
                    .ok_or(ProtoError::Malformed { what: "reply type" })?;
                let message = check_name(d.rest(), "error message")?;
                d.take(message.len())?;
                OptionReplyKind::Error { error, message }
            }
        };
        d.finish()?;
        Ok(Self { option, kind })
    }
}

impl InfoItem {
    fn encode(&self, out: &mut Vec<u8>) {
        match self {
            Self::Export { size, flags } => {
                put_u16(out, INFO_EXPORT);
                put_u64(out, *size);
                put_u16(out, *flags);
            }
            Self::Name(name) => {
                put_u16(out, INFO_NAME);
                out.extend_from_slice(name.as_bytes());
            }
            Self::Description(text) => {
                put_u16(out, INFO_DESCRIPTION);
                out.extend_from_slice(text.as_bytes());
            }
            Self::BlockSize {
                min,
                preferred,
                max,
            } => {
                put_u16(out, INFO_BLOCK_SIZE);
                put_u32(out, *min);
                put_u32(out, *preferred);
                put_u32(out, *max);
            }
        }
    }

    fn decode(d: &mut Cursor<'_>) -> Result<Self, ProtoError> {
        let item = match d.u16()? {
            INFO_EXPORT => Self::Export {
                size: d.u64()?,
                flags: d.u16()?,
            },
            INFO_NAME => Self::Name(rest_string(d, "export name")?),
            INFO_DESCRIPTION => Self::Description(rest_string(d, "description")?),
            INFO_BLOCK_SIZE => Self::BlockSize {
                min: d.u32()?,
                preferred: d.u32()?,
                max: d.u32()?,
            },
            _ => return Err(ProtoError::Malformed { what: "info type" }),
        };
        Ok(item)
    }
}

fn rest_string(d: &mut Cursor<'_>, what: &'static str) -> Result<String, ProtoError> {
    let s = check_name(d.rest(), what)?;
    d.take(s.len())?;
    Ok(s)
}

/// EXPORT_NAME's answer: there is no option reply, only size and flags.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ExportNameReply {
    /// Export size in bytes.
    pub size: u64,
    /// Transmission flags.
    pub flags: u16,
    /// Whether to append the 124 zero bytes (the client did not ask for NO_ZEROES).
    pub zeroes: bool,
}

impl ExportNameReply {
    /// Appends the answer.
    pub fn encode(self, out: &mut Vec<u8>) {
        put_u64(out, self.size);
        put_u16(out, self.flags);
        if self.zeroes {
            out.resize(out.len() + EXPORT_NAME_PADDING_BYTES, 0);
        }
    }

    /// Decodes size and flags, and the padding if `zeroes`.
    ///
    /// # Errors
    ///
    /// `Truncated` or `Malformed`.
    pub fn decode(bytes: &[u8], zeroes: bool) -> Result<Self, ProtoError> {
        let mut c = Cursor::new(bytes, "EXPORT_NAME reply");
        let size = c.u64()?;
        let flags = c.u16()?;
        if zeroes && c.take(EXPORT_NAME_PADDING_BYTES)?.iter().any(|&b| b != 0) {
            return Err(ProtoError::Malformed {
                what: "EXPORT_NAME padding",
            });
        }
        c.finish()?;
        Ok(Self {
            size,
            flags,
            zeroes,
        })
    }
}

const _: () = assert!(NAME_BYTES_MAX + 64 < OPTION_BYTES_MAX as usize);

#[cfg(test)]
mod tests {
    use super::OptionReplyKind as Kind;
    use super::*;
    use crate::proto::strategies::name;
    use proptest::prelude::*;

    fn item() -> impl Strategy<Value = InfoItem> {
        prop_oneof![
            (any::<u64>(), any::<u16>()).prop_map(|(size, f)| InfoItem::Export { size, flags: f }),
            name().prop_map(InfoItem::Name),
            name().prop_map(InfoItem::Description),
            (any::<u32>(), any::<u32>(), any::<u32>()).prop_map(|(min, preferred, max)| {
                InfoItem::BlockSize {
                    min,
                    preferred,
                    max,
                }
            }),
        ]
    }

    fn kind() -> impl Strategy<Value = OptionReplyKind> {
        prop_oneof![
            Just(OptionReplyKind::Ack),
            name().prop_map(OptionReplyKind::Server),
            item().prop_map(OptionReplyKind::Info),
            (any::<u32>(), name()).prop_map(|(id, n)| Kind::MetaContext { id, name: n }),
            (proptest::sample::select(OptionError::ALL.to_vec()), name())
                .prop_map(|(error, message)| OptionReplyKind::Error { error, message }),
        ]
    }

    proptest! {
        #[test]
        fn option_replies_round_trip(option: u32, kind in kind()) {
            let reply = OptionReply { option, kind };
            let mut out = Vec::new();
            reply.encode(&mut out);
            prop_assert_eq!(OptionReply::decode(&out), Ok(reply));
        }

        #[test]
        fn export_name_replies_round_trip(size: u64, flags: u16, zeroes: bool) {
            let reply = ExportNameReply { size, flags, zeroes };
            let mut out = Vec::new();
            reply.encode(&mut out);
            prop_assert_eq!(ExportNameReply::decode(&out, zeroes), Ok(reply));
        }

        #[test]
        fn arbitrary_option_replies_never_panic(bytes: Vec<u8>) {
            let _ = OptionReply::decode(&bytes);
        }
    }
}
