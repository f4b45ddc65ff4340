//! Sending answers: simple or structured, a batch of them in one vectored write under the
//! connection's one writer lock.

use std::io::{self, IoSlice, Write};
use std::net::Shutdown;
use std::sync::atomic::{AtomicBool, Ordering};

use parking_lot::Mutex;

use super::command::Answer;
use super::negotiate::Session;
use super::stream::Stream;
use crate::proto::reply::{Chunk, SimpleReply, StructuredReply};
use crate::proto::request::Command;

/// The socket's write half: replies go out whole, a worker's batch of them in one call.
#[derive(Debug)]
pub(crate) struct Writer {
    stream: Mutex<Stream>,
    dead: AtomicBool,
}

/// One reply to send: the request's command and cookie, and its answer.
#[derive(Clone, Copy)]
pub(crate) struct Reply<'a> {
    pub(crate) command: Command,
    pub(crate) cookie: u64,
    pub(crate) answer: &'a Answer,
}

impl Writer {
    pub(crate) fn new(stream: Stream) -> Self {
        Self {
            stream: Mutex::new(stream),
            dead: AtomicBool::new(false),
        }
    }

    /// Whether a write failed (the client went away); later replies are dropped.
    pub(crate) fn is_dead(&self) -> bool {
        self.dead.load(Ordering::Acquire)
    }

    /// Sends `replies` in order, each as the session requires, with as few socket writes as
    /// the socket takes (one, usually): headers are encoded into one buffer and READ data is
    /// sent from where it lies. A failure marks the connection dead and shuts the socket
    /// down, which ends its reading; nothing else is affected.
    pub(crate) fn send_all(&self, session: Session, replies: &[Reply<'_>]) {
        if self.is_dead() || replies.is_empty() {
            return;
        }
        let mut encoded = Encoded::default();
        for reply in replies {
            let structured =
                session.structured && matches!(reply.command, Command::Read | Command::BlockStatus);
            if structured {
                encoded.structured(reply.cookie, reply.answer);
            } else {
                encoded.simple(reply.cookie, reply.answer);
            }
        }
        let mut stream = self.stream.lock();
        if encoded.send(&mut stream).is_err() {
            self.dead.store(true, Ordering::Release);
            stream.shutdown(Shutdown::Both);
        }
    }

    /// Closes both directions (after DISC has drained, or on a fatal protocol error).
    pub(crate) fn close(&self) {
        self.stream.lock().shutdown(Shutdown::Both);
    }
}

/// Replies encoded for one vectored send: headers (and small chunks) in `heads`, READ data
/// borrowed from the answers.
#[derive(Default)]
struct Encoded<'a> {
    heads: Vec<u8>,
    parts: Vec<Part<'a>>,
}

/// A piece of the output, in order.
enum Part<'a> {
    /// `heads[start..end]`.
    Head(usize, usize),
    Data(&'a [u8]),
}

/// Slices one `writev` call takes at most (Linux's `IOV_MAX`).
const SLICES_PER_CALL_MAX: usize = 1024;

impl<'a> Encoded<'a> {
    /// Appends to `heads` with `encode`, recording the bytes as the next part.
    fn head(&mut self, encode: impl FnOnce(&mut Vec<u8>)) {
        let start = self.heads.len();
        encode(&mut self.heads);
        match self.parts.last_mut() {
            Some(Part::Head(_, end)) if *end == start => *end = self.heads.len(),
            _ => self.parts.push(Part::Head(start, self.heads.len())),
        }
    }

    fn simple(&mut self, cookie: u64, answer: &'a Answer) {
        let error = match answer {
            Answer::Failed((errno, _)) => errno.code(),
            Answer::Done | Answer::Read { .. } | Answer::Extents(_) => 0,
        };
        self.head(|out| SimpleReply { error, cookie }.encode(out));
        if let Answer::Read { data, .. } = answer {
            self.parts.push(Part::Data(data));
        }
    }

    fn structured(&mut self, cookie: u64, answer: &'a Answer) {
        let chunk = |done, chunk| StructuredReply {
            done,
            cookie,
            chunk,
        };
        match answer {
            Answer::Done => self.head(|out| chunk(true, Chunk::None).encode(out)),
            Answer::Failed((error, message)) => {
                let message = message.clone();
                let error = *error;
                self.head(|out| chunk(true, Chunk::Error { error, message }).encode(out));
            }
            Answer::Extents(extents) => {
                let extents = extents.clone();
                let context_id = crate::proto::BASE_ALLOCATION_ID;
                self.head(|out| {
                    chunk(
                        true,
                        Chunk::BlockStatus {
                            context_id,
                            extents,
                        },
                    )
                    .encode(out);
                });
            }
            Answer::Read {
                offset,
                data,
                holes,
                one_chunk,
            } => self.read(cookie, *offset, data, holes, *one_chunk),
        }
    }

    /// A READ as chunks: ranges that read as zeros as OFFSET_HOLE, the rest as OFFSET_DATA,
    /// the last one flagged DONE; with DF a single data chunk.
    fn read(
        &mut self,
        cookie: u64,
        offset: u64,
        data: &'a [u8],
        holes: &[(u32, u32)],
        one_chunk: bool,
    ) {
        let total = u32::try_from(data.len()).expect("reads are at most 32 MiB");
        let mut segments: Vec<(u32, u32, bool)> = Vec::new();
        if one_chunk {
            segments.push((0, total, false));
        } else {
            let mut at = 0;
            for &(start, len) in holes {
                if start > at {
                    segments.push((at, start - at, false));
                }
                segments.push((start, len, true));
                at = start + len;
            }
            if at < total {
                segments.push((at, total - at, false));
            }
        }
        let last = segments.len().saturating_sub(1);
        for (i, (start, len, hole)) in segments.into_iter().enumerate() {
            let at = offset + u64::from(start);
            let chunk = if hole {
                Chunk::OffsetHole { offset: at, len }
            } else {
                Chunk::OffsetData { offset: at, len }
            };
            self.head(|out| {
                StructuredReply {
                    done: i == last,
                    cookie,
                    chunk,
                }
                .encode(out);
            });
            if !hole {
                self.parts
                    .push(Part::Data(&data[start as usize..(start + len) as usize]));
            }
        }
    }

    /// Writes every part, in order, `writev` after `writev`.
    fn send(&self, stream: &mut Stream) -> io::Result<()> {
        let slices: Vec<IoSlice<'_>> = self
            .parts
            .iter()
            .map(|part| match part {
                Part::Head(start, end) => IoSlice::new(&self.heads[*start..*end]),
                Part::Data(data) => IoSlice::new(data),
            })
            .collect();
        for group in slices.chunks(SLICES_PER_CALL_MAX) {
            write_all_vectored(stream, group)?;
        }
        Ok(())
    }
}

/// Writes all of `slices` with as few calls as the socket allows.
fn write_all_vectored(stream: &mut Stream, slices: &[IoSlice<'_>]) -> io::Result<()> {
    let mut owned = slices.to_vec();
    let mut rest = &mut owned[..];
    while !rest.is_empty() {
        match stream.write_vectored(rest) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => IoSlice::advance_slices(&mut rest, n),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}
