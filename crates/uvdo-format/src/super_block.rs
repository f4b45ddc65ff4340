//! The super block: the volume's mutable state, in twin slots at PBN 1 (A) and 2 (B).
//!
//! Rewritten at every state change (open, clean close, recovery steps, read-only entry, grow).
//! Header: type 2, location 1 or 2, sequence = the write's generation (see `twin.rs`).
//!
//! ```text
//! offset size field
//!      0   32 common header (sequence = generation)
//!     32    1 state                   1 clean, 2 dirty, 3 replaying, 4 recovering
//!     33    1 mode                    1 normal, 2 recovering, 3 read-only
//!     34    1 force_rebuild_requested 0 or 1
//!     35    1 write_policy            1 sync, 2 async, 3 async-unsafe, 4 auto
//!     36    1 compression_enabled     0 or 1
//!     37    1 deduplication_enabled   0 or 1
//!     38    1 index_saved             0 or 1
//!     39    1 has_read_only_reason    0 or 1
//!     40    1 has_owner               0 or 1
//!     41    7 reserved (zero)
//!     48    8 logical_blocks          1..=2^40
//!     56    8 physical_blocks         1..=2^36
//!     64    4 slab_count              1..=8192
//!     68    4 block_map_cache_pages   2..=2^24
//!     72    8 journal_head            oldest recovery journal block still needed
//!     80    8 journal_tail            next recovery journal block to write (>= head)
//!     88    8 logical_blocks_used     <= logical_blocks
//!     96    8 block_map_data_blocks   <= physical_blocks
//!    104    8 epoch                   bumped by every completed recovery
//!    112    8 complete_recoveries
//!    120    8 read_only_recoveries
//!    128    8 index_generation
//!    136      read-only reason (all zero when has_read_only_reason is 0):
//!    136    4   error_code
//!    140    4   errno
//!    144    8   time_s                unix seconds
//!    152    8   location              PBN, < 2^36
//!    160    1   structure             BlockType code, 0 for none
//!    161    1   message_len           <= 160
//!    162  160   message               UTF-8; bytes past message_len zero
//!    322    6 reserved (zero)
//!    328      owner (all zero when has_owner is 0):
//!    328    4   pid
//!    332    4   reserved (zero)
//!    336    8   since_s               unix seconds
//!    344    1   host_len              <= 64
//!    345   64   host                  UTF-8; bytes past host_len zero
//!    409 3687 reserved (zero)
//! ```
//!
//! # Detection
//!
//! A torn write fails the CRC; it can only hit the slot being written, which held the older
//! copy, so [`SuperBlock::read_twins`] falls back to the other slot and loses nothing durable.
//! A stale slot (a lost write) carries a lower generation and loses to the newer one. A
//! misdirected block fails the location check (a block for slot A read at slot B too), a
//! foreign one the nonce check. Every enum, bool, count, string and reserved byte is checked,
//! so a block that passes the CRC but was built from a bad value is still refused.

use std::fmt;
use std::str::FromStr;

use crate::block::{BLOCK_SIZE, Block};
use crate::error::{FormatError, Problem};
use crate::header::{self, BlockHeader, BlockType, Expected, HEADER_SIZE};
use crate::layout::{LOGICAL_BLOCKS_MAX, PHYSICAL_BLOCKS_MAX, SLAB_COUNT_MAX, SUPER_BLOCK_BASE};
use crate::le::{get_u8, get_u32, get_u64, put_u8, put_u32, put_u64};
use crate::mapping::PBN_MAX;
use crate::numbers::{BlockCount, Nonce, Pbn, SequenceNumber};
use crate::twin::{self, TwinSlot};

/// Layout version of the super block.
pub const VERSION: u8 = 1;
/// Longest read-only message, in bytes.
pub const MESSAGE_BYTES_MAX: usize = 160;
/// Longest owner host name, in bytes.
pub const HOST_BYTES_MAX: usize = 64;
/// Fewest block map cache pages (tests use 2 to force eviction).
pub const BLOCK_MAP_CACHE_PAGES_MIN: u32 = 2;
/// Most block map cache pages: 2^24 (64 GiB).
pub const BLOCK_MAP_CACHE_PAGES_MAX: u32 = 1 << 24;
/// Default block map cache: 32768 pages (128 MiB).
pub const BLOCK_MAP_CACHE_PAGES_DEFAULT: u32 = 32768;

const STATE_OFFSET: usize = HEADER_SIZE;
const MODE_OFFSET: usize = 33;
const FORCE_REBUILD_OFFSET: usize = 34;
const POLICY_OFFSET: usize = 35;
const COMPRESSION_OFFSET: usize = 36;
const DEDUPLICATION_OFFSET: usize = 37;
const INDEX_SAVED_OFFSET: usize = 38;
const HAS_REASON_OFFSET: usize = 39;
const HAS_OWNER_OFFSET: usize = 40;
const FLAGS_RESERVED_OFFSET: usize = 41;
const LOGICAL_BLOCKS_OFFSET: usize = 48;
const PHYSICAL_BLOCKS_OFFSET: usize = 56;
const SLAB_COUNT_OFFSET: usize = 64;
const CACHE_PAGES_OFFSET: usize = 68;
const JOURNAL_HEAD_OFFSET: usize = 72;
const JOURNAL_TAIL_OFFSET: usize = 80;
const LOGICAL_USED_OFFSET: usize = 88;
const BLOCK_MAP_DATA_OFFSET: usize = 96;
const EPOCH_OFFSET: usize = 104;
const COMPLETE_RECOVERIES_OFFSET: usize = 112;
const READ_ONLY_RECOVERIES_OFFSET: usize = 120;
const INDEX_GENERATION_OFFSET: usize = 128;
const REASON_OFFSET: usize = 136;
const REASON_CODE_AT: usize = 0;
const REASON_ERRNO_AT: usize = 4;
const REASON_TIME_AT: usize = 8;
const REASON_LOCATION_AT: usize = 16;
const REASON_STRUCTURE_AT: usize = 24;
const REASON_LEN_AT: usize = 25;
const REASON_MESSAGE_AT: usize = 26;
const REASON_RESERVED_OFFSET: usize = REASON_OFFSET + REASON_MESSAGE_AT + MESSAGE_BYTES_MAX;
const OWNER_OFFSET: usize = 328;
const OWNER_PID_AT: usize = 0;
const OWNER_RESERVED_AT: usize = 4;
const OWNER_SINCE_AT: usize = 8;
const OWNER_LEN_AT: usize = 16;
const OWNER_HOST_AT: usize = 17;
const OWNER_END: usize = OWNER_OFFSET + OWNER_HOST_AT + HOST_BYTES_MAX;

