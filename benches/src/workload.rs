//! The workloads: which offsets each writes or reads, with which data, built before any
//! timing starts, and the timed loop that runs one on a target with 1 or more threads.
//!
//! One volume's logical space, in units of N = the blocks per workload:
//!
//! ```text
//! [0, N)     unique-seq writes, later read back by read-seq
//! [N, 5N)    unique-rand writes: N distinct LBNs drawn at random, read back by read-rand
//! [5N, 6N)   dup-100: the unique-seq data again, so every block is a duplicate
//! [6N, 7N)   dup-50: even blocks repeat unique-seq data, odd blocks are new
//! [7N, 8N)   zero: all-zero blocks
//! ```
//!
//! The raw baseline gets the same offsets on its own store of the same size.

use std::time::Instant;

use crate::target::{BenchError, Target};

pub(crate) const BLOCK_BYTES: usize = 4096;
/// Regions of N blocks a volume's workloads span (see the module doc).
pub(crate) const REGIONS: u64 = 8;

/// What a workload does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Pattern {
    UniqueSeq,
    UniqueRandom,
    Dup100,
    Dup50,
    Zero,
    ReadSeq,
    ReadRandom,
}

impl Pattern {
    /// In the order they run on a volume: reads need the unique writes before them.
    pub(crate) const ALL: [Self; 7] = [
        Self::UniqueSeq,
        Self::UniqueRandom,
        Self::Dup100,
        Self::Dup50,
        Self::Zero,
        Self::ReadSeq,
        Self::ReadRandom,
    ];

    pub(crate) fn name(self) -> &'static str {
        match self {
            Self::UniqueSeq => "unique-seq",
            Self::UniqueRandom => "unique-rand",
            Self::Dup100 => "dup-100",
            Self::Dup50 => "dup-50",
            Self::Zero => "zero",
            Self::ReadSeq => "read-seq",
            Self::ReadRandom => "read-rand",
        }
    }

    pub(crate) fn is_write(self) -> bool {
        !matches!(self, Self::ReadSeq | Self::ReadRandom)
    }
}

/// One workload: an offset per block and, for writes, the block's data at the same index.
#[derive(Clone, Copy)]
pub(crate) struct Job<'a> {
    pub(crate) offsets: &'a [u64],
    pub(crate) data: Option<&'a [u8]>,
}

/// Every workload's offsets and data for volumes of `blocks` blocks per workload.
pub(crate) struct Plan {
    blocks: u64,
    seq: Vec<u64>,
    random: Vec<u64>,
    random_read: Vec<u64>,
    dup100: Vec<u64>,
    dup50: Vec<u64>,
    zero: Vec<u64>,
    unique_a: Vec<u8>,
    unique_b: Vec<u8>,
    half: Vec<u8>,
    zeros: Vec<u8>,
    /// New data for the flush-latency samples (unique, so each costs a data write).
    pub(crate) fresh: Vec<u8>,
}

impl Plan {
    pub(crate) fn new(blocks: u64, fresh_blocks: u64, seed: u64) -> Self {
        let mut rng = SplitMix(seed);
        let region = |index: u64| -> Vec<u64> {
            (index * blocks..(index + 1) * blocks)
                .map(|b| b * BLOCK_BYTES as u64)
                .collect()
        };
        let mut spread: Vec<u64> = (blocks..5 * blocks).collect();
        rng.shuffle(&mut spread);
        spread.truncate(to_usize(blocks));
        let random: Vec<u64> = spread.iter().map(|b| b * BLOCK_BYTES as u64).collect();
        let mut random_read = random.clone();
        rng.shuffle(&mut random_read);
        let unique_a = rng.blocks(blocks);
        let mut half = rng.blocks(blocks);
        for (i, block) in half.chunks_exact_mut(BLOCK_BYTES).enumerate() {
            if i % 2 == 0 {
                block.copy_from_slice(&unique_a[i * BLOCK_BYTES..(i + 1) * BLOCK_BYTES]);
            }
        }
        Self {
            blocks,
            seq: region(0),
            random,
            random_read,
            dup100: region(5),
            dup50: region(6),
            zero: region(7),
            unique_b: rng.blocks(blocks),
            unique_a,
            half,
            zeros: vec![0; to_usize(blocks) * BLOCK_BYTES],
            fresh: rng.blocks(fresh_blocks),
        }
    }

