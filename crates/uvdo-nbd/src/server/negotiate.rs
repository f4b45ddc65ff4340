//! The handshake: greeting, client flags, then options until GO or EXPORT_NAME.
//!
//! Bounded by a deadline for the whole handshake, [`OPTIONS_PER_SESSION_MAX`] options and
//! [`OPTION_BYTES_MAX`] per option. An option whose data was read in full but does not decode
//! gets ERR_INVALID (ERR_TOO_BIG for over-long names) and negotiation goes on; a bad magic, an
//! over-long option or too many options close the connection.

use std::io::{self, Write};
use std::time::Instant;

use crate::proto::handshake::{ClientFlags, GREETING_BYTES, Greeting};
use crate::proto::option::{
    ClientOption, ExportQuery, MetaQuery, OPTION_HEADER_BYTES, OptionHeader,
};
use crate::proto::option_reply::{
    ExportNameReply, INFO_NAME, InfoItem, OptionError, OptionReply, OptionReplyKind,
};
use crate::proto::{
    BASE_ALLOCATION, BASE_ALLOCATION_ID, BLOCK_SIZE_MAX, BLOCK_SIZE_MIN, BLOCK_SIZE_PREFERRED,
    OPTIONS_PER_SESSION_MAX, ProtoError, flags,
};
use crate::server::stream::Stream;

/// What the export looks like to a client.
#[derive(Clone, Debug)]
pub(crate) struct ExportInfo {
    pub(crate) name: String,
    pub(crate) size: u64,
    pub(crate) read_only: bool,
}

impl ExportInfo {
    /// Whether `name` selects this export ("" is the default export).
    fn matches(&self, name: &str) -> bool {
        name.is_empty() || name == self.name
    }

    fn flags(&self, structured: bool) -> u16 {
        flags::for_export(self.read_only, structured)
    }
}

/// What was agreed, for the transmission phase.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Session {
    pub(crate) structured: bool,
    pub(crate) base_allocation: bool,
}

/// How a handshake ended without transmission.
#[derive(Debug)]
pub(crate) enum Refused {
    /// The client aborted, or broke a rule that ends the session.
    Closed(&'static str),
    /// The socket failed or the deadline passed.
    Io(io::Error),
}

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Closed(why) => f.write_str(why),
            Self::Io(e) => write!(f, "{e}"),
        }
    }
}

impl From<io::Error> for Refused {
    fn from(e: io::Error) -> Self {
        Self::Io(e)
    }
}

struct Negotiation<'a> {
    stream: &'a mut Stream,
    export: &'a ExportInfo,
    deadline: Instant,
    no_zeroes: bool,
    session: Session,
}

/// Runs the handshake on `stream`; `Ok` means transmission starts.
pub(crate) fn negotiate(
    stream: &mut Stream,
    export: &ExportInfo,
    deadline: Instant,
) -> Result<Session, Refused> {
    let mut greeting = Vec::with_capacity(GREETING_BYTES);
    Greeting::SERVER.encode(&mut greeting);
    stream.write_all(&greeting)?;
    let mut raw = [0; 4];
    stream.read_exact_by(&mut raw, deadline)?;
    let client = ClientFlags::decode(&raw).map_err(|_| Refused::Closed("unknown client flags"))?;
    let mut n = Negotiation {
        stream,
        export,
        deadline,
        no_zeroes: client.no_zeroes,
        session: Session {
            structured: false,
            base_allocation: false,
        },
    };
    for _ in 0..OPTIONS_PER_SESSION_MAX {
        if let Some(session) = n.option()? {
            return Ok(session);
        }
    }
    Err(Refused::Closed("too many options"))
}

