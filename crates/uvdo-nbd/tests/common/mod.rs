//! Shared by the integration tests: volumes, a running server, and a raw NBD client built on
//! the crate's own codec.
#![allow(
    dead_code,
    unreachable_pub,
    reason = "each test binary uses a different subset"
)]

use std::collections::HashMap;
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use uvdo::{FormatConfig, OpenOptions, Volume, WritePolicy};
use uvdo_format::BlockCount;
use uvdo_io::Storage;
use uvdo_nbd::proto::handshake::{ClientFlags, GREETING_BYTES, Greeting};
use uvdo_nbd::proto::option::{ClientOption, ExportQuery, MetaQuery};
use uvdo_nbd::proto::option_reply::{
    InfoItem, OPTION_REPLY_HEADER_BYTES, OptionReply, OptionReplyKind,
};
use uvdo_nbd::proto::reply::{
    CHUNK_HEADER_BYTES, Chunk, SIMPLE_HEADER_BYTES, SIMPLE_MAGIC, SimpleReply, StructuredReply,
};
use uvdo_nbd::proto::request::{Command, Request};
use uvdo_nbd::proto::{BASE_ALLOCATION, Cursor};
use uvdo_nbd::{Listener, ServeConfig, ServerHandle, serve};

/// A small geometry that still holds tens of MiB: 4 MiB slabs, a 1 MiB journal.
pub fn small_config(logical_bytes: u64) -> FormatConfig {
    let mut config = FormatConfig::new(BlockCount(logical_bytes / 4096));
    config.slab_blocks = BlockCount(1024);
    config.slab_journal_blocks = BlockCount(32);
    config.recovery_journal_blocks = BlockCount(256);
    config.index.memory_bytes = 1 << 20;
    config.write_policy = WritePolicy::Async;
    config
}

/// Formats and opens a volume on `store`.
pub fn volume_on(store: Arc<dyn Storage>, logical_bytes: u64) -> Volume {
    Volume::format(&*store, &small_config(logical_bytes)).unwrap();
    Volume::open(store, &OpenOptions::default()).unwrap()
}

/// A file-backed volume in `dir`.
pub fn file_volume(dir: &Path, physical_bytes: u64, logical_bytes: u64) -> Arc<Volume> {
    let path = dir.join("store.img");
    let options = uvdo_io::open::OpenOptions {
        create_size: Some(physical_bytes),
        ..Default::default()
    };
    let store = uvdo_io::open::open_store(&path, &options).unwrap();
    Arc::new(volume_on(store, logical_bytes))
}

/// Reopens the file-backed volume in `dir` (recovering if needed).
pub fn reopen(dir: &Path) -> Volume {
    let store = uvdo_io::open::open_store(&dir.join("store.img"), &Default::default()).unwrap();
    Volume::open(store, &OpenOptions::default()).unwrap()
}

/// A server on a Unix socket in `dir`.
pub fn start(volume: &Arc<Volume>, dir: &Path, config: ServeConfig) -> (ServerHandle, PathBuf) {
    let path = dir.join("nbd.sock");
    let listener = Listener::bind_unix(&path).unwrap();
    let handle = serve(Arc::clone(volume), listener, config).unwrap();
    (handle, path)
}

/// Whether `tool` is on PATH (or an absolute path that exists); prints the skip line if not.
pub fn have(tool: &str) -> bool {
    let found = if tool.starts_with('/') {
        Path::new(tool).exists()
    } else {
        std::env::var_os("PATH")
            .is_some_and(|paths| std::env::split_paths(&paths).any(|dir| dir.join(tool).is_file()))
    };
    if !found {
        println!("SKIPPED: {tool} not installed");
    }
    found
}

