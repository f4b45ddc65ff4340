//! `create` (with `--dryRun`'s budget) and `import`.

use std::path::Path;

use uvdo::{FormatConfig, Volume, WritePolicy};
use uvdo_format::layout::Layout;
use uvdo_format::{BLOCK_SIZE, BlockCount};
use uvdo_io::open::{OpenOptions as StoreOptions, open_store};

use super::Ctx;
use crate::cli::{Create, Import, switch};
use crate::error::{CliError, CliResult};
use crate::registry::{Operation, VolumeEntry};
use crate::size::{format_size, human, parse_size};

/// Test hook: `create` exits (as if killed) right after registering, before formatting.
pub(super) const CRASH_HOOK_ENV: &str = "UVDO_TEST_CRASH_AFTER_REGISTRY";
/// Entries per block map leaf page (VDO's 812), for the budget's block map estimate.
const MAPPINGS_PER_PAGE: u64 = 812;

pub(super) fn create(ctx: &Ctx, args: &Create) -> CliResult<()> {
    let activate = switch("activate", &args.activate)?;
    let policy: WritePolicy = args
        .write_policy
        .parse()
        .map_err(|e| CliError::usage(format!("--writePolicy: {e}")))?;
    let device = std::path::absolute(&args.device).unwrap_or_else(|_| args.device.clone());
    if !device.exists() {
        return Err(CliError::state(format!(
            "Device {} not found",
            device.display()
        )));
    }
    let physical = device_size(&device)?;
    let config = format_config(args, physical, policy)?;
    if args.dry_run {
        print!("{}", budget(&config, physical)?);
        return Ok(());
    }
    println!("Creating VDO {}", args.name);
    let entry = VolumeEntry {
        name: args.name.clone(),
        device: device.clone(),
        operation_state: Operation::Create.key().into(),
        activated: args.activate.clone(),
        write_policy: args.write_policy.clone(),
        compression: args.compression.clone(),
        deduplication: args.deduplication.clone(),
        logical_size: format_size(config.logical_bytes()),
        physical_size: format_size(physical / 4096 * 4096),
        slab_size: format_size(config.slab_blocks.0 * BLOCK_SIZE as u64),
        index_memory: format_size(config.index.memory_bytes),
        index_sparse: args.sparse_index.clone(),
        block_map_cache_size: format_size(
            u64::from(config.block_map_cache_pages) * BLOCK_SIZE as u64,
        ),
        tcp_port: args.tcp_port,
        uuid: String::new(),
        extra: toml::Table::new(),
    };
    ctx.registry.update(|r| {
        if r.volumes.contains_key(&args.name) {
            return Err(CliError::user(format!(
                "VDO volume {} already exists",
                args.name
            )));
        }
        let canonical = std::fs::canonicalize(&device).ok();
        if let Some(other) = r
            .volumes
            .values()
            .find(|v| std::fs::canonicalize(&v.device).ok() == canonical)
        {
            return Err(CliError::user(format!(
                "Device {} already configured for VDO use (volume {})",
                device.display(),
                other.name
            )));
        }
        r.volumes.insert(args.name.clone(), entry);
        Ok(())
    })?;
    if std::env::var_os(CRASH_HOOK_ENV).is_some() {
        // As a kill between the registry update and the end of the format would.
        std::process::exit(137);
    }
    let summary = {
        let _spinner = super::spinner("formatting");
        let store = open_store(&device, &StoreOptions::default())
            .map_err(|e| CliError::system(format!("cannot open {}: {e}", device.display())))?;
        Volume::format(&*store, &config).map_err(|e| {
            let e = CliError::volume("Cannot format device", &e);
            CliError::new(
                e.status,
                format!(
                    "{}; VDO volume {} stays registered as an \
                incomplete create: run 'uvdo remove --force --name {}'",
                    e.message, args.name, args.name
                ),
            )
        })?
    };
    let slab_bytes = config.slab_blocks.0 * BLOCK_SIZE as u64;
    println!(
        "      The VDO volume can address {} in {} data slabs, each {}.",
        human(summary.data_blocks * BLOCK_SIZE as u64, false),
        summary.slab_count,
        human(slab_bytes, false)
    );
    println!(
        "      It can grow to address at most {} of physical storage in {} slabs.",
        human(slab_bytes * uvdo_format::layout::SLAB_COUNT_MAX, false),
        uvdo_format::layout::SLAB_COUNT_MAX
    );
    let uuid = crate::offline::read(&device)?.uuid();
    ctx.registry.update(|r| {
        let e = r.get_mut(&args.name)?;
        e.operation_state = Operation::Finished.key().into();
        e.uuid = uuid;
        Ok(())
    })?;
    if activate {
        start_plainly(ctx, &args.name)
    } else {
        println!("VDO volume created at {}", device.display());
        Ok(())
    }
}

