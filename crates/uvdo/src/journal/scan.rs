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
//! | block at a position | decodes | epoch current | sequence >= session start | counts |
//! |---|---|---|---|---|
//! | torn, zero, foreign, misdirected | no | - | - | no: ends the run if reached |
//! | from before the last recovery | yes | no | - | no (stale) |
//! | from an earlier session | yes | yes | no | no (already applied) |
//! | written this session | yes | yes | yes | yes |

use uvdo_format::header::Expected;
use uvdo_format::recovery_journal::{
    Epoch, JournalRegion, RecoveryJournalBlock, RecoveryJournalEntry,
};
use uvdo_format::{BLOCK_SIZE, Block, JournalPoint, Nonce, SequenceNumber};
use uvdo_io::Storage;

use crate::error::VolumeError;

/// Blocks read per store request while scanning.
const SCAN_CHUNK_BLOCKS: u64 = 256;

/// What a scan found.
#[derive(Debug)]
pub(crate) struct ScannedJournal {
    /// The oldest block whose entries must be replayed.
    pub(crate) head: SequenceNumber,
    /// The sequence after the last replayable block: where the journal continues.
    pub(crate) end: SequenceNumber,
    /// The entries to replay, in journal order.
    pub(crate) entries: Vec<(JournalPoint, RecoveryJournalEntry)>,
    /// Counters as of the last replayable block, if any block was found.
    pub(crate) logical_blocks_used: Option<u64>,
    pub(crate) block_map_data_blocks: Option<u64>,
    /// Blocks that decoded but were ignored (stale epoch or earlier session).
    pub(crate) stale_blocks: u64,
}

/// Scans the journal of a volume opened at `session_start` in `epoch`.
pub(crate) fn scan(
    store: &dyn Storage,
    region: JournalRegion,
    nonce: Nonce,
    epoch: Epoch,
    session_start: SequenceNumber,
) -> Result<ScannedJournal, VolumeError> {
    let blocks = read_session_blocks(store, region, nonce, epoch, session_start)?;
    let stale_blocks = blocks.1;
    let mut found = blocks.0;
    let Some(newest) = found.iter().flatten().max_by_key(|b| b.sequence) else {
        return Ok(ScannedJournal {
            head: session_start,
            end: session_start,
            entries: Vec::new(),
            logical_blocks_used: None,
            block_map_data_blocks: None,
            stale_blocks,
        });
    };
    let head = newest
        .block_map_head
        .min(newest.slab_journal_head)
        .max(session_start);
    let newest_sequence = newest.sequence;
    let mut entries = Vec::new();
    let mut counters = None;
    let mut sequence = head;
    while sequence <= newest_sequence {
        let position = usize::try_from(sequence.0 % region.blocks).expect("region fits memory");
        let Some(block) = found[position].take().filter(|b| b.sequence == sequence) else {
            break;
        };
        for (index, entry) in block.entries.iter().enumerate() {
            let entry_index = u16::try_from(index).expect("below 167");
            entries.push((
                JournalPoint {
                    sequence,
                    entry: entry_index,
                },
                *entry,
            ));
        }
        counters = Some((block.logical_blocks_used.0, block.block_map_data_blocks.0));
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
    Ok(ScannedJournal {
        head,
        end: sequence,
        entries,
        logical_blocks_used: counters.map(|c| c.0),
        block_map_data_blocks: counters.map(|c| c.1),
        stale_blocks,
    })
}

/// Every block of this session and epoch, by position; and the count of stale ones.
fn read_session_blocks(
    store: &dyn Storage,
    region: JournalRegion,
    nonce: Nonce,
    epoch: Epoch,
    session_start: SequenceNumber,
) -> Result<(Vec<Option<RecoveryJournalBlock>>, u64), VolumeError> {
    let mut found = Vec::with_capacity(usize::try_from(region.blocks).expect("fits memory"));
    let mut stale = 0;
    let mut buffer = vec![0_u8; usize::try_from(SCAN_CHUNK_BLOCKS).expect("small") * BLOCK_SIZE];
    let mut position = 0;
    while position < region.blocks {
        let count = SCAN_CHUNK_BLOCKS.min(region.blocks - position);
        let bytes = &mut buffer[..usize::try_from(count).expect("small") * BLOCK_SIZE];
        store.read_at(region.start.offset(position).byte_offset(), bytes)?;
        for (i, chunk) in bytes.chunks_exact(BLOCK_SIZE).enumerate() {
            let pbn = region.start.offset(position + i as u64);
            let block: &Block = chunk.try_into().expect("a whole block");
            let decoded = RecoveryJournalBlock::decode(block, Expected::new(nonce, pbn), region);
            found.push(match decoded {
                Ok(b) if b.epoch == epoch && b.sequence >= session_start => Some(b),
                Ok(_) => {
                    stale += 1;
                    None
                }
                Err(_) => None,
            });
        }
        position += count;
    }
    Ok((found, stale))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::journal::{RecoveryJournal, remap_entry};
    use uvdo_format::{Lbn, Mapping, Pbn};
    use uvdo_io::memory::MemoryStore;

    const NONCE: Nonce = Nonce(0xabc);
    const REGION: JournalRegion = JournalRegion {
        start: Pbn(3),
        blocks: 8,
    };

    fn write_batch(store: &MemoryStore, journal: &mut RecoveryJournal, lbns: std::ops::Range<u64>) {
        for lbn in lbns {
            journal.append(remap_entry(
                Lbn(lbn),
                Pbn(500),
                u16::try_from(lbn % 812).unwrap(),
                Mapping::Data(Pbn(1000 + lbn)),
                Mapping::Unmapped,
            ));
        }
        let batch = journal.take_commit_batch().unwrap();
        for (pbn, block) in &batch.blocks {
            store.write_at(pbn.byte_offset(), block).unwrap();
        }
        journal.mark_durable(&batch);
    }

    fn journal(start: u64) -> RecoveryJournal {
        let s = SequenceNumber(start);
        RecoveryJournal::new(REGION, NONCE, Epoch(1), s, s, 0, 0)
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
        let lbns: Vec<u64> = scanned.entries.iter().map(|(_, e)| e.lbn.0).collect();
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
        assert!(fresh.entries.is_empty());
        assert_eq!(fresh.stale_blocks, 1);
        let later = scan(&store, REGION, NONCE, Epoch(1), SequenceNumber(2)).unwrap();
        assert!(later.entries.is_empty());
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
        assert_eq!(scanned.entries.first().unwrap().1.lbn, Lbn(30));
        assert_eq!(scanned.entries.len(), 60);
    }
}
