//! The dense paths of the index: delta lists in memory, PBNs from the chapters' runs.
//!
//! A name's shard is its low bits modulo the shard count, its list a multiply-shift of name
//! bits 8..40 by the lists per shard, and its fingerprint the low `f` bits of its high half,
//! so the three are independent. An entry's record `r` is record `r % K` of chapter `r / K`.

use std::sync::atomic::Ordering;

use parking_lot::RwLock;

use super::DedupeIndex;
use crate::bits::mask;
use crate::config::{TableShape, to_usize};
use crate::dense_shard::{DenseShard, Window};
use crate::sizing::ListGeometry;
use crate::stats::bump;

/// Where a name goes in the dense table.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct DenseKey {
    shard: usize,
    list: usize,
    fp: u32,
}

impl DedupeIndex {
    fn lists(&self) -> &ListGeometry {
        match &self.geometry.table {
            TableShape::Lists(lists) => lists,
            TableShape::Slots(_) => panic!("a sparse geometry has no lists"),
        }
    }

    fn dense_key(&self, name: u128) -> DenseKey {
        let lists = self.lists();
        let low = u64::try_from(name & u128::from(u64::MAX)).expect("masked to 64 bits");
        let high = u64::try_from(name >> 64).expect("shifted to 64 bits");
        let shards = crate::config::to_u64(self.geometry.shards);
        let list_bits = (low >> 8) & mask(32);
        let list = (u128::from(list_bits) * lists.lists_per_shard as u128) >> 32;
        DenseKey {
            shard: to_usize(low % shards),
            list: usize::try_from(list).expect("below the list count"),
            fp: u32::try_from(high & mask(lists.codec.fp_bits)).expect("at most 32 bits"),
        }
    }

    /// Which records are live; read after taking a shard lock.
    fn window(&self) -> Window {
        Window {
            now: self.frontier.load(Ordering::Acquire),
            oldest: self.oldest.load(Ordering::Acquire) * self.geometry.chapter_records,
        }
    }

    /// The chapter and PBN of `record`, if its chapter is still live.
    fn resolve(&self, chapters: &crate::chapters::Chapters, record: u64) -> Option<(u64, u64)> {
        let k = self.geometry.chapter_records;
        let chapter = record / k;
        chapters
            .resolve(chapter, record % k)
            .map(|pbn| (chapter, pbn))
    }

    pub(super) fn lookup_dense(
        &self,
        shards: &[RwLock<DenseShard>],
        name: u128,
    ) -> Option<(u64, u64)> {
        let key = self.dense_key(name);
        let matches = {
            let shard = shards[key.shard].read();
            shard.matches(key.list, key.fp, self.window())
        };
        let chapters = self.chapters.read();
        matches
            .as_slice()
            .iter()
            .find_map(|&record| self.resolve(&chapters, record))
    }

    pub(super) fn put_dense(
        &self,
        shards: &[RwLock<DenseShard>],
        name: u128,
        pbn: u64,
        refresh: bool,
    ) {
        let key = self.dense_key(name);
        // The newest entry this name may have: the new record must sort after it. Read
        // before the append, which may sweep every shard.
        let peeked = {
            let shard = shards[key.shard].read();
            shard.peek(key.list, key.fp, self.window())
        };
        let newest = peeked.0.as_slice().first().copied();
        let appended = self.append(0, pbn, (refresh, newest));
        let record = appended.chapter * self.geometry.chapter_records + appended.position;
        let mut shard = shards[key.shard].write();
        let window = self.window();
        if record < window.oldest {
            return;
        }
        // An older entry of this name with the same PBN is replaced rather than kept twice.
        let at = (key.list, key.fp);
        let evicted = shard.insert(at, (window, record), peeked, |matches| {
            let chapters = self.chapters.read();
            matches
                .iter()
                .copied()
                .find(|&old| self.resolve(&chapters, old).map(|(_, p)| p) == Some(pbn))
        });
        bump(&self.counters.evicted_early, evicted);
    }

    pub(super) fn forget_dense(&self, shards: &[RwLock<DenseShard>], name: u128, pbn: u64) -> u64 {
        let key = self.dense_key(name);
        let mut shard = shards[key.shard].write();
        let window = self.window();
        shard.remove((key.list, key.fp), window, |record| {
            let chapters = self.chapters.read();
            self.resolve(&chapters, record).map(|(_, p)| p) == Some(pbn)
        })
    }

    /// Drops expired entries: a `1 / lag` slice of every shard's lists, or all of them.
    pub(super) fn sweep_dense(&self, shards: &[RwLock<DenseShard>], all: bool) {
        let lists = self.lists();
        let count = if all {
            lists.lists_per_shard
        } else {
            lists.lists_per_shard.div_ceil(to_usize(lists.lag))
        };
        for shard in shards {
            let mut shard = shard.write();
            let window = self.window();
            shard.sweep(window, count);
        }
    }

    pub(super) fn live_dense(&self, shards: &[RwLock<DenseShard>]) -> u64 {
        shards
            .iter()
            .map(|shard| {
                let shard = shard.read();
                shard.count_live(self.window())
            })
            .sum()
    }
}
