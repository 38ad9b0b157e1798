//! What is known about a transfer's progress, from whichever source the daemon offers,
//! and its text: the lines of the live display and the plain progress line.
//!
//! Sources, best first:
//! 1. our daemon's `DetailsUpdate` (io.github.systemd_import.Transfer1): percentage,
//!    bytes, rate and per-layer state;
//! 2. upstream's `ProgressUpdate` (systemd 256+): the percentage;
//! 3. the worker's own `Got N% of URL.` lines relayed as `LogMessage`: the percentage of
//!    the file being downloaded, all a systemd 252 daemon offers (its `Progress` stays
//!    unknown: it refuses the bare `X_IMPORT_PROGRESS=N` its own and our workers send).

use crate::util::format::{format_bytes, format_timespan, USEC_PER_SEC};

/// Where the percentage came from.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord)]
pub enum Source {
    #[default]
    None,
    /// A relayed `Got N% of …` line: one file's share, not the whole transfer's.
    LogLine,
    /// The daemon's `Progress` (either signal).
    Daemon,
}

/// One layer of a pull-oci.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Layer {
    pub index: u32,
    pub count: u32,
    pub state: String,
    pub done: u64,
    pub total: Option<u64>,
}

/// The progress of one transfer.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Progress {
    /// 0–100.
    pub percent: Option<u32>,
    pub source: Source,
    pub bytes: Option<(u64, Option<u64>)>,
    /// Bytes per second.
    pub rate: Option<u64>,
    pub layers: Vec<Layer>,
}

/// `u64::MAX` means unknown on our interface.
fn known(v: u64) -> Option<u64> {
    (v != u64::MAX).then_some(v)
}

/// The width of the bar inside `[…]`.
const BAR: usize = 20;

impl Progress {
    /// `Progress`/`ProgressUpdate`: a fraction, negative while unknown.
    pub fn set_fraction(&mut self, fraction: f64) {
        if fraction >= 0.0 {
            self.percent = Some(((fraction * 100.0) as u32).min(100));
            self.source = Source::Daemon;
        }
    }

    /// `DetailsUpdate(progress, bytes_done, bytes_total, rate, layers)`.
    pub fn set_details(
        &mut self,
        fraction: f64,
        done: u64,
        total: u64,
        rate: u64,
        layers: Vec<Layer>,
    ) {
        self.set_fraction(fraction);
        self.bytes = known(done).map(|d| (d, known(total)));
        self.rate = known(rate);
        self.layers = layers;
    }

    /// A relayed line: `Got N% of …` counts when the daemon gives no percentage.
    /// Returns whether anything changed.
    pub fn take_log_line(&mut self, line: &str) -> bool {
        if self.source == Source::Daemon {
            return false;
        }
        let Some(rest) = line.strip_prefix("Got ") else {
            return false;
        };
        let Some((digits, _)) = rest.split_once("% of ") else {
            return false;
        };
        match digits.parse::<u32>() {
            Ok(p) if p <= 100 && digits.bytes().all(|b| b.is_ascii_digit()) => {
                let changed = self.percent != Some(p);
                self.percent = Some(p);
                self.source = Source::LogLine;
                changed
            }
            _ => false,
        }
    }

    /// Whether there is anything to show.
    pub fn is_known(&self) -> bool {
        self.percent.is_some() || self.bytes.is_some()
    }

    fn label(&self) -> &'static str {
        match self.source {
            Source::LogLine => "Download:",
            _ => "Total:",
        }
    }

    /// `12.3M/29.0M 1.2M/s 15s left`, as far as known.
    fn figures(&self) -> Vec<String> {
        let mut parts = Vec::new();
        if let Some((done, total)) = self.bytes {
            parts.push(match total {
                Some(t) => format!("{}/{}", format_bytes(done), format_bytes(t)),
                None => format_bytes(done),
            });
            if let Some(rate) = self.rate.filter(|r| *r > 0) {
                parts.push(format!("{}/s", format_bytes(rate)));
                if let Some(t) = total.filter(|t| *t >= done) {
                    let left = (t - done) as u128 * u128::from(USEC_PER_SEC) / u128::from(rate);
                    let left = u64::try_from(left).unwrap_or(u64::MAX);
                    parts.push(format!("{} left", format_timespan(left, USEC_PER_SEC)));
                }
            }
        }
        parts
    }

    /// The lines of the live display, each at most `width - 1` characters (so the
    /// terminal never wraps them): the transfer's line and, while a layer is not done,
    /// one line per layer. Empty while nothing is known.
    pub fn lines(&self, width: usize) -> Vec<String> {
        if !self.is_known() && self.layers.is_empty() {
            return Vec::new();
        }
        let max = width.saturating_sub(1).max(1);
        let mut first = vec![self.label().to_string()];
        if let Some(p) = self.percent {
            first.push(format!("{p:>3}%"));
            if max >= 60 {
                let filled = (p as usize * BAR / 100).min(BAR);
                first.push(format!(
                    "[{}{}]",
                    "#".repeat(filled),
                    "-".repeat(BAR - filled)
                ));
            }
        }
        first.extend(self.figures());
        let mut lines = vec![first.join(" ")];
        if self.layers.iter().any(|l| l.state != "done") {
            lines.extend(self.layers.iter().map(layer_line));
        }
        lines.into_iter().map(|l| truncate(&l, max)).collect()
    }

    /// The line printed now and then where the display cannot be redrawn in place.
    pub fn plain_line(&self) -> Option<String> {
        if !self.is_known() {
            return None;
        }
        let mut line = self.label().to_string();
        if let Some(p) = self.percent {
            line.push_str(&format!(" {p}%"));
        }
        let figures = self.figures();
        if !figures.is_empty() {
            line.push_str(&format!(" ({})", figures.join(", ")));
        }
        Some(line)
    }
}

