//! Recovering mode, the online part of crash recovery: rebuilding the reference counts of
//! unrecovered slabs from their journals while the volume serves (SPEC section 5).
//!
//! Open leaves every slab the crash may have changed unrecovered (`depot/scrub.rs`), after
//! scrubbing the urgent ones itself: a slab whose journal is under pressure, and one slab
//! when no recovered slab has a free block. A background thread then scrubs one slab at a
//! time: the slab journal reads happen without the metadata lock (the chain found at open
//! cannot change while the slab is unrecovered); applying them takes it once per slab. Other
//! threads scrub a slab themselves when they cannot wait: a committer whose unrecovered slab
//! journal is under pressure, a writer that finds no free block in recovered slabs.
//!
//! The scrubber writes nothing until the last slab is recovered: a scrubbed slab's counts
//! are dirty and reach the disk as any slab's do, and its summary entry stays dirty until
//! then, so a crash at any point recovers from the slab journals again. When the last slab
//! is recovered, the super block says `Dirty` and normal mode (it said `Recovering`), and the
//! volume is in normal mode. One scrub runs at a time (`running`); lock order: `running`
//! after everything a caller holds, then `meta`; `mode` then `super_block` to finish.

use std::sync::Arc;
use std::thread::JoinHandle;

use parking_lot::{Condvar, Mutex, RwLock};
use uvdo_format::BlockType;
use uvdo_format::super_block::{OperatingMode, SuperBlock, VolumeState};
use uvdo_io::Storage;

use super::{Meta, ModeState, Volume};
use crate::depot::scrub::read_for_scrub;
use crate::error::VolumeError;

/// What the scrubbing thread is told.
#[derive(Debug, Default)]
struct Control {
    paused: bool,
    stop: bool,
}

/// Everything scrubbing needs, shared by the volume and its scrubbing thread.
#[derive(Debug)]
pub(super) struct Scrubber {
    store: Arc<dyn Storage>,
    meta: Arc<Mutex<Meta>>,
    mode: Arc<RwLock<ModeState>>,
    super_block: Arc<Mutex<SuperBlock>>,
    /// Slabs unrecovered when the volume came online, for progress.
    total: usize,
    /// Held by the one scrub in progress.
    running: Mutex<()>,
    control: Mutex<Control>,
    /// Signalled on every change of `control`, every slab recovered and every mode change.
    changed: Condvar,
}

impl Scrubber {
    pub(super) fn new(
        store: Arc<dyn Storage>,
        meta: Arc<Mutex<Meta>>,
        mode: Arc<RwLock<ModeState>>,
        super_block: Arc<Mutex<SuperBlock>>,
        paused: bool,
    ) -> Self {
        let total = meta.lock().depot.unrecovered_count();
        Self {
            store,
            meta,
            mode,
            super_block,
            total,
            running: Mutex::new(()),
            control: Mutex::new(Control {
                paused,
                stop: false,
            }),
            changed: Condvar::new(),
        }
    }

    /// Starts the background thread when there is anything to scrub.
    pub(super) fn start(self: &Arc<Self>) -> Option<JoinHandle<()>> {
        if self.mode.read().mode != OperatingMode::Recovering {
            return None;
        }
        let scrubber = Arc::clone(self);
        let spawned = std::thread::Builder::new()
            .name("uvdo-scrub".to_owned())
            .spawn(move || scrubber.run());
        // Without a thread, writers and committers still scrub what they need, and
        // `wait_recovered` callers wait for them; a clean close resumes it next open.
        spawned.ok()
    }

    fn run(&self) {
        loop {
            {
                let mut control = self.control.lock();
                while control.paused && !control.stop {
                    self.changed.wait(&mut control);
                }
                if control.stop {
                    return;
                }
            }
            match self.scrub_one(false) {
                Ok(true) => {}
                Ok(false) | Err(_) => return,
            }
        }
    }

    /// Tells the thread to stop after the slab in progress.
    pub(super) fn stop(&self) {
        self.control.lock().stop = true;
        self.changed.notify_all();
    }

    pub(super) fn resume(&self) {
        self.control.lock().paused = false;
        self.changed.notify_all();
    }

    /// Percent of the slabs unrecovered at open that are recovered, while recovering.
    pub(super) fn progress_percent(&self, unrecovered: usize) -> u8 {
        if self.total == 0 {
            return 100;
        }
        let done = self.total.saturating_sub(unrecovered) * 100 / self.total;
        u8::try_from(done.min(99)).expect("below 100")
    }

