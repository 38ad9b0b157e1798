//! An sd-event-style event loop: level-triggered epoll, io, time, signal, defer and exit
//! sources, priorities, ON/OFF/ONESHOT, and generation-checked source ids.
//!
//! Ownership follows calloop's central idea rather than sd-event's refcounts: the loop is
//! generic over the user's data `D`, and every callback receives `(&mut EventLoop<D>,
//! &mut D, SourceId, …)`. Callbacks capture only `Copy` ids and owned values; everything
//! they mutate lives in `D`. No `Rc<RefCell>`, no back-pointers.
//!
//! Semantics, as sd-event (2015):
//! * One iteration ([`EventLoop::run_once`]) waits (epoll), marks ready sources *pending*, then
//!   dispatches **exactly one** pending source: the one with the lowest priority value, the
//!   one that became pending first on ties. Other pending sources stay pending for the next
//!   iterations, which then wait with a zero timeout.
//! * ONESHOT sources are switched OFF just before their callback runs.
//! * A callback returning `Err` does not stop the loop: its source is disabled (logged at
//!   debug level).
//! * A callback may add, remove or change any source, itself included. The callback is taken
//!   out of its slot while it runs and put back only if the slot still holds the same
//!   source (same generation); a removed source's callback is dropped after it returns.
//! * [`EventLoop::exit`] only records the request; the next iterations run the exit sources
//!   (one per iteration, by priority) and then [`EventLoop::run`] returns the exit code.
//!
//! Time sources take absolute deadlines in µs on CLOCK_MONOTONIC or CLOCK_BOOTTIME. The
//! epoll timeout is the time to the earliest deadline rounded **up** to whole
//! milliseconds, so a deadline 0.3 ms away waits 1 ms rather than spinning with 0 ms.
//! Signal sources use signalfd; the signal must be blocked in every thread
//! ([`block_signals`] does it for the calling thread, so call it before spawning threads).

mod task;

pub use task::TaskHandle;

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::time::Duration;

use crate::util::error::{Error, Result};

/// Priorities as sd-event names them: lower runs first.
pub const PRIORITY_IMPORTANT: i64 = -100;
pub const PRIORITY_NORMAL: i64 = 0;
pub const PRIORITY_IDLE: i64 = 100;

/// epoll event bits, for io sources.
pub const EPOLLIN: u32 = libc::EPOLLIN as u32;
pub const EPOLLOUT: u32 = libc::EPOLLOUT as u32;
pub const EPOLLERR: u32 = libc::EPOLLERR as u32;
pub const EPOLLHUP: u32 = libc::EPOLLHUP as u32;

/// Identifies a source. A removed source's id never matches a later source, even one that
/// reuses the same slot: the slot's generation is bumped on removal.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub struct SourceId {
    idx: u32,
    generation: u32,
}

impl SourceId {
    /// Packs the id into an epoll event's `u64`.
    fn to_u64(self) -> u64 {
        (u64::from(self.generation) << 32) | u64::from(self.idx)
    }

    fn from_u64(v: u64) -> Self {
        SourceId {
            idx: v as u32,
            generation: (v >> 32) as u32,
        }
    }
}

/// sd-event's SD_EVENT_OFF / SD_EVENT_ON / SD_EVENT_ONESHOT.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Enabled {
    Off,
    On,
    Oneshot,
}

/// The clock a time source's deadline is measured on.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Clock {
    Monotonic,
    Boottime,
}

impl Clock {
    fn id(self) -> libc::clockid_t {
        match self {
            Clock::Monotonic => libc::CLOCK_MONOTONIC,
            Clock::Boottime => libc::CLOCK_BOOTTIME,
        }
    }
}

/// Current time of `clock` in µs.
pub fn now(clock: Clock) -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec; both clock ids exist on every Linux
    // this tool supports (BOOTTIME since 2.6.39).
    let r = unsafe { libc::clock_gettime(clock.id(), &mut ts) };
    assert_eq!(r, 0, "clock_gettime({clock:?}) failed");
    ts.tv_sec as u64 * 1_000_000 + ts.tv_nsec as u64 / 1000
}

