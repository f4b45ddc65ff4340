//! The packed 32-bit slot of the sparse table, and the name bits it is derived from. (Dense
//! indexes used it too, with chapter positions, until they moved to delta lists.)
//!
//! A slot is a mixed-radix number, so no bit is wasted on a field whose range is not a power
//! of two:
//!
//! ```text
//! slot = 0                                          empty
//! slot = 1 + ((fp - 1) * tags + tag) * positions + position
//!        fp       in 1..=fingerprints   name bits not used to pick the bucket
//!        tag      chapter number mod tags, tags = chapters + lag
//!        position record within the chapter; positions = 1 in sparse mode
//! ```
//!
//! `fingerprints` is whatever is left of 2^32 after tags and positions, so it shrinks as the
//! window grows: a lookup compares 8 slots, so its false-positive rate is at most
//! `8 / fingerprints`.
//!
//! Invariants: the tag of an entry is decoded against the open chapter; it is unambiguous
//! because the sweeper clears every expired entry within `lag` chapter closes of its expiry,
//! before its tag can be reused. In sparse mode fingerprints `1..=hook_fingerprints` belong to
//! hooks and the rest to other names, so a slot tells which kind of name made it.

use crate::config::{SPARSE_SAMPLE_RATE, to_u64};

const FIELD_BITS: u32 = 30;
const FIELD_MASK: u64 = (1 << FIELD_BITS) - 1;

/// Packs and unpacks slots for one geometry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct SlotCodec {
    pub(crate) chapters: u64,
    pub(crate) lag: u64,
    pub(crate) tags: u64,
    pub(crate) positions: u64,
    pub(crate) fingerprints: u64,
    /// Sparse mode: fingerprints reserved for hooks; 0 in dense mode.
    pub(crate) hook_fingerprints: u64,
}

/// A slot's fields.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Entry {
    pub(crate) fingerprint: u64,
    pub(crate) tag: u64,
    pub(crate) position: u64,
}

/// Where a name goes and what it is compared by.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct NameKey {
    pub(crate) shard: usize,
    pub(crate) buckets: [usize; 2],
    pub(crate) fingerprint: u64,
    pub(crate) hook: bool,
    /// The name bits kept in sparse chapter records, compared exactly.
    pub(crate) bits: u64,
}

impl SlotCodec {
    pub(crate) fn new(chapters: u64, positions: u64, sparse: bool) -> Self {
        let lag = (chapters / 16).max(1);
        let tags = chapters + lag;
        let fingerprints = u64::from(u32::MAX) / (tags * positions);
        let hook_fingerprints = if sparse { fingerprints / 2 } else { 0 };
        Self {
            chapters,
            lag,
            tags,
            positions,
            fingerprints,
            hook_fingerprints,
        }
    }

    pub(crate) fn encode(&self, entry: Entry) -> u32 {
        assert!(
            (1..=self.fingerprints).contains(&entry.fingerprint)
                && entry.tag < self.tags
                && entry.position < self.positions,
            "slot fields out of range: {entry:?}"
        );
        let chapter_part = (entry.fingerprint - 1) * self.tags + entry.tag;
        let value = 1 + chapter_part * self.positions + entry.position;
        u32::try_from(value).expect("codec ranges fit 32 bits")
    }

    pub(crate) fn decode(&self, slot: u32) -> Option<Entry> {
        let value = u64::from(slot).checked_sub(1)?;
        let position = value % self.positions;
        let rest = value / self.positions;
        let entry = Entry {
            fingerprint: rest / self.tags + 1,
            tag: rest % self.tags,
            position,
        };
        debug_assert!(
            entry.fingerprint <= self.fingerprints,
            "slot {slot} out of range"
        );
        Some(entry)
    }

    /// Largest valid slot value, for checking a loaded table.
    pub(crate) fn slot_max(&self) -> u64 {
        self.fingerprints * self.tags * self.positions
    }

    pub(crate) fn tag_of(&self, chapter: u64) -> u64 {
        chapter % self.tags
    }

    /// The chapter number a tag stands for when `open` is the open chapter.
    pub(crate) fn chapter_of(&self, tag: u64, open: u64) -> Option<u64> {
        let distance = (open % self.tags + self.tags - tag) % self.tags;
        open.checked_sub(distance)
    }

    pub(crate) fn is_hook_fingerprint(&self, fingerprint: u64) -> bool {
        fingerprint <= self.hook_fingerprints
    }

    pub(crate) fn key(&self, name: u128, shards: usize, buckets_per_shard: usize) -> NameKey {
        let [low, high] = [0, 64].map(|shift| {
            u64::try_from((name >> shift) & u128::from(u64::MAX)).expect("masked to 64 bits")
        });
        let shard = usize::try_from(low % to_u64(shards)).expect("shard below shard count");
        let reduce = |field: u64| {
            let scaled = u128::from(field & FIELD_MASK) * buckets_per_shard as u128;
            usize::try_from(scaled >> FIELD_BITS).expect("bucket index fits usize")
        };
        let hook = self.hook_fingerprints > 0 && (high >> 59).is_multiple_of(SPARSE_SAMPLE_RATE);
        let fingerprint = if self.hook_fingerprints == 0 {
            1 + high % self.fingerprints
        } else if hook {
            1 + high % self.hook_fingerprints
        } else {
            let others = self.fingerprints - self.hook_fingerprints;
            self.hook_fingerprints + 1 + high % others
        };
        NameKey {
            shard,
            buckets: [reduce(low >> 4), reduce(low >> 34)],
            fingerprint,
            hook,
            bits: high ^ low.rotate_left(17),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_round_trip_at_the_edges() {
        let codec = SlotCodec::new(100, 128, false);
        for fingerprint in [1, codec.fingerprints] {
            for tag in [0, codec.tags - 1] {
                for position in [0, 127] {
                    let entry = Entry {
                        fingerprint,
                        tag,
                        position,
                    };
                    let slot = codec.encode(entry);
                    assert_ne!(slot, 0);
                    assert_eq!(codec.decode(slot), Some(entry));
                }
            }
        }
        assert!(u32::try_from(codec.slot_max()).is_ok());
        assert_eq!(codec.decode(0), None);
    }

    #[test]
    fn tags_decode_to_the_newest_chapter_with_that_tag() {
        let codec = SlotCodec::new(32, 1, false);
        assert_eq!(codec.tags, 34);
        let open = 1000;
        for chapter in open - codec.tags + 1..=open {
            assert_eq!(codec.chapter_of(codec.tag_of(chapter), open), Some(chapter));
        }
        assert_eq!(codec.chapter_of(codec.tag_of(5), 3), None);
    }

    #[test]
    fn sparse_hooks_are_about_one_name_in_32() {
        let codec = SlotCodec::new(10_000, 1, true);
        let mut hooks = 0;
        for i in 0..64_000_u128 {
            let name = i.wrapping_mul(0x9e37_79b9_7f4a_7c15_f39c_c060_5ced_c835);
            let key = codec.key(name, 16, 1000);
            assert_eq!(codec.is_hook_fingerprint(key.fingerprint), key.hook);
            hooks += u32::from(key.hook);
        }
        assert!((1000..3000).contains(&hooks), "{hooks} hooks");
    }
}
