//! Crash tests of the simulated store against a plain model: byte vectors and a list of the
//! writes since the last flush, rebuilt from the event log.

use proptest::prelude::*;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::{CrashPlan, Event, FaultEffect, FaultRule, PendingFate, SimStore, Trigger};
use crate::storage::Storage;

const SECTOR: usize = 512;
const BLOCK: usize = 4096;

fn index(value: u64) -> usize {
    usize::try_from(value).unwrap()
}

/// A write since the last flush, as the model keeps it.
#[derive(Clone, Debug)]
struct ModelWrite {
    offset: usize,
    data: Vec<u8>,
    fua: bool,
    lost: bool,
}

/// The durable image at the last flush and the writes since, in completion order.
#[derive(Clone, Debug)]
struct Model {
    flushed: Vec<u8>,
    since: Vec<ModelWrite>,
}

impl Model {
    fn replay(initial: &[u8], events: &[Event]) -> Self {
        let mut model = Self {
            flushed: initial.to_vec(),
            since: Vec::new(),
        };
        for event in events {
            model.apply(event);
        }
        model
    }

    fn apply(&mut self, event: &Event) {
        match event {
            Event::Write {
                offset,
                data,
                fua,
                lost,
            } => self.since.push(ModelWrite {
                offset: index(*offset),
                data: data.to_vec(),
                fua: *fua,
                lost: *lost,
            }),
            Event::Discard { offset, len } => self.since.push(ModelWrite {
                offset: index(*offset),
                data: vec![0; index(*len)],
                fua: false,
                lost: false,
            }),
            Event::Flush => {
                self.flushed = self.image(|_, _| true);
                self.since.clear();
            }
            Event::Grow { size_bytes } => self.flushed.resize(index(*size_bytes), 0),
            Event::Fault(_) => {}
        }
    }

    /// Writes that may be dropped, in order.
    fn pending(&self) -> impl Iterator<Item = &ModelWrite> {
        self.since.iter().filter(|write| !write.fua && !write.lost)
    }

    /// The flushed image with FUA writes and the pending writes `keep` chooses applied.
    fn image(&self, mut keep: impl FnMut(usize, &ModelWrite) -> bool) -> Vec<u8> {
        let mut image = self.flushed.clone();
        let mut pending_index = 0;
        for write in &self.since {
            let applied = if write.lost {
                false
            } else if write.fua {
                true
            } else {
                pending_index += 1;
                keep(pending_index - 1, write)
            };
            if applied {
                image[write.offset..write.offset + write.data.len()].copy_from_slice(&write.data);
            }
        }
        image
    }
}

/// A random workload of writes, FUA writes, flushes, discards, growth and some faults.
fn random_workload(store: &SimStore, rng: &mut ChaCha8Rng, ops: usize) {
    for _ in 0..ops {
        let blocks = store.size_bytes() / BLOCK as u64;
        let sectors = rng.random_range(1..=16_u64);
        let offset = rng.random_range(0..blocks) * BLOCK as u64;
        let len = (sectors * SECTOR as u64).min(store.size_bytes() - offset);
        let data: Vec<u8> = (0..len).map(|_| rng.random()).collect();
        match rng.random_range(0..100) {
            0..50 => store.write_at(offset, &data).unwrap(),
            50..62 => store.write_at_fua(offset, &data).unwrap(),
            62..80 => store.flush().unwrap(),
            80..88 => store.discard(offset, len).unwrap(),
            88..90 => store.resize(store.size_bytes() + BLOCK as u64).unwrap(),
            90..94 => {
                let effect = if rng.random_bool(0.5) {
                    FaultEffect::LostWrite
                } else {
                    FaultEffect::MisdirectedWrite { target: None }
                };
                store.inject(FaultRule::new(Trigger::Countdown(1), effect));
            }
            _ => {
                let _ = store.read_at(offset, &mut vec![0; index(len)]);
            }
        }
    }
}

