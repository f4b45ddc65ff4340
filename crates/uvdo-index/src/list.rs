//! One delta list of the dense table: the entries of names that hash to it, newest first, in
//! about as few bits as their information needs.
//!
//! An entry is a name's fingerprint and the record number of its chapter append (chapter
//! `r / K`, position `r % K`). Entries reach a list in record order, so a list is sorted by
//! record and stores the gaps between records, which are geometric with mean `lists` (each
//! record goes to one of `lists` lists), in a Rice code with `low_bits` = k: a gap's low k
//! bits in binary and the rest in unary. The low bits and the unary parts are kept in two
//! arrays, so that the fixed-width fields of all entries can be read at once and only the
//! unary stream is read bit run by bit run:
//!
//! ```text
//! bit 0   anchor    a bits   (r[0] >> k) mod 2^a, of the newest entry's record r[0]
//!         count     c bits   entries n, 1..=entries_max
//!         fp[i]     f bits   for i in 0..n, newest first
//!         low[i]    k bits   low[0] = r[0] mod 2^k; low[i] = g[i] mod 2^k
//!         unary[i]           q[i] zero bits, then a one bit; q[0] = 0; q[i] = g[i] >> k
//!                            where g[i] = r[i-1] - r[i] - 1, for i in 1..n
//! then    zero bits to the end of the list's allocation
//! ```
//!
//! An empty list has no bits at all. Keeping the fingerprints together lets a lookup compare
//! them at fixed offsets and add up gaps only as far as its last match.
//!
//! Invariants: records strictly decrease; every record is below `now`, the number of records
//! appended so far, and above `now - 2^(a + k) + 2^k`, so the anchor names one record (the
//! sweeper visits every list often enough for that); the list ends with the one bit of its
//! last unary part, so its used length is found by looking for the last one bit of its
//! allocation.

use crate::bits::{BitWriter, PEEK_BITS, last_one_before, mask, peek, read};

/// Candidates one lookup keeps, newest first.
pub(crate) const MATCHES_MAX: usize = 8;

/// Field widths of the lists of one geometry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct ListCodec {
    pub(crate) fp_bits: u32,
    pub(crate) low_bits: u32,
    pub(crate) anchor_bits: u32,
    pub(crate) count_bits: u32,
    pub(crate) entries_max: usize,
    /// Longest list image, in bits: that of `entries_max` entries spanning every record a
    /// list may hold.
    pub(crate) bits_max: usize,
}

/// An entry of a list being edited.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Item {
    pub(crate) record: u64,
    pub(crate) fp: u32,
    /// The entry's index in the list as stored, or [`Item::NEW`].
    pub(crate) old: u32,
}

impl Item {
    pub(crate) const NEW: u32 = u32::MAX;
}

/// Records of live entries with a lookup's fingerprint, newest first.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Matches {
    records: [u64; MATCHES_MAX],
    len: usize,
}

impl Matches {
    pub(crate) fn as_slice(&self) -> &[u64] {
        &self.records[..self.len]
    }

    /// Adds the next older match; false once full.
    pub(crate) fn push(&mut self, record: u64) -> bool {
        if self.len == MATCHES_MAX {
            return false;
        }
        self.records[self.len] = record;
        self.len += 1;
        true
    }
}

/// Why a stored list does not decode.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct ListCorrupt(pub(crate) &'static str);

/// Where the fields of a stored list are, in bits from the arena's start.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Layout {
    anchor: u64,
    count: usize,
    pub(crate) fps: usize,
    pub(crate) lows: usize,
    unary: usize,
}

/// A stored list to copy fields from: its bits, its layout, and where each unary part starts
/// (plus where the last one ends).
pub(crate) type OldList<'a> = (&'a [u8], Layout, &'a [usize]);

