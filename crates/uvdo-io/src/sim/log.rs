//! The event log: every write (with its bytes), FUA write, discard, flush, size change and
//! injected fault, in completion order, so a harness can rebuild the device at any event.
//!
//! Writes are logged as they reached the device, after any injected fault changed them: a
//! misdirected write at the offset where it landed, a bit-flipped write with the flipped bytes,
//! a lost write with `lost` set. The [`Event::Fault`] just before such a write says what was
//! asked for. Failed operations log only their fault.
//!
//! Invariant: replaying events `0..=i` from the initial image through [`apply_event`] gives the
//! cache the live store had just after event `i`. Checkpoints (the image after some flushes)
//! only shorten the replay; they never change its result.

use std::sync::Arc;

use super::cache::{Cache, Durability, Entry, Payload};
use super::fault::FaultRecord;
use super::image::Image;

/// Fewest events between two checkpoints, bounding their memory to one image index per this
/// many events.
const CHECKPOINT_SPACING_EVENTS: usize = 64;

/// One thing that happened to the simulated device.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    /// A completed write, as it reached the device.
    Write {
        /// Byte offset where it landed.
        offset: u64,
        /// The bytes that reached the device.
        data: Arc<[u8]>,
        /// Written with FUA: durable on completion (unless lost).
        fua: bool,
        /// Acknowledged but lost by the device: gone at the next flush, never durable.
        lost: bool,
    },
    /// A completed discard: the range reads as zeros, cached like a write of zeros.
    Discard {
        /// Byte offset of the range.
        offset: u64,
        /// Length of the range in bytes.
        len: u64,
    },
    /// A completed flush: every cached write before it is durable.
    Flush,
    /// The store grew; durable at once.
    Grow {
        /// The new size.
        size_bytes: u64,
    },
    /// A fault was injected into an operation.
    Fault(FaultRecord),
}

/// Applies `event`, the log's event number `index`, to `cache`.
pub(super) fn apply_event(cache: &mut Cache, index: usize, event: &Event) {
    match event {
        Event::Write {
            offset,
            data,
            fua,
            lost,
        } => {
            let durability = match (fua, lost) {
                (_, true) => Durability::Lost,
                (true, false) => Durability::Fua,
                (false, false) => Durability::Cached,
            };
            cache.push(Entry {
                event: index,
                offset: *offset,
                payload: Payload::Bytes(Arc::clone(data)),
                durability,
            });
        }
        Event::Discard { offset, len } => cache.push(Entry {
            event: index,
            offset: *offset,
            payload: Payload::Zeros { len: *len },
            durability: Durability::Cached,
        }),
        Event::Flush => cache.flush(),
        Event::Grow { size_bytes } => cache.grow(*size_bytes),
        Event::Fault(_) => {}
    }
}

/// The image after a flush, from which a replay can start.
#[derive(Clone, Debug)]
struct Checkpoint {
    /// Index of the first event after the flush.
    next_event: usize,
    image: Image,
}

/// The events of one store since it was made, with replay checkpoints.
#[derive(Clone, Debug)]
pub(super) struct EventLog {
    events: Vec<Event>,
    /// Sorted by `next_event`; the first is the initial image at event 0.
    checkpoints: Vec<Checkpoint>,
}

impl EventLog {
    pub(super) fn new(initial: Image) -> Self {
        Self {
            events: Vec::new(),
            checkpoints: vec![Checkpoint {
                next_event: 0,
                image: initial,
            }],
        }
    }

    pub(super) fn events(&self) -> &[Event] {
        &self.events
    }

    /// Appends `event`; `cache` is the state after it, checkpointed after some flushes.
    pub(super) fn push(&mut self, event: Event, cache: &Cache) {
        let flushed = event == Event::Flush;
        self.events.push(event);
        let last = self.checkpoints.last().expect("the initial checkpoint");
        if flushed && self.events.len() - last.next_event >= CHECKPOINT_SPACING_EVENTS {
            self.checkpoints.push(Checkpoint {
                next_event: self.events.len(),
                image: cache.durable().clone(),
            });
        }
    }

    /// The cache just after event `index`. `seed` is the store's, for messages.
    pub(super) fn replay(&self, index: usize, seed: u64) -> Cache {
        assert!(
            index < self.events.len(),
            "no event {index} in a log of {} (store seed {seed})",
            self.events.len()
        );
        let start = self
            .checkpoints
            .partition_point(|checkpoint| checkpoint.next_event <= index)
            - 1;
        let checkpoint = &self.checkpoints[start];
        let mut cache = Cache::new(checkpoint.image.clone());
        let tail = &self.events[checkpoint.next_event..=index];
        for (offset, event) in tail.iter().enumerate() {
            apply_event(&mut cache, checkpoint.next_event + offset, event);
        }
        cache
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(offset: u64, byte: u8, fua: bool) -> Event {
        Event::Write {
            offset,
            data: Arc::from(vec![byte; 512]),
            fua,
            lost: false,
        }
    }

    /// Runs `events` live, checking every replay against the live cache.
    fn check_replays(events: &[Event]) {
        let mut cache = Cache::new(Image::zeroed(8192));
        let mut log = EventLog::new(cache.volatile().clone());
        let mut live = Vec::new();
        for (index, event) in events.iter().enumerate() {
            apply_event(&mut cache, index, event);
            log.push(event.clone(), &cache);
            live.push(cache.clone());
        }
        for (index, expected) in live.iter().enumerate() {
            let replayed = log.replay(index, 0);
            assert_eq!(replayed.durable().to_vec(), expected.durable().to_vec());
            assert_eq!(replayed.volatile().to_vec(), expected.volatile().to_vec());
            let events = |cache: &Cache| cache.pending().map(|e| e.event).collect::<Vec<_>>();
            assert_eq!(events(&replayed), events(expected), "event {index}");
        }
    }

    #[test]
    fn replays_match_the_live_cache_with_and_without_checkpoints() {
        let mut events = Vec::new();
        for round in 0..300_u64 {
            let byte = u8::try_from(round % 256).unwrap();
            let offset = (round * 512) % 8192;
            events.push(write(offset, byte, round % 7 == 0));
            if round % 5 == 4 {
                events.push(Event::Flush);
            }
            if round % 11 == 0 {
                events.push(Event::Discard {
                    offset: 0,
                    len: 1024,
                });
            }
        }
        check_replays(&events);
    }

    #[test]
    fn checkpoints_are_spaced() {
        let mut cache = Cache::new(Image::zeroed(4096));
        let mut log = EventLog::new(cache.volatile().clone());
        for index in 0..200 {
            let event = if index % 2 == 0 {
                write(0, 1, false)
            } else {
                Event::Flush
            };
            apply_event(&mut cache, index, &event);
            log.push(event, &cache);
        }
        let starts: Vec<usize> = log.checkpoints.iter().map(|c| c.next_event).collect();
        assert_eq!(starts, [0, 64, 128, 192]);
    }

    #[test]
    #[should_panic(expected = "store seed 5")]
    fn replaying_past_the_end_names_the_seed() {
        let log = EventLog::new(Image::zeroed(4096));
        let _ = log.replay(0, 5);
    }
}
