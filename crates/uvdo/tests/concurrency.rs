//! Many threads on one volume: writers on their own LBN ranges and on a shared range, with
//! unique, duplicate and zero data, trims and flushes, while readers check that every block
//! they see is one that was written there (never torn, never another LBN's data).
//!
//! Each writer knows the last thing it did to each LBN. On its own range that is what the LBN
//! must hold at the end; on the shared range the final contents must be the last write of one
//! of the writers (writes to one LBN are ordered, so the final one is some writer's last).

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use common::{BLOCK, BLOCK_U64, Data, assert_audit_clean, memory_store};
use rand::Rng;
use rand::rngs::StdRng;
use uvdo::{ExtentKind, OpenOptions, Volume};
use uvdo_format::block_map_page::ENTRIES_PER_PAGE_U64;

const WRITERS: u64 = 4;
const READERS: u64 = 2;
const OPS_PER_WRITER: u64 = 400;
/// LBNs each writer owns, at the start of its own leaf page.
const OWN: u64 = 48;
/// LBNs every writer writes, in the last page.
const SHARED: u64 = 16;
const SHARED_START: u64 = WRITERS * ENTRIES_PER_PAGE_U64 + 100;
const LOGICAL_BLOCKS: u64 = (WRITERS + 1) * ENTRIES_PER_PAGE_U64;
/// Contents shared by all writers, for dedupe between threads.
const POOL: u64 = 6;
const MAGIC: u64 = 0x7576_646f_636f_6e63;

/// A block that says where it belongs: (LBN or `u64::MAX` for pool blocks, writer, sequence),
/// and whose remaining bytes derive from those, so a torn or misplaced block is recognised.
fn tagged(lbn: u64, writer: u64, seq: u64) -> Data {
    let mut block = [0_u8; BLOCK];
    let header = [MAGIC, lbn, writer, seq];
    for (chunk, word) in block.chunks_exact_mut(8).zip(header) {
        chunk.copy_from_slice(&word.to_le_bytes());
    }
    let filler = common::unique_block(lbn.rotate_left(32) ^ writer.rotate_left(16) ^ seq);
    block[32..].copy_from_slice(&filler[32..]);
    block
}

fn pool_block(k: u64) -> Data {
    tagged(u64::MAX, u64::MAX, k)
}

/// Whether `block` is something that may be read at `lbn`: zeros or a whole tagged block.
fn plausible(lbn: u64, block: &Data) -> bool {
    if block.iter().all(|&b| b == 0) {
        return true;
    }
    let word = |i: usize| u64::from_le_bytes(block[i * 8..i * 8 + 8].try_into().expect("8"));
    let (at, writer, seq) = (word(1), word(2), word(3));
    word(0) == MAGIC && (at == lbn || at == u64::MAX) && *block == tagged(at, writer, seq)
}

/// What a writer last did to one LBN.
type Last = BTreeMap<u64, Option<Data>>;

struct Writer<'a> {
    volume: &'a Volume,
    id: u64,
    rng: StdRng,
    seq: u64,
    last: Last,
}

impl Writer<'_> {
    fn own_start(&self) -> u64 {
        self.id * ENTRIES_PER_PAGE_U64
    }

    fn content(&mut self, lbn: u64) -> Data {
        self.seq += 1;
        match self.rng.random_range(0..10) {
            0..6 => tagged(lbn, self.id, self.seq),
            6..9 => pool_block(self.rng.random_range(0..POOL)),
            _ => [0; BLOCK],
        }
    }

    fn run(mut self) -> Last {
        for step in 0..OPS_PER_WRITER {
            let ctx = format!("writer {} step {step}", self.id);
            match self.rng.random_range(0..20) {
                0..10 => self.write_own(&ctx),
                10..12 => self.trim_own(&ctx),
                12..19 => self.write_shared(&ctx),
                _ => self.volume.flush().unwrap_or_else(|e| panic!("{ctx}: {e}")),
            }
        }
        self.last
    }

    fn write_own(&mut self, ctx: &str) {
        let first = self.own_start() + self.rng.random_range(0..OWN);
        let blocks = self
            .rng
            .random_range(1..=3)
            .min(self.own_start() + OWN - first);
        let data: Vec<Data> = (first..first + blocks).map(|l| self.content(l)).collect();
        let bytes: Vec<u8> = data.iter().flatten().copied().collect();
        let fua = self.rng.random_bool(0.1);
        self.volume
            .write(first * BLOCK_U64, &bytes, fua)
            .unwrap_or_else(|e| panic!("{ctx}: write at {first}: {e}"));
        for (lbn, block) in (first..).zip(data) {
            self.last.insert(lbn, Some(block));
        }
    }

    fn trim_own(&mut self, ctx: &str) {
        let first = self.own_start() + self.rng.random_range(0..OWN);
        let blocks = self
            .rng
            .random_range(1..=2)
            .min(self.own_start() + OWN - first);
        self.volume
            .trim(first * BLOCK_U64, blocks * BLOCK_U64)
            .unwrap_or_else(|e| panic!("{ctx}: trim at {first}: {e}"));
        for lbn in first..first + blocks {
            self.last.insert(lbn, None);
        }
    }

    fn write_shared(&mut self, ctx: &str) {
        let lbn = SHARED_START + self.rng.random_range(0..SHARED);
        let data = self.content(lbn);
        self.volume
            .write(lbn * BLOCK_U64, &data, false)
            .unwrap_or_else(|e| panic!("{ctx}: shared write at {lbn}: {e}"));
        self.last.insert(lbn, Some(data));
    }
}