fn device_size(device: &Path) -> CliResult<u64> {
    let options = StoreOptions {
        read_only: true,
        ..StoreOptions::default()
    };
    let store = open_store(device, &options)
        .map_err(|e| CliError::system(format!("cannot open {}: {e}", device.display())))?;
    Ok(store.size_bytes())
}

/// Index memory: VDO's 0.25/0.5/0.75 or whole GB, or (uvdo's addition) a size with a unit.
fn index_memory(text: &str) -> CliResult<u64> {
    match text.replace(',', ".").as_str() {
        "0.25" => Ok(256 << 20),
        "0.5" => Ok(512 << 20),
        "0.75" => Ok(768 << 20),
        t if t.chars().all(|c| c.is_ascii_digit()) => match t.parse::<u64>() {
            Ok(gb @ 1..=1024) => Ok(gb << 30),
            _ => Err(CliError::usage(format!(
                "--indexMem: {text} is not in 1..=1024 GB"
            ))),
        },
        _ => parse_size(text, false),
    }
}

fn format_config(args: &Create, physical: u64, policy: WritePolicy) -> CliResult<FormatConfig> {
    let logical = match &args.logical_size {
        Some(s) => parse_size(s, true)?,
        None => physical / 4096 * 4096,
    };
    let mut config = uvdo_nbd::sizing::format_config_for(physical, logical);
    if let Some(slab) = &args.slab_size {
        let bytes = parse_size(slab, true)?;
        if !bytes.is_power_of_two() {
            return Err(CliError::usage(format!(
                "--vdoSlabSize {slab} is not a power of two"
            )));
        }
        config.slab_blocks = BlockCount(bytes / BLOCK_SIZE as u64);
        config.slab_journal_blocks = BlockCount(
            config
                .slab_journal_blocks
                .0
                .min(config.slab_blocks.0 / 4)
                .max(2),
        );
    }
    if let Some(mem) = &args.index_mem {
        config.index.memory_bytes = index_memory(mem)?;
    }
    config.index.sparse = switch("sparseIndex", &args.sparse_index)?;
    config.compression = switch("compression", &args.compression)?;
    config.deduplication = switch("deduplication", &args.deduplication)?;
    if let Some(cache) = &args.block_map_cache_size {
        let pages = parse_size(cache, false)? / BLOCK_SIZE as u64;
        config.block_map_cache_pages = u32::try_from(pages)
            .map_err(|_| CliError::usage(format!("--blockMapCacheSize {cache} is too big")))?;
    }
    config.write_policy = policy;
    config.force = args.force;
    Ok(config)
}

