//! The loop itself: [`EventLoop`], the kinds of source it holds (io, timer, signal, defer,
//! exit), their registration with the poller and the timer heap, and the dispatch of one
//! source per iteration. The semantics are described in the [module documentation](super).

use std::os::fd::RawFd;
use std::time::Duration;

use super::signal::SignalFdSource;
use super::source::{Enabled, Slots, SourceId, PRIORITY_NORMAL};
use super::sys::{self, Clock, Poller, EPOLLIN, MAX_EVENTS};
use super::timer::{duration_usec, Deadline, TimerAction, TimerHeap};
use crate::util::error::{Error, Result};

type IoFn<D> = dyn FnMut(&mut EventLoop<D>, &mut D, SourceId, u32) -> Result<()>;
type TimerFn<D> = dyn FnMut(&mut EventLoop<D>, &mut D, SourceId, u64) -> Result<TimerAction>;
type SignalFn<D> =
    dyn FnMut(&mut EventLoop<D>, &mut D, SourceId, &libc::signalfd_siginfo) -> Result<()>;
type PlainFn<D> = dyn FnMut(&mut EventLoop<D>, &mut D, SourceId) -> Result<()>;

enum Callback<D> {
    Io(Box<IoFn<D>>),
    Timer(Box<TimerFn<D>>),
    Signal(Box<SignalFn<D>>),
    Plain(Box<PlainFn<D>>),
}

enum Kind {
    Io {
        fd: RawFd,
        events: u32,
        /// Whether the fd is currently in the epoll set (only while enabled).
        registered: bool,
        /// Events seen by the last epoll_wait, handed to the callback.
        revents: u32,
    },
    Timer {
        clock: Clock,
        /// Absolute µs on `clock`.
        deadline: u64,
        /// Sequence number of this timer's live heap entry; 0 while not armed (disabled,
        /// pending or running).
        armed: u64,
    },
    Signal {
        sfd: SignalFdSource,
        registered: bool,
    },
    Defer,
    Exit,
}

struct Source<D> {
    kind: Kind,
    /// Taken out while the callback runs (take–call–restore).
    callback: Option<Callback<D>>,
    enabled: Enabled,
    priority: i64,
    pending: bool,
    /// When the source became pending; older first among equal priorities.
    pending_seq: u64,
    description: String,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum State {
    Running,
    Exiting,
    Finished,
}

/// Whether heap entry `d` is the live entry of its timer.
fn timer_live<D>(sources: &Slots<Source<D>>, d: &Deadline) -> bool {
    matches!(
        sources.get(d.id),
        Some(Source { kind: Kind::Timer { armed, .. }, .. }) if *armed == d.seq
    )
}

/// The event loop. See the [module documentation](super) for the semantics.
pub struct EventLoop<D> {
    poller: Poller,
    sources: Slots<Source<D>>,
    timers: TimerHeap,
    state: State,
    exit_code: i32,
    pending_counter: u64,
    /// Timestamps taken once per iteration after the wait (sd_event_now semantics).
    now_monotonic: Option<u64>,
    now_boottime: Option<u64>,
}

impl<D: 'static> EventLoop<D> {
    /// A new loop with its own epoll instance.
    pub fn new() -> Result<Self> {
        Ok(EventLoop {
            poller: Poller::new()?,
            sources: Slots::new(),
            timers: TimerHeap::new(),
            state: State::Running,
            exit_code: 0,
            pending_counter: 0,
            now_monotonic: None,
            now_boottime: None,
        })
    }

    fn insert(&mut self, kind: Kind, callback: Callback<D>, enabled: Enabled) -> SourceId {
        self.sources.insert(Source {
            kind,
            callback: Some(callback),
            enabled,
            priority: PRIORITY_NORMAL,
            pending: false,
            pending_seq: 0,
            description: String::new(),
        })
    }

    /// Insert an fd-backed source enabled ON and add it to the epoll set.
    fn insert_registered(&mut self, kind: Kind, callback: Callback<D>) -> Result<SourceId> {
        let id = self.insert(kind, callback, Enabled::On);
        if let Err(e) = self.sync_registration(id) {
            self.remove(id);
            return Err(e);
        }
        Ok(id)
    }

