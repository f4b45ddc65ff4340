//! The simulated device's volatile write cache: a durable image, the writes completed since the
//! last flush (in completion order) and the volatile view that reads see.
//!
//! Invariants:
//! - `volatile` is `durable` with every entry applied in order, except that a lost entry's
//!   bytes stay in `volatile` until the next flush.
//! - `durable` already holds every FUA entry; a crash starts from `durable` and re-applies the
//!   surviving entries in completion order, FUA entries included, so a FUA write still beats an
//!   earlier cached write to the same sector and loses to a later surviving one.
//! - After a flush, `entries` is empty and `volatile` equals `durable`.

use std::sync::Arc;

use uvdo_format::SECTOR_SIZE;

use super::image::{Image, to_bytes, to_index};

/// A sector of zeros, the payload of a discarded sector.
static ZERO_SECTOR: [u8; SECTOR_SIZE] = [0; SECTOR_SIZE];

/// What a cached entry puts on the device.
#[derive(Clone, Debug)]
pub(super) enum Payload {
    /// The bytes of a write.
    Bytes(Arc<[u8]>),
    /// Zeros, for a discard.
    Zeros { len: u64 },
}

impl Payload {
    pub(super) fn len_bytes(&self) -> u64 {
        match self {
            Self::Bytes(bytes) => to_bytes(bytes.len()),
            Self::Zeros { len } => *len,
        }
    }

    /// The bytes of sector `index` of this payload.
    pub(super) fn sector(&self, index: usize) -> &[u8] {
        match self {
            Self::Bytes(bytes) => &bytes[index * SECTOR_SIZE..(index + 1) * SECTOR_SIZE],
            Self::Zeros { .. } => &ZERO_SECTOR,
        }
    }
}

/// How durable a cached entry is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Durability {
    /// An ordinary write or discard: a crash may drop, apply or tear it.
    Cached,
    /// A FUA write: durable already, always applied in a crash.
    Fua,
    /// A write the device acknowledged and will lose: never applied to the durable image.
    Lost,
}

/// One write or discard completed since the last flush.
#[derive(Clone, Debug)]
pub(super) struct Entry {
    /// Index of the event that recorded it.
    pub(super) event: usize,
    pub(super) offset: u64,
    pub(super) payload: Payload,
    pub(super) durability: Durability,
}

impl Entry {
    pub(super) fn sector_count(&self) -> usize {
        to_index(self.payload.len_bytes()) / SECTOR_SIZE
    }

    /// Applies the whole entry to `image`.
    pub(super) fn apply(&self, image: &mut Image) {
        match &self.payload {
            Payload::Bytes(bytes) => image.write(self.offset, bytes),
            Payload::Zeros { len } => image.zero(self.offset, *len),
        }
    }

    /// Applies the first `len` bytes of sector `index` to `image`.
    pub(super) fn apply_sector_prefix(&self, image: &mut Image, index: usize, len: usize) {
        let offset = self.offset + to_bytes(index * SECTOR_SIZE);
        image.write(offset, &self.payload.sector(index)[..len]);
    }
}

/// The durable image, the cached entries and the volatile view.
#[derive(Clone, Debug)]
pub(super) struct Cache {
    durable: Image,
    volatile: Image,
    entries: Vec<Entry>,
}

impl Cache {
    /// A cache with nothing pending over `image`.
    pub(super) fn new(image: Image) -> Self {
        Self {
            durable: image.clone(),
            volatile: image,
            entries: Vec::new(),
        }
    }

    pub(super) fn durable(&self) -> &Image {
        &self.durable
    }

    pub(super) fn volatile(&self) -> &Image {
        &self.volatile
    }

    pub(super) fn entries(&self) -> &[Entry] {
        &self.entries
    }

    /// The entries a crash may drop, apply or tear, in completion order.
    pub(super) fn pending(&self) -> impl Iterator<Item = &Entry> {
        self.entries
            .iter()
            .filter(|entry| entry.durability == Durability::Cached)
    }

    /// Records a completed write or discard.
    pub(super) fn push(&mut self, entry: Entry) {
        entry.apply(&mut self.volatile);
        if entry.durability == Durability::Fua {
            entry.apply(&mut self.durable);
        }
        self.entries.push(entry);
    }

    /// Makes every cached entry durable, and lost entries vanish.
    pub(super) fn flush(&mut self) {
        let any_lost = self
            .entries
            .iter()
            .any(|entry| entry.durability == Durability::Lost);
        if any_lost {
            for entry in &self.entries {
                if entry.durability != Durability::Lost {
                    entry.apply(&mut self.durable);
                }
            }
            self.volatile = self.durable.clone();
        } else {
            self.durable = self.volatile.clone();
        }
        self.entries.clear();
    }

    /// Grows both images; a size change is durable at once.
    pub(super) fn grow(&mut self, size_bytes: u64) {
        self.durable.grow(size_bytes);
        self.volatile.grow(size_bytes);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(event: usize, offset: u64, byte: u8, durability: Durability) -> Entry {
        Entry {
            event,
            offset,
            payload: Payload::Bytes(Arc::from(vec![byte; 512])),
            durability,
        }
    }

    #[test]
    fn fua_reaches_durable_and_cached_writes_wait_for_flush() {
        let mut cache = Cache::new(Image::zeroed(4096));
        cache.push(entry(0, 0, 1, Durability::Cached));
        cache.push(entry(1, 512, 2, Durability::Fua));
        assert_eq!(
            cache.durable().to_vec()[..1024],
            [[0; 512], [2; 512]].concat()[..]
        );
        assert_eq!(
            cache.volatile().to_vec()[..1024],
            [[1; 512], [2; 512]].concat()[..]
        );
        assert_eq!(cache.pending().count(), 1);
        cache.flush();
        assert_eq!(cache.durable().to_vec(), cache.volatile().to_vec());
        assert_eq!(
            cache.durable().to_vec()[..1024],
            [[1; 512], [2; 512]].concat()[..]
        );
        assert!(cache.entries().is_empty());
    }

    #[test]
    fn a_flush_keeps_completion_order_across_fua_writes() {
        let mut cache = Cache::new(Image::zeroed(4096));
        cache.push(entry(0, 0, 1, Durability::Cached));
        cache.push(entry(1, 0, 2, Durability::Fua));
        cache.flush();
        assert_eq!(cache.durable().to_vec()[..512], [2; 512]);
    }

    #[test]
    fn lost_entries_are_visible_until_the_flush_and_then_vanish() {
        let mut cache = Cache::new(Image::zeroed(4096));
        cache.push(entry(0, 0, 1, Durability::Cached));
        cache.push(entry(1, 0, 9, Durability::Lost));
        cache.push(entry(2, 512, 3, Durability::Cached));
        assert_eq!(cache.volatile().to_vec()[..512], [9; 512]);
        cache.flush();
        let after = cache.volatile().to_vec();
        assert_eq!(after[..1024], [[1; 512], [3; 512]].concat()[..]);
        assert_eq!(after, cache.durable().to_vec());
    }

    #[test]
    fn discards_read_as_zeros() {
        let mut cache = Cache::new(Image::from_bytes(&[7; 8192]));
        cache.push(Entry {
            event: 0,
            offset: 512,
            payload: Payload::Zeros { len: 4096 },
            durability: Durability::Cached,
        });
        let view = cache.volatile().to_vec();
        assert!(view[512..4608].iter().all(|&b| b == 0));
        assert!(view[..512].iter().chain(&view[4608..]).all(|&b| b == 7));
        assert!(cache.durable().to_vec().iter().all(|&b| b == 7));
    }
}