/// `  Layer 2/3: downloading  64% 3.2M/5.0M`.
fn layer_line(l: &Layer) -> String {
    let mut line = format!("  Layer {}/{}: {}", l.index, l.count, l.state);
    match (l.state.as_str(), l.total) {
        ("waiting", _) => {}
        ("downloading", Some(t)) if t > 0 => {
            let p = (u128::from(l.done.min(t)) * 100 / u128::from(t)) as u32;
            line.push_str(&format!(
                " {p:>3}% {}/{}",
                format_bytes(l.done),
                format_bytes(t)
            ));
        }
        ("downloading", _) => line.push_str(&format!(" {}", format_bytes(l.done))),
        // Applying or done: the layer's size, when known (not for layers found present).
        (_, Some(t)) => line.push_str(&format!(" {}", format_bytes(t))),
        (_, None) => {}
    }
    line
}

/// `s` cut to `max` characters.
fn truncate(s: &str, max: usize) -> String {
    s.chars().take(max).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layer(index: u32, state: &str, done: u64) -> Layer {
        Layer {
            index,
            count: 2,
            state: state.into(),
            done,
            total: Some(2048),
        }
    }

    #[test]
    fn lines_show_what_is_known_and_never_exceed_the_width() {
        let mut p = Progress::default();
        assert!(p.lines(80).is_empty());
        assert_eq!(p.plain_line(), None);
        p.set_fraction(-f64::MAX);
        assert!(p.lines(80).is_empty());
        p.set_fraction(0.42);
        assert_eq!(p.lines(80), ["Total:  42% [########------------]"]);
        assert_eq!(p.lines(40), ["Total:  42%"]);
        p.set_details(
            0.5,
            1024,
            4096,
            1024,
            vec![layer(1, "done", 2048), layer(2, "downloading", 1024)],
        );
        assert_eq!(
            p.lines(80),
            [
                "Total:  50% [##########----------] 1.0K/4.0K 1.0K/s 3s left",
                "  Layer 1/2: done 2.0K",
                "  Layer 2/2: downloading  50% 1.0K/2.0K",
            ]
        );
        assert_eq!(
            p.plain_line().unwrap(),
            "Total: 50% (1.0K/4.0K, 1.0K/s, 3s left)"
        );
        for width in [1, 2, 10, 30] {
            assert!(p
                .lines(width)
                .iter()
                .all(|l| l.chars().count() < width.max(2)));
        }
        // All layers done: only the transfer's line stays.
        p.set_details(
            1.0,
            4096,
            4096,
            0,
            vec![layer(1, "done", 2048), layer(2, "done", 2048)],
        );
        assert_eq!(p.lines(80).len(), 1);
    }

    #[test]
    fn relayed_lines_give_a_percentage_only_without_the_daemons() {
        let mut p = Progress::default();
        assert!(p.take_log_line("Got 17% of https://h/x.tar. 3s left at 1.0M/s."));
        assert!(!p.take_log_line("Got 17% of https://h/x.tar."));
        assert!(!p.take_log_line("Got many% of x"));
        assert!(!p.take_log_line("Downloading 5% of x"));
        assert_eq!(p.lines(30), ["Download:  17%"]);
        p.set_fraction(0.3);
        assert!(!p.take_log_line("Got 90% of https://h/x.tar."));
        assert_eq!(p.percent, Some(30));
    }
}
