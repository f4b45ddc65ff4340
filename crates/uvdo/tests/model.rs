//! Model-based test (STYLE rule 11): random operation sequences against a `BTreeMap` model of
//! what each logical block holds, on the memory store and on a file store, in the tiny and a
//! mid-size geometry, with close and reopen in the middle.
//!
//! The model maps every *mapped* LBN to its contents: a write (even of zeros), write-zeroes,
//! and a partial write or partial trim (a read-modify-write) map the block; a whole-block trim
//! unmaps it. So after a flush the volume's `logical_blocks_used` is the model's length and
//! `data_blocks_used` the number of distinct non-zero contents (dedupe shares all copies; no
//! content here comes near the reference limit).

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::Arc;

use common::{BLOCK, BLOCK_U64, Data, assert_audit_clean, describe, memory_store, unique_block};
use proptest::prelude::*;
use uvdo::{ExtentKind, FormatConfig, OpenOptions, Volume, WritePolicy};
use uvdo_format::block_map_page::ENTRIES_PER_PAGE_U64;
use uvdo_io::Storage;

/// Leaf pages the operations touch; with a 2-page cache they evict one another.
const PAGES: u64 = 4;
/// LBNs used at the start of each leaf page.
const SLOTS: u64 = 24;
/// Blocks a multi-block operation covers at most.
const RUN_MAX: u64 = 3;
const LOGICAL_BLOCKS: u64 = PAGES * ENTRIES_PER_PAGE_U64;
const SECTOR: u64 = 512;
const SECTORS_PER_BLOCK: u64 = 8;

/// Where an operation starts: the first slots of one of a few leaf pages.
#[derive(Clone, Copy, Debug)]
struct Spot {
    page: u64,
    slot: u64,
}

impl Spot {
    fn lbn(self) -> u64 {
        self.page * ENTRIES_PER_PAGE_U64 + self.slot
    }
}

/// A byte range inside or across blocks, in sectors from a spot.
#[derive(Clone, Copy, Debug)]
struct Sectors {
    at: Spot,
    /// First sector within the block.
    first: u64,
    /// Sectors covered, at most 9: may run into the next block, never past it.
    count: u64,
}

impl Sectors {
    fn offset(self) -> u64 {
        self.at.lbn() * BLOCK_U64 + self.first * SECTOR
    }

    fn len(self) -> u64 {
        self.count * SECTOR
    }
}

#[derive(Clone, Debug)]
enum Op {
    /// Blocks of data no other step wrote.
    WriteUnique {
        at: Spot,
        blocks: u64,
        fua: bool,
    },
    /// A copy of a block the model already holds (the `pick`th non-zero content).
    WriteDuplicate {
        at: Spot,
        pick: usize,
        fua: bool,
    },
    /// A data write whose bytes are all zero.
    WriteZeroData {
        at: Spot,
        blocks: u64,
    },
    /// Part of a block (or across two), read-modify-write.
    WritePartial {
        range: Sectors,
        fua: bool,
    },
    Read {
        at: Spot,
        blocks: u64,
    },
    ReadPartial {
        range: Sectors,
    },
    Trim {
        at: Spot,
        blocks: u64,
    },
    TrimPartial {
        range: Sectors,
    },
    WriteZeroes {
        at: Spot,
        blocks: u64,
    },
    WriteZeroesPartial {
        range: Sectors,
    },
    Flush,
    Reopen,
    /// Changes the write policy of the open volume (stored, so it outlives a reopen).
    SetPolicy(WritePolicy),
}

fn spot() -> impl Strategy<Value = Spot> {
    (0..PAGES, 0..SLOTS).prop_map(|(page, slot)| Spot { page, slot })
}

fn sectors() -> impl Strategy<Value = Sectors> {
    (spot(), 0..SECTORS_PER_BLOCK, 1..=9_u64).prop_map(|(at, first, count)| Sectors {
        at,
        first,
        count,
    })
}

