//! Formatting a store, opening a volume, closing it cleanly.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64};

use parking_lot::{Mutex, RwLock};
use rand::RngCore;
use uvdo_format::geometry::{Geometry, HASH_SECRET_SIZE, IndexConfig as GeometryIndex};
use uvdo_format::layout::Layout;
use uvdo_format::recovery_journal::{Epoch, JournalRegion};
use uvdo_format::super_block::{
    JournalState, OperatingMode, ReadOnlyReason, SuperBlock, VolumeState,
};
use uvdo_format::twin::TwinSlot;
use uvdo_format::{BLOCK_SIZE, Block, BlockCount, Nonce, Pbn, SequenceNumber};
use uvdo_index::{DedupeIndex, IndexConfig, IndexRegion};
use uvdo_io::Storage;

use super::locks::Locks;
use super::scrubber::Scrubber;
use super::stats::Counters;
use super::{Meta, ModeState, Volume};
use crate::block_map::BlockMap;
use crate::config::{FormatConfig, OpenOptions, ResolvedPolicy};
use crate::depot::SlabDepot;
use crate::error::VolumeError;
use crate::hash::Namer;
use crate::int_hash::IntSet;
use crate::journal::RecoveryJournal;
use crate::journal::entries::JournalEntries;
use crate::staging::Staging;

/// What `format` laid out.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FormatSummary {
    /// The new volume's nonce.
    pub nonce: Nonce,
    /// Logical blocks the volume presents.
    pub logical_blocks: u64,
    /// Physical blocks of the store.
    pub physical_blocks: u64,
    /// Slabs in the depot.
    pub slab_count: u32,
    /// Blocks available for data.
    pub data_blocks: u64,
    /// Blocks used by metadata regions (and the unused tail).
    pub overhead_blocks: u64,
    /// Blocks the dedupe index window covers.
    pub index_window_entries: u64,
    /// Memory the volume needs when open: reference counts, block map cache, index.
    pub memory_bytes: u64,
}

/// Signatures `format` refuses to overwrite unless forced: (byte offset, bytes, what).
const SIGNATURES: [(usize, &[u8], &str); 6] = [
    (1080, &[0x53, 0xef], "an ext2/3/4 filesystem"),
    (0, b"XFSB", "an XFS filesystem"),
    (512, b"LABELONE", "an LVM physical volume"),
    (512, b"EFI PART", "a GPT partition table"),
    (4086, b"SWAPSPACE2", "a swap area"),
    (3, b"NTFS    ", "an NTFS filesystem"),
];

impl Volume {
    /// Lays out a new volume on `store`: refuses a store holding a uvdo volume or a known
    /// signature unless `config.force`; writes the geometry block last, so an interrupted
    /// format is never mistaken for a volume.
    ///
    /// # Errors
    ///
    /// `AlreadyFormatted`, `InvalidConfig` for a configuration the store cannot hold, or a
    /// store error.
    pub fn format(
        store: &dyn Storage,
        config: &FormatConfig,
    ) -> Result<FormatSummary, VolumeError> {
        if !config.force
            && let Some(what) = existing_signature(store)?
        {
            return Err(VolumeError::AlreadyFormatted { what });
        }
        config
            .index
            .validate()
            .map_err(|e| VolumeError::invalid(e.to_string()))?;
        let logical_max = uvdo_format::layout::LOGICAL_BLOCKS_MAX;
        if config.logical_blocks.0 == 0 || config.logical_blocks.0 > logical_max {
            return Err(VolumeError::invalid(format!(
                "logical size {} blocks is outside 1..={logical_max}",
                config.logical_blocks
            )));
        }
        let physical = BlockCount(store.size_bytes() / BLOCK_SIZE as u64);
        let layout = Layout::compute(config.layout_params(), physical)?;
        let mut rng = rand::rng();
        let mut hash_secret = [0_u8; HASH_SECRET_SIZE];
        rng.fill_bytes(&mut hash_secret);
        let mut uuid = [0_u8; 16];
        rng.fill_bytes(&mut uuid);
        let geometry = Geometry {
            nonce: Nonce(rng.next_u64()),
            uuid,
            hash_secret,
            creation_time_s: super::unix_time_s(),
            params: layout.params(),
            index: GeometryIndex {
                memory_bytes: config.index.memory_bytes,
                sparse: config.index.sparse,
            },
        };
        let nonce = geometry.nonce;

        // Unmake any old volume first, so a crash mid-format leaves no geometry behind.
        store.write_at(0, &[0_u8; BLOCK_SIZE])?;
        store.flush()?;
        preallocate_journal(store, &layout)?;
        let mut writes = BlockMap::format_roots(&layout, nonce);
        writes.extend(SlabDepot::format_summary(&layout, nonce));
        let super_block = new_super_block(config, &layout, nonce);
        let mut block: Block = [0; BLOCK_SIZE];
        super_block.encode(&mut block);
        writes.push((Pbn(1), block));
        // Slot B of an older volume would carry another nonce; zero it all the same.
        writes.push((Pbn(2), [0; BLOCK_SIZE]));
        for (pbn, block) in &writes {
            store.write_at(pbn.byte_offset(), block)?;
        }
        store.flush()?;
        geometry.encode(&mut block);
        store.write_at(0, &block)?;
        store.flush()?;

        let data_blocks = layout.data_blocks_total().0;
        Ok(FormatSummary {
            nonce,
            logical_blocks: config.logical_blocks.0,
            physical_blocks: physical.0,
            slab_count: layout.slab_count(),
            data_blocks,
            overhead_blocks: layout.overhead_blocks().0,
            index_window_entries: config.index.window_entries(),
            memory_bytes: data_blocks
                + u64::from(config.block_map_cache_pages) * BLOCK_SIZE as u64
                + config.index.memory_bytes,
        })
    }