impl ListCodec {
    fn layout(&self, data: &[u8], start: usize, end: usize) -> Result<Layout, ListCorrupt> {
        let fixed = (self.anchor_bits + self.count_bits) as usize;
        if end < start + fixed {
            return Err(ListCorrupt("list shorter than its header"));
        }
        let anchor = read(data, start, self.anchor_bits);
        let count = read(data, start + self.anchor_bits as usize, self.count_bits);
        let count = usize::try_from(count).map_err(|_| ListCorrupt("entry count"))?;
        if count == 0 || count > self.entries_max {
            return Err(ListCorrupt("entry count out of range"));
        }
        let fps = start + fixed;
        let lows = fps + count * self.fp_bits as usize;
        let unary = lows + count * self.low_bits as usize;
        if unary + count > end {
            return Err(ListCorrupt("fixed fields past the list's end"));
        }
        Ok(Layout {
            anchor,
            count,
            fps,
            lows,
            unary,
        })
    }

    /// The layout of a stored list in an allocation of bits `start..end`, or None if empty.
    fn stored_layout(&self, data: &[u8], start: usize, end: usize) -> Option<Layout> {
        let count = read(data, start + self.anchor_bits as usize, self.count_bits);
        (count > 0).then(|| self.layout(data, start, end).expect("stored lists decode"))
    }

    /// The newest record, from the anchor and its low bits, given `now`.
    fn newest(&self, anchor: u64, low: u64, now: u64) -> Option<u64> {
        let high_now = now.checked_sub(1)? >> self.low_bits;
        let back = high_now.wrapping_sub(anchor) & mask(self.anchor_bits);
        let record = ((high_now - back) << self.low_bits) | low;
        (record < now).then_some(record)
    }

    /// Calls `visit(i, record, unary start)` for the entries of the list in order, newest
    /// first, while it returns true. Returns whether every entry was visited and where the
    /// unary part of the last one visited ends.
    #[inline]
    fn walk(
        &self,
        data: &[u8],
        layout: &Layout,
        (end, now): (usize, u64),
        mut visit: impl FnMut(usize, u64, usize) -> bool,
    ) -> Result<(bool, usize), ListCorrupt> {
        let k = self.low_bits;
        let mut record = 0_u64;
        let mut index = 0;
        let mut code = layout.unary;
        let mut at = layout.unary;
        while at < end {
            let bits = (end - at).min(PEEK_BITS as usize);
            let mut ones = peek(data, at) & mask(u32::try_from(bits).expect("at most 57"));
            while ones != 0 {
                let one = at + ones.trailing_zeros() as usize;
                ones &= ones - 1;
                let q = u64::try_from(one - code).map_err(|_| ListCorrupt("gap"))?;
                let low = read(data, layout.lows + index * k as usize, k);
                record = if index == 0 {
                    if q != 0 {
                        return Err(ListCorrupt("first entry with a gap"));
                    }
                    self.newest(layout.anchor, low, now)
                        .ok_or(ListCorrupt("newest record not below now"))?
                } else {
                    let gap = q
                        .checked_shl(k)
                        .filter(|g| g >> k == q)
                        .ok_or(ListCorrupt("gap overflows"))?
                        | low;
                    record
                        .checked_sub(gap)
                        .and_then(|r| r.checked_sub(1))
                        .ok_or(ListCorrupt("record below zero"))?
                };
                if !visit(index, record, code) {
                    return Ok((false, one + 1));
                }
                code = one + 1;
                index += 1;
                if index == layout.count {
                    return Ok((true, code));
                }
            }
            at += bits;
        }
        Err(ListCorrupt("fewer unary parts than entries"))
    }

