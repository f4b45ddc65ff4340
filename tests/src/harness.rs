//! Recording a workload's run and checking every crash state it can leave.

use std::fmt;
use std::sync::Arc;

use uvdo::{FormatConfig, IndexConfig, OpenOptions, OperatingMode, Volume, WritePolicy};
use uvdo_format::{BLOCK_SIZE, Block, BlockCount};
use uvdo_io::Storage;
use uvdo_io::sim::{CrashPlan, PendingFate, SimStore};

use crate::oracle::{Policy, Progress, allowed};
use crate::workload::{Op, content};

/// Bytes of the simulated store: the tiny geometry's fixed regions plus a few slabs.
const STORE_BYTES: u64 = 2 << 20;
/// Logical size of the harness volume, in blocks.
const LOGICAL_BLOCKS: u64 = 4096;
/// Pending writes up to which every drop/apply combination is enumerated.
const EXHAUSTIVE_PENDING_MAX: usize = 3;
/// Seeded crash plans per crash point beyond the fixed ones.
const SEEDED_PLANS: u64 = 3;

/// A workload's run: the store with its event log, and which events each op produced.
#[derive(Debug)]
pub struct Recorded {
    /// The store after the run (its log holds every write and flush).
    pub store: SimStore,
    /// Events `spans[i].0..spans[i].1` were logged while op `i` ran.
    pub spans: Vec<(usize, usize)>,
    /// The first event logged after the volume was open.
    pub first_event: usize,
}

/// Why a crash state broke the contract.
#[derive(Debug)]
pub struct Failure {
    /// What went wrong.
    pub what: String,
    /// The crash point (state right after this event).
    pub event: usize,
    /// The crash plan.
    pub plan: String,
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "crash after event {} with {}: {}",
            self.event, self.plan, self.what
        )
    }
}

fn format_config(policy: Policy) -> FormatConfig {
    let mut config = FormatConfig::tiny(BlockCount(LOGICAL_BLOCKS));
    config.index = IndexConfig {
        memory_bytes: 64 << 10,
        sparse: false,
    };
    config.write_policy = match policy {
        Policy::Sync => WritePolicy::Sync,
        Policy::Async => WritePolicy::Async,
        Policy::AsyncUnsafe => WritePolicy::AsyncUnsafe,
    };
    config
}

/// Runs `ops` on a fresh volume over a simulated store seeded with `seed`.
///
/// # Panics
///
/// When the volume refuses an op: the harness only issues valid requests.
#[must_use]
pub fn record(ops: &[Op], policy: Policy, seed: u64) -> Recorded {
    let store = Arc::new(SimStore::with_seed(STORE_BYTES, seed));
    Volume::format(&*store, &format_config(policy)).expect("format");
    let dyn_store: Arc<dyn Storage> = store.clone();
    let volume = Volume::open(dyn_store, &OpenOptions::default()).expect("open");
    let first_event = store.event_count();
    let mut spans = Vec::with_capacity(ops.len());
    for op in ops {
        let start = store.event_count();
        run_op(&volume, *op).unwrap_or_else(|e| panic!("{op:?} failed: {e}"));
        spans.push((start, store.event_count()));
    }
    drop(volume);
    let store = Arc::try_unwrap(store).expect("the volume is gone");
    Recorded {
        store,
        spans,
        first_event,
    }
}

fn run_op(volume: &Volume, op: Op) -> Result<(), uvdo::VolumeError> {
    let at = |lbn: u64| lbn * BLOCK_SIZE as u64;
    match op {
        Op::Write { lbn, content: c } => volume.write(at(lbn), &content(c), false),
        Op::WriteFua { lbn, content: c } => volume.write(at(lbn), &content(c), true),
        Op::Partial {
            lbn,
            sector,
            content: c,
        } => {
            let start = usize::from(sector) * 512;
            let bytes = &content(c)[start..start + 512];
            volume.write(at(lbn) + start as u64, bytes, false)
        }
        Op::Trim { lbn } => volume.trim(at(lbn), BLOCK_SIZE as u64),
        Op::Zeroes { lbn } => volume.write_zeroes(at(lbn), BLOCK_SIZE as u64),
        Op::Flush => volume.flush(),
    }
}

/// Which ops had finished when the crash came right after `event`.
#[must_use]
pub fn progress(spans: &[(usize, usize)], event: usize) -> Progress {
    let acknowledged = spans
        .iter()
        .take_while(|(_, end)| *end <= event + 1)
        .count();
    let in_progress = spans
        .get(acknowledged)
        .is_some_and(|(start, _)| *start <= event);
    Progress {
        acknowledged,
        in_progress,
    }
}