/// Whether Debian's python has the libnbd module.
pub fn have_python_nbd() -> bool {
    let ok = std::process::Command::new("/usr/bin/python3")
        .args(["-c", "import nbd"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !ok {
        println!("SKIPPED: python3-libnbd not installed");
    }
    ok
}

/// Runs a command and asserts success, returning stdout.
pub fn run(cmd: &mut std::process::Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// One thing received in the transmission phase.
#[derive(Debug)]
pub enum Received {
    Simple {
        cookie: u64,
        error: u32,
        data: Vec<u8>,
    },
    Chunk {
        reply: StructuredReply,
        data: Vec<u8>,
    },
}

impl Received {
    pub fn cookie(&self) -> u64 {
        match self {
            Self::Simple { cookie, .. } => *cookie,
            Self::Chunk { reply, .. } => reply.cookie,
        }
    }

    /// Whether this ends its request's reply.
    pub fn done(&self) -> bool {
        match self {
            Self::Simple { .. } => true,
            Self::Chunk { reply, .. } => reply.done,
        }
    }
}

/// A hand-driven NBD client.
pub struct Raw {
    pub s: UnixStream,
    /// READ lengths by cookie, to know how much data follows a simple reply.
    reads: HashMap<u64, u32>,
    next_cookie: u64,
}

impl Raw {
    pub fn connect(path: &Path) -> Self {
        Self::from_stream(UnixStream::connect(path).unwrap())
    }

    pub fn from_stream(s: UnixStream) -> Self {
        Self {
            s,
            reads: HashMap::new(),
            next_cookie: 1,
        }
    }

    pub fn greet(&mut self) -> Greeting {
        let mut g = [0; GREETING_BYTES];
        self.s.read_exact(&mut g).unwrap();
        Greeting::decode(&g).unwrap()
    }

    pub fn client_flags(&mut self, no_zeroes: bool) {
        let mut out = Vec::new();
        ClientFlags {
            fixed_newstyle: true,
            no_zeroes,
        }
        .encode(&mut out);
        self.s.write_all(&out).unwrap();
    }

    pub fn option(&mut self, option: &ClientOption) {
        let mut out = Vec::new();
        option.encode(&mut out);
        self.s.write_all(&out).unwrap();
    }

    pub fn option_reply(&mut self) -> OptionReply {
        let mut header = [0; OPTION_REPLY_HEADER_BYTES];
        self.s.read_exact(&mut header).unwrap();
        let (_, _, len) = OptionReply::decode_header(&header).unwrap();
        let mut all = header.to_vec();
        all.resize(OPTION_REPLY_HEADER_BYTES + len as usize, 0);
        self.s
            .read_exact(&mut all[OPTION_REPLY_HEADER_BYTES..])
            .unwrap();
        OptionReply::decode(&all).unwrap()
    }

    /// Replies up to and including the ACK or an error.
    pub fn option_replies(&mut self) -> Vec<OptionReplyKind> {
        let mut all = Vec::new();
        loop {
            let reply = self.option_reply().kind;
            let last = matches!(reply, OptionReplyKind::Ack | OptionReplyKind::Error { .. });
            all.push(reply);
            if last {
                return all;
            }
        }
    }

    /// Sends `option` and returns its replies.
    pub fn ask(&mut self, option: &ClientOption) -> Vec<OptionReplyKind> {
        self.option(option);
        self.option_replies()
    }

    /// A full handshake ending in GO; returns the transmission flags.
    pub fn go(&mut self, structured: bool, meta: bool) -> u16 {
        self.greet();
        self.client_flags(true);
        if structured {
            assert_eq!(
                self.ask(&ClientOption::StructuredReply),
                [OptionReplyKind::Ack]
            );
        }
        if meta {
            let q = MetaQuery {
                export: String::new(),
                queries: vec![BASE_ALLOCATION.into()],
            };
            let replies = self.ask(&ClientOption::SetMetaContext(q));
            assert_eq!(replies.len(), 2, "{replies:?}");
        }
        let go = ClientOption::Go(ExportQuery {
            name: String::new(),
            requests: vec![],
        });
        let replies = self.ask(&go);
        assert_eq!(replies.last(), Some(&OptionReplyKind::Ack), "{replies:?}");
        replies
            .iter()
            .find_map(|r| match r {
                OptionReplyKind::Info(InfoItem::Export { flags, .. }) => Some(*flags),
                _ => None,
            })
            .unwrap()
    }

    pub fn connect_go(path: &Path, structured: bool, meta: bool) -> Self {
        let mut raw = Self::connect(path);
        raw.go(structured, meta);
        raw
    }

    /// Sends a request with a fresh cookie; returns the cookie.
    pub fn send(
        &mut self,
        command: Command,
        flags: u16,
        offset: u64,
        length: u32,
        data: &[u8],
    ) -> u64 {
        let cookie = self.next_cookie;
        self.next_cookie += 1;
        self.send_with(cookie, command, flags, offset, length, data);
        cookie
    }

    pub fn send_with(
        &mut self,
        cookie: u64,
        command: Command,
        flags: u16,
        offset: u64,
        length: u32,
        data: &[u8],
    ) {
        if command == Command::Read {
            self.reads.insert(cookie, length);
        }
        let mut out = Vec::new();
        Request {
            flags,
            command,
            cookie,
            offset,
            length,
        }
        .encode(&mut out);
        out.extend_from_slice(data);
        self.s.write_all(&out).unwrap();
    }

    /// The next reply or chunk; `None` at end of stream.
    pub fn receive(&mut self) -> Option<Received> {
        let mut magic = [0; 4];
        self.s.read_exact(&mut magic).ok()?;
        let mut c = Cursor::new(&magic, "magic");
        if c.u32().unwrap() == SIMPLE_MAGIC {
            let mut header = [0; SIMPLE_HEADER_BYTES];
            header[..4].copy_from_slice(&magic);
            self.s.read_exact(&mut header[4..]).ok()?;
            let reply = SimpleReply::decode(&header).unwrap();
            let mut data = Vec::new();
            if let Some(len) = self.reads.remove(&reply.cookie)
                && reply.error == 0
            {
                data.resize(len as usize, 0);
                self.s.read_exact(&mut data).ok()?;
            }
            return Some(Received::Simple {
                cookie: reply.cookie,
                error: reply.error,
                data,
            });
        }
        let mut header = [0; CHUNK_HEADER_BYTES];
        header[..4].copy_from_slice(&magic);
        self.s.read_exact(&mut header[4..]).ok()?;
        let (_, _, _, len) = StructuredReply::decode_header(&header).unwrap();
        let mut payload = vec![0; len as usize];
        self.s.read_exact(&mut payload).ok()?;
        let reply = StructuredReply::decode(&header, &payload).unwrap();
        if reply.done {
            self.reads.remove(&reply.cookie);
        }
        let data = match reply.chunk {
            Chunk::OffsetData { .. } => payload[8..].to_vec(),
            _ => Vec::new(),
        };
        Some(Received::Chunk { reply, data })
    }

    /// Every chunk of the next complete reply (for one request in flight).
    pub fn reply(&mut self) -> Vec<Received> {
        let mut all = Vec::new();
        loop {
            let r = self.receive().expect("a reply, not end of stream");
            let done = r.done();
            all.push(r);
            if done {
                return all;
            }
        }
    }

    /// The error of a request's single reply (0 for success).
    pub fn error_of(&mut self) -> u32 {
        let replies = self.reply();
        match replies.last().unwrap() {
            Received::Simple { error, .. } => *error,
            Received::Chunk { reply, .. } => match &reply.chunk {
                Chunk::Error { error, .. } => error.code(),
                _ => 0,
            },
        }
    }

    /// Reads `len` bytes at `offset`, assembling structured chunks; `Err(errno)` on failure.
    pub fn read(&mut self, offset: u64, len: u32, flags: u16) -> Result<Vec<u8>, u32> {
        self.send(Command::Read, flags, offset, len, &[]);
        assemble(offset, len, &self.reply())
    }

    pub fn write(&mut self, offset: u64, data: &[u8], flags: u16) -> u32 {
        let len = u32::try_from(data.len()).unwrap();
        self.send(Command::Write, flags, offset, len, data);
        self.error_of()
    }

    /// Whether the server closed the connection (end of stream before any reply).
    pub fn closed(&mut self) -> bool {
        let mut byte = [0; 1];
        matches!(self.s.read(&mut byte), Ok(0) | Err(_))
    }
}

/// A READ's reply chunks as bytes.
pub fn assemble(offset: u64, len: u32, chunks: &[Received]) -> Result<Vec<u8>, u32> {
    let mut out = vec![0xee; len as usize];
    for r in chunks {
        match r {
            Received::Simple { error: 0, data, .. } => out.copy_from_slice(data),
            Received::Simple { error, .. } => return Err(*error),
            Received::Chunk { reply, data } => match &reply.chunk {
                Chunk::OffsetData { offset: at, .. } => {
                    let at = usize::try_from(at - offset).unwrap();
                    out[at..at + data.len()].copy_from_slice(data);
                }
                Chunk::OffsetHole { offset: at, len } => {
                    let at = usize::try_from(at - offset).unwrap();
                    out[at..at + *len as usize].fill(0);
                }
                Chunk::Error { error, .. } => return Err(error.code()),
                Chunk::BlockStatus { .. } | Chunk::None => {}
            },
        }
    }
    Ok(out)
}

/// Deterministic, non-repeating test data: block `i` of `seed` differs from every other.
pub fn pattern(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x.to_le_bytes()[0]
        })
        .collect()
}
