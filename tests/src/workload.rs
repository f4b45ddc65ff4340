//! Workloads: short operation sequences over a handful of LBNs, and their model.

use rand::Rng;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use uvdo_format::{BLOCK_SIZE, Block};

/// One request the workload sends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    /// A whole-block write of content `content` (0 is the zero block).
    Write { lbn: u64, content: u8 },
    /// A whole-block write with FUA.
    WriteFua { lbn: u64, content: u8 },
    /// A 512-byte write of `content` into sector `sector` (read-modify-write in the engine).
    Partial { lbn: u64, sector: u8, content: u8 },
    /// Trim of one block.
    Trim { lbn: u64 },
    /// Write-zeroes of one block.
    Zeroes { lbn: u64 },
    /// Flush.
    Flush,
}

impl Op {
    /// The LBN the op changes, if any.
    #[must_use]
    pub fn lbn(self) -> Option<u64> {
        match self {
            Self::Write { lbn, .. }
            | Self::WriteFua { lbn, .. }
            | Self::Partial { lbn, .. }
            | Self::Trim { lbn }
            | Self::Zeroes { lbn } => Some(lbn),
            Self::Flush => None,
        }
    }
}

/// The 4 KiB content with id `content`: 0 is zeros; others are distinct, and equal ids give
/// equal blocks on every LBN, so workloads dedupe.
#[must_use]
pub fn content(content: u8) -> Block {
    let mut block = [0_u8; BLOCK_SIZE];
    if content != 0 {
        for (i, byte) in block.iter_mut().enumerate() {
            let low = u8::try_from(i % 247).expect("below 247");
            *byte = content.wrapping_mul(31).wrapping_add(low) | 1;
        }
    }
    block
}

/// The block `lbn` holds after `op` was applied to `before`.
#[must_use]
pub fn apply(op: Op, before: &Block) -> Block {
    match op {
        Op::Write { content: c, .. } | Op::WriteFua { content: c, .. } => content(c),
        Op::Partial {
            sector, content: c, ..
        } => {
            let mut after = *before;
            let start = usize::from(sector) * 512;
            after[start..start + 512].copy_from_slice(&content(c)[start..start + 512]);
            after
        }
        Op::Trim { .. } | Op::Zeroes { .. } => [0; BLOCK_SIZE],
        Op::Flush => *before,
    }
}

/// A random workload of `len` ops over `lbns` LBNs with `contents` distinct non-zero contents.
#[must_use]
pub fn random(seed: u64, len: usize, lbns: u64, contents: u8) -> Vec<Op> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    (0..len)
        .map(|_| {
            let lbn = rng.random_range(0..lbns);
            let c = rng.random_range(0..=contents);
            match rng.random_range(0..100) {
                0..45 => Op::Write { lbn, content: c },
                45..52 => Op::WriteFua { lbn, content: c },
                52..62 => Op::Partial {
                    lbn,
                    sector: rng.random_range(0..8),
                    content: c,
                },
                62..70 => Op::Trim { lbn },
                70..76 => Op::Zeroes { lbn },
                _ => Op::Flush,
            }
        })
        .collect()
}

/// Every sequence of `len` ops drawn from a small alphabet over 2 LBNs and 2 contents: the
/// bounded exhaustive workloads.
#[must_use]
pub fn exhaustive(len: usize) -> Vec<Vec<Op>> {
    let alphabet = [
        Op::Write { lbn: 0, content: 1 },
        Op::Write { lbn: 1, content: 1 },
        Op::Write { lbn: 0, content: 2 },
        Op::Write { lbn: 1, content: 0 },
        Op::WriteFua { lbn: 1, content: 2 },
        Op::Partial {
            lbn: 0,
            sector: 3,
            content: 2,
        },
        Op::Trim { lbn: 0 },
        Op::Zeroes { lbn: 1 },
        Op::Flush,
    ];
    let mut all = vec![Vec::new()];
    for _ in 0..len {
        all = all
            .into_iter()
            .flat_map(|prefix| {
                alphabet.iter().map(move |op| {
                    let mut next = prefix.clone();
                    next.push(*op);
                    next
                })
            })
            .collect();
    }
    all
}