type IoFn<D> = dyn FnMut(&mut EventLoop<D>, &mut D, SourceId, u32) -> Result<()>;
type TimeFn<D> = dyn FnMut(&mut EventLoop<D>, &mut D, SourceId, u64) -> Result<()>;
type SignalFn<D> =
    dyn FnMut(&mut EventLoop<D>, &mut D, SourceId, &libc::signalfd_siginfo) -> Result<()>;
type PlainFn<D> = dyn FnMut(&mut EventLoop<D>, &mut D, SourceId) -> Result<()>;

enum Callback<D> {
    Io(Box<IoFn<D>>),
    Time(Box<TimeFn<D>>),
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
    Time {
        clock: Clock,
        usec: u64,
    },
    Signal {
        sfd: OwnedFd,
        registered: bool,
        info: Option<Box<libc::signalfd_siginfo>>,
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

struct Slot<D> {
    generation: u32,
    source: Option<Source<D>>,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum State {
    Running,
    Exiting,
    Finished,
}

/// The event loop. See the module documentation for the semantics.
pub struct EventLoop<D> {
    epoll: OwnedFd,
    slots: Vec<Slot<D>>,
    free: Vec<u32>,
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
        // SAFETY: plain syscall; the returned fd is checked and then owned.
        let fd = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
        if fd < 0 {
            return Err(Error::last_os_error());
        }
        Ok(EventLoop {
            // SAFETY: `fd` is a fresh, valid descriptor nobody else owns.
            epoll: unsafe { OwnedFd::from_raw_fd(fd) },
            slots: Vec::new(),
            free: Vec::new(),
            state: State::Running,
            exit_code: 0,
            pending_counter: 0,
            now_monotonic: None,
            now_boottime: None,
        })
    }

    fn insert(&mut self, kind: Kind, callback: Callback<D>, enabled: Enabled) -> SourceId {
        let source = Source {
            kind,
            callback: Some(callback),
            enabled,
            priority: PRIORITY_NORMAL,
            pending: false,
            pending_seq: 0,
            description: String::new(),
        };
        let idx = match self.free.pop() {
            Some(idx) => idx,
            None => {
                self.slots.push(Slot {
                    generation: 0,
                    source: None,
                });
                (self.slots.len() - 1) as u32
            }
        };
        let slot = &mut self.slots[idx as usize];
        debug_assert!(slot.source.is_none());
        slot.source = Some(source);
        SourceId {
            idx,
            generation: slot.generation,
        }
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

    fn source(&self, id: SourceId) -> Option<&Source<D>> {
        let slot = self.slots.get(id.idx as usize)?;
        if slot.generation != id.generation {
            return None;
        }
        slot.source.as_ref()
    }

    fn source_mut(&mut self, id: SourceId) -> Option<&mut Source<D>> {
        let slot = self.slots.get_mut(id.idx as usize)?;
        if slot.generation != id.generation {
            return None;
        }
        slot.source.as_mut()
    }

    fn epoll_ctl(&self, op: libc::c_int, fd: RawFd, events: u32, id: SourceId) -> Result<()> {
        let mut ev = libc::epoll_event {
            events,
            u64: id.to_u64(),
        };
        // SAFETY: `ev` is a valid epoll_event; the epoll fd is ours. A bad `fd` is
        // reported by the kernel as EBADF, not undefined behaviour.
        let r = unsafe { libc::epoll_ctl(self.epoll.as_raw_fd(), op, fd, &mut ev) };
        if r < 0 {
            return Err(Error::last_os_error());
        }
        Ok(())
    }

    /// Brings the epoll registration of an io/signal source in line with its state.
    fn sync_registration(&mut self, id: SourceId) -> Result<()> {
        let Some(src) = self.source(id) else {
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
            Kind::Signal {
                sfd, registered, ..
            } => (sfd.as_raw_fd(), EPOLLIN, *registered),
            _ => return Ok(()),
        };
        let result = match (want, registered) {
            (true, false) => self.epoll_ctl(libc::EPOLL_CTL_ADD, fd, events, id),
            (true, true) => self.epoll_ctl(libc::EPOLL_CTL_MOD, fd, events, id),
            (false, true) => {
                // The owner may already have closed the fd (EBADF) or the kernel dropped
                // it from the set when the last reference went away (ENOENT): both mean
                // "not registered", which is what we want.
                match self.epoll_ctl(libc::EPOLL_CTL_DEL, fd, 0, id) {
                    Err(e) if e.errno() == libc::EBADF || e.errno() == libc::ENOENT => Ok(()),
                    r => r,
                }
            }
            (false, false) => Ok(()),
        };
        result?;
        if let Some(src) = self.source_mut(id) {
            match &mut src.kind {
                Kind::Io { registered, .. } | Kind::Signal { registered, .. } => *registered = want,
                _ => {}
            }
        }
        Ok(())
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

    /// A timer firing at `usec` (absolute, µs on `clock`). Enabled ONESHOT, like sd-event;
    /// to fire again, move the deadline with [`set_time`](Self::set_time) and re-enable.
    pub fn add_time(
        &mut self,
        clock: Clock,
        usec: u64,
        callback: impl FnMut(&mut EventLoop<D>, &mut D, SourceId, u64) -> Result<()> + 'static,
    ) -> Result<SourceId> {
        let kind = Kind::Time { clock, usec };
        Ok(self.insert(kind, Callback::Time(Box::new(callback)), Enabled::Oneshot))
    }

    /// A source for `signo` through a signalfd. The signal is blocked in the calling thread;
    /// block it in all threads before spawning any (see [`block_signals`]). Enabled ON.
    pub fn add_signal(
        &mut self,
        signo: i32,
        callback: impl FnMut(&mut EventLoop<D>, &mut D, SourceId, &libc::signalfd_siginfo) -> Result<()>
            + 'static,
    ) -> Result<SourceId> {
        block_signals(&[signo])?;
        let set = sigset(&[signo])?;
        // SAFETY: `set` is an initialised sigset_t; -1 asks for a new signalfd.
        let fd = unsafe { libc::signalfd(-1, &set, libc::SFD_NONBLOCK | libc::SFD_CLOEXEC) };
        if fd < 0 {
            return Err(Error::last_os_error());
        }
        let kind = Kind::Signal {
            // SAFETY: fresh fd returned by signalfd, owned from here on.
            sfd: unsafe { OwnedFd::from_raw_fd(fd) },
            registered: false,
            info: None,
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
        if self.source(id).is_none() {
            return false;
        }
        if let Some(src) = self.source_mut(id) {
            src.enabled = Enabled::Off;
        }
        let _ = self.sync_registration(id);
        let slot = &mut self.slots[id.idx as usize];
        slot.source = None;
        slot.generation = slot.generation.wrapping_add(1);
        self.free.push(id.idx);
        true
    }

    /// Whether `id` names a live source.
    pub fn exists(&self, id: SourceId) -> bool {
        self.source(id).is_some()
    }

    /// Switch a source ON, OFF or ONESHOT. Disabling clears a pending dispatch.
    pub fn set_enabled(&mut self, id: SourceId, enabled: Enabled) -> Result<()> {
        let src = self
            .source_mut(id)
            .ok_or_else(|| Error::new(libc::ESTALE))?;
        src.enabled = enabled;
        if enabled == Enabled::Off {
            src.pending = false;
        }
        self.sync_registration(id)
    }

    /// The source's enable state, or `None` for a stale id.
    pub fn enabled(&self, id: SourceId) -> Option<Enabled> {
        self.source(id).map(|s| s.enabled)
    }

    /// Change the priority (lower values run first).
    pub fn set_priority(&mut self, id: SourceId, priority: i64) -> Result<()> {
        let src = self
            .source_mut(id)
            .ok_or_else(|| Error::new(libc::ESTALE))?;
        src.priority = priority;
        Ok(())
    }

    /// A name for debug logs ("curl-io", "curl-timer", …).
    pub fn set_description(&mut self, id: SourceId, description: &str) {
        if let Some(src) = self.source_mut(id) {
            src.description = description.to_string();
        }
    }

    /// Change the events an io source waits for.
    pub fn set_io_events(&mut self, id: SourceId, new_events: u32) -> Result<()> {
        let src = self
            .source_mut(id)
            .ok_or_else(|| Error::new(libc::ESTALE))?;
        match &mut src.kind {
            Kind::Io { events, .. } => *events = new_events,
            _ => return Err(Error::new(libc::EDOM)),
        }
        self.sync_registration(id)
    }

    /// Move a time source's deadline (absolute µs on its clock).
    pub fn set_time(&mut self, id: SourceId, new_usec: u64) -> Result<()> {
        let src = self
            .source_mut(id)
            .ok_or_else(|| Error::new(libc::ESTALE))?;
        match &mut src.kind {
            Kind::Time { usec, .. } => *usec = new_usec,
            _ => return Err(Error::new(libc::EDOM)),
        }
        src.pending = false;
        Ok(())
    }

    /// The current iteration's timestamp on `clock` (µs), like `sd_event_now()`; outside
    /// an iteration, the current time.
    pub fn now(&self, clock: Clock) -> u64 {
        let cached = match clock {
            Clock::Monotonic => self.now_monotonic,
            Clock::Boottime => self.now_boottime,
        };
        cached.unwrap_or_else(|| now(clock))
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

    /// The code passed to [`exit`](Self::exit).
    pub fn exit_code(&self) -> i32 {
        self.exit_code
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
        let mut events: [libc::epoll_event; 64] = [libc::epoll_event { events: 0, u64: 0 }; 64];
        // SAFETY: the buffer is valid for 64 events; the epoll fd is ours.
        let n = unsafe {
            libc::epoll_wait(
                self.epoll.as_raw_fd(),
                events.as_mut_ptr(),
                events.len() as libc::c_int,
                wait_ms,
            )
        };
        let n = if n < 0 {
            let e = Error::last_os_error();
            if e.errno() != libc::EINTR {
                return Err(e);
            }
            0
        } else {
            n as usize
        };

        self.now_monotonic = Some(now(Clock::Monotonic));
        self.now_boottime = Some(now(Clock::Boottime));
        for ev in &events[..n] {
            self.mark_ready(SourceId::from_u64(ev.u64), ev.events);
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
    /// earliest timer rounded up, or the caller's limit (-1 = forever).
    fn wait_timeout_ms(&self, timeout: Option<Duration>) -> libc::c_int {
        let mut usec: Option<u64> = timeout.map(|t| t.as_micros().min(u64::MAX as u128) as u64);
        let (mut mono, mut boot) = (None, None);
        for src in self.slots.iter().filter_map(|s| s.source.as_ref()) {
            if src.enabled == Enabled::Off {
                continue;
            }
            let remaining = match src.kind {
                _ if src.pending => 0,
                Kind::Defer => 0,
                Kind::Time { clock, usec } => {
                    let now = match clock {
                        Clock::Monotonic => *mono.get_or_insert_with(|| now(clock)),
                        Clock::Boottime => *boot.get_or_insert_with(|| now(clock)),
                    };
                    usec.saturating_sub(now)
                }
                _ => continue,
            };
            usec = Some(usec.map_or(remaining, |u| u.min(remaining)));
        }
        match usec {
            None => -1,
            // Round up: a deadline 1 µs away waits 1 ms instead of busy-looping at 0 ms.
            Some(u) => u.div_ceil(1000).min(libc::c_int::MAX as u64) as libc::c_int,
        }
    }

    fn mark_pending(&mut self, id: SourceId) {
        self.pending_counter += 1;
        let seq = self.pending_counter;
        if let Some(src) = self.source_mut(id) {
            if !src.pending {
                src.pending = true;
                src.pending_seq = seq;
            }
        }
    }

    fn mark_ready(&mut self, id: SourceId, revents: u32) {
        // A stale id (source removed, slot maybe reused) fails the generation check here.
        let Some(src) = self.source_mut(id) else {
            return;
        };
        if src.enabled == Enabled::Off {
            return;
        }
        match &mut src.kind {
            Kind::Io { revents: r, .. } => {
                *r = revents;
                self.mark_pending(id);
            }
            Kind::Signal { sfd, info, .. } => {
                if info.is_none() {
                    // SAFETY: signalfd_siginfo is plain old data; all-zero is valid.
                    let mut si: libc::signalfd_siginfo = unsafe { std::mem::zeroed() };
                    let size = std::mem::size_of::<libc::signalfd_siginfo>();
                    // SAFETY: reading exactly one siginfo into a buffer of that size from
                    // our own non-blocking signalfd.
                    let r = unsafe {
                        libc::read(
                            sfd.as_raw_fd(),
                            &mut si as *mut _ as *mut libc::c_void,
                            size,
                        )
                    };
                    if r as usize != size {
                        return;
                    }
                    *info = Some(Box::new(si));
                }
                self.mark_pending(id);
            }
            _ => {}
        }
    }

    fn mark_expired_timers(&mut self) {
        let mut expired = Vec::new();
        for (idx, slot) in self.slots.iter().enumerate() {
            let Some(src) = &slot.source else { continue };
            if src.enabled == Enabled::Off || src.pending {
                continue;
            }
            if let Kind::Time { clock, usec } = src.kind {
                if usec <= self.now(clock) {
                    expired.push(SourceId {
                        idx: idx as u32,
                        generation: slot.generation,
                    });
                }
            }
        }
        for id in expired {
            self.mark_pending(id);
        }
    }

    /// The enabled pending (or, for defer sources, enabled) source to run next.
    fn next_pending(&mut self) -> Option<SourceId> {
        let mut defers = Vec::new();
        for (idx, slot) in self.slots.iter().enumerate() {
            if let Some(src) = &slot.source {
                if matches!(src.kind, Kind::Defer) && src.enabled != Enabled::Off && !src.pending {
                    defers.push(SourceId {
                        idx: idx as u32,
                        generation: slot.generation,
                    });
                }
            }
        }
        for id in defers {
            self.mark_pending(id);
        }
        let mut best: Option<(i64, u64, SourceId)> = None;
        for (idx, slot) in self.slots.iter().enumerate() {
            let Some(src) = &slot.source else { continue };
            if !src.pending || src.enabled == Enabled::Off {
                continue;
            }
            let key = (src.priority, src.pending_seq);
            if best.is_none_or(|(p, s, _)| key < (p, s)) {
                best = Some((
                    key.0,
                    key.1,
                    SourceId {
                        idx: idx as u32,
                        generation: slot.generation,
                    },
                ));
            }
        }
        best.map(|(_, _, id)| id)
    }

    fn dispatch_exit(&mut self, data: &mut D) -> bool {
        let mut best: Option<(i64, u32, SourceId)> = None;
        for (idx, slot) in self.slots.iter().enumerate() {
            let Some(src) = &slot.source else { continue };
            if !matches!(src.kind, Kind::Exit) || src.enabled == Enabled::Off {
                continue;
            }
            let key = (src.priority, idx as u32);
            if best.is_none_or(|(p, i, _)| key < (p, i)) {
                best = Some((
                    key.0,
                    key.1,
                    SourceId {
                        idx: idx as u32,
                        generation: slot.generation,
                    },
                ));
            }
        }
        match best {
            Some((_, _, id)) => {
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
        let Some(src) = self.source_mut(id) else {
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
            Kind::Time { usec, .. } => (0, *usec, None),
            Kind::Signal { info, .. } => (0, 0, info.take()),
            Kind::Defer | Kind::Exit => (0, 0, None),
        };
        let oneshot_off = src.enabled == Enabled::Off;
        if oneshot_off {
            let _ = self.sync_registration(id);
        }

        let result = match &mut callback {
            Callback::Io(f) => f(self, data, id, revents),
            Callback::Time(f) => f(self, data, id, deadline),
            Callback::Signal(f) => match siginfo {
                Some(si) => f(self, data, id, &si),
                None => Ok(()),
            },
            Callback::Plain(f) => f(self, data, id),
        };

        // Put the callback back only if the slot still holds the same source: if the
        // callback removed its own source (or the slot was reused), drop it here.
        if let Some(src) = self.source_mut(id) {
            src.callback = Some(callback);
            if let Err(e) = result {
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
        }
    }
}

fn sigset(signals: &[i32]) -> Result<libc::sigset_t> {
    // SAFETY: sigemptyset/sigaddset initialise and fill a sigset_t we own.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        for &s in signals {
            if libc::sigaddset(&mut set, s) < 0 {
                return Err(Error::last_os_error());
            }
        }
        Ok(set)
    }
}

/// Block `signals` in the calling thread (threads spawned later inherit the mask).
pub fn block_signals(signals: &[i32]) -> Result<()> {
    let set = sigset(signals)?;
    // SAFETY: valid sigset; a null old-set pointer is allowed.
    let r = unsafe { libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut()) };
    if r != 0 {
        return Err(Error::new(r));
    }
    Ok(())
}
