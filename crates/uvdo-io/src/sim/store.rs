//! [`SimStore`]: the simulated disk, tying the write cache, the event log, crashes and faults
//! together behind the [`Storage`] trait.

use std::fmt;
use std::sync::Arc;

use parking_lot::Mutex;
use uvdo_format::SECTOR_SIZE;

use crate::error::{IoError, IoOp};
use crate::storage::{Storage, check_range};

use super::cache::Cache;
use super::crash::{CrashPlan, PendingWrite, crash_image, pending_writes};
use super::fault::{FaultId, FaultOutcome, FaultRecord, FaultRule, Faults, Operation};
use super::image::{Image, to_bytes, to_index};
use super::log::{Event, EventLog, apply_event};

/// A simulated disk with a volatile write cache, crashes and injected faults.
///
/// See the [module documentation](super) for the model.
pub struct SimStore {
    seed: u64,
    state: Mutex<State>,
}

#[derive(Debug)]
struct State {
    cache: Cache,
    log: EventLog,
    faults: Faults,
}

impl State {
    fn size_bytes(&self) -> u64 {
        self.cache.volatile().size_bytes()
    }

    /// Logs `event` and applies it to the cache.
    fn record(&mut self, event: Event) {
        apply_event(&mut self.cache, self.log.events().len(), &event);
        self.log.push(event, &self.cache);
    }

    /// Asks the fault rules about an operation, logging any fault they inject.
    fn fault(&mut self, op: IoOp, offset: u64, len: u64) -> Option<FaultRecord> {
        let operation = Operation {
            op,
            offset,
            len,
            size_bytes: self.size_bytes(),
        };
        let record = self.faults.check(&operation)?;
        self.record(Event::Fault(record));
        Some(record)
    }
}

/// Flips bit `bit` of the byte at device offset `byte` in `buf`, which starts at `offset`.
fn flip(buf: &mut [u8], offset: u64, byte: u64, bit: u8) {
    buf[to_index(byte - offset)] ^= 1 << bit;
}

impl SimStore {
    /// A store of `size_bytes` zeros with seed 0.
    ///
    /// # Panics
    ///
    /// If `size_bytes` is not a multiple of 512.
    #[must_use]
    pub fn new(size_bytes: u64) -> Self {
        Self::with_seed(size_bytes, 0)
    }

    /// A store of `size_bytes` zeros whose faults draw from `seed`.
    ///
    /// # Panics
    ///
    /// If `size_bytes` is not a multiple of 512.
    #[must_use]
    pub fn with_seed(size_bytes: u64, seed: u64) -> Self {
        Self::from_parts(Image::zeroed(size_bytes), seed)
    }

    /// A store holding a copy of `bytes`, durable, with seed 0.
    ///
    /// # Panics
    ///
    /// If the length is not a multiple of 512.
    #[must_use]
    pub fn from_image(bytes: &[u8]) -> Self {
        Self::from_image_with_seed(bytes, 0)
    }

    /// A store holding a copy of `bytes`, durable, whose faults draw from `seed`.
    ///
    /// # Panics
    ///
    /// If the length is not a multiple of 512.
    #[must_use]
    pub fn from_image_with_seed(bytes: &[u8], seed: u64) -> Self {
        Self::from_parts(Image::from_bytes(bytes), seed)
    }

    fn from_parts(image: Image, seed: u64) -> Self {
        assert!(
            image.size_bytes().is_multiple_of(to_bytes(SECTOR_SIZE)),
            "simulated store of {} bytes is not whole sectors (store seed {seed})",
            image.size_bytes()
        );
        Self {
            seed,
            state: Mutex::new(State {
                log: EventLog::new(image.clone()),
                cache: Cache::new(image),
                faults: Faults::new(seed),
            }),
        }
    }

    /// The seed this store's faults draw from; crashed copies keep it.
    #[must_use]
    pub fn seed(&self) -> u64 {
        self.seed
    }

    /// What survives a crash that drops every pending write.
    #[must_use]
    pub fn durable_image(&self) -> Vec<u8> {
        self.state.lock().cache.durable().to_vec()
    }

    /// What reads see now.
    #[must_use]
    pub fn volatile_image(&self) -> Vec<u8> {
        self.state.lock().cache.volatile().to_vec()
    }

