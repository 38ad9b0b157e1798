//! An sd-event-style event loop: level-triggered epoll, io, timer, signal, defer and exit
//! sources, priorities, ON/OFF/ONESHOT, and generation-checked source ids.
//!
//! The files, each owning one thing:
//! * `event_loop.rs`: [`EventLoop`], its sources' registration and the dispatch;
//! * `source.rs`: [`SourceId`], [`Enabled`], priorities and the generation-checked slot table;
//! * `timer.rs`: [`TimerAction`] and the deadline heap;
//! * `signal.rs`: [`block_signals`] and the signalfd of a signal source;
//! * `task.rs`: [`TaskHandle`], blocking work on a thread reporting back through an eventfd;
//! * `sys.rs`: the OS calls, through `nix` (epoll, clocks, signal masks, signalfd, eventfd).
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
//! * ONESHOT sources are switched OFF just before their callback runs. Defer and exit
//!   sources start ONESHOT; io, signal and timer sources start ON (a timer's callback
//!   returns whether it fires again).
//! * A callback returning `Err` does not stop the loop: its source is disabled (logged at
//!   debug level).
//! * A callback may add, remove or change any source, itself included. The callback is taken
//!   out of its slot while it runs and put back only if the slot still holds the same
//!   source (same generation); a removed source's callback is dropped after it returns.
//! * [`EventLoop::exit`] only records the request; the next iterations run the exit sources
//!   (one per iteration, by priority) and then [`EventLoop::run`] returns the exit code.
//!
//! Timers take absolute deadlines in µs on CLOCK_MONOTONIC or CLOCK_BOOTTIME, kept in a heap
//! per clock (calloop's timer). A timer callback returns what happens next
//! ([`TimerAction`]: removed, or re-armed for an instant or a duration), so a repeating
//! timer needs no re-arming by hand. The epoll timeout is the time to the earliest deadline
//! rounded **up** to whole milliseconds, so a deadline 0.3 ms away waits 1 ms rather than
//! spinning with 0 ms.
//! Signal sources use signalfd; the signal must be blocked in every thread
//! ([`block_signals`] does it for the calling thread, so call it before spawning threads).

mod event_loop;
mod signal;
mod source;
mod sys;
mod task;
mod timer;

pub use event_loop::EventLoop;
pub use signal::block_signals;
pub use source::{Enabled, SourceId, PRIORITY_IDLE, PRIORITY_IMPORTANT, PRIORITY_NORMAL};
pub use sys::{now, Clock, EPOLLIN, EPOLLOUT};
pub use task::TaskHandle;
pub use timer::TimerAction;
