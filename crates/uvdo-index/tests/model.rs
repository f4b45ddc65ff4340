//! Random operation sequences against a model of the window (small geometry, fixed seed).

#![allow(
    clippy::cast_possible_truncation,
    clippy::cast_precision_loss,
    reason = "test and measurement sizes are far below 2^32 and 2^52"
)]

mod common;

use std::collections::BTreeMap;

use proptest::prelude::*;
use proptest::test_runner::{Config, RngAlgorithm, TestRng, TestRunner};
use uvdo_format::Pbn;
use uvdo_index::{DedupeIndex, IndexConfig};

#[derive(Clone, Debug)]
enum Op {
    Insert(usize, u64),
    Lookup(usize),
    Forget(usize, u64),
    Fill(usize),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (0..48_usize, 0..6_u64).prop_map(|(n, p)| Op::Insert(n, p)),
        4 => (0..48_usize).prop_map(Op::Lookup),
        1 => (0..48_usize, 0..6_u64).prop_map(|(n, p)| Op::Forget(n, p)),
        1 => (1..2000_usize).prop_map(Op::Fill),
    ]
}

/// Per name: each PBN inserted, with the record number of its newest insert.
type Model = BTreeMap<usize, BTreeMap<u64, u64>>;

fn run(ops: &[Op]) -> Result<(), TestCaseError> {
    let config = IndexConfig {
        memory_bytes: 16 << 10,
        sparse: false,
    };
    let index = DedupeIndex::new(config, None).unwrap();
    let pool = common::names(77, 48);
    let mut fill_names = common::names(78, 40_000).into_iter();
    let mut model = Model::new();
    for op in ops {
        let records = index.stats().records;
        match *op {
            Op::Insert(n, p) => {
                index.insert(pool[n], Pbn(p));
                model.entry(n).or_default().insert(p, records);
            }
            Op::Forget(n, p) => {
                index.forget(pool[n], Pbn(p));
                model.entry(n).or_default().remove(&p);
            }
            Op::Fill(count) => {
                for name in fill_names.by_ref().take(count) {
                    index.insert(name, Pbn(1 << 40));
                }
            }
            Op::Lookup(n) => {
                let answer = index.lookup(pool[n]);
                let stats = index.stats();
                let live = model.entry(n).or_default();
                live.retain(|_, at| *at >= stats.oldest_record);
                let newest = live.iter().max_by_key(|(_, at)| **at).map(|(p, _)| Pbn(*p));
                if stats.evicted_early == 0 {
                    prop_assert_eq!(answer, newest, "name {}", n);
                } else if let Some(pbn) = answer {
                    prop_assert!(live.contains_key(&pbn.0), "name {} gave {:?}", n, pbn);
                }
                if let Some(pbn) = answer
                    && index.stats().records > records
                {
                    live.insert(pbn.0, records);
                }
            }
        }
    }
    Ok(())
}

#[test]
fn the_index_agrees_with_a_window_model() {
    let config = Config {
        cases: 64,
        failure_persistence: None,
        ..Config::default()
    };
    let rng = TestRng::deterministic_rng(RngAlgorithm::ChaCha);
    let mut runner = TestRunner::new_with_rng(config, rng);
    let strategy = prop::collection::vec(op(), 1..300);
    runner.run(&strategy, |ops| run(&ops)).unwrap();
}