    /// Every event so far, in order; event `i` is `events()[i]`.
    #[must_use]
    pub fn events(&self) -> Vec<Event> {
        self.state.lock().log.events().to_vec()
    }

    /// The number of events so far.
    #[must_use]
    pub fn event_count(&self) -> usize {
        self.state.lock().log.events().len()
    }

    /// The writes a crash now may drop, apply or tear (not FUA writes, not lost writes).
    #[must_use]
    pub fn pending_count(&self) -> usize {
        self.state.lock().cache.pending().count()
    }

    /// The writes a crash now may drop, apply or tear, in completion order.
    #[must_use]
    pub fn pending_writes(&self) -> Vec<PendingWrite> {
        pending_writes(&self.state.lock().cache)
    }

    /// The number of pending writes just after event `event_index`.
    ///
    /// # Panics
    ///
    /// If there is no such event.
    #[must_use]
    pub fn pending_count_at(&self, event_index: usize) -> usize {
        let state = self.state.lock();
        state.log.replay(event_index, self.seed).pending().count()
    }

    /// The pending writes just after event `event_index`, in completion order.
    ///
    /// # Panics
    ///
    /// If there is no such event.
    #[must_use]
    pub fn pending_writes_at(&self, event_index: usize) -> Vec<PendingWrite> {
        let state = self.state.lock();
        pending_writes(&state.log.replay(event_index, self.seed))
    }

    /// A new store holding what a power cut now could leave, as `plan` says, with nothing
    /// pending, no events and no faults; this store is unchanged.
    ///
    /// # Panics
    ///
    /// If an explicit plan does not fit the pending writes.
    #[must_use]
    pub fn crash(&self, plan: CrashPlan) -> SimStore {
        let image = crash_image(&self.state.lock().cache, plan, self.seed);
        Self::from_parts(image, self.seed)
    }

    /// Like [`SimStore::crash`], for a power cut just after event `event_index`.
    ///
    /// # Panics
    ///
    /// If there is no such event, or an explicit plan does not fit the pending writes.
    #[must_use]
    pub fn crash_at(&self, event_index: usize, plan: CrashPlan) -> SimStore {
        let cache = self.state.lock().log.replay(event_index, self.seed);
        Self::from_parts(crash_image(&cache, plan, self.seed), self.seed)
    }

    /// Adds a fault rule, asked after those already injected.
    ///
    /// # Panics
    ///
    /// If the rule is malformed: a countdown of 0, a probability above one, an empty range or
    /// an unaligned misdirection target.
    pub fn inject(&self, rule: FaultRule) -> FaultId {
        self.state.lock().faults.inject(rule)
    }

    /// Removes every fault rule.
    pub fn clear_faults(&self) {
        self.state.lock().faults.clear();
    }

    fn write(&self, offset: u64, buf: &[u8], fua: bool) -> Result<(), IoError> {
        let len = to_bytes(buf.len());
        let mut state = self.state.lock();
        check_range(IoOp::Write, offset, len, state.size_bytes())?;
        let mut data = buf.to_vec();
        let (mut landed, mut lost) = (offset, false);
        if let Some(record) = state.fault(IoOp::Write, offset, len) {
            match record.outcome {
                FaultOutcome::Error { errno } => {
                    return Err(IoError::from_errno(IoOp::Write, offset, len, errno));
                }
                FaultOutcome::BitFlip { byte, bit } => flip(&mut data, offset, byte, bit),
                FaultOutcome::Lost => lost = true,
                FaultOutcome::Misdirected { landed_at } => landed = landed_at,
            }
        }
        state.record(Event::Write {
            offset: landed,
            data: Arc::from(data),
            fua,
            lost,
        });
        Ok(())
    }
}

impl Storage for SimStore {
    fn volatile_write_cache(&self) -> Option<bool> {
        // The simulated store models exactly a volatile write cache.
        Some(true)
    }

    fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<(), IoError> {
        let len = to_bytes(buf.len());
        let mut state = self.state.lock();
        check_range(IoOp::Read, offset, len, state.size_bytes())?;
        let fault = state.fault(IoOp::Read, offset, len);
        if let Some(FaultOutcome::Error { errno }) = fault.map(|record| record.outcome) {
            return Err(IoError::from_errno(IoOp::Read, offset, len, errno));
        }
        state.cache.volatile().read(offset, buf);
        if let Some(FaultOutcome::BitFlip { byte, bit }) = fault.map(|record| record.outcome) {
            flip(buf, offset, byte, bit);
        }
        Ok(())
    }

