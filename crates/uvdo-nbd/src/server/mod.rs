//! The threaded NBD server: an accept thread, and per connection a handshake and a pool of
//! workers that take turns reading requests (see `connection.rs`).
//!
//! Shutdown ([`ServerHandle::shutdown`]): stop accepting, shut the read side of every
//! connection (its reader sees end of stream, as after DISC), let the workers finish and
//! reply to everything already admitted, join every thread, return.

mod command;
mod connection;
pub mod errno;
mod gate;
mod negotiate;
mod reply;
pub(crate) mod stream;

use std::io;
use std::net::Shutdown;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use parking_lot::Mutex;
use uvdo::Volume;

use crate::listen::Listener;
use stream::Stream;

/// How often the accept thread looks at the stop flag while no client connects.
const ACCEPT_POLL_MS: u16 = 100;

/// Limits and names for [`serve`].
#[derive(Clone, Debug)]
pub struct ServeConfig {
    /// The export's name ("" is always accepted as the default export too).
    pub export_name: String,
    /// Worker threads per connection (the connection's own thread is one): requests are
    /// read, run and answered in parallel up to this many; more wait in the socket.
    pub workers_per_connection: usize,
    /// Payload bytes held by one connection's admitted requests (a single request of up to
    /// 32 MiB is always admitted once the connection is idle).
    pub in_flight_bytes_max: u64,
    /// Connections served at once; more are accepted and closed at once.
    pub connections_max: usize,
    /// Time a client has for the whole handshake (CVE-2024-7409's fix uses 10 s).
    pub handshake_timeout: Duration,
    /// Time one reply may take to write before the connection is given up.
    pub reply_timeout: Duration,
    /// Report on stderr why handshakes end without transmission.
    pub verbose: bool,
}

impl Default for ServeConfig {
    fn default() -> Self {
        Self {
            export_name: String::new(),
            // Two: each takes a batch of requests, so more mostly wait on each other (2 cores).
            workers_per_connection: 2,
            in_flight_bytes_max: 64 << 20,
            connections_max: 64,
            handshake_timeout: Duration::from_secs(10),
            reply_timeout: Duration::from_secs(60),
            verbose: false,
        }
    }
}

/// A connection being served, for shutdown.
#[derive(Debug)]
struct Live {
    stream: Stream,
    thread: JoinHandle<()>,
}

#[derive(Debug, Default)]
struct Shared {
    stop: AtomicBool,
    live: Mutex<Vec<Live>>,
    accepted: AtomicU64,
}

/// A running server; [`ServerHandle::shutdown`] (or drop) stops it.
#[derive(Debug)]
pub struct ServerHandle {
    shared: Arc<Shared>,
    accept: Option<JoinHandle<()>>,
    uri: Option<String>,
}

/// Serves `volume` on `listener` until the handle is shut down.
///
/// # Errors
///
/// The listener cannot be made non-blocking, or the accept thread cannot start.
pub fn serve(
    volume: Arc<Volume>,
    listener: Listener,
    config: ServeConfig,
) -> io::Result<ServerHandle> {
    assert!(config.workers_per_connection >= 1, "at least one worker");
    match &listener {
        Listener::Unix { listener, .. } => listener.set_nonblocking(true)?,
        Listener::Tcp(listener) => listener.set_nonblocking(true)?,
    }
    let uri = listener.uri();
    let shared = Arc::new(Shared::default());
    let accept = {
        let shared = Arc::clone(&shared);
        std::thread::Builder::new()
            .name("nbd-accept".into())
            .spawn(move || accept_loop(&listener, &volume, &config, &shared))?
    };
    Ok(ServerHandle {
        shared,
        accept: Some(accept),
        uri,
    })
}

impl ServerHandle {
    /// The URI clients connect to, when known.
    #[must_use]
    pub fn uri(&self) -> Option<&str> {
        self.uri.as_deref()
    }

    /// Connections accepted so far.
    #[must_use]
    pub fn connections_accepted(&self) -> u64 {
        self.shared.accepted.load(Ordering::Relaxed)
    }

    /// Stops accepting, drains every connection (admitted requests are run and answered),
    /// and returns once every server thread has ended and dropped its `Arc<Volume>`.
    pub fn shutdown(mut self) {
        self.stop();
    }

    fn stop(&mut self) {
        self.shared.stop.store(true, Ordering::Release);
        if let Some(accept) = self.accept.take() {
            let _ = accept.join();
        }
        let live = std::mem::take(&mut *self.shared.live.lock());
        for c in &live {
            c.stream.shutdown(Shutdown::Read);
        }
        for c in live {
            let _ = c.thread.join();
        }
    }
}

impl Drop for ServerHandle {
    fn drop(&mut self) {
        self.stop();
    }
}

fn accept_loop(listener: &Listener, volume: &Arc<Volume>, config: &ServeConfig, shared: &Shared) {
    while !shared.stop.load(Ordering::Acquire) {
        let mut fds = [PollFd::new(listener.fd(), PollFlags::POLLIN)];
        match poll(&mut fds, PollTimeout::from(ACCEPT_POLL_MS)) {
            Ok(0) | Err(nix::errno::Errno::EINTR) => continue,
            Ok(_) => {}
            // The listener itself is broken: stop accepting; connections go on.
            Err(_) => return,
        }
        let stream = match listener.accept() {
            Ok(stream) => stream,
            Err(_) => continue,
        };
        shared.accepted.fetch_add(1, Ordering::Relaxed);
        let mut live = shared.live.lock();
        let (done, running): (Vec<_>, Vec<_>) = std::mem::take(&mut *live)
            .into_iter()
            .partition(|c| c.thread.is_finished());
        *live = running;
        for c in done {
            let _ = c.thread.join();
        }
        if live.len() >= config.connections_max {
            stream.shutdown(Shutdown::Both);
            continue;
        }
        let Ok(control) = stream.try_clone() else {
            continue;
        };
        if stream.set_nonblocking(false).is_err() {
            continue;
        }
        let volume = Arc::clone(volume);
        let config = config.clone();
        let spawned = std::thread::Builder::new()
            .name("nbd-conn".into())
            .spawn(move || connection::serve_connection(stream, &volume, &config));
        if let Ok(thread) = spawned {
            live.push(Live {
                stream: control,
                thread,
            });
        }
    }
}
