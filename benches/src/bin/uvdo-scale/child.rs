//! The measured phases, each in a fresh process (`uvdo-scale __child PHASE PATH SHAPE...`),
//! so each phase's RSS is its own. A child prints its figures as a [`Record`] on stdout;
//! progress goes to stderr. The phases of one size run in this order on one store file:
//!
//! 1. `write`: create the sparse file, format, open, write the size in unique blocks from LBN
//!    0, flush; memory now (the figures "after writing"); then a clean close, timed.
//! 2. `reopen`: open the clean volume, timed; then overwrite with new unique blocks until the
//!    recovery journal is as full as it gets without a checkpoint, flush, and crash: the
//!    process exits without closing. Everything written is durable (the flush) and on the
//!    file (the page cache outlives the process); what is lost is what only memory held:
//!    dirty block map pages, reference counts and slab journal tails not written, the index
//!    not saved, the super block still dirty. So the next open must replay the whole journal.
//! 3. `recover`: open, timed until it returns (usable), then until `wait_recovered` returns
//!    (every slab's reference counts rebuilt in the background); then a clean close, timed.
//! 4. `rebuild`: `Volume::force_rebuild`, as `uvdo start --forceRebuild` runs it, timed
//!    whole and by phase, three times (each leaves the volume clean); the median run counts.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use uvdo::{OpenOptions, RebuildPhase, RebuildReport, Volume};
use uvdo_format::recovery_journal::ENTRIES_PER_BLOCK_U16;
use uvdo_io::Storage;
use uvdo_io::open::{OpenOptions as StoreOptions, open, open_store};

use crate::BenchError;
use crate::proc_status;
use crate::record::Record;
use crate::shape::{BLOCK_BYTES, Shape};
use crate::unique::{Span, UniqueBlocks, write_span};

/// The phases, in the order they run on one store.
pub(crate) const PHASES: [&str; 4] = ["write", "reopen", "recover", "rebuild"];

/// Force rebuilds per size: each leaves a clean volume, so they repeat; the median counts.
const REBUILD_RUNS: usize = 3;

/// Serials of the first fill and of the journal fill: disjoint, so no block repeats.
const SERIAL_WRITE: u64 = 1;
const SERIAL_JOURNAL: u64 = 1 << 48;
const SEED: u64 = 0x7576_646f_7363_616c;

/// Blocks the recovery journal keeps free between its tail and its head
/// (`RESERVED_BLOCKS` in crates/uvdo/src/journal/mod.rs): a full journal spans this many
/// fewer blocks than its region.
const JOURNAL_RESERVED_BLOCKS: u64 = 2;
/// An async writer starts a commit once this many journal blocks are sealed
/// (`COMMIT_SOON_BLOCKS` in crates/uvdo/src/volume/write.rs), and a commit closes the
/// partly filled active block: at most one block in this many + 1 is wasted.
const SEALED_BLOCKS_PER_COMMIT_MIN: u64 = 16;

/// Runs the phase `args` name: `PHASE PATH SHAPE...`.
pub(crate) fn run(args: &[String]) -> Result<(), BenchError> {
    let [phase, path, shape @ ..] = args else {
        return Err("usage: uvdo-scale __child PHASE PATH SHAPE...".into());
    };
    let path = PathBuf::from(path);
    let shape = Shape::from_args(shape)?;
    let record = match phase.as_str() {
        "write" => write(&path, shape)?,
        "reopen" => {
            let (record, volume) = reopen(&path, shape)?;
            emit(&record)?;
            crash(&volume)
        }
        "recover" => recover(&path)?,
        "rebuild" => rebuild(&path)?,
        _ => return Err(format!("unknown phase {phase:?}").into()),
    };
    emit(&record)
}

fn emit(record: &Record) -> Result<(), BenchError> {
    use std::io::Write as _;
    let mut stdout = std::io::stdout().lock();
    stdout.write_all(record.emit().as_bytes())?;
    stdout.flush()?;
    Ok(())
}

/// Ends the process with the volume open: no close, no destructor.
fn crash(_volume: &Volume) -> ! {
    std::process::exit(0)
}

fn put_memory(record: &mut Record, prefix: &str) -> Result<(), BenchError> {
    let memory = proc_status::read_self()?;
    record.put(&format!("{prefix}rss_kib"), memory.rss_kib);
    record.put(&format!("{prefix}hwm_kib"), memory.hwm_kib);
    Ok(())
}

fn seconds_since(started: Instant) -> f64 {
    started.elapsed().as_secs_f64()
}

