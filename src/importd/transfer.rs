//! One transfer: its request, its worker, the worker's output and progress.
//!
//! The transfer owns the worker (`std::process::Child`) until it is reaped and the read
//! end of the worker's output pipe until EOF. Dropping a transfer whose worker still runs
//! kills it (SIGKILL, then SIGCONT so a stopped worker dies too) and reaps it, as
//! systemd's `transfer_unref()` does; the daemon's orderly paths (cancel, shutdown) let
//! the worker exit by itself first.

use std::os::fd::OwnedFd;
use std::process::{Child, ExitStatus};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use super::log_relay::{LogBuffer, Read};
use super::request::PullRequest;
use crate::event::SourceId;
use crate::util::error::Result;
use crate::util::progress::Details;

/// At most this many transfers at once (systemd's `TRANSFERS_MAX`).
pub const TRANSFERS_MAX: usize = 64;

/// Transfer objects live below this path, as `…/_<id>`.
pub const TRANSFER_PREFIX: &str = "/org/freedesktop/import1/transfer";

/// How often a cancel sends SIGTERM before it sends SIGKILL.
const GENTLE_CANCELS: u32 = 3;

pub struct Transfer {
    pub id: u32,
    /// `/org/freedesktop/import1/transfer/_<id>`.
    pub path: String,
    pub request: PullRequest,
    /// The worker; taken when it has been reaped.
    child: Option<Child>,
    pid: i32,
    /// The worker's output and its io source; `None` after EOF or a read error.
    pub(super) log: Option<(OwnedFd, SourceId)>,
    /// Output not relayed yet.
    pub(super) buffer: LogBuffer,
    /// How often a cancel was requested.
    pub n_canceled: u32,
    /// The last percentage the worker reported.
    pub progress: Option<u32>,
    /// The percentage the last `ProgressUpdate` carried.
    pub(super) progress_sent: Option<u32>,
    /// The extended fields of the worker's last report that had any (our interface).
    pub details: Option<Details>,
}

impl Transfer {
    pub fn new(id: u32, request: PullRequest, child: Child, log: (OwnedFd, SourceId)) -> Self {
        Transfer {
            id,
            path: path_of(id),
            request,
            pid: child.id() as i32,
            child: Some(child),
            log: Some(log),
            buffer: LogBuffer::default(),
            n_canceled: 0,
            progress: None,
            progress_sent: None,
            details: None,
        }
    }

    /// The worker's pid.
    pub fn pid(&self) -> i32 {
        self.pid
    }

    /// `Progress`: the fraction done, or `-DBL_MAX` while unknown.
    pub fn progress_value(&self) -> f64 {
        match self.progress {
            Some(p) => f64::from(p) / 100.0,
            None => -f64::MAX,
        }
    }

    /// Ask the worker to stop: SIGTERM the first three times, SIGKILL after; SIGCONT
    /// each time so a stopped worker acts on it.
    pub fn cancel(&mut self) -> Result<()> {
        let signal = if self.n_canceled < GENTLE_CANCELS {
            Signal::SIGTERM
        } else {
            Signal::SIGKILL
        };
        self.signal(signal)?;
        self.n_canceled += 1;
        Ok(())
    }

    /// Send `signal` (and SIGCONT) to the worker if it has not been reaped.
    pub fn signal(&self, signal: Signal) -> Result<()> {
        if self.child.is_none() {
            return Ok(());
        }
        kill(Pid::from_raw(self.pid), signal)?;
        let _ = kill(Pid::from_raw(self.pid), Signal::SIGCONT);
        Ok(())
    }

    /// The worker's exit status, once, when it has exited (reaping it).
    pub fn try_wait(&mut self) -> Option<ExitStatus> {
        let status = self.child.as_mut()?.try_wait().ok().flatten()?;
        self.child = None;
        Some(status)
    }

    /// Read once from the worker's output into the buffer.
    pub fn read_log(&mut self) -> Result<Read> {
        match &self.log {
            Some((fd, _)) => self.buffer.read_from(fd),
            None => Ok(Read::Eof),
        }
    }
}

impl Drop for Transfer {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = kill(Pid::from_raw(self.pid), Signal::SIGKILL);
            let _ = kill(Pid::from_raw(self.pid), Signal::SIGCONT);
            let _ = child.wait();
        }
    }
}

/// The object path of transfer `id`.
pub fn path_of(id: u32) -> String {
    format!("{TRANSFER_PREFIX}/_{id}")
}

/// The id in a transfer object path (`…/_<id>`, id > 0, decimal without sign or
/// leading junk).
pub fn id_of(path: &str) -> Option<u32> {
    let digits = path.strip_prefix(TRANSFER_PREFIX)?.strip_prefix("/_")?;
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok().filter(|id| *id > 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_and_ids() {
        assert_eq!(path_of(7), "/org/freedesktop/import1/transfer/_7");
        assert_eq!(id_of("/org/freedesktop/import1/transfer/_7"), Some(7));
        for bad in [
            "/org/freedesktop/import1/transfer/_0",
            "/org/freedesktop/import1/transfer/_",
            "/org/freedesktop/import1/transfer/_+7",
            "/org/freedesktop/import1/transfer/7",
            "/org/freedesktop/import1/transfer/_99999999999",
            "/org/freedesktop/import1/transfer",
        ] {
            assert_eq!(id_of(bad), None, "{bad}");
        }
    }
}
