//! Human output: aligned tables and a one-line progress bar on stderr.

use std::io::{IsTerminal as _, Write as _};
use std::sync::Mutex;

/// Whether to colour: only on a terminal, and never with `NO_COLOR` set to
/// anything non-empty (<https://no-color.org>).
pub fn colour_wanted(terminal: bool, no_color: Option<&std::ffi::OsStr>) -> bool {
    terminal && no_color.is_none_or(std::ffi::OsStr::is_empty)
}

/// `text` in the ANSI style `sgr` (such as `"1"` bold or `"32"` green) when
/// stderr is a terminal and `NO_COLOR` is unset; plain text otherwise.
pub fn styled(sgr: &str, text: &str) -> String {
    if colour_wanted(std::io::stderr().is_terminal(), std::env::var_os("NO_COLOR").as_deref()) {
        format!("\x1b[{sgr}m{text}\x1b[0m")
    } else {
        text.to_owned()
    }
}

/// Renders rows as an aligned table with a header line. Columns whose header
/// starts with `>` are right-aligned (the `>` is not printed).
pub fn table(headers: &[&str], rows: &[Vec<String>]) -> String {
    let widths: Vec<usize> = headers
        .iter()
        .enumerate()
        .map(|(i, h)| {
            let head = h.trim_start_matches('>').chars().count();
            rows.iter()
                .map(|r| r.get(i).map_or(0, |c| c.chars().count()))
                .max()
                .unwrap_or(0)
                .max(head)
        })
        .collect();
    let line = |cells: Vec<&str>| {
        cells
            .iter()
            .enumerate()
            .map(|(i, c)| {
                if headers[i].starts_with('>') {
                    format!("{c:>w$}", w = widths[i])
                } else {
                    format!("{c:<w$}", w = widths[i])
                }
            })
            .collect::<Vec<_>>()
            .join("  ")
            .trim_end()
            .to_owned()
    };
    let mut out = line(headers.iter().map(|h| h.trim_start_matches('>')).collect());
    out.push('\n');
    out.push_str(&"-".repeat(widths.iter().sum::<usize>() + 2 * widths.len().saturating_sub(1)));
    out.push('\n');
    for row in rows {
        out.push_str(&line(row.iter().map(String::as_str).collect()));
        out.push('\n');
    }
    out
}

/// A progress bar on stderr, redrawn in place on a terminal and printed at
/// most every 10% otherwise (so CI logs stay short).
#[derive(Debug)]
pub struct Progress {
    label: Mutex<(String, u64)>,
    tty: bool,
}

impl Default for Progress {
    fn default() -> Self {
        Self::new()
    }
}

impl Progress {
    /// A bar on stderr.
    pub fn new() -> Self {
        Progress {
            label: Mutex::new((String::new(), u64::MAX)),
            tty: std::io::stderr().is_terminal(),
        }
    }

    /// Shows a seed's progress (also reported by the pipeline benchmark).
    pub fn seed(&self, p: tally_store::seed::SeedProgress) {
        self.update(&format!("{:?}", p.stage).to_lowercase(), p.done, p.total);
    }

    /// Shows `done` of `total` for `stage`.
    pub fn update(&self, stage: &str, done: u64, total: u64) {
        let pct = done.saturating_mul(100).checked_div(total).unwrap_or(100);
        let mut last = self.label.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let new_stage = last.0 != stage;
        if !self.tty && !new_stage && pct / 10 == last.1 / 10 && done != total {
            return;
        }
        if new_stage && self.tty && !last.0.is_empty() {
            eprintln!();
        }
        *last = (stage.to_owned(), pct);
        let filled = (pct / 4) as usize;
        let bar = format!(
            "[{}{}] {pct:>3}% {stage:<12} {done}/{total}",
            "#".repeat(filled),
            "-".repeat(25 - filled)
        );
        let mut err = std::io::stderr().lock();
        if self.tty {
            let _ = write!(err, "\r{bar}");
            if done == total {
                let _ = writeln!(err);
            }
        } else {
            let _ = writeln!(err, "{bar}");
        }
        let _ = err.flush();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn colour_only_on_a_terminal_without_no_color() {
        use std::ffi::OsStr;
        assert!(colour_wanted(true, None));
        assert!(colour_wanted(true, Some(OsStr::new(""))));
        assert!(!colour_wanted(true, Some(OsStr::new("1"))));
        assert!(!colour_wanted(false, None));
    }

    #[test]
    fn tables_align_columns() {
        let t = table(
            &["name", ">pts"],
            &[vec!["ann".into(), "3".into()], vec!["bob".into(), "12".into()]],
        );
        assert_eq!(t, "name  pts\n---------\nann     3\nbob    12\n");
    }
}
