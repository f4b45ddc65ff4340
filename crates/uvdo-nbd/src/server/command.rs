//! Checking a request against the session and the export, and running it on the volume.

use uvdo::{ExtentKind, Volume};

use super::errno::{log_failure, nbd_errno};
use super::negotiate::Session;
use crate::proto::reply::{BlockDescriptor, EXTENTS_PER_CHUNK_MAX, STATE_HOLE, STATE_ZERO};
use crate::proto::request::{Command, FLAG_DF, FLAG_FUA, FLAG_REQ_ONE, Request};
use crate::proto::{BLOCK_SIZE_MIN, NbdErrno, PAYLOAD_BYTES_MAX};

/// Longest range one BLOCK_STATUS answer covers; the spec lets the answer be shorter than
/// the request, and the client asks again from where it ends.
pub(crate) const BLOCK_STATUS_SPAN_BYTES_MAX: u32 = 1 << 30;

/// A request's failure: the NBD error and a message for structured ERROR chunks.
pub(crate) type Failure = (NbdErrno, String);

/// What a request produced.
#[derive(Debug)]
pub(crate) enum Answer {
    /// Success without data.
    Done,
    /// A READ's bytes, with the ranges that read as zeros (relative offset, length) so that
    /// structured replies can send them as holes.
    Read {
        offset: u64,
        data: Vec<u8>,
        holes: Vec<(u32, u32)>,
        one_chunk: bool,
    },
    /// BLOCK_STATUS's extents for `base:allocation`.
    Extents(Vec<BlockDescriptor>),
    /// Failure.
    Failed(Failure),
}

fn invalid(what: impl Into<String>) -> Failure {
    (NbdErrno::Inval, what.into())
}

/// Checks `r` before anything is run or buffered: command, flags, range, alignment, length.
pub(crate) fn check(r: &Request, session: Session, size: u64) -> Result<(), Failure> {
    let command = r.command;
    if let Command::Unknown(code) = command {
        return Err(invalid(format!("unknown command {code}")));
    }
    let unknown = r.flags & !command.allowed_flags();
    if unknown != 0 {
        return Err(invalid(format!(
            "flags {unknown:#x} not valid for {command:?}"
        )));
    }
    if r.flags & FLAG_DF != 0 && !session.structured {
        return Err(invalid("DF needs structured replies"));
    }
    match command {
        Command::Disc | Command::Flush => return Ok(()),
        Command::BlockStatus if !session.base_allocation => {
            return Err(invalid("no metadata context was selected"));
        }
        Command::Read if r.length > PAYLOAD_BYTES_MAX => {
            return Err(invalid("read longer than the 32 MiB maximum"));
        }
        _ => {}
    }
    let end = r
        .end()
        .ok_or_else(|| invalid("offset + length overflows"))?;
    if end > size {
        return Err(invalid(format!(
            "range ends at {end}, export is {size} bytes"
        )));
    }
    let align = u64::from(BLOCK_SIZE_MIN);
    if !r.offset.is_multiple_of(align) || !u64::from(r.length).is_multiple_of(align) {
        return Err(invalid("offset and length must be multiples of 512"));
    }
    if r.length == 0 && command != Command::Cache {
        return Err(invalid("zero length"));
    }
    Ok(())
}

/// Runs a checked request other than a WRITE (those carry data and go to [`run_writes`]); a
/// READ's answer takes `read_buffer` (a worker's, handed back after the reply is sent) for its
/// data.
pub(crate) fn run(volume: &Volume, r: &Request, read_buffer: &mut Vec<u8>) -> Answer {
    let fua = r.flags & FLAG_FUA != 0;
    let len = u64::from(r.length);
    let result = match r.command {
        Command::Read => return read(volume, r, std::mem::take(read_buffer)),
        Command::BlockStatus => return block_status(volume, r),
        Command::Write => unreachable!("a WRITE carries data: the connection calls run_writes"),
        Command::Trim => volume
            .trim(r.offset, len)
            .and_then(|()| if fua { volume.flush() } else { Ok(()) }),
        // Metadata-only (a remap to the zero block), so FAST_ZERO is always honoured, and
        // NO_HOLE needs nothing more: the range holds no space either way.
        Command::WriteZeroes => volume
            .write_zeroes(r.offset, len)
            .and_then(|()| if fua { volume.flush() } else { Ok(()) }),
        Command::Flush => volume.flush(),
        Command::Cache | Command::Disc | Command::Unknown(_) => Ok(()),
    };
    match result {
        Ok(()) => Answer::Done,
        Err(e) => failed(&e, r),
    }
}

/// Runs consecutive checked WRITEs (each with its data) as one batch on the volume: under the
/// sync policy or with FUA, one commit makes them all durable before any is answered.
pub(crate) fn run_writes(volume: &Volume, writes: &[(&Request, &[u8])]) -> Vec<Answer> {
    let calls: Vec<(u64, &[u8], bool)> = writes
        .iter()
        .map(|(r, data)| (r.offset, *data, r.flags & FLAG_FUA != 0))
        .collect();
    volume
        .write_many(&calls)
        .into_iter()
        .zip(writes)
        .map(|(result, (r, _))| match result {
            Ok(()) => Answer::Done,
            Err(e) => failed(&e, r),
        })
        .collect()
}

/// The answer for a failed volume call, logged (see [`log_failure`]).
fn failed(e: &uvdo::VolumeError, r: &Request) -> Answer {
    log_failure(e, format_args!("{:?} {}+{}", r.command, r.offset, r.length));
    Answer::Failed((nbd_errno(e), e.to_string()))
}

/// A READ into `data` (a reused buffer, zeroed only where it grows: every byte is written),
/// with the runs that held no data as holes, from the same block map lookups.
fn read(volume: &Volume, r: &Request, mut data: Vec<u8>) -> Answer {
    data.resize(r.length as usize, 0);
    let one_chunk = r.flags & FLAG_DF != 0;
    let extents = match volume.read_extents(r.offset, &mut data) {
        Ok(extents) => extents,
        Err(e) => return failed(&e, r),
    };
    let holes = extents
        .iter()
        .filter(|e| e.kind != ExtentKind::Data)
        .map(|e| {
            let at = u32::try_from(e.offset - r.offset).expect("within a 32 MiB read");
            let n = u32::try_from(e.len).expect("within a 32 MiB read");
            (at, n)
        })
        .collect();
    Answer::Read {
        offset: r.offset,
        data,
        holes,
        one_chunk,
    }
}

fn block_status(volume: &Volume, r: &Request) -> Answer {
    let len = r.length.min(BLOCK_STATUS_SPAN_BYTES_MAX);
    let extents = match volume.block_status(r.offset, len.into()) {
        Ok(extents) => extents,
        Err(e) => return failed(&e, r),
    };
    let limit = if r.flags & FLAG_REQ_ONE != 0 {
        1
    } else {
        EXTENTS_PER_CHUNK_MAX
    };
    // Unmapped and zero runs both report HOLE|ZERO: merge them, as clients expect.
    let mut descriptors: Vec<BlockDescriptor> = Vec::new();
    for e in &extents {
        let flags = match e.kind {
            ExtentKind::Unmapped | ExtentKind::Zero => STATE_HOLE | STATE_ZERO,
            ExtentKind::Data => 0,
        };
        let length = u32::try_from(e.len).expect("within a 1 GiB span");
        let full = descriptors.len() == limit;
        match descriptors.last_mut() {
            Some(last) if last.flags == flags => last.length += length,
            _ if full => break,
            _ => descriptors.push(BlockDescriptor { length, flags }),
        }
    }
    Answer::Extents(descriptors)
}
