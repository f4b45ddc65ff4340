//! A loop device over a scratch file for tests that need a real block device, detached on drop.
//! Needs root, `losetup` and `/dev/loop-control`; `attach` says why not when they are missing.

use std::path::{Path, PathBuf};
use std::process::Command;

/// An attached loop device.
#[derive(Debug)]
pub(crate) struct LoopDevice {
    pub(crate) path: PathBuf,
}

impl LoopDevice {
    /// Attaches `backing`, or the reason it could not be done.
    pub(crate) fn attach(backing: &Path) -> Result<Self, String> {
        if !Path::new("/dev/loop-control").exists() {
            return Err("/dev/loop-control is missing".to_owned());
        }
        let output = Command::new("losetup")
            .arg("--find")
            .arg("--show")
            .arg(backing)
            .output()
            .map_err(|e| format!("cannot run losetup: {e}"))?;
        if !output.status.success() {
            return Err(format!(
                "losetup failed: {}",
                String::from_utf8_lossy(&output.stderr).trim()
            ));
        }
        let path = String::from_utf8_lossy(&output.stdout).trim().to_owned();
        Ok(Self {
            path: PathBuf::from(path),
        })
    }
}

impl Drop for LoopDevice {
    fn drop(&mut self) {
        let status = Command::new("losetup").arg("-d").arg(&self.path).status();
        if !matches!(status, Ok(s) if s.success()) {
            eprintln!("could not detach {}: {status:?}", self.path.display());
        }
    }
}
