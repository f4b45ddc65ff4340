//! `start`, `stop` and `remove`.

use std::io::{BufRead, BufReader, IsTerminal};
use std::process::{Command, Stdio};

use super::Ctx;
use crate::cli::Start;
use crate::control::Request;
use crate::error::{CliError, CliResult};
use crate::owner::{self, OwnerState};
use crate::registry::Operation;

pub(super) fn start(ctx: &Ctx, name: &str, args: &Start) -> CliResult<()> {
    println!("Starting VDO {name}");
    let entry = ctx.entry(name)?;
    if !entry.is_activated() {
        return Err(CliError::state(format!("VDO volume {name} not activated")));
    }
    if ctx.running(name) {
        eprintln!("uvdo: WARNING - VDO service {name} already started; no changes made");
        return Ok(());
    }
    if let OwnerState::Held(owner) = owner::probe(&entry.device) {
        return Err(CliError::state(format!(
            "cannot start VDO volume {name}: device {} is in use by {}",
            entry.device.display(),
            owner.describe()
        )));
    }
    if args.force_rebuild {
        eprintln!(
            "A force rebuild of VDO {name} recounts every reference count of {} from the block \
             map and returns the volume to normal mode. Metadata becomes consistent, but data \
             written since the last flush may be lost, and logical blocks under damaged block \
             map pages read as zeros afterwards (the log lists them).",
            entry.device.display()
        );
        if !(args.yes || args.force || super::confirm("Rebuild now?")) {
            return Err(CliError::usage(
                "force rebuild not confirmed: answer 'y' on a terminal, or add '--yes'",
            ));
        }
    }
    if args.foreground {
        return crate::daemon::run(&crate::daemon::DaemonArgs {
            registry: ctx.registry.clone(),
            name: name.to_owned(),
            force_rebuild: args.force_rebuild,
            take_over: args.force,
            foreground: true,
        });
    }
    launch(ctx, name, args)
}

/// Re-executes `uvdo daemon`, detached, and relays what it says until it is ready.
fn launch(ctx: &Ctx, name: &str, args: &Start) -> CliResult<()> {
    let paths = ctx.registry.run_paths(name);
    let exe = std::env::current_exe()
        .map_err(|e| CliError::system(format!("cannot find the uvdo binary: {e}")))?;
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&paths.log)
        .map_err(|e| CliError::system(format!("cannot open {}: {e}", paths.log.display())))?;
    let mut command = Command::new(exe);
    command
        .arg("--confFile")
        .arg(ctx.registry.path())
        .args(["daemon", "--name", name])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(log);
    if args.force_rebuild {
        command.arg("--forceRebuild");
    }
    if args.force {
        command.arg("--force");
    }
    let mut child = command
        .spawn()
        .map_err(|e| CliError::system(format!("cannot start the daemon: {e}")))?;
    let stdout = child
        .stdout
        .take()
        .ok_or_else(|| CliError::system("no daemon pipe"))?;
    let bar = std::io::stderr()
        .is_terminal()
        .then(indicatif::ProgressBar::no_length);
    for line in BufReader::new(stdout).lines() {
        let Ok(line) = line else { break };
        let (kind, rest) = line.split_once(' ').unwrap_or((line.as_str(), ""));
        match kind {
            // The failure itself comes as FAIL, printed once by the caller.
            "LOG" if rest.starts_with("ERROR - ") => {}
            "LOG" => match &bar {
                Some(bar) => bar.println(format!("      {rest}")),
                None => eprintln!("      {rest}"),
            },
            "PROGRESS" => {
                let mut parts = rest.split(' ');
                let phase = parts.next().unwrap_or("").to_owned();
                let done = parts.next().and_then(|n| n.parse().ok()).unwrap_or(0);
                let total = parts.next().and_then(|n| n.parse().ok()).unwrap_or(0);
                if let Some(bar) = &bar {
                    bar.set_length(total);
                    bar.set_position(done);
                    bar.set_message(phase);
                }
            }
            "READY" => {
                if let Some(bar) = &bar {
                    bar.finish_and_clear();
                }
                println!("{rest}");
                return Ok(());
            }
            "FAIL" => {
                let (code, message) = rest.split_once(' ').unwrap_or(("6", rest));
                let _ = child.wait();
                let status = match code {
                    "1" => crate::error::ExitStatus::Generic,
                    "2" => crate::error::ExitStatus::Usage,
                    "4" => crate::error::ExitStatus::Developer,
                    "5" => crate::error::ExitStatus::State,
                    "7" => crate::error::ExitStatus::User,
                    _ => crate::error::ExitStatus::System,
                };
                return Err(CliError::new(status, message));
            }
            _ => {}
        }
    }
    let status = child.wait().ok();
    Err(CliError::system(format!(
        "the daemon of VDO {name} ended before serving ({status:?}); see {}",
        paths.log.display()
    )))
}

