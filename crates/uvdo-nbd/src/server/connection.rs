//! One client connection: the handshake, then a pool of workers that take turns reading.
//!
//! As in nbdkit's parallel model, there is no reader thread handing requests over: a worker
//! takes the read lock, reads one request (header and any WRITE data) from the connection's
//! buffered read side, checks it, lets go of the lock and runs it, then sends the reply under
//! the writer lock. A request therefore costs no thread switch, and one `recv` brings in
//! every request the client has queued up to the buffer's size. Replies may be out of order.
//! DISC, end of stream or a fatal protocol error close the read side; each worker finishes
//! the request it holds and stops, and the socket is closed.
//!
//! Memory stays bounded: each worker holds at most one request, and the gate bounds the
//! payload bytes they hold together.

use std::io::{self, BufReader, Read};
use std::sync::Arc;
use std::time::Instant;

use parking_lot::Mutex;
use uvdo::{OperatingMode, Volume};

use super::ServeConfig;
use super::command::{self, Answer};
use super::gate::Gate;
use super::negotiate::{ExportInfo, Session, negotiate};
use super::reply::{Reply, Writer};
use super::stream::Stream;
use crate::proto::PAYLOAD_BYTES_MAX;
use crate::proto::request::{Command, REQUEST_HEADER_BYTES, Request};

/// Bytes a request without a buffer counts for at the gate.
const REQUEST_OVERHEAD_BYTES: u64 = 256;
/// The read side's buffer: a client's queue of 4 KiB writes (iodepth 32 of them is 132 KiB)
/// arrives in a few `recv` calls.
const READ_BUFFER_BYTES: usize = 256 << 10;

/// Serves one connection until it ends.
pub(crate) fn serve_connection(mut stream: Stream, volume: &Arc<Volume>, config: &ServeConfig) {
    let export = ExportInfo {
        name: config.export_name.clone(),
        size: volume.logical_bytes(),
        read_only: volume.operating_mode() == OperatingMode::ReadOnly,
    };
    let deadline = Instant::now() + config.handshake_timeout;
    let _ = stream.set_write_timeout(Some(config.handshake_timeout));
    let session = match negotiate(&mut stream, &export, deadline) {
        Ok(session) => session,
        Err(refused) => {
            if config.verbose {
                eprintln!("uvdo-nbd: handshake ended: {refused}");
            }
            stream.shutdown(std::net::Shutdown::Both);
            return;
        }
    };
    if stream.set_read_timeout(None).is_err()
        || stream
            .set_write_timeout(Some(config.reply_timeout))
            .is_err()
    {
        stream.shutdown(std::net::Shutdown::Both);
        return;
    }
    let Ok(write_half) = stream.try_clone() else {
        stream.shutdown(std::net::Shutdown::Both);
        return;
    };
    let connection = Arc::new(Connection {
        volume: Arc::clone(volume),
        read_side: Mutex::new(ReadSide {
            stream: BufReader::with_capacity(READ_BUFFER_BYTES, stream),
            open: true,
        }),
        writer: Writer::new(write_half),
        gate: Gate::new(
            config.workers_per_connection * BATCH_REQUESTS_MAX,
            config.in_flight_bytes_max,
        ),
        session,
        size: export.size,
    });
    // The connection's own thread is one of the workers.
    let helpers: Vec<_> = (1..config.workers_per_connection)
        .filter_map(|i| {
            let connection = Arc::clone(&connection);
            std::thread::Builder::new()
                .name(format!("nbd-worker-{i}"))
                .spawn(move || connection.work())
                .ok()
        })
        .collect();
    connection.work();
    for helper in helpers {
        let _ = helper.join();
    }
    connection.gate.drain();
    connection.writer.close();
}

/// What the workers of one connection share.
struct Connection {
    volume: Arc<Volume>,
    read_side: Mutex<ReadSide>,
    writer: Writer,
    gate: Gate,
    session: Session,
    size: u64,
}

/// The socket's read half; `open` goes false for good at DISC, end of stream or a fatal
/// protocol error.
struct ReadSide {
    stream: BufReader<Stream>,
    open: bool,
}

/// Requests one worker takes from the read side at a time: the first waits for the client,
/// the rest are those already in the buffer.
const BATCH_REQUESTS_MAX: usize = 32;