/// The crash plans tried at a point with writes not yet flushed, given their lengths in
/// sectors (a data run is many blocks, a metadata write one).
#[must_use]
pub fn plans(pending_sectors: &[usize], seed: u64) -> Vec<CrashPlan> {
    let pending = pending_sectors.len();
    let mut plans = vec![CrashPlan::KeepNone];
    if pending == 0 {
        return plans;
    }
    plans.push(CrashPlan::KeepAll);
    if pending <= EXHAUSTIVE_PENDING_MAX {
        for mask in 1..(1_u32 << pending) - 1 {
            let fates = (0..pending)
                .map(|i| {
                    if mask & (1 << i) != 0 {
                        PendingFate::Applied
                    } else {
                        PendingFate::Dropped
                    }
                })
                .collect();
            plans.push(CrashPlan::Explicit(fates));
        }
        for (torn, &count) in pending_sectors.iter().enumerate() {
            for sectors in torn_patterns(count) {
                let fates = (0..pending)
                    .map(|i| {
                        if i == torn {
                            PendingFate::Torn {
                                sectors: sectors.clone(),
                                half: None,
                            }
                        } else {
                            PendingFate::Applied
                        }
                    })
                    .collect();
                plans.push(CrashPlan::Explicit(fates));
            }
        }
    } else {
        plans.extend((0..SEEDED_PLANS).map(|k| CrashPlan::Seeded(seed ^ (k << 32))));
    }
    plans
}

/// Which sectors of a torn write of `count` sectors reach the media: its first half, its
/// second half, its first sector alone, and (for writes of several 4 KiB blocks) every other
/// block.
fn torn_patterns(count: usize) -> Vec<Vec<bool>> {
    let mut patterns = vec![
        (0..count).map(|s| s < count / 2).collect(),
        (0..count).map(|s| s >= count / 2).collect(),
        (0..count).map(|s| s == 0).collect(),
    ];
    if count > 8 {
        patterns.push((0..count).map(|s| (s / 8) % 2 == 0).collect());
    }
    patterns
}

/// Recovers the crash state and checks the contract; returns what every LBN reads.
///
/// # Errors
///
/// The first broken promise.
pub fn check(
    recorded: &Recorded,
    ops: &[Op],
    policy: Policy,
    lbns: u64,
    event: usize,
    plan: &CrashPlan,
) -> Result<Vec<Block>, Failure> {
    let fail = |what: String| Failure {
        what,
        event,
        plan: format!("{plan:?}"),
    };
    let crashed = Arc::new(recorded.store.crash_at(event, plan.clone()));
    let contents = recover_and_read(&crashed, lbns).map_err(&fail)?;
    let progress = progress(&recorded.spans, event);
    for rule in allowed(ops, progress, policy, lbns) {
        let got = &contents[usize::try_from(rule.lbn).expect("small")];
        if !rule.admits(got) {
            return Err(fail(format!(
                "LBN {} reads a value it may not hold (first bytes {:?}); {progress:?}",
                rule.lbn,
                &got[..8]
            )));
        }
    }
    Ok(contents)
}

/// Opens (recovering) a crashed store, checks mode and audit, and reads LBNs `0..lbns`.
fn recover_and_read(store: &Arc<SimStore>, lbns: u64) -> Result<Vec<Block>, String> {
    let dyn_store: Arc<dyn Storage> = store.clone();
    let volume = Volume::open(dyn_store, &OpenOptions::default())
        .map_err(|e| format!("recovery failed: {e}"))?;
    if volume.operating_mode() == OperatingMode::ReadOnly {
        return Err(format!(
            "an honest crash left the volume read-only: {:?}",
            volume.stats()
        ));
    }
    let audit = volume.audit().map_err(|e| format!("audit failed: {e}"))?;
    if !audit.is_clean() {
        return Err(format!("audit after recovery: {audit:?}"));
    }
    let mut contents = Vec::new();
    for lbn in 0..lbns {
        let mut block = [0_u8; BLOCK_SIZE];
        volume
            .read(lbn * BLOCK_SIZE as u64, &mut block)
            .map_err(|e| format!("read of LBN {lbn} after recovery: {e}"))?;
        contents.push(block);
    }
    Ok(contents)
}

