//! One shard of the dense table: its delta lists (see the list module) in one arena (see the
//! arena module).
//!
//! A name belongs to one list of one shard, chosen by name bits, and is compared by `f` other
//! name bits, its fingerprint. A lookup compares the fingerprints of that list's live entries
//! and returns the records of the matches, newest first. The common insert, of a record newer
//! than the list's entries that replaces none, finds the list's expired tail from its end and
//! copies the rest in three runs; any other change (an older record, a replace, a forget, a
//! sweep) decodes the list, drops its expired entries, applies the change, and writes the list
//! again, copying the fields that still hold. Expiry is thus lazy: an expired entry stays
//! until its list is next changed, about one per list on average, and the sweeper changes
//! every list at least once every `lag` chapter closes so that each anchor stays unambiguous.
//! When a list finds no room, the expired entries of the lists around it are dropped first;
//! only then does it lose its own oldest live entries (counted as early evictions).
//!
//! Invariants: a list has at most `entries_max` entries; `entries` counts every stored entry,
//! live or expired; the scratch buffers are sized once, for the longest list.

use crate::arena::{ArenaCorrupt, ListArena, REACH_LISTS};
use crate::bits::{BitWriter, GUARD_BYTES, touch};
use crate::config::to_u64;
use crate::list::{Item, Layout, ListCodec, ListCorrupt, Matches};
use crate::sizing::ListGeometry;

/// Which records are live, read once per shard operation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Window {
    /// Records appended so far: every stored record is below this.
    pub(crate) now: u64,
    /// The first record of the oldest live chapter.
    pub(crate) oldest: u64,
}

#[derive(Debug)]
pub(crate) struct DenseShard {
    arena: ListArena,
    codec: ListCodec,
    entries: u64,
    sweep_cursor: usize,
    /// The list being changed, newest first, and the entries and layout it had when read.
    items: Vec<Item>,
    items_read: usize,
    layout: Layout,
    /// Where each code of the list being changed starts, and where its last one ends.
    codes: Vec<usize>,
    image: Vec<u8>,
    /// Bytes of a list's header and fingerprints, for a mean list.
    front_bytes: usize,
    /// Bumped by every change to the arena, so that matches read under a read lock can be
    /// reused under the write lock when nothing changed in between.
    version: u64,
}

/// How the common insert went.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Newest {
    Written,
    /// The record is not newer than the list's newest, or the list is at `entries_max`.
    Older,
    /// No range within reach has room for the longer list.
    NoRoom,
}

/// Why a shard read back from a save is refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ShardCorrupt {
    Arena(ArenaCorrupt),
    List { list: usize, cause: ListCorrupt },
}

impl DenseShard {
    pub(crate) fn new(geometry: &ListGeometry) -> Self {
        let arena = ListArena::new(geometry.arena_bytes, geometry.lists_per_shard);
        Self::with_arena(geometry, arena)
    }

    fn with_arena(geometry: &ListGeometry, arena: ListArena) -> Self {
        let codec = geometry.codec;
        let mean = geometry.mean_entries;
        let front_bits =
            (codec.anchor_bits + codec.count_bits) as usize + mean * codec.fp_bits as usize;
        Self {
            arena,
            codec,
            entries: 0,
            sweep_cursor: 0,
            items: Vec::with_capacity(codec.entries_max + 1),
            items_read: 0,
            layout: Layout::default(),
            codes: Vec::with_capacity(codec.entries_max + 2),
            image: Vec::with_capacity(codec.bits_max.div_ceil(8) + GUARD_BYTES),
            front_bytes: front_bits.div_ceil(8),
            version: 0,
        }
    }