/// Requests a worker took, their WRITE data, and the gate cost they hold.
#[derive(Default)]
struct Batch {
    /// Each request, with the range of `payload` holding its WRITE data.
    requests: Vec<(Request, std::ops::Range<usize>)>,
    payload: Vec<u8>,
    /// Requests admitted at the gate, and the cost they hold there.
    entered: usize,
    cost: u64,
    /// Replies to requests that failed their checks, sent with the batch's.
    refused: Vec<(Request, Answer)>,
}

impl Batch {
    fn clear(&mut self) {
        self.requests.clear();
        self.payload.clear();
        self.entered = 0;
        self.cost = 0;
        self.refused.clear();
    }

    fn is_empty(&self) -> bool {
        self.entered == 0
    }
}

impl Connection {
    /// One worker: takes a batch of requests, runs them in order, and sends their replies
    /// together, until the read side closes. Requests read before the client vanished still
    /// run: each may be a write the client is waiting on; only the replies are dropped.
    fn work(&self) {
        let mut batch = Batch::default();
        let mut answers: Vec<Answer> = Vec::with_capacity(BATCH_REQUESTS_MAX);
        let mut read_buffers: Vec<Vec<u8>> = Vec::new();
        loop {
            batch.clear();
            {
                let mut side = self.read_side.lock();
                if side.open && !self.writer.is_dead() {
                    side.open = self.read_batch(&mut side.stream, &mut batch);
                } else {
                    side.open = false;
                }
            }
            if batch.is_empty() {
                return;
            }
            answers.clear();
            let mut requests = batch.requests.as_slice();
            while let Some((request, _)) = requests.first() {
                // A run of WRITEs goes to the volume as one batch (one commit where one is
                // needed); anything else runs on its own.
                let writes = requests
                    .iter()
                    .take_while(|(r, _)| r.command == Command::Write)
                    .count();
                if writes > 0 {
                    let run: Vec<(&Request, &[u8])> = requests[..writes]
                        .iter()
                        .map(|(r, range)| (r, &batch.payload[range.clone()]))
                        .collect();
                    answers.extend(command::run_writes(&self.volume, &run));
                    requests = &requests[writes..];
                    continue;
                }
                let mut buffer = read_buffers.pop().unwrap_or_default();
                answers.push(command::run(&self.volume, request, &mut buffer));
                read_buffers.push(buffer);
                requests = &requests[1..];
            }
            let replies: Vec<Reply<'_>> = batch
                .requests
                .iter()
                .map(|(r, _)| r)
                .zip(&answers)
                .chain(batch.refused.iter().map(|(r, a)| (r, a)))
                .map(|(r, answer)| Reply {
                    command: r.command,
                    cookie: r.cookie,
                    answer,
                })
                .collect();
            self.writer.send_all(self.session, &replies);
            drop(replies);
            for answer in answers.drain(..) {
                if let Answer::Read { data, .. } = answer {
                    read_buffers.push(data);
                }
            }
            read_buffers.truncate(BATCH_REQUESTS_MAX);
            self.gate.leave_many(batch.entered, batch.cost);
        }
    }

    /// Fills `batch`: one request, waiting for it, then those whose bytes are all buffered,
    /// while the gate has room for them. Returns whether the read side stays open (false at
    /// DISC, end of stream or a fatal protocol error).
    fn read_batch(&self, stream: &mut BufReader<Stream>, batch: &mut Batch) -> bool {
        if !matches!(self.read_request(stream, batch, None), Ok(true)) {
            return false;
        }
        while batch.requests.len() + batch.refused.len() < BATCH_REQUESTS_MAX {
            let Some(next) = buffered_request(stream.buffer()) else {
                return true;
            };
            // A worker holding requests must not wait for room it holds itself.
            let cost = gate_cost(&next);
            if !self.gate.try_enter(cost) {
                return true;
            }
            if !matches!(self.read_request(stream, batch, Some(cost)), Ok(true)) {
                return false;
            }
        }
        true
    }

