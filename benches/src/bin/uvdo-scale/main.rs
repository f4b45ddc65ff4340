//! uvdo-scale: how the engine's memory and times grow with the volume (the "Scale" part of the
//! benchmark harness; docs/BENCHMARKS.md, "Scale").
//!
//! For each size (default 1, 4 and 16 GiB), on a fresh sparse store file: write that much
//! unique data and measure the process's RSS beside the engine's own accounting; time a clean
//! open; fill the recovery journal, crash, and time recovery; time a force rebuild. Each phase
//! runs in a fresh child process (this binary re-executed with a hidden subcommand,
//! `child.rs`), so its RSS is its own and the crash is a real process exit. Prints a Markdown
//! table with growth per GiB between sizes and the SPEC section 10 floors for recovery and
//! rebuild, and writes the same as JSON. It measures and reports: a floor that fails is
//! printed as such, and the exit status is 0 unless a phase itself failed.

mod child;
mod growth;
mod proc_status;
mod record;
mod report;
mod shape;
mod unique;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use record::Record;
use report::{Run, SizeResult, size_label};
use shape::{BLOCK_BYTES, Shape};

pub(crate) type BenchError = Box<dyn std::error::Error + Send + Sync>;

/// The hidden subcommand a child runs.
const CHILD: &str = "__child";

const USAGE: &str = "usage: uvdo-scale [--sizes 1G,4G,16G] [--dir DIR] [--json FILE] [--smoke] \
                     [--slab-blocks N] [--journal-blocks N] [--index-mib N]";

/// Command-line settings.
#[derive(Debug)]
struct Args {
    sizes: Vec<u64>,
    dir: PathBuf,
    json: PathBuf,
    smoke: bool,
    slab_blocks: u64,
    journal_blocks: u64,
    index_bytes: u64,
}

impl Args {
    /// VDO's defaults at 1, 4 and 16 GiB; with `--smoke`, 16 and 64 MiB on a small geometry
    /// (4 MiB slabs, a 64-block journal, a 1 MiB index) that runs in seconds.
    fn defaults(smoke: bool) -> Self {
        let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
        let target = manifest.parent().unwrap_or(manifest).join("target");
        if smoke {
            Self {
                sizes: vec![16 << 20, 64 << 20],
                json: target.join("scale-smoke.json"),
                dir: target,
                smoke,
                slab_blocks: 1 << 10,
                journal_blocks: 64,
                index_bytes: 1 << 20,
            }
        } else {
            Self {
                sizes: vec![1 << 30, 4 << 30, 16 << 30],
                json: target.join("scale.json"),
                dir: target,
                smoke,
                slab_blocks: uvdo_format::layout::SLAB_BLOCKS_DEFAULT,
                journal_blocks: uvdo_format::layout::RECOVERY_JOURNAL_BLOCKS_DEFAULT,
                index_bytes: uvdo_format::layout::INDEX_MEMORY_BYTES_DEFAULT,
            }
        }
    }

    fn shape(&self, size_bytes: u64) -> Shape {
        Shape {
            size_bytes,
            slab_blocks: self.slab_blocks,
            journal_blocks: self.journal_blocks,
            index_bytes: self.index_bytes,
        }
    }
}

fn parse_args(argv: &[String]) -> Result<Args, BenchError> {
    let mut args = Args::defaults(argv.iter().any(|a| a == "--smoke"));
    let mut it = argv.iter();
    while let Some(flag) = it.next() {
        match flag.as_str() {
            "--smoke" | "--bench" => continue,
            "--help" | "-h" => {
                println!("{USAGE}");
                std::process::exit(0);
            }
            _ => {}
        }
        let value = it
            .next()
            .ok_or_else(|| format!("{flag} needs a value\n{USAGE}"))?;
        let number = || -> Result<u64, BenchError> {
            let n = value.parse::<u64>().ok().filter(|&n| n > 0);
            n.ok_or_else(|| format!("{flag}: expected a positive number, found {value:?}").into())
        };
        match flag.as_str() {
            "--sizes" => args.sizes = parse_sizes(value)?,
            "--dir" => args.dir = PathBuf::from(value),
            "--json" => args.json = PathBuf::from(value),
            "--slab-blocks" => args.slab_blocks = number()?,
            "--journal-blocks" => args.journal_blocks = number()?,
            "--index-mib" => args.index_bytes = number()? << 20,
            _ => return Err(format!("unknown argument {flag:?}\n{USAGE}").into()),
        }
    }
    Ok(args)
}

/// `1G,4G,16G`: sizes with an optional binary suffix (K, M, G, T; `iB` allowed), each a
/// positive multiple of 4 KiB, in increasing order.
fn parse_sizes(text: &str) -> Result<Vec<u64>, BenchError> {
    let sizes = text
        .split(',')
        .map(|part| parse_size(part.trim()))
        .collect::<Result<Vec<_>, _>>()?;
    if !sizes.is_sorted_by(|a, b| a < b) {
        return Err(format!("--sizes {text}: sizes must increase").into());
    }
    Ok(sizes)
}

