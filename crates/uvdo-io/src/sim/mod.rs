//! The simulated store: a disk with a volatile write cache, power cuts and injected faults,
//! for crash and fault tests. Deterministic: the same seed and the same calls give the same
//! results, and its own assertion failures print the seed.
//!
//! # The model
//!
//! - [`SimStore`] keeps a **durable image** and the writes completed since the last flush, in
//!   completion order. Reads see the **volatile view**: the durable image with those writes
//!   applied in order.
//! - A flush makes every completed write durable. A FUA write is durable on completion without
//!   making other writes durable; if a cached write to the same sector completed before it,
//!   the FUA write's value is the one a crash leaves.
//! - A discard is cached like a write of zeros: reads see zeros, a crash may keep, drop or tear
//!   it, a flush makes it durable. Growing the store is durable at once; shrinking is refused.
//! - Every write (with its bytes), FUA write, discard, flush, growth and injected fault is an
//!   [`Event`] in the log ([`SimStore::events`]), numbered from 0.
//! - [`SimStore::crash`] returns a new store holding what a power cut could leave now, as a
//!   [`CrashPlan`] says: the durable image with a chosen subset of the pending writes applied
//!   in completion order, each whole or torn at 512-byte sectors, one sector possibly
//!   half-written. [`SimStore::crash_at`] does the same as of just after any logged event, by
//!   replaying the log. The original store is unchanged, so one run yields many crash states.
//! - Faults ([`FaultRule`]) fire by countdown, always or with a seeded probability, optionally
//!   only on operations overlapping a byte range: EIO on read, write or flush; ENOSPC on write;
//!   a bit flip in the data read back or in the data written; a lost write (acknowledged, seen
//!   by reads until the next flush, then gone, and never durable); a misdirected write (lands
//!   at another offset, given or drawn from the seed).
//!
//! Images are held sparsely in shared 4 KiB chunks, so cloning one and crashing a small volume
//! is cheap (a 1 MiB image with 50 pending writes crashes in tens of microseconds).
//!
//! Invariants: every byte of a crash image comes from the durable image or from a write that
//! completed before the crash point; a flushed or FUA write (not lost, not overwritten later)
//! survives every crash plan.

mod cache;
mod crash;
mod fault;
mod image;
mod log;
mod store;

#[cfg(test)]
mod model_tests;

pub use crash::{CrashPlan, HalfSector, PendingFate, PendingWrite};
pub use fault::{FaultEffect, FaultId, FaultOutcome, FaultRecord, FaultRule, Trigger};
pub use log::Event;
pub use store::SimStore;
