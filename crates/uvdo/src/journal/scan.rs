//! Reading the recovery journal back after a crash.
//!
//! Every block of the region is decoded; a block counts only when it decodes cleanly (CRC,
//! nonce, location, sequence congruent with its position), belongs to the current epoch, and
//! was written in this session (sequence >= the tail the super block recorded when the volume
//! was last opened). The newest such block names the journal head as of its writing; the
//! entries to replay are those of the contiguous run of blocks from that head up to the first
//! sequence whose block is missing or invalid (a torn or unwritten block ends the log: no
//! later block was ever acknowledged as durable on its own, because commits complete in
//! order).
//!
//! A block written in a single-flush batch (journal/mod.rs) carries a check of the data its
//! entries map to: that data and the block were made durable by one flush, so a crash in it
//! may have left the block without some of its data. Every block newer than the newest
//! `durable_through` any replayed block records (the commits since then may not have
//! completed) and carrying a check has its data read back and checked; the first block that
//! fails ends the log there, like a torn block: its commit never completed, so nothing in it
//! or after it was acknowledged as durable. Older blocks are never checked: the blocks they
//! map to may since have been freed and rewritten, which is why recovery needs the mark.
//!
//! What each block means is decided by one table, [`DECISIONS`] (STYLE.md rule 10), from
//! the facts a decode establishes; a test enumerates every combination of facts and checks
//! that exactly one row matches it.
//!
//! The region is read in chunks of [`SCAN_CHUNK_BLOCKS`], a long one in two halves by two
//! threads; each block's entries are packed as soon as it decodes ([`JournalEntries`]), so a
//! full region costs 24 bytes per entry, not the decoded blocks' 56.

use uvdo_format::header::Expected;
use uvdo_format::recovery_journal::{
    Epoch, JournalRegion, RecoveryJournalBlock, RecoveryJournalEntry, fold_data_check,
};
use uvdo_format::{
    BLOCK_SIZE, Block, FormatError, JournalPoint, Nonce, Problem, SequenceNumber, le,
};

/// Offset of the nonce in every metadata block's header (FORMAT.md, the common header).
const NONCE_OFFSET: usize = 8;
use uvdo_io::Storage;

use super::entries::{EntryBlock, JournalEntries, ReplayEntries};
use crate::error::VolumeError;
use crate::hash::Namer;
use crate::journal::{counter_changes, maps_to_data};

/// What a scan learns about the block at the position a sequence is expected at.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct BlockFacts {
    /// The CRC holds (false also for all-zero and garbage blocks).
    pub(crate) checksum_ok: bool,
    /// The block carries this volume's nonce.
    pub(crate) nonce_ok: bool,
    /// The block says it belongs where it was read.
    pub(crate) location_ok: bool,
    /// Written in the current epoch (since the last recovery).
    pub(crate) epoch_current: bool,
    /// How its sequence compares with the one expected here.
    pub(crate) sequence: SequenceFact,
}

/// A block's sequence against the one the scan expects at its position.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum SequenceFact {
    /// Older: an earlier lap, or before this session.
    Below,
    /// Exactly the expected one.
    Expected,
    /// Newer than anything that can be there.
    Above,
}

/// What replay does with a block.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// Replay its entries and expect the next sequence after it.
    Apply,
    /// The log ends here (torn, unwritten, foreign, stale): an honest crash.
    Stop,
    /// Damage no crash can cause: recovery fails and the volume goes read-only.
    Corrupt,
}

/// One row: `None` matches either value of a fact.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Row {
    checksum_ok: Option<bool>,
    nonce_ok: Option<bool>,
    location_ok: Option<bool>,
    epoch_current: Option<bool>,
    sequence: Option<SequenceFact>,
    verdict: Verdict,
    why: &'static str,
}

const fn row(
    checksum_ok: Option<bool>,
    nonce_ok: Option<bool>,
    location_ok: Option<bool>,
    epoch_current: Option<bool>,
    sequence: Option<SequenceFact>,
    verdict: Verdict,
    why: &'static str,
) -> Row {
    Row {
        checksum_ok,
        nonce_ok,
        location_ok,
        epoch_current,
        sequence,
        verdict,
        why,
    }
}