fn parse_size(text: &str) -> Result<u64, BenchError> {
    let bad = || -> BenchError { format!("bad size {text:?}: expected e.g. 16M or 4G").into() };
    let digits = text.trim_end_matches(|c: char| c.is_ascii_alphabetic());
    let suffix = &text[digits.len()..];
    let shift = match suffix.trim_end_matches("iB").trim_end_matches('B') {
        "" => 0,
        "K" | "k" => 10,
        "M" | "m" => 20,
        "G" | "g" => 30,
        "T" | "t" => 40,
        _ => return Err(bad()),
    };
    let bytes = digits
        .parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(1 << shift))
        .filter(|&b| b > 0 && b.is_multiple_of(BLOCK_BYTES))
        .ok_or_else(bad)?;
    Ok(bytes)
}

fn main() -> Result<(), BenchError> {
    let argv: Vec<String> = std::env::args().skip(1).collect();
    if argv.first().map(String::as_str) == Some(CHILD) {
        return child::run(&argv[1..]);
    }
    let args = parse_args(&argv)?;
    std::fs::create_dir_all(&args.dir)
        .map_err(|e| format!("cannot create {}: {e}", args.dir.display()))?;
    let load_start = uvdo_benches::loadavg();
    let started = Instant::now();
    let results: Vec<SizeResult> = args
        .sizes
        .iter()
        .map(|&size| measure(&args, args.shape(size)))
        .collect();
    let run = Run {
        date: uvdo_benches::utc_now(),
        load_start,
        load_end: uvdo_benches::loadavg(),
        dir: args.dir.display().to_string(),
        smoke: args.smoke,
        wall_s: started.elapsed().as_secs_f64(),
        results,
    };
    print!("{}", run.markdown());
    std::fs::write(&args.json, run.json())
        .map_err(|e| format!("cannot write {}: {e}", args.json.display()))?;
    println!("\nJSON: {}", args.json.display());
    let failed = run.results.iter().filter(|s| s.error.is_some()).count();
    if failed > 0 {
        return Err(format!("{failed} size(s) failed to run (see above)").into());
    }
    Ok(())
}

/// Every phase of one size, each in its own child, on one store file removed at the end.
fn measure(args: &Args, shape: Shape) -> SizeResult {
    let label = size_label(shape.size_bytes);
    let file = args.dir.join(format!(
        "uvdo-scale-{}-{}.img",
        std::process::id(),
        shape.size_bytes
    ));
    let file = RemoveOnDrop(file);
    let started = Instant::now();
    let mut record = Record::default();
    let mut error = None;
    for phase in child::PHASES {
        eprintln!("== {label}: {phase}");
        match run_child(phase, &file.0, shape) {
            Ok(figures) => record.merge(phase, &figures),
            Err(e) => {
                eprintln!("== {label}: {phase} failed: {e}");
                error = Some(format!("{phase}: {e}"));
                break;
            }
        }
    }
    SizeResult {
        shape,
        record,
        error,
        wall_s: started.elapsed().as_secs_f64(),
    }
}

fn run_child(phase: &str, path: &Path, shape: Shape) -> Result<Record, BenchError> {
    let output = Command::new(std::env::current_exe()?)
        .arg(CHILD)
        .arg(phase)
        .arg(path)
        .args(shape.to_args())
        .stdin(Stdio::null())
        .stderr(Stdio::inherit())
        .output()?;
    if !output.status.success() {
        return Err(format!("child exited with {}", output.status).into());
    }
    Ok(Record::parse(&String::from_utf8_lossy(&output.stdout)))
}

/// Removes a store file when dropped, whether its size finished or not.
struct RemoveOnDrop(PathBuf);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_take_binary_suffixes_and_must_be_whole_blocks() {
        assert_eq!(
            parse_sizes("1G,4G,16G").unwrap(),
            vec![1 << 30, 4 << 30, 16 << 30]
        );
        assert_eq!(
            parse_sizes("16M, 64MiB,1T").unwrap(),
            vec![16 << 20, 64 << 20, 1 << 40]
        );
        assert_eq!(parse_size("8192").unwrap(), 8192);
        assert_eq!(parse_size("4k").unwrap(), 4096);
        for bad in ["", "0G", "1X", "G", "1000", "-1G", "99999999999T"] {
            assert!(parse_size(bad).is_err(), "{bad}");
        }
        assert!(parse_sizes("4G,1G").is_err());
        assert!(parse_sizes("1G,1G").is_err());
    }

    #[test]
    fn smoke_is_small_and_flags_override_it() {
        let argv: Vec<String> = ["--journal-blocks", "128", "--smoke", "--sizes", "8M"]
            .iter()
            .map(ToString::to_string)
            .collect();
        let args = parse_args(&argv).unwrap();
        assert!(args.smoke);
        assert_eq!(args.sizes, vec![8 << 20]);
        assert_eq!(args.journal_blocks, 128);
        assert_eq!(args.slab_blocks, 1 << 10);
        assert!(args.json.ends_with("scale-smoke.json"));
        assert!(parse_args(&["--nope".to_owned(), "1".to_owned()]).is_err());
        assert!(parse_args(&["--dir".to_owned()]).is_err());
    }
}
