//! Extended progress: the fields a worker sends beside `X_IMPORT_PROGRESS=` in the same
//! notification datagram, written here for the worker and read here for systemd-importd.
//!
//! ```text
//! X_IMPORT_PROGRESS=42
//! X_IMPORT_PROGRESS_BYTES=1048576/4194304
//! X_IMPORT_PROGRESS_RATE=524288
//! X_IMPORT_LAYER=1/3:done:1048576/1048576
//! X_IMPORT_LAYER=2/3:downloading:0/2097152
//! X_IMPORT_LAYER=3/3:waiting:0/-
//! ```
//!
//! * `X_IMPORT_PROGRESS_BYTES=DONE/TOTAL`: bytes received of the whole transfer and the
//!   bytes expected (`-` while unknown);
//! * `X_IMPORT_PROGRESS_RATE=N`: the current download rate in bytes per second;
//! * `X_IMPORT_LAYER=INDEX/COUNT:STATE:DONE/TOTAL`, one line per layer of a pull-oci
//!   (INDEX from 1, bottom layer first), STATE one of `waiting`, `downloading`,
//!   `applying`, `done`, TOTAL `-` while unknown.
//!
//! systemd's daemons read only the first `X_IMPORT_PROGRESS=` line and ignore the rest, so
//! the fields change nothing there. They refuse a datagram over 4096 bytes whole, so
//! [`format`] keeps the datagram under [`DATAGRAM_BUDGET`], dropping finished layers
//! first, then the highest ones. A malformed field is ignored by [`parse`], the others
//! still count.

/// The longest datagram [`format`] writes (systemd-importd reads at most 4096 bytes and
/// drops longer datagrams whole).
pub const DATAGRAM_BUDGET: usize = 4000;

const BYTES: &str = "X_IMPORT_PROGRESS_BYTES=";
const RATE: &str = "X_IMPORT_PROGRESS_RATE=";
const LAYER: &str = "X_IMPORT_LAYER=";

/// Where a layer is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LayerState {
    Waiting,
    Downloading,
    Applying,
    Done,
}

impl LayerState {
    const ALL: [LayerState; 4] = [
        LayerState::Waiting,
        LayerState::Downloading,
        LayerState::Applying,
        LayerState::Done,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            LayerState::Waiting => "waiting",
            LayerState::Downloading => "downloading",
            LayerState::Applying => "applying",
            LayerState::Done => "done",
        }
    }

    pub fn from_name(name: &str) -> Option<LayerState> {
        LayerState::ALL.into_iter().find(|s| s.as_str() == name)
    }
}

/// One layer's line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LayerProgress {
    /// From 1.
    pub index: u32,
    pub count: u32,
    pub state: LayerState,
    pub done: u64,
    pub total: Option<u64>,
}

/// Everything beyond the percentage.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Details {
    /// Bytes received and bytes expected (when known).
    pub bytes: Option<(u64, Option<u64>)>,
    /// Bytes per second.
    pub rate: Option<u64>,
    pub layers: Vec<LayerProgress>,
}

impl Details {
    pub fn is_empty(&self) -> bool {
        self.bytes.is_none() && self.rate.is_none() && self.layers.is_empty()
    }
}

fn total_text(total: Option<u64>) -> String {
    total.map_or_else(|| "-".to_string(), |t| t.to_string())
}

fn layer_line(l: &LayerProgress) -> String {
    format!(
        "{LAYER}{}/{}:{}:{}/{}",
        l.index,
        l.count,
        l.state.as_str(),
        l.done,
        total_text(l.total)
    )
}

/// The datagram: `first` (the `X_IMPORT_PROGRESS=` line) and the fields of `details`,
/// newline-separated, at most [`DATAGRAM_BUDGET`] bytes unless `first` alone is longer.
pub fn format(first: &str, details: &Details) -> String {
    let mut text = first.to_string();
    if let Some((done, total)) = details.bytes {
        text.push_str(&format!("\n{BYTES}{done}/{}", total_text(total)));
    }
    if let Some(rate) = details.rate {
        text.push_str(&format!("\n{RATE}{rate}"));
    }
    let lines: Vec<String> = details.layers.iter().map(layer_line).collect();
    let all: usize = lines.iter().map(|l| l.len() + 1).sum();
    if text.len() + all <= DATAGRAM_BUDGET {
        for line in lines {
            text.push('\n');
            text.push_str(&line);
        }
        return text;
    }
    // Unfinished layers first, each group bottom up; then back into layer order.
    let mut order: Vec<usize> = (0..lines.len()).collect();
    order.sort_by_key(|&i| (details.layers[i].state == LayerState::Done, i));
    let mut room = DATAGRAM_BUDGET.saturating_sub(text.len());
    let mut kept = Vec::new();
    for i in order {
        if lines[i].len() < room {
            room -= lines[i].len() + 1;
            kept.push(i);
        }
    }
    kept.sort_unstable();
    for i in kept {
        text.push('\n');
        text.push_str(&lines[i]);
    }
    text
}

