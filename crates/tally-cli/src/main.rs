//! The `tally` command. Parsing and dispatch live in the library
//! (`tally_cli::run`); this only maps the outcome to an exit code.

use std::process::ExitCode;

use clap::Parser as _;

#[tokio::main]
async fn main() -> ExitCode {
    let cli = tally_cli::Cli::parse();
    match tally_cli::run(cli).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("tally: {}", tally_cli::error_line(&e));
            // A missing setting is a usage error, like clap's own (exit 2).
            if e.downcast_ref::<tally_cli::UsageError>().is_some() {
                ExitCode::from(2)
            } else {
                ExitCode::FAILURE
            }
        }
    }
}
