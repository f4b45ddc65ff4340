//! Deterministic fault injection: rules that turn a matching operation into an error, a bit
//! flip, a lost write or a misdirected write.
//!
//! A rule matches an operation of the kind its effect applies to (reads, writes with or without
//! FUA, or flushes) that overlaps its byte range, if it has one; flushes have no range and
//! ignore it, and empty reads and writes never match. Rules are asked in the order they were
//! injected and the first that fires decides the operation's fault; rules after it do not see
//! that operation. A countdown rule fires once, on the Nth matching operation it sees, and is
//! then spent. Each rule draws its randomness (probability, flipped bit, misdirection target)
//! from its own stream of the store's seed, so a rule behaves the same whatever else runs.

use std::ops::Range;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use uvdo_format::{BLOCK_SIZE, SECTOR_SIZE};

use crate::error::IoOp;

use super::image::to_bytes;

/// When a rule fires, counting only the operations it matches.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Trigger {
    /// On the Nth matching operation from now (1 = the next one), once.
    Countdown(u64),
    /// On every matching operation.
    Always,
    /// On each matching operation with probability `per_million / 1_000_000`.
    Probability {
        /// Chance of firing, in millionths.
        per_million: u32,
    },
}

/// What a fired rule does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FaultEffect {
    /// The read fails with EIO.
    ReadError,
    /// One bit of the data returned by the read is flipped; the image is unchanged.
    ReadBitFlip,
    /// The write fails with EIO and changes nothing.
    WriteError,
    /// The write fails with ENOSPC and changes nothing.
    NoSpace,
    /// One bit of the written data is flipped before it reaches the device.
    WriteBitFlip,
    /// The write is acknowledged and reads see it, but the device loses it: it vanishes at the
    /// next flush, never becomes durable (not even with FUA) and no crash keeps it.
    LostWrite,
    /// The write lands at `target` instead (moved down to fit the store), or with `None` at
    /// another offset drawn from the seed, aligned like the write (4 KiB or 512 bytes). It
    /// keeps its durability: a FUA write is durable at the wrong place.
    MisdirectedWrite {
        /// Byte offset where the write lands; sector-aligned.
        target: Option<u64>,
    },
    /// The flush fails with EIO and makes nothing durable.
    FlushError,
}

impl FaultEffect {
    /// The kind of operation this effect applies to.
    #[must_use]
    pub fn op(self) -> IoOp {
        match self {
            Self::ReadError | Self::ReadBitFlip => IoOp::Read,
            Self::WriteError
            | Self::NoSpace
            | Self::WriteBitFlip
            | Self::LostWrite
            | Self::MisdirectedWrite { .. } => IoOp::Write,
            Self::FlushError => IoOp::Flush,
        }
    }
}

/// A fault to inject.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FaultRule {
    /// When it fires.
    pub trigger: Trigger,
    /// What it does.
    pub effect: FaultEffect,
    /// Byte range an operation must overlap to match; `None` matches anywhere.
    pub range: Option<Range<u64>>,
}

impl FaultRule {
    /// A rule matching anywhere.
    #[must_use]
    pub fn new(trigger: Trigger, effect: FaultEffect) -> Self {
        Self {
            trigger,
            effect,
            range: None,
        }
    }

    /// The same rule, matching only operations that overlap `range`.
    #[must_use]
    pub fn in_range(self, range: Range<u64>) -> Self {
        Self {
            range: Some(range),
            ..self
        }
    }
}

/// Names an injected rule, in injection order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct FaultId(pub u64);

/// What a fired rule did, with the values needed to check it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FaultOutcome {
    /// The operation failed with this errno.
    Error {
        /// `libc::EIO` or `libc::ENOSPC`.
        errno: i32,
    },
    /// One bit was flipped.
    BitFlip {
        /// Device byte offset of the flipped byte.
        byte: u64,
        /// Bit index within the byte, 0 = least significant.
        bit: u8,
    },
    /// The write was acknowledged and will be lost.
    Lost,
    /// The write landed at another offset.
    Misdirected {
        /// Byte offset where it landed.
        landed_at: u64,
    },
}

/// One injected fault, as the event log records it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FaultRecord {
    /// The rule that fired.
    pub rule: FaultId,
    /// The operation it hit.
    pub op: IoOp,
    /// Byte offset the operation asked for (0 for a flush).
    pub offset: u64,
    /// Length the operation asked for (0 for a flush).
    pub len: u64,
    /// What happened.
    pub outcome: FaultOutcome,
}

/// An injected rule and its state.
#[derive(Debug)]
struct ActiveRule {
    id: FaultId,
    rule: FaultRule,
    /// Matching operations still to see before a countdown fires.
    remaining: u64,
    rng: ChaCha8Rng,
}

