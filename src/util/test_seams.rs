//! Every test-only setting, read once at start-up into one value ([`TestSettings`]) that
//! the command line passes down to where each applies. None of them changes behaviour
//! unless its environment variable is set, and none is meant for production use.

use std::ffi::OsString;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// A place where a task of pull-raw can be held (`SYSTEMD_IMPORT_TEST_HOLD`).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Hold {
    /// After the qcow2 conversion wrote the converted file.
    Qcow2,
    /// After the local copy was written, before it is moved into place.
    LocalCopy,
}

impl Hold {
    fn parse(s: &str) -> Option<Hold> {
        match s {
            "qcow2" => Some(Hold::Qcow2),
            "local-copy" => Some(Hold::LocalCopy),
            _ => None,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Hold::Qcow2 => "qcow2",
            Hold::LocalCopy => "local-copy",
        }
    }
}

/// The test-only settings of one run.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TestSettings {
    /// `SYSTEMD_IMPORT_TEST_LOW_SPEED_TIME=<seconds>`: shortens the 60 s low-speed window
    /// after which a stalled transfer fails, so the stall test does not take a minute.
    pub low_speed_time: Option<Duration>,
    /// `SYSTEMD_IMPORT_TEST_PUBRING=<file>`: the keyring gpg verifies `SHA256SUMS.gpg`
    /// against, instead of `/etc/systemd/import-pubring.gpg` or
    /// `/usr/lib/systemd/import-pubring.gpg`: the tests run as root but must not write
    /// to `/etc` or `/usr`. Empty means no override.
    pub pubring: Option<PathBuf>,
    /// `SYSTEMD_IMPORT_TEST_DKR_REGISTRY_PORT=<port>`: pull-dkr appends `:<port>` to the
    /// registry host named by the index's `X-Docker-Endpoints` header, so the tests'
    /// registry can listen on an unprivileged port. The C tool builds
    /// `https://<endpoint>/v1/…` and requires each endpoint to be a valid host name (no
    /// port), so without this every registry request goes to port 443, as there.
    pub dkr_registry_port: Option<u16>,
    /// `SYSTEMD_IMPORT_TEST_HOLD=qcow2|local-copy`: a task of pull-raw that reaches that
    /// place logs a line and waits there until it is cancelled (SIGINT/SIGTERM), so a
    /// test can signal the tool in the middle of a step that would otherwise often be
    /// over before the signal arrives.
    pub hold: Option<Hold>,
    /// `SYSTEMD_IMPORT_TEST_RETRY_DELAY_MS=<ms>`: the delay before pull-oci's first retry
    /// of a failed request (default 1 s, doubling with every attempt), so the retry tests
    /// do not wait for seconds. A server's `Retry-After` is still waited for.
    pub retry_delay: Option<Duration>,
    /// `SYSTEMD_IMPORT_TEST_IMPORTD_EXIT_AFTER_MS=<ms>`: how long systemd-importd waits
    /// without work before it exits (default 30 s), so the idle-exit test does not wait
    /// half a minute.
    pub importd_exit_after: Option<Duration>,
}

impl TestSettings {
    /// The settings of this process's environment. Each program's start-up (the worker's
    /// command line, the daemon's main) calls this once; nothing else reads these variables.
    pub fn from_env() -> Self {
        Self::from_lookup(|name| std::env::var_os(name))
    }

