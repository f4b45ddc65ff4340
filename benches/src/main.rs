//! uvdo-benches: the engine benchmark of SPEC section 10, as library calls on one machine.
//!
//! Measures the `Volume` against the raw `Storage` beneath it, with the same offsets, data and
//! threads, in the same run: on the memory store and on a sparse temp file opened with the
//! default I/O engine, in interleaved rounds (raw first in even rounds, engine first in odd
//! ones), reporting medians and same-run ratios. It also measures write + flush latency
//! against raw write + fdatasync, on the sparse files of the rounds and on fully written files
//! (as on a block device), and device writes per unique write from the engine's counters and
//! from a counting store. It measures and prints; it never asserts a speed.
//! `docs/BENCHMARKS.md` says how to run it and how to read it.

mod report;
mod target;
mod workload;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use uvdo::{FormatConfig, IndexConfig, OpenOptions, Volume, WritePolicy};
use uvdo_format::BlockCount;
use uvdo_io::Storage;
use uvdo_io::memory::MemoryStore;
use uvdo_io::open::{OpenOptions as StoreOptions, open};

use report::{Amplification, FlushSamples, Run, Sample, StoreKind};
use target::{BenchError, CountingStore, Raw};
use workload::{BLOCK_BYTES, Pattern, Plan, REGIONS, run, write_flush_us};

const STORE_BYTES_MIN: u64 = 2 << 30;
const LOGICAL_PER_PHYSICAL: u64 = 4;
/// 512 MiB slabs: the 2 GiB default slab does not fit a 2 GiB store beside its metadata.
const SLAB_BLOCKS: u64 = 1 << 17;
/// The fully written files of the write + flush latency pair: room for the default journal
/// and two 128 MiB slabs; the samples write a few hundred blocks.
const WRITTEN_STORE_BYTES: u64 = 512 << 20;
const WRITTEN_SLAB_BLOCKS: u64 = 1 << 15;
/// Dense index of 1.5 MiB (318k blocks, far above what a run writes): small, so the volume's
/// index region and memory stay in proportion to a 2 GiB test store.
const INDEX_MEMORY_BYTES: u64 = 3 << 19;
const SEED: u64 = 0x7576_646f_6265_6e63;
const THREADS: [usize; 2] = [1, 2];

/// Command-line settings.
#[derive(Debug)]
struct Args {
    blocks: u64,
    rounds: usize,
    flush_samples: usize,
    dir: PathBuf,
    json: PathBuf,
}

const USAGE: &str = "usage: uvdo-benches [--blocks N] [--rounds N] [--flush-samples N] \
                     [--dir DIR] [--json FILE]";

fn parse_args() -> Result<Args, BenchError> {
    let mut args = Args {
        blocks: 32768,
        rounds: 3,
        flush_samples: 200,
        dir: std::env::temp_dir(),
        json: Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/uvdo-benches.json"),
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        if flag == "--bench" {
            continue; // passed by `cargo bench`
        }
        if flag == "--help" || flag == "-h" {
            println!("{USAGE}");
            std::process::exit(0);
        }
        let value = it
            .next()
            .ok_or_else(|| format!("{flag} needs a value\n{USAGE}"))?;
        let number = || {
            value
                .parse::<u64>()
                .ok()
                .filter(|&n| n > 0)
                .ok_or_else(|| format!("{flag}: expected a positive number, found {value:?}"))
        };
        match flag.as_str() {
            "--blocks" => args.blocks = number()?,
            "--rounds" => args.rounds = workload::to_usize(number()?),
            "--flush-samples" => args.flush_samples = workload::to_usize(number()?),
            "--dir" => args.dir = PathBuf::from(&value),
            "--json" => args.json = PathBuf::from(&value),
            _ => return Err(format!("unknown argument {flag:?}\n{USAGE}").into()),
        }
    }
    Ok(args)
}

fn main() -> Result<(), BenchError> {
    let args = parse_args()?;
    let load_start = uvdo_benches::loadavg();
    let plan = Plan::new(args.blocks, args.flush_samples as u64, SEED);
    let mut runs = Vec::new();
    let mut flush = FlushSamples::default();
    let mut flush_written = FlushSamples::default();
    let written = WrittenPair::new(&args.dir)?;
    let mut file_engine = String::new();
    for round in 0..args.rounds {
        eprintln!("round {} of {}", round + 1, args.rounds);
        flush_latency(
            &plan,
            round,
            &written.volume,
            &written.raw,
            &mut flush_written,
        )?;
        for kind in [StoreKind::Memory, StoreKind::File] {
            for threads in THREADS {
                let config = Config {
                    args: &args,
                    plan: &plan,
                    kind,
                    threads,
                    round,
                };
                file_engine = config.run(&mut runs, &mut flush)?.unwrap_or(file_engine);
            }
        }
    }
    let amplification = amplification(&plan)?;
    let run = Run {
        date: uvdo_benches::utc_now(),
        load_start,
        load_end: uvdo_benches::loadavg(),
        blocks: plan.blocks(),
        rounds: args.rounds,
        file_engine,
        samples: runs,
        flush,
        flush_written,
        amplification,
    };
    print!("{}", run.markdown());
    std::fs::write(&args.json, run.json())
        .map_err(|e| format!("cannot write {}: {e}", args.json.display()))?;
    println!("\nJSON: {}", args.json.display());
    Ok(())
}