/// An operation as fault rules see it.
#[derive(Clone, Copy, Debug)]
pub(super) struct Operation {
    pub(super) op: IoOp,
    pub(super) offset: u64,
    pub(super) len: u64,
    pub(super) size_bytes: u64,
}

impl ActiveRule {
    fn matches(&self, operation: &Operation) -> bool {
        if self.rule.effect.op() != operation.op {
            return false;
        }
        if operation.op == IoOp::Flush {
            return true;
        }
        operation.len > 0 && self.overlap(operation).is_some()
    }

    /// The bytes of `operation` inside this rule's range.
    fn overlap(&self, operation: &Operation) -> Option<Range<u64>> {
        let op_range = operation.offset..operation.offset + operation.len;
        let range = self.rule.range.clone().unwrap_or(op_range.clone());
        let start = range.start.max(op_range.start);
        let end = range.end.min(op_range.end);
        (start < end).then_some(start..end)
    }

    fn fires(&mut self) -> bool {
        match self.rule.trigger {
            Trigger::Countdown(_) => {
                self.remaining -= 1;
                self.remaining == 0
            }
            Trigger::Always => true,
            Trigger::Probability { per_million } => self.rng.random_ratio(per_million, 1_000_000),
        }
    }

    fn outcome(&mut self, operation: &Operation) -> FaultOutcome {
        match self.rule.effect {
            FaultEffect::ReadError | FaultEffect::WriteError | FaultEffect::FlushError => {
                FaultOutcome::Error { errno: libc::EIO }
            }
            FaultEffect::NoSpace => FaultOutcome::Error {
                errno: libc::ENOSPC,
            },
            FaultEffect::ReadBitFlip | FaultEffect::WriteBitFlip => {
                let range = self.overlap(operation).expect("a matching rule overlaps");
                FaultOutcome::BitFlip {
                    byte: self.rng.random_range(range),
                    bit: self.rng.random_range(0..8),
                }
            }
            FaultEffect::LostWrite => FaultOutcome::Lost,
            FaultEffect::MisdirectedWrite { target } => FaultOutcome::Misdirected {
                landed_at: self.landing(operation, target),
            },
        }
    }

    /// Where a misdirected write lands: `target` moved down to fit, or a drawn offset.
    fn landing(&mut self, operation: &Operation, target: Option<u64>) -> u64 {
        let last_start = operation.size_bytes - operation.len;
        if let Some(target) = target {
            let sector = to_bytes(SECTOR_SIZE);
            return target.min(last_start) / sector * sector;
        }
        let block = to_bytes(BLOCK_SIZE);
        let whole_blocks =
            operation.offset.is_multiple_of(block) && operation.len.is_multiple_of(block);
        let align = if whole_blocks {
            block
        } else {
            to_bytes(SECTOR_SIZE)
        };
        let slots = last_start / align + 1;
        if slots < 2 {
            return operation.offset;
        }
        let intended = operation.offset / align;
        let drawn = self.rng.random_range(0..slots - 1);
        let slot = if drawn >= intended { drawn + 1 } else { drawn };
        slot * align
    }
}

/// The injected rules of one store.
#[derive(Debug)]
pub(super) struct Faults {
    seed: u64,
    next_id: u64,
    rules: Vec<ActiveRule>,
}

impl Faults {
    pub(super) fn new(seed: u64) -> Self {
        Self {
            seed,
            next_id: 0,
            rules: Vec::new(),
        }
    }

    /// Adds `rule`, checking it makes sense.
    pub(super) fn inject(&mut self, rule: FaultRule) -> FaultId {
        let seed = self.seed;
        let remaining = match rule.trigger {
            Trigger::Countdown(count) => count,
            Trigger::Always | Trigger::Probability { .. } => 1,
        };
        assert!(
            remaining >= 1,
            "a countdown of 0 never fires (store seed {seed})"
        );
        if let Trigger::Probability { per_million } = rule.trigger {
            assert!(
                per_million <= 1_000_000,
                "probability of {per_million} per million (store seed {seed})"
            );
        }
        if let Some(range) = &rule.range {
            assert!(
                range.start < range.end,
                "empty fault range {range:?} (store seed {seed})"
            );
        }
        if let FaultEffect::MisdirectedWrite {
            target: Some(target),
        } = rule.effect
        {
            assert!(
                target.is_multiple_of(to_bytes(SECTOR_SIZE)),
                "misdirection target {target} is not sector-aligned (store seed {seed})"
            );
        }
        let id = FaultId(self.next_id);
        self.next_id += 1;
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        rng.set_stream(id.0);
        self.rules.push(ActiveRule {
            id,
            rule,
            remaining,
            rng,
        });
        id
    }

