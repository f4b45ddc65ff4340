//! Exclusive ownership of a volume's device: one daemon at a time, whatever registry started
//! it (SPEC section 8, "exclusive attach").
//!
//! The owner holds an `flock` on a lock file beside the device for its whole life and writes
//! an owner record (pid, volume name, registry, host, since) into it; a clean stop empties the
//! file. So: the lock held means a live owner (refused, naming it); the lock free but a record
//! present means an owner that died (a stale lock), which only an explicit `--force` takes
//! over. The super block has an `owner` field too, but the engine has no API to set it yet, so
//! the lock file is the only record.
//!
//! The lock file is `.<device file name>.uvdo-lock` in the device's directory, or, for devices
//! under `/dev`, `/run/lock/uvdo/<path with / replaced by _>.lock`.

use std::fs::{self, File, OpenOptions};
use std::io::{Read, Seek, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use nix::fcntl::{Flock, FlockArg};
use serde::{Deserialize, Serialize};

use crate::error::{CliError, CliResult};

/// Who owns a volume.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct OwnerRecord {
    /// The daemon's pid.
    pub pid: u32,
    /// The volume's name in the owner's registry.
    pub name: String,
    /// The owner's registry file.
    pub registry: PathBuf,
    /// The host name.
    pub host: String,
    /// Since when, unix seconds.
    pub since_s: u64,
}

impl OwnerRecord {
    /// "pid P (volume N of registry R on host H)".
    #[must_use]
    pub fn describe(&self) -> String {
        format!(
            "pid {} (volume {} of {} on {}, since {})",
            self.pid,
            self.name,
            self.registry.display(),
            self.host,
            crate::time::rfc3339(self.since_s)
        )
    }
}

/// The state of a device's ownership, as seen without taking it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum OwnerState {
    /// Nobody owns it.
    Free,
    /// A live daemon owns it.
    Held(OwnerRecord),
    /// The recorded owner died without releasing it.
    Stale(OwnerRecord),
}

/// The held ownership of a device; dropping it without [`OwnerLock::release`] leaves the
/// record (as a crash would), so the next owner sees a stale lock.
#[derive(Debug)]
pub struct OwnerLock {
    file: Flock<File>,
}

/// The lock file for `device`.
#[must_use]
pub fn lock_path(device: &Path) -> PathBuf {
    let device = fs::canonicalize(device).unwrap_or_else(|_| device.to_path_buf());
    if device.starts_with("/dev") {
        let flat = device.to_string_lossy().replace('/', "_");
        return PathBuf::from(format!("/run/lock/uvdo/{flat}.lock"));
    }
    let name = device
        .file_name()
        .map_or_else(|| "device".into(), |n| n.to_string_lossy().into_owned());
    device.with_file_name(format!(".{name}.uvdo-lock"))
}

fn open_lock(device: &Path) -> CliResult<File> {
    let path = lock_path(device);
    if let Some(parent) = path.parent() {
        let _ = fs::create_dir_all(parent);
    }
    OpenOptions::new()
        .create(true)
        .truncate(false)
        .read(true)
        .write(true)
        .mode(0o600)
        .open(&path)
        .map_err(|e| CliError::system(format!("cannot open {}: {e}", path.display())))
}

fn read_record(file: &mut File) -> Option<OwnerRecord> {
    let mut text = String::new();
    file.rewind().ok()?;
    file.read_to_string(&mut text).ok()?;
    serde_json::from_str(text.trim()).ok()
}

fn pid_alive(pid: u32) -> bool {
    let Ok(pid) = i32::try_from(pid) else {
        return false;
    };
    let exists = !matches!(
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None),
        Err(nix::errno::Errno::ESRCH)
    );
    // A killed daemon nobody reaped yet is a zombie: dead, though its pid exists.
    let zombie = fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| s.rsplit_once(") ").map(|(_, rest)| rest.starts_with('Z')))
        .unwrap_or(false);
    exists && !zombie
}