    /// Opens the volume on `store`. After an unclean shutdown the recovery journal is
    /// replayed first (volume/recover.rs); the volume then opens in recovering mode while the
    /// reference counts of the slabs the crash may have changed are rebuilt in the background
    /// (volume/scrubber.rs; `OpenOptions::recover_offline` rebuilds them before returning).
    /// A volume whose super block says read-only opens read-only and
    /// writes nothing. Metadata found damaged while opening or recovering (with the geometry
    /// and super block readable) puts the volume in read-only mode, persisted, and it opens
    /// read-only: reads through damaged block map pages fail with EIO, the rest work. A
    /// pending force rebuild (requested, or interrupted by a crash) runs first.
    ///
    /// # Errors
    ///
    /// `NotAVolume` when there is no valid geometry; `Corrupt` when both super block slots
    /// are damaged, or the slab depot is (the volume is then read-only on disk, with the
    /// reason); or a store error.
    pub fn open(store: Arc<dyn Storage>, options: &OpenOptions) -> Result<Self, VolumeError> {
        // A force rebuild that was asked for, or interrupted, is finished before anything
        // else reads the reference counts it was rewriting.
        if options.inspect_only {
            return Self::open_as_recorded(store, options);
        }
        if super::read_super_block(&*store)?.force_rebuild_requested {
            Self::force_rebuild(Arc::clone(&store), &mut |_| {})?;
        }
        match Self::open_as_recorded(Arc::clone(&store), options) {
            Err(e) if super::enter_read_only_at_open(&*store, &e) => {
                Self::open_as_recorded(store, options)
            }
            result => result,
        }
    }

