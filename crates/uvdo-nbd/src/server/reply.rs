//! Sending an answer: simple or structured, under the connection's one writer lock.

use std::io::{self, Write};
use std::net::Shutdown;
use std::sync::atomic::{AtomicBool, Ordering};

use parking_lot::Mutex;

use super::command::Answer;
use super::negotiate::Session;
use super::stream::Stream;
use crate::proto::reply::{Chunk, SimpleReply, StructuredReply};
use crate::proto::request::Command;

/// The socket's write half: one reply at a time, whole.
#[derive(Debug)]
pub(crate) struct Writer {
    stream: Mutex<Stream>,
    dead: AtomicBool,
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

    /// Sends `answer` to `command` as the session requires. A failure marks the connection
    /// dead and shuts the socket down, which ends its reader; nothing else is affected.
    pub(crate) fn send(&self, session: Session, command: Command, cookie: u64, answer: &Answer) {
        if self.is_dead() {
            return;
        }
        let structured =
            session.structured && matches!(command, Command::Read | Command::BlockStatus);
        let mut stream = self.stream.lock();
        let result = if structured {
            send_structured(&mut stream, cookie, answer)
        } else {
            send_simple(&mut stream, cookie, answer)
        };
        if result.is_err() {
            self.dead.store(true, Ordering::Release);
            stream.shutdown(Shutdown::Both);
        }
    }

    /// Closes both directions (after DISC has drained, or on a fatal protocol error).
    pub(crate) fn close(&self) {
        self.stream.lock().shutdown(Shutdown::Both);
    }
}

fn send_simple(stream: &mut Stream, cookie: u64, answer: &Answer) -> io::Result<()> {
    let mut head = Vec::with_capacity(16);
    let error = match answer {
        Answer::Failed((errno, _)) => errno.code(),
        Answer::Done | Answer::Read { .. } | Answer::Extents(_) => 0,
    };
    SimpleReply { error, cookie }.encode(&mut head);
    stream.write_all(&head)?;
    if let Answer::Read { data, .. } = answer {
        stream.write_all(data)?;
    }
    Ok(())
}

fn send_structured(stream: &mut Stream, cookie: u64, answer: &Answer) -> io::Result<()> {
    let mut out = Vec::new();
    let chunk = |done, chunk| StructuredReply {
        done,
        cookie,
        chunk,
    };
    match answer {
        Answer::Done => chunk(true, Chunk::None).encode(&mut out),
        Answer::Failed((error, message)) => {
            let message = message.clone();
            chunk(
                true,
                Chunk::Error {
                    error: *error,
                    message,
                },
            )
            .encode(&mut out);
        }
        Answer::Extents(extents) => {
            let extents = extents.clone();
            let context_id = crate::proto::BASE_ALLOCATION_ID;
            chunk(
                true,
                Chunk::BlockStatus {
                    context_id,
                    extents,
                },
            )
            .encode(&mut out);
        }
        Answer::Read {
            offset,
            data,
            holes,
            one_chunk,
        } => {
            let read = ReadAnswer {
                offset: *offset,
                data,
                holes,
                one_chunk: *one_chunk,
            };
            return send_read(stream, cookie, read);
        }
    }
    stream.write_all(&out)
}

/// A READ as chunks: ranges that read as zeros as OFFSET_HOLE, the rest as OFFSET_DATA, the
/// last one flagged DONE; with DF a single data chunk.
fn send_read(stream: &mut Stream, cookie: u64, read: ReadAnswer<'_>) -> io::Result<()> {
    let total = u32::try_from(read.data.len()).expect("reads are at most 32 MiB");
    let mut segments: Vec<(u32, u32, bool)> = Vec::new();
    if read.one_chunk {
        segments.push((0, total, false));
    } else {
        let mut at = 0;
        for &(start, len) in read.holes {
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
    let mut head = Vec::with_capacity(32);
    for (i, (start, len, hole)) in segments.into_iter().enumerate() {
        head.clear();
        let offset = read.offset + u64::from(start);
        let chunk = if hole {
            Chunk::OffsetHole { offset, len }
        } else {
            Chunk::OffsetData { offset, len }
        };
        StructuredReply {
            done: i == last,
            cookie,
            chunk,
        }
        .encode(&mut head);
        stream.write_all(&head)?;
        if !hole {
            stream.write_all(&read.data[start as usize..(start + len) as usize])?;
        }
    }
    Ok(())
}

/// A READ's answer, borrowed for sending.
#[derive(Clone, Copy)]
struct ReadAnswer<'a> {
    offset: u64,
    data: &'a [u8],
    holes: &'a [(u32, u32)],
    one_chunk: bool,
}