impl Negotiation<'_> {
    /// Handles one option; `Some` when transmission starts.
    fn option(&mut self) -> Result<Option<Session>, Refused> {
        let mut raw = [0; OPTION_HEADER_BYTES];
        self.stream.read_exact_by(&mut raw, self.deadline)?;
        let header = OptionHeader::decode(&raw).map_err(|e| match e {
            ProtoError::TooLong { .. } => Refused::Closed("option data too long"),
            _ => Refused::Closed("bad option magic"),
        })?;
        let mut data = vec![0; header.len as usize];
        self.stream.read_exact_by(&mut data, self.deadline)?;
        let option = match ClientOption::decode(header.code, &data) {
            Ok(option) => option,
            Err(e) => {
                let error = match e {
                    ProtoError::TooLong { .. } => OptionError::TooBig,
                    _ => OptionError::Invalid,
                };
                self.error(header.code, error, &e.to_string())?;
                return Ok(None);
            }
        };
        let code = option.code();
        match option {
            ClientOption::ExportName(name) => self.export_name(&name).map(Some),
            ClientOption::Abort => {
                self.reply(code, OptionReplyKind::Ack)?;
                Err(Refused::Closed("client aborted"))
            }
            ClientOption::List => {
                self.reply(code, OptionReplyKind::Server(self.export.name.clone()))?;
                self.reply(code, OptionReplyKind::Ack)?;
                Ok(None)
            }
            ClientOption::Info(q) => self.info(code, &q).map(|_| None),
            ClientOption::Go(q) => self
                .info(code, &q)
                .map(|known| known.then_some(self.session)),
            ClientOption::StructuredReply => {
                self.session.structured = true;
                self.reply(code, OptionReplyKind::Ack)?;
                Ok(None)
            }
            ClientOption::ListMetaContext(q) => self.meta_context(code, &q, false).map(|()| None),
            ClientOption::SetMetaContext(q) => self.meta_context(code, &q, true).map(|()| None),
            ClientOption::Unsupported(code) => {
                self.error(code, OptionError::Unsup, "unsupported option")?;
                Ok(None)
            }
        }
    }

    fn export_name(&mut self, name: &str) -> Result<Session, Refused> {
        if !self.export.matches(name) {
            return Err(Refused::Closed("EXPORT_NAME of an unknown export"));
        }
        let mut out = Vec::new();
        ExportNameReply {
            size: self.export.size,
            flags: self.export.flags(self.session.structured),
            zeroes: !self.no_zeroes,
        }
        .encode(&mut out);
        self.stream.write_all(&out)?;
        Ok(self.session)
    }

    /// INFO and GO; returns whether the export was known (and acknowledged).
    fn info(&mut self, code: u32, q: &ExportQuery) -> Result<bool, Refused> {
        if !self.export.matches(&q.name) {
            self.error(code, OptionError::Unknown, "no such export")?;
            return Ok(false);
        }
        let export = InfoItem::Export {
            size: self.export.size,
            flags: self.export.flags(self.session.structured),
        };
        self.reply(code, OptionReplyKind::Info(export))?;
        if q.requests.contains(&INFO_NAME) {
            let name = InfoItem::Name(self.export.name.clone());
            self.reply(code, OptionReplyKind::Info(name))?;
        }
        let sizes = InfoItem::BlockSize {
            min: BLOCK_SIZE_MIN,
            preferred: BLOCK_SIZE_PREFERRED,
            max: BLOCK_SIZE_MAX,
        };
        self.reply(code, OptionReplyKind::Info(sizes))?;
        self.reply(code, OptionReplyKind::Ack)?;
        Ok(true)
    }

    fn meta_context(&mut self, code: u32, q: &MetaQuery, set: bool) -> Result<(), Refused> {
        if set && !self.session.structured {
            return self.error(code, OptionError::Invalid, "structured replies first");
        }
        if !self.export.matches(&q.export) {
            return self.error(code, OptionError::Unknown, "no such export");
        }
        let matched = if q.queries.is_empty() {
            !set
        } else {
            q.queries.iter().any(|query| {
                query == BASE_ALLOCATION || (!set && (query == "base:" || query == "base"))
            })
        };
        if set {
            self.session.base_allocation = matched;
        }
        if matched {
            let kind = OptionReplyKind::MetaContext {
                id: BASE_ALLOCATION_ID,
                name: BASE_ALLOCATION.to_owned(),
            };
            self.reply(code, kind)?;
        }
        self.reply(code, OptionReplyKind::Ack)
    }

    fn error(&mut self, code: u32, error: OptionError, message: &str) -> Result<(), Refused> {
        let message = message.to_owned();
        self.reply(code, OptionReplyKind::Error { error, message })
    }

    fn reply(&mut self, option: u32, kind: OptionReplyKind) -> Result<(), Refused> {
        let mut out = Vec::new();
        OptionReply { option, kind }.encode(&mut out);
        self.stream.write_all(&out)?;
        Ok(())
    }
}
