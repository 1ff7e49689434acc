//! The command line of the service binaries. They take their settings from
//! the environment only, so the only arguments are `--help` (`-h`) and
//! `--version` (`-V`); anything else is a usage error (exit 2, one line)
//! instead of being ignored, so `scoring-worker --bogus` never starts a
//! worker that processes real jobs.

use std::process::ExitCode;

/// The workspace version every service binary reports with `--version`.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// What the command line asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Invocation {
    /// No arguments: run the service.
    Run,
    /// `--help` or `-h` alone.
    Help,
    /// `--version` or `-V` alone.
    Version,
    /// Anything else; holds the first argument that is not understood.
    Unexpected(String),
}

/// Reads the arguments after the program name.
pub fn parse(args: impl IntoIterator<Item = String>) -> Invocation {
    let mut args = args.into_iter();
    let Some(first) = args.next() else {
        return Invocation::Run;
    };
    let wanted = match first.as_str() {
        "--help" | "-h" => Invocation::Help,
        "--version" | "-V" => Invocation::Version,
        _ => return Invocation::Unexpected(first),
    };
    match args.next() {
        None => wanted,
        Some(extra) => Invocation::Unexpected(extra),
    }
}

/// Handles the process's command line for binary `name`: prints the help
/// (`about` then `usage`, which names the environment variables) or the
/// version and returns `Some(0)`, reports an unexpected argument on one
/// line and returns `Some(2)`, or returns `None` when the service should run.
pub fn handle(name: &str, about: &str, usage: &str) -> Option<ExitCode> {
    match parse(std::env::args().skip(1)) {
        Invocation::Run => None,
        Invocation::Help => {
            println!(
                "{name}: {about}\n\nUsage: {name} [--help | --version]\n(settings come from the environment)\n\n{usage}"
            );
            Some(ExitCode::SUCCESS)
        }
        Invocation::Version => {
            println!("{name} {VERSION}");
            Some(ExitCode::SUCCESS)
        }
        Invocation::Unexpected(arg) => {
            eprintln!("{name}: unexpected argument {arg:?}: settings come from the environment; see `{name} --help`");
            Some(ExitCode::from(2))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn only_help_and_version_are_understood() {
        assert_eq!(parse(args(&[])), Invocation::Run);
        assert_eq!(parse(args(&["-h"])), Invocation::Help);
        assert_eq!(parse(args(&["--version"])), Invocation::Version);
        assert_eq!(parse(args(&["-V"])), Invocation::Version);
        assert_eq!(parse(args(&["--bogus"])), Invocation::Unexpected("--bogus".into()));
        assert_eq!(parse(args(&["--help", "x"])), Invocation::Unexpected("x".into()));
        assert_eq!(parse(args(&["run", "--help"])), Invocation::Unexpected("run".into()));
    }
}
