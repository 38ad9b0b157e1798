//! Logging the way systemd's command-line tools do it: one plain line per message on
//! stderr, filtered by syslog priority.
//!
//! * `SYSTEMD_LOG_LEVEL` = `emerg` … `debug` or `0` … `7` (default `info`);
//! * `SYSTEMD_LOG_TARGET` = `console` (default), `console-prefixed` (each line starts with
//!   `<N>`, the priority, which is how systemd-importd relays worker output), or `null`;
//!   systemd's journal/syslog/kmsg targets are accepted and write to the console;
//! * `SYSTEMD_LOG_LOCATION` = true prefixes `(file:line) `.
//!
//! Lines a thread logs can be held back instead of printed ([`holding`]: those of a
//! given priority or more important are kept, the rest dropped) and printed later, or
//! not at all ([`release`]).
//!
//! The `log` crate has no "notice" level, so notice messages use the target
//! [`NOTICE_TARGET`]; use [`log_notice!`](crate::log_notice).

use std::cell::RefCell;
use std::io::Write;
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};

/// syslog priorities.
pub const LOG_EMERG: u8 = 0;
pub const LOG_ERR: u8 = 3;
pub const LOG_WARNING: u8 = 4;
pub const LOG_NOTICE: u8 = 5;
pub const LOG_INFO: u8 = 6;
pub const LOG_DEBUG: u8 = 7;

/// Target name that turns an `info!` into a notice (priority 5).
pub const NOTICE_TARGET: &str = "notice";

static MAX_PRIORITY: AtomicU8 = AtomicU8::new(LOG_INFO);
static PREFIXED: AtomicBool = AtomicBool::new(false);
static DISCARD: AtomicBool = AtomicBool::new(false);
static LOCATION: AtomicBool = AtomicBool::new(false);

thread_local! {
    /// Inside [`holding`]: the least important priority kept, and the lines kept.
    static HELD: RefCell<Option<(u8, Vec<HeldLine>)>> = const { RefCell::new(None) };
}

/// A line logged inside [`holding`]: its priority and its text (newline included).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HeldLine {
    pub priority: u8,
    pub text: String,
}

struct ConsoleLogger;

static LOGGER: ConsoleLogger = ConsoleLogger;

fn priority_of(metadata: &log::Metadata<'_>) -> u8 {
    match metadata.level() {
        log::Level::Error => LOG_ERR,
        log::Level::Warn => LOG_WARNING,
        log::Level::Info if metadata.target() == NOTICE_TARGET => LOG_NOTICE,
        log::Level::Info => LOG_INFO,
        log::Level::Debug | log::Level::Trace => LOG_DEBUG,
    }
}

impl log::Log for ConsoleLogger {
    fn enabled(&self, metadata: &log::Metadata<'_>) -> bool {
        !DISCARD.load(Ordering::Relaxed)
            && priority_of(metadata) <= MAX_PRIORITY.load(Ordering::Relaxed)
    }

    fn log(&self, record: &log::Record<'_>) {
        if !self.enabled(record.metadata()) {
            return;
        }
        let mut line = String::new();
        if PREFIXED.load(Ordering::Relaxed) {
            line.push_str(&format!("<{}>", priority_of(record.metadata())));
        }
        if LOCATION.load(Ordering::Relaxed) {
            if let (Some(file), Some(l)) = (record.file(), record.line()) {
                line.push_str(&format!("({file}:{l}) "));
            }
        }
        line.push_str(&record.args().to_string());
        line.push('\n');
        let priority = priority_of(record.metadata());
        let held = HELD.with(|held| match held.borrow_mut().as_mut() {
            Some((keep, lines)) => {
                // Only what may be released is kept: the rest would grow with the input
                // (a warning per member of a large archive).
                if priority <= *keep {
                    lines.push(HeldLine {
                        priority,
                        text: std::mem::take(&mut line),
                    });
                }
                true
            }
            None => false,
        });
        if held {
            return;
        }
        // One write per line so lines from worker threads never interleave mid-line.
        let _ = std::io::stderr().lock().write_all(line.as_bytes());
    }

    fn flush(&self) {
        let _ = std::io::stderr().flush();
    }
}