/// One volume's worth of measurements: a store kind and thread count in one round.
struct Config<'a> {
    args: &'a Args,
    plan: &'a Plan,
    kind: StoreKind,
    threads: usize,
    round: usize,
}

impl Config<'_> {
    /// Runs every workload on a fresh engine and a fresh raw store; returns the file store's
    /// description when it opened one.
    fn run(
        &self,
        runs: &mut Vec<Sample>,
        flush: &mut FlushSamples,
    ) -> Result<Option<String>, BenchError> {
        let bytes = store_bytes(self.plan.blocks());
        let raw_store = new_store(self.kind, bytes, &self.args.dir, "raw")?;
        let engine_store = new_store(self.kind, bytes, &self.args.dir, "engine")?;
        let volume = new_volume(Arc::clone(&engine_store.store), SLAB_BLOCKS)?;
        let raw = Raw(Arc::clone(&raw_store.store));
        let raw_first = self.round.is_multiple_of(2);
        for pattern in Pattern::ALL {
            let job = self.plan.job(pattern);
            let before = volume.stats();
            let (engine_s, raw_s) = if raw_first {
                let raw_s = run(&raw, job, self.threads)?;
                (run(&volume, job, self.threads)?, raw_s)
            } else {
                let engine_s = run(&volume, job, self.threads)?;
                (engine_s, run(&raw, job, self.threads)?)
            };
            let after = volume.stats();
            runs.push(Sample {
                kind: self.kind,
                threads: self.threads,
                pattern,
                engine_s,
                raw_s,
                device_writes: pattern
                    .is_write()
                    .then(|| report::device_writes_per_write(&before, &after)),
                flushes_per_k: pattern
                    .is_write()
                    .then(|| report::flushes_per_k_writes(&before, &after)),
            });
        }
        if self.kind == StoreKind::File && self.threads == 1 {
            flush_latency(self.plan, self.round, &volume, &raw, flush)?;
        }
        // Dropped without close: the store is thrown away, and close is not measured.
        drop(volume);
        Ok(engine_store.describe)
    }
}

/// Write + flush samples, engine and raw alternating (which goes first alternates too), at
/// the same offsets.
fn flush_latency(
    plan: &Plan,
    round: usize,
    volume: &Volume,
    raw: &Raw,
    flush: &mut FlushSamples,
) -> Result<(), BenchError> {
    let before = volume.stats();
    let offsets = plan.flush_offsets();
    let mut block = vec![0; BLOCK_BYTES];
    for (i, fresh) in plan.fresh.chunks_exact(BLOCK_BYTES).enumerate() {
        let offset = offsets[i * 7 % offsets.len()];
        // New data in every round: a volume kept across rounds would otherwise find each
        // block already mapped there and journal nothing.
        block.copy_from_slice(fresh);
        block[..8].copy_from_slice(&(round as u64).to_le_bytes());
        let block = block.as_slice();
        if (i + round).is_multiple_of(2) {
            flush.raw_us.push(write_flush_us(raw, offset, block)?);
            flush.engine_us.push(write_flush_us(volume, offset, block)?);
        } else {
            flush.engine_us.push(write_flush_us(volume, offset, block)?);
            flush.raw_us.push(write_flush_us(raw, offset, block)?);
        }
    }
    let after = volume.stats();
    flush.store_flushes += after.flush_out - before.flush_out;
    flush.meta_writes += after.bios_meta_write - before.bios_meta_write;
    Ok(())
}

/// A volume and a raw store on files written whole before use, for write + flush latency as
/// on a block device: no write allocates filesystem blocks, so no flush commits the
/// filesystem's own journal. On the rounds' sparse files the engine's new blocks do, while
/// the raw store overwrites blocks its workloads wrote.
struct WrittenPair {
    volume: Volume,
    raw: Raw,
    _stores: [BenchStore; 2],
}