fn op() -> impl Strategy<Value = Op> {
    let blocks = || 1..=RUN_MAX;
    prop_oneof![
        6 => (spot(), blocks(), any::<bool>())
            .prop_map(|(at, blocks, fua)| Op::WriteUnique { at, blocks, fua }),
        5 => (spot(), any::<usize>(), any::<bool>())
            .prop_map(|(at, pick, fua)| Op::WriteDuplicate { at, pick, fua }),
        1 => (spot(), blocks()).prop_map(|(at, blocks)| Op::WriteZeroData { at, blocks }),
        3 => (sectors(), any::<bool>()).prop_map(|(range, fua)| Op::WritePartial { range, fua }),
        2 => (spot(), blocks()).prop_map(|(at, blocks)| Op::Read { at, blocks }),
        1 => sectors().prop_map(|range| Op::ReadPartial { range }),
        3 => (spot(), blocks()).prop_map(|(at, blocks)| Op::Trim { at, blocks }),
        1 => sectors().prop_map(|range| Op::TrimPartial { range }),
        2 => (spot(), blocks()).prop_map(|(at, blocks)| Op::WriteZeroes { at, blocks }),
        1 => sectors().prop_map(|range| Op::WriteZeroesPartial { range }),
        2 => Just(Op::Flush),
        1 => Just(Op::Reopen),
        1 => prop_oneof![
            Just(WritePolicy::Sync),
            Just(WritePolicy::Async),
            Just(WritePolicy::AsyncUnsafe),
            Just(WritePolicy::Auto),
        ]
        .prop_map(Op::SetPolicy),
    ]
}

/// What a sector range does to the blocks it covers.
enum Change {
    Write(Vec<u8>),
    Trim,
    Zeroes,
}

/// Where the volume lives between reopens.
enum Backing {
    Memory(Arc<dyn Storage>),
    /// A temp file, reopened by path each time.
    File {
        _dir: tempfile::TempDir,
        path: PathBuf,
    },
}

impl Backing {
    fn store(&self) -> Arc<dyn Storage> {
        match self {
            Self::Memory(store) => Arc::clone(store),
            Self::File { path, .. } => {
                uvdo_io::open::open_store(path, &uvdo_io::open::OpenOptions::default())
                    .expect("reopen the file store")
            }
        }
    }
}

struct Harness {
    backing: Backing,
    volume: Option<Volume>,
    model: BTreeMap<u64, Data>,
    /// Tags for unique data: distinct per step within a case.
    next_tag: u64,
    step: usize,
}

impl Harness {
    fn new(config: &FormatConfig, file: bool) -> Self {
        let bytes = 8 << 20;
        let backing = if file {
            let dir = tempfile::tempdir().expect("temp dir");
            let path = dir.path().join("volume.img");
            let options = uvdo_io::open::OpenOptions {
                create_size: Some(bytes),
                ..Default::default()
            };
            drop(uvdo_io::open::open_store(&path, &options).expect("create the file store"));
            Backing::File { _dir: dir, path }
        } else {
            Backing::Memory(memory_store(bytes))
        };
        Volume::format(&*backing.store(), config).expect("format");
        let volume = Volume::open(backing.store(), &OpenOptions::default()).expect("open");
        Self {
            backing,
            volume: Some(volume),
            model: BTreeMap::new(),
            next_tag: 1,
            step: 0,
        }
    }

    fn volume(&self) -> &Volume {
        self.volume.as_ref().expect("volume open")
    }

    fn tag(&mut self) -> u64 {
        self.next_tag += 1;
        self.next_tag
    }

    /// The model's view of one block: zeros when unmapped.
    fn expected(&self, lbn: u64) -> Data {
        self.model.get(&lbn).copied().unwrap_or([0; BLOCK])
    }