/// The replay decision table. A checksum failure hides every other fact, so it is one row.
pub(crate) const DECISIONS: [Row; 7] = [
    row(
        Some(false),
        None,
        None,
        None,
        None,
        Verdict::Stop,
        "torn or never written",
    ),
    row(
        Some(true),
        Some(false),
        None,
        None,
        None,
        Verdict::Stop,
        "another volume's block",
    ),
    row(
        Some(true),
        Some(true),
        Some(false),
        None,
        None,
        Verdict::Corrupt,
        "misdirected write",
    ),
    row(
        Some(true),
        Some(true),
        Some(true),
        Some(false),
        None,
        Verdict::Stop,
        "older epoch",
    ),
    row(
        Some(true),
        Some(true),
        Some(true),
        Some(true),
        Some(SequenceFact::Below),
        Verdict::Stop,
        "earlier lap",
    ),
    row(
        Some(true),
        Some(true),
        Some(true),
        Some(true),
        Some(SequenceFact::Expected),
        Verdict::Apply,
        "the next block of the log",
    ),
    row(
        Some(true),
        Some(true),
        Some(true),
        Some(true),
        Some(SequenceFact::Above),
        Verdict::Corrupt,
        "a sequence from the future",
    ),
];

impl Row {
    fn matches(&self, facts: BlockFacts) -> bool {
        let fits = |want: Option<bool>, got: bool| want.is_none_or(|w| w == got);
        fits(self.checksum_ok, facts.checksum_ok)
            && (!facts.checksum_ok
                || (fits(self.nonce_ok, facts.nonce_ok)
                    && fits(self.location_ok, facts.location_ok)
                    && fits(self.epoch_current, facts.epoch_current)
                    && self.sequence.is_none_or(|s| s == facts.sequence)))
    }
}

/// The verdict for a block's facts: the one row that matches.
pub(crate) fn decide(facts: BlockFacts) -> (Verdict, &'static str) {
    let row = DECISIONS
        .iter()
        .find(|r| r.matches(facts))
        .expect("the table is total");
    (row.verdict, row.why)
}

/// Blocks read per store request while scanning.
const SCAN_CHUNK_BLOCKS: u64 = 256;

/// Regions at least this long are read and decoded by two threads; below it, a thread costs
/// more than it saves.
const PARALLEL_SCAN_BLOCKS_MIN: u64 = 4 * SCAN_CHUNK_BLOCKS;

/// What a scan found.
#[derive(Debug)]
pub(crate) struct ScannedJournal {
    /// The oldest block whose entries must be replayed.
    pub(crate) head: SequenceNumber,
    /// The sequence after the last replayable block: where the journal continues.
    pub(crate) end: SequenceNumber,
    /// The entries to replay, in journal order: the blocks `head..end` as decoded.
    pub(crate) entries: JournalEntries,
    /// Counters as of the last replayable block, if any block was found.
    pub(crate) logical_blocks_used: Option<u64>,
    pub(crate) block_map_data_blocks: Option<u64>,
    /// Blocks that decoded but were ignored (stale epoch or earlier session).
    pub(crate) stale_blocks: u64,
    /// Blocks that decoded but whose data check failed: the log ended before the first.
    pub(crate) unlanded_blocks: u64,
}

/// A replayed block that carries a data check, and the counters as of the block before it.
struct Checked {
    sequence: SequenceNumber,
    check: u64,
    counters_before: (u64, u64),
}

/// The counters as of the end of the block before `block`: its own, with its entries'
/// changes taken back (the block before may be older than the head, or be no block at all).
fn counters_before(block: &RecoveryJournalBlock) -> (u64, u64) {
    block.entries.iter().map(counter_changes).fold(
        (block.logical_blocks_used.0, block.block_map_data_blocks.0),
        |(used, tree), (used_change, tree_change)| {
            (
                used.saturating_add_signed(-used_change),
                tree.saturating_sub(tree_change),
            )
        },
    )
}

