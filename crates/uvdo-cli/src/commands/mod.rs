//! The commands: each prints what VDO prints and returns how the process exits.

mod create;
mod info;
mod lifecycle;
mod settings;

use std::io::IsTerminal;

use crate::cli::{Cli, Command, Select};
use crate::error::{CliError, CliResult, ExitStatus};
use crate::registry::{Operation, RegistryFile, VolumeEntry};
use crate::size::format_size;

/// Runs the parsed command line.
///
/// # Errors
///
/// The command's failure; with `--all`, the worst of every volume's.
pub fn run(cli: Cli) -> CliResult<()> {
    let registry = RegistryFile::locate(cli.conf_file.as_deref())?;
    let ctx = Ctx { registry };
    match cli.command {
        Command::Create(args) => create::create(&ctx, &args),
        Command::Import(args) => create::import(&ctx, &args),
        Command::Start(args) => {
            let each = |name: &str| lifecycle::start(&ctx, name, &args);
            ctx.each(&args.select, each)
        }
        Command::Stop { select, force } => {
            ctx.each(&select, |name| lifecycle::stop(&ctx, name, force))
        }
        Command::Remove {
            select,
            force,
            wipe,
        } => ctx.each(&select, |name| lifecycle::remove(&ctx, name, force, wipe)),
        Command::Status { name, json, .. } => info::status(&ctx, name.as_deref(), json),
        Command::List { all } => info::list(&ctx, all),
        Command::Activate(s) => ctx.each(&s, |name| settings::activate(&ctx, name, true)),
        Command::Deactivate(select) => {
            ctx.each(&select, |name| settings::activate(&ctx, name, false))
        }
        Command::ChangeWritePolicy {
            select,
            write_policy,
        } => ctx.each(&select, |name| {
            settings::change_write_policy(&ctx, name, &write_policy)
        }),
        Command::Modify {
            select,
            block_map_cache_size,
            tcp_port,
        } => settings::modify(&ctx, &select, block_map_cache_size.as_deref(), tcp_port),
        Command::EnableCompression(s) => ctx.each(&s, |n| settings::compression(&ctx, n, true)),
        Command::DisableCompression(s) => ctx.each(&s, |n| settings::compression(&ctx, n, false)),
        Command::EnableDeduplication(s) => ctx.each(&s, |n| settings::dedupe(&ctx, n, true)),
        Command::DisableDeduplication(s) => ctx.each(&s, |n| settings::dedupe(&ctx, n, false)),
        Command::GrowLogical { name, size } => settings::grow(&ctx, &name.name, Some(&size)),
        Command::GrowPhysical(name) => settings::grow(&ctx, &name.name, None),
        Command::PrintConfigFile => info::print_config_file(&ctx),
        Command::Version => {
            println!("uvdo version: {}", env!("CARGO_PKG_VERSION"));
            Ok(())
        }
        Command::Audit(target) => info::audit(&ctx, &target),
        Command::DumpConfig(target) => info::dump_config(&ctx, &target),
        Command::ListMetadata(target) => info::list_metadata(&ctx, &target),
        Command::Daemon {
            name,
            force_rebuild,
            force,
            foreground,
        } => crate::daemon::run(&crate::daemon::DaemonArgs {
            registry: ctx.registry.clone(),
            name: name.name,
            force_rebuild,
            take_over: force,
            foreground,
        }),
    }
}

/// What every command works with.
#[derive(Debug)]
pub(crate) struct Ctx {
    pub(crate) registry: RegistryFile,
}