    /// The indexes of the entries whose fingerprint is `fp`, into `hits`; returns how many.
    ///
    /// Compares as many fingerprints as one read holds at once: XOR with `fp` repeated makes
    /// a matching field zero, and `!(((x & m) + m) | x | m)`, with `m` the low `f - 1` bits of
    /// every field, has the top bit of exactly the zero fields set (no carry crosses fields).
    fn find_fp(
        &self,
        data: &[u8],
        layout: &Layout,
        fp: u64,
        hits: &mut [usize; MATCHES_MAX],
    ) -> usize {
        let f = self.fp_bits;
        let per_read = PEEK_BITS / f;
        let (mut repeated, mut lows, mut tops) = (0_u64, 0_u64, 0_u64);
        for field in 0..per_read {
            repeated |= fp << (field * f);
            lows |= mask(f - 1) << (field * f);
            tops |= 1 << (field * f + f - 1);
        }
        let mut found = 0;
        let mut first = 0;
        while first < layout.count {
            let fields = (layout.count - first).min(per_read as usize);
            let bits = u32::try_from(fields).expect("at most 57") * f;
            let x = (peek(data, layout.fps + first * f as usize) & mask(bits)) ^ repeated;
            let mut zero = !(((x & lows) + lows) | x | lows) & tops & mask(bits);
            while zero != 0 {
                let field = zero.trailing_zeros() / f;
                zero &= zero - 1;
                hits[found] = first + field as usize;
                found += 1;
                if found == MATCHES_MAX {
                    return found;
                }
            }
            first += fields;
        }
        found
    }

    /// Live entries of the list stored in the allocation of bits `start..end` whose
    /// fingerprint is `fp`.
    pub(crate) fn scan(
        &self,
        data: &[u8],
        (start, end): (usize, usize),
        fp: u64,
        (now, oldest): (u64, u64),
    ) -> Matches {
        let mut found = Matches::default();
        if start == end {
            return found;
        }
        let Some(layout) = self.stored_layout(data, start, end) else {
            return found;
        };
        let mut hits = [0_usize; MATCHES_MAX];
        let hit_count = self.find_fp(data, &layout, fp, &mut hits);
        if hit_count == 0 {
            return found;
        }
        let mut next = 0;
        self.walk(data, &layout, (end, now), |index, record, _| {
            if record < oldest {
                return false;
            }
            if index == hits[next] {
                found.push(record);
                next += 1;
            }
            next < hit_count
        })
        .expect("stored lists decode");
        found
    }

    /// Live entries of the list stored in the allocation of bits `start..end`.
    pub(crate) fn count_live(
        &self,
        data: &[u8],
        (start, end): (usize, usize),
        (now, oldest): (u64, u64),
    ) -> u64 {
        if start == end {
            return 0;
        }
        let Some(layout) = self.stored_layout(data, start, end) else {
            return 0;
        };
        let mut live = 0;
        self.walk(data, &layout, (end, now), |_, record, _| {
            live += u64::from(record >= oldest);
            record >= oldest
        })
        .expect("stored lists decode");
        live
    }

    /// Every entry of the list at bits `start..end`, newest first, into `items`, and the
    /// start of each unary part (plus the end of the last) into `codes`; returns the list's
    /// layout, for copying its fields.
    pub(crate) fn decode(
        &self,
        data: &[u8],
        (start, end): (usize, usize),
        now: u64,
        items: &mut Vec<Item>,
        codes: &mut Vec<usize>,
    ) -> Result<Layout, ListCorrupt> {
        items.clear();
        codes.clear();
        if start == end {
            codes.push(end);
            return Ok(Layout::default());
        }
        let layout = self.layout(data, start, end)?;
        let fp_bits = self.fp_bits as usize;
        let (_, last) = self.walk(data, &layout, (end, now), |index, record, code| {
            let fp = read(data, layout.fps + index * fp_bits, self.fp_bits);
            codes.push(code);
            items.push(Item {
                record,
                fp: u32::try_from(fp).expect("fingerprints are at most 32 bits"),
                old: u32::try_from(index).expect("entries_max fits u32"),
            });
            true
        })?;
        if last != end {
            return Err(ListCorrupt("bits after the last unary part"));
        }
        codes.push(end);
        Ok(layout)
    }

