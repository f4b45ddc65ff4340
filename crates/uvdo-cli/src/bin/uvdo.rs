//! `uvdo`: manage uvdo volumes (see the `uvdo_cli` crate and docs/CLI.md).

use std::process::ExitCode;

use clap::Parser;
use clap::error::ErrorKind;
use uvdo_cli::cli::Cli;

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let code = match e.kind() {
                ErrorKind::DisplayHelp | ErrorKind::DisplayVersion => 0,
                // VDO: no command prints the usage and exits 1.
                ErrorKind::MissingSubcommand
                | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand => 1,
                _ => 2,
            };
            let _ = e.print();
            return ExitCode::from(code);
        }
    };
    match uvdo_cli::run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => uvdo_cli::report("uvdo", &e),
    }
}
