//! Every test-only setting in one place. None of them changes behaviour unless its
//! environment variable is set, and none is meant for production use.

use std::path::PathBuf;
use std::time::Duration;

/// `SYSTEMD_IMPORT_TEST_LOW_SPEED_TIME=<seconds>`: shortens the 60 s low-speed window
/// after which a stalled transfer fails, so the stall test does not take a minute.
pub fn low_speed_time() -> Option<Duration> {
    std::env::var("SYSTEMD_IMPORT_TEST_LOW_SPEED_TIME")
        .ok()?
        .parse::<u64>()
        .ok()
        .filter(|s| *s > 0)
        .map(Duration::from_secs)
}

/// `SYSTEMD_IMPORT_TEST_PUBRING`: the keyring gpg verifies `SHA256SUMS.gpg` against,
/// instead of `/etc/systemd/import-pubring.gpg` or `/usr/lib/systemd/import-pubring.gpg`.
/// Test-only: the tests run as root but must not write to `/etc` or `/usr`. Unset or
/// empty means no override.
pub fn import_pubring() -> Option<PathBuf> {
    std::env::var_os("SYSTEMD_IMPORT_TEST_PUBRING")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
}

/// `SYSTEMD_IMPORT_TEST_RETRY_DELAY_MS=<ms>`: the delay before pull-oci's first retry of a
/// failed request (default 1 s, doubling with every attempt), so the retry tests do not
/// wait for seconds. `Retry-After` values are capped to it as well.
pub fn retry_delay() -> Option<Duration> {
    std::env::var("SYSTEMD_IMPORT_TEST_RETRY_DELAY_MS")
        .ok()?
        .parse::<u64>()
        .ok()
        .map(Duration::from_millis)
}
