//! What a run measured, reduced to medians and same-run ratios, printed as Markdown and
//! written as JSON (`json`).

mod json;

use std::fmt::Write as _;

use uvdo::VolumeStats;

use crate::workload::{BLOCK_BYTES, Pattern};

/// SPEC section 10 floors.
const DUP_BLOCKS_PER_S_FLOOR: f64 = 250_000.0;
const UNIQUE_RANDOM_RATIO_FLOOR: f64 = 1.0;
const FLUSH_P50_RATIO_CEILING: f64 = 1.3;
const DEVICE_WRITES_CEILING: f64 = 1.1;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum StoreKind {
    Memory,
    File,
}

impl StoreKind {
    fn name(self) -> &'static str {
        match self {
            Self::Memory => "memory",
            Self::File => "file",
        }
    }
}

/// One workload on one volume in one round.
#[derive(Debug)]
pub(crate) struct Sample {
    pub(crate) kind: StoreKind,
    pub(crate) threads: usize,
    pub(crate) pattern: Pattern,
    pub(crate) engine_s: f64,
    pub(crate) raw_s: f64,
    pub(crate) device_writes: Option<f64>,
    /// Store flushes per 1000 write requests, the trailing flush included.
    pub(crate) flushes_per_k: Option<f64>,
}

/// Write + flush latencies, engine and raw, in microseconds, every round pooled.
#[derive(Debug, Default)]
pub(crate) struct FlushSamples {
    pub(crate) engine_us: Vec<f64>,
    pub(crate) raw_us: Vec<f64>,
    /// Store flushes and metadata block writes the engine issued for its samples.
    pub(crate) store_flushes: u64,
    pub(crate) meta_writes: u64,
}

/// Device writes per unique 4 KiB write.
#[derive(Debug)]
pub(crate) struct Amplification {
    pub(crate) seq_stats: f64,
    pub(crate) seq_counted: f64,
    pub(crate) random_stats: f64,
    pub(crate) random_counted: f64,
    /// Both workloads plus close (block map pages, reference counts, summary, index save).
    pub(crate) with_close_counted: f64,
    pub(crate) flushes_with_close: u64,
}

/// Everything a run measured.
#[derive(Debug)]
pub(crate) struct Run {
    pub(crate) date: String,
    pub(crate) load_start: String,
    pub(crate) load_end: String,
    pub(crate) blocks: u64,
    pub(crate) rounds: usize,
    pub(crate) file_engine: String,
    pub(crate) samples: Vec<Sample>,
    /// On the rounds' sparse files.
    pub(crate) flush: FlushSamples,
    /// On fully written files (as on a block device): the floor's measure.
    pub(crate) flush_written: FlushSamples,
    pub(crate) amplification: Amplification,
}

/// Medians over rounds for one store kind, thread count and workload.
#[derive(Debug)]
struct Row {
    kind: StoreKind,
    threads: usize,
    pattern: Pattern,
    engine_blocks_per_s: f64,
    raw_blocks_per_s: f64,
    /// Median of the per-round ratios (not the ratio of medians).
    ratio: f64,
    device_writes: Option<f64>,
    flushes_per_k: Option<f64>,
}

impl Run {
    fn rows(&self) -> Vec<Row> {
        let mut rows = Vec::new();
        for kind in [StoreKind::Memory, StoreKind::File] {
            for threads in [1, 2] {
                for pattern in Pattern::ALL {
                    let mine: Vec<&Sample> = self
                        .samples
                        .iter()
                        .filter(|s| s.kind == kind && s.threads == threads)
                        .filter(|s| s.pattern == pattern)
                        .collect();
                    if mine.is_empty() {
                        continue;
                    }
                    let rate = |s: f64| self.blocks_f64() / s;
                    rows.push(Row {
                        kind,
                        threads,
                        pattern,
                        engine_blocks_per_s: median(mine.iter().map(|s| rate(s.engine_s))),
                        raw_blocks_per_s: median(mine.iter().map(|s| rate(s.raw_s))),
                        ratio: median(mine.iter().map(|s| s.raw_s / s.engine_s)),
                        device_writes: pattern
                            .is_write()
                            .then(|| median(mine.iter().filter_map(|s| s.device_writes))),
                        flushes_per_k: pattern
                            .is_write()
                            .then(|| median(mine.iter().filter_map(|s| s.flushes_per_k))),
                    });
                }
            }
        }
        rows
    }

    fn blocks_f64(&self) -> f64 {
        #[expect(clippy::cast_precision_loss, reason = "block counts far below 2^52")]
        let blocks = self.blocks as f64;
        blocks
    }