/// Parse a `SYSTEMD_LOG_LEVEL` value: a name or a number 0–7.
pub fn parse_level(s: &str) -> Option<u8> {
    let names = [
        "emerg", "alert", "crit", "err", "warning", "notice", "info", "debug",
    ];
    if let Some(i) = names.iter().position(|n| *n == s) {
        return Some(i as u8);
    }
    match s.parse::<u8>() {
        Ok(n) if n <= LOG_DEBUG => Some(n),
        _ => None,
    }
}

/// Install the logger and read the `SYSTEMD_LOG_*` environment. Safe to call twice.
pub fn init() {
    let _ = log::set_logger(&LOGGER);
    log::set_max_level(log::LevelFilter::Trace);
    if let Some(level) = std::env::var("SYSTEMD_LOG_LEVEL")
        .ok()
        .and_then(|v| parse_level(&v))
    {
        set_max_priority(level);
    }
    match std::env::var("SYSTEMD_LOG_TARGET").as_deref() {
        Ok("console-prefixed") => PREFIXED.store(true, Ordering::Relaxed),
        Ok("null") => DISCARD.store(true, Ordering::Relaxed),
        _ => {}
    }
    if let Ok(v) = std::env::var("SYSTEMD_LOG_LOCATION") {
        LOCATION.store(
            matches!(v.as_str(), "1" | "yes" | "y" | "true" | "t" | "on"),
            Ordering::Relaxed,
        );
    }
}

/// Whether a message of priority `prio` is printed (the maximum priority, and not the
/// `null` target): for callers that write such messages themselves.
pub fn enabled(prio: u8) -> bool {
    !DISCARD.load(Ordering::Relaxed) && prio <= MAX_PRIORITY.load(Ordering::Relaxed)
}

/// Change the maximum priority that is printed (`LOG_DEBUG` prints everything).
pub fn set_max_priority(prio: u8) {
    MAX_PRIORITY.store(prio.min(LOG_DEBUG), Ordering::Relaxed);
}

/// Run `f` with the lines this thread logs held back instead of printed, and return
/// those of priority `keep` or more important with its result (the others are dropped):
/// for work done twice (an archive unpacked into two trees), whose second run would
/// repeat the first's lines; the caller prints what only it said with [`release`].
pub fn holding<R>(keep: u8, f: impl FnOnce() -> R) -> (R, Vec<HeldLine>) {
    let outer = HELD.with(|held| held.replace(Some((keep, Vec::new()))));
    let result = f();
    let lines = HELD
        .with(|held| held.replace(outer))
        .map(|(_, lines)| lines)
        .unwrap_or_default();
    (result, lines)
}

/// Print held lines.
pub fn release(lines: &[HeldLine]) {
    let mut err = std::io::stderr().lock();
    for line in lines {
        let _ = err.write_all(line.text.as_bytes());
    }
}

/// Log at notice level (priority 5): `Transfer aborted.` and the like.
#[macro_export]
macro_rules! log_notice {
    ($($arg:tt)+) => {
        ::log::info!(target: $crate::util::log::NOTICE_TARGET, $($arg)+)
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn held_lines_are_returned_instead_of_printed() {
        init();
        set_max_priority(LOG_DEBUG);
        let ((), lines) = holding(LOG_ERR, || {
            log::error!("held error");
            log::warn!("less important than kept: dropped");
            log::debug!("below the priority: never held");
        });
        assert_eq!(
            lines,
            [HeldLine {
                priority: LOG_ERR,
                text: "held error\n".into()
            }]
        );
        // Holding ends with the closure.
        HELD.with(|held| assert!(held.borrow().is_none()));
    }

    #[test]
    fn levels_parse_by_name_and_number() {
        assert_eq!(parse_level("debug"), Some(7));
        assert_eq!(parse_level("notice"), Some(5));
        assert_eq!(parse_level("3"), Some(3));
        assert_eq!(parse_level("8"), None);
        assert_eq!(parse_level("loud"), None);
    }

    #[test]
    fn notice_target_maps_to_priority_5() {
        let md = log::Metadata::builder()
            .level(log::Level::Info)
            .target(NOTICE_TARGET)
            .build();
        assert_eq!(priority_of(&md), LOG_NOTICE);
        let md = log::Metadata::builder()
            .level(log::Level::Info)
            .target("x")
            .build();
        assert_eq!(priority_of(&md), LOG_INFO);
    }
}
