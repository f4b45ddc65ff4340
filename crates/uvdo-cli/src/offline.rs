//! What can be learned from a stopped volume without writing to it: the geometry block, the
//! super block and the layout they imply, and, through the engine's inspection open (which
//! replays a dirty volume in memory and writes nothing, on a store opened read-only), the
//! full statistics (`stopped_stats`).

use std::path::Path;

use std::sync::Arc;
use uvdo_format::geometry::Geometry;
use uvdo_format::layout::{Layout, RegionId};
use uvdo_format::super_block::{SuperBlock, VolumeState};
use uvdo_format::{BLOCK_SIZE, Block, Pbn};

use uvdo::{OpenOptions as VolumeOptions, Volume};
use uvdo_io::open::{OpenOptions, open_store};

use crate::error::{CliError, CliResult};
use crate::size::format_size;
use crate::stats::StatsView;

/// A stopped volume's geometry, super block and layout.
#[derive(Debug, Clone)]
pub struct OfflineInfo {
    /// The geometry block.
    pub geometry: Geometry,
    /// The current super block.
    pub super_block: SuperBlock,
    /// The layout.
    pub layout: Layout,
}

/// Reads `device`'s geometry and super block, opening it read-only.
///
/// # Errors
///
/// Exit 5 when there is no uvdo volume or its super block is unreadable; 6 when the device
/// cannot be read.
pub fn read(device: &Path) -> CliResult<OfflineInfo> {
    let options = OpenOptions {
        read_only: true,
        ..OpenOptions::default()
    };
    let store = open_store(device, &options)
        .map_err(|e| CliError::system(format!("cannot open {}: {e}", device.display())))?;
    let read = |pbn: u64| -> CliResult<Block> {
        let mut block: Block = [0; BLOCK_SIZE];
        store
            .read_at(Pbn(pbn).byte_offset(), &mut block)
            .map_err(|e| CliError::system(format!("cannot read {}: {e}", device.display())))?;
        Ok(block)
    };
    let geometry = Geometry::decode(&read(0)?)
        .map_err(|e| CliError::state(format!("{} holds no uvdo volume: {e}", device.display())))?;
    let super_block = SuperBlock::read_twins(&read(1)?, &read(2)?, geometry.nonce)
        .map_err(|e| CliError::state(format!("super block of {}: {e}", device.display())))?
        .value;
    let layout = Layout::compute(geometry.params, super_block.physical_blocks)
        .map_err(|e| CliError::state(format!("layout of {}: {e}", device.display())))?;
    Ok(OfflineInfo {
        geometry,
        super_block,
        layout,
    })
}

/// The reason a stopped volume records for read-only mode, as the engine words it.
#[must_use]
pub fn read_only_reason(sb: &SuperBlock) -> Option<String> {
    sb.read_only_reason.as_ref().map(|r| match r.structure {
        Some(s) => format!(
            "{} ({s} at PBN {}, since {})",
            r.message,
            r.location,
            crate::time::rfc3339(r.time_s)
        ),
        None => r.message.clone(),
    })
}

impl OfflineInfo {
    /// The UUID as text.
    #[must_use]
    pub fn uuid(&self) -> String {
        uuid_text(&self.geometry.uuid)
    }

    /// Statistics from the super block: sizes always; logical blocks used and overhead when
    /// the volume was closed cleanly; data blocks used never (it needs the reference counts).
    #[must_use]
    pub fn stats_view(&self) -> StatsView {
        let sb = &self.super_block;
        let clean = sb.state == VolumeState::Clean;
        let block_map = sb.journal.block_map_data_blocks.0;
        let reason = if clean {
            "the volume is stopped: data blocks used needs its reference counts, which are \
             read only when it runs; start it, or run 'uvdo audit' for a full recount"
        } else {
            "the volume is stopped after an unclean shutdown: its counts are known after the \
             recovery that the next start runs"
        };
        StatsView {
            source: "stopped volume (super block, read-only)".into(),
            physical_blocks: self.layout.physical_blocks().0,
            logical_blocks: sb.logical_blocks.0,
            data_blocks_used: None,
            overhead_blocks_used: clean.then(|| self.layout.overhead_blocks().0 + block_map),
            logical_blocks_used: clean.then_some(sb.journal.logical_blocks_used.0),
            unavailable: Some(reason.to_owned()),
            operating_mode: sb.mode.to_string(),
            read_only_reason: read_only_reason(sb),
            recovery_progress_percent: None,
            write_policy: sb.write_policy.to_string(),
            block_map_cache_size: u64::from(sb.block_map_cache_pages) * BLOCK_SIZE as u64,
            completed_recovery_count: sb.complete_recoveries,
            read_only_recovery_count: sb.read_only_recoveries,
            counters: Vec::new(),
            write_amplification_ratio: None,
        }
    }