    fn row(&self, rows: &[Row], kind: StoreKind, threads: usize, pattern: Pattern) -> f64 {
        rows.iter()
            .find(|r| r.kind == kind && r.threads == threads && r.pattern == pattern)
            .map_or(f64::NAN, |r| {
                if pattern == Pattern::Dup100 {
                    r.engine_blocks_per_s
                } else {
                    r.ratio
                }
            })
    }

    pub(crate) fn markdown(&self) -> String {
        let rows = self.rows();
        let mut out = String::new();
        let _ = writeln!(out, "\n## uvdo engine benchmark, {}\n", self.date);
        let _ = writeln!(
            out,
            "{} blocks (4 KiB) per workload, {} interleaved rounds, medians. \
             File store: {}. Load (/proc/loadavg) at start: {}; at end: {}.\n",
            self.blocks, self.rounds, self.file_engine, self.load_start, self.load_end
        );
        out.push_str(
            "| store | thr | workload | engine MB/s | engine blk/s | raw MB/s | raw blk/s \
             | engine/raw | dev writes/write | flushes/1k writes |\n",
        );
        out.push_str("|---|---:|---|---:|---:|---:|---:|---:|---:|---:|\n");
        for r in &rows {
            let _ = writeln!(
                out,
                "| {} | {} | {} | {:.0} | {:.0} | {:.0} | {:.0} | {:.2} | {} | {} |",
                r.kind.name(),
                r.threads,
                r.pattern.name(),
                mb_per_s(r.engine_blocks_per_s),
                r.engine_blocks_per_s,
                mb_per_s(r.raw_blocks_per_s),
                r.raw_blocks_per_s,
                r.ratio,
                r.device_writes
                    .map_or("-".to_owned(), |d| format!("{d:.3}")),
                r.flushes_per_k
                    .map_or("-".to_owned(), |d| format!("{d:.1}")),
            );
        }
        self.flush_markdown(&mut out);
        self.amplification_markdown(&mut out);
        self.floors_markdown(&rows, &mut out);
        out
    }

    fn flush_markdown(&self, out: &mut String) {
        let _ = writeln!(
            out,
            "\nWrite 4 KiB + flush, 1 thread, {} samples each, alternating; on fully written \
             files (as on a block device) and on the rounds' sparse files (the engine's new \
             blocks make the filesystem commit an allocation; raw overwrites):\n",
            self.flush_written.engine_us.len()
        );
        out.push_str("| files | | p50 us | p99 us |\n|---|---|---:|---:|\n");
        for (files, f) in [("written", &self.flush_written), ("sparse", &self.flush)] {
            let _ = writeln!(
                out,
                "| {files} | engine write + flush | {:.0} | {:.0} |",
                percentile(&f.engine_us, 50),
                percentile(&f.engine_us, 99)
            );
            let _ = writeln!(
                out,
                "| {files} | raw write + fdatasync | {:.0} | {:.0} |",
                percentile(&f.raw_us, 50),
                percentile(&f.raw_us, 99)
            );
            let _ = writeln!(
                out,
                "| {files} | engine / raw | {:.2} | {:.2} |",
                flush_ratio(f, 50),
                flush_ratio(f, 99)
            );
        }
        for (files, f) in [("written", &self.flush_written), ("sparse", &self.flush)] {
            let samples = f.engine_us.len().max(1) as u64;
            let _ = writeln!(
                out,
                "\nPer engine write + flush ({files} files): {:.2} store flushes, {:.2} \
                 metadata block writes.",
                ratio(f.store_flushes, samples),
                ratio(f.meta_writes, samples)
            );
        }
    }

    fn amplification_markdown(&self, out: &mut String) {
        let a = &self.amplification;
        out.push_str(
            "\nDevice writes per unique 4 KiB write, memory store, 1 thread \
             (stats: (bios_meta_write + bios_out.write) / bios_in.write; counted: 4 KiB \
             blocks reaching the store):\n\n",
        );
        out.push_str("| | stats | counted |\n|---|---:|---:|\n");
        let _ = writeln!(
            out,
            "| unique-seq, through its flush | {:.3} | {:.3} |",
            a.seq_stats, a.seq_counted
        );
        let _ = writeln!(
            out,
            "| unique-rand, through its flush | {:.3} | {:.3} |",
            a.random_stats, a.random_counted
        );
        let _ = writeln!(
            out,
            "| both, plus close (checkpoint, index save) | - | {:.3} |",
            a.with_close_counted
        );
        let _ = writeln!(
            out,
            "\nStore flushes for those {} writes and the close: {}.",
            2 * self.blocks,
            a.flushes_with_close
        );
    }

