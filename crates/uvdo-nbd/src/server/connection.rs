//! One client connection: handshake, then a reader thread feeding a bounded worker pool.
//!
//! The reader decodes each request header, checks it, waits at the gate for room (so payload
//! memory stays bounded), reads a WRITE's data and queues the request. Workers call the
//! volume and send each reply as it completes, so replies may be out of order. DISC, end of
//! stream or a fatal protocol error stop the reader; the workers then finish everything
//! queued and the socket is closed.

use std::io::{self, Read};
use std::sync::Arc;
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::time::Instant;

use parking_lot::Mutex;
use uvdo::{OperatingMode, Volume};

use super::ServeConfig;
use super::command::{self, Answer};
use super::gate::Gate;
use super::negotiate::{ExportInfo, Session, negotiate};
use super::reply::Writer;
use super::stream::Stream;
use crate::proto::PAYLOAD_BYTES_MAX;
use crate::proto::request::{Command, REQUEST_HEADER_BYTES, Request};

/// Bytes a request without a buffer counts for at the gate.
const REQUEST_OVERHEAD_BYTES: u64 = 256;

/// A checked request on its way to a worker.
struct Job {
    request: Request,
    payload: Vec<u8>,
    cost: u64,
}

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
    let writer = Arc::new(Writer::new(write_half));
    let gate = Arc::new(Gate::new(
        config.workers_per_connection + config.queued_requests_max,
        config.in_flight_bytes_max,
    ));
    let (queue, jobs) = sync_channel::<Job>(config.queued_requests_max);
    let jobs = Arc::new(Mutex::new(jobs));
    let workers: Vec<_> = (0..config.workers_per_connection)
        .filter_map(|i| {
            let w = Worker {
                volume: Arc::clone(volume),
                writer: Arc::clone(&writer),
                gate: Arc::clone(&gate),
                jobs: Arc::clone(&jobs),
                session,
            };
            std::thread::Builder::new()
                .name(format!("nbd-worker-{i}"))
                .spawn(move || w.run())
                .ok()
        })
        .collect();
    if !workers.is_empty() {
        let mut reader = Reader {
            stream,
            writer: &writer,
            gate: &gate,
            queue,
            session,
            size: export.size,
        };
        reader.run();
    }
    for w in workers {
        let _ = w.join();
    }
    gate.drain();
    writer.close();
}

struct Reader<'a> {
    stream: Stream,
    writer: &'a Writer,
    gate: &'a Gate,
    queue: SyncSender<Job>,
    session: Session,
    size: u64,
}

impl Reader<'_> {
    /// Reads requests until DISC, end of stream, a dead writer or a fatal protocol error;
    /// dropping the queue then lets the workers finish what is queued and stop.
    fn run(&mut self) {
        let mut raw = [0; REQUEST_HEADER_BYTES];
        while !self.writer.is_dead() {
            if self.stream.read_exact(&mut raw).is_err() {
                return;
            }
            // A bad magic means the stream is out of sync: nothing after it can be trusted.
            let Ok(request) = Request::decode(&raw) else {
                return;
            };
            if request.command == Command::Disc {
                return;
            }
            // A WRITE longer than any legal payload cannot be skipped safely: hang up before
            // buffering anything (the spec allows it).
            if request.command == Command::Write && request.length > PAYLOAD_BYTES_MAX {
                return;
            }
            if self.admit(request).is_err() {
                return;
            }
        }
    }

    fn admit(&mut self, request: Request) -> io::Result<()> {
        let buffer = match request.command {
            Command::Read | Command::Write => u64::from(request.length),
            _ => 0,
        };
        let cost = buffer + REQUEST_OVERHEAD_BYTES;
        self.gate.enter(cost);
        let mut payload = Vec::new();
        if request.command == Command::Write {
            payload = vec![0; request.length as usize];
            if let Err(e) = self.stream.read_exact(&mut payload) {
                self.gate.leave(cost);
                return Err(e);
            }
        }
        if let Err(failure) = command::check(&request, self.session, self.size) {
            let answer = Answer::Failed(failure);
            self.writer
                .send(self.session, request.command, request.cookie, &answer);
            self.gate.leave(cost);
            return Ok(());
        }
        let job = Job {
            request,
            payload,
            cost,
        };
        self.queue.send(job).map_err(|_| {
            self.gate.leave(cost);
            io::Error::from(io::ErrorKind::BrokenPipe)
        })
    }
}

struct Worker {
    volume: Arc<Volume>,
    writer: Arc<Writer>,
    gate: Arc<Gate>,
    jobs: Arc<Mutex<Receiver<Job>>>,
    session: Session,
}

impl Worker {
    fn run(self) {
        loop {
            let job = self.jobs.lock().recv();
            let Ok(job) = job else { return };
            let r = job.request;
            // Requests queued before the client vanished still run: each was admitted and
            // may be a write the client is waiting on; only the reply is dropped.
            let answer = command::run(&self.volume, &r, &job.payload);
            drop(job.payload);
            self.writer.send(self.session, r.command, r.cookie, &answer);
            self.gate.leave(job.cost);
        }
    }
}
