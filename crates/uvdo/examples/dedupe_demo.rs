//! Dedupe demo: writes a real data set twice to a file-backed volume and shows the saving.
//!
//! ```sh
//! cargo run --release -p uvdo --example dedupe_demo -- [PATH] [SIZE]
//! ```
//!
//! Formats a sparse file (default: a new file in the system temp directory, removed at the
//! end; with PATH, a new file there, kept) of SIZE bytes (default 2G; suffixes K, M, G) as a
//! volume four times as large logically, async write policy. Reads up to 128 MiB of files
//! from `/usr/lib/x86_64-linux-gnu`, `/usr/share/doc` and similar, cuts them into 4 KiB
//! blocks (each file padded to a whole block), writes them at consecutive offsets, then
//! the same set again right after, flushes, prints what that cost, closes, reopens and
//! checks a sample of both copies reads back.

use std::error::Error;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use uvdo::{FormatConfig, IndexConfig, OpenOptions, Volume, VolumeStats, WritePolicy};
use uvdo_format::BlockCount;
use uvdo_io::open::{OpenOptions as StoreOptions, open_store};

const BLOCK_BYTES: usize = 4096;
const DATA_SET_BYTES_MAX: usize = 128 << 20;
const STORE_BYTES_DEFAULT: u64 = 2 << 30;
const LOGICAL_PER_PHYSICAL: u64 = 4;
/// Slabs of 512 MiB, so a 2 GiB store holds several beside the journal and index.
const SLAB_BLOCKS: u64 = 1 << 17;
/// Dense index memory. 1.5 MiB indexes about 318k blocks (1.3 GB), far more than the data
/// set, and keeps the demo's index region small.
const INDEX_MEMORY_BYTES: u64 = 3 << 19;
/// Blocks per write request: 64 KiB, a typical filesystem I/O.
const REQUEST_BLOCKS: usize = 16;
/// Blocks checked after the reopen, spread evenly over both copies.
const SAMPLE_BLOCKS: usize = 4096;
/// Files are read from these trees, in order, until the cap is reached.
const SOURCES: [&str; 5] = [
    "/usr/lib/x86_64-linux-gnu",
    "/usr/share/doc",
    "/usr/lib",
    "/usr/share",
    "/usr/bin",
];

fn main() -> Result<(), Box<dyn Error>> {
    let mut args = std::env::args().skip(1);
    let path_arg = args.next().map(PathBuf::from);
    let store_bytes = match args.next() {
        Some(text) => parse_size(&text)?,
        None => STORE_BYTES_DEFAULT,
    };
    let keep = path_arg.is_some();
    let path = path_arg.unwrap_or_else(|| {
        std::env::temp_dir().join(format!("uvdo-dedupe-demo-{}.img", std::process::id()))
    });
    let _cleanup = Cleanup { path: &path, keep };

    let data = load_data_set();
    let blocks = data.len() / BLOCK_BYTES;
    if blocks == 0 {
        return Err("no readable files under /usr to use as a data set".into());
    }
    println!(
        "data set: {} blocks ({:.1} MB) from {}",
        blocks,
        mb(data.len() as u64),
        SOURCES.join(", ")
    );

    let store_options = StoreOptions {
        create_size: Some(store_bytes),
        ..StoreOptions::default()
    };
    let store = open_store(&path, &store_options)
        .map_err(|e| format!("cannot create {}: {e}", path.display()))?;
    let config = FormatConfig {
        slab_blocks: BlockCount(SLAB_BLOCKS),
        write_policy: WritePolicy::Async,
        index: IndexConfig {
            memory_bytes: INDEX_MEMORY_BYTES,
            sparse: false,
        },
        ..FormatConfig::new(BlockCount(
            store_bytes * LOGICAL_PER_PHYSICAL / BLOCK_BYTES as u64,
        ))
    };
    Volume::format(&*store, &config)?;
    let volume = Volume::open(Arc::clone(&store), &OpenOptions::default())?;
    println!(
        "volume: {} ({:.0} MB store, {:.0} MB logical, {} policy)",
        path.display(),
        mb(store_bytes),
        mb(volume.logical_bytes()),
        volume.write_policy().name()
    );

    let started = Instant::now();
    for copy in 0..2 {
        write_copy(&volume, &data, copy)?;
    }
    volume.flush()?;
    let elapsed_s = started.elapsed().as_secs_f64();
    print_table(&volume.stats(), 2 * data.len() as u64, elapsed_s);
    volume.close()?;
    drop(store);

    let store = open_store(&path, &StoreOptions::default())?;
    let volume = Volume::open(store, &OpenOptions::default())?;
    let checked = verify_sample(&volume, &data)?;
    volume.close()?;
    println!("reopened: {checked} sampled blocks of both copies read back intact");
    if keep {
        println!("kept {}", path.display());
    }
    Ok(())
}

/// Writes the data set at the offset of copy `copy`, in `REQUEST_BLOCKS` requests.
fn write_copy(volume: &Volume, data: &[u8], copy: usize) -> Result<(), Box<dyn Error>> {
    let base = (copy * data.len()) as u64;
    for (i, request) in data.chunks(REQUEST_BLOCKS * BLOCK_BYTES).enumerate() {
        let offset = base + (i * REQUEST_BLOCKS * BLOCK_BYTES) as u64;
        volume.write(offset, request, false)?;
    }
    Ok(())
}