    fn write_at(&self, offset: u64, buf: &[u8]) -> Result<(), IoError> {
        self.write(offset, buf, false)
    }

    fn write_at_fua(&self, offset: u64, buf: &[u8]) -> Result<(), IoError> {
        self.write(offset, buf, true)
    }

    fn flush(&self) -> Result<(), IoError> {
        let mut state = self.state.lock();
        if let Some(record) = state.fault(IoOp::Flush, 0, 0) {
            let FaultOutcome::Error { errno } = record.outcome else {
                unreachable!("flush faults are errors (store seed {})", self.seed);
            };
            return Err(IoError::from_errno(IoOp::Flush, 0, 0, errno));
        }
        state.record(Event::Flush);
        Ok(())
    }

    fn size_bytes(&self) -> u64 {
        self.state.lock().size_bytes()
    }

    /// Discarded ranges read as zeros; until a flush a crash may keep, drop or tear the
    /// discard like a write of zeros.
    fn discard(&self, offset: u64, len: u64) -> Result<(), IoError> {
        let mut state = self.state.lock();
        check_range(IoOp::Discard, offset, len, state.size_bytes())?;
        state.record(Event::Discard { offset, len });
        Ok(())
    }

    /// Grows the store with zeros, durable at once. Shrinking is `Unsupported`.
    fn resize(&self, size_bytes: u64) -> Result<(), IoError> {
        let mut state = self.state.lock();
        let current = state.size_bytes();
        if size_bytes < current {
            return Err(IoError::Unsupported { op: IoOp::Resize });
        }
        if !size_bytes.is_multiple_of(to_bytes(SECTOR_SIZE)) {
            return Err(IoError::Misaligned {
                op: IoOp::Resize,
                offset: size_bytes,
                len: 0,
            });
        }
        if size_bytes > current {
            state.record(Event::Grow { size_bytes });
        }
        Ok(())
    }
}

impl fmt::Debug for SimStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut out = f.debug_struct("SimStore");
        out.field("seed", &self.seed);
        match self.state.try_lock() {
            Some(state) => out
                .field("size_bytes", &state.size_bytes())
                .field("events", &state.log.events().len())
                .field("pending", &state.cache.pending().count()),
            None => out.field("state", &"<locked>"),
        };
        out.finish()
    }
}

#[cfg(test)]
mod tests {
    use super::super::{FaultEffect, Trigger};
    use super::*;

    const BLOCK: usize = 4096;

    fn block(byte: u8) -> Vec<u8> {
        vec![byte; BLOCK]
    }

    fn read_block(store: &SimStore, offset: u64) -> Vec<u8> {
        let mut buf = block(0);
        store.read_at(offset, &mut buf).expect("read");
        buf
    }

    fn faults(store: &SimStore) -> Vec<FaultRecord> {
        let events = store.events().into_iter();
        events
            .filter_map(|event| match event {
                Event::Fault(record) => Some(record),
                _ => None,
            })
            .collect()
    }

    fn errno(result: Result<(), IoError>) -> i32 {
        result.expect_err("the fault fires").errno()
    }

    fn once(effect: FaultEffect) -> FaultRule {
        FaultRule::new(Trigger::Countdown(1), effect)
    }

    #[test]
    fn reads_see_cached_writes_and_flush_makes_them_durable() {
        let store = SimStore::new(4 * 4096);
        store.write_at(4096, &block(1)).unwrap();
        assert_eq!(read_block(&store, 4096), block(1));
        assert!(store.durable_image().iter().all(|&b| b == 0));
        assert_eq!(store.pending_count(), 1);
        store.flush().unwrap();
        assert_eq!(store.durable_image(), store.volatile_image());
        assert_eq!(store.durable_image()[4096..8192], block(1)[..]);
        assert_eq!(store.events()[1], Event::Flush);
    }