/// The full memory and disk budget of a volume formatted with `config` on `physical` bytes.
fn budget(config: &FormatConfig, physical: u64) -> CliResult<String> {
    let block = BLOCK_SIZE as u64;
    let layout = Layout::compute(config.layout_params(), BlockCount(physical / block))
        .map_err(|e| CliError::user(format!("this configuration does not fit: {e}")))?;
    let slabs = u64::from(layout.slab_count());
    let slab = layout.slab();
    let data = layout.data_blocks_total().0;
    let cache = u64::from(config.block_map_cache_pages) * block;
    let index = config.index.memory_bytes;
    let refs_mem = data;
    let memory = refs_mem + cache + cache * 15 / 100 + index;
    let leaf_pages = config.logical_blocks.0.div_ceil(MAPPINGS_PER_PAGE);
    let h = |b: u64| format!("{:>10} ({b} bytes)", human(b, false));
    let lines = [
        ("Memory".to_owned(), String::new()),
        (
            "  reference counts (1 byte per data block)".into(),
            h(refs_mem),
        ),
        ("  block map cache".into(), h(cache)),
        (
            "  block map cache overhead (15%)".into(),
            h(cache * 15 / 100),
        ),
        ("  dedupe index".into(), h(index)),
        ("  total".into(), h(memory)),
        ("Disk".to_owned(), String::new()),
        ("  physical size".into(), h(physical)),
        ("  logical size".into(), h(config.logical_bytes())),
        (
            "  slabs".into(),
            format!("{slabs} of {}", human(slab.slab_blocks.0 * block, false)),
        ),
        ("  data blocks".into(), h(data * block)),
        (
            "  recovery journal".into(),
            h(config.recovery_journal_blocks.0 * block),
        ),
        (
            "  slab journals".into(),
            h(slabs * slab.journal_blocks.0 * block),
        ),
        (
            "  reference count blocks".into(),
            h(slabs * 2 * slab.ref_count_pairs.0 * block),
        ),
        (
            "  dedupe index area".into(),
            h(config.layout_params().index_blocks.0 * block),
        ),
        (
            "  overhead (all metadata)".into(),
            h(layout.overhead_blocks().0 * block),
        ),
        (
            "  block map when fully mapped".into(),
            h(2 * leaf_pages * block),
        ),
        (
            "  max physical size (8192 slabs)".into(),
            h(slab.slab_blocks.0 * block * uvdo_format::layout::SLAB_COUNT_MAX),
        ),
    ];
    let mut out = String::from("Dry run: nothing was written.\n");
    for (label, value) in lines {
        out.push_str(&format!("{label:<44}{value}\n"));
    }
    Ok(out)
}

pub(super) fn import(ctx: &Ctx, args: &Import) -> CliResult<()> {
    let activate = switch("activate", &args.activate)?;
    let device = std::path::absolute(&args.device).unwrap_or_else(|_| args.device.clone());
    println!("Importing VDO {}", args.name);
    let info = crate::offline::read(&device)?;
    let sb = &info.super_block;
    let on_off = |b: bool| if b { "enabled" } else { "disabled" }.to_owned();
    let block = BLOCK_SIZE as u64;
    let entry = VolumeEntry {
        name: args.name.clone(),
        device: device.clone(),
        operation_state: Operation::Finished.key().into(),
        activated: args.activate.clone(),
        write_policy: sb.write_policy.to_string(),
        compression: on_off(sb.compression_enabled),
        deduplication: on_off(sb.deduplication_enabled),
        logical_size: format_size(sb.logical_blocks.0 * block),
        physical_size: format_size(sb.physical_blocks.0 * block),
        slab_size: format_size(info.geometry.params.slab_blocks.0 * block),
        index_memory: format_size(info.geometry.index.memory_bytes),
        index_sparse: on_off(info.geometry.index.sparse),
        block_map_cache_size: format_size(u64::from(sb.block_map_cache_pages) * block),
        tcp_port: None,
        uuid: info.uuid(),
        extra: toml::Table::new(),
    };
    ctx.registry.update(|r| {
        if r.volumes.contains_key(&args.name) {
            return Err(CliError::user(format!(
                "VDO volume {} already exists",
                args.name
            )));
        }
        r.volumes.insert(args.name.clone(), entry);
        Ok(())
    })?;
    if !activate {
        return Ok(());
    }
    start_plainly(ctx, &args.name)
}

/// Starts a volume just created or imported, as `uvdo start --name NAME` would.
fn start_plainly(ctx: &Ctx, name: &str) -> CliResult<()> {
    let start = crate::cli::Start {
        select: crate::cli::Select {
            name: Some(name.to_owned()),
            all: false,
        },
        force_rebuild: false,
        yes: false,
        force: false,
        foreground: false,
    };
    super::lifecycle::start(ctx, name, &start)
}