/// Scans the journal of a volume opened at `session_start` in `epoch`; `namer` names data for
/// the data checks.
pub(crate) fn scan(
    store: &dyn Storage,
    region: JournalRegion,
    nonce: Nonce,
    epoch: Epoch,
    session_start: SequenceNumber,
    namer: &Namer,
) -> Result<ScannedJournal, VolumeError> {
    let mut blocks = read_blocks(store, region, nonce)?;
    let in_session = |b: &RecoveryJournalBlock| b.epoch == epoch && b.sequence >= session_start;
    let stale_blocks = blocks
        .iter()
        .filter(|b| matches!(b, Ok(block) if !in_session(&block.header)))
        .count() as u64;
    let newest = blocks
        .iter()
        .filter_map(|b| b.as_ref().ok())
        .map(|b| &b.header)
        .filter(|b| in_session(b))
        .max_by_key(|b| b.sequence);
    let Some(newest) = newest else {
        return Ok(ScannedJournal {
            head: session_start,
            end: session_start,
            entries: JournalEntries::default(),
            logical_blocks_used: None,
            block_map_data_blocks: None,
            stale_blocks,
            unlanded_blocks: 0,
        });
    };
    let head = newest
        .block_map_head
        .min(newest.slab_journal_head)
        .max(session_start);
    let newest_sequence = newest.sequence;
    let mut entries = JournalEntries::default();
    let mut counters = None;
    let mut checked = Vec::new();
    let mut durable_through = SequenceNumber(0);
    let mut sequence = head;
    while sequence <= newest_sequence {
        let position = usize::try_from(sequence.0 % region.blocks).expect("region fits memory");
        let raw = &mut blocks[position];
        let facts = facts_of(raw, nonce, epoch, sequence);
        match decide(facts) {
            (Verdict::Apply, _) => {}
            (Verdict::Stop, _) => break,
            (Verdict::Corrupt, why) => {
                return Err(VolumeError::invariant(
                    None,
                    Some(region.pbn_of(sequence)),
                    format!("recovery journal block for sequence {sequence}: {why} ({facts:?})"),
                ));
            }
        }
        let block = raw.as_mut().expect("an applied block decoded");
        let header = &block.header;
        durable_through = durable_through.max(header.durable_through.unwrap_or_default());
        if let Some(check) = header.data_check {
            checked.push(Checked {
                sequence,
                check,
                counters_before: block.counters_before,
            });
        }
        counters = Some((header.logical_blocks_used.0, header.block_map_data_blocks.0));
        entries.push(block.entries.take().expect("each block is applied once"));
        sequence = sequence.next();
    }
    if sequence == head && head < newest_sequence {
        // Blocks after the head exist but the head block itself does not: the head block was
        // durable before any later block was written, so this is damage, not a crash.
        return Err(VolumeError::invariant(
            None,
            Some(region.pbn_of(head)),
            format!("journal head block {head} is missing but block {newest_sequence} exists"),
        ));
    }
    let mut end = sequence;
    let mut unlanded_blocks = 0;
    for block in checked.iter().filter(|c| c.sequence > durable_through) {
        let first = JournalPoint {
            sequence: block.sequence,
            entry: 0,
        };
        let own = entries
            .entries_from(first)
            .take_while(|(point, _)| point.sequence == block.sequence);
        if data_check_of(store, namer, own)? != block.check {
            unlanded_blocks = end.0 - block.sequence.0;
            end = block.sequence;
            entries.truncate(first);
            counters = Some(block.counters_before);
            break;
        }
    }
    Ok(ScannedJournal {
        head,
        end,
        entries,
        logical_blocks_used: counters.map(|c| c.0),
        block_map_data_blocks: counters.map(|c| c.1),
        stale_blocks,
        unlanded_blocks,
    })
}

/// The data check of `entries` (one block's) over the data now on the store.
fn data_check_of(
    store: &dyn Storage,
    namer: &Namer,
    entries: impl Iterator<Item = (JournalPoint, RecoveryJournalEntry)>,
) -> Result<u64, VolumeError> {
    let mut data: Block = [0; BLOCK_SIZE];
    let mut check = 0;
    for (_, entry) in entries.filter(|(_, e)| maps_to_data(e)) {
        let pbn = entry.new.pbn().expect("maps to data");
        store.read_at(pbn.byte_offset(), &mut data)?;
        check = fold_data_check(check, namer.check_name(&data));
    }
    Ok(check)
}

/// A block as read: decoded, or why not.
type ReadBlock = Result<DecodedBlock, (FormatError, u64)>;