    #[test]
    fn fua_is_durable_alone() {
        let store = SimStore::new(2 * 4096);
        store.write_at(0, &block(1)).unwrap();
        store.write_at_fua(4096, &block(2)).unwrap();
        let durable = store.durable_image();
        assert_eq!(durable[..4096], block(0)[..]);
        assert_eq!(durable[4096..], block(2)[..]);
        assert_eq!(store.pending_count(), 1);
    }

    #[test]
    fn ranges_are_checked() {
        let store = SimStore::new(4096);
        assert!(matches!(
            store.write_at(4096, &[0; 512]),
            Err(IoError::OutOfRange { .. })
        ));
        assert!(matches!(
            store.read_at(100, &mut [0; 512]),
            Err(IoError::Misaligned { .. })
        ));
        assert_eq!(store.event_count(), 0);
    }

    #[test]
    fn discards_read_as_zeros_and_growth_is_durable() {
        let store = SimStore::from_image(&[9; 8192]);
        store.discard(0, 4096).unwrap();
        assert_eq!(read_block(&store, 0), block(0));
        assert!(store.durable_image().iter().all(|&b| b == 9));
        store.resize(3 * 4096).unwrap();
        assert_eq!(store.size_bytes(), 3 * 4096);
        assert_eq!(store.durable_image().len(), 3 * 4096);
        assert!(matches!(
            store.resize(4096),
            Err(IoError::Unsupported { op: IoOp::Resize })
        ));
        assert!(matches!(
            store.resize(3 * 4096 + 1),
            Err(IoError::Misaligned { .. })
        ));
    }

    #[test]
    fn read_errors_fail_the_nth_read_in_range_only() {
        let store = SimStore::new(4 * 4096);
        let rule = FaultRule::new(Trigger::Countdown(2), FaultEffect::ReadError);
        store.inject(rule.in_range(8192..12288));
        read_block(&store, 0);
        read_block(&store, 8192);
        read_block(&store, 0);
        assert_eq!(errno(store.read_at(8192, &mut block(0))), libc::EIO);
        read_block(&store, 8192);
        let records = faults(&store);
        assert_eq!(records.len(), 1);
        assert_eq!((records[0].op, records[0].offset), (IoOp::Read, 8192));
    }

    #[test]
    fn write_errors_and_no_space_change_nothing() {
        let store = SimStore::new(4096);
        store.inject(once(FaultEffect::WriteError));
        // The first rule takes the first write, so the second sees only the second.
        store.inject(once(FaultEffect::NoSpace));
        assert_eq!(errno(store.write_at(0, &block(1))), libc::EIO);
        assert_eq!(errno(store.write_at_fua(0, &block(1))), libc::ENOSPC);
        assert_eq!(read_block(&store, 0), block(0));
        assert_eq!(store.event_count(), 2);
        assert!(store.events().iter().all(|e| matches!(e, Event::Fault(_))));
        store.write_at(0, &block(1)).unwrap();
        assert_eq!(read_block(&store, 0), block(1));
    }

    #[test]
    fn flush_errors_make_nothing_durable() {
        let store = SimStore::new(4096);
        store.write_at(0, &block(1)).unwrap();
        store.inject(once(FaultEffect::FlushError));
        assert_eq!(errno(store.flush()), libc::EIO);
        assert_eq!(store.durable_image(), block(0));
        assert_eq!(store.pending_count(), 1);
        store.flush().unwrap();
        assert_eq!(store.durable_image(), block(1));
    }

    fn differing_bits(a: &[u8], b: &[u8]) -> Vec<(usize, u32)> {
        let pairs = a.iter().zip(b).enumerate();
        pairs
            .filter(|(_, (x, y))| x != y)
            .map(|(index, (x, y))| (index, (x ^ y).count_ones()))
            .collect()
    }

    #[test]
    fn read_bit_flips_change_one_bit_of_the_returned_data_only() {
        let store = SimStore::from_image(&block(0x5A));
        store.inject(once(FaultEffect::ReadBitFlip));
        let read = read_block(&store, 0);
        let flipped = differing_bits(&read, &block(0x5A));
        assert_eq!(flipped.len(), 1);
        assert_eq!(flipped[0].1, 1);
        let FaultOutcome::BitFlip { byte, .. } = faults(&store)[0].outcome else {
            panic!("not a bit flip");
        };
        assert_eq!(to_index(byte), flipped[0].0);
        assert_eq!(read_block(&store, 0), block(0x5A));
        assert_eq!(store.volatile_image(), block(0x5A));
    }