    pub(crate) fn blocks(&self) -> u64 {
        self.blocks
    }

    pub(crate) fn job(&self, pattern: Pattern) -> Job<'_> {
        let (offsets, data) = match pattern {
            Pattern::UniqueSeq => (&self.seq, Some(&self.unique_a)),
            Pattern::UniqueRandom => (&self.random, Some(&self.unique_b)),
            Pattern::Dup100 => (&self.dup100, Some(&self.unique_a)),
            Pattern::Dup50 => (&self.dup50, Some(&self.half)),
            Pattern::Zero => (&self.zero, Some(&self.zeros)),
            Pattern::ReadSeq => (&self.seq, None),
            Pattern::ReadRandom => (&self.random_read, None),
        };
        Job {
            offsets,
            data: data.map(Vec::as_slice),
        }
    }

    /// Offsets for the flush-latency samples: overwrites of unique-seq blocks, so the raw
    /// store rewrites allocated file blocks.
    pub(crate) fn flush_offsets(&self) -> &[u64] {
        &self.seq
    }
}

/// Runs `job` on `target` split into `threads` contiguous parts; writes end with one flush,
/// inside the timing, so only durable work counts. Returns seconds.
pub(crate) fn run(target: &dyn Target, job: Job<'_>, threads: usize) -> Result<f64, BenchError> {
    let count = job.offsets.len();
    let part = count.div_ceil(threads);
    let started = Instant::now();
    std::thread::scope(|scope| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                let range = (t * part).min(count)..((t + 1) * part).min(count);
                scope.spawn(move || run_part(target, job, range))
            })
            .collect();
        handles
            .into_iter()
            .try_for_each(|h| h.join().expect("benchmark thread panicked"))
    })?;
    if job.data.is_some() {
        target.flush()?;
    }
    Ok(started.elapsed().as_secs_f64())
}

fn run_part(
    target: &dyn Target,
    job: Job<'_>,
    range: std::ops::Range<usize>,
) -> Result<(), BenchError> {
    let mut buf = vec![0_u8; BLOCK_BYTES];
    for i in range {
        let offset = job.offsets[i];
        match job.data {
            Some(data) => target.write(offset, &data[i * BLOCK_BYTES..(i + 1) * BLOCK_BYTES])?,
            None => target.read(offset, &mut buf)?,
        }
    }
    Ok(())
}

/// One 4 KiB write then a flush; returns microseconds.
pub(crate) fn write_flush_us(
    target: &dyn Target,
    offset: u64,
    block: &[u8],
) -> Result<f64, BenchError> {
    let started = Instant::now();
    target.write(offset, block)?;
    target.flush()?;
    Ok(started.elapsed().as_secs_f64() * 1e6)
}

/// A small deterministic generator (SplitMix64): the benchmark needs reproducible unique
/// data and permutations, not statistical quality.
struct SplitMix(u64);

impl SplitMix {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn shuffle(&mut self, items: &mut [u64]) {
        for i in (1..items.len()).rev() {
            let j = to_usize(self.next() % (i as u64 + 1));
            items.swap(i, j);
        }
    }

    /// `count` blocks of random bytes: unique with overwhelming probability.
    fn blocks(&mut self, count: u64) -> Vec<u8> {
        let mut out = vec![0_u8; to_usize(count) * BLOCK_BYTES];
        for word in out.chunks_exact_mut(8) {
            word.copy_from_slice(&self.next().to_le_bytes());
        }
        out
    }
}

pub(crate) fn to_usize(value: u64) -> usize {
    usize::try_from(value).expect("benchmark sizes fit in memory")
}
