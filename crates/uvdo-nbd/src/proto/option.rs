//! Options a client sends during the handshake.
//!
//! ```text
//! C: u64 IHAVEOPT | u32 option | u32 length | data[length]
//! INFO/GO:                 u32 name length | name | u16 n | u16 info request[n]
//! EXPORT_NAME:             name (the whole payload)
//! LIST/SET_META_CONTEXT:   u32 name length | name | u32 n | n x (u32 length | query)
//! LIST, ABORT, STRUCTURED_REPLY: no data
//! ```

use super::handshake::{IHAVEOPT, check_magic};
use super::{
    Cursor, INFO_REQUESTS_MAX, META_QUERIES_MAX, OPTION_BYTES_MAX, ProtoError, check_name, put_len,
    put_u16, put_u32, put_u64,
};

/// `NBD_OPT_EXPORT_NAME`.
pub const OPT_EXPORT_NAME: u32 = 1;
/// `NBD_OPT_ABORT`.
pub const OPT_ABORT: u32 = 2;
/// `NBD_OPT_LIST`.
pub const OPT_LIST: u32 = 3;
/// `NBD_OPT_STARTTLS`.
pub const OPT_STARTTLS: u32 = 5;
/// `NBD_OPT_INFO`.
pub const OPT_INFO: u32 = 6;
/// `NBD_OPT_GO`.
pub const OPT_GO: u32 = 7;
/// `NBD_OPT_STRUCTURED_REPLY`.
pub const OPT_STRUCTURED_REPLY: u32 = 8;
/// `NBD_OPT_LIST_META_CONTEXT`.
pub const OPT_LIST_META_CONTEXT: u32 = 9;
/// `NBD_OPT_SET_META_CONTEXT`.
pub const OPT_SET_META_CONTEXT: u32 = 10;
/// `NBD_OPT_EXTENDED_HEADERS`.
pub const OPT_EXTENDED_HEADERS: u32 = 11;
/// Bytes of an option header.
pub const OPTION_HEADER_BYTES: usize = 16;

/// The fixed part of an option.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OptionHeader {
    /// The option code.
    pub code: u32,
    /// Bytes of data that follow.
    pub len: u32,
}

impl OptionHeader {
    /// Decodes a header; a length over [`OPTION_BYTES_MAX`] is an error, so that the server
    /// never buffers it.
    ///
    /// # Errors
    ///
    /// `Truncated`, `BadMagic` or `TooLong`.
    pub fn decode(bytes: &[u8]) -> Result<Self, ProtoError> {
        let mut c = Cursor::new(bytes, "option header");
        check_magic(c.u64()?, IHAVEOPT, "option header")?;
        let code = c.u32()?;
        let len = c.u32()?;
        c.finish()?;
        if len > OPTION_BYTES_MAX {
            return Err(ProtoError::TooLong {
                what: "option data",
                found: len.into(),
                max: OPTION_BYTES_MAX.into(),
            });
        }
        Ok(Self { code, len })
    }

    /// Appends the header.
    pub fn encode(self, out: &mut Vec<u8>) {
        put_u64(out, IHAVEOPT);
        put_u32(out, self.code);
        put_u32(out, self.len);
    }
}

/// An option, decoded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ClientOption {
    /// Select an export and start transmission, old style (no reply on success).
    ExportName(String),
    /// End the session.
    Abort,
    /// List the exports.
    List,
    /// Describe an export.
    Info(ExportQuery),
    /// Describe an export and start transmission.
    Go(ExportQuery),
    /// Use structured replies.
    StructuredReply,
    /// List the metadata contexts matching the queries.
    ListMetaContext(MetaQuery),
    /// Select the metadata contexts matching the queries.
    SetMetaContext(MetaQuery),
    /// An option this server does not support (STARTTLS and EXTENDED_HEADERS included).
    Unsupported(u32),
}

