//! What a pull shows on stderr: the relayed log lines and the progress.
//!
//! * **Live** (stderr is a terminal and `TERM` is set and not `dumb`): the progress is a
//!   region of lines at the bottom (the transfer, and each pull-oci layer while layers
//!   are not all done), redrawn in place: the cursor goes up over the region, erasing each
//!   line (`ESC[1A ESC[2K`), and the new lines are written, all in one write. A relayed
//!   line is written where the region was, and the region again below it, so log lines
//!   are never mixed with progress. Redraws happen at most every 200 ms
//!   ([`REDRAW_INTERVAL`]); lines are cut to the terminal's width minus one (TIOCGWINSZ,
//!   80 when unknown) so that none wraps, and the region to the terminal's height. At
//!   the end the region is erased.
//! * **Plain** (a pipe, a file, `TERM=dumb`): no escape sequence at all; the progress is a
//!   plain `Total: …` line when the percentage changed, at most every 5 s.
//! * **Quiet** (`-q`): no progress; only relayed lines of notice priority and above.
//!
//! Relayed lines are filtered as systemd's `log_full()` filters them
//! (`SYSTEMD_LOG_LEVEL`, default info).

use std::io::Write;
use std::os::fd::AsFd;

use super::progress::Progress;
use crate::util::log::{self, LOG_INFO};
use crate::util::sys;

/// The shortest time between two redraws of the live region (µs).
pub const REDRAW_INTERVAL: u64 = 200_000;

/// The shortest time between two plain progress lines (µs).
const PLAIN_INTERVAL: u64 = 5_000_000;

/// Moves the cursor up one line and erases that line.
const UP_AND_ERASE: &str = "\x1b[1A\x1b[2K";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    Live,
    Plain,
    Quiet,
}

impl Mode {
    /// Live on a terminal that is not dumb, plain elsewhere, quiet with `-q`.
    pub fn detect(quiet: bool) -> Mode {
        if quiet {
            return Mode::Quiet;
        }
        let tty = nix::unistd::isatty(std::io::stderr().as_fd()).unwrap_or(false);
        let term = std::env::var("TERM").unwrap_or_default();
        if tty && !term.is_empty() && term != "dumb" {
            Mode::Live
        } else {
            Mode::Plain
        }
    }
}

pub struct Display {
    mode: Mode,
    /// What is known; written by the signal handlers, then [`changed`](Self::changed).
    pub progress: Progress,
    /// How many lines the live region has on the screen; the cursor is at the start of
    /// the line below it.
    drawn: usize,
    /// When the region was last drawn (µs, CLOCK_MONOTONIC).
    last_draw: Option<u64>,
    /// The progress changed since the last draw.
    dirty: bool,
    /// Plain mode: when the last progress line was printed, and its percentage.
    last_plain: Option<(u64, Option<u32>)>,
}

fn write_stderr(text: &str) {
    if !text.is_empty() {
        let _ = std::io::stderr().lock().write_all(text.as_bytes());
    }
}

/// The terminal's (rows, columns), or 24×80.
fn terminal_size() -> (usize, usize) {
    sys::terminal_size(std::io::stderr().as_fd())
        .map_or((24, 80), |(r, c)| (usize::from(r), usize::from(c)))
}

impl Display {
    pub fn new(mode: Mode) -> Display {
        Display {
            mode,
            progress: Progress::default(),
            drawn: 0,
            last_draw: None,
            dirty: false,
            last_plain: None,
        }
    }

    /// Erases the live region (the cursor ends where its first line was).
    fn erase_text(&mut self) -> String {
        let text = UP_AND_ERASE.repeat(self.drawn);
        self.drawn = 0;
        text
    }

    /// The live region's lines, each ending in a newline.
    fn region_text(&mut self) -> String {
        let (rows, columns) = terminal_size();
        let mut lines = self.progress.lines(columns);
        // A region taller than the screen could not be erased again.
        lines.truncate(rows.saturating_sub(2).max(1));
        self.drawn = lines.len();
        lines.iter().map(|l| format!("{l}\n")).collect()
    }

    /// Print a relayed (or our own) line of priority `prio`.
    pub fn log(&mut self, prio: u8, text: &str) {
        if !log::enabled(prio) || (self.mode == Mode::Quiet && prio >= LOG_INFO) {
            return;
        }
        let mut out = self.erase_text();
        out.push_str(text);
        out.push('\n');
        if self.mode == Mode::Live && self.last_draw.is_some() {
            out.push_str(&self.region_text());
        }
        write_stderr(&out);
    }

    /// The progress changed at `now`. Returns when a redraw is owed, if it cannot happen
    /// now (call [`flush`](Self::flush) then).
    pub fn changed(&mut self, now: u64) -> Option<u64> {
        match self.mode {
            Mode::Quiet => None,
            Mode::Plain => {
                self.plain(now);
                None
            }
            Mode::Live => {
                self.dirty = true;
                match self.last_draw {
                    Some(t) if now < t + REDRAW_INTERVAL => Some(t + REDRAW_INTERVAL),
                    _ => {
                        self.flush(now);
                        None
                    }
                }
            }
        }
    }

    /// Redraw the live region if the progress changed since it was drawn.
    pub fn flush(&mut self, now: u64) {
        if self.mode != Mode::Live || !self.dirty {
            return;
        }
        self.dirty = false;
        self.last_draw = Some(now);
        let mut out = self.erase_text();
        out.push_str(&self.region_text());
        write_stderr(&out);
    }

    fn plain(&mut self, now: u64) {
        let Some(line) = self.progress.plain_line() else {
            return;
        };
        let percent = self.progress.percent;
        let due = match self.last_plain {
            None => true,
            Some((t, p)) => p != percent && now >= t + PLAIN_INTERVAL,
        };
        if due {
            self.last_plain = Some((now, percent));
            write_stderr(&format!("{line}\n"));
        }
    }

    /// Remove the live region for good (the transfer ended, or we leave it running).
    pub fn finish(&mut self) {
        let out = self.erase_text();
        self.last_draw = None;
        self.dirty = false;
        write_stderr(&out);
    }
}
