//! Commands that report: status, list, printConfigFile, audit, dumpConfig, listMetadata.

use std::path::PathBuf;

use serde_json::{Map, Value, json};
use uvdo::{OpenOptions, Volume};
use uvdo_io::open::{OpenOptions as StoreOptions, open_store};

use super::Ctx;
use crate::cli::Target;
use crate::control::Request;
use crate::error::{CliError, CliResult};
use crate::owner::{self, OwnerRecord, OwnerState};
use crate::registry::VolumeEntry;
use crate::stats::StatsView;

pub(super) fn status(ctx: &Ctx, name: Option<&str>, as_json: bool) -> CliResult<()> {
    let registry = ctx.registry.load()?;
    let names: Vec<String> = match name {
        Some(n) => vec![registry.get(n)?.name.clone()],
        None => registry.volumes.keys().cloned().collect(),
    };
    let mut vdos = Map::new();
    for n in names {
        let entry = registry.get(&n)?;
        let value = match entry.check_no_incomplete_create() {
            Err(e) => json!(e.message),
            Ok(()) => volume_status(ctx, entry),
        };
        vdos.insert(n, value);
    }
    let modified = std::fs::metadata(ctx.registry.path())
        .and_then(|m| m.modified())
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map_or_else(
            || "not available".into(),
            |d| crate::time::rfc3339(d.as_secs()),
        );
    let node = nix::unistd::gethostname()
        .map_or_else(|_| "localhost".into(), |h| h.to_string_lossy().into_owned());
    let docs = [
        (
            "VDO status",
            json!({"Date": crate::time::rfc3339(crate::time::now_s()), "Node": node}),
        ),
        (
            "Configuration",
            json!({"File": ctx.registry.path(), "Last modified": modified}),
        ),
        ("VDOs", Value::Object(vdos)),
    ];
    if as_json {
        let all: Map<String, Value> = docs.into_iter().map(|(k, v)| (k.into(), v)).collect();
        println!("{}", serde_json::to_string_pretty(&all).unwrap_or_default());
    } else {
        for (key, value) in docs {
            let mut out = format!("{key}:");
            yaml(&value, 1, &mut out);
            print!("{out}");
        }
    }
    Ok(())
}

fn on_off(v: &str) -> Value {
    json!(v)
}

fn volume_status(ctx: &Ctx, e: &VolumeEntry) -> Value {
    let mut m = Map::new();
    let mut put = |k: &str, v: Value| {
        m.insert(k.to_owned(), v);
    };
    put("Activate", on_off(&e.activated));
    put("Compression", on_off(&e.compression));
    put("Deduplication", on_off(&e.deduplication));
    put("Configured write policy", json!(e.write_policy));
    put("Storage device", json!(e.device));
    put("Logical size", json!(e.logical_size));
    put("Physical size", json!(e.physical_size));
    put("Slab size", json!(e.slab_size));
    put("Index memory setting", json!(e.index_memory));
    put("Index sparse", json!(e.index_sparse));
    put("Block map cache size", json!(e.block_map_cache_size));
    put("Block size", json!(4096));
    put("UUID", json!(format!("VDO-{}", e.uuid)));
    put("Operation state", json!(e.operation_state));
    let owner = owner::probe(&e.device);
    put(
        "Owner",
        match &owner {
            OwnerState::Free => json!("none"),
            OwnerState::Held(r) => json!(r.describe()),
            OwnerState::Stale(r) => json!(format!(
                "stale: {} ended without stopping the volume; 'start --force' takes over",
                r.describe()
            )),
        },
    );
    let socket = ctx.registry.run_paths(&e.name).control_socket;
    let live = crate::control::call(&socket, &Request::Status, Some(crate::control::ANSWER_WAIT));
    let (stats, state) = match live {
        Ok(live) => {
            put("NBD URI", live["uri"].clone());
            put(
                "Daemon",
                json!(format!(
                    "running, pid {}, since {}",
                    live["pid"],
                    live["started"].as_str().unwrap_or("")
                )),
            );
            put(
                "Last recovery",
                if live["last recovery"].is_null() {
                    json!("none: the volume was opened after a clean shutdown")
                } else {
                    live["last recovery"].clone()
                },
            );
            let stats: Option<StatsView> = serde_json::from_value(live["stats"].clone()).ok();
            (stats, "running")
        }
        Err(_) => {
            put("NBD URI", json!("not available"));
            put("Daemon", json!("not running"));
            (
                crate::offline::read(&e.device).ok().map(|i| i.stats_view()),
                "stopped",
            )
        }
    };
    let _ = state;
    match stats {
        Some(s) => {
            put("Operating mode", json!(s.operating_mode));
            put(
                "Read-only reason",
                json!(s.read_only_reason.clone().unwrap_or_else(|| "none".into())),
            );
            put(
                "Recovery progress (%)",
                s.recovery_progress_percent
                    .map_or_else(|| json!("N/A (not recovering)"), |p| json!(p)),
            );
            put("Write policy", json!(s.write_policy));
            let fields: Map<String, Value> = s
                .fields()
                .into_iter()
                .map(|(k, v)| (k, v.unwrap_or_else(|why| json!(format!("N/A ({why})")))))
                .collect();
            put("VDO statistics", Value::Object(fields));
        }
        None => {
            put(
                "Operating mode",
                json!("not available: the device cannot be read"),
            );
            put("VDO statistics", json!("not available"));
        }
    }
    Value::Object(m)
}