    /// Writes the list stored at bits `start..end` with `record` (newer than all its entries)
    /// added as its newest entry and its expired entries (records below `oldest`) dropped,
    /// without decoding the entries in between: their fields are copied in three runs.
    /// Returns how many entries it dropped, or None (nothing written) when `record` is not
    /// the newest or the list would exceed `entries_max`.
    pub(crate) fn write_newest(
        &self,
        data: &[u8],
        (start, end): (usize, usize),
        (record, fp): (u64, u32),
        (now, oldest): (u64, u64),
        writer: &mut BitWriter<'_>,
    ) -> Option<usize> {
        let (low_mask, k) = (mask(self.low_bits), self.low_bits);
        writer.put((record >> k) & mask(self.anchor_bits), self.anchor_bits);
        if start == end {
            writer.put(1, self.count_bits);
            writer.put(u64::from(fp), self.fp_bits);
            writer.put(record & low_mask, k);
            writer.put(1, 1);
            return Some(0);
        }
        let layout = self.layout(data, start, end).expect("stored lists decode");
        let newest = self
            .newest(layout.anchor, read(data, layout.lows, k), now)
            .expect("stored lists decode");
        if record <= newest {
            return None;
        }
        let (kept, kept_end) = self.live_prefix(data, &layout, (end, newest), oldest);
        if kept + 1 > self.entries_max {
            return None;
        }
        writer.put(to_u64(kept + 1), self.count_bits);
        let (f, kb) = (self.fp_bits as usize, k as usize);
        writer.put(u64::from(fp), self.fp_bits);
        writer.copy(data, layout.fps, layout.fps + kept * f);
        writer.put(record & low_mask, k);
        let gap = record - newest - 1;
        if kept > 0 {
            writer.put(gap & low_mask, k);
            writer.copy(data, layout.lows + kb, layout.lows + kept * kb);
        }
        writer.put(1, 1);
        if kept > 0 {
            writer.put_zeros(usize::try_from(gap >> k).expect("gaps are below the window"));
            writer.put(1, 1);
            writer.copy(data, layout.unary + 1, kept_end);
        }
        Some(layout.count - kept)
    }

    /// How many of the newest entries have records at or above `oldest` (the live ones come
    /// first), and where the unary part of the last of them ends. Works back from the
    /// oldest entry, whose record follows from the sums of all low bits and unary parts.
    fn live_prefix(
        &self,
        data: &[u8],
        layout: &Layout,
        (end, newest): (usize, u64),
        oldest: u64,
    ) -> (usize, usize) {
        let (k, kb) = (self.low_bits, self.low_bits as usize);
        let count = layout.count;
        let lows = sum_fields(data, layout.lows + kb, count - 1, k);
        let unary_zeros = to_u64(end - layout.unary - count);
        let mut record = newest - to_u64(count - 1) - lows - (unary_zeros << k);
        let (mut index, mut code_end) = (count - 1, end);
        while record < oldest {
            if index == 0 {
                return (0, layout.unary);
            }
            let one =
                last_one_before(data, layout.unary, code_end - 1).expect("stored lists decode");
            let q = to_u64(code_end - 1 - (one + 1));
            let low = read(data, layout.lows + index * kb, k);
            record += ((q << k) | low) + 1;
            code_end = one + 1;
            index -= 1;
        }
        (index + 1, code_end)
    }

    /// Bits of the image of `items` (see [`ListCodec::write`]).
    #[cfg(test)]
    pub(crate) fn image_bits(&self, items: &[Item], codes: &[usize]) -> usize {
        if items.is_empty() {
            return 0;
        }
        let fixed = (self.anchor_bits + self.count_bits) as usize;
        let fields = items.len() * (self.fp_bits + self.low_bits) as usize;
        let unary: usize = (0..items.len())
            .map(|i| match self.copied_code(items, i) {
                Some(old) => codes[old + 1] - codes[old],
                None => usize::try_from(self.code(items, i).1).expect("small") + 1,
            })
            .sum();
        fixed + fields + unary
    }

    /// The old index of entry `i` if its stored gap still holds (same predecessor).
    fn copied_code(&self, items: &[Item], i: usize) -> Option<usize> {
        let old = items[i].old;
        let kept = i > 0 && old != Item::NEW && old > 0 && items[i - 1].old == old - 1;
        kept.then_some(old as usize)
    }