    /// A shard read back from a save: its list starts and arena bytes, checked list by list.
    pub(crate) fn from_parts(
        geometry: &ListGeometry,
        starts: Vec<u32>,
        data: Vec<u8>,
        now: u64,
    ) -> Result<Self, ShardCorrupt> {
        if starts.len() != geometry.lists_per_shard + 1 || data.len() != geometry.arena_bytes {
            return Err(ShardCorrupt::Arena(ArenaCorrupt("arena size")));
        }
        let arena = ListArena::from_parts(starts, data).map_err(ShardCorrupt::Arena)?;
        let mut shard = Self::with_arena(geometry, arena);
        for list in 0..shard.arena.lists() {
            let bits = shard.arena.image_bits(list);
            shard
                .codec
                .decode(
                    shard.arena.data(),
                    bits,
                    now,
                    &mut shard.items,
                    &mut shard.codes,
                )
                .map_err(|cause| ShardCorrupt::List { list, cause })?;
            shard.entries += to_u64(shard.items.len());
        }
        Ok(shard)
    }

    /// The list starts and arena bytes, for a save.
    pub(crate) fn parts(&self) -> (&[u32], &[u8]) {
        self.arena.parts()
    }

    /// Stored entries, live or expired.
    pub(crate) fn entries(&self) -> u64 {
        self.entries
    }

    /// Records of the live entries of `list` with fingerprint `fp`, newest first.
    pub(crate) fn matches(&self, list: usize, fp: u32, window: Window) -> Matches {
        self.scan(list, fp, window, self.front_bytes)
    }

    /// [`DenseShard::matches`] for an insert (the whole list is loaded), and the shard's
    /// version they hold for.
    pub(crate) fn peek(&self, list: usize, fp: u32, window: Window) -> (Matches, u64) {
        (self.scan(list, fp, window, usize::MAX), self.version)
    }

    /// [`DenseShard::matches`], loading `ahead` bytes of the list at once.
    fn scan(&self, list: usize, fp: u32, window: Window, ahead: usize) -> Matches {
        let (start, end) = self.arena.span(list);
        touch(
            self.arena.data(),
            start,
            end.min(start.saturating_add(ahead)),
        );
        let live = (window.now, window.oldest);
        self.codec
            .scan(self.arena.data(), (start * 8, end * 8), u64::from(fp), live)
    }

    /// Adds `record` with fingerprint `fp` to `list`, first dropping the entry that `replace`
    /// picks among the live matches (records, newest first), if any. Returns how many live
    /// entries were dropped early to make room.
    ///
    /// `peeked` are matches read earlier by [`DenseShard::peek`]; they are used if the shard
    /// has not changed since.
    pub(crate) fn insert(
        &mut self,
        (list, fp): (usize, u32),
        (window, record): (Window, u64),
        peeked: (Matches, u64),
        replace: impl FnOnce(&[u64]) -> Option<u64>,
    ) -> u64 {
        let matches = if peeked.1 == self.version {
            peeked.0
        } else {
            self.scan(list, fp, window, usize::MAX)
        };
        let replaced = if matches.as_slice().is_empty() {
            None
        } else {
            replace(matches.as_slice())
        };
        if replaced.is_none() {
            match self.write_newest(list, (record, fp), window) {
                Newest::Written => return 0,
                Newest::NoRoom => {
                    // Expired entries linger in lists not written lately: reclaim the
                    // neighbours' before dropping live entries.
                    self.sweep_around(list, window);
                    if self.write_newest(list, (record, fp), window) == Newest::Written {
                        return 0;
                    }
                }
                Newest::Older => {}
            }
        }
        self.read(list, window);
        if let Some(old) = replaced {
            self.items.retain(|item| item.record != old);
        }
        let at = self.items.partition_point(|item| item.record > record);
        assert!(
            self.items.get(at).is_none_or(|item| item.record != record),
            "record {record} inserted twice"
        );
        self.items.insert(
            at,
            Item {
                record,
                fp,
                old: Item::NEW,
            },
        );
        self.write(list)
    }