/// A block that decoded, its entries packed as soon as it is: a region never holds every
/// entry decoded (they take 56 bytes each, packed 24).
#[derive(Debug)]
struct DecodedBlock {
    /// The decoded block, without its entries.
    header: RecoveryJournalBlock,
    /// Its entries, until the scan takes them.
    entries: Option<EntryBlock>,
    /// With a data check: the counters as of the block before it (`counters_before`).
    counters_before: (u64, u64),
}

impl DecodedBlock {
    fn new(mut header: RecoveryJournalBlock) -> Self {
        let entries = EntryBlock::pack(header.sequence, &header.entries);
        let counters_before = if header.data_check.is_some() {
            counters_before(&header)
        } else {
            (0, 0)
        };
        header.entries = Vec::new();
        Self {
            header,
            entries: Some(entries),
            counters_before,
        }
    }
}

/// The facts the decision table needs about the block read where `expected` belongs.
fn facts_of(read: &ReadBlock, nonce: Nonce, epoch: Epoch, expected: SequenceNumber) -> BlockFacts {
    let unreadable = BlockFacts {
        checksum_ok: false,
        nonce_ok: false,
        location_ok: false,
        epoch_current: false,
        sequence: SequenceFact::Below,
    };
    match read {
        Ok(DecodedBlock { header: block, .. }) => BlockFacts {
            checksum_ok: true,
            nonce_ok: true,
            location_ok: true,
            epoch_current: block.epoch == epoch,
            sequence: match block.sequence.cmp(&expected) {
                std::cmp::Ordering::Less => SequenceFact::Below,
                std::cmp::Ordering::Equal => SequenceFact::Expected,
                std::cmp::Ordering::Greater => SequenceFact::Above,
            },
        },
        Err((error, raw_nonce)) => match error.problem {
            Problem::Unwritten
            | Problem::Checksum { .. }
            | Problem::BadMagic { .. }
            | Problem::UnsupportedVersion { .. } => unreadable,
            Problem::WrongNonce { .. } => BlockFacts {
                checksum_ok: true,
                ..unreadable
            },
            // A whole, checksummed block that is not the journal block this position holds:
            // another structure, another place, or fields no encoder writes.
            Problem::WrongType { .. }
            | Problem::WrongLocation { .. }
            | Problem::WrongSequence { .. }
            | Problem::InvalidField { .. } => BlockFacts {
                checksum_ok: true,
                nonce_ok: *raw_nonce == nonce.0,
                ..unreadable
            },
        },
    }
}

/// Every block of the region, decoded or with the reason it did not decode (and the nonce its
/// header carries, to tell a foreign block from a misdirected one of this volume). A large
/// region is read and decoded in two halves at once, one on another thread.
fn read_blocks(
    store: &dyn Storage,
    region: JournalRegion,
    nonce: Nonce,
) -> Result<Vec<ReadBlock>, VolumeError> {
    if region.blocks < PARALLEL_SCAN_BLOCKS_MIN {
        return read_range(store, region, nonce, 0..region.blocks);
    }
    let half = region.blocks / 2;
    let (low, high) = std::thread::scope(|scope| {
        let high = scope.spawn(|| read_range(store, region, nonce, half..region.blocks));
        let low = read_range(store, region, nonce, 0..half);
        let high = high
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic));
        (low, high)
    });
    let mut found = low?;
    found.extend(high?);
    Ok(found)
}

