//! `tally`: the operator's and developer's command line.
//!
//! - [`cli`]: the arguments (clap), with `--json` where a script would want it;
//! - [`commands`]: migrate, seed, match finish, queue stats and dead-set
//!   repair, leaderboard, standings, enqueue;
//! - [`demo`]: a whole matchday through the real services;
//! - [`services`]: starting the service binaries as child processes (used by
//!   the demo and the end-to-end tests);
//! - [`verify`]: a brute-force recomputation of leaderboards and standings
//!   from raw rows, to check the pipeline's results;
//! - [`output`]: tables and a progress bar for humans.

pub mod bench;
pub mod cli;
pub mod commands;
pub mod demo;
pub mod output;
pub mod services;
pub mod verify;

pub use cli::Cli;

/// Runs one parsed command line.
pub async fn run(cli: Cli) -> anyhow::Result<()> {
    commands::dispatch(cli).await
}