/// Reads `SAMPLE_BLOCKS` blocks spread over both copies and compares them with the source.
fn verify_sample(volume: &Volume, data: &[u8]) -> Result<usize, Box<dyn Error>> {
    let blocks = data.len() / BLOCK_BYTES;
    let step = (2 * blocks).div_ceil(SAMPLE_BLOCKS).max(1);
    let mut buf = vec![0_u8; BLOCK_BYTES];
    let mut checked = 0;
    for logical in (0..2 * blocks).step_by(step) {
        volume.read((logical * BLOCK_BYTES) as u64, &mut buf)?;
        let source = logical % blocks;
        let want = &data[source * BLOCK_BYTES..(source + 1) * BLOCK_BYTES];
        if buf != want {
            return Err(format!("block {logical} read back different data").into());
        }
        checked += 1;
    }
    Ok(checked)
}

fn print_table(stats: &VolumeStats, logical_bytes: u64, elapsed_s: f64) {
    let physical_bytes = stats.data_blocks_used * stats.block_size;
    let saving = stats
        .saving_percent()
        .map_or_else(|| "n/a".to_owned(), |p| format!("{p} %"));
    let rows = [
        ("logical MB written", format!("{:.1}", mb(logical_bytes))),
        (
            "physical data MB used",
            format!("{:.1}", mb(physical_bytes)),
        ),
        ("space saving", saving),
        ("dedupe advice valid", stats.dedupe_advice_valid.to_string()),
        ("zero blocks", stats.zero_blocks_written.to_string()),
        (
            "write MB/s (incl. flush)",
            format!("{:.0}", mb(logical_bytes) / elapsed_s),
        ),
        (
            "device writes per block",
            format!("{:.3}", device_writes_per_block(stats, logical_bytes)),
        ),
    ];
    println!();
    println!("| {:<26} | {:>12} |", "what", "value");
    println!("|{:-<28}|{:->14}|", "", "");
    for (what, value) in rows {
        println!("| {what:<26} | {value:>12} |");
    }
    println!();
}

/// Up to `DATA_SET_BYTES_MAX` of regular files, each padded to whole blocks, in a stable
/// order (sorted directory walks).
fn load_data_set() -> Vec<u8> {
    let mut data = Vec::with_capacity(DATA_SET_BYTES_MAX);
    let mut seen = std::collections::HashSet::new();
    for root in SOURCES {
        if data.len() >= DATA_SET_BYTES_MAX {
            break;
        }
        let mut stack = vec![PathBuf::from(root)];
        while let Some(dir) = stack.pop() {
            if data.len() >= DATA_SET_BYTES_MAX {
                break;
            }
            let Ok(entries) = fs::read_dir(&dir) else {
                continue;
            };
            let mut paths: Vec<PathBuf> =
                entries.filter_map(|e| e.ok().map(|e| e.path())).collect();
            paths.sort();
            // Reversed so the stack pops directories in sorted order.
            for path in paths.into_iter().rev() {
                let Ok(meta) = fs::symlink_metadata(&path) else {
                    continue;
                };
                if meta.is_dir() {
                    stack.push(path);
                } else if meta.is_file() && seen.insert(path.clone()) {
                    append_file(&mut data, &path);
                    if data.len() >= DATA_SET_BYTES_MAX {
                        break;
                    }
                }
            }
        }
    }
    data.truncate(DATA_SET_BYTES_MAX);
    data
}

fn append_file(data: &mut Vec<u8>, path: &Path) {
    let Ok(bytes) = fs::read(path) else {
        return;
    };
    if bytes.is_empty() {
        return;
    }
    data.extend_from_slice(&bytes);
    let padded = data.len().div_ceil(BLOCK_BYTES) * BLOCK_BYTES;
    data.resize(padded, 0);
}

fn parse_size(text: &str) -> Result<u64, Box<dyn Error>> {
    let (digits, shift) = match text.trim().to_ascii_uppercase() {
        t if t.ends_with('G') => (t.trim_end_matches('G').to_owned(), 30),
        t if t.ends_with('M') => (t.trim_end_matches('M').to_owned(), 20),
        t if t.ends_with('K') => (t.trim_end_matches('K').to_owned(), 10),
        t => (t, 0),
    };
    let value: u64 = digits
        .parse()
        .map_err(|_| format!("size {text:?}: expected a number with K, M or G"))?;
    value
        .checked_mul(1 << shift)
        .filter(|bytes| bytes.is_multiple_of(BLOCK_BYTES as u64) && *bytes > 0)
        .ok_or_else(|| format!("size {text:?}: expected whole 4 KiB blocks").into())
}

/// Data plus metadata blocks written to the store per 4 KiB block the demo wrote (requests
/// are 16 blocks each, so the engine's per-request ratio would read 16x higher).
fn device_writes_per_block(stats: &VolumeStats, logical_bytes: u64) -> f64 {
    let device = stats.bios_out.write + stats.bios_meta_write;
    #[expect(clippy::cast_precision_loss, reason = "a ratio for display")]
    let ratio = device as f64 / (logical_bytes / BLOCK_BYTES as u64) as f64;
    ratio
}

fn mb(bytes: u64) -> f64 {
    #[expect(clippy::cast_precision_loss, reason = "megabytes for display")]
    let bytes = bytes as f64;
    bytes / 1e6
}

/// Removes the demo's own file on every exit path, unless the user named it.
struct Cleanup<'a> {
    path: &'a Path,
    keep: bool,
}

impl Drop for Cleanup<'_> {
    fn drop(&mut self) {
        if !self.keep {
            let _ = fs::remove_file(self.path);
        }
    }
}