/// The data of INFO and GO.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExportQuery {
    /// The export.
    pub name: String,
    /// The `NBD_INFO_*` items asked for.
    pub requests: Vec<u16>,
}

/// The data of LIST_META_CONTEXT and SET_META_CONTEXT.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MetaQuery {
    /// The export.
    pub export: String,
    /// Context names or namespace prefixes.
    pub queries: Vec<String>,
}

impl ClientOption {
    /// Decodes option `code`'s data.
    ///
    /// # Errors
    ///
    /// `Truncated`, `TooLong`, `BadString` or `Malformed` (the server answers ERR_INVALID or
    /// ERR_TOO_BIG and the session goes on, since the data was read in full).
    pub fn decode(code: u32, data: &[u8]) -> Result<Self, ProtoError> {
        match code {
            OPT_EXPORT_NAME => Ok(Self::ExportName(check_name(data, "export name")?)),
            OPT_ABORT => Ok(Self::Abort),
            OPT_LIST => no_data(data, "LIST").map(|()| Self::List),
            OPT_STRUCTURED_REPLY => {
                no_data(data, "STRUCTURED_REPLY").map(|()| Self::StructuredReply)
            }
            OPT_INFO => ExportQuery::decode(data).map(Self::Info),
            OPT_GO => ExportQuery::decode(data).map(Self::Go),
            OPT_LIST_META_CONTEXT => MetaQuery::decode(data).map(Self::ListMetaContext),
            OPT_SET_META_CONTEXT => MetaQuery::decode(data).map(Self::SetMetaContext),
            other => Ok(Self::Unsupported(other)),
        }
    }

    /// The option's code.
    #[must_use]
    pub fn code(&self) -> u32 {
        match self {
            Self::ExportName(_) => OPT_EXPORT_NAME,
            Self::Abort => OPT_ABORT,
            Self::List => OPT_LIST,
            Self::Info(_) => OPT_INFO,
            Self::Go(_) => OPT_GO,
            Self::StructuredReply => OPT_STRUCTURED_REPLY,
            Self::ListMetaContext(_) => OPT_LIST_META_CONTEXT,
            Self::SetMetaContext(_) => OPT_SET_META_CONTEXT,
            Self::Unsupported(code) => *code,
        }
    }

    /// Appends header and data (the client side, for tests). An `Unsupported` option is sent
    /// with no data.
    pub fn encode(&self, out: &mut Vec<u8>) {
        let mut data = Vec::new();
        match self {
            Self::ExportName(name) => data.extend_from_slice(name.as_bytes()),
            Self::Info(q) | Self::Go(q) => q.encode(&mut data),
            Self::ListMetaContext(q) | Self::SetMetaContext(q) => q.encode(&mut data),
            Self::Abort | Self::List | Self::StructuredReply | Self::Unsupported(_) => {}
        }
        let len = u32::try_from(data.len()).expect("test options are small");
        OptionHeader {
            code: self.code(),
            len,
        }
        .encode(out);
        out.extend_from_slice(&data);
    }
}

fn no_data(data: &[u8], what: &'static str) -> Result<(), ProtoError> {
    Cursor::new(data, what).finish()
}

/// A u32 length followed by that many bytes of NBD string.
fn string(c: &mut Cursor<'_>, what: &'static str) -> Result<String, ProtoError> {
    let len = c.u32()?;
    let len = usize::try_from(len).map_err(|_| ProtoError::Malformed { what })?;
    let bytes = c.take(len)?;
    check_name(bytes, what)
}

fn put_string(out: &mut Vec<u8>, s: &str) {
    put_len(out, s.len());
    out.extend_from_slice(s.as_bytes());
}