    /// Brings the epoll registration of an io/signal source in line with its state.
    fn sync_registration(&mut self, id: SourceId) -> Result<()> {
        let Some(src) = self.sources.get(id) else {
            return Ok(());
        };
        let want = src.enabled != Enabled::Off;
        let (fd, events, registered) = match &src.kind {
            Kind::Io {
                fd,
                events,
                registered,
                ..
            } => (*fd, *events, *registered),
            Kind::Signal { sfd, registered } => (sfd.raw_fd(), EPOLLIN, *registered),
            _ => return Ok(()),
        };
        let key = id.to_u64();
        match (want, registered) {
            (true, false) => self.poller.add(fd, events, key)?,
            (true, true) => self.poller.modify(fd, events, key)?,
            (false, true) => {
                // The owner may already have closed the fd (EBADF) or the kernel dropped
                // it from the set when the last reference went away (ENOENT): both mean
                // "not registered", which is what we want.
                match self.poller.delete(fd) {
                    Err(e) if e.errno() == libc::EBADF || e.errno() == libc::ENOENT => {}
                    r => r?,
                }
            }
            (false, false) => {}
        }
        if let Some(src) = self.sources.get_mut(id) {
            match &mut src.kind {
                Kind::Io { registered, .. } | Kind::Signal { registered, .. } => *registered = want,
                _ => {}
            }
        }
        Ok(())
    }

    /// Brings a timer's heap entry in line with its state: armed while enabled and not
    /// pending, with its current deadline.
    fn sync_timer(&mut self, id: SourceId) {
        let Some(src) = self.sources.get_mut(id) else {
            return;
        };
        let want = src.enabled != Enabled::Off && !src.pending;
        let Kind::Timer {
            clock,
            deadline,
            armed,
        } = &mut src.kind
        else {
            return;
        };
        match (want, *armed != 0) {
            (true, false) => *armed = self.timers.arm(*clock, *deadline, id),
            (false, true) => {
                *armed = 0;
                self.forget_timer_entry();
            }
            _ => {}
        }
    }

    /// A timer's armed entry was given up (its `armed` is already cleared).
    fn forget_timer_entry(&mut self) {
        let sources = &self.sources;
        self.timers.forget(|d| timer_live(sources, d));
    }

    /// Give a timer a new deadline, re-arming it if it is enabled.
    fn set_timer_deadline(&mut self, id: SourceId, usec: u64) {
        let Some(Source {
            kind: Kind::Timer {
                deadline, armed, ..
            },
            ..
        }) = self.sources.get_mut(id)
        else {
            return;
        };
        *deadline = usec;
        if std::mem::take(armed) != 0 {
            self.forget_timer_entry();
        }
        self.sync_timer(id);
    }

    /// Watch `fd` for `events` (EPOLLIN/EPOLLOUT…), level-triggered. The loop does not own
    /// the fd: the caller keeps it open while the source exists and removes the source
    /// before (or right after) closing it. Enabled ON.
    pub fn add_io(
        &mut self,
        fd: RawFd,
        events: u32,
        callback: impl FnMut(&mut EventLoop<D>, &mut D, SourceId, u32) -> Result<()> + 'static,
    ) -> Result<SourceId> {
        let kind = Kind::Io {
            fd,
            events,
            registered: false,
            revents: 0,
        };
        self.insert_registered(kind, Callback::Io(Box::new(callback)))
    }

    /// A timer firing at `usec` (absolute µs on `clock`; a past deadline fires on the next
    /// iteration). Enabled ON. Its callback gets the deadline it fired for and returns what
    /// happens next ([`TimerAction`]): removed, or armed again, so a repeating timer
    /// re-arms itself by its return value. Switching it OFF keeps its deadline; ON again
    /// re-arms it.
    pub fn add_timer(
        &mut self,
        clock: Clock,
        usec: u64,
        callback: impl FnMut(&mut EventLoop<D>, &mut D, SourceId, u64) -> Result<TimerAction> + 'static,
    ) -> Result<SourceId> {
        let kind = Kind::Timer {
            clock,
            deadline: usec,
            armed: 0,
        };
        let id = self.insert(kind, Callback::Timer(Box::new(callback)), Enabled::On);
        self.sync_timer(id);
        Ok(id)
    }

