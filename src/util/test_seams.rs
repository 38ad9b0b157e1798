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

/// `SYSTEMD_IMPORT_TEST_DKR_REGISTRY_PORT=<port>`: pull-dkr appends `:<port>` to the
/// registry host named by the index's `X-Docker-Endpoints` header, so the tests' registry
/// can listen on an unprivileged port. Test-only: the C tool builds
/// `https://<endpoint>/v1/…` and requires each endpoint to be a valid host name (no
/// port), so without this variable every registry request goes to port 443, as there.
pub fn dkr_registry_port() -> Option<u16> {
    std::env::var("SYSTEMD_IMPORT_TEST_DKR_REGISTRY_PORT")
        .ok()?
        .parse::<u16>()
        .ok()
        .filter(|p| *p > 0)
}

/// `SYSTEMD_IMPORT_TEST_HOLD=<phase>`: a task of pull-raw that reaches `phase` logs a line
/// and then waits there until it is cancelled (SIGINT/SIGTERM), so a test can signal the
/// tool in the middle of a step that would otherwise often be over before the signal
/// arrives. Phases: `qcow2` (after the conversion wrote the converted file) and
/// `local-copy` (after the local copy was written, before it is moved into place).
/// Returns whether the task was held (and so is now cancelled).
pub fn hold(phase: &str, cancel: &std::sync::atomic::AtomicBool) -> bool {
    if std::env::var("SYSTEMD_IMPORT_TEST_HOLD").ok().as_deref() != Some(phase) {
        return false;
    }
    log::info!("Holding in phase '{phase}' until cancelled (SYSTEMD_IMPORT_TEST_HOLD).");
    // The task's cancel flag has no wake-up of its own; polling it is what every
    // cancellable task does.
    while !cancel.load(std::sync::atomic::Ordering::Acquire) {
        std::thread::sleep(Duration::from_millis(10));
    }
    true
}

/// `SYSTEMD_IMPORT_TEST_RETRY_DELAY_MS=<ms>`: the delay before pull-oci's first retry of a
/// failed request (default 1 s, doubling with every attempt), so the retry tests do not
/// wait for seconds. A server's `Retry-After` is still waited for in full.
pub fn retry_delay() -> Option<Duration> {
    std::env::var("SYSTEMD_IMPORT_TEST_RETRY_DELAY_MS")
        .ok()?
        .parse::<u64>()
        .ok()
        .map(Duration::from_millis)
}
