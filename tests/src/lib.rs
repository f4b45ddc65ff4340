//! uvdo-tests: the crash-state harness (SPEC section 3, issue 4) and tests that span crates.
//!
//! The harness runs a workload on a volume over the simulated store, then for every event the
//! store logged (each data write, metadata write and flush) builds the crash states a power
//! cut right after that event could leave (pending writes dropped, applied, torn), recovers
//! each, and checks the contract: U1-U3 for the write policy in force (`oracle`), a clean
//! audit (I1-I3), the volume not read-only (M1), and, for a sample, that a crash during
//! recovery followed by a second recovery gives the same volume (I6).
//!
//! Everything is deterministic from a seed; a failure names the seed, the workload, the crash
//! event and the crash plan, and `cargo run -p uvdo-tests --bin crash_replay -- SEED` replays
//! it.

pub mod harness;
pub mod oracle;
pub mod workload;