    /// [`add_timer`](Self::add_timer) firing `after` from now ([`now`](Self::now) on
    /// `clock`).
    pub fn add_timer_in(
        &mut self,
        clock: Clock,
        after: Duration,
        callback: impl FnMut(&mut EventLoop<D>, &mut D, SourceId, u64) -> Result<TimerAction> + 'static,
    ) -> Result<SourceId> {
        let usec = self.now(clock).saturating_add(duration_usec(after));
        self.add_timer(clock, usec, callback)
    }

    /// A source for `signo` through a signalfd. The signal is blocked in the calling thread;
    /// block it in all threads before spawning any (see [`block_signals`]). Enabled ON.
    ///
    /// [`block_signals`]: super::block_signals
    pub fn add_signal(
        &mut self,
        signo: i32,
        callback: impl FnMut(&mut EventLoop<D>, &mut D, SourceId, &libc::signalfd_siginfo) -> Result<()>
            + 'static,
    ) -> Result<SourceId> {
        let kind = Kind::Signal {
            sfd: SignalFdSource::new(signo)?,
            registered: false,
        };
        self.insert_registered(kind, Callback::Signal(Box::new(callback)))
    }

    /// A source that is pending whenever it is enabled: runs on the next iteration.
    /// Enabled ONESHOT, like sd-event.
    pub fn add_defer(
        &mut self,
        callback: impl FnMut(&mut EventLoop<D>, &mut D, SourceId) -> Result<()> + 'static,
    ) -> Result<SourceId> {
        Ok(self.insert(
            Kind::Defer,
            Callback::Plain(Box::new(callback)),
            Enabled::Oneshot,
        ))
    }

    /// A source that runs once the loop is asked to exit. Enabled ONESHOT.
    pub fn add_exit(
        &mut self,
        callback: impl FnMut(&mut EventLoop<D>, &mut D, SourceId) -> Result<()> + 'static,
    ) -> Result<SourceId> {
        Ok(self.insert(
            Kind::Exit,
            Callback::Plain(Box::new(callback)),
            Enabled::Oneshot,
        ))
    }

    /// Remove a source. Returns false if the id is stale. Safe from inside any callback,
    /// including the source's own.
    pub fn remove(&mut self, id: SourceId) -> bool {
        let Some(src) = self.sources.get_mut(id) else {
            return false;
        };
        src.enabled = Enabled::Off;
        src.pending = false;
        let _ = self.sync_registration(id);
        self.sync_timer(id);
        self.sources.remove(id);
        true
    }

    /// Whether `id` names a live source.
    pub fn exists(&self, id: SourceId) -> bool {
        self.sources.get(id).is_some()
    }

    /// The live source `id` names; ESTALE for a stale id.
    fn live_source(&mut self, id: SourceId) -> Result<&mut Source<D>> {
        self.sources
            .get_mut(id)
            .ok_or_else(|| Error::new(libc::ESTALE))
    }

    /// Switch a source ON, OFF or ONESHOT. Disabling clears a pending dispatch.
    pub fn set_enabled(&mut self, id: SourceId, enabled: Enabled) -> Result<()> {
        let src = self.live_source(id)?;
        src.enabled = enabled;
        if enabled == Enabled::Off {
            src.pending = false;
        }
        self.sync_timer(id);
        self.sync_registration(id)
    }

    /// The source's enable state, or `None` for a stale id.
    pub fn enabled(&self, id: SourceId) -> Option<Enabled> {
        self.sources.get(id).map(|s| s.enabled)
    }

    /// Change the priority (lower values run first).
    pub fn set_priority(&mut self, id: SourceId, priority: i64) -> Result<()> {
        self.live_source(id)?.priority = priority;
        Ok(())
    }

    /// A name for debug logs ("curl-io", "curl-timer", …).
    pub fn set_description(&mut self, id: SourceId, description: &str) {
        if let Some(src) = self.sources.get_mut(id) {
            src.description = description.to_string();
        }
    }

    /// Change the events an io source waits for.
    pub fn set_io_events(&mut self, id: SourceId, new_events: u32) -> Result<()> {
        match &mut self.live_source(id)?.kind {
            Kind::Io { events, .. } => *events = new_events,
            _ => return Err(Error::new(libc::EDOM)),
        }
        self.sync_registration(id)
    }