    /// Entry `i`'s low bits and unary part.
    fn code(&self, items: &[Item], i: usize) -> (u64, u64) {
        if i == 0 {
            return (items[0].record & mask(self.low_bits), 0);
        }
        let gap = items[i - 1].record - items[i].record;
        assert!(
            gap > 0,
            "list entries out of order: {:?}",
            &items[i - 1..=i]
        );
        let gap = gap - 1;
        (gap & mask(self.low_bits), gap >> self.low_bits)
    }

    /// Writes the list of `items` (newest first), copying the fields that still hold from
    /// the stored list `old`.
    pub(crate) fn write(&self, items: &[Item], old: OldList<'_>, writer: &mut BitWriter<'_>) {
        let Some(newest) = items.first() else {
            return;
        };
        let (data, layout, codes) = old;
        let count = u64::try_from(items.len()).expect("usize fits u64");
        assert!(items.len() <= self.entries_max, "list over entries_max");
        writer.put(
            (newest.record >> self.low_bits) & mask(self.anchor_bits),
            self.anchor_bits,
        );
        writer.put(count, self.count_bits);
        let (f, k) = (self.fp_bits as usize, self.low_bits as usize);
        let old_fp = |i: usize| (items[i].old != Item::NEW).then_some(items[i].old as usize);
        let fresh_fp = |w: &mut BitWriter<'_>, i: usize| {
            w.put(u64::from(items[i].fp), self.fp_bits);
        };
        let copy_fps = |w: &mut BitWriter<'_>, from: usize, to: usize| {
            w.copy(data, layout.fps + from * f, layout.fps + to * f);
        };
        write_runs(items.len(), writer, old_fp, fresh_fp, copy_fps);
        let old_code = |i: usize| self.copied_code(items, i);
        let fresh_low = |w: &mut BitWriter<'_>, i: usize| {
            w.put(self.code(items, i).0, self.low_bits);
        };
        let copy_lows = |w: &mut BitWriter<'_>, from: usize, to: usize| {
            w.copy(data, layout.lows + from * k, layout.lows + to * k);
        };
        write_runs(items.len(), writer, old_code, fresh_low, copy_lows);
        let fresh_unary = |w: &mut BitWriter<'_>, i: usize| {
            let q = self.code(items, i).1;
            w.put_zeros(usize::try_from(q).expect("gaps are below the window"));
            w.put(1, 1);
        };
        let copy_unary = |w: &mut BitWriter<'_>, from: usize, to: usize| {
            w.copy(data, codes[from], codes[to]);
        };
        write_runs(items.len(), writer, old_code, fresh_unary, copy_unary);
    }
}

/// The sum of the `count` fields of `bits` bits from bit `start`, several fields a read.
fn sum_fields(data: &[u8], start: usize, count: usize, bits: u32) -> u64 {
    let per_read = (PEEK_BITS / bits) as usize;
    let field = mask(bits);
    let mut sum = 0;
    let mut first = 0;
    while first < count {
        let fields = (count - first).min(per_read);
        let mut window = peek(data, start + first * bits as usize);
        for _ in 0..fields {
            sum += window & field;
            window >>= bits;
        }
        first += fields;
    }
    sum
}

fn to_u64(value: usize) -> u64 {
    u64::try_from(value).expect("usize fits u64")
}

