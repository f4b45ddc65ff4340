//! The crash-state enumeration CI runs (issue 4): bounded exhaustive workloads and long random
//! ones under each write policy, on the tiny geometry. Prints how many distinct crash states
//! it recovered and checked; `UVDO_CRASH_SCALE` multiplies the random part, `UVDO_SEED`
//! replays one random workload.

use std::time::Instant;

use uvdo_tests::harness::{Tally, check_workload};
use uvdo_tests::oracle::Policy;
use uvdo_tests::workload;

const POLICIES: [Policy; 3] = [Policy::Sync, Policy::Async, Policy::AsyncUnsafe];

/// Appends a line to `target/crash-states.txt`, which `.ci/run` prints after the tests (cargo
/// test captures a passing test's output, and CI must show the count).
fn record(line: &str) {
    use std::io::Write;
    println!("{line}");
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../target/crash-states.txt");
    if let Ok(mut file) = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
    {
        let _ = writeln!(file, "{line}");
    }
}

fn scale() -> u64 {
    std::env::var("UVDO_CRASH_SCALE")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1)
}

#[test]
fn exhaustive_short_workloads_survive_every_crash_state() {
    let start = Instant::now();
    let mut tally = Tally::default();
    for policy in POLICIES {
        for (i, ops) in workload::exhaustive(3).iter().enumerate() {
            let seed = i as u64;
            check_workload(ops, policy, 2, seed, Some(7), &mut tally)
                .unwrap_or_else(|e| panic!("{e}"));
        }
    }
    record(&format!(
        "exhaustive: {} crash states ({} during recovery) over {} workloads in {:.1} s",
        tally.states,
        tally.recovery_states,
        tally.workloads,
        start.elapsed().as_secs_f64()
    ));
}

#[test]
fn long_random_workloads_survive_every_crash_point() {
    let start = Instant::now();
    let mut tally = Tally::default();
    let seeds: Vec<u64> = match std::env::var("UVDO_SEED").ok().and_then(|s| s.parse().ok()) {
        Some(seed) => vec![seed],
        None => (0..8 * scale()).collect(),
    };
    for policy in POLICIES {
        for &seed in &seeds {
            let ops = workload::random(seed, 60, 6, 4);
            check_workload(&ops, policy, 6, seed, Some(13), &mut tally).unwrap_or_else(|e| {
                panic!("{e}\nreplay: UVDO_SEED={seed} cargo test -p uvdo-tests")
            });
        }
    }
    record(&format!(
        "random: {} crash states ({} during recovery) over {} workloads in {:.1} s",
        tally.states,
        tally.recovery_states,
        tally.workloads,
        start.elapsed().as_secs_f64()
    ));
}