#[test]
fn crash_at_every_event_matches_the_model() {
    for seed in 0..8 {
        let initial: Vec<u8> = (0..16 * BLOCK)
            .map(|i| u8::try_from(i % 241).unwrap())
            .collect();
        let store = SimStore::from_image_with_seed(&initial, seed);
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        random_workload(&store, &mut rng, 250);
        let events = store.events();
        assert!(
            events.iter().any(|e| matches!(e, Event::Fault(_))),
            "seed {seed}"
        );
        let mut model = Model::replay(&initial, &[]);
        for (at, event) in events.iter().enumerate() {
            model.apply(event);
            let pending = model.pending().count();
            assert_eq!(
                store.pending_count_at(at),
                pending,
                "seed {seed}, event {at}"
            );
            let none = store.crash_at(at, CrashPlan::KeepNone).durable_image();
            assert!(
                none == model.image(|_, _| false),
                "seed {seed}, event {at}: KeepNone"
            );
            let all = store.crash_at(at, CrashPlan::KeepAll).volatile_image();
            assert!(
                all == model.image(|_, _| true),
                "seed {seed}, event {at}: KeepAll"
            );
            let kept: Vec<bool> = (0..pending).map(|_| rng.random_bool(0.5)).collect();
            let fates = kept.iter().map(|&keep| {
                if keep {
                    PendingFate::Applied
                } else {
                    PendingFate::Dropped
                }
            });
            let plan = CrashPlan::Explicit(fates.collect());
            let chosen = store.crash_at(at, plan).durable_image();
            let expected = model.image(|pending_index, _| kept[pending_index]);
            assert!(
                chosen == expected,
                "seed {seed}, event {at}: explicit {kept:?}"
            );
        }
        let live = store.crash(CrashPlan::KeepAll).durable_image();
        assert!(live == model.image(|_, _| true), "seed {seed}: live crash");
        assert_eq!(
            store.volatile_image().len(),
            model.flushed.len(),
            "seed {seed}"
        );
    }
}

/// Every plan a test can name for `pending` pending writes of `sectors` sectors each.
fn every_kind_of_plan(pending: usize, sectors: usize, seeds: u64) -> Vec<CrashPlan> {
    let mut plans = vec![
        CrashPlan::KeepNone,
        CrashPlan::KeepAll,
        CrashPlan::KeepPrefix(pending / 2),
        CrashPlan::Explicit(vec![PendingFate::torn_mask(0b1010_0101, sectors); pending]),
    ];
    plans.extend((0..seeds).map(CrashPlan::Seeded));
    plans
}

#[test]
fn flushed_writes_survive_every_crash_plan() {
    let store = SimStore::new(8 * BLOCK as u64);
    store.write_at(0, &[1; BLOCK]).unwrap();
    store.write_at(BLOCK as u64, &[2; BLOCK]).unwrap();
    store.flush().unwrap();
    for block in 2..8_u8 {
        store
            .write_at(u64::from(block) * BLOCK as u64, &[block + 1; BLOCK])
            .unwrap();
    }
    for plan in every_kind_of_plan(6, 8, 200) {
        let image = store.crash(plan.clone()).durable_image();
        assert!(image[..BLOCK].iter().all(|&b| b == 1), "{plan:?}");
        assert!(image[BLOCK..2 * BLOCK].iter().all(|&b| b == 2), "{plan:?}");
    }
}

#[test]
fn fua_writes_survive_without_a_flush() {
    let store = SimStore::new(4 * BLOCK as u64);
    store.write_at(0, &[1; BLOCK]).unwrap();
    store.write_at(0, &[2; BLOCK]).unwrap();
    store.write_at_fua(0, &[3; BLOCK]).unwrap();
    store.write_at(2 * BLOCK as u64, &[4; BLOCK]).unwrap();
    for plan in every_kind_of_plan(3, 8, 200) {
        let image = store.crash(plan.clone()).durable_image();
        assert!(image[..BLOCK].iter().all(|&b| b == 3), "{plan:?}");
    }
}

#[test]
fn pending_writes_sometimes_survive_and_sometimes_do_not() {
    let store = SimStore::new(BLOCK as u64);
    store.write_at(0, &[9; BLOCK]).unwrap();
    let (mut survived, mut vanished) = (0, 0);
    for crash_seed in 0..100 {
        let image = store.crash(CrashPlan::Seeded(crash_seed)).durable_image();
        survived += usize::from(image.iter().all(|&b| b == 9));
        vanished += usize::from(image.iter().all(|&b| b == 0));
    }
    assert!(
        survived > 10 && vanished > 10,
        "{survived} survived, {vanished} vanished"
    );
}