impl Ctx {
    /// Runs `f` on the selected volumes. With `--all` every volume is tried, every failure is
    /// printed, and the worst status is returned (VDO returns only the last).
    fn each(&self, select: &Select, mut f: impl FnMut(&str) -> CliResult<()>) -> CliResult<()> {
        let names: Vec<String> = match &select.name {
            Some(name) => vec![name.clone()],
            None => self.registry.load()?.volumes.into_keys().collect(),
        };
        if names.len() == 1 || !select.all {
            return names.iter().try_for_each(|n| f(n));
        }
        let mut worst: Option<CliError> = None;
        for name in &names {
            if let Err(e) = f(name) {
                eprintln!("uvdo: ERROR - {e}");
                let status = worst
                    .as_ref()
                    .map_or(e.status, |w| w.status.worst(e.status));
                worst = Some(CliError::new(
                    status,
                    format!("{} volume(s) failed", names.len()),
                ));
            }
        }
        worst.map_or(Ok(()), Err)
    }

    /// The entry of `name`, with an interrupted grow or policy change repaired (VDO does it
    /// on every command) and an interrupted create refused.
    pub(crate) fn entry(&self, name: &str) -> CliResult<VolumeEntry> {
        let entry = self.registry.load()?.get(name)?.clone();
        match entry.operation()? {
            Operation::Finished => Ok(entry),
            Operation::Create | Operation::Import => {
                entry.check_no_incomplete_create()?;
                Ok(entry)
            }
            op => {
                eprintln!(
                    "uvdo: WARNING - VDO volume {name}: repairing the interrupted {} (the \
                     volume records the truth)",
                    op.display()
                );
                // The sizes are re-read from the super block, as VDO re-reads them.
                let recorded = crate::offline::read(&entry.device).ok().map(|info| {
                    let block = uvdo_format::BLOCK_SIZE as u64;
                    let sb = &info.super_block;
                    (
                        format_size(sb.logical_blocks.0 * block),
                        format_size(sb.physical_blocks.0 * block),
                    )
                });
                let mut entry = entry;
                entry.operation_state = Operation::Finished.key().into();
                if let Some((logical, physical)) = recorded {
                    entry.logical_size = logical;
                    entry.physical_size = physical;
                }
                let repaired = entry.clone();
                self.registry.update(|r| {
                    let e = r.get_mut(name)?;
                    e.operation_state.clone_from(&repaired.operation_state);
                    e.logical_size.clone_from(&repaired.logical_size);
                    e.physical_size.clone_from(&repaired.physical_size);
                    Ok(())
                })?;
                Ok(entry)
            }
        }
    }

    /// Whether `name`'s daemon answers.
    pub(crate) fn running(&self, name: &str) -> bool {
        crate::control::is_running(&self.registry.run_paths(name).control_socket)
    }

    /// Sends a request to `name`'s daemon.
    pub(crate) fn call(
        &self,
        name: &str,
        request: &crate::control::Request,
    ) -> CliResult<serde_json::Value> {
        let socket = self.registry.run_paths(name).control_socket;
        crate::control::call(&socket, request, Some(crate::control::ANSWER_WAIT))
    }
}

/// Asks `question` on a terminal; false when stdin is not one.
pub(crate) fn confirm(question: &str) -> bool {
    if !std::io::stdin().is_terminal() {
        return false;
    }
    eprint!("{question} [y/N] ");
    let mut answer = String::new();
    std::io::stdin().read_line(&mut answer).is_ok()
        && matches!(answer.trim(), "y" | "Y" | "yes" | "YES")
}

/// A spinner on a terminal (nothing otherwise) for an operation without progress reports.
pub(crate) fn spinner(message: &str) -> Option<indicatif::ProgressBar> {
    if !std::io::stderr().is_terminal() {
        return None;
    }
    let bar = indicatif::ProgressBar::new_spinner();
    bar.set_message(message.to_owned());
    bar.enable_steady_tick(std::time::Duration::from_millis(120));
    Some(bar)
}

/// Exit 7 unless `status` says success: used by tests of the table.
#[must_use]
pub fn exit_code(result: &CliResult<()>) -> u8 {
    result
        .as_ref()
        .map_or_else(|e| e.status.code(), |()| ExitStatus::Success.code())
}