    /// Drops the live entries of `list` with fingerprint `fp` whose record `holds`; returns
    /// how many it dropped.
    pub(crate) fn remove(
        &mut self,
        (list, fp): (usize, u32),
        window: Window,
        mut holds: impl FnMut(u64) -> bool,
    ) -> u64 {
        let expired = self.read(list, window);
        let before = self.items.len();
        self.items
            .retain(|item| item.fp != fp || !holds(item.record));
        let removed = before - self.items.len();
        if removed + expired > 0 {
            self.write(list);
        }
        to_u64(removed)
    }

    /// Drops the expired entries of the next `count` lists; returns how many it dropped.
    pub(crate) fn sweep(&mut self, window: Window, count: usize) -> u64 {
        let lists = self.arena.lists();
        let mut dropped = 0;
        for _ in 0..count.min(lists) {
            let list = self.sweep_cursor;
            self.sweep_cursor = (self.sweep_cursor + 1) % lists;
            let expired = self.read(list, window);
            if expired > 0 {
                self.write(list);
                dropped += to_u64(expired);
            }
        }
        dropped
    }

    /// Live entries, by decoding every list.
    pub(crate) fn count_live(&self, window: Window) -> u64 {
        (0..self.arena.lists())
            .map(|list| {
                let (start, end) = self.arena.span(list);
                let live = (window.now, window.oldest);
                self.codec
                    .count_live(self.arena.data(), (start * 8, end * 8), live)
            })
            .sum()
    }

    /// Bytes held: the arena and the scratch buffers.
    pub(crate) fn memory_bytes(&self) -> u64 {
        let scratch = self.items.capacity() * std::mem::size_of::<Item>()
            + self.codes.capacity() * std::mem::size_of::<usize>()
            + self.image.capacity();
        to_u64(self.arena.memory_bytes() + scratch)
    }

    /// The common insert: `record` is newer than every entry of `list` and replaces none.
    /// Nothing changes unless it returns [`Newest::Written`].
    fn write_newest(&mut self, list: usize, (record, fp): (u64, u32), window: Window) -> Newest {
        let bits = self.arena.image_bits(list);
        let mut writer = BitWriter::new(&mut self.image);
        let live = (window.now, window.oldest);
        let Some(dropped) =
            self.codec
                .write_newest(self.arena.data(), bits, (record, fp), live, &mut writer)
        else {
            return Newest::Older;
        };
        assert!(
            writer.bits() <= self.codec.bits_max,
            "list image over bits_max"
        );
        writer.finish();
        if !self.arena.store(list, &self.image) {
            return Newest::NoRoom;
        }
        self.version += 1;
        self.entries = self.entries + 1 - to_u64(dropped);
        Newest::Written
    }

    /// Drops the expired entries of the lists within [`REACH_LISTS`] of `list`.
    fn sweep_around(&mut self, list: usize, window: Window) {
        let last = self.arena.lists() - 1;
        for near in list.saturating_sub(REACH_LISTS)..=(list + REACH_LISTS).min(last) {
            if self.read(near, window) > 0 {
                self.write(near);
            }
        }
    }

    /// Reads `list` into `items`, dropping its expired entries; returns how many it dropped.
    fn read(&mut self, list: usize, window: Window) -> usize {
        let (start, end) = self.arena.span(list);
        touch(self.arena.data(), start, end);
        let bits = self.arena.image_bits(list);
        let data = self.arena.data();
        self.layout = self
            .codec
            .decode(data, bits, window.now, &mut self.items, &mut self.codes)
            .expect("stored lists decode");
        self.items_read = self.items.len();
        let live = self
            .items
            .partition_point(|item| item.record >= window.oldest);
        self.items.truncate(live);
        self.items_read - live
    }

