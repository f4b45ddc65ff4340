//! Does the device under a path have a volatile write cache? (The `auto` write policy.)
//!
//! The answer comes from `/sys/block/<disk>/queue/write_cache`: "write back" means completed
//! writes can be lost until a flush, "write through" means they cannot. To find the disk:
//!
//! - a block device is looked up by its major:minor under `/sys/dev/block`; a regular file (or
//!   anything else) by the device of the filesystem holding it (`st_dev`);
//! - a partition (a `partition` file) answers for its parent disk;
//! - a loop device (`loop/backing_file`) answers as the path of its backing file does;
//! - a stacked device, device-mapper or md (entries in `slaves/`), is write-back if any of its
//!   slaves is, write-through if all of them are, and unknown otherwise;
//! - a filesystem with no block device (tmpfs, overlay, anything with major 0) is unknown.
//!
//! Each step down counts against [`DEPTH_MAX`], so a loop device whose backing file lives on
//! itself, or any other cycle, ends as `Unknown` instead of recursing forever. The walk takes
//! the sysfs root and a `stat` function as parameters, so tests run it on a fake tree.

use std::fs;
use std::io;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

/// Steps down the walk may take from the first device to a disk (a loop to its backing
/// file's device, a partition to its disk, a stacked device to a slave).
pub const DEPTH_MAX: u32 = 8;
/// Slaves looked at per stacked device.
pub const SLAVES_MAX: usize = 256;

/// Whether completed writes can be lost until a flush.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum WriteCache {
    /// A volatile cache: completed writes need a flush to be durable.
    WriteBack,
    /// No volatile cache: completed writes are durable.
    WriteThrough,
    /// Could not tell; the reason.
    Unknown(String),
}

/// A device number.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct DevNumber {
    /// Major number (0 for devices with no block device behind them).
    pub major: u64,
    /// Minor number.
    pub minor: u64,
}

impl DevNumber {
    /// Splits a `dev_t`.
    #[must_use]
    pub fn from_dev_t(dev: u64) -> Self {
        Self {
            major: nix::sys::stat::major(dev),
            minor: nix::sys::stat::minor(dev),
        }
    }
}

/// What `stat` says about a path, as far as this module cares.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PathNode {
    /// The path is a block device with this device number (`st_rdev`).
    BlockDevice(DevNumber),
    /// The path lives on the filesystem of this device (`st_dev`).
    OnFilesystem(DevNumber),
}

/// `stat` on the real filesystem.
///
/// # Errors
///
/// As `std::fs::metadata`.
pub fn stat_node(path: &Path) -> io::Result<PathNode> {
    let meta = fs::metadata(path)?;
    Ok(if meta.file_type().is_block_device() {
        PathNode::BlockDevice(DevNumber::from_dev_t(meta.rdev()))
    } else {
        PathNode::OnFilesystem(DevNumber::from_dev_t(meta.dev()))
    })
}

/// The write cache of the device holding `path` on this machine.
#[must_use]
pub fn detect_write_cache(path: &Path) -> WriteCache {
    detect_write_cache_with(Path::new("/sys"), path, &stat_node)
}

/// The write cache of the device holding `path`, reading sysfs under `sysfs_root` and asking
/// `stat` what a path is.
pub fn detect_write_cache_with(
    sysfs_root: &Path,
    path: &Path,
    stat: &dyn Fn(&Path) -> io::Result<PathNode>,
) -> WriteCache {
    Walk { sysfs_root, stat }.path(path, 0)
}

struct Walk<'a> {
    sysfs_root: &'a Path,
    stat: &'a dyn Fn(&Path) -> io::Result<PathNode>,
}

