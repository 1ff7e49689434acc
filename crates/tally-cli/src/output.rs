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

/// The table style: the header underlined with dashes, columns two spaces
/// apart (a space of padding and the empty column line), no borders (plain
/// text that pastes anywhere and greps well).
const TABLE_STYLE: comfy_table::TableStyle =
    comfy_table::TableStyle::new().header_separator(comfy_table::LineStyle::none().fill('-').junction('-'));

/// Renders rows as an aligned table (comfy-table) with a header line.
/// Columns whose header starts with `>` are right-aligned (the `>` is not
/// printed). No colour and no wrapping, so a pipe gets the same text as a
/// terminal.
pub fn table(headers: &[&str], rows: &[Vec<String>]) -> String {
    let mut t = comfy_table::Table::new();
    t.load_style(TABLE_STYLE);
    t.set_header(headers.iter().map(|h| h.trim_start_matches('>')));
    for row in rows {
        t.add_row(row);
    }
    let last = headers.len().saturating_sub(1);
    for (i, header) in headers.iter().enumerate() {
        if let Some(column) = t.column_mut(i) {
            column.set_padding((0, u16::from(i != last)));
            if header.starts_with('>') {
                column.set_cell_alignment(comfy_table::CellAlignment::Right);
            }
        }
    }
    t.lines().map(|l| l.trim_end().to_owned() + "\n").collect()
}

/// Progress on stderr (indicatif): a bar per stage redrawn in place on a
/// terminal; away from one, no bar, just a line as each stage ends (so CI
/// logs stay short).
#[derive(Debug)]
pub struct Progress {
    current: Mutex<Option<(String, indicatif::ProgressBar)>>,
    tty: bool,
}

impl Default for Progress {
    fn default() -> Self {
        Self::new()
    }
}

impl Progress {
    /// Progress on stderr.
    pub fn new() -> Self {
        Progress {
            current: Mutex::new(None),
            tty: std::io::stderr().is_terminal(),
        }
    }

    /// Shows a seed's progress (also reported by the pipeline benchmark).
    pub fn seed(&self, p: tally_store::seed::SeedProgress) {
        self.update(&format!("{:?}", p.stage).to_lowercase(), p.done, p.total);
    }

    /// Shows `done` of `total` for `stage`.
    pub fn update(&self, stage: &str, done: u64, total: u64) {
        let mut current = self.current.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if current.as_ref().is_none_or(|(s, _)| s != stage) {
            if let Some((_, bar)) = current.take() {
                bar.finish();
            }
            let target = if self.tty {
                indicatif::ProgressDrawTarget::stderr()
            } else {
                indicatif::ProgressDrawTarget::hidden()
            };
            let bar = indicatif::ProgressBar::with_draw_target(Some(total), target);
            bar.set_style(
                indicatif::ProgressStyle::with_template("[{bar:25}] {percent:>3}% {msg:<12} {pos}/{len}")
                    .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
                    .progress_chars("#>-"),
            );
            bar.set_message(stage.to_owned());
            *current = Some((stage.to_owned(), bar));
        }
        let Some((_, bar)) = current.as_ref() else { return };
        let was_done = bar.is_finished();
        bar.set_position(done);
        if done >= total && !was_done {
            bar.finish();
            if !self.tty {
                let mut err = std::io::stderr().lock();
                let _ = writeln!(err, "{stage}: {done}/{total}");
                let _ = err.flush();
            }
        }
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
        assert_eq!(table(&["a", "b"], &[]), "a  b\n----\n");
    }
}