/// YAML for `value` nested at `depth` (two spaces a level), keys sorted as `vdo status`
/// prints them (serde_json's map is sorted).
fn yaml(value: &Value, depth: usize, out: &mut String) {
    let pad = "  ".repeat(depth);
    match value {
        Value::Object(map) if map.is_empty() => out.push_str(" {}\n"),
        Value::Object(map) => {
            out.push('\n');
            for (k, v) in map {
                out.push_str(&format!("{pad}{}:", scalar(&Value::String(k.clone()))));
                yaml(v, depth + 1, out);
            }
        }
        Value::Array(items) if items.is_empty() => out.push_str(" []\n"),
        Value::Array(items) => {
            out.push('\n');
            for v in items {
                out.push_str(&format!("{pad}-"));
                yaml(v, depth + 1, out);
            }
        }
        v => out.push_str(&format!(" {}\n", scalar(v))),
    }
}

fn scalar(v: &Value) -> String {
    match v {
        Value::Null => "null".into(),
        Value::String(s) => {
            let plain = !s.is_empty()
                && s.chars()
                    .all(|c| c.is_ascii_alphanumeric() || " ._/-()%".contains(c))
                && !s.starts_with(['-', ' '])
                && !s.ends_with(' ')
                && s.parse::<f64>().is_err()
                && !["true", "false", "null", "yes", "no"].contains(&s.as_str());
            if plain {
                s.clone()
            } else {
                format!("'{}'", s.replace('\'', "''"))
            }
        }
        v => v.to_string(),
    }
}

pub(super) fn list(ctx: &Ctx, all: bool) -> CliResult<()> {
    let registry = ctx.registry.load()?;
    for name in registry.volumes.keys() {
        if all || ctx.running(name) {
            println!("{name}");
        }
    }
    Ok(())
}

pub(super) fn print_config_file(ctx: &Ctx) -> CliResult<()> {
    let path = ctx.registry.path();
    let text = std::fs::read_to_string(path).map_err(|_| {
        CliError::user(format!(
            "Configuration file {} does not exist.",
            path.display()
        ))
    })?;
    println!("# file: {}", path.display());
    print!("{text}");
    Ok(())
}

fn device_of(ctx: &Ctx, target: &Target) -> CliResult<PathBuf> {
    match (&target.device, &target.name) {
        (Some(d), _) => Ok(d.clone()),
        (None, Some(n)) => Ok(ctx.registry.load()?.get(n)?.device.clone()),
        (None, None) => Err(CliError::usage("one of --name or --device is required")),
    }
}

pub(super) fn dump_config(ctx: &Ctx, target: &Target) -> CliResult<()> {
    print!(
        "{}",
        crate::offline::read(&device_of(ctx, target)?)?.dump_config()
    );
    Ok(())
}

pub(super) fn list_metadata(ctx: &Ctx, target: &Target) -> CliResult<()> {
    print!(
        "{}",
        crate::offline::read(&device_of(ctx, target)?)?.list_metadata()
    );
    Ok(())
}

pub(super) fn audit(ctx: &Ctx, target: &Target) -> CliResult<()> {
    let device = device_of(ctx, target)?;
    let record = OwnerRecord {
        pid: std::process::id(),
        name: target.name.clone().unwrap_or_else(|| "audit".into()),
        registry: ctx.registry.path().to_path_buf(),
        host: "localhost".into(),
        since_s: crate::time::now_s(),
    };
    let (ownership, _) = owner::claim(&device, &record, false)
        .map_err(|e| CliError::state(format!("cannot audit a volume in use: {}", e.message)))?;
    let info = crate::offline::read(&device)?;
    if info.super_block.state != uvdo_format::super_block::VolumeState::Clean {
        println!(
            "WARNING: The VDO was not cleanly shut down (it has state '{}'); recovery runs first",
            info.super_block.state
        );
    }
    let store = open_store(&device, &StoreOptions::default())
        .map_err(|e| CliError::system(format!("cannot open {}: {e}", device.display())))?;
    let options = OpenOptions {
        recover_offline: true,
        ..OpenOptions::default()
    };
    let spinner = super::spinner("auditing: recounting every reference");
    let volume = Volume::open(store, &options).map_err(|e| CliError::volume("open", &e))?;
    let report = volume.audit();
    let closed = volume.close();
    if let Some(s) = spinner {
        s.finish_and_clear();
    }
    ownership.release()?;
    let report = report.map_err(|e| CliError::volume("audit", &e))?;
    closed.map_err(|e| CliError::volume("closing after the audit", &e))?;
    println!("Logical blocks mapped: {}", report.logical_blocks_mapped);
    if report.logical_blocks_used_recorded == report.logical_blocks_mapped {
        println!(
            "Logical block count matched at {}",
            report.logical_blocks_mapped
        );
    } else {
        println!(
            "Logical block count mismatch! Expected {}, got {}",
            report.logical_blocks_used_recorded, report.logical_blocks_mapped
        );
    }
    println!("Data blocks referenced: {}", report.data_blocks_referenced);
    println!("Block map tree pages: {}", report.tree_pages);
    for m in &report.mismatches {
        println!(
            "Reference mismatch for pbn {}: block map had {} but the slab had {}",
            m.pbn, m.expected, m.stored
        );
    }
    for (lbn, pbn) in &report.bad_references {
        println!("Bad mapping: LBN {lbn} -> PBN {pbn}");
    }
    if report.is_clean() {
        println!("All pbn references matched.");
        Ok(())
    } else {
        Err(CliError::generic(format!(
            "audit found {} reference count errors and {} bad mappings",
            report.mismatch_count,
            report.bad_references.len()
        )))
    }
}
