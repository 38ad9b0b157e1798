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
//! This file is the only user of the loop's timers in the daemon; each timer's callback
//! says what happens next (`TimerAction`). It knows the daemon only through [`Daemon`]
//! (its bus, this state, its transfers), so the manager depends on it and not the reverse.

use std::ffi::OsString;
use std::time::Duration;

use super::Settings;
use crate::bus::import1::BUS_NAME;
use crate::bus::{Bus, NAME_ALREADY_OWNER, NAME_IN_QUEUE, NAME_PRIMARY_OWNER};
use crate::event::{Clock, EventLoop, TimerAction};
use crate::util::error::Result;
use crate::util::notify::notify_to;

/// How long a stop waits for cancelled workers before killing them.
pub const STOP_DEADLINE: Duration = Duration::from_secs(10);

/// What the service part needs of the daemon it keeps alive.
pub trait Daemon: Sized + 'static {
    fn bus(&mut self) -> &mut Bus<Self>;
    fn service(&mut self) -> &mut Service;
    /// No transfer runs and no reply of ours is awaited.
    fn is_idle(&self) -> bool;
    fn has_transfers(&self) -> bool;
    /// Ask every transfer to stop (each logs its own failure).
    fn cancel_all(&mut self);
    /// Kill the workers still running.
    fn kill_all(&mut self);
}

/// What the service part of the daemon remembers.
pub struct Service {
    exit_after: Duration,
    watchdog: Option<Duration>,
    notify_socket: Option<OsString>,
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

fn usec(d: Duration) -> u64 {
    d.as_micros().min(u128::from(u64::MAX)) as u64
}

/// Signals, timers, the bus name and readiness.
pub fn start<D: Daemon>(lp: &mut EventLoop<D>, m: &mut D) -> Result<()> {
    for signo in [libc::SIGTERM, libc::SIGINT] {
        lp.add_signal(signo, |lp, m, _, _| {
            stop(lp, m, 0);
            Ok(())
        })?;
    }
    m.bus().set_disconnect_handler(|lp, m| {
        log::error!("Lost the connection to the bus, exiting.");
        stop(lp, m, 1);
    });
    m.bus().request_name(lp, BUS_NAME, |lp, m, r| match r {
        Ok(NAME_PRIMARY_OWNER | NAME_ALREADY_OWNER) => {
            log::debug!("Acquired bus name {BUS_NAME}.");
            m.service().notify("READY=1");
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
    m.service().last_transfer_end = lp.now(Clock::Monotonic);
    lp.add_timer_in(Clock::Monotonic, m.service().exit_after, |lp, m, _, _| {
        Ok(on_idle_timer(lp, m))
    })?;
    if let Some(period) = m.service().watchdog {
        lp.add_timer_in(Clock::Monotonic, period / 2, move |_, m, _, _| {
            m.service().notify("WATCHDOG=1");
            Ok(TimerAction::ToDuration(period / 2))
        })?;
    }
    Ok(())
}

/// Exit if idle for long enough, else look again when it could be.
fn on_idle_timer<D: Daemon>(lp: &mut EventLoop<D>, m: &mut D) -> TimerAction {
    if m.service().stopping || m.service().releasing {
        return TimerAction::Drop;
    }
    let now = lp.now(Clock::Monotonic);
    let window = usec(m.service().exit_after);
    let last_activity = m.bus().last_activity();
    let quiet_since = last_activity.max(m.service().last_transfer_end);
    let next = if !m.is_idle() {
        now + window
    } else if now >= quiet_since.saturating_add(window) {
        log::debug!(
            "Exiting after {} s without work.",
            m.service().exit_after.as_secs()
        );
        m.service().releasing = true;
        m.service().notify("STOPPING=1");
        m.bus().release_name(lp, BUS_NAME, |lp, m, r| {
            if let Err(e) = r {
                log::warn!("Failed to release bus name: {}", e.message());
            }
            exit(lp, m);
        });
        return TimerAction::Drop;
    } else {
        quiet_since + window
    };
    TimerAction::ToInstant(next)
}

/// Stop: cancel every transfer and exit when none is left (with `code` unless an
/// earlier stop set one).
pub fn stop<D: Daemon>(lp: &mut EventLoop<D>, m: &mut D, code: i32) {
    if !m.service().stopping {
        m.service().stopping = true;
        m.service().exit_code = code;
        m.service().notify("STOPPING=1");
        let deadline = lp.add_timer_in(Clock::Monotonic, STOP_DEADLINE, |_, m, _, _| {
            log::warn!("Transfers still running after cancellation, killing them.");
            m.kill_all();
            Ok(TimerAction::Drop)
        });
        if let Err(e) = deadline {
            log::warn!("Failed to arm the stop deadline: {e}");
        }
    }
    m.cancel_all();
    if !m.has_transfers() {
        exit(lp, m);
    }
}

/// A transfer was removed.
pub fn transfer_ended<D: Daemon>(lp: &mut EventLoop<D>, m: &mut D) {
    m.service().last_transfer_end = lp.now(Clock::Monotonic);
    if m.service().stopping && !m.has_transfers() {
        exit(lp, m);
    }
}

fn exit<D: Daemon>(lp: &mut EventLoop<D>, m: &mut D) {
    lp.exit(m.service().exit_code);
}