/// `DONE/TOTAL` with TOTAL a number or `-`.
fn parse_done_total(v: &str) -> Option<(u64, Option<u64>)> {
    let (done, total) = v.split_once('/')?;
    let total = match total {
        "-" => None,
        t => Some(parse_u64(t)?),
    };
    Some((parse_u64(done)?, total))
}

/// Decimal digits only (no sign, no spaces).
fn parse_u64(v: &str) -> Option<u64> {
    if v.is_empty() || !v.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    v.parse().ok()
}

fn parse_layer(v: &str) -> Option<LayerProgress> {
    let mut parts = v.splitn(3, ':');
    let (index, count) = parts.next()?.split_once('/')?;
    let state = LayerState::from_name(parts.next()?)?;
    let (done, total) = parse_done_total(parts.next()?)?;
    let (index, count) = (parse_u64(index)?, parse_u64(count)?);
    let (index, count) = (u32::try_from(index).ok()?, u32::try_from(count).ok()?);
    if index == 0 || index > count {
        return None;
    }
    Some(LayerProgress {
        index,
        count,
        state,
        done,
        total,
    })
}

/// The extended fields of a datagram's text; `None` when it has none (a worker that
/// sends only the percentage). The first occurrence of the bytes and rate fields counts,
/// and of each layer index.
pub fn parse(text: &str) -> Option<Details> {
    let mut details = Details::default();
    for line in text.split('\n') {
        if let Some(v) = line.strip_prefix(BYTES) {
            if details.bytes.is_none() {
                details.bytes = parse_done_total(v);
            }
        } else if let Some(v) = line.strip_prefix(RATE) {
            if details.rate.is_none() {
                details.rate = parse_u64(v);
            }
        } else if let Some(layer) = line.strip_prefix(LAYER).and_then(parse_layer) {
            if !details.layers.iter().any(|l| l.index == layer.index) {
                details.layers.push(layer);
            }
        }
    }
    details.layers.sort_by_key(|l| l.index);
    (!details.is_empty()).then_some(details)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layer(index: u32, count: u32, state: LayerState, done: u64) -> LayerProgress {
        LayerProgress {
            index,
            count,
            state,
            done,
            total: Some(1000),
        }
    }

    #[test]
    fn fields_round_trip() {
        let d = Details {
            bytes: Some((10, None)),
            rate: Some(512),
            layers: vec![
                layer(1, 2, LayerState::Done, 1000),
                LayerProgress {
                    total: None,
                    ..layer(2, 2, LayerState::Waiting, 0)
                },
            ],
        };
        let text = format("X_IMPORT_PROGRESS=5", &d);
        assert_eq!(
            text,
            "X_IMPORT_PROGRESS=5\nX_IMPORT_PROGRESS_BYTES=10/-\nX_IMPORT_PROGRESS_RATE=512\n\
             X_IMPORT_LAYER=1/2:done:1000/1000\nX_IMPORT_LAYER=2/2:waiting:0/-"
        );
        assert_eq!(parse(&text), Some(d));
        assert_eq!(parse("X_IMPORT_PROGRESS=5"), None);
        assert_eq!(
            format("X_IMPORT_PROGRESS=5", &Details::default()),
            "X_IMPORT_PROGRESS=5"
        );
    }

    #[test]
    fn malformed_fields_are_ignored_one_by_one() {
        let text = "X_IMPORT_PROGRESS_BYTES=1/x\nX_IMPORT_PROGRESS_RATE=-3\n\
                    X_IMPORT_LAYER=0/2:done:1/1\nX_IMPORT_LAYER=3/2:done:1/1\n\
                    X_IMPORT_LAYER=1/2:sleeping:1/1\nX_IMPORT_LAYER=1/2:applying:5/-\n\
                    X_IMPORT_LAYER=1/2:done:9/9\n X_IMPORT_PROGRESS_RATE=1";
        let d = parse(text).unwrap();
        assert_eq!(d.bytes, None);
        assert_eq!(d.rate, None);
        assert_eq!(
            d.layers,
            vec![LayerProgress {
                total: None,
                ..layer(1, 2, LayerState::Applying, 5)
            }]
        );
    }

    #[test]
    fn long_layer_lists_stay_under_the_budget_unfinished_first() {
        let n = 200;
        let layers: Vec<LayerProgress> = (1..=n)
            .map(|i| {
                let state = if i % 10 < 7 {
                    LayerState::Done
                } else {
                    LayerState::Downloading
                };
                layer(i, n, state, 123_456_789)
            })
            .collect();
        let d = Details {
            bytes: Some((1, Some(2))),
            rate: None,
            layers,
        };
        let text = format("X_IMPORT_PROGRESS=1", &d);
        assert!(text.len() <= DATAGRAM_BUDGET, "{}", text.len());
        let back = parse(&text).unwrap();
        assert_eq!(back.bytes, Some((1, Some(2))));
        // Every unfinished layer fits (60 lines of ~50 bytes); done ones fill the rest.
        let unfinished = back
            .layers
            .iter()
            .filter(|l| l.state != LayerState::Done)
            .count();
        assert_eq!(unfinished, 60);
        assert!(back.layers.len() > 60 && back.layers.len() < 200);
        assert!(back.layers.windows(2).all(|w| w[0].index < w[1].index));
    }
}