    #[test]
    fn write_bit_flips_reach_the_image_inside_the_range() {
        let store = SimStore::new(4 * 4096);
        let rule = FaultRule::new(Trigger::Always, FaultEffect::WriteBitFlip);
        store.inject(rule.in_range(5000..5001));
        store.write_at(4096, &block(0xFF)).unwrap();
        let flipped = differing_bits(&read_block(&store, 4096), &block(0xFF));
        assert_eq!(flipped.len(), 1);
        assert_eq!((flipped[0].0 + 4096, flipped[0].1), (5000, 1));
        store.write_at(0, &block(0xFF)).unwrap();
        assert_eq!(read_block(&store, 0), block(0xFF));
    }

    #[test]
    fn lost_writes_are_read_until_the_flush_and_never_survive() {
        let store = SimStore::from_image(&block(1));
        store.inject(once(FaultEffect::LostWrite));
        store.write_at_fua(0, &block(2)).unwrap();
        assert_eq!(read_block(&store, 0), block(2));
        assert_eq!(store.durable_image(), block(1));
        assert_eq!(store.pending_count(), 0);
        assert_eq!(store.crash(CrashPlan::KeepAll).volatile_image(), block(1));
        store.flush().unwrap();
        assert_eq!(read_block(&store, 0), block(1));
        assert_eq!(store.durable_image(), block(1));
    }

    #[test]
    fn misdirected_writes_land_at_the_target_and_leave_the_intended_place() {
        let store = SimStore::new(4 * 4096);
        let target = Some(3 * 4096);
        store.inject(once(FaultEffect::MisdirectedWrite { target }));
        store.write_at_fua(4096, &block(7)).unwrap();
        assert_eq!(read_block(&store, 4096), block(0));
        assert_eq!(read_block(&store, 3 * 4096), block(7));
        assert_eq!(store.durable_image()[3 * 4096..], block(7)[..]);
        let landed = FaultOutcome::Misdirected {
            landed_at: 3 * 4096,
        };
        assert_eq!(faults(&store)[0].outcome, landed);
    }

    #[test]
    fn drawn_misdirections_depend_only_on_the_seed() {
        let landing = |seed| {
            let store = SimStore::with_seed(64 * 4096, seed);
            store.inject(once(FaultEffect::MisdirectedWrite { target: None }));
            store.write_at(0, &block(3)).unwrap();
            let image = store.volatile_image();
            let landed = image.chunks(BLOCK).position(|chunk| chunk == block(3));
            landed.expect("the write landed somewhere")
        };
        assert_ne!(landing(1), 0);
        assert_eq!(landing(1), landing(1));
        let places: std::collections::BTreeSet<usize> = (0..20).map(landing).collect();
        assert!(places.len() > 1, "every seed misdirected to {places:?}");
    }

    #[test]
    fn cleared_faults_no_longer_fire() {
        let store = SimStore::new(4096);
        store.inject(FaultRule::new(Trigger::Always, FaultEffect::ReadError));
        assert!(store.read_at(0, &mut block(0)).is_err());
        store.clear_faults();
        read_block(&store, 0);
        assert_eq!(faults(&store).len(), 1);
    }

    #[test]
    #[should_panic(expected = "store seed 42")]
    fn malformed_rules_name_the_seed() {
        let store = SimStore::with_seed(4096, 42);
        store.inject(FaultRule::new(
            Trigger::Countdown(0),
            FaultEffect::ReadError,
        ));
    }

    #[test]
    fn crashed_stores_start_clean_and_keep_the_seed() {
        let store = SimStore::with_seed(4096, 11);
        store.write_at(0, &block(1)).unwrap();
        let crashed = store.crash(CrashPlan::KeepAll);
        assert_eq!(crashed.seed(), 11);
        assert_eq!(crashed.event_count(), 0);
        assert_eq!(crashed.durable_image(), block(1));
        assert_eq!(crashed.volatile_image(), block(1));
        assert_eq!(store.pending_count(), 1);
        assert!(format!("{store:?}").contains("seed: 11"));
    }

    #[test]
    fn the_store_is_send_and_sync() {
        fn shared<T: Send + Sync>() {}
        shared::<SimStore>();
    }
}