/// The blocks at `positions` of the region, as `read_blocks` returns them.
fn read_range(
    store: &dyn Storage,
    region: JournalRegion,
    nonce: Nonce,
    positions: std::ops::Range<u64>,
) -> Result<Vec<ReadBlock>, VolumeError> {
    let blocks = positions.end - positions.start;
    let mut found = Vec::with_capacity(usize::try_from(blocks).expect("fits memory"));
    let mut buffer = vec![0_u8; usize::try_from(SCAN_CHUNK_BLOCKS).expect("small") * BLOCK_SIZE];
    let mut position = positions.start;
    while position < positions.end {
        let count = SCAN_CHUNK_BLOCKS.min(positions.end - position);
        let bytes = &mut buffer[..usize::try_from(count).expect("small") * BLOCK_SIZE];
        store.read_at(region.start.offset(position).byte_offset(), bytes)?;
        for (i, chunk) in bytes.chunks_exact(BLOCK_SIZE).enumerate() {
            let pbn = region.start.offset(position + i as u64);
            let block: &Block = chunk.try_into().expect("a whole block");
            let decoded = RecoveryJournalBlock::decode(block, Expected::new(nonce, pbn), region);
            found.push(
                decoded
                    .map(DecodedBlock::new)
                    .map_err(|e| (e, le::get_u64(block, NONCE_OFFSET))),
            );
        }
        position += count;
    }
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::journal::entries::ReplayEntries;
    use crate::journal::{RecoveryJournal, remap_entry};
    use uvdo_format::recovery_journal::RecoveryJournalEntry;
    use uvdo_format::{JournalPoint, Lbn, Mapping, Pbn};
    use uvdo_io::memory::MemoryStore;

    const NONCE: Nonce = Nonce(0xabc);
    const REGION: JournalRegion = JournalRegion {
        start: Pbn(3),
        blocks: 8,
    };

    fn namer() -> Namer {
        Namer::new([7; uvdo_format::geometry::HASH_SECRET_SIZE], false)
    }

    fn scan(
        store: &MemoryStore,
        region: JournalRegion,
        nonce: Nonce,
        epoch: Epoch,
        session_start: SequenceNumber,
    ) -> Result<ScannedJournal, VolumeError> {
        super::scan(store, region, nonce, epoch, session_start, &namer())
    }

    /// The data LBN `lbn`'s entry maps to, at PBN 1000 + lbn.
    fn data_of(lbn: u64) -> Block {
        [u8::try_from(lbn % 251).unwrap() + 1; BLOCK_SIZE]
    }

    /// Journals `lbn -> PBN 1000 + lbn` for each LBN; the blocks are written and marked
    /// durable. A single-flush batch also writes the data of the LBNs `landed` accepts.
    fn write_batch_with(
        store: &MemoryStore,
        journal: &mut RecoveryJournal,
        lbns: std::ops::Range<u64>,
        single_flush: bool,
        landed: impl Fn(u64) -> bool,
    ) {
        for lbn in lbns.clone() {
            journal.append(
                remap_entry(
                    Lbn(lbn),
                    Pbn(500),
                    u16::try_from(lbn % 812).unwrap(),
                    Mapping::Data(Pbn(1000 + lbn)),
                    Mapping::Unmapped,
                ),
                Some(namer().check_name(&data_of(lbn))),
            );
        }
        let batch = journal.take_commit_batch(single_flush).unwrap();
        assert_eq!(batch.single_flush, single_flush);
        for lbn in lbns.filter(|&lbn| single_flush && landed(lbn)) {
            store
                .write_at(Pbn(1000 + lbn).byte_offset(), &data_of(lbn))
                .unwrap();
        }
        for (pbn, block) in &batch.blocks {
            store.write_at(pbn.byte_offset(), block).unwrap();
        }
        journal.mark_durable(&batch);
    }

    /// A batch whose data was flushed before it: no data checks.
    fn write_batch(store: &MemoryStore, journal: &mut RecoveryJournal, lbns: std::ops::Range<u64>) {
        write_batch_with(store, journal, lbns, false, |_| true);
    }

    fn journal(start: u64) -> RecoveryJournal {
        let s = SequenceNumber(start);
        RecoveryJournal::new(REGION, NONCE, Epoch(1), s, s, 0, 0)
    }

    #[test]
    fn every_combination_of_facts_matches_exactly_one_row() {
        let bools = [false, true];
        let sequences = [
            SequenceFact::Below,
            SequenceFact::Expected,
            SequenceFact::Above,
        ];
        let mut combinations = 0;
        for checksum_ok in bools {
            for nonce_ok in bools {
                for location_ok in bools {
                    for epoch_current in bools {
                        for sequence in sequences {
                            let facts = BlockFacts {
                                checksum_ok,
                                nonce_ok,
                                location_ok,
                                epoch_current,
                                sequence,
                            };
                            let rows = DECISIONS.iter().filter(|r| r.matches(facts)).count();
                            assert_eq!(rows, 1, "{facts:?} matches {rows} rows");
                            combinations += 1;
                        }
                    }
                }
            }
        }
        assert_eq!(combinations, 48);
        let apply = |sequence| BlockFacts {
            checksum_ok: true,
            nonce_ok: true,
            location_ok: true,
            epoch_current: true,
            sequence,
        };
        assert_eq!(decide(apply(SequenceFact::Expected)).0, Verdict::Apply);
        assert_eq!(decide(apply(SequenceFact::Below)).0, Verdict::Stop);
        assert_eq!(decide(apply(SequenceFact::Above)).0, Verdict::Corrupt);
    }

    #[test]
    fn a_misdirected_journal_block_is_corruption_not_the_end_of_the_log() {
        let store = MemoryStore::new(64 * 4096);
        let mut j = journal(1);
        write_batch(&store, &mut j, 0..10);
        write_batch(&store, &mut j, 10..20);
        write_batch(&store, &mut j, 20..30);
        // Block 3 lands at block 2's place as well (a misdirected write).
        let mut block = [0_u8; BLOCK_SIZE];
        store
            .read_at(REGION.pbn_of(SequenceNumber(3)).byte_offset(), &mut block)
            .unwrap();
        store
            .write_at(REGION.pbn_of(SequenceNumber(2)).byte_offset(), &block)
            .unwrap();
        let err = scan(&store, REGION, NONCE, Epoch(1), SequenceNumber(1)).unwrap_err();
        assert!(err.to_string().contains("misdirected"), "{err}");
    }

    #[test]
    fn a_foreign_block_ends_the_log() {
        let store = MemoryStore::new(64 * 4096);
        let mut j = journal(1);
        for round in 0..3 {
            write_batch(&store, &mut j, round * 10..round * 10 + 10);
        }
        // Another volume's block 2 lands where ours was: the log ends before it, although our
        // block 3 is still there.
        let two = SequenceNumber(2);
        let mut other = RecoveryJournal::new(REGION, Nonce(0xdead), Epoch(1), two, two, 0, 0);
        write_batch(&store, &mut other, 0..3);
        let scanned = scan(&store, REGION, NONCE, Epoch(1), SequenceNumber(1)).unwrap();
        assert_eq!((scanned.end, scanned.entries.len()), (two, 10));
    }

    #[test]
    fn a_scan_returns_every_entry_of_the_session_in_order() {
        let store = MemoryStore::new(64 * 4096);
        let mut j = journal(5);
        write_batch(&store, &mut j, 0..200);
        write_batch(&store, &mut j, 200..210);
        let scanned = scan(&store, REGION, NONCE, Epoch(1), SequenceNumber(5)).unwrap();
        assert_eq!(scanned.head, SequenceNumber(5));
        assert_eq!(scanned.end, SequenceNumber(8));
        let lbns: Vec<u64> = scanned.entries.entries().map(|(_, e)| e.lbn.0).collect();
        assert_eq!(lbns, (0..210).collect::<Vec<_>>());
        assert_eq!(scanned.logical_blocks_used, Some(210));
    }

    #[test]
    fn a_torn_block_ends_the_log_and_later_blocks_are_dropped() {
        let store = MemoryStore::new(64 * 4096);
        let mut j = journal(1);
        write_batch(&store, &mut j, 0..10);
        write_batch(&store, &mut j, 10..20);
        write_batch(&store, &mut j, 20..30);
        // Tear block 2 (position 2).
        let mut block = [0_u8; BLOCK_SIZE];
        store
            .read_at(REGION.pbn_of(SequenceNumber(2)).byte_offset(), &mut block)
            .unwrap();
        block[100] ^= 1;
        store
            .write_at(REGION.pbn_of(SequenceNumber(2)).byte_offset(), &block)
            .unwrap();
        let scanned = scan(&store, REGION, NONCE, Epoch(1), SequenceNumber(1)).unwrap();
        assert_eq!(scanned.end, SequenceNumber(2));
        assert_eq!(scanned.entries.len(), 10);
    }

    #[test]
    fn blocks_of_another_epoch_or_an_earlier_session_are_stale() {
        let store = MemoryStore::new(64 * 4096);
        let mut old = journal(1);
        write_batch(&store, &mut old, 0..5);
        let fresh = scan(&store, REGION, NONCE, Epoch(2), SequenceNumber(1)).unwrap();
        assert_eq!(fresh.entries.len(), 0);
        assert_eq!(fresh.stale_blocks, 1);
        let later = scan(&store, REGION, NONCE, Epoch(1), SequenceNumber(2)).unwrap();
        assert_eq!(later.entries.len(), 0);
        assert_eq!(later.end, SequenceNumber(2));
    }

    #[test]
    fn the_head_comes_from_the_newest_block_after_a_wrap() {
        let store = MemoryStore::new(64 * 4096);
        let mut j = journal(1);
        for round in 0..3 {
            write_batch(&store, &mut j, round * 10..round * 10 + 10);
        }
        j.checkpoint_done();
        for round in 3..9 {
            write_batch(&store, &mut j, round * 10..round * 10 + 10);
        }
        let scanned = scan(&store, REGION, NONCE, Epoch(1), SequenceNumber(1)).unwrap();
        assert_eq!(scanned.head, SequenceNumber(4));
        assert_eq!(scanned.end, SequenceNumber(10));
        assert_eq!(scanned.entries.entries().next().unwrap().1.lbn, Lbn(30));
        assert_eq!(scanned.entries.len(), 60);
    }

    #[test]
    fn a_single_flush_block_whose_data_landed_is_replayed() {
        let store = MemoryStore::new(2048 * 4096);
        let mut j = journal(1);
        write_batch(&store, &mut j, 0..10);
        write_batch_with(&store, &mut j, 10..20, true, |_| true);
        let scanned = scan(&store, REGION, NONCE, Epoch(1), SequenceNumber(1)).unwrap();
        assert_eq!(
            (scanned.end, scanned.entries.len()),
            (SequenceNumber(3), 20)
        );
        assert_eq!(scanned.unlanded_blocks, 0);
    }

    #[test]
    fn a_single_flush_block_missing_any_of_its_data_ends_the_log_before_it() {
        for missing in [10, 15, 19] {
            let store = MemoryStore::new(2048 * 4096);
            let mut j = journal(1);
            write_batch(&store, &mut j, 0..10);
            write_batch_with(&store, &mut j, 10..20, true, |lbn| lbn != missing);
            let scanned = scan(&store, REGION, NONCE, Epoch(1), SequenceNumber(1)).unwrap();
            assert_eq!(
                (scanned.end, scanned.entries.len()),
                (SequenceNumber(2), 10)
            );
            assert_eq!(scanned.unlanded_blocks, 1);
            assert_eq!(scanned.logical_blocks_used, Some(10), "counters of block 1");
        }
    }

    #[test]
    fn the_first_failing_block_of_a_batch_ends_the_log_with_everything_after_it() {
        let store = MemoryStore::new(2048 * 4096);
        let mut j = journal(1);
        // 200 entries: blocks 1 and 2, one batch; LBN 180's data (block 2) did not land.
        write_batch_with(&store, &mut j, 0..200, true, |lbn| lbn != 180);
        let scanned = scan(&store, REGION, NONCE, Epoch(1), SequenceNumber(1)).unwrap();
        assert_eq!(
            (scanned.end, scanned.entries.len()),
            (SequenceNumber(2), 167)
        );
        assert_eq!(scanned.unlanded_blocks, 1);
        // LBN 3's did not: both blocks go, and nothing is left.
        let store = MemoryStore::new(2048 * 4096);
        let mut j = journal(1);
        write_batch_with(&store, &mut j, 0..200, true, |lbn| lbn != 3);
        let scanned = scan(&store, REGION, NONCE, Epoch(1), SequenceNumber(1)).unwrap();
        assert_eq!((scanned.end, scanned.entries.len()), (SequenceNumber(1), 0));
        assert_eq!(scanned.unlanded_blocks, 2);
        assert_eq!(scanned.logical_blocks_used, Some(0));
    }

    #[test]
    fn a_dropped_block_at_the_head_takes_its_own_counters_back() {
        let store = MemoryStore::new(2048 * 4096);
        let mut j = journal(1);
        write_batch(&store, &mut j, 0..10);
        j.checkpoint_done();
        // Block 2 is the head; the counters before it (10 mapped) are in no replayed block.
        write_batch_with(&store, &mut j, 10..20, true, |lbn| lbn != 12);
        let scanned = scan(&store, REGION, NONCE, Epoch(1), SequenceNumber(1)).unwrap();
        assert_eq!(scanned.head, SequenceNumber(2));
        assert_eq!((scanned.end, scanned.entries.len()), (SequenceNumber(2), 0));
        assert_eq!(scanned.logical_blocks_used, Some(10));
        assert_eq!(scanned.block_map_data_blocks, Some(0));
    }

    #[test]
    fn blocks_older_than_the_durable_mark_are_not_read_back() {
        let store = MemoryStore::new(2048 * 4096);
        let mut j = journal(1);
        write_batch_with(&store, &mut j, 0..10, true, |_| true);
        // A later commit's block records block 1 as durable; block 1's data is then freed and
        // rewritten, which the check must not mistake for data that never landed.
        write_batch(&store, &mut j, 10..20);
        store
            .write_at(Pbn(1003).byte_offset(), &[0xee; BLOCK_SIZE])
            .unwrap();
        let scanned = scan(&store, REGION, NONCE, Epoch(1), SequenceNumber(1)).unwrap();
        assert_eq!(
            (scanned.end, scanned.entries.len()),
            (SequenceNumber(3), 20)
        );
        // Without the later block, block 1 is past the mark and its changed data ends the log.
        store
            .write_at(
                REGION.pbn_of(SequenceNumber(2)).byte_offset(),
                &[0; BLOCK_SIZE],
            )
            .unwrap();
        let scanned = scan(&store, REGION, NONCE, Epoch(1), SequenceNumber(1)).unwrap();
        assert_eq!((scanned.end, scanned.entries.len()), (SequenceNumber(1), 0));
    }

    /// The entries of blocks `head..end` decoded one block at a time, as the scan did before
    /// it packed them.
    fn decoded_run(
        store: &MemoryStore,
        region: JournalRegion,
        head: SequenceNumber,
        end: SequenceNumber,
    ) -> Vec<(JournalPoint, RecoveryJournalEntry)> {
        let mut out = Vec::new();
        let mut sequence = head;
        while sequence < end {
            let pbn = region.pbn_of(sequence);
            let mut block = [0_u8; BLOCK_SIZE];
            store.read_at(pbn.byte_offset(), &mut block).unwrap();
            let expected = Expected::new(NONCE, pbn);
            let decoded = RecoveryJournalBlock::decode_at(&block, expected, region, sequence);
            for (entry, e) in (0_u16..).zip(decoded.unwrap().entries) {
                out.push((JournalPoint { sequence, entry }, e));
            }
            sequence = sequence.next();
        }
        out
    }

    #[test]
    fn a_long_wrapped_torn_journal_scans_in_two_halves_as_in_one() {
        let region = JournalRegion {
            start: Pbn(3),
            blocks: 4 * SCAN_CHUNK_BLOCKS + 37,
        };
        assert!(region.blocks >= PARALLEL_SCAN_BLOCKS_MIN);
        let store = MemoryStore::new((region.blocks + 8) * 4096);
        let mut j = RecoveryJournal::new(
            region,
            NONCE,
            Epoch(1),
            SequenceNumber(1),
            SequenceNumber(1),
            0,
            0,
        );
        // About 1.6 laps in batches of 40 blocks, the head following each batch.
        let per_batch = 40 * 167;
        for round in 0..43 {
            write_batch(&store, &mut j, round * per_batch..(round + 1) * per_batch);
            j.checkpoint_done();
        }
        write_batch(&store, &mut j, 43 * per_batch..43 * per_batch + 9000);
        // Tear a block two from the end: the log ends before it.
        let torn = SequenceNumber(j.tail().0 - 2);
        let mut block = [0_u8; BLOCK_SIZE];
        let at = region.pbn_of(torn).byte_offset();
        store.read_at(at, &mut block).unwrap();
        block[3000] ^= 0x40;
        store.write_at(at, &block).unwrap();

        let halves = read_blocks(&store, region, NONCE).unwrap();
        let whole = read_range(&store, region, NONCE, 0..region.blocks).unwrap();
        assert_eq!(format!("{halves:?}"), format!("{whole:?}"));
        let scanned = scan(&store, region, NONCE, Epoch(1), SequenceNumber(1)).unwrap();
        assert_eq!(scanned.end, torn);
        assert_eq!(scanned.head, SequenceNumber(43 * 40 + 1));
        let expected = decoded_run(&store, region, scanned.head, scanned.end);
        assert!(expected.len() > 8000);
        assert_eq!(scanned.entries.len(), expected.len());
        assert!(scanned.entries.entries().eq(expected.iter().copied()));
    }
}