fn reader(volume: &Volume, seed: u64, done: &AtomicBool) -> u64 {
    let mut rng = common::rng(seed);
    let mut reads = 0;
    while !done.load(Ordering::Relaxed) || reads < 100 {
        let lbn = if rng.random_bool(0.5) {
            SHARED_START + rng.random_range(0..SHARED)
        } else {
            rng.random_range(0..WRITERS) * ENTRIES_PER_PAGE_U64 + rng.random_range(0..OWN)
        };
        let mut block = [0; BLOCK];
        volume
            .read(lbn * BLOCK_U64, &mut block)
            .unwrap_or_else(|e| panic!("read of LBN {lbn}: {e}"));
        assert!(
            plausible(lbn, &block),
            "LBN {lbn} read a block never written there"
        );
        reads += 1;
    }
    reads
}

/// What every LBN must hold once all writers are done: the owner's last action on its own
/// range; on the shared range, whatever the volume holds, after checking it is some writer's
/// last write.
fn settle(volume: &Volume, lasts: &[Last]) -> BTreeMap<u64, Option<Data>> {
    let mut want = BTreeMap::new();
    for (id, last) in (0..).zip(lasts) {
        for lbn in id * ENTRIES_PER_PAGE_U64..id * ENTRIES_PER_PAGE_U64 + OWN {
            want.insert(lbn, last.get(&lbn).copied().flatten());
        }
    }
    for lbn in SHARED_START..SHARED_START + SHARED {
        let candidates: Vec<Data> = lasts
            .iter()
            .filter_map(|last| last.get(&lbn).copied().flatten())
            .collect();
        let got = common::read_block(volume, lbn);
        if candidates.is_empty() {
            assert_eq!(got, [0; BLOCK], "shared LBN {lbn} was never written");
            want.insert(lbn, None);
        } else {
            assert!(
                candidates.contains(&got),
                "shared LBN {lbn} holds {} which is no writer's last write",
                common::describe(&got)
            );
            want.insert(lbn, Some(got));
        }
    }
    want
}

fn check(volume: &Volume, want: &BTreeMap<u64, Option<Data>>, constant_hash: bool, when: &str) {
    for (&lbn, expected) in want {
        let got = common::read_block(volume, lbn);
        assert!(
            got == expected.unwrap_or([0; BLOCK]),
            "{when}: LBN {lbn} reads {} instead of {:?}",
            common::describe(&got),
            expected.as_ref().map(common::describe)
        );
        let status = volume
            .block_status(lbn * BLOCK_U64, BLOCK_U64)
            .expect("block status");
        let kind = match expected {
            None => ExtentKind::Unmapped,
            Some(b) if *b == [0; BLOCK] => ExtentKind::Zero,
            Some(_) => ExtentKind::Data,
        };
        assert_eq!(status[0].kind, kind, "{when}: LBN {lbn} status");
    }
    volume.flush().expect("flush");
    let stats = volume.stats();
    let mapped = want.values().filter(|w| w.is_some()).count() as u64;
    let distinct: BTreeSet<Data> = want
        .values()
        .filter_map(|w| *w)
        .filter(|b| *b != [0; BLOCK])
        .collect();
    assert_eq!(stats.logical_blocks_used, mapped, "{when}: {stats:#?}");
    if constant_hash {
        // The index holds one block for the single name, so older contents may be stored
        // again; never fewer blocks than contents, never more than mapped LBNs.
        assert!(
            (distinct.len() as u64..=mapped).contains(&stats.data_blocks_used),
            "{when}: {} distinct contents: {stats:#?}",
            distinct.len()
        );
    } else {
        assert_eq!(
            stats.data_blocks_used,
            distinct.len() as u64,
            "{when}: concurrent writes of the same data must share one block: {stats:#?}"
        );
    }
    assert_audit_clean(volume, when);
}

fn run(test: &'static str, constant_hash: bool) {
    let (seed, _guard) = common::seed(test);
    let options = OpenOptions {
        testing_constant_hash: constant_hash,
        ..OpenOptions::default()
    };
    let store = memory_store(8 << 20);
    let config = common::tiny(LOGICAL_BLOCKS);
    Volume::format(&*store, &config).expect("format");
    let volume = Volume::open(Arc::clone(&store), &options).expect("open");
    let done = AtomicBool::new(false);
    let lasts: Vec<Last> = std::thread::scope(|scope| {
        let readers: Vec<_> = (0..READERS)
            .map(|r| {
                let (volume, done) = (&volume, &done);
                scope.spawn(move || reader(volume, seed ^ (0xdead << r), done))
            })
            .collect();
        let writers: Vec<_> = (0..WRITERS)
            .map(|id| {
                let writer = Writer {
                    volume: &volume,
                    id,
                    rng: common::rng(seed.wrapping_add(id)),
                    seq: 0,
                    last: Last::new(),
                };
                scope.spawn(move || writer.run())
            })
            .collect();
        let lasts = writers
            .into_iter()
            .map(|w| w.join().expect("writer panicked"))
            .collect();
        done.store(true, Ordering::Relaxed);
        for r in readers {
            assert!(r.join().expect("reader panicked") > 0);
        }
        lasts
    });
    let want = settle(&volume, &lasts);
    check(&volume, &want, constant_hash, "after the threads");
    volume.close().expect("close");

    let volume = Volume::open(store, &options).expect("reopen");
    check(&volume, &want, constant_hash, "after reopen");
    volume.close().expect("close");
}

#[test]
fn concurrent_writers_and_readers_agree_with_last_writers() {
    run(
        "concurrent_writers_and_readers_agree_with_last_writers",
        false,
    );
}

/// Every block has one name: all writers of data meet on one name lock and every write of
/// new data meets stale advice from another thread.
#[test]
fn concurrent_writers_with_one_block_name_never_share_wrongly() {
    run(
        "concurrent_writers_with_one_block_name_never_share_wrongly",
        true,
    );
}
