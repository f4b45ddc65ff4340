//! The PBNs of one dense chapter, run-length encoded.
//!
//! The engine allocates new data sequentially, so the records of a chapter mostly have PBNs
//! that go up by one. A run is one `u64`: the PBN of its first record in the high 48 bits and
//! that record's position in the low 16. A run covers positions up to the next run's start;
//! a record whose PBN is not the previous one plus one starts a new run, so the worst case
//! (random PBNs) is 8 bytes per record, charged to the run budget.
//!
//! Invariants: starts strictly increase from 0; PBNs are below 2^48.

const START_BITS: u32 = 16;
const START_MASK: u64 = (1 << START_BITS) - 1;
/// PBNs the run encoding can hold (VDO's are 36 bits).
pub(crate) const PBN_LIMIT: u64 = 1 << (64 - START_BITS);

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct PbnRuns {
    runs: Vec<u64>,
}

impl PbnRuns {
    /// Records `pbn` at `position`, the chapter's next one.
    pub(crate) fn append(&mut self, position: u64, pbn: u64) {
        assert!(pbn < PBN_LIMIT, "pbn {pbn} beyond the index's 48-bit limit");
        assert!(
            position <= START_MASK,
            "chapter position {position} over 16 bits"
        );
        if let Some(&last) = self.runs.last() {
            let (start, first) = (last & START_MASK, last >> START_BITS);
            debug_assert!(position > start, "positions are appended in order");
            if first.checked_add(position - start) == Some(pbn) {
                return;
            }
        }
        self.runs.push((pbn << START_BITS) | position);
    }

    /// The PBN recorded at `position` (which the caller checked was appended).
    pub(crate) fn resolve(&self, position: u64) -> Option<u64> {
        let after = self
            .runs
            .partition_point(|&run| run & START_MASK <= position);
        let run = *self.runs.get(after.checked_sub(1)?)?;
        Some((run >> START_BITS) + (position - (run & START_MASK)))
    }

    pub(crate) fn bytes(&self) -> u64 {
        self.runs.capacity() as u64 * 8
    }

    pub(crate) fn shrink(&mut self) {
        self.runs.shrink_to_fit();
    }

    pub(crate) fn raw(&self) -> &[u64] {
        &self.runs
    }

    /// Runs read back from a save, if they are well formed for a chapter of `records`.
    pub(crate) fn from_raw(runs: Vec<u64>, records: u64) -> Option<Self> {
        let starts_ok = runs.first().is_none_or(|&r| r & START_MASK == 0)
            && runs
                .windows(2)
                .all(|w| w[0] & START_MASK < w[1] & START_MASK)
            && runs.last().is_none_or(|&r| r & START_MASK < records.max(1));
        (starts_ok && (records == 0) == runs.is_empty()).then_some(Self { runs })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sequential_pbns_take_one_run_and_exceptions_one_each() {
        let mut runs = PbnRuns::default();
        for position in 0..100 {
            runs.append(position, 1000 + position);
        }
        assert_eq!(runs.raw().len(), 1);
        runs.append(100, 7);
        runs.append(101, 8);
        runs.append(102, 1102);
        assert_eq!(runs.raw().len(), 3);
        assert_eq!(runs.resolve(0), Some(1000));
        assert_eq!(runs.resolve(99), Some(1099));
        assert_eq!(runs.resolve(100), Some(7));
        assert_eq!(runs.resolve(101), Some(8));
        assert_eq!(runs.resolve(102), Some(1102));
        let copy = PbnRuns::from_raw(runs.raw().to_vec(), 103).unwrap();
        assert_eq!(copy, runs);
        assert!(PbnRuns::from_raw(vec![5], 10).is_none());
        assert!(PbnRuns::from_raw(vec![], 1).is_none());
    }
}