impl Walk<'_> {
    fn path(&self, path: &Path, depth: u32) -> WriteCache {
        match (self.stat)(path) {
            Ok(PathNode::BlockDevice(dev) | PathNode::OnFilesystem(dev)) => self.dev(dev, depth),
            Err(e) => unknown(format!("cannot stat {}: {e}", path.display())),
        }
    }

    fn dev(&self, dev: DevNumber, depth: u32) -> WriteCache {
        if dev.major == 0 {
            return unknown(format!(
                "device {}:{} has no block device behind it (tmpfs, overlay or similar)",
                dev.major, dev.minor
            ));
        }
        let link = self
            .sysfs_root
            .join(format!("dev/block/{}:{}", dev.major, dev.minor));
        match fs::canonicalize(&link) {
            Ok(dir) => self.device_dir(&dir, depth),
            Err(e) => unknown(format!("no sysfs entry {}: {e}", link.display())),
        }
    }

    /// `dir` is a device's directory in sysfs (`.../block/<disk>[/<partition>]`).
    fn device_dir(&self, dir: &Path, depth: u32) -> WriteCache {
        if depth > DEPTH_MAX {
            return unknown(format!(
                "more than {DEPTH_MAX} levels of devices stacked above {}",
                dir.display()
            ));
        }
        if let Some(backing) = read_attribute(&dir.join("loop/backing_file")) {
            return self.path(Path::new(&backing), depth + 1);
        }
        let slaves = list_slaves(dir);
        if !slaves.is_empty() {
            return self.slaves(dir, &slaves, depth);
        }
        if dir.join("partition").exists() {
            return match dir.parent() {
                Some(disk) => self.device_dir(disk, depth + 1),
                None => unknown(format!("partition {} has no parent disk", dir.display())),
            };
        }
        let attribute = dir.join("queue/write_cache");
        match read_attribute(&attribute) {
            Some(value) => parse_write_cache(&value),
            None => unknown(format!("cannot read {}", attribute.display())),
        }
    }

    fn slaves(&self, dir: &Path, slaves: &[PathBuf], depth: u32) -> WriteCache {
        if slaves.len() > SLAVES_MAX {
            return unknown(format!(
                "{} has more than {SLAVES_MAX} slaves",
                dir.display()
            ));
        }
        let mut reasons = Vec::new();
        for slave in slaves {
            let answer = match fs::canonicalize(slave) {
                Ok(slave_dir) => self.device_dir(&slave_dir, depth + 1),
                Err(e) => unknown(format!("cannot resolve {}: {e}", slave.display())),
            };
            match answer {
                WriteCache::WriteBack => return WriteCache::WriteBack,
                WriteCache::WriteThrough => {}
                WriteCache::Unknown(reason) => reasons.push(reason),
            }
        }
        if reasons.is_empty() {
            WriteCache::WriteThrough
        } else {
            unknown(reasons.join("; "))
        }
    }
}

/// Reads `queue/write_cache`'s value.
#[must_use]
pub fn parse_write_cache(value: &str) -> WriteCache {
    match value.trim() {
        "write back" => WriteCache::WriteBack,
        "write through" => WriteCache::WriteThrough,
        other => unknown(format!("unexpected write_cache value {other:?}")),
    }
}

fn unknown(reason: String) -> WriteCache {
    WriteCache::Unknown(reason)
}

/// A sysfs attribute without its trailing newline; `None` if absent, unreadable or empty.
fn read_attribute(path: &Path) -> Option<String> {
    let value = fs::read_to_string(path).ok()?;
    let value = value.trim_end_matches('\n');
    (!value.is_empty()).then(|| value.to_owned())
}

/// The entries of `dir/slaves`, sorted so answers and reasons are deterministic. Taking one
/// more than the limit lets the caller see that the limit was passed.
fn list_slaves(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = fs::read_dir(dir.join("slaves")) else {
        return Vec::new();
    };
    let mut slaves: Vec<PathBuf> = entries
        .filter_map(Result::ok)
        .take(SLAVES_MAX + 1)
        .map(|entry| entry.path())
        .collect();
    slaves.sort();
    slaves
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn write_cache_values_are_parsed() {
        assert_eq!(parse_write_cache("write back\n"), WriteCache::WriteBack);
        assert_eq!(parse_write_cache("write through"), WriteCache::WriteThrough);
        assert!(
            matches!(parse_write_cache("bogus"), WriteCache::Unknown(r) if r.contains("bogus"))
        );
    }

    #[test]
    fn dev_t_is_split() {
        let dev = DevNumber::from_dev_t(nix::sys::stat::makedev(254, 3));
        assert_eq!(
            dev,
            DevNumber {
                major: 254,
                minor: 3
            }
        );
    }
}
