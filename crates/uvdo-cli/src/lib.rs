//! uvdo-cli: the administrator's tools for uvdo volumes, after Red Hat's VDO manager: `uvdo`
//! (create, start, stop, remove, status, ... with VDO's camelCase commands, messages and exit
//! codes) and `uvdostats` (VDO's df-style table, `--verbose` field list, and JSON in which
//! every unavailable value says why).
//!
//! This crate owns the registry (a TOML file, replaced atomically under a lock, recording
//! each volume and the operation in progress on it), the per-volume daemon (which owns the
//! device through a lock file, opens the volume, serves it over NBD with `uvdo-nbd` and
//! answers a JSON-lines control socket), and the rendering of status and statistics. It never
//! reads or writes a volume's metadata except through the engine's `Volume` API, or, for a
//! stopped volume, by decoding the geometry and super block with `uvdo-format` without
//! writing anything. Engine errors become exit codes in one place (`error::volume_status`).

pub mod cli;
pub mod commands;
pub mod control;
pub mod daemon;
pub mod error;
pub mod offline;
pub mod owner;
pub mod registry;
pub mod size;
pub mod stats;
pub mod time;

pub use commands::run;
pub use error::{CliError, CliResult, ExitStatus};

/// Prints `e` as VDO does and returns the exit code.
#[must_use]
pub fn report(program: &str, e: &CliError) -> std::process::ExitCode {
    eprintln!("{program}: ERROR - {}", e.message);
    std::process::ExitCode::from(e.status.code())
}