    /// `vdodumpconfig`'s YAML.
    #[must_use]
    pub fn dump_config(&self) -> String {
        let sb = &self.super_block;
        let p = self.geometry.params;
        let regions = p
            .regions()
            .unwrap_or_else(|_| unreachable!("validated by decode"));
        let start = |id| regions.iter().find(|r| r.id == id).map_or(0, |r| r.start.0);
        format!(
            "VDOConfig:\n  blockSize: {BLOCK_SIZE}\n  logicalBlocks: {}\n  physicalBlocks: {}\n  \
             slabSize: {}\n  recoveryJournalSize: {}\n  slabJournalBlocks: {}\n  \
             blockMapRoots: {}\nUUID: {}\nNonce: {}\nIndexConfig:\n  memory: {}\n  \
             sparse: {}\nIndexRegion: {}\nDataRegion: {}\nState: {}\nOperatingMode: {}\n\
             WritePolicy: {}\nCompression: {}\nDeduplication: {}\nBlockMapCacheSize: {}\n\
             Owner: {}\n",
            sb.logical_blocks.0,
            sb.physical_blocks.0,
            p.slab_blocks.0,
            p.recovery_journal_blocks.0,
            p.slab_journal_blocks.0,
            p.root_count,
            self.uuid(),
            self.geometry.nonce.0,
            format_size(self.geometry.index.memory_bytes),
            self.geometry.index.sparse,
            start(RegionId::Index),
            start(RegionId::SlabDepot),
            sb.state,
            sb.mode,
            sb.write_policy,
            sb.compression_enabled,
            sb.deduplication_enabled,
            format_size(u64::from(sb.block_map_cache_pages) * BLOCK_SIZE as u64),
            sb.owner.as_ref().map_or_else(
                || "none".to_owned(),
                |o| format!("pid {} on {} since {}", o.pid, o.host, o.since_s)
            ),
        )
    }

    /// `vdolistmetadata`: one `start .. end: label` line per metadata region and per slab's
    /// reference counts and journal (end exclusive).
    #[must_use]
    pub fn list_metadata(&self) -> String {
        let mut out = String::from("0 .. 1: geometry block\n");
        let regions = self
            .geometry
            .params
            .regions()
            .unwrap_or_else(|_| unreachable!("validated by decode"));
        for r in regions {
            if r.id == RegionId::SlabDepot {
                continue;
            }
            let label = match r.id {
                RegionId::SuperBlock => "super block",
                RegionId::RecoveryJournal => "recovery journal",
                RegionId::SlabSummary => "slab summary",
                RegionId::BlockMapRoots => "block map tree roots",
                RegionId::Index => "dedupe index",
                RegionId::SlabDepot => "slab depot",
            };
            let end = r.start.0 + r.blocks.0;
            out.push_str(&format!("{} .. {end}: {label}\n", r.start.0));
        }
        let slab = self.layout.slab();
        for n in 0..self.layout.slab_count() {
            let start = self.layout.slab_start(uvdo_format::SlabNumber(n)).0;
            let refs = start + slab.ref_counts_offset();
            let journal = start + slab.journal_offset();
            out.push_str(&format!(
                "{refs} .. {}: slab {n} reference counts\n{journal} .. {}: slab {n} journal\n",
                refs + 2 * slab.ref_count_pairs.0,
                journal + slab.journal_blocks.0
            ));
        }
        out
    }
}

/// `3f1c2a9e-5b7d-4e21-9c0a-1d2e3f4a5b6c`.
#[must_use]
pub fn uuid_text(u: &[u8; 16]) -> String {
    let hex: String = u.iter().map(|b| format!("{b:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &hex[..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..]
    )
}

/// `uvdostats` of a stopped volume: the engine opens it for inspection on a read-only store
/// (nothing can be written) and counts as a running volume would; the mode and reason are
/// the ones the super block records. Falls back to the super block alone, with the reason,
/// when the inspection fails (e.g. damaged reference counts).
///
/// # Errors
///
/// When not even the geometry and super block can be read.
pub fn stopped_stats(device: &Path) -> CliResult<StatsView> {
    let info = read(device)?;
    let options = OpenOptions {
        read_only: true,
        ..OpenOptions::default()
    };
    let inspected = open_store(device, &options)
        .map_err(uvdo::VolumeError::from)
        .and_then(|s| {
            let volume = Volume::open(
                Arc::clone(&s),
                &VolumeOptions {
                    inspect_only: true,
                    ..VolumeOptions::default()
                },
            )?;
            let stats = volume.stats();
            volume.close()?;
            Ok(stats)
        });
    let Ok(stats) = inspected else {
        return Ok(info.stats_view());
    };
    let mut view = StatsView::from_volume(&stats);
    view.source = "stopped volume (inspected read-only)".into();
    view.operating_mode = info.super_block.mode.to_string();
    view.read_only_reason = read_only_reason(&info.super_block);
    // Per-open counters of an inspection say nothing about the volume.
    view.counters = Vec::new();
    view.write_amplification_ratio = None;
    Ok(view)
}