    pub(super) fn clear(&mut self) {
        self.rules.clear();
    }

    /// The fault injected into `operation`, if a rule fires.
    pub(super) fn check(&mut self, operation: &Operation) -> Option<FaultRecord> {
        let position = self
            .rules
            .iter_mut()
            .position(|rule| rule.matches(operation) && rule.fires())?;
        let rule = &mut self.rules[position];
        let record = FaultRecord {
            rule: rule.id,
            op: operation.op,
            offset: operation.offset,
            len: operation.len,
            outcome: rule.outcome(operation),
        };
        if matches!(rule.rule.trigger, Trigger::Countdown(_)) {
            self.rules.remove(position);
        }
        Some(record)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(offset: u64, len: u64) -> Operation {
        Operation {
            op: IoOp::Write,
            offset,
            len,
            size_bytes: 1 << 20,
        }
    }

    #[test]
    fn countdowns_fire_once_on_the_nth_matching_operation() {
        let mut faults = Faults::new(1);
        faults.inject(FaultRule::new(
            Trigger::Countdown(3),
            FaultEffect::WriteError,
        ));
        let flush = Operation {
            op: IoOp::Flush,
            ..write(0, 0)
        };
        let fired: Vec<bool> = (0..6)
            .map(|_| {
                assert!(faults.check(&flush).is_none());
                faults.check(&write(0, 4096)).is_some()
            })
            .collect();
        assert_eq!(fired, [false, false, true, false, false, false]);
    }

    #[test]
    fn ranges_restrict_matches_and_bit_flips() {
        let mut faults = Faults::new(2);
        let rule = FaultRule::new(Trigger::Always, FaultEffect::WriteBitFlip).in_range(8192..8200);
        faults.inject(rule);
        assert!(faults.check(&write(0, 8192)).is_none());
        for _ in 0..50 {
            let record = faults.check(&write(4096, 8192)).expect("overlapping write");
            let FaultOutcome::BitFlip { byte, bit } = record.outcome else {
                panic!("not a bit flip: {record:?}");
            };
            assert!((8192..8200).contains(&byte) && bit < 8);
        }
    }

    #[test]
    fn the_first_firing_rule_wins_and_later_rules_do_not_count() {
        let mut faults = Faults::new(3);
        let first = faults.inject(FaultRule::new(Trigger::Countdown(1), FaultEffect::NoSpace));
        let second = faults.inject(FaultRule::new(
            Trigger::Countdown(1),
            FaultEffect::LostWrite,
        ));
        assert_eq!(faults.check(&write(0, 512)).map(|r| r.rule), Some(first));
        assert_eq!(faults.check(&write(0, 512)).map(|r| r.rule), Some(second));
        assert!(faults.check(&write(0, 512)).is_none());
    }

    #[test]
    fn misdirection_targets_fit_and_drawn_ones_move_the_write() {
        let mut faults = Faults::new(4);
        let to_end = FaultEffect::MisdirectedWrite {
            target: Some(1 << 20),
        };
        faults.inject(FaultRule::new(Trigger::Countdown(1), to_end));
        let record = faults.check(&write(0, 4096)).expect("fires");
        let end = FaultOutcome::Misdirected {
            landed_at: (1 << 20) - 4096,
        };
        assert_eq!(record.outcome, end);
        faults.inject(FaultRule::new(
            Trigger::Always,
            FaultEffect::MisdirectedWrite { target: None },
        ));
        for _ in 0..100 {
            let record = faults.check(&write(8192, 4096)).expect("fires");
            let FaultOutcome::Misdirected { landed_at } = record.outcome else {
                panic!("not misdirected: {record:?}");
            };
            assert!(landed_at != 8192 && landed_at % 4096 == 0 && landed_at < 1 << 20);
        }
    }

    #[test]
    fn probabilities_are_seeded() {
        let draws = |seed| {
            let mut faults = Faults::new(seed);
            let rule = FaultRule::new(
                Trigger::Probability {
                    per_million: 300_000,
                },
                FaultEffect::WriteError,
            );
            faults.inject(rule);
            (0..1000)
                .map(|_| faults.check(&write(0, 512)).is_some())
                .collect::<Vec<_>>()
        };
        let fired = draws(9).iter().filter(|&&fired| fired).count();
        assert!((200..400).contains(&fired), "fired {fired} of 1000 at 30%");
        assert_eq!(draws(9), draws(9));
        assert_ne!(draws(9), draws(10));
    }
}