const _: () = assert!(FLAGS_RESERVED_OFFSET + 7 == LOGICAL_BLOCKS_OFFSET);
const _: () = assert!(INDEX_GENERATION_OFFSET + 8 == REASON_OFFSET);
const _: () = assert!(REASON_RESERVED_OFFSET == 322 && REASON_RESERVED_OFFSET + 6 == OWNER_OFFSET);
const _: () = assert!(OWNER_END == 409 && OWNER_END <= BLOCK_SIZE);
// Text lengths are stored in one byte.
const _: () = assert!(MESSAGE_BYTES_MAX <= u8::MAX as usize);
const _: () = assert!(HOST_BYTES_MAX <= u8::MAX as usize);

macro_rules! coded_enum {
    ($(#[$doc:meta])* $name:ident, $field:literal, $range:literal,
     { $($(#[$vdoc:meta])* $variant:ident = $code:literal => $text:literal),+ $(,)? }) => {
        $(#[$doc])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        #[repr(u8)]
        pub enum $name {
            $($(#[$vdoc])* $variant = $code),+
        }

        impl $name {
            /// Every value, in code order.
            pub const ALL: &'static [Self] = &[$(Self::$variant),+];

            /// The name uvdo prints, as VDO does.
            #[must_use]
            pub fn name(self) -> &'static str {
                match self {
                    $(Self::$variant => $text),+
                }
            }

            fn decode(code: u8) -> Result<Self, Problem> {
                Self::ALL.iter().copied().find(|v| *v as u8 == code).ok_or(
                    Problem::InvalidField { field: $field, expected: $range, found: code.into() },
                )
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.name())
            }
        }
    };
}

coded_enum!(
    /// Whether the volume was closed cleanly, and how far recovery got.
    VolumeState, "state", "1..=4", {
        /// Closed cleanly: every structure is saved.
        Clean = 1 => "clean",
        /// Opened and not cleanly closed.
        Dirty = 2 => "dirty",
        /// Recovery journal replay in progress.
        Replaying = 3 => "replaying",
        /// Replay done; slab reference counts still being rebuilt.
        Recovering = 4 => "recovering",
    }
);

coded_enum!(
    /// The operating mode (SPEC.md section 5).
    OperatingMode, "mode", "1..=3", {
        /// Everything works.
        Normal = 1 => "normal",
        /// Reference counts of dirty slabs are being rebuilt.
        Recovering = 2 => "recovering",
        /// Reads only, until a forced rebuild.
        ReadOnly = 3 => "read-only",
    }
);

coded_enum!(
    /// When writes are acknowledged (SPEC.md section 4).
    WritePolicy, "write_policy", "1..=4", {
        /// Every write is durable before it is acknowledged.
        Sync = 1 => "sync",
        /// Writes are durable after the next flush.
        Async = 2 => "async",
        /// As async, without the guarantees a flush gives.
        AsyncUnsafe = 3 => "async-unsafe",
        /// Sync when the device has no volatile cache, async otherwise.
        Auto = 4 => "auto",
    }
);

/// A write policy name that is not one of "sync", "async", "async-unsafe", "auto".
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("unknown write policy {found:?}: expected sync, async, async-unsafe or auto")]
pub struct ParseWritePolicyError {
    /// The text given.
    pub found: String,
}

impl FromStr for WritePolicy {
    type Err = ParseWritePolicyError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .iter()
            .copied()
            .find(|p| p.name() == s)
            .ok_or_else(|| ParseWritePolicyError {
                found: s.to_owned(),
            })
    }
}

/// Why the volume entered read-only mode, persisted so it survives restarts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReadOnlyReason {
    /// The engine's error code.
    pub error_code: u32,
    /// The errno it maps to.
    pub errno: u32,
    /// When, in unix seconds.
    pub time_s: u64,
    /// The structure involved, if any.
    pub structure: Option<BlockType>,
    /// The block involved (0 when none).
    pub location: Pbn,
    /// A description, at most [`MESSAGE_BYTES_MAX`] bytes of UTF-8.
    pub message: String,
}

/// The process holding the volume exclusively.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Owner {
    /// Its process id.
    pub pid: u32,
    /// When it attached, in unix seconds.
    pub since_s: u64,
    /// Its host name, at most [`HOST_BYTES_MAX`] bytes of UTF-8.
    pub host: String,
}

/// The recovery journal's saved state.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct JournalState {
    /// Oldest journal block whose changes may not be in the block map and slabs yet.
    pub head: SequenceNumber,
    /// Next journal block to write; `head <= tail`.
    pub tail: SequenceNumber,
    /// Logical blocks mapped (the used count vdostats reports).
    pub logical_blocks_used: BlockCount,
    /// Blocks holding block map tree pages.
    pub block_map_data_blocks: BlockCount,
    /// Recovery count, bumped by every completed recovery.
    pub epoch: u64,
}

