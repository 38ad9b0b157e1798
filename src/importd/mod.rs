//! `systemd-importd`: the daemon behind `machinectl pull-*` and `importctl`. It serves
//! `org.freedesktop.import1` on the system bus, runs one worker (`systemd-pull`,
//! `systemd-import`, `systemd-import-fs` or `systemd-export`) per transfer, relays the worker's log and progress, and lets callers list and cancel
//! transfers (spec §6, modern-systemd.md §3).
//!
//! Layout:
//! * `api` has the bus interfaces and their handlers;
//! * `request` checks a call's arguments;
//! * `manager` is the loop's data and runs a transfer's life (start, relay, reap,
//!   report);
//! * `transfer`, `worker`, `log_relay` and `progress` are one transfer, its process, its
//!   output and its progress datagrams;
//! * `service` does readiness, the watchdog, the idle exit and an orderly stop;
//! * `images` answers `ListImages`.
//!
//! Everything runs on one thread on [`crate::event::EventLoop`]; the daemon imports the
//! bus layer, the loop and util, never the importers (the worker is a separate process).
//!
//! Environment, read once here at start-up: `SYSTEMD_PULL_PATH`, `SYSTEMD_IMPORT_PATH`,
//! `SYSTEMD_IMPORT_FS_PATH`, `SYSTEMD_EXPORT_PATH` (the worker binaries, as upstream's
//! daemon honours them; default `/usr/lib/systemd/systemd-{pull,import,import-fs,export}`),
//! `NOTIFY_SOCKET`, `WATCHDOG_USEC`/`WATCHDOG_PID` (from the service manager),
//! `DBUS_SYSTEM_BUS_ADDRESS` (read by libdbus), `SYSTEMD_LOG_*` (logging), and the test
//! setting `SYSTEMD_IMPORT_TEST_IMPORTD_EXIT_AFTER_MS` (through `util::test_seams::TestSettings`).

mod api;
mod images;
mod log_relay;
mod manager;
mod progress;
mod request;
mod service;
mod transfer;
mod worker;

use std::ffi::OsString;
use std::path::PathBuf;
use std::time::Duration;

use crate::event::{self, EventLoop};
use crate::util::test_seams::TestSettings;

/// Where systemd installs its pull worker.
pub const DEFAULT_PULL_PATH: &str = "/usr/lib/systemd/systemd-pull";
/// Where systemd installs its import, directory-import and export workers.
pub const DEFAULT_IMPORT_PATH: &str = "/usr/lib/systemd/systemd-import";
pub const DEFAULT_IMPORT_FS_PATH: &str = "/usr/lib/systemd/systemd-import-fs";
pub const DEFAULT_EXPORT_PATH: &str = "/usr/lib/systemd/systemd-export";

/// How long the daemon stays without work before it exits (systemd's
/// `DEFAULT_EXIT_USEC`).
pub const DEFAULT_EXIT_AFTER: Duration = Duration::from_secs(30);

/// Everything the environment decides, read once at start-up.
#[derive(Clone, Debug)]
pub struct Settings {
    /// The worker for pulls.
    pub pull_path: PathBuf,
    /// The workers for imports of files, of directories, and for exports.
    pub import_path: PathBuf,
    pub import_fs_path: PathBuf,
    pub export_path: PathBuf,
    /// The idle time before exiting.
    pub exit_after: Duration,
    /// The service manager's watchdog period, if it asked for pings.
    pub watchdog: Option<Duration>,
    /// The service manager's notification socket.
    pub notify_socket: Option<OsString>,
}

impl Settings {
    pub fn from_env() -> Settings {
        let env = |name: &str| std::env::var_os(name).filter(|v| !v.is_empty());
        let watchdog_for_us = std::env::var("WATCHDOG_PID")
            .ok()
            .is_none_or(|pid| pid.parse::<u32>().ok() == Some(std::process::id()));
        let watchdog = std::env::var("WATCHDOG_USEC")
            .ok()
            .and_then(|v| v.parse::<u64>().ok())
            .filter(|usec| *usec > 0 && watchdog_for_us)
            .map(Duration::from_micros);
        let path = |name: &str, default: &str| {
            env(name)
                .map(PathBuf::from)
                .unwrap_or_else(|| PathBuf::from(default))
        };
        Settings {
            pull_path: path("SYSTEMD_PULL_PATH", DEFAULT_PULL_PATH),
            import_path: path("SYSTEMD_IMPORT_PATH", DEFAULT_IMPORT_PATH),
            import_fs_path: path("SYSTEMD_IMPORT_FS_PATH", DEFAULT_IMPORT_FS_PATH),
            export_path: path("SYSTEMD_EXPORT_PATH", DEFAULT_EXPORT_PATH),
            exit_after: TestSettings::from_env()
                .importd_exit_after
                .unwrap_or(DEFAULT_EXIT_AFTER),
            watchdog,
            notify_socket: env("NOTIFY_SOCKET"),
        }
    }
}

/// Entry point of `systemd-importd`; returns the exit status.
pub fn main() -> i32 {
    crate::util::log::init();
    if std::env::args_os().len() > 1 {
        log::error!("This program takes no arguments.");
        return 1;
    }
    nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(0o022));
    // Before any child exists: SIGCHLD, SIGTERM and SIGINT arrive only through the
    // loop's signalfds. (Workers get a clean mask: std resets it before exec.)
    if let Err(e) = event::block_signals(&[libc::SIGCHLD, libc::SIGTERM, libc::SIGINT]) {
        log::error!("Failed to block signals: {e}");
        return 1;
    }
    let settings = Settings::from_env();
    let mut lp = match EventLoop::new() {
        Ok(lp) => lp,
        Err(e) => {
            log::error!("Failed to allocate event loop: {e}");
            return 1;
        }
    };
    let mut manager = match manager::Manager::new(settings) {
        Ok(m) => m,
        Err(e) => {
            log::error!(
                "Failed to allocate manager object: {}",
                e.msg().map_or_else(|| e.to_string(), str::to_string)
            );
            return 1;
        }
    };
    if let Err(e) = manager.start(&mut lp) {
        log::error!("Failed to set up the daemon: {e}");
        return 1;
    }
    let code = match lp.run(&mut manager) {
        Ok(code) => code,
        Err(e) => {
            log::error!("Failed to run event loop: {e}");
            1
        }
    };
    // The last signals (TransferRemoved of cancelled transfers) go out before we close.
    manager.bus.flush();
    i32::from(code != 0)
}
