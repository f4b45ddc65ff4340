//! The bound on a connection's in-flight requests and the bytes they hold.

use parking_lot::{Condvar, Mutex};

/// Counts requests accepted but not yet answered, and their buffers.
#[derive(Debug)]
pub(crate) struct Gate {
    state: Mutex<(usize, u64)>,
    changed: Condvar,
    requests_max: usize,
    bytes_max: u64,
}

impl Gate {
    pub(crate) fn new(requests_max: usize, bytes_max: u64) -> Self {
        assert!(requests_max >= 1, "a gate must admit one request");
        Self {
            state: Mutex::new((0, 0)),
            changed: Condvar::new(),
            requests_max,
            bytes_max,
        }
    }

    /// Waits for room for one request holding `bytes`. A request larger than the byte bound
    /// still passes once nothing else is in flight, so any legal payload makes progress.
    pub(crate) fn enter(&self, bytes: u64) {
        let mut state = self.state.lock();
        while state.0 >= self.requests_max || (state.0 > 0 && state.1 + bytes > self.bytes_max) {
            self.changed.wait(&mut state);
        }
        state.0 += 1;
        state.1 += bytes;
    }

    /// Admits a request holding `bytes` if there is room now, without waiting.
    pub(crate) fn try_enter(&self, bytes: u64) -> bool {
        let mut state = self.state.lock();
        let room = state.0 < self.requests_max && state.1 + bytes <= self.bytes_max;
        if room {
            state.0 += 1;
            state.1 += bytes;
        }
        room
    }

    /// A request admitted with `bytes` was answered.
    pub(crate) fn leave(&self, bytes: u64) {
        self.leave_many(1, bytes);
    }

    /// `requests` admitted with `bytes` in total were answered.
    pub(crate) fn leave_many(&self, requests: usize, bytes: u64) {
        let mut state = self.state.lock();
        assert!(
            state.0 >= requests && state.1 >= bytes,
            "leaving a gate not entered"
        );
        state.0 -= requests;
        state.1 -= bytes;
        self.changed.notify_all();
    }

    /// Waits until every admitted request was answered.
    pub(crate) fn drain(&self) {
        let mut state = self.state.lock();
        while state.0 > 0 {
            self.changed.wait(&mut state);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn an_oversized_request_passes_alone() {
        let gate = Gate::new(4, 10);
        gate.enter(100);
        gate.leave(100);
        gate.drain();
    }

    #[test]
    fn enter_waits_for_room() {
        let gate = Arc::new(Gate::new(1, 10));
        gate.enter(1);
        let other = Arc::clone(&gate);
        let waiter = std::thread::spawn(move || {
            other.enter(1);
            other.leave(1);
        });
        gate.leave(1);
        waiter.join().unwrap();
        gate.drain();
    }
}
