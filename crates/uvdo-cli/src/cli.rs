//! The command line of `uvdo`: VDO's camelCase commands and options.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

/// Manage uvdo volumes (after Red Hat's `vdo`).
#[derive(Debug, Parser)]
#[command(name = "uvdo", version, about)]
pub struct Cli {
    /// The registry file (default: $UVDO_CONF, else /etc/uvdo/uvdo.toml).
    #[arg(short = 'f', long = "confFile", global = true)]
    pub conf_file: Option<PathBuf>,
    /// The command.
    #[command(subcommand)]
    pub command: Command,
}

/// `--name N` or `--all`.
#[derive(Debug, Args, Clone)]
pub struct Select {
    /// The volume.
    #[arg(short = 'n', long = "name", required_unless_present = "all")]
    pub name: Option<String>,
    /// Every volume in the registry.
    #[arg(short = 'a', long = "all", conflicts_with = "name")]
    pub all: bool,
}

/// `--name N` only.
#[derive(Debug, Args, Clone)]
pub struct Name {
    /// The volume.
    #[arg(short = 'n', long = "name")]
    pub name: String,
}

/// `--name N` or `--device D`, for the offline tools.
#[derive(Debug, Args, Clone)]
pub struct Target {
    /// A registered volume.
    #[arg(short = 'n', long = "name", required_unless_present = "device")]
    pub name: Option<String>,
    /// A device or file holding a volume.
    #[arg(long = "device", conflicts_with = "name")]
    pub device: Option<PathBuf>,
}

/// The commands.
#[derive(Debug, Subcommand)]
#[command(rename_all = "camelCase")]
pub enum Command {
    /// Format a device as a volume, register it, and start it unless --activate=disabled.
    Create(Create),
    /// Register a volume from what the device records (rebuilds a lost registry entry).
    Import(Import),
    /// Start the daemon serving the volume over NBD; prints the NBD URI.
    Start(Start),
    /// Stop the daemon cleanly (drain, save metadata, mark clean).
    Stop {
        /// Which volumes.
        #[command(flatten)]
        select: Select,
        /// Kill a daemon that does not answer.
        #[arg(long)]
        force: bool,
    },
    /// Stop and unregister; the data stays unless --wipe.
    Remove {
        /// Which volumes.
        #[command(flatten)]
        select: Select,
        /// Clean up after an incomplete operation, or a missing device.
        #[arg(long)]
        force: bool,
        /// Also zero the geometry block, destroying the volume.
        #[arg(long)]
        wipe: bool,
    },
    /// Show configuration, state and statistics (YAML, or JSON with --json).
    Status {
        /// One volume (default: all).
        #[arg(short = 'n', long = "name")]
        name: Option<String>,
        /// All volumes (the default).
        #[arg(short = 'a', long = "all", conflicts_with = "name")]
        all: bool,
        /// JSON instead of YAML.
        #[arg(long)]
        json: bool,
    },
    /// List running volumes (with --all, every registered one).
    List {
        /// Every registered volume.
        #[arg(short = 'a', long = "all")]
        all: bool,
    },
    /// Allow the volume to start.
    Activate(Select),
    /// Forbid the volume to start (a running one keeps running).
    Deactivate(Select),
    /// Change the write policy (of a running volume, at once).
    ChangeWritePolicy {
        /// Which volumes.
        #[command(flatten)]
        select: Select,
        /// sync, async, async-unsafe or auto.
        #[arg(long = "writePolicy")]
        write_policy: String,
    },
    /// Change settings that apply at the next start.
    Modify {
        /// Which volumes.
        #[command(flatten)]
        select: Select,
        /// Block map cache size (e.g. 128M).
        #[arg(long = "blockMapCacheSize")]
        block_map_cache_size: Option<String>,
        /// Serve over TCP on 127.0.0.1 at this port (0: back to the Unix socket).
        #[arg(long = "tcpPort")]
        tcp_port: Option<u16>,
    },
    /// Turn compression on (stored; compression is not implemented yet).
    EnableCompression(Select),
    /// Turn compression off.
    DisableCompression(Select),
    /// Turn deduplication on.
    EnableDeduplication(Select),
    /// Turn deduplication off.
    DisableDeduplication(Select),
    /// Grow the logical size of a running volume.
    GrowLogical {
        /// Which volume.
        #[command(flatten)]
        name: Name,
        /// The new logical size.
        #[arg(long = "vdoLogicalSize")]
        size: String,
    },
    /// Grow a running volume into the whole backing device (enlarge the device first).
    GrowPhysical(Name),
    /// Print the registry file.
    PrintConfigFile,
    /// Print the version.
    Version,
    /// Offline consistency check of a stopped volume (exit 0 only when clean).
    Audit(Target),
    /// Print the geometry and settings a volume records (vdodumpconfig).
    DumpConfig(Target),
    /// Print where each metadata region is (vdolistmetadata).
    ListMetadata(Target),
    /// The per-volume daemon (started by `start`).
    #[command(hide = true)]
    Daemon {
        /// The volume.
        #[command(flatten)]
        name: Name,
        /// Rebuild reference counts first.
        #[arg(long = "forceRebuild")]
        force_rebuild: bool,
        /// Take over from a dead owner.
        #[arg(long)]
        force: bool,
        /// Stay attached.
        #[arg(long)]
        foreground: bool,
    },
}