impl WrittenPair {
    fn new(dir: &Path) -> Result<Self, BenchError> {
        let raw_store = new_store(StoreKind::File, WRITTEN_STORE_BYTES, dir, "raw-written")?;
        let engine_store = new_store(StoreKind::File, WRITTEN_STORE_BYTES, dir, "engine-written")?;
        for store in [&raw_store.store, &engine_store.store] {
            write_whole(&**store)?;
        }
        let volume = new_volume(Arc::clone(&engine_store.store), WRITTEN_SLAB_BLOCKS)?;
        Ok(Self {
            volume,
            raw: Raw(Arc::clone(&raw_store.store)),
            _stores: [raw_store, engine_store],
        })
    }
}

/// Writes zeros over the whole store and flushes, so every block is allocated.
fn write_whole(store: &dyn Storage) -> Result<(), BenchError> {
    let chunk = vec![0_u8; 1 << 20];
    let mut offset = 0;
    while offset < store.size_bytes() {
        let len = chunk
            .len()
            .min(usize::try_from(store.size_bytes() - offset)?);
        store.write_at(offset, &chunk[..len])?;
        offset += len as u64;
    }
    Ok(store.flush()?)
}

/// Device writes per unique write, from the engine's counters and from a counting store
/// (which also sees what close writes), on the memory store.
fn amplification(plan: &Plan) -> Result<Amplification, BenchError> {
    let counting = Arc::new(CountingStore::new(Arc::new(MemoryStore::new(store_bytes(
        plan.blocks(),
    )))));
    let store: Arc<dyn Storage> = Arc::clone(&counting) as Arc<dyn Storage>;
    let volume = new_volume(store, SLAB_BLOCKS)?;
    let opened = counting.counts();
    let mut stats = volume.stats();
    let mut measured = Vec::new();
    for pattern in [Pattern::UniqueSeq, Pattern::UniqueRandom] {
        let counts = counting.counts();
        run(&volume, plan.job(pattern), 1)?;
        let after = volume.stats();
        let writes = counting.counts().0 - counts.0;
        measured.push((
            report::device_writes_per_write(&stats, &after),
            ratio(writes, plan.blocks()),
        ));
        stats = after;
    }
    volume.close()?;
    let (writes, flushes) = counting.counts();
    Ok(Amplification {
        seq_stats: measured[0].0,
        seq_counted: measured[0].1,
        random_stats: measured[1].0,
        random_counted: measured[1].1,
        with_close_counted: ratio(writes - opened.0, 2 * plan.blocks()),
        flushes_with_close: flushes - opened.1,
    })
}

fn ratio(numerator: u64, denominator: u64) -> f64 {
    #[expect(clippy::cast_precision_loss, reason = "a ratio for display")]
    let ratio = numerator as f64 / denominator.max(1) as f64;
    ratio
}

/// A store big enough for every region at its raw offsets (module doc of `workload`).
fn store_bytes(blocks: u64) -> u64 {
    (REGIONS * blocks * BLOCK_BYTES as u64).max(STORE_BYTES_MIN)
}

/// A store, and the temp file to remove when it is dropped.
struct BenchStore {
    store: Arc<dyn Storage>,
    describe: Option<String>,
    _file: Option<TempFile>,
}

fn new_store(kind: StoreKind, size: u64, dir: &Path, tag: &str) -> Result<BenchStore, BenchError> {
    match kind {
        StoreKind::Memory => Ok(BenchStore {
            store: Arc::new(MemoryStore::new(size)),
            describe: None,
            _file: None,
        }),
        StoreKind::File => {
            let path = dir.join(format!("uvdo-bench-{}-{tag}.img", std::process::id()));
            let options = StoreOptions {
                create_size: Some(size),
                ..StoreOptions::default()
            };
            let opened = open(&path, &options)
                .map_err(|e| format!("cannot create {}: {e}", path.display()))?;
            Ok(BenchStore {
                describe: Some(opened.describe()),
                store: Arc::new(opened),
                _file: Some(TempFile(path)),
            })
        }
    }
}

fn new_volume(store: Arc<dyn Storage>, slab_blocks: u64) -> Result<Volume, BenchError> {
    let logical = store.size_bytes() * LOGICAL_PER_PHYSICAL / BLOCK_BYTES as u64;
    let config = FormatConfig {
        slab_blocks: BlockCount(slab_blocks),
        write_policy: WritePolicy::Async,
        index: IndexConfig {
            memory_bytes: INDEX_MEMORY_BYTES,
            sparse: false,
        },
        ..FormatConfig::new(BlockCount(logical))
    };
    Volume::format(&*store, &config)?;
    Ok(Volume::open(store, &OpenOptions::default())?)
}

/// Removes a benchmark store file when dropped.
struct TempFile(PathBuf);

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}
