//! uvdo-selfcheck: exercises the format and storage layers end to end, as a user can run them
//! before the engine exists.
//!
//! 1. Prints the layout uvdo would give a store of the requested size (default 1 TiB).
//! 2. Writes a small volume's metadata (geometry, both super block slots, a block map root,
//!    a recovery journal block) to a real sparse file through the io_uring store (or the file
//!    store where io_uring is unavailable), flushes, reopens and decodes every block.
//! 3. On the simulated store, tears the newer super block copy at every sector combination and
//!    checks that the reader always falls back to a whole copy.
//!
//! Usage: `uvdo-selfcheck [--size BYTES] [--file PATH]`. Exit status 0 when every check passed.

use std::path::PathBuf;
use std::process::ExitCode;

use uvdo_format::block_map_page::{BlockMapPage, ROOT_LEVEL};
use uvdo_format::geometry::{Geometry, HASH_SECRET_SIZE, IndexConfig};
use uvdo_format::layout::{Layout, LayoutParams};
use uvdo_format::recovery_journal::{
    EntryKind, Epoch, JournalRegion, RecoveryJournalBlock, RecoveryJournalEntry,
};
use uvdo_format::super_block::{JournalState, OperatingMode, SuperBlock, VolumeState, WritePolicy};
use uvdo_format::twin::TwinSlot;
use uvdo_format::{BLOCK_SIZE, Block, BlockCount, Expected, Lbn, Mapping, Nonce, Pbn};
use uvdo_format::{SECTOR_SIZE, SequenceNumber};
use uvdo_io::Storage;
use uvdo_io::open::{OpenOptions, open};
use uvdo_io::sim::{CrashPlan, PendingFate, SimStore};

