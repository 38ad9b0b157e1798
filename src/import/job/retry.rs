//! When a failed request is tried again, and after how long: the retry and backoff policy
//! of the importers that retry (pull-oci; the C importers never retry).
//!
//! A request is worth another attempt when the server says it is busy or broken for now
//! (408, 429, 5xx) or the connection failed underway; TLS verification failures, protocol
//! errors, our own refusals and any other HTTP status are final. Attempts are limited;
//! the delay doubles from the first one, unless the server named one in `Retry-After`
//! (seconds or an HTTP date), which is honoured up to a limit.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::ImportJob;
use crate::util::format::parse_http_time;

/// Attempts per request, the first included.
pub const ATTEMPTS_MAX: u32 = 4;
/// Delay before the first retry; doubles with each attempt.
const FIRST_DELAY: Duration = Duration::from_secs(1);
/// Longest `Retry-After` honoured.
const RETRY_AFTER_MAX: Duration = Duration::from_secs(60);

/// Attempts and delays.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Attempts per request, the first included.
    pub attempts_max: u32,
    /// Delay before the first retry; doubles with each attempt.
    pub first_delay: Duration,
    /// Longest `Retry-After` honoured.
    pub retry_after_max: Duration,
}

impl Default for RetryPolicy {
    /// Four attempts, 1 s doubling, `Retry-After` up to 60 s.
    fn default() -> Self {
        RetryPolicy {
            attempts_max: ATTEMPTS_MAX,
            first_delay: FIRST_DELAY,
            retry_after_max: RETRY_AFTER_MAX,
        }
    }
}

impl RetryPolicy {
    /// The default policy, with the first delay shortened to `first_delay` if given (the
    /// tests' setting; a server's `Retry-After` is not shortened by it).
    pub fn with_first_delay(first_delay: Option<Duration>) -> Self {
        let mut policy = RetryPolicy::default();
        if let Some(d) = first_delay {
            policy.first_delay = d;
        }
        policy
    }

    /// The delay before the next attempt of a request that failed its `attempts`-th
    /// attempt (counting from 1), or `None` when it had all its attempts. `retry_after`
    /// is what the server asked for, if anything.
    pub fn next_delay(&self, attempts: u32, retry_after: Option<Duration>) -> Option<Duration> {
        if attempts >= self.attempts_max {
            return None;
        }
        let delay = match retry_after {
            Some(after) => after.min(self.retry_after_max),
            None => self
                .first_delay
                .saturating_mul(2u32.saturating_pow(attempts.saturating_sub(1))),
        };
        Some(delay)
    }
}

/// Whether the failed `job` is worth another attempt (see the module documentation). A
/// body shorter than its Content-Length counts as a failed connection.
pub fn is_retryable(job: &ImportJob) -> bool {
    if job.content_mismatch() {
        return false;
    }
    match job.response_code() {
        408 | 429 | 500..=599 => true,
        c if c >= 300 => false,
        _ => match job.transfer_error() {
            Some(e) => {
                e.is_couldnt_connect()
                    || e.is_operation_timedout()
                    || e.is_partial_file()
                    || e.is_recv_error()
                    || e.is_send_error()
                    || e.is_got_nothing()
                    || e.is_http2_error()
                    || e.is_http2_stream_error()
            }
            // Failed by the job itself: only "Download truncated." (EIO) is the network's.
            None => job.error().is_none_or(|e| e.errno() == libc::EIO),
        },
    }
}

/// The job's `Retry-After` header, if it has a usable one.
pub fn retry_after(job: &ImportJob) -> Option<Duration> {
    parse_retry_after(job.header("Retry-After")?, SystemTime::now())
}

/// `Retry-After`: delay-seconds, or an HTTP date (a past one means now).
pub fn parse_retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    if let Ok(secs) = value.trim().parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let at = parse_http_time(value).ok()?;
    let now = now.duration_since(UNIX_EPOCH).ok()?.as_micros() as u64;
    Some(Duration::from_micros(at.saturating_sub(now)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_double_until_the_attempts_are_used_up() {
        let p = RetryPolicy::default();
        assert_eq!(p.next_delay(1, None), Some(Duration::from_secs(1)));
        assert_eq!(p.next_delay(2, None), Some(Duration::from_secs(2)));
        assert_eq!(p.next_delay(3, None), Some(Duration::from_secs(4)));
        assert_eq!(p.next_delay(4, None), None);
    }

    #[test]
    fn retry_after_wins_up_to_its_limit() {
        let p = RetryPolicy::default();
        let s = Duration::from_secs;
        assert_eq!(p.next_delay(3, Some(s(0))), Some(s(0)));
        assert_eq!(p.next_delay(1, Some(s(5))), Some(s(5)));
        assert_eq!(p.next_delay(1, Some(s(600))), Some(s(60)));
        let t = RetryPolicy::with_first_delay(Some(Duration::from_millis(20)));
        assert_eq!(t.next_delay(2, None), Some(Duration::from_millis(40)));
        assert_eq!(t.next_delay(1, Some(s(5))), Some(s(5)), "not shortened");
    }

    #[test]
    fn retry_after_is_seconds_or_an_http_date() {
        let now = UNIX_EPOCH + Duration::from_secs(784_111_777); // Sun, 06 Nov 1994 08:49:37
        assert_eq!(parse_retry_after(" 7 ", now), Some(Duration::from_secs(7)));
        assert_eq!(
            parse_retry_after("Sun, 06 Nov 1994 08:49:49 GMT", now),
            Some(Duration::from_secs(12))
        );
        assert_eq!(
            parse_retry_after("Sun, 06 Nov 1994 08:00:00 GMT", now),
            Some(Duration::ZERO),
            "a past date means now"
        );
        assert_eq!(parse_retry_after("soon", now), None);
        assert_eq!(parse_retry_after("-1", now), None);
    }
}