    /// The current iteration's timestamp on `clock` (µs), like `sd_event_now()`; outside
    /// an iteration, the current time.
    pub fn now(&self, clock: Clock) -> u64 {
        let cached = match clock {
            Clock::Monotonic => self.now_monotonic,
            Clock::Boottime => self.now_boottime,
        };
        cached.unwrap_or_else(|| sys::now(clock))
    }

    /// Ask the loop to exit with `code`: exit sources run next, then [`run`](Self::run)
    /// returns `code`. A later call replaces the code, as `sd_event_exit()` does.
    pub fn exit(&mut self, code: i32) {
        if self.state == State::Finished {
            return;
        }
        self.exit_code = code;
        self.state = State::Exiting;
    }

    /// Whether [`exit`](Self::exit) was called: callers stop starting new work.
    pub fn exit_requested(&self) -> bool {
        self.state != State::Running
    }

    /// Whether the loop has finished (all exit sources ran).
    pub fn is_finished(&self) -> bool {
        self.state == State::Finished
    }

    /// Run until [`exit`](Self::exit) has been called and the exit sources ran; returns the
    /// exit code.
    pub fn run(&mut self, data: &mut D) -> Result<i32> {
        while self.state != State::Finished {
            self.run_once(data, None)?;
        }
        Ok(self.exit_code)
    }

    /// One iteration: wait up to `timeout` (`None`: as long as needed), then dispatch at most
    /// one source. Returns whether a source was dispatched.
    pub fn run_once(&mut self, data: &mut D, timeout: Option<Duration>) -> Result<bool> {
        match self.state {
            State::Finished => return Ok(false),
            State::Exiting => return Ok(self.dispatch_exit(data)),
            State::Running => {}
        }

        let wait_ms = self.wait_timeout_ms(timeout);
        let mut ready = [(0u64, 0u32); MAX_EVENTS];
        let n = self.poller.wait(&mut ready, wait_ms)?;

        self.now_monotonic = Some(sys::now(Clock::Monotonic));
        self.now_boottime = Some(sys::now(Clock::Boottime));
        for &(key, revents) in &ready[..n] {
            self.mark_ready(SourceId::from_u64(key), revents);
        }
        self.mark_expired_timers();
        let dispatched = match self.next_pending() {
            Some(id) => {
                self.dispatch(data, id);
                true
            }
            None => false,
        };
        self.now_monotonic = None;
        self.now_boottime = None;
        Ok(dispatched)
    }

    /// The epoll_wait timeout in ms: 0 when something is already pending, the time to the
    /// earliest timer rounded up, or the caller's limit (`None` = forever).
    fn wait_timeout_ms(&mut self, timeout: Option<Duration>) -> Option<u64> {
        let busy = self.sources.iter().any(|(_, src)| {
            src.enabled != Enabled::Off && (src.pending || matches!(src.kind, Kind::Defer))
        });
        if busy {
            return Some(0);
        }
        let mut usec = timeout.map(duration_usec);
        for clock in [Clock::Monotonic, Clock::Boottime] {
            let sources = &self.sources;
            if let Some(deadline) = self.timers.next_deadline(clock, |d| timer_live(sources, d)) {
                let remaining = deadline.saturating_sub(sys::now(clock));
                usec = Some(usec.map_or(remaining, |u| u.min(remaining)));
            }
        }
        // Round up: a deadline 1 µs away waits 1 ms instead of busy-looping at 0 ms.
        usec.map(|u| u.div_ceil(1000))
    }

    fn mark_pending(&mut self, id: SourceId) {
        self.pending_counter += 1;
        let seq = self.pending_counter;
        if let Some(src) = self.sources.get_mut(id) {
            if !src.pending {
                src.pending = true;
                src.pending_seq = seq;
            }
        }
    }

    fn mark_ready(&mut self, id: SourceId, revents: u32) {
        // A stale id (source removed, slot maybe reused) fails the generation check here.
        let Some(src) = self.sources.get_mut(id) else {
            return;
        };
        if src.enabled == Enabled::Off {
            return;
        }
        match &mut src.kind {
            Kind::Io { revents: r, .. } => *r = revents,
            Kind::Signal { sfd, .. } => {
                if !sfd.fill() {
                    return;
                }
            }
            _ => return,
        }
        self.mark_pending(id);
    }