/// Who owns `device`, without taking it: a record whose pid is alive is held, else stale.
#[must_use]
pub fn probe(device: &Path) -> OwnerState {
    let Ok(mut file) = File::open(lock_path(device)) else {
        return OwnerState::Free;
    };
    match read_record(&mut file) {
        None => OwnerState::Free,
        Some(r) if pid_alive(r.pid) => OwnerState::Held(r),
        Some(r) => OwnerState::Stale(r),
    }
}

/// Takes ownership of `device` for `record`. A stale owner is taken over only with
/// `take_over` (the returned record says whom it replaced).
///
/// # Errors
///
/// Exit 5 when a live owner holds it (naming it), or when the lock is stale and `take_over`
/// is false (saying how to proceed).
pub fn claim(
    device: &Path,
    record: &OwnerRecord,
    take_over: bool,
) -> CliResult<(OwnerLock, Option<OwnerRecord>)> {
    let file = open_lock(device)?;
    let mut file = match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
        Ok(lock) => lock,
        Err((mut file, _)) => {
            let owner = read_record(&mut file)
                .map_or_else(|| "another process".to_owned(), |r| r.describe());
            return Err(CliError::state(format!(
                "device {} is in use by {owner}; stop it there first",
                device.display()
            )));
        }
    };
    let previous = read_record(&mut file);
    if let Some(previous) = &previous
        && !take_over
    {
        return Err(CliError::state(format!(
            "device {} was owned by {}, which ended without stopping the volume (stale lock {}); \
             make sure no other host uses the device, then add '--force' to 'start' to take \
             it over (recovery runs on start)",
            device.display(),
            previous.describe(),
            lock_path(device).display()
        )));
    }
    let mut lock = OwnerLock { file };
    lock.write(Some(record))?;
    Ok((lock, previous))
}

impl OwnerLock {
    fn write(&mut self, record: Option<&OwnerRecord>) -> CliResult<()> {
        let text = record.map_or_else(String::new, |r| {
            serde_json::to_string(r).unwrap_or_default() + "\n"
        });
        let file: &mut File = &mut self.file;
        let result = file
            .set_len(0)
            .and_then(|()| file.rewind())
            .and_then(|()| file.write_all(text.as_bytes()))
            .and_then(|()| file.sync_all());
        result.map_err(|e| CliError::system(format!("cannot write the owner record: {e}")))
    }

    /// Gives ownership up cleanly: the record is emptied, then the lock released.
    ///
    /// # Errors
    ///
    /// The record cannot be emptied (the next start then sees a stale lock).
    pub fn release(mut self) -> CliResult<()> {
        self.write(None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(pid: u32) -> OwnerRecord {
        OwnerRecord {
            pid,
            name: "v".into(),
            registry: "/r.toml".into(),
            host: "h".into(),
            since_s: 0,
        }
    }

    #[test]
    fn held_refused_stale_needs_force_released_is_free() {
        let dir = tempfile::tempdir().unwrap();
        let device = dir.path().join("dev.img");
        fs::write(&device, b"").unwrap();
        let (lock, previous) = claim(&device, &record(std::process::id()), false).unwrap();
        assert_eq!(previous, None);
        assert!(matches!(probe(&device), OwnerState::Held(_)));
        let err = claim(&device, &record(1), false).unwrap_err();
        assert!(err.message.contains("in use by pid"), "{}", err.message);
        drop(lock); // as a crash: the record stays, the lock goes
        // A pid that cannot exist: the owner is dead.
        let (lock, _) = claim(&device, &record(u32::MAX), true).unwrap();
        drop(lock);
        assert!(matches!(probe(&device), OwnerState::Stale(_)));
        let err = claim(&device, &record(1), false).unwrap_err();
        assert!(err.message.contains("--force"), "{}", err.message);
        let (lock, previous) = claim(&device, &record(7), true).unwrap();
        assert_eq!(previous.map(|r| r.pid), Some(u32::MAX));
        lock.release().unwrap();
        assert_eq!(probe(&device), OwnerState::Free);
    }
}