/// The decoded super block.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SuperBlock {
    /// The volume's nonce.
    pub nonce: Nonce,
    /// The twin slot this copy is (to be) written in.
    pub slot: TwinSlot,
    /// This copy's generation (the header's sequence).
    pub generation: SequenceNumber,
    /// Clean, dirty or how far recovery got.
    pub state: VolumeState,
    /// The operating mode.
    pub mode: OperatingMode,
    /// The next start rebuilds every reference count from the block map.
    pub force_rebuild_requested: bool,
    /// The write policy.
    pub write_policy: WritePolicy,
    /// Compression is on.
    pub compression_enabled: bool,
    /// Deduplication is on.
    pub deduplication_enabled: bool,
    /// Logical size, in blocks.
    pub logical_blocks: BlockCount,
    /// Physical size in use, in blocks.
    pub physical_blocks: BlockCount,
    /// Slabs in the depot.
    pub slab_count: u32,
    /// Block map cache size, in pages.
    pub block_map_cache_pages: u32,
    /// The recovery journal's state.
    pub journal: JournalState,
    /// Recoveries completed after an unclean stop.
    pub complete_recoveries: u64,
    /// Forced rebuilds out of read-only mode.
    pub read_only_recoveries: u64,
    /// Why the volume is (or last was) read-only; present whenever the mode is read-only.
    pub read_only_reason: Option<ReadOnlyReason>,
    /// The dedupe index was saved at the last clean stop.
    pub index_saved: bool,
    /// Generation of the saved index image.
    pub index_generation: u64,
    /// The process attached exclusively, if any.
    pub owner: Option<Owner>,
}

