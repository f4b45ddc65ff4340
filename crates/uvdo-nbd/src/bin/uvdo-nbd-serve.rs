//! `uvdo-nbd-serve`: formats (if asked) and opens a uvdo volume, serves it over NBD until
//! SIGINT or SIGTERM, then drains the connections and closes the volume cleanly.
//!
//! Once ready it prints the NBD URI on a line of its own (to stdout; to stderr when socket
//! activated, where stdout may belong to the client that started it).

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use clap::Parser;
use nix::sys::signal::{SigSet, Signal};
use uvdo::{OpenOptions, Volume, WritePolicy};
use uvdo_io::open::{OpenOptions as StoreOptions, open_store};
use uvdo_nbd::{Listener, ServeConfig, serve};

/// Serve a uvdo volume over NBD.
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    /// Backing store: a file or block device.
    #[arg(long)]
    store: PathBuf,
    /// Format the store first (refuses one holding a volume or filesystem).
    #[arg(long)]
    format: bool,
    /// Create the store as a sparse file of this many bytes (with --format).
    #[arg(long, requires = "format")]
    size: Option<u64>,
    /// Logical size in bytes (with --format; default: the store's size).
    #[arg(long, requires = "format")]
    logical: Option<u64>,
    /// Listen on this Unix socket (the default is ./uvdo-nbd.sock).
    #[arg(long, conflicts_with = "tcp")]
    socket: Option<PathBuf>,
    /// Listen on TCP 127.0.0.1:PORT instead.
    #[arg(long)]
    tcp: Option<u16>,
    /// Write policy: sync, async or auto (stored at format; changed on open otherwise).
    #[arg(long)]
    policy: Option<String>,
    /// Export name.
    #[arg(long, default_value = "")]
    export_name: String,
    /// Print why handshakes end early.
    #[arg(long)]
    verbose: bool,
    /// Worker threads per connection (each takes a batch of queued requests at a time).
    #[arg(long, default_value_t = 2)]
    workers: usize,
}

fn main() -> ExitCode {
    let args = Args::parse();
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("uvdo-nbd-serve: {message}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: &Args) -> Result<(), String> {
    // Block the signals before any thread starts, so that every thread inherits the mask and
    // only `wait` below receives them.
    let mut signals = SigSet::empty();
    signals.add(Signal::SIGINT);
    signals.add(Signal::SIGTERM);
    signals
        .thread_block()
        .map_err(|e| format!("blocking signals: {e}"))?;
    let activated = Listener::from_socket_activation().map_err(|e| format!("fd 3: {e}"))?;
    let policy = args
        .policy
        .as_deref()
        .map(str::parse::<WritePolicy>)
        .transpose()
        .map_err(|e| format!("--policy: {e}"))?;
    let volume = Arc::new(open_volume(args, policy)?);
    let activated_now = activated.is_some();
    let listener = match activated {
        Some(listener) => listener,
        None => bind(args)?,
    };
    let config = ServeConfig {
        export_name: args.export_name.clone(),
        workers_per_connection: args.workers.max(1),
        verbose: args.verbose,
        ..ServeConfig::default()
    };
    let handle = serve(Arc::clone(&volume), listener, config).map_err(|e| e.to_string())?;
    let ready = handle.uri().unwrap_or("nbd (inherited socket)").to_owned();
    if activated_now {
        eprintln!("{ready}");
    } else {
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "{ready}");
        let _ = out.flush();
    }
    let signal = signals
        .wait()
        .map_err(|e| format!("waiting for a signal: {e}"))?;
    eprintln!("uvdo-nbd-serve: {signal:?}: draining and closing the volume");
    handle.shutdown();
    let volume = Arc::into_inner(volume).ok_or("the volume is still shared after shutdown")?;
    volume
        .close()
        .map_err(|e| format!("closing the volume: {e}"))
}

fn bind(args: &Args) -> Result<Listener, String> {
    if let Some(port) = args.tcp {
        return Listener::bind_tcp(port).map_err(|e| format!("TCP port {port}: {e}"));
    }
    let path = args
        .socket
        .clone()
        .unwrap_or_else(|| PathBuf::from("uvdo-nbd.sock"));
    Listener::bind_unix(&path).map_err(|e| format!("{}: {e}", path.display()))
}

fn open_volume(args: &Args, policy: Option<WritePolicy>) -> Result<Volume, String> {
    let store_options = StoreOptions {
        create_size: args.size.filter(|_| !args.store.exists()),
        ..StoreOptions::default()
    };
    let store = open_store(&args.store, &store_options)
        .map_err(|e| format!("{}: {e}", args.store.display()))?;
    if args.format {
        let physical = store.size_bytes();
        let logical = args.logical.unwrap_or(physical);
        let mut config = uvdo_nbd::sizing::format_config_for(physical, logical);
        if let Some(policy) = policy {
            config.write_policy = policy;
        }
        Volume::format(&*store, &config).map_err(|e| format!("format: {e}"))?;
    }
    let volume = Volume::open(store, &OpenOptions::default()).map_err(|e| format!("open: {e}"))?;
    if let Some(policy) = policy.filter(|_| !args.format) {
        volume
            .set_write_policy(policy, None)
            .map_err(|e| format!("setting the write policy: {e}"))?;
    }
    Ok(volume)
}