    fn run(&mut self, op: &Op) {
        let ctx = format!("step {} {op:?}", self.step);
        match *op {
            Op::WriteUnique { at, blocks, fua } => {
                let data: Vec<Data> = (0..blocks).map(|_| unique_block(self.tag())).collect();
                self.write_blocks(at.lbn(), &data, fua, &ctx);
            }
            Op::WriteDuplicate { at, pick, fua } => {
                let contents: BTreeSet<Data> = self
                    .model
                    .values()
                    .filter(|b| b.iter().any(|&x| x != 0))
                    .copied()
                    .collect();
                let data = if contents.is_empty() {
                    unique_block(self.tag())
                } else {
                    *contents
                        .iter()
                        .nth(pick % contents.len())
                        .expect("in range")
                };
                self.write_blocks(at.lbn(), &[data], fua, &ctx);
            }
            Op::WriteZeroData { at, blocks } => {
                let data = vec![[0; BLOCK]; usize::try_from(blocks).expect("small")];
                self.write_blocks(at.lbn(), &data, false, &ctx);
            }
            Op::WritePartial { range, fua } => {
                let mut source = unique_block(self.tag()).to_vec();
                source.extend_from_slice(&unique_block(self.tag()));
                let bytes = &source[..usize::try_from(range.len()).expect("small")];
                self.volume()
                    .write(range.offset(), bytes, fua)
                    .unwrap_or_else(|e| panic!("{ctx}: {e}"));
                let change = Change::Write(bytes.to_vec());
                self.apply(range, &change);
            }
            Op::Read { at, blocks } => self.check_blocks(at.lbn(), blocks, &ctx),
            Op::ReadPartial { range } => self.check_partial(range, &ctx),
            Op::Trim { at, blocks } => {
                self.volume()
                    .trim(at.lbn() * BLOCK_U64, blocks * BLOCK_U64)
                    .unwrap_or_else(|e| panic!("{ctx}: {e}"));
                for lbn in at.lbn()..at.lbn() + blocks {
                    self.model.remove(&lbn);
                }
            }
            Op::TrimPartial { range } => {
                self.volume()
                    .trim(range.offset(), range.len())
                    .unwrap_or_else(|e| panic!("{ctx}: {e}"));
                self.apply(range, &Change::Trim);
            }
            Op::WriteZeroes { at, blocks } => {
                self.volume()
                    .write_zeroes(at.lbn() * BLOCK_U64, blocks * BLOCK_U64)
                    .unwrap_or_else(|e| panic!("{ctx}: {e}"));
                for lbn in at.lbn()..at.lbn() + blocks {
                    self.model.insert(lbn, [0; BLOCK]);
                }
            }
            Op::WriteZeroesPartial { range } => {
                self.volume()
                    .write_zeroes(range.offset(), range.len())
                    .unwrap_or_else(|e| panic!("{ctx}: {e}"));
                self.apply(range, &Change::Zeroes);
            }
            Op::Flush => {
                self.volume()
                    .flush()
                    .unwrap_or_else(|e| panic!("{ctx}: {e}"));
                self.check_stats(&ctx);
            }
            Op::Reopen => self.reopen(&ctx),
            Op::SetPolicy(policy) => {
                self.volume()
                    .set_write_policy(policy, None)
                    .unwrap_or_else(|e| panic!("{ctx}: {e}"));
                // Everything before the change was flushed.
                self.check_stats(&ctx);
            }
        }
        self.check_touched(op, &ctx);
        self.step += 1;
    }

    fn write_blocks(&mut self, lbn: u64, data: &[Data], fua: bool, ctx: &str) {
        let bytes: Vec<u8> = data.iter().flatten().copied().collect();
        self.volume()
            .write(lbn * BLOCK_U64, &bytes, fua)
            .unwrap_or_else(|e| panic!("{ctx}: {e}"));
        for (i, block) in (lbn..).zip(data) {
            self.model.insert(i, *block);
        }
    }

