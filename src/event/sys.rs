//! The operating-system side of the event loop, all through `nix`: the epoll instance
//! ([`Poller`]), the clocks ([`Clock`], [`now`]), signal masks and signalfds, and eventfds.
//!
//! Nothing here knows about sources, ids or callbacks (calloop keeps its poller apart from
//! the loop logic the same way). Every descriptor the loop uses is made here; the nix types
//! handed out (`SignalFd`, `EventFd`) are then read and written through their own safe
//! methods. The one `unsafe` left is borrowing a descriptor number the loop does not own.

use std::os::fd::{BorrowedFd, RawFd};

use nix::errno::Errno;
use nix::sys::epoll::{Epoll, EpollCreateFlags, EpollEvent, EpollFlags, EpollTimeout};
use nix::sys::eventfd::{EfdFlags, EventFd};
use nix::sys::signal::{pthread_sigmask, SigSet, SigmaskHow, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use nix::time::{clock_gettime, ClockId};

use crate::util::error::{Error, Result};

/// epoll event bits, for io sources (what [`add_io`](super::EventLoop::add_io) waits for
/// and what its callback is handed).
pub const EPOLLIN: u32 = EpollFlags::EPOLLIN.bits() as u32;
pub const EPOLLOUT: u32 = EpollFlags::EPOLLOUT.bits() as u32;

/// How many ready descriptors one wait collects at most; the rest stay ready (level
/// triggered) and are collected by the next wait.
pub(super) const MAX_EVENTS: usize = 64;

/// The clock a timer's deadline is measured on.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Clock {
    Monotonic,
    Boottime,
}

impl Clock {
    fn id(self) -> ClockId {
        match self {
            Clock::Monotonic => ClockId::CLOCK_MONOTONIC,
            Clock::Boottime => ClockId::CLOCK_BOOTTIME,
        }
    }
}

/// Current time of `clock` in µs.
pub fn now(clock: Clock) -> u64 {
    // Both clocks exist on every Linux this tool supports (BOOTTIME since 2.6.39), so a
    // failure is a broken system, not an error to report.
    let ts = clock_gettime(clock.id())
        .unwrap_or_else(|e| panic!("clock_gettime({clock:?}) failed: {e}"));
    ts.tv_sec() as u64 * 1_000_000 + ts.tv_nsec() as u64 / 1000
}

/// The loop's epoll instance, keyed by the `u64` each registration carries. The loop does
/// not own the descriptors it watches, so they are passed by number.
pub(super) struct Poller {
    epoll: Epoll,
}

/// Run `f` on descriptor number `fd`, borrowed for the call only.
fn with_fd<R>(fd: RawFd, f: impl FnOnce(BorrowedFd<'_>) -> R) -> R {
    // SAFETY: the borrow lives only for `f`, a single epoll_ctl. The owner of an io source
    // keeps its descriptor open while the source is registered; removing a source whose
    // descriptor was already closed is tolerated, and then the kernel answers EBADF (or
    // ENOENT for a reused number it never saw), which the caller treats as "not
    // registered". No memory is reached through the descriptor.
    let fd = unsafe { BorrowedFd::borrow_raw(fd) };
    f(fd)
}

impl Poller {
    pub(super) fn new() -> Result<Self> {
        Ok(Poller {
            epoll: Epoll::new(EpollCreateFlags::EPOLL_CLOEXEC)?,
        })
    }

    /// Start watching `fd` for `events`, level-triggered.
    pub(super) fn add(&self, fd: RawFd, events: u32, key: u64) -> Result<()> {
        let ev = EpollEvent::new(EpollFlags::from_bits_retain(events as i32), key);
        with_fd(fd, |fd| self.epoll.add(fd, ev))?;
        Ok(())
    }

    /// Change the events (and key) of a watched `fd`.
    pub(super) fn modify(&self, fd: RawFd, events: u32, key: u64) -> Result<()> {
        let mut ev = EpollEvent::new(EpollFlags::from_bits_retain(events as i32), key);
        with_fd(fd, |fd| self.epoll.modify(fd, &mut ev))?;
        Ok(())
    }

    /// Stop watching `fd`.
    pub(super) fn delete(&self, fd: RawFd) -> Result<()> {
        with_fd(fd, |fd| self.epoll.delete(fd))?;
        Ok(())
    }

    /// Wait up to `timeout_ms` (`None`: forever) and fill `ready` with `(key, events)`
    /// pairs; returns how many. An interrupted wait (EINTR) counts as no events.
    pub(super) fn wait(
        &self,
        ready: &mut [(u64, u32); MAX_EVENTS],
        timeout_ms: Option<u64>,
    ) -> Result<usize> {
        let timeout = match timeout_ms {
            None => EpollTimeout::NONE,
            Some(ms) => EpollTimeout::try_from(ms).unwrap_or(EpollTimeout::MAX),
        };
        let mut events = [EpollEvent::empty(); MAX_EVENTS];
        let n = match self.epoll.wait(&mut events, timeout) {
            Ok(n) => n,
            Err(Errno::EINTR) => 0,
            Err(e) => return Err(e.into()),
        };
        for (slot, ev) in ready.iter_mut().zip(&events[..n]) {
            *slot = (ev.data(), ev.events().bits() as u32);
        }
        Ok(n)
    }
}

/// The set of `signals`; EINVAL for a number that names no signal.
fn sigset(signals: &[i32]) -> Result<SigSet> {
    let mut set = SigSet::empty();
    for &signo in signals {
        set.add(Signal::try_from(signo)?);
    }
    Ok(set)
}

/// Block `signals` in the calling thread.
pub(super) fn block_signals(signals: &[i32]) -> Result<()> {
    let set = sigset(signals)?;
    pthread_sigmask(SigmaskHow::SIG_BLOCK, Some(&set), None).map_err(Error::from)
}

/// A non-blocking signalfd for `signals` (which the caller has blocked).
pub(super) fn signal_fd(signals: &[i32]) -> Result<SignalFd> {
    let set = sigset(signals)?;
    Ok(SignalFd::with_flags(
        &set,
        SfdFlags::SFD_NONBLOCK | SfdFlags::SFD_CLOEXEC,
    )?)
}

/// A non-blocking eventfd with a zero counter.
pub(super) fn event_fd() -> Result<EventFd> {
    Ok(EventFd::from_value_and_flags(
        0,
        EfdFlags::EFD_CLOEXEC | EfdFlags::EFD_NONBLOCK,
    )?)
}