type Check = Result<(), String>;
type NamedCheck = (&'static str, Box<dyn Fn() -> Check>);

fn main() -> ExitCode {
    let mut size_bytes: u64 = 1 << 40;
    let mut file = std::env::temp_dir().join(format!("uvdo-selfcheck-{}.img", std::process::id()));
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match (arg.as_str(), args.next()) {
            ("--size", Some(v)) => match v.parse() {
                Ok(n) => size_bytes = n,
                Err(e) => return usage(&format!("--size {v}: {e}")),
            },
            ("--file", Some(v)) => file = PathBuf::from(v),
            _ => return usage(&format!("unknown argument {arg}")),
        }
    }
    let checks: [NamedCheck; 3] = [
        ("layout", Box::new(move || print_layout(size_bytes))),
        (
            "metadata on a real file",
            Box::new(move || file_round_trip(&file)),
        ),
        ("torn super block writes", Box::new(torn_super_block)),
    ];
    let mut failed = 0;
    for (name, check) in &checks {
        match check() {
            Ok(()) => println!("ok: {name}\n"),
            Err(e) => {
                failed += 1;
                println!("FAILED: {name}: {e}\n");
            }
        }
    }
    println!("{} passed, {failed} failed", checks.len() - failed);
    if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

fn usage(problem: &str) -> ExitCode {
    eprintln!("uvdo-selfcheck: {problem}\nusage: uvdo-selfcheck [--size BYTES] [--file PATH]");
    ExitCode::from(2)
}

fn print_layout(size_bytes: u64) -> Check {
    let physical = BlockCount(size_bytes / BLOCK_SIZE as u64);
    let layout = Layout::compute(LayoutParams::default(), physical).map_err(|e| e.to_string())?;
    let slab = layout.slab();
    println!("layout of a {size_bytes}-byte store with default parameters:");
    let rows = [
        ("super block twins", Pbn(1), 2),
        (
            "recovery journal",
            layout.journal_start(),
            layout.params().recovery_journal_blocks.0,
        ),
        ("slab summary", layout.summary_start(), 66),
        (
            "block map roots",
            layout.roots_start(),
            2 * u64::from(layout.params().root_count),
        ),
        (
            "index save area",
            layout.index_start(),
            layout.params().index_blocks.0,
        ),
    ];
    for (name, start, blocks) in rows {
        println!("  {name:<20} PBN {start:>12}  {blocks:>12} blocks");
    }
    println!(
        "  {:<20} PBN {:>12}  {:>12} slabs of {} blocks ({} data, {} ref count pairs, {} journal)",
        "slab depot",
        layout.depot_start(),
        layout.slab_count(),
        slab.slab_blocks,
        slab.data_blocks,
        slab.ref_count_pairs,
        slab.journal_blocks
    );
    let overhead = layout.overhead_blocks().0;
    #[expect(clippy::cast_precision_loss, reason = "a percentage for display")]
    let percent = 100.0 * overhead as f64 / physical.0 as f64;
    println!(
        "  data blocks {}, overhead {overhead} blocks ({percent:.2} %)",
        layout.data_blocks_total()
    );
    Ok(())
}

fn small_volume() -> Result<(Layout, Geometry), String> {
    let params = LayoutParams {
        slab_blocks: BlockCount(1 << 12),
        slab_journal_blocks: BlockCount(16),
        recovery_journal_blocks: BlockCount(64),
        root_count: 4,
        index_blocks: BlockCount(64),
    };
    let layout = Layout::compute(params, BlockCount(1 << 14)).map_err(|e| e.to_string())?;
    let mut hash_secret = [0_u8; HASH_SECRET_SIZE];
    for (i, b) in hash_secret.iter_mut().enumerate() {
        *b = u8::try_from(i * 7 % 256).expect("below 256");
    }
    let geometry = Geometry {
        nonce: Nonce(u64::from(std::process::id()) << 20 | 0x5e1f),
        uuid: *b"uvdo-selfcheck!!",
        hash_secret,
        creation_time_s: 0,
        params,
        index: IndexConfig {
            memory_bytes: 64 * 4048,
            sparse: false,
        },
    };
    Ok((layout, geometry))
}

fn super_block(layout: &Layout, nonce: Nonce, slot: TwinSlot, generation: u64) -> SuperBlock {
    SuperBlock {
        nonce,
        slot,
        generation: SequenceNumber(generation),
        state: VolumeState::Clean,
        mode: OperatingMode::Normal,
        force_rebuild_requested: false,
        write_policy: WritePolicy::Auto,
        compression_enabled: false,
        deduplication_enabled: true,
        logical_blocks: BlockCount(1 << 20),
        physical_blocks: layout.physical_blocks(),
        slab_count: layout.slab_count(),
        block_map_cache_pages: 32,
        journal: JournalState {
            head: SequenceNumber(1),
            tail: SequenceNumber(1 + generation),
            logical_blocks_used: BlockCount(generation),
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

fn write(store: &dyn Storage, pbn: Pbn, block: &Block) -> Check {
    store
        .write_at(pbn.byte_offset(), block)
        .map_err(|e| e.to_string())
}

fn read(store: &dyn Storage, pbn: Pbn) -> Result<Block, String> {
    let mut block = [0_u8; BLOCK_SIZE];
    store
        .read_at(pbn.byte_offset(), &mut block)
        .map_err(|e| e.to_string())?;
    Ok(block)
}

fn file_round_trip(path: &std::path::Path) -> Check {
    let (layout, geometry) = small_volume()?;
    let size_bytes = layout.physical_blocks().to_bytes();
    let options = OpenOptions {
        create_size: Some(size_bytes),
        ..OpenOptions::default()
    };
    let store = open(path, &options).map_err(|e| e.to_string())?;
    println!(
        "  {} ({size_bytes} bytes, {})",
        path.display(),
        store.describe()
    );
    let result = write_and_read_back(&store, &layout, &geometry);
    drop(store);
    std::fs::remove_file(path).map_err(|e| e.to_string())?;
    result?;
    println!("  geometry, 2 super blocks, 1 root page, 1 journal block: written, flushed, decoded");
    Ok(())
}

fn write_and_read_back(store: &dyn Storage, layout: &Layout, geometry: &Geometry) -> Check {
    let nonce = geometry.nonce;
    let region = JournalRegion {
        start: layout.journal_start(),
        blocks: 64,
    };
    let journal = RecoveryJournalBlock {
        sequence: SequenceNumber(1),
        block_map_head: SequenceNumber(1),
        slab_journal_head: SequenceNumber(1),
        logical_blocks_used: BlockCount(1),
        block_map_data_blocks: BlockCount(0),
        epoch: Epoch(0),
        durable_through: None,
        data_check: None,
        entries: vec![RecoveryJournalEntry {
            kind: EntryKind::DataRemap,
            slot: 7,
            page: layout.data_pbn(uvdo_format::SlabNumber(0), uvdo_format::SlabBlockNumber(0)),
            new: Mapping::Data(
                layout.data_pbn(uvdo_format::SlabNumber(0), uvdo_format::SlabBlockNumber(2)),
            ),
            old: Mapping::Unmapped,
            lbn: Lbn(7),
        }],
    };
    let mut block = [0_u8; BLOCK_SIZE];
    journal.encode(nonce, region, &mut block);
    write(store, region.pbn_of(journal.sequence), &block)?;
    let root = BlockMapPage::new_empty(ROOT_LEVEL);
    root.encode(nonce, layout.root_base(0), &mut block);
    write(store, layout.root_base(0), &block)?;
    for (slot, generation) in [(TwinSlot::A, 1), (TwinSlot::B, 2)] {
        super_block(layout, nonce, slot, generation).encode(&mut block);
        write(store, slot.pbn(Pbn(1)), &block)?;
    }
    store.flush().map_err(|e| e.to_string())?;
    geometry.encode(&mut block);
    store.write_at_fua(0, &block).map_err(|e| e.to_string())?;

    let found = Geometry::decode(&read(store, Pbn(0))?).map_err(|e| e.to_string())?;
    if found != *geometry {
        return Err("the geometry read back differs".into());
    }
    let chosen = SuperBlock::read_twins(&read(store, Pbn(1))?, &read(store, Pbn(2))?, nonce)
        .map_err(|e| e.to_string())?;
    if chosen.generation != SequenceNumber(2) {
        return Err(format!(
            "read super block generation {}, wrote 2",
            chosen.generation
        ));
    }
    let expected = Expected::new(nonce, layout.root_base(0));
    BlockMapPage::decode(&read(store, layout.root_base(0))?, expected, ROOT_LEVEL)
        .map_err(|e| e.to_string())?;
    let pbn = region.pbn_of(SequenceNumber(1));
    let back = RecoveryJournalBlock::decode_at(
        &read(store, pbn)?,
        Expected::new(nonce, pbn),
        region,
        SequenceNumber(1),
    )
    .map_err(|e| e.to_string())?;
    if back != journal {
        return Err("the journal block read back differs".into());
    }
    Ok(())
}

fn torn_super_block() -> Check {
    let (layout, geometry) = small_volume()?;
    let nonce = geometry.nonce;
    let sim = SimStore::new(16 * BLOCK_SIZE as u64);
    let mut block = [0_u8; BLOCK_SIZE];
    super_block(&layout, nonce, TwinSlot::A, 1).encode(&mut block);
    write(&sim, Pbn(1), &block)?;
    sim.flush().map_err(|e| e.to_string())?;
    super_block(&layout, nonce, TwinSlot::B, 2).encode(&mut block);
    write(&sim, Pbn(2), &block)?;
    let sectors = BLOCK_SIZE / SECTOR_SIZE;
    let (mut older, mut newer) = (0, 0);
    for mask in 0..(1_u64 << sectors) {
        let crashed = sim.crash(CrashPlan::Explicit(vec![PendingFate::torn_mask(
            mask, sectors,
        )]));
        let slot_b = read(&crashed, Pbn(2))?;
        let chosen = SuperBlock::read_twins(&read(&crashed, Pbn(1))?, &slot_b, nonce)
            .map_err(|e| format!("tear mask {mask:#04x}: {e}"))?;
        // Generation 2 may be read only when the tear happened to leave its whole image (the
        // sectors it missed were zeros in the new copy too); anything else must fall back.
        let whole = slot_b == block;
        match (chosen.generation.0, whole) {
            (1, false) => older += 1,
            (2, true) => newer += 1,
            (g, _) => return Err(format!("tear mask {mask:#04x} read generation {g}")),
        }
    }
    println!(
        "  {} tears of the newer copy: {older} fell back to generation 1, {newer} left the \
         whole new image and read generation 2",
        older + newer
    );
    Ok(())
}