fn write(path: &Path, shape: Shape) -> Result<Record, BenchError> {
    let mut out = Record::default();
    put_memory(&mut out, "base_")?;
    let layout = shape.layout()?;
    let options = StoreOptions {
        create_size: Some(shape.store_bytes()?),
        ..StoreOptions::default()
    };
    let opened =
        open(path, &options).map_err(|e| format!("cannot create {}: {e}", path.display()))?;
    out.put("store", opened.describe());
    let store: Arc<dyn Storage> = Arc::new(opened);
    Volume::format(&*store, &shape.format_config())?;
    let volume = Volume::open(store, &OpenOptions::default())?;

    let started = Instant::now();
    let span = Span {
        start: 0,
        count: shape.logical_blocks(),
        serial: SERIAL_WRITE,
        logical_blocks: shape.logical_blocks(),
    };
    write_span(&volume, &mut UniqueBlocks::new(SEED), span, "write")?;
    volume.flush()?;
    out.put("write_s", seconds_since(started));
    put_memory(&mut out, "")?;

    let stats = volume.stats();
    out.put("index_memory_bytes", stats.index_memory_bytes);
    out.put("index_entries", stats.index_entries);
    out.put("block_map_pages_cached", stats.block_map_pages_cached);
    // What the cached pages hold: packed entries, frame and index bucket per page.
    out.put("block_map_cache_bytes", stats.block_map_cache_bytes);
    out.put("block_map_dirty_pages", stats.block_map_dirty_pages);
    // The depot's live counts are one byte per slab data block (depot/ref_counts.rs); the
    // engine reports no memory figure for the depot.
    out.put("ref_count_bytes", layout.data_blocks_total().0);
    out.put("physical_blocks", layout.physical_blocks().0);
    out.put("slab_count", layout.slab_count());
    out.put("logical_blocks_used", stats.logical_blocks_used);
    out.put("data_blocks_used", stats.data_blocks_used);
    out.put("journal_checkpoints", stats.journal_checkpoints);

    let started = Instant::now();
    volume.close()?;
    out.put("close_s", seconds_since(started));
    Ok(out)
}

fn open_existing(path: &Path) -> Result<Arc<dyn Storage>, BenchError> {
    open_store(path, &StoreOptions::default())
        .map_err(|e| format!("cannot open {}: {e}", path.display()).into())
}

fn reopen(path: &Path, shape: Shape) -> Result<(Record, Volume), BenchError> {
    let mut out = Record::default();
    let store = open_existing(path)?;
    let started = Instant::now();
    let volume = Volume::open(store, &OpenOptions::default())?;
    out.put("open_s", seconds_since(started));
    put_memory(&mut out, "open_")?;
    out.put("index_entries", volume.stats().index_entries);

    let started = Instant::now();
    fill_journal(&volume, shape, &mut out)?;
    out.put("fill_s", seconds_since(started));
    put_memory(&mut out, "")?;
    Ok((out, volume))
}

/// Overwrites the volume with new unique blocks, a flush after each batch, until the recovery
/// journal has at most 2 blocks to spare. Each batch takes a little under the free space,
/// allowing for the partial block every commit closes, so the journal never fills up (which
/// would checkpoint and empty it). The journal's blocks in use are the blocks written since
/// open (a clean volume opens with head = tail); should a checkpoint happen anyway (a block
/// map cache too small for the dirty pages), the head moved within the last batch, so
/// counting from that batch's start is an upper bound.
fn fill_journal(volume: &Volume, shape: Shape, out: &mut Record) -> Result<(), BenchError> {
    let usable_blocks = shape.journal_blocks - JOURNAL_RESERVED_BLOCKS;
    let entries_per_block = u64::from(ENTRIES_PER_BLOCK_U16);
    let writes_max = 3 * usable_blocks * entries_per_block;
    let logical_blocks = shape.logical_blocks();
    let mut blocks = UniqueBlocks::new(SEED ^ SERIAL_JOURNAL);
    let opened = volume.stats();
    let mut counted_from = opened.journal_blocks_written;
    let mut writes = 0;
    let mut used_blocks;
    loop {
        let stats = volume.stats();
        used_blocks = stats.journal_blocks_written - counted_from;
        let free_blocks = usable_blocks.saturating_sub(used_blocks);
        if free_blocks <= 2 || writes >= writes_max {
            break;
        }
        let count = (free_blocks - 1) * entries_per_block * SEALED_BLOCKS_PER_COMMIT_MIN
            / (SEALED_BLOCKS_PER_COMMIT_MIN + 1);
        let span = Span {
            start: writes % logical_blocks,
            count,
            serial: SERIAL_JOURNAL + writes,
            logical_blocks,
        };
        write_span(volume, &mut blocks, span, "journal fill")?;
        volume.flush()?;
        writes += count;
        if volume.stats().journal_checkpoints != stats.journal_checkpoints {
            counted_from = stats.journal_blocks_written;
        }
    }
    let checkpoints = volume.stats().journal_checkpoints - opened.journal_checkpoints;
    out.put("fill_writes", writes);
    out.put("journal_usable_blocks", usable_blocks);
    out.put("journal_blocks_used_estimate", used_blocks);
    out.put("fill_checkpoints", checkpoints);
    Ok(())
}

