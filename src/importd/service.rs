//! Being a service: readiness, the watchdog, the idle exit, an orderly stop.
//!
//! * `READY=1` goes to the service manager once the bus name is ours (`Type=notify`);
//!   `WATCHDOG=1` every half `WATCHDOG_USEC`, from a timer, so a wedged loop stops the
//!   pings.
//! * Idle exit: when no transfer runs, no call of ours awaits a reply (polkit checks
//!   included), and neither a message arrived nor a transfer ended for 30 s, the daemon
//!   says `STOPPING=1`, releases its bus name (so bus activation starts a fresh one for
//!   the next caller) and exits once the bus confirmed.
//! * SIGTERM/SIGINT, or a lost bus: every worker is cancelled (SIGTERM, so it removes its
//!   temporary files), the daemon waits for them, reports each `TransferRemoved` and
//!   exits. Workers still running after [`STOP_DEADLINE`] are killed. (systemd's own
//!   daemon kills its workers with SIGKILL at once.) Pull calls during the stop fail with
//!   `System.Error.ESHUTDOWN`.
//!
//! This file is the only user of the loop's timers in the daemon ([`arm`]).

use std::ffi::OsString;
use std::time::Duration;

use super::manager::{Manager, BUS_NAME};
use super::Settings;
use crate::bus::{NAME_ALREADY_OWNER, NAME_IN_QUEUE, NAME_PRIMARY_OWNER};
use crate::event::{Clock, Enabled, EventLoop, SourceId};
use crate::util::error::Result;
use crate::util::notify::notify_to;

/// How long a stop waits for cancelled workers before killing them.
pub const STOP_DEADLINE: Duration = Duration::from_secs(10);

/// What the service part of the manager remembers.
pub struct Service {
    exit_after: Duration,
    watchdog: Option<Duration>,
    notify_socket: Option<OsString>,
    /// The timers, by [`Timer`].
    timers: [Option<SourceId>; 3],
    /// Set by SIGTERM/SIGINT or a lost bus: no new transfers, exit when none is left.
    pub stopping: bool,
    /// The bus name is being released for the idle exit.
    releasing: bool,
    /// The status `main` returns.
    exit_code: i32,
    /// When the last transfer ended (µs, CLOCK_MONOTONIC).
    last_transfer_end: u64,
}

impl Service {
    pub fn new(settings: &Settings) -> Service {
        Service {
            exit_after: settings.exit_after,
            watchdog: settings.watchdog,
            notify_socket: settings.notify_socket.clone(),
            timers: [None; 3],
            stopping: false,
            releasing: false,
            exit_code: 0,
            last_transfer_end: 0,
        }
    }

    /// Tell the service manager `state`, if there is one.
    fn notify(&self, state: &str) {
        if let Some(socket) = &self.notify_socket {
            if let Err(e) = notify_to(socket, state) {
                log::debug!("Failed to send '{state}' to the service manager: {e}");
            }
        }
    }
}

/// The daemon's timers.
#[derive(Clone, Copy)]
enum Timer {
    Idle = 0,
    Watchdog = 1,
    Stop = 2,
}

/// Make `timer` fire once at `usec` (CLOCK_MONOTONIC) and call `f`, re-arming it if it
/// exists. The daemon's only use of the loop's timer API.
fn arm(
    lp: &mut EventLoop<Manager>,
    m: &mut Manager,
    timer: Timer,
    usec: u64,
    f: fn(&mut EventLoop<Manager>, &mut Manager),
) -> Result<()> {
    if let Some(id) = m.service.timers[timer as usize] {
        if lp.exists(id) {
            lp.set_time(id, usec)?;
            return lp.set_enabled(id, Enabled::Oneshot);
        }
    }
    let id = lp.add_time(Clock::Monotonic, usec, move |lp, m, _, _| {
        f(lp, m);
        Ok(())
    })?;
    m.service.timers[timer as usize] = Some(id);
    Ok(())
}

fn usec(d: Duration) -> u64 {
    d.as_micros().min(u128::from(u64::MAX)) as u64
}