    /// Reads one request into `batch`, entering the gate for it unless `entered` says it was
    /// entered already (with that cost); false at DISC or a fatal protocol error, an error
    /// at end of stream.
    fn read_request(
        &self,
        stream: &mut BufReader<Stream>,
        batch: &mut Batch,
        entered: Option<u64>,
    ) -> io::Result<bool> {
        let mut raw = [0; REQUEST_HEADER_BYTES];
        stream.read_exact(&mut raw)?;
        let request = Request::decode(&raw).ok().filter(|r| {
            r.command != Command::Disc
                // A WRITE longer than any legal payload cannot be skipped safely: hang up
                // before buffering anything (the spec allows it).
                && !(r.command == Command::Write && r.length > PAYLOAD_BYTES_MAX)
        });
        // A bad magic means the stream is out of sync: nothing after it can be trusted.
        let Some(request) = request else {
            if let Some(cost) = entered {
                self.gate.leave(cost);
            }
            return Ok(false);
        };
        let cost = entered.unwrap_or_else(|| {
            let cost = gate_cost(&request);
            self.gate.enter(cost);
            cost
        });
        batch.entered += 1;
        batch.cost += cost;
        let start = batch.payload.len();
        if request.command == Command::Write {
            let want = u64::from(request.length);
            let got = stream.by_ref().take(want).read_to_end(&mut batch.payload)?;
            if got as u64 != want {
                return Err(io::ErrorKind::UnexpectedEof.into());
            }
        }
        if let Err(failure) = command::check(&request, self.session, self.size) {
            batch.payload.truncate(start);
            batch.refused.push((request, Answer::Failed(failure)));
        } else {
            batch.requests.push((request, start..batch.payload.len()));
        }
        Ok(true)
    }
}

/// What a request counts for at the gate: its buffer, plus a fixed overhead.
fn gate_cost(request: &Request) -> u64 {
    let buffer = match request.command {
        Command::Read | Command::Write => u64::from(request.length),
        _ => 0,
    };
    buffer + REQUEST_OVERHEAD_BYTES
}

/// The next request, when it (header, and a WRITE's data) is wholly in `buffered` and is an
/// ordinary one, so that taking it into a batch cannot wait for the client; DISC and bad or
/// oversized requests are left for the next batch to meet first.
fn buffered_request(buffered: &[u8]) -> Option<Request> {
    let request = Request::decode(buffered.get(..REQUEST_HEADER_BYTES)?).ok()?;
    let data = match request.command {
        Command::Disc => return None,
        Command::Write if request.length > PAYLOAD_BYTES_MAX => return None,
        Command::Write => request.length as usize,
        _ => 0,
    };
    (buffered.len() - REQUEST_HEADER_BYTES >= data).then_some(request)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn encoded(command: Command, length: u32) -> Vec<u8> {
        let mut out = Vec::new();
        Request {
            flags: 0,
            command,
            cookie: 9,
            offset: 0,
            length,
        }
        .encode(&mut out);
        out
    }

    #[test]
    fn only_whole_ordinary_requests_join_a_batch() {
        let read = encoded(Command::Read, 4096);
        assert_eq!(
            buffered_request(&read).map(|r| r.command),
            Some(Command::Read)
        );
        assert!(buffered_request(&read[..REQUEST_HEADER_BYTES - 1]).is_none());
        let mut write = encoded(Command::Write, 4096);
        write.extend_from_slice(&[0; 4095]);
        assert!(buffered_request(&write).is_none(), "data not all here yet");
        write.push(0);
        assert_eq!(
            buffered_request(&write).map(|r| r.length),
            Some(4096),
            "header and data buffered"
        );
        assert!(buffered_request(&encoded(Command::Disc, 0)).is_none());
        let oversized = encoded(Command::Write, PAYLOAD_BYTES_MAX + 512);
        assert!(buffered_request(&oversized).is_none());
        let mut bad = read.clone();
        bad[0] ^= 1;
        assert!(
            buffered_request(&bad).is_none(),
            "bad magic waits for its batch"
        );
    }

    #[test]
    fn the_gate_counts_buffers_of_reads_and_writes_only() {
        let r = |command, length| Request {
            flags: 0,
            command,
            cookie: 0,
            offset: 0,
            length,
        };
        assert_eq!(
            gate_cost(&r(Command::Write, 4096)),
            4096 + REQUEST_OVERHEAD_BYTES
        );
        assert_eq!(
            gate_cost(&r(Command::Read, 512)),
            512 + REQUEST_OVERHEAD_BYTES
        );
        assert_eq!(
            gate_cost(&r(Command::Trim, 1 << 30)),
            REQUEST_OVERHEAD_BYTES
        );
    }
}
