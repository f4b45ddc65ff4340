//! Replays one random crash-harness workload: `crash_replay SEED [OPS] [LBNS]`, printing the
//! workload, the number of crash states and the first failure with its crash point and plan.

use std::process::ExitCode;

use uvdo_tests::harness::{Tally, check_workload};
use uvdo_tests::oracle::Policy;
use uvdo_tests::workload;

fn main() -> ExitCode {
    let args: Vec<u64> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let Some(&seed) = args.first() else {
        eprintln!("usage: crash_replay SEED [OPS] [LBNS]");
        return ExitCode::from(2);
    };
    let len = args.get(1).copied().unwrap_or(60);
    let lbns = args.get(2).copied().unwrap_or(6);
    let ops = workload::random(seed, usize::try_from(len).unwrap_or(60), lbns, 4);
    println!("workload (seed {seed}): {ops:?}");
    let mut failed = false;
    for policy in [Policy::Sync, Policy::Async, Policy::AsyncUnsafe] {
        let mut tally = Tally::default();
        match check_workload(&ops, policy, lbns, seed, Some(1), &mut tally) {
            Ok(()) => println!("{policy:?}: {} crash states, all good", tally.states),
            Err(e) => {
                failed = true;
                println!("{policy:?}: FAILED: {e}");
            }
        }
    }
    if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}