    /// Scrubs one unrecovered slab (with `urgent_only`, only one `next_to_scrub` calls
    /// urgent). Returns false when there was none to scrub or the volume is not recovering.
    /// Recovering the last slab returns the volume to normal mode.
    ///
    /// # Errors
    ///
    /// A slab journal or count found damaged (`Corrupt`, `Invariant`), a failed read, or a
    /// failed super block write: the volume is then read-only.
    pub(super) fn scrub_one(&self, urgent_only: bool) -> Result<bool, VolumeError> {
        let _one = self.running.lock();
        if self.mode.read().mode != OperatingMode::Recovering {
            return Ok(false);
        }
        let plan = {
            let meta = self.meta.lock();
            match meta.depot.next_to_scrub(urgent_only) {
                Some(slab) => meta.depot.scrub_plan(slab),
                None => {
                    let done = meta.depot.unrecovered_count() == 0;
                    drop(meta);
                    if done {
                        self.finish()?;
                    }
                    return Ok(false);
                }
            }
        };
        let scrubbed = read_for_scrub(&*self.store, &plan)
            .and_then(|blocks| self.meta.lock().depot.finish_scrub(plan.slab, &blocks));
        if let Err(e) = scrubbed {
            let structure = match &e {
                VolumeError::Invariant { .. } => Some(BlockType::RefCounts),
                _ => Some(BlockType::SlabJournal),
            };
            self.read_only(&e, structure);
            return Err(e);
        }
        let done = self.meta.lock().depot.unrecovered_count() == 0;
        if done {
            self.finish()?;
        }
        self.notify();
        Ok(true)
    }

    /// Every slab is recovered: the super block says so, then the mode does.
    fn finish(&self) -> Result<(), VolumeError> {
        let mut mode = self.mode.write();
        if mode.mode != OperatingMode::Recovering {
            return Ok(());
        }
        let written = {
            let mut current = self.super_block.lock();
            let mut next = current.clone();
            next.state = VolumeState::Dirty;
            next.mode = OperatingMode::Normal;
            super::write_super_block_in(&*self.store, &mut current, next)
        };
        match written {
            Ok(()) => {
                mode.mode = OperatingMode::Normal;
                drop(mode);
                self.notify();
                Ok(())
            }
            Err(e) => {
                drop(mode);
                self.read_only(&e, Some(BlockType::SuperBlock));
                Err(e)
            }
        }
    }

    fn read_only(&self, e: &VolumeError, structure: Option<BlockType>) {
        let (structure, at) =
            super::damage_site(e, structure).unwrap_or((structure, uvdo_format::Pbn(0)));
        let reason = super::read_only_reason(e, structure, at);
        super::enter_read_only_in(&*self.store, &self.mode, &self.super_block, reason);
        self.notify();
    }

    fn notify(&self) {
        let _control = self.control.lock();
        self.changed.notify_all();
    }

    /// Waits until the volume is not recovering.
    fn wait(&self) -> OperatingMode {
        let mut control = self.control.lock();
        loop {
            let mode = self.mode.read().mode;
            if mode != OperatingMode::Recovering {
                return mode;
            }
            self.changed.wait(&mut control);
        }
    }
}

impl Volume {
    /// Waits until recovering mode ends: every slab recovered (normal mode), or read-only
    /// mode entered. Returns at once when the volume is not recovering.
    ///
    /// # Errors
    ///
    /// `ReadOnly` when the volume is (or became) read-only.
    pub fn wait_recovered(&self) -> Result<(), VolumeError> {
        match self.scrubber.wait() {
            OperatingMode::ReadOnly => Err(VolumeError::ReadOnly {
                reason: super::describe(self.mode.read().reason.as_ref()),
            }),
            _ => Ok(()),
        }
    }

    /// Test hook: lets a scrubber paused by `OpenOptions::testing_scrub_paused` run.
    #[doc(hidden)]
    pub fn resume_scrubbing(&self) {
        self.scrubber.resume();
    }

    /// Recovery progress in percent while recovering (slabs recovered of those unrecovered
    /// at open); `None` otherwise.
    pub(super) fn recovery_progress(&self, unrecovered: usize) -> Option<u8> {
        (self.operating_mode() == OperatingMode::Recovering && unrecovered > 0)
            .then(|| self.scrubber.progress_percent(unrecovered))
    }

    /// Scrubs one slab now, for a thread that cannot wait for the background one. Returns
    /// false when nothing was scrubbed.
    pub(super) fn scrub_now(&self, urgent_only: bool) -> Result<bool, VolumeError> {
        self.scrubber.scrub_one(urgent_only)
    }

    /// Stops and joins the scrubbing thread, if it runs.
    pub(super) fn stop_scrubbing(&self) {
        self.scrubber.stop();
        if let Some(thread) = self.scrub_thread.lock().take() {
            // A panic in the thread was a bug already reported on stderr; the volume is
            // closed or dropped anyway.
            let _ = thread.join();
        }
    }
}

impl Drop for Volume {
    fn drop(&mut self) {
        self.stop_scrubbing();
    }
}
