//! `uvdostats`: VDO's `vdostats` for uvdo volumes: the df-style table, `--verbose`, and
//! `--json` in which every unavailable value says why. Running volumes are asked through
//! their control socket; stopped ones are read from their super block, writing nothing.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use clap::error::ErrorKind;
use uvdo_cli::control::{ANSWER_WAIT, Request, call};
use uvdo_cli::registry::RegistryFile;
use uvdo_cli::stats::{StatsView, TableUnits, table};
use uvdo_cli::{CliError, CliResult};

/// Show statistics of uvdo volumes.
#[derive(Debug, Parser)]
#[command(name = "uvdostats", version)]
struct Args {
    /// The registry file (default: $UVDO_CONF, else /etc/uvdo/uvdo.toml).
    #[arg(short = 'f', long = "confFile")]
    conf_file: Option<PathBuf>,
    /// Every statistic, one per line.
    #[arg(short = 'v', long, alias = "all")]
    verbose: bool,
    /// Sizes in K, M, G, T (powers of 1024).
    #[arg(long = "human-readable")]
    human_readable: bool,
    /// Sizes in powers of 1000 (implies --human-readable).
    #[arg(long)]
    si: bool,
    /// JSON; unavailable values say why.
    #[arg(long)]
    json: bool,
    /// Volumes (default: all registered).
    names: Vec<String>,
}

fn main() -> ExitCode {
    let args = match Args::try_parse() {
        Ok(args) => args,
        Err(e) => {
            let code = u8::from(!matches!(
                e.kind(),
                ErrorKind::DisplayHelp | ErrorKind::DisplayVersion
            )) * 2;
            let _ = e.print();
            return ExitCode::from(code);
        }
    };
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => uvdo_cli::report("uvdostats", &e),
    }
}

fn gather(registry: &RegistryFile, name: &str) -> CliResult<StatsView> {
    let entry = registry.load()?.get(name)?.clone();
    let socket = registry.run_paths(name).control_socket;
    match call(&socket, &Request::Stats, Some(ANSWER_WAIT)) {
        Ok(value) => serde_json::from_value(value)
            .map_err(|e| CliError::system(format!("bad statistics from {name}'s daemon: {e}"))),
        Err(_) => Ok(uvdo_cli::offline::stopped_stats(&entry.device)?),
    }
}

fn run(args: &Args) -> CliResult<()> {
    let registry = RegistryFile::locate(args.conf_file.as_deref())?;
    let names = if args.names.is_empty() {
        registry.load()?.volumes.into_keys().collect()
    } else {
        args.names.clone()
    };
    if names.is_empty() {
        return Err(CliError::generic("Could not find any VDO devices"));
    }
    let mut rows = Vec::new();
    let mut failed = None;
    for name in names {
        match gather(&registry, &name) {
            Ok(view) => rows.push((name, view)),
            Err(e) => {
                eprintln!("uvdostats: '{name}': {e}");
                failed = Some(CliError::generic(format!("'{name}': {}", e.message)));
            }
        }
    }
    if args.json {
        let map: serde_json::Map<String, serde_json::Value> =
            rows.iter().map(|(n, v)| (n.clone(), v.json())).collect();
        println!("{}", serde_json::to_string_pretty(&map).unwrap_or_default());
    } else if args.verbose {
        for (name, view) in &rows {
            print!("{}", view.verbose(name));
        }
    } else if !rows.is_empty() {
        let units = TableUnits {
            human: args.human_readable,
            si: args.si,
        };
        print!("{}", table(&rows, units));
    }
    failed.map_or(Ok(()), Err)
}
