//! (provisional; replaced by the util branch) Human-readable sizes and time spans.

use crate::util::error::{Error, Result};

/// Provisional.
pub fn format_bytes(t: u64) -> String {
    const TABLE: [(char, u64); 6] = [
        ('E', 1 << 60),
        ('P', 1 << 50),
        ('T', 1 << 40),
        ('G', 1 << 30),
        ('M', 1 << 20),
        ('K', 1 << 10),
    ];
    for (suffix, factor) in TABLE {
        if t >= factor {
            return format!("{}.{}{}", t / factor, (t % factor) * 10 / factor, suffix);
        }
    }
    format!("{t}B")
}

/// Provisional.
pub fn format_timespan(usec: u64, _accuracy: u64) -> String {
    format!("{}s", usec / 1_000_000)
}

/// Provisional.
pub fn parse_http_time(_s: &str) -> Result<u64> {
    Err(Error::new(libc::EINVAL))
}