/// I6: crashes the recovery of `event`'s state at every point it wrote (the offline
/// recovery, and the online scrub of recovering mode), recovers again, and checks the volume
/// equals the one an uninterrupted recovery gave.
///
/// # Errors
///
/// The first difference. Returns the number of crash states checked.
pub fn check_recovery_crashes(
    recorded: &Recorded,
    lbns: u64,
    event: usize,
    plan: &CrashPlan,
    once: &[Block],
) -> Result<u64, Failure> {
    let fail = |what: String| Failure {
        what,
        event,
        plan: format!("{plan:?} (recovery)"),
    };
    let crashed = Arc::new(recorded.store.crash_at(event, plan.clone()));
    let dyn_store: Arc<dyn Storage> = crashed.clone();
    // Offline, so that every write of the recovery happens inside `open`.
    let offline = OpenOptions {
        recover_offline: true,
        ..OpenOptions::default()
    };
    drop(Volume::open(dyn_store, &offline).map_err(|e| fail(e.to_string()))?);
    let recovery_events = crashed.event_count();
    let mut states = 0;
    // Crashes in the online part (recovering mode): the writes between the open and the
    // end of scrubbing, with a paused scrubber so that they are the scrub's only.
    let online = Arc::new(recorded.store.crash_at(event, plan.clone()));
    let dyn_store: Arc<dyn Storage> = online.clone();
    let paused = OpenOptions {
        testing_scrub_paused: true,
        ..OpenOptions::default()
    };
    let volume = Volume::open(dyn_store, &paused).map_err(|e| fail(e.to_string()))?;
    let online_from = online.event_count();
    volume.resume_scrubbing();
    volume.wait_recovered().map_err(|e| fail(e.to_string()))?;
    drop(volume);
    for during in online_from..online.event_count() {
        for second in [CrashPlan::KeepNone, CrashPlan::KeepAll] {
            let twice = Arc::new(online.crash_at(during, second.clone()));
            let contents = recover_and_read(&twice, lbns)
                .map_err(|e| fail(format!("crash in the online scrub (event {during}): {e}")))?;
            if contents != once {
                return Err(fail(format!(
                    "recovering after a crash during the online scrub (event {during}, \
                     {second:?}) differs from recovering once"
                )));
            }
            states += 1;
        }
    }
    for during in 0..recovery_events {
        for second in [CrashPlan::KeepNone, CrashPlan::KeepAll] {
            let twice = Arc::new(crashed.crash_at(during, second.clone()));
            let contents = recover_and_read(&twice, lbns)
                .map_err(|e| fail(format!("recovery crashed after its event {during}: {e}")))?;
            if contents != once {
                return Err(fail(format!(
                    "recovering after a crash during recovery (event {during}, {second:?}) \
                     differs from recovering once"
                )));
            }
            states += 1;
        }
    }
    Ok(states)
}

/// Counts of a run of the harness.
#[derive(Clone, Copy, Debug, Default)]
pub struct Tally {
    /// Crash states recovered and checked.
    pub states: u64,
    /// Of those, crash states during recovery (I6).
    pub recovery_states: u64,
    /// Workloads run.
    pub workloads: u64,
}

/// Checks every crash state of one workload; with `recovery_sample`, every n-th crash point
/// also has its recovery crashed.
///
/// # Errors
///
/// The first failure, with the seed and workload in its text.
pub fn check_workload(
    ops: &[Op],
    policy: Policy,
    lbns: u64,
    seed: u64,
    recovery_sample: Option<usize>,
    tally: &mut Tally,
) -> Result<(), String> {
    let recorded = record(ops, policy, seed);
    let last = recorded.store.event_count();
    let context = |f: Failure| format!("seed {seed}, {policy:?}, workload {ops:?}: {f}");
    for event in recorded.first_event.saturating_sub(1)..last {
        let sectors: Vec<usize> = recorded
            .store
            .pending_writes_at(event)
            .iter()
            .map(|w| usize::try_from(w.len / 512).expect("small"))
            .collect();
        for (k, plan) in plans(&sectors, seed ^ event as u64).iter().enumerate() {
            let once = check(&recorded, ops, policy, lbns, event, plan).map_err(context)?;
            tally.states += 1;
            if recovery_sample.is_some_and(|n| k == 0 && event % n == 0) {
                let n =
                    check_recovery_crashes(&recorded, lbns, event, plan, &once).map_err(context)?;
                tally.states += n;
                tally.recovery_states += n;
            }
        }
    }
    tally.workloads += 1;
    Ok(())
}