    /// Applies a sector range to the model: whole blocks it covers are written, unmapped or
    /// zeroed as `change` says; a partial block is read, patched and written, so it is mapped
    /// afterwards even where it was unmapped.
    fn apply(&mut self, range: Sectors, change: &Change) {
        let mut at = range.offset();
        let end = at + range.len();
        while at < end {
            let lbn = at / BLOCK_U64;
            let within = usize::try_from(at % BLOCK_U64).expect("small");
            let take = usize::try_from((BLOCK_U64 - at % BLOCK_U64).min(end - at)).expect("small");
            let from = usize::try_from(at - range.offset()).expect("small");
            let mut block = self.expected(lbn);
            match change {
                Change::Write(bytes) => {
                    block[within..within + take].copy_from_slice(&bytes[from..from + take]);
                }
                Change::Trim | Change::Zeroes => block[within..within + take].fill(0),
            }
            if take == BLOCK && matches!(change, Change::Trim) {
                self.model.remove(&lbn);
            } else {
                self.model.insert(lbn, block);
            }
            at += take as u64;
        }
    }

    fn touched(op: &Op) -> Option<(u64, u64)> {
        match *op {
            Op::WriteUnique { at, blocks, .. }
            | Op::WriteZeroData { at, blocks }
            | Op::Read { at, blocks }
            | Op::Trim { at, blocks }
            | Op::WriteZeroes { at, blocks } => Some((at.lbn(), blocks)),
            Op::WriteDuplicate { at, .. } => Some((at.lbn(), 1)),
            Op::WritePartial { range, .. }
            | Op::ReadPartial { range }
            | Op::TrimPartial { range }
            | Op::WriteZeroesPartial { range } => {
                let first = range.offset() / BLOCK_U64;
                let last = (range.offset() + range.len() - 1) / BLOCK_U64;
                Some((first, last - first + 1))
            }
            Op::Flush | Op::Reopen | Op::SetPolicy(_) => None,
        }
    }

    /// Reads back (and asks the block status of) every block the step touched.
    fn check_touched(&self, op: &Op, ctx: &str) {
        if let Some((lbn, blocks)) = Self::touched(op) {
            self.check_blocks(lbn, blocks, ctx);
            self.check_status(lbn, blocks, ctx);
        }
    }

    fn check_blocks(&self, lbn: u64, blocks: u64, ctx: &str) {
        let mut buf = vec![0; usize::try_from(blocks * BLOCK_U64).expect("small")];
        self.volume()
            .read(lbn * BLOCK_U64, &mut buf)
            .unwrap_or_else(|e| panic!("{ctx}: read: {e}"));
        for (i, got) in (lbn..).zip(buf.chunks_exact(BLOCK)) {
            let want = self.expected(i);
            if got != want {
                let got: Data = got.try_into().expect("a block");
                panic!(
                    "{ctx}: LBN {i} reads {} but the model holds {}",
                    describe(&got),
                    describe(&want)
                );
            }
        }
    }

    fn check_partial(&self, range: Sectors, ctx: &str) {
        let mut buf = vec![0; usize::try_from(range.len()).expect("small")];
        self.volume()
            .read(range.offset(), &mut buf)
            .unwrap_or_else(|e| panic!("{ctx}: read: {e}"));
        let first = range.offset() / BLOCK_U64;
        let mut want = Vec::new();
        want.extend_from_slice(&self.expected(first));
        want.extend_from_slice(&self.expected(first + 1));
        let start = usize::try_from(range.offset() % BLOCK_U64).expect("small");
        assert!(
            buf == want[start..start + buf.len()],
            "{ctx}: partial read differs from the model"
        );
    }

    fn check_status(&self, lbn: u64, blocks: u64, ctx: &str) {
        let extents = self
            .volume()
            .block_status(lbn * BLOCK_U64, blocks * BLOCK_U64)
            .unwrap_or_else(|e| panic!("{ctx}: block_status: {e}"));
        let mut kinds = Vec::new();
        for extent in &extents {
            assert!(
                extent.offset.is_multiple_of(BLOCK_U64) && extent.len.is_multiple_of(BLOCK_U64),
                "{ctx}: {extents:?}"
            );
            kinds.extend(std::iter::repeat_n(
                extent.kind,
                (extent.len / BLOCK_U64) as usize,
            ));
        }
        let want: Vec<ExtentKind> = (lbn..lbn + blocks)
            .map(|i| match self.model.get(&i) {
                None => ExtentKind::Unmapped,
                Some(block) if block.iter().all(|&b| b == 0) => ExtentKind::Zero,
                Some(_) => ExtentKind::Data,
            })
            .collect();
        assert_eq!(kinds, want, "{ctx}: block status {extents:?}");
    }

