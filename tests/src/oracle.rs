//! The contract, per LBN, after a crash (SPEC section 3).
//!
//! An op is *acknowledged* when it returned before the crash, *in progress* when the crash
//! came while it ran, and *not issued* after that. The durable point of an LBN is its last
//! write acknowledged before a completed flush, or a completed FUA write to it; under sync,
//! its last acknowledged write. After recovery an LBN must read its durable value or the
//! value of a write to it issued after the durable point (U1, U2, U3, U4: trims and zeroing
//! are writes of zeros). Under async-unsafe an LBN written after its durable point may read
//! anything (the SPEC's one exception); one not written since must still read its durable
//! value.

use uvdo_format::{BLOCK_SIZE, Block};

use crate::workload::{Op, apply};

/// The write policy a run used.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Policy {
    /// Acknowledge after durable.
    Sync,
    /// Durable at flush or FUA.
    Async,
    /// As async, without ordering data before the journal.
    AsyncUnsafe,
}

/// Which ops a crash let finish.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Progress {
    /// Ops `0..acknowledged` returned before the crash.
    pub acknowledged: usize,
    /// Whether op `acknowledged` was running when the crash came.
    pub in_progress: bool,
}

/// What an LBN may read after recovery.
#[derive(Clone, Debug)]
pub struct Allowed {
    /// The LBN.
    pub lbn: u64,
    /// The values it may hold; empty means anything (async-unsafe, written since durable).
    pub values: Vec<Block>,
}

impl Allowed {
    /// Whether `got` is allowed.
    #[must_use]
    pub fn admits(&self, got: &Block) -> bool {
        self.values.is_empty() || self.values.iter().any(|v| v == got)
    }
}

/// What every LBN `0..lbns` may read after a crash with `progress`.
#[must_use]
pub fn allowed(ops: &[Op], progress: Progress, policy: Policy, lbns: u64) -> Vec<Allowed> {
    let issued = progress.acknowledged + usize::from(progress.in_progress);
    let last_flush = ops[..progress.acknowledged]
        .iter()
        .rposition(|op| *op == Op::Flush);
    (0..lbns)
        .map(|lbn| {
            let mut value = [0_u8; BLOCK_SIZE];
            let mut history = Vec::new();
            for (index, op) in ops[..issued].iter().enumerate() {
                if op.lbn() == Some(lbn) {
                    value = apply(*op, &value);
                    history.push((index, *op, value));
                }
            }
            let durable = history.iter().rposition(|(index, op, _)| {
                let acknowledged = *index < progress.acknowledged;
                let flushed = last_flush.is_some_and(|f| *index < f);
                let fua = matches!(op, Op::WriteFua { .. });
                acknowledged && (policy == Policy::Sync || flushed || fua)
            });
            let later = durable.map_or(0, |d| d + 1);
            let durable_value = durable.map_or([0; BLOCK_SIZE], |d| history[d].2);
            if policy == Policy::AsyncUnsafe && later < history.len() {
                return Allowed {
                    lbn,
                    values: Vec::new(),
                };
            }
            let mut values = vec![durable_value];
            values.extend(history[later..].iter().map(|(_, _, v)| *v));
            Allowed { lbn, values }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::workload::content;

    fn w(lbn: u64, c: u8) -> Op {
        Op::Write { lbn, content: c }
    }

    #[test]
    fn async_keeps_what_a_flush_covered_and_allows_what_came_after() {
        let ops = [w(0, 1), Op::Flush, w(0, 2), w(1, 3)];
        let progress = Progress {
            acknowledged: 4,
            in_progress: false,
        };
        let a = allowed(&ops, progress, Policy::Async, 2);
        assert_eq!(a[0].values, vec![content(1), content(2)]);
        assert_eq!(a[1].values, vec![content(0), content(3)]);
        assert!(
            !a[0].admits(&content(3)),
            "another LBN's data is never allowed"
        );
    }

    #[test]
    fn sync_keeps_every_acknowledged_write() {
        let ops = [w(0, 1), w(0, 2), w(0, 3)];
        let progress = Progress {
            acknowledged: 2,
            in_progress: true,
        };
        let a = allowed(&ops, progress, Policy::Sync, 1);
        assert_eq!(a[0].values, vec![content(2), content(3)]);
    }

    #[test]
    fn fua_is_durable_without_a_flush_and_async_unsafe_gives_up_only_on_unflushed_lbns() {
        let ops = [
            Op::WriteFua { lbn: 0, content: 1 },
            w(1, 2),
            Op::Flush,
            w(1, 3),
        ];
        let progress = Progress {
            acknowledged: 4,
            in_progress: false,
        };
        let a = allowed(&ops, progress, Policy::AsyncUnsafe, 2);
        assert_eq!(a[0].values, vec![content(1)]);
        assert!(a[1].values.is_empty());
        let b = allowed(&ops, progress, Policy::Async, 2);
        assert_eq!(b[1].values, vec![content(2), content(3)]);
    }
}