    /// Writes `items` as `list`, dropping its oldest entries while they do not fit; returns
    /// how many live entries it dropped.
    fn write(&mut self, list: usize) -> u64 {
        let mut dropped = 0;
        while self.items.len() > self.codec.entries_max {
            self.items.pop();
            dropped += 1;
        }
        loop {
            let mut writer = BitWriter::new(&mut self.image);
            let old = (self.arena.data(), self.layout, self.codes.as_slice());
            self.codec.write(&self.items, old, &mut writer);
            assert!(
                writer.bits() <= self.codec.bits_max,
                "list image over bits_max"
            );
            writer.finish();
            if self.arena.store(list, &self.image) {
                self.version += 1;
                break;
            }
            self.items.pop().expect("an empty list always fits");
            dropped += 1;
        }
        self.entries = self.entries + to_u64(self.items.len()) - to_u64(self.items_read);
        dropped
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sizing::dense_sizing;

    #[test]
    fn inserts_replace_forget_and_sweep_keep_lists_in_order() {
        let sizing = dense_sizing(1 << 20).unwrap();
        let geometry = sizing.lists;
        let mut shard = DenseShard::new(&geometry);
        let lists = geometry.lists_per_shard;
        let mut window = Window { now: 0, oldest: 0 };
        for record in 0..10_000_u64 {
            window.now = record + 1;
            let list = usize::try_from(record * 7919).unwrap() % lists;
            let fp = u32::try_from(record % 5).unwrap();
            let peeked = shard.peek(list, fp, window);
            let dropped = shard.insert((list, fp), (window, record), peeked, |_| None);
            assert_eq!(dropped, 0);
        }
        assert_eq!(shard.entries(), 10_000);
        let list = 7919 % lists;
        let found = shard.matches(list, 1, window);
        assert!(found.as_slice().contains(&1), "{found:?}");
        assert!(found.as_slice().windows(2).all(|w| w[0] > w[1]));
        window.now += 1;
        let peeked = shard.peek(list, 1, window);
        shard.insert((list, 1), (window, 10_000), peeked, |matches| {
            assert!(matches.contains(&1));
            Some(1)
        });
        let found = shard.matches(list, 1, window);
        assert_eq!(found.as_slice()[0], 10_000);
        assert!(!found.as_slice().contains(&1));
        assert_eq!(shard.remove((list, 1), window, |r| r == 10_000), 1);
        assert_eq!(shard.entries(), 9_999);
        window.oldest = 5_000;
        let dropped = shard.sweep(window, lists);
        assert_eq!(dropped, 4_999);
        assert_eq!(shard.entries(), 5_000);
        assert_eq!(shard.count_live(window), 5_000);
        let (starts, data) = shard.parts();
        let copy =
            DenseShard::from_parts(&geometry, starts.to_vec(), data.to_vec(), window.now).unwrap();
        assert_eq!(copy.entries(), 5_000);
        assert_eq!(
            copy.matches(list, 1, window),
            shard.matches(list, 1, window)
        );
    }
}

#[cfg(test)]
mod order_tests {
    use super::*;
    use crate::sizing::dense_sizing;

    #[test]
    fn records_inserted_out_of_order_are_all_found() {
        let geometry = dense_sizing(4 << 20).unwrap().lists;
        let mut shard = DenseShard::new(&geometry);
        let lists = geometry.lists_per_shard;
        let count = 20_000_u64;
        let window = Window {
            now: count,
            oldest: 0,
        };
        let order: Vec<u64> = (0..count).map(|i| (i / 4) * 4 + 3 - i % 4).collect();
        for &record in &order {
            let list = usize::try_from(record * 7919).unwrap() % lists;
            let fp = u32::try_from(record % 4093).unwrap();
            let peeked = shard.peek(list, fp, window);
            shard.insert((list, fp), (window, record), peeked, |_| None);
        }
        for record in 0..count {
            let list = usize::try_from(record * 7919).unwrap() % lists;
            let found = shard.matches(list, u32::try_from(record % 4093).unwrap(), window);
            assert!(
                found.as_slice().contains(&record),
                "record {record}: {found:?}"
            );
        }
    }
}