    /// Needs everything committed (a flush, a reopen): frees happen at commit.
    fn check_stats(&self, ctx: &str) {
        let stats = self.volume().stats();
        let distinct: BTreeSet<&Data> = self
            .model
            .values()
            .filter(|b| b.iter().any(|&x| x != 0))
            .collect();
        assert_eq!(
            stats.logical_blocks_used,
            self.model.len() as u64,
            "{ctx}: logical blocks used"
        );
        assert_eq!(
            stats.data_blocks_used,
            distinct.len() as u64,
            "{ctx}: data blocks used (distinct non-zero contents)"
        );
        assert_eq!(stats.operating_mode, "normal", "{ctx}");
    }

    fn check_all(&self, ctx: &str) {
        for page in 0..PAGES {
            let lbn = page * ENTRIES_PER_PAGE_U64;
            self.check_blocks(lbn, SLOTS + RUN_MAX, ctx);
            self.check_status(lbn, SLOTS + RUN_MAX, ctx);
        }
        self.check_stats(ctx);
    }

    fn reopen(&mut self, ctx: &str) {
        let volume = self.volume.take().expect("volume open");
        volume
            .close()
            .unwrap_or_else(|e| panic!("{ctx}: close: {e}"));
        let volume = Volume::open(self.backing.store(), &OpenOptions::default())
            .unwrap_or_else(|e| panic!("{ctx}: reopen: {e}"));
        self.volume = Some(volume);
        self.check_all(&format!("{ctx} after reopen"));
    }

    /// The end of a sequence: everything reads back, stats agree, the audit is clean, and
    /// all of it again after a reopen.
    fn finish(mut self) {
        self.volume()
            .flush()
            .unwrap_or_else(|e| panic!("final flush: {e}"));
        self.check_all("end");
        assert_audit_clean(self.volume(), "at the end");
        self.reopen("end");
        assert_audit_clean(self.volume(), "after the final reopen");
        self.volume
            .take()
            .expect("open")
            .close()
            .expect("final close");
    }
}

fn run_sequence(config: &FormatConfig, file: bool, ops: &[Op]) {
    let mut harness = Harness::new(config, file);
    for op in ops {
        harness.run(op);
    }
    harness.finish();
}

fn tiny() -> FormatConfig {
    common::tiny(LOGICAL_BLOCKS)
}

fn mid() -> FormatConfig {
    common::mid(LOGICAL_BLOCKS)
}

/// Cases per test: `default`, or `UVDO_MODEL_CASES` for a longer soak.
fn cases(default: u32) -> ProptestConfig {
    let cases = std::env::var("UVDO_MODEL_CASES")
        .ok()
        .and_then(|text| text.parse().ok())
        .unwrap_or(default);
    ProptestConfig::with_cases(cases)
}

proptest! {
    #![proptest_config(cases(48))]

    #[test]
    fn model_tiny_memory(ops in proptest::collection::vec(op(), 1..120)) {
        run_sequence(&tiny(), false, &ops);
    }

    #[test]
    fn model_mid_memory(ops in proptest::collection::vec(op(), 1..120)) {
        run_sequence(&mid(), false, &ops);
    }
}

proptest! {
    #![proptest_config(cases(12))]

    #[test]
    fn model_tiny_file(ops in proptest::collection::vec(op(), 1..120)) {
        run_sequence(&tiny(), true, &ops);
    }

    #[test]
    fn model_mid_file(ops in proptest::collection::vec(op(), 1..120)) {
        run_sequence(&mid(), true, &ops);
    }
}