    /// Every armed timer whose deadline passed becomes pending, earliest first.
    fn mark_expired_timers(&mut self) {
        for clock in [Clock::Monotonic, Clock::Boottime] {
            let now = self.now(clock);
            loop {
                let sources = &self.sources;
                let Some(d) = self
                    .timers
                    .pop_expired(clock, now, |d| timer_live(sources, d))
                else {
                    break;
                };
                if let Some(Source {
                    kind: Kind::Timer { armed, .. },
                    ..
                }) = self.sources.get_mut(d.id)
                {
                    *armed = 0;
                }
                self.mark_pending(d.id);
            }
        }
    }

    /// The enabled pending (or, for defer sources, enabled) source to run next.
    fn next_pending(&mut self) -> Option<SourceId> {
        let defers: Vec<SourceId> = self
            .sources
            .iter()
            .filter(|(_, src)| {
                matches!(src.kind, Kind::Defer) && src.enabled != Enabled::Off && !src.pending
            })
            .map(|(id, _)| id)
            .collect();
        for id in defers {
            self.mark_pending(id);
        }
        let mut best: Option<(i64, u64, SourceId)> = None;
        for (id, src) in self.sources.iter() {
            if !src.pending || src.enabled == Enabled::Off {
                continue;
            }
            let key = (src.priority, src.pending_seq);
            if best.is_none_or(|(p, s, _)| key < (p, s)) {
                best = Some((key.0, key.1, id));
            }
        }
        best.map(|(_, _, id)| id)
    }

    /// Run the next exit source (lowest priority value, first slot on ties); when none is
    /// left, the loop is finished.
    fn dispatch_exit(&mut self, data: &mut D) -> bool {
        let mut best: Option<(i64, SourceId)> = None;
        for (id, src) in self.sources.iter() {
            if !matches!(src.kind, Kind::Exit) || src.enabled == Enabled::Off {
                continue;
            }
            if best.is_none_or(|(p, _)| src.priority < p) {
                best = Some((src.priority, id));
            }
        }
        match best {
            Some((_, id)) => {
                self.dispatch(data, id);
                true
            }
            None => {
                self.state = State::Finished;
                false
            }
        }
    }

    fn dispatch(&mut self, data: &mut D, id: SourceId) {
        let Some(src) = self.sources.get_mut(id) else {
            return;
        };
        src.pending = false;
        if src.enabled == Enabled::Oneshot {
            src.enabled = Enabled::Off;
        }
        let Some(mut callback) = src.callback.take() else {
            return;
        };
        let (revents, deadline, siginfo) = match &mut src.kind {
            Kind::Io { revents, .. } => (std::mem::take(revents), 0, None),
            Kind::Timer { deadline, .. } => (0, *deadline, None),
            Kind::Signal { sfd, .. } => (0, 0, sfd.take()),
            Kind::Defer | Kind::Exit => (0, 0, None),
        };
        if src.enabled == Enabled::Off {
            let _ = self.sync_registration(id);
        }

        let result = match &mut callback {
            Callback::Io(f) => f(self, data, id, revents).map(|()| None),
            Callback::Timer(f) => f(self, data, id, deadline).map(Some),
            Callback::Signal(f) => match siginfo {
                Some(si) => f(self, data, id, &si).map(|()| None),
                None => Ok(None),
            },
            Callback::Plain(f) => f(self, data, id).map(|()| None),
        };

        // Put the callback back only if the slot still holds the same source: if the
        // callback removed its own source (or the slot was reused), drop it here.
        let Some(src) = self.sources.get_mut(id) else {
            return;
        };
        src.callback = Some(callback);
        match result {
            Err(e) => {
                log::debug!(
                    "Event source {} returned error, disabling: {}",
                    if src.description.is_empty() {
                        "(unnamed)"
                    } else {
                        &src.description
                    },
                    e
                );
                let _ = self.set_enabled(id, Enabled::Off);
            }
            Ok(None) => {}
            Ok(Some(TimerAction::Drop)) => {
                self.remove(id);
            }
            Ok(Some(TimerAction::ToInstant(usec))) => self.set_timer_deadline(id, usec),
            Ok(Some(TimerAction::ToDuration(after))) => {
                let Kind::Timer { clock, .. } = src.kind else {
                    return;
                };
                let usec = self.now(clock).saturating_add(duration_usec(after));
                self.set_timer_deadline(id, usec);
            }
        }
    }
}