/// `create`'s options.
#[derive(Debug, Args)]
pub struct Create {
    /// The volume's name.
    #[arg(short = 'n', long = "name")]
    pub name: String,
    /// The device or file to format.
    #[arg(long = "device")]
    pub device: PathBuf,
    /// Start it after creating it (enabled|disabled).
    #[arg(long = "activate", default_value = "enabled")]
    pub activate: String,
    /// Logical size (default: the device's size).
    #[arg(long = "vdoLogicalSize")]
    pub logical_size: Option<String>,
    /// sync, async, async-unsafe or auto.
    #[arg(long = "writePolicy", default_value = "auto")]
    pub write_policy: String,
    /// Dedupe index memory: 0.25, 0.5, 0.75, a number of GB, or a size such as 64M.
    #[arg(long = "indexMem")]
    pub index_mem: Option<String>,
    /// Sparse index (enabled|disabled).
    #[arg(long = "sparseIndex", default_value = "disabled")]
    pub sparse_index: String,
    /// Slab size: a power of two (default scaled to the device, at most 2G).
    #[arg(long = "vdoSlabSize")]
    pub slab_size: Option<String>,
    /// Compression (enabled|disabled; stored, not implemented yet).
    #[arg(long = "compression", default_value = "disabled")]
    pub compression: String,
    /// Deduplication (enabled|disabled).
    #[arg(long = "deduplication", default_value = "enabled")]
    pub deduplication: String,
    /// Block map cache size.
    #[arg(long = "blockMapCacheSize")]
    pub block_map_cache_size: Option<String>,
    /// Serve over TCP on 127.0.0.1 at this port instead of a Unix socket.
    #[arg(long = "tcpPort")]
    pub tcp_port: Option<u16>,
    /// Overwrite a volume or filesystem already on the device.
    #[arg(long)]
    pub force: bool,
    /// Print the memory and disk budget and change nothing.
    #[arg(long = "dryRun")]
    pub dry_run: bool,
}

/// `import`'s options.
#[derive(Debug, Args)]
pub struct Import {
    /// The volume's name.
    #[arg(short = 'n', long = "name")]
    pub name: String,
    /// The device holding the volume.
    #[arg(long = "device")]
    pub device: PathBuf,
    /// Start it after importing (enabled|disabled).
    #[arg(long = "activate", default_value = "enabled")]
    pub activate: String,
}

/// `start`'s options.
#[derive(Debug, Args)]
pub struct Start {
    /// Which volumes.
    #[command(flatten)]
    pub select: Select,
    /// Rebuild every reference count from the block map (leaves read-only mode).
    #[arg(long = "forceRebuild")]
    pub force_rebuild: bool,
    /// Do not ask before a force rebuild.
    #[arg(long, short = 'y')]
    pub yes: bool,
    /// Do not ask; take over from an owner that died (stale lock).
    #[arg(long)]
    pub force: bool,
    /// Stay attached and log to stderr.
    #[arg(long)]
    pub foreground: bool,
}

/// Parses `enabled`/`disabled`.
///
/// # Errors
///
/// Exit 2 for anything else.
pub fn switch(option: &str, value: &str) -> crate::error::CliResult<bool> {
    match value {
        "enabled" => Ok(true),
        "disabled" => Ok(false),
        _ => Err(crate::error::CliError::usage(format!(
            "argument --{option}: invalid choice: '{value}' (choose from 'disabled', 'enabled')"
        ))),
    }
}