    /// The settings `lookup` gives for the variables' names.
    fn from_lookup(lookup: impl Fn(&str) -> Option<OsString>) -> Self {
        let text = |name: &str| lookup(name).and_then(|v| v.into_string().ok());
        TestSettings {
            low_speed_time: text("SYSTEMD_IMPORT_TEST_LOW_SPEED_TIME")
                .and_then(|v| v.parse::<u64>().ok())
                .filter(|s| *s > 0)
                .map(Duration::from_secs),
            pubring: lookup("SYSTEMD_IMPORT_TEST_PUBRING")
                .filter(|v| !v.is_empty())
                .map(PathBuf::from),
            dkr_registry_port: text("SYSTEMD_IMPORT_TEST_DKR_REGISTRY_PORT")
                .and_then(|v| v.parse::<u16>().ok())
                .filter(|p| *p > 0),
            hold: text("SYSTEMD_IMPORT_TEST_HOLD").and_then(|v| Hold::parse(&v)),
            retry_delay: text("SYSTEMD_IMPORT_TEST_RETRY_DELAY_MS")
                .and_then(|v| v.parse::<u64>().ok())
                .map(Duration::from_millis),
            importd_exit_after: text("SYSTEMD_IMPORT_TEST_IMPORTD_EXIT_AFTER_MS")
                .and_then(|v| v.parse::<u64>().ok())
                .filter(|ms| *ms > 0)
                .map(Duration::from_millis),
        }
    }
}

/// If `hold` is `at`, log a line and wait until `cancel` is set; returns whether the task
/// was held (and so is now cancelled).
pub fn hold_at(hold: Option<Hold>, at: Hold, cancel: &AtomicBool) -> bool {
    if hold != Some(at) {
        return false;
    }
    log::info!(
        "Holding in phase '{}' until cancelled (SYSTEMD_IMPORT_TEST_HOLD).",
        at.name()
    );
    // The task's cancel flag has no wake-up of its own; polling it is what every
    // cancellable task does.
    while !cancel.load(Ordering::Acquire) {
        std::thread::sleep(Duration::from_millis(10));
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(vars: &[(&str, &str)]) -> TestSettings {
        TestSettings::from_lookup(|name| {
            vars.iter()
                .find(|(n, _)| *n == name)
                .map(|(_, v)| OsString::from(v))
        })
    }

    #[test]
    fn nothing_set_means_no_test_setting() {
        assert_eq!(settings(&[]), TestSettings::default());
    }

    #[test]
    fn each_variable_sets_its_setting() {
        let s = settings(&[
            ("SYSTEMD_IMPORT_TEST_LOW_SPEED_TIME", "3"),
            ("SYSTEMD_IMPORT_TEST_PUBRING", "ring.gpg"),
            ("SYSTEMD_IMPORT_TEST_DKR_REGISTRY_PORT", "5000"),
            ("SYSTEMD_IMPORT_TEST_HOLD", "local-copy"),
            ("SYSTEMD_IMPORT_TEST_RETRY_DELAY_MS", "20"),
        ]);
        assert_eq!(s.low_speed_time, Some(Duration::from_secs(3)));
        assert_eq!(s.pubring, Some(PathBuf::from("ring.gpg")));
        assert_eq!(s.dkr_registry_port, Some(5000));
        assert_eq!(s.hold, Some(Hold::LocalCopy));
        assert_eq!(s.retry_delay, Some(Duration::from_millis(20)));
    }

    #[test]
    fn empty_zero_and_unknown_values_are_ignored() {
        let s = settings(&[
            ("SYSTEMD_IMPORT_TEST_LOW_SPEED_TIME", "0"),
            ("SYSTEMD_IMPORT_TEST_PUBRING", ""),
            ("SYSTEMD_IMPORT_TEST_DKR_REGISTRY_PORT", "0"),
            ("SYSTEMD_IMPORT_TEST_HOLD", "elsewhere"),
            ("SYSTEMD_IMPORT_TEST_RETRY_DELAY_MS", "soon"),
        ]);
        assert_eq!(s, TestSettings::default());
    }

    #[test]
    fn only_the_named_hold_holds() {
        let cancel = AtomicBool::new(true);
        assert!(!hold_at(None, Hold::Qcow2, &cancel));
        assert!(!hold_at(Some(Hold::LocalCopy), Hold::Qcow2, &cancel));
        assert!(hold_at(Some(Hold::Qcow2), Hold::Qcow2, &cancel));
    }
}