/// Signals, timers, the bus name and readiness.
pub fn start(lp: &mut EventLoop<Manager>, m: &mut Manager) -> Result<()> {
    for signo in [libc::SIGTERM, libc::SIGINT] {
        lp.add_signal(signo, |lp, m, _, _| {
            stop(lp, m, 0);
            Ok(())
        })?;
    }
    m.bus.set_disconnect_handler(|lp, m| {
        log::error!("Lost the connection to the bus, exiting.");
        stop(lp, m, 1);
    });
    m.bus.request_name(lp, BUS_NAME, |lp, m, r| match r {
        Ok(NAME_PRIMARY_OWNER | NAME_ALREADY_OWNER) => {
            log::debug!("Acquired bus name {BUS_NAME}.");
            m.service.notify("READY=1");
        }
        Ok(NAME_IN_QUEUE) => log::debug!("Bus name {BUS_NAME} is queued."),
        Ok(_) => {
            log::error!("Bus name {BUS_NAME} already exists, exiting.");
            stop(lp, m, 1);
        }
        Err(e) => {
            log::error!(
                "Unable to request name, failing connection: {}",
                e.message()
            );
            stop(lp, m, 1);
        }
    });
    let now = lp.now(Clock::Monotonic);
    m.service.last_transfer_end = now;
    let first = now + usec(m.service.exit_after);
    arm(lp, m, Timer::Idle, first, on_idle_timer)?;
    if let Some(period) = m.service.watchdog {
        arm(lp, m, Timer::Watchdog, now + usec(period / 2), on_watchdog)?;
    }
    Ok(())
}

fn on_watchdog(lp: &mut EventLoop<Manager>, m: &mut Manager) {
    m.service.notify("WATCHDOG=1");
    if let Some(period) = m.service.watchdog {
        let next = lp.now(Clock::Monotonic) + usec(period / 2);
        if let Err(e) = arm(lp, m, Timer::Watchdog, next, on_watchdog) {
            log::warn!("Failed to re-arm the watchdog timer: {e}");
        }
    }
}

/// Exit if idle for long enough, else look again when it could be.
fn on_idle_timer(lp: &mut EventLoop<Manager>, m: &mut Manager) {
    if m.service.stopping || m.service.releasing {
        return;
    }
    let now = lp.now(Clock::Monotonic);
    let window = usec(m.service.exit_after);
    let quiet_since = m.bus.last_activity().max(m.service.last_transfer_end);
    let next = if !m.is_idle() {
        now + window
    } else if now >= quiet_since.saturating_add(window) {
        log::debug!(
            "Exiting after {} s without work.",
            m.service.exit_after.as_secs()
        );
        m.service.releasing = true;
        m.service.notify("STOPPING=1");
        m.bus.release_name(lp, BUS_NAME, |lp, m, r| {
            if let Err(e) = r {
                log::warn!("Failed to release bus name: {}", e.message());
            }
            exit(lp, m);
        });
        return;
    } else {
        quiet_since + window
    };
    if let Err(e) = arm(lp, m, Timer::Idle, next, on_idle_timer) {
        log::warn!("Failed to re-arm the idle timer: {e}");
    }
}

/// Stop: cancel every transfer and exit when none is left (with `code` unless an
/// earlier stop set one).
pub fn stop(lp: &mut EventLoop<Manager>, m: &mut Manager, code: i32) {
    if !m.service.stopping {
        m.service.stopping = true;
        m.service.exit_code = code;
        m.service.notify("STOPPING=1");
        let deadline = lp.now(Clock::Monotonic) + usec(STOP_DEADLINE);
        if let Err(e) = arm(lp, m, Timer::Stop, deadline, on_stop_deadline) {
            log::warn!("Failed to arm the stop deadline: {e}");
        }
    }
    let ids: Vec<u32> = m.transfers.keys().copied().collect();
    for id in ids {
        if let Err(e) = m.cancel(id) {
            log::warn!("Failed to cancel transfer {id}: {}", e.message());
        }
    }
    if m.transfers.is_empty() {
        exit(lp, m);
    }
}

fn on_stop_deadline(_: &mut EventLoop<Manager>, m: &mut Manager) {
    log::warn!("Transfers still running after cancellation, killing them.");
    m.kill_all();
}

/// A transfer was removed.
pub fn transfer_ended(lp: &mut EventLoop<Manager>, m: &mut Manager) {
    m.service.last_transfer_end = lp.now(Clock::Monotonic);
    if m.service.stopping && m.transfers.is_empty() {
        exit(lp, m);
    }
}

fn exit(lp: &mut EventLoop<Manager>, m: &mut Manager) {
    lp.exit(m.service.exit_code);
}