    /// Opens the volume in the mode its super block records.
    fn open_as_recorded(
        store: Arc<dyn Storage>,
        options: &OpenOptions,
    ) -> Result<Self, VolumeError> {
        let mut block: Block = [0; BLOCK_SIZE];
        store.read_at(0, &mut block)?;
        let geometry = Geometry::decode(&block).map_err(VolumeError::NotAVolume)?;
        let nonce = geometry.nonce;
        let mut twin_b: Block = [0; BLOCK_SIZE];
        store.read_at(Pbn(1).byte_offset(), &mut block)?;
        store.read_at(Pbn(2).byte_offset(), &mut twin_b)?;
        let super_block = SuperBlock::read_twins(&block, &twin_b, nonce)?.value;
        let layout = Layout::compute(geometry.params, super_block.physical_blocks)?;
        // A larger store is fine: the space past the recorded size is unused until a grow.
        let store_blocks = store.size_bytes() / BLOCK_SIZE as u64;
        if store_blocks < layout.physical_blocks().0 {
            return Err(VolumeError::invalid(format!(
                "the store holds {store_blocks} blocks, fewer than the {} the volume records",
                layout.physical_blocks()
            )));
        }
        let cache_pages = options
            .block_map_cache_pages
            .unwrap_or(super_block.block_map_cache_pages);
        let cache_pages = usize::try_from(cache_pages).unwrap_or(2).max(2);
        let read_only = super_block.mode == OperatingMode::ReadOnly || options.inspect_only;
        let (block_map, depot, journal, recovered) = if read_only {
            let (block_map, depot, journal) =
                super::load_read_only(&*store, &geometry, layout, &super_block, cache_pages)?;
            (block_map, depot, journal, None)
        } else if super_block.state == VolumeState::Clean {
            let depot = if super_block.mode == OperatingMode::Recovering {
                // Closed cleanly while recovering: the slabs still dirty in the summary are
                // unrecovered; their journals hold every change, so nothing is replayed.
                let mut depot =
                    SlabDepot::open_recovering(&*store, layout, nonce, &JournalEntries::default())?;
                if options.recover_offline {
                    depot.scrub_all(&*store)?;
                } else {
                    super::recover::scrub_urgent(&*store, &mut depot)?;
                }
                depot
            } else {
                SlabDepot::open(&*store, layout, nonce)?
            };
            let block_map = BlockMap::new(layout, nonce, cache_pages);
            let region = JournalRegion {
                start: layout.journal_start(),
                blocks: layout.params().recovery_journal_blocks.0,
            };
            let state = super_block.journal;
            let journal = RecoveryJournal::new(
                region,
                nonce,
                Epoch(state.epoch),
                state.tail,
                state.tail,
                state.logical_blocks_used.0,
                state.block_map_data_blocks.0,
            );
            (block_map, depot, journal, None)
        } else {
            let r = super::recover::recover(
                &*store,
                &geometry,
                layout,
                &super_block,
                cache_pages,
                options.recover_offline,
            )?;
            (
                r.block_map,
                r.depot,
                r.journal,
                Some((r.super_block, r.report)),
            )
        };
        let index = open_index(&store, &geometry, &layout, &super_block);
        let policy = ResolvedPolicy::resolve(
            super_block.write_policy,
            options
                .volatile_write_cache
                .or_else(|| store.volatile_write_cache()),
        );
        let logical_blocks = super_block.logical_blocks.0;
        let deduplication = super_block.deduplication_enabled;
        let recovering = !read_only && depot.unrecovered_count() > 0;
        let mode = ModeState {
            mode: match super_block.mode {
                _ if read_only => OperatingMode::ReadOnly,
                _ if recovering => OperatingMode::Recovering,
                _ => OperatingMode::Normal,
            },
            reason: super_block.read_only_reason.clone().or_else(|| {
                options.inspect_only.then(|| ReadOnlyReason {
                    error_code: 0,
                    errno: u32::try_from(libc::EROFS).unwrap_or(30),
                    time_s: super::unix_time_s(),
                    structure: None,
                    location: Pbn(0),
                    message: "opened for inspection: nothing is written".to_owned(),
                })
            }),
        };
        let meta = Arc::new(Mutex::new(Meta {
            block_map,
            depot,
            journal,
            writing: IntSet::default(),
        }));
        let mode = Arc::new(RwLock::new(mode));
        let super_block = Arc::new(Mutex::new(super_block));
        let scrubber = Arc::new(Scrubber::new(
            Arc::clone(&store),
            Arc::clone(&meta),
            Arc::clone(&mode),
            Arc::clone(&super_block),
            options.testing_scrub_paused,
        ));
        let volume = Self {
            logical_blocks: AtomicU64::new(logical_blocks),
            deduplication: AtomicBool::new(deduplication),
            admin: Mutex::new(()),
            namer: Namer::new(geometry.hash_secret, options.testing_constant_hash),
            store,
            geometry,
            policy: RwLock::new(policy),
            index,
            locks: Locks::new(),
            commit: Mutex::new(()),
            barrier: RwLock::new(()),
            meta,
            mode,
            super_block,
            last_recovery: recovered.as_ref().map(|(_, report)| *report),
            counters: Counters::default(),
            scrubber,
            scrub_thread: Mutex::new(None),
            staging: Staging::default(),
        };
        if !read_only {
            // After recovery this is step 5: the next epoch and the new journal head become
            // durable only now, after everything recovery wrote was flushed. `Recovering`
            // (state and mode) while slabs are unrecovered: `scrubber.rs` makes it `Dirty`
            // and normal when the last one is recovered.
            volume.write_super_block(|sb| {
                if let Some((recovered, _)) = &recovered {
                    sb.journal = recovered.journal;
                    sb.complete_recoveries = recovered.complete_recoveries;
                }
                (sb.state, sb.mode) = if recovering {
                    (VolumeState::Recovering, OperatingMode::Recovering)
                } else {
                    (VolumeState::Dirty, OperatingMode::Normal)
                };
                sb.index_saved = false;
            })?;
            *volume.scrub_thread.lock() = volume.scrubber.start();
        }
        Ok(volume)
    }

    /// Drains, writes every piece of metadata and the index, and marks the volume clean.
    ///
    /// # Errors
    ///
    /// A store error; the volume is then left dirty, as after a crash.
    ///
    /// In recovering mode, scrubbing stops; the slabs not yet recovered stay dirty in the
    /// summary, with their journals written in full, and the super block says clean and
    /// recovering: the next open resumes scrubbing them, with nothing to replay.
    pub fn close(self) -> Result<(), VolumeError> {
        self.stop_scrubbing();
        if self.operating_mode() == OperatingMode::ReadOnly {
            return Ok(());
        }
        self.checkpoint(true)?;
        let generation = self.super_block.lock().index_generation + 1;
        let index_saved = self.index.save(SequenceNumber(generation)).is_ok();
        let (journal, _) = {
            let meta = self.meta.lock();
            let j = &meta.journal;
            let state = JournalState {
                head: j.tail(),
                tail: j.tail(),
                logical_blocks_used: BlockCount(j.logical_blocks_used()),
                block_map_data_blocks: BlockCount(j.block_map_data_blocks()),
                epoch: j.epoch().0,
            };
            (state, ())
        };
        self.write_super_block(|sb| {
            sb.state = VolumeState::Clean;
            sb.journal = journal;
            sb.index_saved = index_saved;
            sb.index_generation = generation;
        })
    }
}