fn recover(path: &Path) -> Result<Record, BenchError> {
    let mut out = Record::default();
    // The crashed child was a process, not the machine: its data is still dirty in the page
    // cache, and recovery's first flush would write it back inside the timing. Write it back
    // first, timed on its own, so the recovery figure is the replay's.
    let started = Instant::now();
    std::fs::File::open(path)?.sync_all()?;
    out.put("crash_writeback_s", seconds_since(started));
    let store = open_existing(path)?;
    let started = Instant::now();
    let volume = Volume::open(store, &OpenOptions::default())?;
    out.put("open_s", seconds_since(started));
    out.put("mode_at_open", volume.operating_mode());
    put_memory(&mut out, "open_")?;
    volume.wait_recovered()?;
    out.put("recovered_s", seconds_since(started));
    put_memory(&mut out, "")?;

    let report = volume
        .last_recovery()
        .ok_or("the volume opened without recovering: the crash did not happen")?;
    out.put("entries_replayed", report.entries_replayed);
    out.put(
        "journal_blocks_replayed",
        report.journal_end.0 - report.journal_head.0,
    );
    out.put("stale_journal_blocks", report.stale_journal_blocks);
    out.put("unlanded_journal_blocks", report.unlanded_journal_blocks);
    let stats = volume.stats();
    out.put("logical_blocks_used", stats.logical_blocks_used);
    out.put("data_blocks_used", stats.data_blocks_used);

    let started = Instant::now();
    volume.close()?;
    out.put("close_s", seconds_since(started));
    Ok(out)
}

fn rebuild(path: &Path) -> Result<Record, BenchError> {
    let mut out = Record::default();
    let store = open_existing(path)?;
    let mut runs = Vec::new();
    for _ in 0..REBUILD_RUNS {
        runs.push(rebuild_once(Arc::clone(&store))?);
    }
    let seconds: Vec<String> = runs.iter().map(|r| format!("{:.4}", r.seconds)).collect();
    out.put("rebuild_runs_s", seconds.join(" "));
    runs.sort_by(|a, b| a.seconds.total_cmp(&b.seconds));
    let median = &runs[runs.len() / 2];
    out.put("rebuild_s", median.seconds);
    out.put("setup_s", median.setup_s);
    for (name, seconds) in &median.phases {
        out.put(&format!("phase.{}_s", name.replace(' ', "_")), seconds);
    }
    put_memory(&mut out, "")?;
    let report = &median.report;
    out.put("logical_blocks_used", report.logical_blocks_used);
    out.put("mapped_bytes", report.logical_blocks_used * BLOCK_BYTES);
    out.put("data_blocks_used", report.data_blocks_used);
    out.put("references_counted", report.references_counted);
    out.put("journal_entries_replayed", report.journal_entries_replayed);
    out.put("mappings_dropped", report.mappings_dropped.total());
    out.put("block_map_pages_written", report.block_map_pages_written);
    out.put("ref_count_blocks_written", report.ref_count_blocks_written);
    Ok(out)
}

/// One force rebuild, timed whole and by the phases its progress reports name.
struct RebuildRun {
    seconds: f64,
    /// Before the first progress report: the super block marked "rebuild in progress" and
    /// flushed, and the scan of the whole recovery journal region.
    setup_s: f64,
    phases: Vec<(&'static str, f64)>,
    report: RebuildReport,
}

fn rebuild_once(store: Arc<dyn Storage>) -> Result<RebuildRun, BenchError> {
    let mut starts: Vec<(RebuildPhase, Instant)> = Vec::new();
    let started = Instant::now();
    let report = Volume::force_rebuild(store, &mut |p| {
        if starts.last().map(|(phase, _)| *phase) != Some(p.phase) {
            starts.push((p.phase, Instant::now()));
        }
    })?;
    let ended = Instant::now();
    let first = starts.first().map_or(ended, |(_, at)| *at);
    let ends = starts.iter().skip(1).map(|(_, at)| *at).chain([ended]);
    let mut phases: Vec<(&'static str, f64)> = Vec::new();
    for ((phase, from), to) in starts.iter().zip(ends) {
        let seconds = (to - *from).as_secs_f64();
        match phases.iter_mut().find(|(name, _)| *name == phase.name()) {
            Some((_, total)) => *total += seconds,
            None => phases.push((phase.name(), seconds)),
        }
    }
    Ok(RebuildRun {
        seconds: (ended - started).as_secs_f64(),
        setup_s: (first - started).as_secs_f64(),
        phases,
        report,
    })
}