/// The longest prefix of `text` of at most `max_bytes` bytes that ends on a char boundary.
#[must_use]
pub fn truncated(text: &str, max_bytes: usize) -> &str {
    let mut end = text.len().min(max_bytes);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

impl SuperBlock {
    /// Checks the invariants `decode` checks; encoding a value that breaks them is a bug.
    fn assert_valid(&self) {
        assert!((1..=LOGICAL_BLOCKS_MAX).contains(&self.logical_blocks.0));
        assert!((1..=PHYSICAL_BLOCKS_MAX).contains(&self.physical_blocks.0));
        assert!((1..=SLAB_COUNT_MAX).contains(&u64::from(self.slab_count)));
        let pages = BLOCK_MAP_CACHE_PAGES_MIN..=BLOCK_MAP_CACHE_PAGES_MAX;
        assert!(pages.contains(&self.block_map_cache_pages));
        assert!(self.journal.head <= self.journal.tail);
        assert!(self.journal.logical_blocks_used <= self.logical_blocks);
        assert!(self.journal.block_map_data_blocks <= self.physical_blocks);
        assert!(self.mode != OperatingMode::ReadOnly || self.read_only_reason.is_some());
        if let Some(reason) = &self.read_only_reason {
            assert!(reason.location.0 <= PBN_MAX);
            assert!(reason.message.len() <= MESSAGE_BYTES_MAX);
        }
        if let Some(owner) = &self.owner {
            assert!(owner.host.len() <= HOST_BYTES_MAX);
        }
    }

    /// Writes this copy into `out` (every byte), sealed for its slot.
    ///
    /// # Panics
    ///
    /// If a field breaks a rule `decode` checks (an engine bug).
    pub fn encode(&self, out: &mut Block) {
        self.assert_valid();
        out.fill(0);
        put_u8(out, STATE_OFFSET, self.state as u8);
        put_u8(out, MODE_OFFSET, self.mode as u8);
        put_u8(
            out,
            FORCE_REBUILD_OFFSET,
            u8::from(self.force_rebuild_requested),
        );
        put_u8(out, POLICY_OFFSET, self.write_policy as u8);
        put_u8(out, COMPRESSION_OFFSET, u8::from(self.compression_enabled));
        put_u8(
            out,
            DEDUPLICATION_OFFSET,
            u8::from(self.deduplication_enabled),
        );
        put_u8(out, INDEX_SAVED_OFFSET, u8::from(self.index_saved));
        put_u8(
            out,
            HAS_REASON_OFFSET,
            u8::from(self.read_only_reason.is_some()),
        );
        put_u8(out, HAS_OWNER_OFFSET, u8::from(self.owner.is_some()));
        put_u64(out, LOGICAL_BLOCKS_OFFSET, self.logical_blocks.0);
        put_u64(out, PHYSICAL_BLOCKS_OFFSET, self.physical_blocks.0);
        put_u32(out, SLAB_COUNT_OFFSET, self.slab_count);
        put_u32(out, CACHE_PAGES_OFFSET, self.block_map_cache_pages);
        put_u64(out, JOURNAL_HEAD_OFFSET, self.journal.head.0);
        put_u64(out, JOURNAL_TAIL_OFFSET, self.journal.tail.0);
        put_u64(out, LOGICAL_USED_OFFSET, self.journal.logical_blocks_used.0);
        put_u64(
            out,
            BLOCK_MAP_DATA_OFFSET,
            self.journal.block_map_data_blocks.0,
        );
        put_u64(out, EPOCH_OFFSET, self.journal.epoch);
        put_u64(out, COMPLETE_RECOVERIES_OFFSET, self.complete_recoveries);
        put_u64(out, READ_ONLY_RECOVERIES_OFFSET, self.read_only_recoveries);
        put_u64(out, INDEX_GENERATION_OFFSET, self.index_generation);
        if let Some(reason) = &self.read_only_reason {
            encode_reason(out, reason);
        }
        if let Some(owner) = &self.owner {
            encode_owner(out, owner);
        }
        let header = BlockHeader {
            block_type: BlockType::SuperBlock,
            version: VERSION,
            nonce: self.nonce,
            location: self.slot.pbn(SUPER_BLOCK_BASE),
            sequence: self.generation,
        };
        header::seal(out, &header);
    }

    /// Decodes the copy read from `expected.pbn` (1 for slot A, 2 for slot B).
    ///
    /// # Errors
    ///
    /// The first check that fails (header, then every field).
    pub fn decode(block: &Block, expected: Expected) -> Result<Self, FormatError> {
        let header = header::open(block, BlockType::SuperBlock, VERSION, expected)?;
        let fail = |problem| FormatError::new(BlockType::SuperBlock, expected.pbn, problem);
        let slot = [TwinSlot::A, TwinSlot::B]
            .into_iter()
            .find(|s| s.pbn(SUPER_BLOCK_BASE) == expected.pbn)
            .ok_or(fail(invalid("location", "PBN 1 or 2", expected.pbn.0)))?;
        let value = decode_payload(block, header.nonce, slot, header.sequence).map_err(fail)?;
        value.assert_valid();
        Ok(value)
    }

    /// Reads both copies and keeps the newest valid one (see `twin.rs`).
    ///
    /// # Errors
    ///
    /// When neither copy is valid; `Unwritten` only when both are unwritten.
    pub fn read_twins(
        a: &Block,
        b: &Block,
        nonce: Nonce,
    ) -> Result<twin::Chosen<SuperBlock>, FormatError> {
        let read = |block, slot: TwinSlot| {
            let expected = Expected::new(nonce, slot.pbn(SUPER_BLOCK_BASE));
            Self::decode(block, expected).map(|s| {
                let generation = s.generation;
                (s, generation)
            })
        };
        twin::choose(read(a, TwinSlot::A), read(b, TwinSlot::B))
    }
}

fn invalid(field: &'static str, expected: &'static str, found: u64) -> Problem {
    Problem::InvalidField {
        field,
        expected,
        found,
    }
}

fn get_bool(block: &Block, offset: usize, field: &'static str) -> Result<bool, Problem> {
    match get_u8(block, offset) {
        0 => Ok(false),
        1 => Ok(true),
        other => Err(invalid(field, "0 or 1", u64::from(other))),
    }
}

fn check_zero(block: &Block, range: std::ops::Range<usize>) -> Result<(), Problem> {
    crate::reserved::require_zero(&block[range], "reserved bytes")
}

fn check_range(
    field: &'static str,
    expected: &'static str,
    found: u64,
    min: u64,
    max: u64,
) -> Result<(), Problem> {
    if (min..=max).contains(&found) {
        Ok(())
    } else {
        Err(invalid(field, expected, found))
    }
}

fn decode_payload(
    block: &Block,
    nonce: Nonce,
    slot: TwinSlot,
    generation: SequenceNumber,
) -> Result<SuperBlock, Problem> {
    let state = VolumeState::decode(get_u8(block, STATE_OFFSET))?;
    let mode = OperatingMode::decode(get_u8(block, MODE_OFFSET))?;
    let force_field = "force_rebuild_requested";
    let force_rebuild_requested = get_bool(block, FORCE_REBUILD_OFFSET, force_field)?;
    let write_policy = WritePolicy::decode(get_u8(block, POLICY_OFFSET))?;
    let compression_enabled = get_bool(block, COMPRESSION_OFFSET, "compression_enabled")?;
    let deduplication_enabled = get_bool(block, DEDUPLICATION_OFFSET, "deduplication_enabled")?;
    let index_saved = get_bool(block, INDEX_SAVED_OFFSET, "index_saved")?;
    let has_reason = get_bool(block, HAS_REASON_OFFSET, "has_read_only_reason")?;
    let has_owner = get_bool(block, HAS_OWNER_OFFSET, "has_owner")?;
    check_zero(block, FLAGS_RESERVED_OFFSET..LOGICAL_BLOCKS_OFFSET)?;
    check_zero(block, REASON_RESERVED_OFFSET..OWNER_OFFSET)?;
    check_zero(block, OWNER_END..BLOCK_SIZE)?;

    let logical_blocks = get_u64(block, LOGICAL_BLOCKS_OFFSET);
    check_range(
        "logical_blocks",
        "1..=2^40",
        logical_blocks,
        1,
        LOGICAL_BLOCKS_MAX,
    )?;
    let physical_blocks = get_u64(block, PHYSICAL_BLOCKS_OFFSET);
    check_range(
        "physical_blocks",
        "1..=2^36",
        physical_blocks,
        1,
        PHYSICAL_BLOCKS_MAX,
    )?;
    let slab_count = get_u32(block, SLAB_COUNT_OFFSET);
    check_range(
        "slab_count",
        "1..=8192",
        slab_count.into(),
        1,
        SLAB_COUNT_MAX,
    )?;
    let cache_pages = get_u32(block, CACHE_PAGES_OFFSET);
    let (min, max) = (BLOCK_MAP_CACHE_PAGES_MIN, BLOCK_MAP_CACHE_PAGES_MAX);
    check_range(
        "block_map_cache_pages",
        "2..=2^24",
        cache_pages.into(),
        min.into(),
        max.into(),
    )?;
    let journal = decode_journal(block, logical_blocks, physical_blocks)?;

    let read_only_reason = if has_reason {
        Some(decode_reason(block)?)
    } else {
        check_zero(block, REASON_OFFSET..REASON_RESERVED_OFFSET)?;
        None
    };
    if mode == OperatingMode::ReadOnly && read_only_reason.is_none() {
        return Err(invalid("has_read_only_reason", "1 in read-only mode", 0));
    }
    let owner = if has_owner {
        Some(decode_owner(block)?)
    } else {
        check_zero(block, OWNER_OFFSET..OWNER_END)?;
        None
    };
    Ok(SuperBlock {
        nonce,
        slot,
        generation,
        state,
        mode,
        force_rebuild_requested,
        write_policy,
        compression_enabled,
        deduplication_enabled,
        logical_blocks: BlockCount(logical_blocks),
        physical_blocks: BlockCount(physical_blocks),
        slab_count,
        block_map_cache_pages: cache_pages,
        journal,
        complete_recoveries: get_u64(block, COMPLETE_RECOVERIES_OFFSET),
        read_only_recoveries: get_u64(block, READ_ONLY_RECOVERIES_OFFSET),
        read_only_reason,
        index_saved,
        index_generation: get_u64(block, INDEX_GENERATION_OFFSET),
        owner,
    })
}

fn decode_journal(block: &Block, logical: u64, physical: u64) -> Result<JournalState, Problem> {
    let head = get_u64(block, JOURNAL_HEAD_OFFSET);
    let tail = get_u64(block, JOURNAL_TAIL_OFFSET);
    if head > tail {
        return Err(invalid("journal_head", "at most journal_tail", head));
    }
    let used = get_u64(block, LOGICAL_USED_OFFSET);
    check_range(
        "logical_blocks_used",
        "at most logical_blocks",
        used,
        0,
        logical,
    )?;
    let map_blocks = get_u64(block, BLOCK_MAP_DATA_OFFSET);
    let expected = "at most physical_blocks";
    check_range("block_map_data_blocks", expected, map_blocks, 0, physical)?;
    Ok(JournalState {
        head: SequenceNumber(head),
        tail: SequenceNumber(tail),
        logical_blocks_used: BlockCount(used),
        block_map_data_blocks: BlockCount(map_blocks),
        epoch: get_u64(block, EPOCH_OFFSET),
    })
}

/// Writes `text` as a u8 length at `len_at` followed by its bytes.
fn encode_text(out: &mut Block, len_at: usize, text: &str) {
    let len = u8::try_from(text.len()).expect("checked against the field's maximum");
    put_u8(out, len_at, len);
    out[len_at + 1..len_at + 1 + text.len()].copy_from_slice(text.as_bytes());
}

/// Reads a u8 length at `len_at` and that many UTF-8 bytes; the rest of the field is zero.
fn decode_text(
    block: &Block,
    len_at: usize,
    max: usize,
    field: &'static str,
) -> Result<String, Problem> {
    let len_code = get_u8(block, len_at);
    let len = usize::from(len_code);
    if len > max {
        return Err(invalid(
            field,
            "length within the field",
            u64::from(len_code),
        ));
    }
    let start = len_at + 1;
    check_zero(block, start + len..start + max)?;
    match std::str::from_utf8(&block[start..start + len]) {
        Ok(text) => Ok(text.to_owned()),
        Err(e) => {
            let at = u64::try_from(e.valid_up_to()).unwrap_or(u64::MAX);
            Err(invalid(
                field,
                "UTF-8 (found: offset of the first bad byte)",
                at,
            ))
        }
    }
}

fn encode_reason(out: &mut Block, reason: &ReadOnlyReason) {
    put_u32(out, REASON_OFFSET + REASON_CODE_AT, reason.error_code);
    put_u32(out, REASON_OFFSET + REASON_ERRNO_AT, reason.errno);
    put_u64(out, REASON_OFFSET + REASON_TIME_AT, reason.time_s);
    put_u64(out, REASON_OFFSET + REASON_LOCATION_AT, reason.location.0);
    let code = reason.structure.map_or(0, |t| t as u8);
    put_u8(out, REASON_OFFSET + REASON_STRUCTURE_AT, code);
    encode_text(out, REASON_OFFSET + REASON_LEN_AT, &reason.message);
}

fn decode_reason(block: &Block) -> Result<ReadOnlyReason, Problem> {
    let location = get_u64(block, REASON_OFFSET + REASON_LOCATION_AT);
    check_range(
        "read_only_location",
        "a PBN below 2^36",
        location,
        0,
        PBN_MAX,
    )?;
    let code = get_u8(block, REASON_OFFSET + REASON_STRUCTURE_AT);
    let structure = match code {
        0 => None,
        _ => Some(BlockType::from_code(code).ok_or(invalid(
            "read_only_structure",
            "0..=8",
            u64::from(code),
        ))?),
    };
    let len_at = REASON_OFFSET + REASON_LEN_AT;
    let message = decode_text(block, len_at, MESSAGE_BYTES_MAX, "read_only_message")?;
    Ok(ReadOnlyReason {
        error_code: get_u32(block, REASON_OFFSET + REASON_CODE_AT),
        errno: get_u32(block, REASON_OFFSET + REASON_ERRNO_AT),
        time_s: get_u64(block, REASON_OFFSET + REASON_TIME_AT),
        structure,
        location: Pbn(location),
        message,
    })
}

fn encode_owner(out: &mut Block, owner: &Owner) {
    put_u32(out, OWNER_OFFSET + OWNER_PID_AT, owner.pid);
    put_u64(out, OWNER_OFFSET + OWNER_SINCE_AT, owner.since_s);
    encode_text(out, OWNER_OFFSET + OWNER_LEN_AT, &owner.host);
}

fn decode_owner(block: &Block) -> Result<Owner, Problem> {
    let reserved = OWNER_OFFSET + OWNER_RESERVED_AT;
    check_zero(block, reserved..reserved + 4)?;
    let host = decode_text(
        block,
        OWNER_OFFSET + OWNER_LEN_AT,
        HOST_BYTES_MAX,
        "owner_host",
    )?;
    Ok(Owner {
        pid: get_u32(block, OWNER_OFFSET + OWNER_PID_AT),
        since_s: get_u64(block, OWNER_OFFSET + OWNER_SINCE_AT),
        host,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::damage::{assert_detects_damage, reseal, torn};
    use proptest::prelude::*;

    const NONCE: Nonce = Nonce(0x0123_4567_89ab_cdef);

    fn sample(slot: TwinSlot, generation: u64) -> SuperBlock {
        SuperBlock {
            nonce: NONCE,
            slot,
            generation: SequenceNumber(generation),
            state: VolumeState::Dirty,
            mode: OperatingMode::ReadOnly,
            force_rebuild_requested: false,
            write_policy: WritePolicy::Auto,
            compression_enabled: true,
            deduplication_enabled: true,
            logical_blocks: BlockCount(1 << 30),
            physical_blocks: BlockCount(1 << 28),
            slab_count: 511,
            block_map_cache_pages: BLOCK_MAP_CACHE_PAGES_DEFAULT,
            journal: JournalState {
                head: SequenceNumber(100),
                tail: SequenceNumber(140 + generation),
                logical_blocks_used: BlockCount(5000),
                block_map_data_blocks: BlockCount(12),
                epoch: 3,
            },
            complete_recoveries: 2,
            read_only_recoveries: 1,
            read_only_reason: Some(ReadOnlyReason {
                error_code: 7,
                errno: 5,
                time_s: 1_700_000_000,
                structure: Some(BlockType::RefCounts),
                location: Pbn(123_456),
                message: "reference count block failed its checksum: ü".to_owned(),
            }),
            index_saved: true,
            index_generation: 9,
            owner: Some(Owner {
                pid: 4242,
                since_s: 1_700_000_100,
                host: "storage-01.example".to_owned(),
            }),
        }
    }

    fn encoded(sb: &SuperBlock) -> Block {
        let mut block = [0x3c_u8; BLOCK_SIZE];
        sb.encode(&mut block);
        block
    }

    fn expected(slot: TwinSlot) -> Expected {
        Expected::new(NONCE, slot.pbn(SUPER_BLOCK_BASE))
    }

    fn any_text(max: usize) -> impl Strategy<Value = String> {
        ".{0,80}".prop_map(move |s: String| truncated(&s, max).to_owned())
    }

    fn any_reason() -> impl Strategy<Value = ReadOnlyReason> {
        (
            any::<(u32, u32, u64)>(),
            prop::option::of(prop::sample::select(BlockType::ALL.to_vec())),
            0..=PBN_MAX,
            any_text(MESSAGE_BYTES_MAX),
        )
            .prop_map(|((error_code, errno, time_s), structure, pbn, message)| {
                ReadOnlyReason {
                    error_code,
                    errno,
                    time_s,
                    structure,
                    location: Pbn(pbn),
                    message,
                }
            })
    }

    fn any_owner() -> impl Strategy<Value = Owner> {
        (any::<u32>(), any::<u64>(), any_text(HOST_BYTES_MAX))
            .prop_map(|(pid, since_s, host)| Owner { pid, since_s, host })
    }

    fn any_journal() -> impl Strategy<Value = (JournalState, u64, u64)> {
        (
            any::<u64>(),
            any::<u64>(),
            1..=LOGICAL_BLOCKS_MAX,
            1..=PHYSICAL_BLOCKS_MAX,
            any::<(u64, u64, u64)>(),
        )
            .prop_map(|(a, b, logical, physical, (used, map, epoch))| {
                let journal = JournalState {
                    head: SequenceNumber(a.min(b)),
                    tail: SequenceNumber(a.max(b)),
                    logical_blocks_used: BlockCount(used % (logical + 1)),
                    block_map_data_blocks: BlockCount(map % (physical + 1)),
                    epoch,
                };
                (journal, logical, physical)
            })
    }

    fn any_super_block() -> impl Strategy<Value = SuperBlock> {
        let enums = (
            prop::sample::select(VolumeState::ALL),
            prop::sample::select(OperatingMode::ALL),
            prop::sample::select(WritePolicy::ALL),
            any::<[bool; 4]>(),
        );
        let counts = (
            any::<(u64, u64, u64, u64)>(),
            any_journal(),
            1..=8192_u32,
            BLOCK_MAP_CACHE_PAGES_MIN..=BLOCK_MAP_CACHE_PAGES_MAX,
        );
        let options = (
            prop::option::of(any_reason()),
            any_reason(),
            prop::option::of(any_owner()),
            any::<bool>(),
        );
        (enums, counts, options).prop_map(|(e, c, o)| {
            let (state, mode, write_policy, flags) = e;
            let ((nonce, generation, recoveries, index_generation), journal, slabs, pages) = c;
            let (journal, logical, physical) = journal;
            let (reason, fallback, owner, slot_b) = o;
            let read_only_reason = match mode {
                OperatingMode::ReadOnly => Some(reason.unwrap_or(fallback)),
                _ => reason,
            };
            SuperBlock {
                nonce: Nonce(nonce),
                slot: if slot_b { TwinSlot::B } else { TwinSlot::A },
                generation: SequenceNumber(generation),
                state,
                mode,
                force_rebuild_requested: flags[0],
                write_policy,
                compression_enabled: flags[1],
                deduplication_enabled: flags[2],
                logical_blocks: BlockCount(logical),
                physical_blocks: BlockCount(physical),
                slab_count: slabs,
                block_map_cache_pages: pages,
                journal,
                complete_recoveries: recoveries,
                read_only_recoveries: recoveries / 3,
                read_only_reason,
                index_saved: flags[3],
                index_generation,
                owner,
            }
        })
    }

    proptest! {
        #[test]
        fn round_trips(sb in any_super_block()) {
            let block = encoded(&sb);
            let expected = Expected::new(sb.nonce, sb.slot.pbn(SUPER_BLOCK_BASE));
            prop_assert_eq!(SuperBlock::decode(&block, expected), Ok(sb));
        }

        #[test]
        fn arbitrary_blocks_decode_without_panic(
            bytes in prop::collection::vec(any::<u8>(), BLOCK_SIZE),
        ) {
            let block: Block = bytes.try_into().unwrap();
            prop_assert!(SuperBlock::decode(&block, expected(TwinSlot::A)).is_err());
        }

        #[test]
        fn mutated_blocks_decode_without_panic(
            edits in prop::collection::vec((0..BLOCK_SIZE, any::<u8>()), 1..8),
            resealed in any::<bool>(),
        ) {
            let mut block = encoded(&sample(TwinSlot::A, 4));
            for (at, value) in edits {
                block[at] = value;
            }
            if resealed {
                reseal(&mut block);
            }
            if let Ok(sb) = SuperBlock::decode(&block, expected(TwinSlot::A)) {
                prop_assert_eq!(encoded(&sb), block);
            }
        }
    }

    #[test]
    fn damage_is_detected() {
        let older = encoded(&sample(TwinSlot::B, 4));
        let mut newer_value = sample(TwinSlot::B, 6);
        newer_value.state = VolumeState::Clean;
        newer_value.owner = None;
        let newer = encoded(&newer_value);
        assert_detects_damage(SuperBlock::decode, &older, &newer, expected(TwinSlot::B));
    }

    #[test]
    fn a_torn_write_of_b_still_reads_the_previous_generation_from_a() {
        let a = encoded(&sample(TwinSlot::A, 5));
        let old_b = encoded(&sample(TwinSlot::B, 4));
        let mut next = sample(TwinSlot::B, 6);
        next.state = VolumeState::Clean;
        next.mode = OperatingMode::Normal;
        next.read_only_reason = None;
        let new_b = encoded(&next);
        for mask in 0..=u8::MAX {
            let b = torn(&old_b, &new_b, mask);
            let chosen = SuperBlock::read_twins(&a, &b, NONCE).unwrap();
            if b == new_b {
                assert_eq!((chosen.slot, chosen.value), (TwinSlot::B, next.clone()));
            } else {
                assert_eq!(chosen.slot, TwinSlot::A, "mask {mask:#04x}");
                assert_eq!(chosen.generation, SequenceNumber(5));
                assert_eq!(chosen.value, sample(TwinSlot::A, 5));
                assert_eq!(chosen.next_write(), (TwinSlot::B, SequenceNumber(6)));
            }
        }
    }

    #[test]
    fn twins_refuse_a_copy_written_for_the_other_slot() {
        let a = encoded(&sample(TwinSlot::A, 5));
        let chosen = SuperBlock::read_twins(&a, &a, NONCE).unwrap();
        assert_eq!(chosen.slot, TwinSlot::A);
        let other = chosen.other_error.unwrap();
        assert!(matches!(other.problem, Problem::WrongLocation { .. }));
        let zero = [0_u8; BLOCK_SIZE];
        let err = SuperBlock::read_twins(&zero, &zero, NONCE).unwrap_err();
        assert!(err.is_unwritten());
    }

    fn field_after(patch: impl FnOnce(&mut Block)) -> &'static str {
        let mut block = encoded(&sample(TwinSlot::A, 5));
        patch(&mut block);
        reseal(&mut block);
        match SuperBlock::decode(&block, expected(TwinSlot::A))
            .unwrap_err()
            .problem
        {
            Problem::InvalidField { field, .. } => field,
            other => panic!("{other}"),
        }
    }

    #[test]
    fn each_flag_and_enum_check_reports_its_own_error() {
        assert_eq!(field_after(|b| b[STATE_OFFSET] = 5), "state");
        assert_eq!(field_after(|b| b[STATE_OFFSET] = 0), "state");
        assert_eq!(field_after(|b| b[MODE_OFFSET] = 4), "mode");
        let force = field_after(|b| b[FORCE_REBUILD_OFFSET] = 2);
        assert_eq!(force, "force_rebuild_requested");
        assert_eq!(field_after(|b| b[POLICY_OFFSET] = 0), "write_policy");
        assert_eq!(
            field_after(|b| b[COMPRESSION_OFFSET] = 9),
            "compression_enabled"
        );
        let dedupe = field_after(|b| b[DEDUPLICATION_OFFSET] = 2);
        assert_eq!(dedupe, "deduplication_enabled");
        assert_eq!(field_after(|b| b[INDEX_SAVED_OFFSET] = 2), "index_saved");
        assert_eq!(
            field_after(|b| b[HAS_REASON_OFFSET] = 2),
            "has_read_only_reason"
        );
        assert_eq!(field_after(|b| b[HAS_OWNER_OFFSET] = 2), "has_owner");
        assert_eq!(
            field_after(|b| b[FLAGS_RESERVED_OFFSET + 6] = 1),
            "reserved bytes"
        );
        assert_eq!(
            field_after(|b| b[REASON_RESERVED_OFFSET] = 1),
            "reserved bytes"
        );
        assert_eq!(field_after(|b| b[OWNER_END] = 1), "reserved bytes");
        assert_eq!(field_after(|b| b[BLOCK_SIZE - 1] = 1), "reserved bytes");
    }

    #[test]
    fn each_count_check_reports_its_own_error() {
        let logical = |v| move |b: &mut Block| put_u64(b, LOGICAL_BLOCKS_OFFSET, v);
        assert_eq!(field_after(logical(0)), "logical_blocks");
        assert_eq!(
            field_after(logical(LOGICAL_BLOCKS_MAX + 1)),
            "logical_blocks"
        );
        let physical = |b: &mut Block| put_u64(b, PHYSICAL_BLOCKS_OFFSET, PHYSICAL_BLOCKS_MAX + 1);
        assert_eq!(field_after(physical), "physical_blocks");
        assert_eq!(
            field_after(|b| put_u32(b, SLAB_COUNT_OFFSET, 8193)),
            "slab_count"
        );
        assert_eq!(
            field_after(|b| put_u32(b, SLAB_COUNT_OFFSET, 0)),
            "slab_count"
        );
        let pages = field_after(|b| put_u32(b, CACHE_PAGES_OFFSET, 1));
        assert_eq!(pages, "block_map_cache_pages");
        assert_eq!(
            field_after(|b| put_u64(b, JOURNAL_HEAD_OFFSET, 1000)),
            "journal_head"
        );
        let used = field_after(|b| put_u64(b, LOGICAL_USED_OFFSET, (1 << 30) + 1));
        assert_eq!(used, "logical_blocks_used");
        let map = field_after(|b| put_u64(b, BLOCK_MAP_DATA_OFFSET, (1 << 28) + 1));
        assert_eq!(map, "block_map_data_blocks");
    }

    #[test]
    fn each_optional_section_check_reports_its_own_error() {
        let no_reason = field_after(|b| {
            b[HAS_REASON_OFFSET] = 0;
            b[REASON_OFFSET..REASON_RESERVED_OFFSET].fill(0);
        });
        assert_eq!(no_reason, "has_read_only_reason");
        // Absent sections must be all zero.
        let mut absent = sample(TwinSlot::A, 5);
        absent.mode = OperatingMode::Normal;
        absent.read_only_reason = None;
        absent.owner = None;
        let mut block = encoded(&absent);
        block[REASON_OFFSET + 3] = 1;
        block[OWNER_OFFSET + 1] = 1;
        reseal(&mut block);
        let err = SuperBlock::decode(&block, expected(TwinSlot::A)).unwrap_err();
        assert!(matches!(
            err.problem,
            Problem::InvalidField {
                field: "reserved bytes",
                ..
            }
        ));
        block[REASON_OFFSET + 3] = 0;
        reseal(&mut block);
        let err = SuperBlock::decode(&block, expected(TwinSlot::A)).unwrap_err();
        assert!(matches!(
            err.problem,
            Problem::InvalidField {
                field: "reserved bytes",
                ..
            }
        ));

        let location = REASON_OFFSET + REASON_LOCATION_AT;
        let pbn = field_after(|b| put_u64(b, location, PBN_MAX + 1));
        assert_eq!(pbn, "read_only_location");
        let structure = REASON_OFFSET + REASON_STRUCTURE_AT;
        assert_eq!(field_after(|b| b[structure] = 9), "read_only_structure");
        let message_len = REASON_OFFSET + REASON_LEN_AT;
        assert_eq!(field_after(|b| b[message_len] = 161), "read_only_message");
        let message = REASON_OFFSET + REASON_MESSAGE_AT;
        assert_eq!(field_after(|b| b[message + 2] = 0xff), "read_only_message");
        assert_eq!(field_after(|b| b[message + 159] = b'x'), "reserved bytes");
        let host_len = OWNER_OFFSET + OWNER_LEN_AT;
        assert_eq!(field_after(|b| b[host_len] = 65), "owner_host");
        assert_eq!(field_after(|b| b[host_len + 1] = 0xc3), "owner_host");
        let owner_reserved = OWNER_OFFSET + OWNER_RESERVED_AT;
        assert_eq!(field_after(|b| b[owner_reserved] = 1), "reserved bytes");
    }

    #[test]
    fn a_copy_at_an_impossible_location_is_refused() {
        let mut block = encoded(&sample(TwinSlot::A, 5));
        put_u64(&mut block, 16, 9);
        reseal(&mut block);
        let err = SuperBlock::decode(&block, Expected::new(NONCE, Pbn(9))).unwrap_err();
        assert!(matches!(
            err.problem,
            Problem::InvalidField {
                field: "location",
                ..
            }
        ));
    }

    #[test]
    fn names_are_vdos() {
        let modes: Vec<_> = OperatingMode::ALL.iter().map(ToString::to_string).collect();
        assert_eq!(modes, ["normal", "recovering", "read-only"]);
        let states: Vec<_> = VolumeState::ALL.iter().map(ToString::to_string).collect();
        assert_eq!(states, ["clean", "dirty", "replaying", "recovering"]);
        for policy in WritePolicy::ALL {
            assert_eq!(policy.to_string().parse::<WritePolicy>(), Ok(*policy));
        }
        assert_eq!("async-unsafe".parse(), Ok(WritePolicy::AsyncUnsafe));
        let err = "fast".parse::<WritePolicy>().unwrap_err();
        assert_eq!(err.found, "fast");
    }

    #[test]
    fn truncation_keeps_whole_characters() {
        assert_eq!(truncated("aü", 2), "a");
        assert_eq!(truncated("aü", 3), "aü");
        assert_eq!(truncated("abc", 160), "abc");
    }

    #[test]
    fn layout_matches_the_diagram() {
        let block = encoded(&sample(TwinSlot::B, 5));
        assert_eq!(get_u64(&block, 16), 2);
        assert_eq!(get_u64(&block, 24), 5);
        assert_eq!(block[32..41], [2, 3, 0, 4, 1, 1, 1, 1, 1]);
        assert_eq!(get_u32(&block, 64), 511);
        assert_eq!(block[REASON_OFFSET + REASON_STRUCTURE_AT], 6);
        assert_eq!(&block[162..166], b"refe");
        assert_eq!(&block[345..352], b"storage");
    }
}