fn new_super_block(config: &FormatConfig, layout: &Layout, nonce: Nonce) -> SuperBlock {
    SuperBlock {
        nonce,
        slot: TwinSlot::A,
        generation: SequenceNumber(1),
        state: VolumeState::Clean,
        mode: OperatingMode::Normal,
        force_rebuild_requested: false,
        write_policy: config.write_policy,
        compression_enabled: config.compression,
        deduplication_enabled: config.deduplication,
        logical_blocks: config.logical_blocks,
        physical_blocks: layout.physical_blocks(),
        slab_count: layout.slab_count(),
        block_map_cache_pages: config.block_map_cache_pages,
        journal: JournalState {
            head: SequenceNumber(1),
            tail: SequenceNumber(1),
            logical_blocks_used: BlockCount(0),
            block_map_data_blocks: BlockCount(0),
            epoch: 0,
        },
        complete_recoveries: 0,
        read_only_recoveries: 0,
        read_only_reason: None,
        index_saved: false,
        index_generation: 0,
        owner: None,
    }
}

fn open_index(
    store: &Arc<dyn Storage>,
    geometry: &Geometry,
    layout: &Layout,
    super_block: &SuperBlock,
) -> DedupeIndex {
    let config = IndexConfig {
        memory_bytes: geometry.index.memory_bytes,
        sparse: geometry.index.sparse,
    };
    let region = || IndexRegion {
        store: Arc::clone(store),
        start: layout.index_start(),
        blocks: layout.params().index_blocks.0,
        nonce: geometry.nonce,
    };
    if super_block.index_saved {
        let generation = SequenceNumber(super_block.index_generation);
        if let Ok(index) = DedupeIndex::load(config, region(), generation) {
            return index;
        }
    }
    // Losing the index loses dedupe opportunities, never data (SPEC I5).
    DedupeIndex::new(config, Some(region()))
        .or_else(|_| DedupeIndex::new(config, None))
        .expect("an index with a validated configuration")
}

/// What the store already holds that format must not silently destroy.
fn existing_signature(store: &dyn Storage) -> Result<Option<String>, VolumeError> {
    if store.size_bytes() < BLOCK_SIZE as u64 {
        return Ok(None);
    }
    let mut block: Block = [0; BLOCK_SIZE];
    store.read_at(0, &mut block)?;
    if Geometry::looks_like_uvdo(&block) {
        return Ok(Some("a uvdo volume".to_owned()));
    }
    if store.size_bytes() >= 2 * BLOCK_SIZE as u64 {
        let mut second: Block = [0; BLOCK_SIZE];
        store.read_at(BLOCK_SIZE as u64, &mut second)?;
        let both = [block.as_slice(), second.as_slice()].concat();
        for (offset, magic, what) in SIGNATURES {
            if both[offset..offset + magic.len()] == *magic {
                return Ok(Some((*what).to_owned()));
            }
        }
    }
    Ok(None)
}

/// Blocks written per call when the journal region is preallocated.
const PREALLOCATE_CHUNK_BLOCKS: u64 = 256;

/// Writes zeros over the whole recovery journal region (what a never-written journal block
/// reads as anyway), so that on a file every journal block is allocated before the first
/// commit: a durable write to an allocated block costs one device flush, a first write to a
/// hole also a filesystem metadata commit (docs/BENCHMARKS.md, flush latency).
fn preallocate_journal(store: &dyn Storage, layout: &Layout) -> Result<(), VolumeError> {
    let start = layout.journal_start().0;
    let end = start + layout.params().recovery_journal_blocks.0;
    let zeros = uvdo_io::aligned::AlignedBuf::zeroed(
        usize::try_from(PREALLOCATE_CHUNK_BLOCKS).expect("small") * BLOCK_SIZE,
    );
    let mut at = start;
    while at < end {
        let blocks = (end - at).min(PREALLOCATE_CHUNK_BLOCKS);
        let len = usize::try_from(blocks).expect("small") * BLOCK_SIZE;
        store.write_at(Pbn(at).byte_offset(), &zeros[..len])?;
        at += blocks;
    }
    Ok(())
}