#[test]
fn the_same_seed_gives_the_same_crash() {
    let run = |seed: u64| {
        let store = SimStore::with_seed(32 * BLOCK as u64, seed);
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        store.inject(FaultRule::new(
            Trigger::Probability {
                per_million: 100_000,
            },
            FaultEffect::WriteBitFlip,
        ));
        random_workload(&store, &mut rng, 100);
        (
            store.events(),
            store.crash(CrashPlan::Seeded(seed)).durable_image(),
        )
    };
    for seed in 0..4 {
        assert!(run(seed) == run(seed), "seed {seed} is not reproducible");
    }
    assert!(
        run(1).1 != run(2).1,
        "seeds 1 and 2 gave the same crash image"
    );
}

/// An operation of the proptest workload.
#[derive(Clone, Debug)]
enum Op {
    Write {
        block: u8,
        first: u8,
        sectors: u8,
        fua: bool,
        byte: u8,
    },
    Flush,
}

fn op_strategy() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (0..8_u8, 0..8_u8, 1..=8_u8, any::<bool>(), any::<u8>()).prop_map(
            |(block, first, sectors, fua, byte)| Op::Write { block, first, sectors, fua, byte }
        ),
        1 => Just(Op::Flush),
    ]
}

/// A sector filled with a value unique to the write and the sector.
fn sector_fill(write_number: usize, sector: usize, byte: u8) -> Vec<u8> {
    let tag = u64::try_from(write_number * 64 + sector)
        .unwrap()
        .to_le_bytes();
    let mut fill = vec![byte; SECTOR];
    fill[..tag.len()].copy_from_slice(&tag);
    fill
}

/// Whether every byte of `got` comes from one of the candidates at the same offset. Each
/// pending write may half-write a sector, so several pending writes to one sector can layer
/// more than two values; what must never appear is a byte from anywhere else.
fn from_candidates(got: &[u8], candidates: &[Vec<u8>]) -> bool {
    got.iter()
        .enumerate()
        .all(|(at, byte)| candidates.iter().any(|c| c[at] == *byte))
}

proptest! {
    #[test]
    fn crashed_sectors_hold_durable_or_pending_values(
        ops in prop::collection::vec(op_strategy(), 1..40),
        crash_seed in any::<u64>(),
    ) {
        let store = SimStore::new(8 * BLOCK as u64);
        let mut durable = vec![vec![0_u8; SECTOR]; 64];
        let mut pending: Vec<Vec<Vec<u8>>> = vec![Vec::new(); 64];
        for (number, op) in ops.iter().enumerate() {
            match *op {
                Op::Write { block, first, sectors, fua, byte } => {
                    let first = usize::from(block) * 8 + usize::from(first.min(8 - sectors));
                    let fills: Vec<Vec<u8>> = (0..usize::from(sectors))
                        .map(|sector| sector_fill(number, sector, byte))
                        .collect();
                    let offset = (first * SECTOR) as u64;
                    if fua {
                        store.write_at_fua(offset, &fills.concat()).unwrap();
                    } else {
                        store.write_at(offset, &fills.concat()).unwrap();
                    }
                    for (sector, fill) in fills.into_iter().enumerate() {
                        if fua {
                            durable[first + sector].clone_from(&fill);
                        }
                        pending[first + sector].push(fill);
                    }
                }
                Op::Flush => {
                    store.flush().unwrap();
                    for (sector, values) in pending.iter_mut().enumerate() {
                        if let Some(last) = values.pop() {
                            durable[sector] = last;
                        }
                        values.clear();
                    }
                }
            }
        }
        let image = store.crash(CrashPlan::Seeded(crash_seed)).durable_image();
        for (sector, got) in image.chunks(SECTOR).enumerate() {
            if pending[sector].is_empty() {
                prop_assert_eq!(got, durable[sector].as_slice(), "sector {}", sector);
            } else {
                let mut candidates = pending[sector].clone();
                candidates.push(durable[sector].clone());
                prop_assert!(
                    from_candidates(got, &candidates),
                    "sector {} holds foreign bytes (crash seed {})", sector, crash_seed
                );
            }
        }
    }
}
