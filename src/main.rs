//! sbx: one CLI, one OCI image format, two isolation levels.

mod bootstrap;
mod cli;
mod commands;

use std::process::ExitCode;

use clap::Parser;

/// Exit status for sbx's own failures, as Docker uses 125 for the daemon's:
/// 126 and 127 stay free for "not executable" and "not found", and anything
/// else is the workload's own.
const EXIT_SBX_ERROR: u8 = 125;

fn main() -> ExitCode {
    let cli = match cli::Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) if !e.use_stderr() => {
            // --help and --version.
            let _ = e.print();
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            // One line, like every other sbx error; the usage is one
            // --help away.
            let detail = e.render().to_string();
            let first = detail
                .lines()
                .take_while(|l| !l.trim().is_empty())
                .map(str::trim)
                .collect::<Vec<_>>()
                .join(" ");
            let first = first.trim_start_matches("error: ");
            eprintln!("sbx: {first} (see 'sbx --help')");
            return ExitCode::from(EXIT_SBX_ERROR);
        }
    };
    match commands::dispatch(cli) {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            // One line: the error and its causes, outermost first.
            eprintln!("sbx: {}", format!("{e:#}").replace('\n', " "));
            ExitCode::from(commands::exit_code_of(&e).unwrap_or(EXIT_SBX_ERROR))
        }
    }
}