/// Writes one field for each of `count` entries: runs of entries whose field can be copied
/// (`copied` gives the old index) as one copy of old fields `from..to`, the others with
/// `fresh`.
fn write_runs(
    count: usize,
    writer: &mut BitWriter<'_>,
    copied: impl Fn(usize) -> Option<usize>,
    fresh: impl Fn(&mut BitWriter<'_>, usize),
    copy: impl Fn(&mut BitWriter<'_>, usize, usize),
) {
    let mut run: Option<(usize, usize)> = None;
    for i in 0..count {
        match (copied(i), run) {
            (Some(old), Some((from, to))) if old == to => run = Some((from, to + 1)),
            (Some(old), _) => {
                if let Some((from, to)) = run {
                    copy(writer, from, to);
                }
                run = Some((old, old + 1));
            }
            (None, _) => {
                if let Some((from, to)) = run.take() {
                    copy(writer, from, to);
                }
                fresh(writer, i);
            }
        }
    }
    if let Some((from, to)) = run {
        copy(writer, from, to);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bits::GUARD_BYTES;

    fn codec() -> ListCodec {
        ListCodec {
            fp_bits: 10,
            low_bits: 6,
            anchor_bits: 9,
            count_bits: 8,
            entries_max: 200,
            bits_max: 10_000,
        }
    }

    fn image(codec: &ListCodec, items: &[Item], old: OldList<'_>) -> Vec<u8> {
        let mut out = Vec::new();
        let mut writer = BitWriter::new(&mut out);
        codec.write(items, old, &mut writer);
        let bits = writer.bits();
        assert_eq!(bits, codec.image_bits(items, old.2));
        writer.finish();
        out.extend_from_slice(&[0; GUARD_BYTES]);
        out
    }

    fn fresh(records: &[u64]) -> Vec<Item> {
        records
            .iter()
            .map(|&record| Item {
                record,
                fp: u32::try_from(record % 1000).unwrap(),
                old: Item::NEW,
            })
            .collect()
    }

    #[test]
    fn lists_round_trip_and_edits_copy_what_still_holds() {
        let codec = codec();
        let now = 40_000;
        let records = [39_999, 39_000, 38_990, 30_000, 29_999, 20_000];
        let items = fresh(&records);
        let data = image(&codec, &items, (&[], Layout::default(), &[]));
        let end = crate::bits::end_of_ones(&data, 0, data.len() - GUARD_BYTES);
        let (mut decoded, mut codes) = (Vec::new(), Vec::new());
        let layout = codec
            .decode(&data, (0, end), now, &mut decoded, &mut codes)
            .unwrap();
        let back: Vec<u64> = decoded.iter().map(|i| i.record).collect();
        assert_eq!(back, records);
        let found = codec.scan(&data, (0, end), 999, (now, 0));
        assert_eq!(found.as_slice(), [39_999, 29_999]);
        let found = codec.scan(&data, (0, end), 999, (now, 30_000));
        assert_eq!(found.as_slice(), [39_999]);
        // Insert a newest entry, drop one in the middle and the oldest.
        let mut edited = decoded.clone();
        edited.truncate(5);
        edited.remove(2);
        edited.insert(
            0,
            Item {
                record: 40_010,
                fp: 7,
                old: Item::NEW,
            },
        );
        let again = image(&codec, &edited, (&data, layout, &codes));
        let end = crate::bits::end_of_ones(&again, 0, again.len() - GUARD_BYTES);
        let mut redecoded = Vec::new();
        codec
            .decode(&again, (0, end), now + 20, &mut redecoded, &mut codes)
            .unwrap();
        let pairs: Vec<(u64, u32)> = redecoded.iter().map(|i| (i.record, i.fp)).collect();
        let expected: Vec<(u64, u32)> = edited.iter().map(|i| (i.record, i.fp)).collect();
        assert_eq!(pairs, expected);
    }

    #[test]
    fn damaged_lists_are_refused() {
        let codec = codec();
        let items = fresh(&[500, 400, 300]);
        let data = image(&codec, &items, (&[], Layout::default(), &[]));
        let end = crate::bits::end_of_ones(&data, 0, data.len() - GUARD_BYTES);
        let (mut decoded, mut codes) = (Vec::new(), Vec::new());
        assert!(
            codec
                .decode(&data, (0, end), 501, &mut decoded, &mut codes)
                .is_ok()
        );
        assert!(
            codec
                .decode(&data, (0, end), 0, &mut decoded, &mut codes)
                .is_err()
        );
        assert!(
            codec
                .decode(&data, (0, end - 1), 501, &mut decoded, &mut codes)
                .is_err()
        );
        assert!(
            codec
                .decode(&data, (0, 5), 501, &mut decoded, &mut codes)
                .is_err()
        );
        let mut zero_count = data.clone();
        zero_count[1] &= !0xfe;
        zero_count[2] &= !0x01;
        assert!(
            codec
                .decode(&zero_count, (0, end), 501, &mut decoded, &mut codes)
                .is_err()
        );
    }
}