impl ExportQuery {
    fn decode(data: &[u8]) -> Result<Self, ProtoError> {
        let mut c = Cursor::new(data, "INFO/GO data");
        let name = string(&mut c, "export name")?;
        let n = c.u16()?;
        if n > INFO_REQUESTS_MAX {
            return Err(ProtoError::TooLong {
                what: "information requests",
                found: n.into(),
                max: INFO_REQUESTS_MAX.into(),
            });
        }
        let requests = (0..n).map(|_| c.u16()).collect::<Result<_, _>>()?;
        c.finish()?;
        Ok(Self { name, requests })
    }

    fn encode(&self, out: &mut Vec<u8>) {
        put_string(out, &self.name);
        put_u16(
            out,
            u16::try_from(self.requests.len()).expect("bounded request list"),
        );
        for r in &self.requests {
            put_u16(out, *r);
        }
    }
}

impl MetaQuery {
    fn decode(data: &[u8]) -> Result<Self, ProtoError> {
        let mut c = Cursor::new(data, "META_CONTEXT data");
        let export = string(&mut c, "export name")?;
        let n = c.u32()?;
        if n > META_QUERIES_MAX {
            return Err(ProtoError::TooLong {
                what: "metadata context queries",
                found: n.into(),
                max: META_QUERIES_MAX.into(),
            });
        }
        let queries = (0..n)
            .map(|_| string(&mut c, "context query"))
            .collect::<Result<_, _>>()?;
        c.finish()?;
        Ok(Self { export, queries })
    }

    fn encode(&self, out: &mut Vec<u8>) {
        put_string(out, &self.export);
        put_len(out, self.queries.len());
        for q in &self.queries {
            put_string(out, q);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::NAME_BYTES_MAX;
    use crate::proto::strategies::name;
    use proptest::prelude::*;

    fn query() -> impl Strategy<Value = ExportQuery> {
        (name(), proptest::collection::vec(any::<u16>(), 0..8))
            .prop_map(|(name, requests)| ExportQuery { name, requests })
    }

    fn meta() -> impl Strategy<Value = MetaQuery> {
        (name(), proptest::collection::vec(name(), 0..4))
            .prop_map(|(export, queries)| MetaQuery { export, queries })
    }

    fn option() -> impl Strategy<Value = ClientOption> {
        prop_oneof![
            name().prop_map(ClientOption::ExportName),
            Just(ClientOption::Abort),
            Just(ClientOption::List),
            Just(ClientOption::StructuredReply),
            query().prop_map(ClientOption::Info),
            query().prop_map(ClientOption::Go),
            meta().prop_map(ClientOption::ListMetaContext),
            meta().prop_map(ClientOption::SetMetaContext),
            (11_u32..).prop_map(ClientOption::Unsupported),
            Just(ClientOption::Unsupported(OPT_STARTTLS)),
        ]
    }

    proptest! {
        #[test]
        fn options_round_trip(opt in option()) {
            let mut out = Vec::new();
            opt.encode(&mut out);
            let header = OptionHeader::decode(&out[..OPTION_HEADER_BYTES]).unwrap();
            prop_assert_eq!(header.len as usize, out.len() - OPTION_HEADER_BYTES);
            let decoded = ClientOption::decode(header.code, &out[OPTION_HEADER_BYTES..]);
            prop_assert_eq!(decoded, Ok(opt));
        }

        #[test]
        fn arbitrary_option_data_never_panics(code in 0_u32..16, data: Vec<u8>) {
            let _ = ClientOption::decode(code, &data);
        }
    }

    #[test]
    fn names_over_4096_bytes_are_refused() {
        let long = vec![b'a'; NAME_BYTES_MAX + 1];
        assert!(matches!(
            ClientOption::decode(OPT_EXPORT_NAME, &long),
            Err(ProtoError::TooLong { .. })
        ));
    }

    #[test]
    fn huge_option_lengths_are_refused_in_the_header() {
        let mut out = Vec::new();
        OptionHeader {
            code: OPT_GO,
            len: u32::MAX,
        }
        .encode(&mut out);
        assert!(matches!(
            OptionHeader::decode(&out),
            Err(ProtoError::TooLong { .. })
        ));
    }
}