    fn floors_markdown(&self, rows: &[Row], out: &mut String) {
        let dup_mem = self.row(rows, StoreKind::Memory, 1, Pattern::Dup100);
        let dup_file = self.row(rows, StoreKind::File, 1, Pattern::Dup100);
        let rand_1 = self.row(rows, StoreKind::File, 1, Pattern::UniqueRandom);
        let rand_2 = self.row(rows, StoreKind::File, 2, Pattern::UniqueRandom);
        let flush = flush_ratio(&self.flush_written, 50);
        let a = &self.amplification;
        let writes = a.random_stats.max(a.with_close_counted);
        out.push_str("\nSPEC section 10 floors:\n\n| floor | measured | verdict |\n");
        out.push_str("|---|---:|---|\n");
        let verdict = |ok: bool| if ok { "meets" } else { "MISSES" };
        let lines = [
            (
                "dup-100 >= 250k blk/s, 1 core (memory store)".to_owned(),
                format!("{dup_mem:.0}"),
                verdict(dup_mem >= DUP_BLOCKS_PER_S_FLOOR),
            ),
            (
                "dup-100 >= 250k blk/s, 1 core (file store)".to_owned(),
                format!("{dup_file:.0}"),
                verdict(dup_file >= DUP_BLOCKS_PER_S_FLOOR),
            ),
            (
                "unique-rand >= 1.0x raw file, 1 thread".to_owned(),
                format!("{rand_1:.2}x"),
                verdict(rand_1 >= UNIQUE_RANDOM_RATIO_FLOOR),
            ),
            (
                "unique-rand >= 1.0x raw file, 2 threads".to_owned(),
                format!("{rand_2:.2}x"),
                verdict(rand_2 >= UNIQUE_RANDOM_RATIO_FLOOR),
            ),
            (
                "write + flush p50 <= 1.3x raw fdatasync p50 (written files)".to_owned(),
                format!("{flush:.2}x"),
                verdict(flush <= FLUSH_P50_RATIO_CEILING),
            ),
            (
                "<= 1.1 device writes per unique write (worst above)".to_owned(),
                format!("{writes:.3}"),
                verdict(writes <= DEVICE_WRITES_CEILING),
            ),
        ];
        for (what, measured, verdict) in lines {
            let _ = writeln!(out, "| {what} | {measured} | {verdict} |");
        }
    }
}

/// (metadata writes + data writes) / requests, between two snapshots.
pub(crate) fn device_writes_per_write(before: &VolumeStats, after: &VolumeStats) -> f64 {
    let device = (after.bios_meta_write - before.bios_meta_write)
        + (after.bios_out.write - before.bios_out.write);
    let requests = after.bios_in.write - before.bios_in.write;
    #[expect(clippy::cast_precision_loss, reason = "a ratio for display")]
    let ratio = device as f64 / requests.max(1) as f64;
    ratio
}

/// Engine p`p` over raw p`p` of write + flush samples.
fn flush_ratio(f: &FlushSamples, p: usize) -> f64 {
    percentile(&f.engine_us, p) / percentile(&f.raw_us, p)
}

/// Store flushes per 1000 requests, between two snapshots.
pub(crate) fn flushes_per_k_writes(before: &VolumeStats, after: &VolumeStats) -> f64 {
    let flushes = after.flush_out - before.flush_out;
    let requests = after.bios_in.write - before.bios_in.write;
    1000.0 * ratio(flushes, requests)
}

fn ratio(numerator: u64, denominator: u64) -> f64 {
    #[expect(clippy::cast_precision_loss, reason = "a ratio for display")]
    let ratio = numerator as f64 / denominator.max(1) as f64;
    ratio
}

fn mb_per_s(blocks_per_s: f64) -> f64 {
    blocks_per_s * BLOCK_BYTES as f64 / 1e6
}

fn median(values: impl Iterator<Item = f64>) -> f64 {
    let mut sorted: Vec<f64> = values.collect();
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted.sort_by(f64::total_cmp);
    let mid = sorted.len() / 2;
    if sorted.len() % 2 == 1 {
        sorted[mid]
    } else {
        f64::midpoint(sorted[mid - 1], sorted[mid])
    }
}

/// Nearest-rank percentile.
fn percentile(values: &[f64], p: usize) -> f64 {
    if values.is_empty() {
        return f64::NAN;
    }
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let rank = (p * sorted.len()).div_ceil(100).clamp(1, sorted.len());
    sorted[rank - 1]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_use_nearest_rank() {
        let values: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile(&values, 50), 50.0);
        assert_eq!(percentile(&values, 99), 99.0);
        assert_eq!(median([3.0, 1.0, 2.0].into_iter()), 2.0);
    }
}
