//! Signals: blocking them, so that they only ever arrive through a signalfd, and the
//! signalfd a signal source reads ([`SignalFdSource`]).
//!
//! A blocked signal directed at the process goes to any thread that does not block it, so
//! block the signals in the main thread before any other thread exists (curl's resolver,
//! job workers and tasks inherit the mask): [`block_signals`].

use std::os::fd::{AsRawFd, RawFd};

use nix::sys::signalfd::{siginfo, SignalFd};

use super::sys;
use crate::util::error::Result;

/// Block `signals` in the calling thread (threads spawned later inherit the mask).
pub fn block_signals(signals: &[i32]) -> Result<()> {
    sys::block_signals(signals)
}

/// The signalfd of one signal source and the siginfo read from it but not yet dispatched.
pub(super) struct SignalFdSource {
    fd: SignalFd,
    /// Boxed: a siginfo is 128 bytes, more than every other source kind.
    info: Option<Box<siginfo>>,
}

impl SignalFdSource {
    /// Block `signo` in the calling thread and open a signalfd for it.
    pub(super) fn new(signo: i32) -> Result<Self> {
        block_signals(&[signo])?;
        Ok(SignalFdSource {
            fd: sys::signal_fd(&[signo])?,
            info: None,
        })
    }

    pub(super) fn raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }

    /// Make sure one siginfo is held, reading it if needed; false if none was queued.
    pub(super) fn fill(&mut self) -> bool {
        if self.info.is_none() {
            match self.fd.read_signal() {
                Ok(Some(si)) => self.info = Some(Box::new(si)),
                Ok(None) | Err(_) => return false,
            }
        }
        true
    }

    /// The held siginfo, for the callback.
    pub(super) fn take(&mut self) -> Option<Box<siginfo>> {
        self.info.take()
    }
}