pub(super) fn stop(ctx: &Ctx, name: &str, force: bool) -> CliResult<()> {
    println!("Stopping VDO {name}");
    let entry = ctx.registry.load()?.get(name)?.clone();
    if !force {
        ctx.entry(name)?;
    }
    let socket = ctx.registry.run_paths(name).control_socket;
    if !ctx.running(name) {
        if let OwnerState::Held(owner) = owner::probe(&entry.device) {
            if !force {
                return Err(CliError::system(format!(
                    "cannot stop VDO service {name}: its daemon {} does not answer; add \
                     '--force' to kill it",
                    owner.describe()
                )));
            }
            kill(owner.pid)?;
            eprintln!(
                "uvdo: WARNING - killed the daemon of {name} (pid {}); the next start needs \
                 '--force' and runs recovery",
                owner.pid
            );
            return Ok(());
        }
        eprintln!("uvdo: WARNING - VDO service {name} already stopped");
        return Ok(());
    }
    match crate::control::call(&socket, &Request::Stop, None) {
        Ok(_) => Ok(()),
        Err(e) if force => {
            if let OwnerState::Held(owner) = owner::probe(&entry.device) {
                kill(owner.pid)?;
            }
            eprintln!("uvdo: WARNING - {e}; the daemon was killed");
            Ok(())
        }
        Err(e) => Err(CliError::system(format!(
            "cannot stop VDO service {name}: {e}"
        ))),
    }
}

fn kill(pid: u32) -> CliResult<()> {
    let pid = i32::try_from(pid).map_err(|_| CliError::system("bad pid"))?;
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGKILL,
    )
    .map_err(|e| CliError::system(format!("cannot kill pid {pid}: {e}")))
}

pub(super) fn remove(ctx: &Ctx, name: &str, force: bool, wipe: bool) -> CliResult<()> {
    println!("Removing VDO {name}");
    let entry = ctx.registry.load()?.get(name)?.clone();
    let incomplete = entry.operation()? != Operation::Finished;
    if !entry.device.exists() && !force {
        return Err(CliError::state(format!(
            "Device {} not found. Remove VDO with --force.",
            entry.device.display()
        )));
    }
    if incomplete && !force {
        println!("Stopping VDO {name}");
        println!("A previous operation failed.");
        println!("Recovery from the failure either failed or was interrupted.");
        println!("Add '--force' to 'remove' to perform the following cleanup.");
        println!("Steps to clean up VDO {name}:");
        if ctx.running(name) {
            println!("    uvdo stop --force --name {name}");
        }
        println!(
            "    remove the registry entry of {name} from {}",
            ctx.registry.path().display()
        );
        println!(
            "    (the data on {} is left as it is)",
            entry.device.display()
        );
        entry.check_no_incomplete_create()?;
        return Err(CliError::state(format!(
            "VDO volume {name} previous operation ({}) is incomplete; recover by performing \
             'remove --force'",
            entry.operation()?.display()
        )));
    }
    stop(ctx, name, force)?;
    ctx.registry.update(|r| {
        r.volumes.remove(name);
        Ok(())
    })?;
    let paths = ctx.registry.run_paths(name);
    let _ = std::fs::remove_file(paths.log);
    if wipe && entry.device.exists() {
        let store =
            uvdo_io::open::open_store(&entry.device, &uvdo_io::open::OpenOptions::default())
                .map_err(|e| {
                    CliError::system(format!("cannot open {}: {e}", entry.device.display()))
                })?;
        store
            .write_at(0, &[0_u8; uvdo_format::BLOCK_SIZE])
            .and_then(|()| store.flush())
            .map_err(|e| {
                CliError::system(format!("cannot wipe {}: {e}", entry.device.display()))
            })?;
        println!("Wiped the geometry block of {}", entry.device.display());
    }
    Ok(())
}
