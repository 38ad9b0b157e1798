//! importctl's side of the bus: the loop's data ([`Ctl`]), connecting to the system bus,
//! and calls to systemd-importd's manager whose reply the caller waits for while the loop
//! keeps dispatching (signals that arrive meanwhile are handled as they come).

use dbus::Message;

use super::display::Display;
use crate::bus::import1::{BUS_NAME, MANAGER_INTERFACE, MANAGER_PATH};
use crate::bus::{names, Bus, BusError};
use crate::event::{EventLoop, SourceId};

/// The loop's data: one per run of importctl.
pub struct Ctl {
    pub bus: Bus<Ctl>,
    /// The answer to the call [`call`] waits for; written by that call's reply callback.
    reply: Option<Result<Message, BusError>>,
    /// The transfer a pull verb watches; `Some` from before its call until the end.
    pub watch: Option<Watch>,
}

/// A pull being watched.
pub struct Watch {
    /// The transfer's id and object path, once the daemon answered the call.
    pub transfer: Option<(u32, String)>,
    pub display: Display,
    /// The timer of a redraw the display owes; `Some` while armed.
    pub redraw: Option<SourceId>,
    /// `program_invocation_short_name`, for the Ctrl-C hint.
    pub program: String,
}

impl Watch {
    /// Whether a signal sent from `path` is about our transfer.
    pub fn is_ours(&self, path: Option<&str>) -> bool {
        matches!((&self.transfer, path), (Some((_, ours)), Some(p)) if ours == p)
    }
}

fn bus_of(ctl: &mut Ctl) -> &mut Bus<Ctl> {
    &mut ctl.bus
}

/// Connect to the system bus (`DBUS_SYSTEM_BUS_ADDRESS` is honoured) and set up the loop;
/// on failure the error is logged.
pub fn connect() -> Result<(EventLoop<Ctl>, Ctl), ()> {
    let mut lp = EventLoop::new().map_err(|e| {
        log::error!("Failed to allocate event loop: {e}");
    })?;
    let bus = Bus::system(bus_of).map_err(|e| {
        log::error!(
            "Failed to connect to system scope bus via local transport: {}",
            e.msg().map_or_else(|| e.to_string(), str::to_string)
        );
    })?;
    let mut ctl = Ctl {
        bus,
        reply: None,
        watch: None,
    };
    ctl.bus.attach(&mut lp).map_err(|e| {
        log::error!("Failed to attach bus to event loop: {e}");
    })?;
    Ok((lp, ctl))
}

/// A call of `member` on systemd-importd's manager object.
pub fn manager_call(member: &str) -> Message {
    Message::new_method_call(BUS_NAME, MANAGER_PATH, MANAGER_INTERFACE, member)
        .expect("the manager's names are valid")
}

/// Send `msg` and run the loop until its answer is in. `interactive`: the daemon may
/// ask polkit to ask the user.
pub fn call(
    lp: &mut EventLoop<Ctl>,
    ctl: &mut Ctl,
    msg: Message,
    interactive: bool,
) -> Result<Message, BusError> {
    call_then(lp, ctl, msg, interactive, |_, _| {})
}

/// [`call`], with `then` run on a successful reply as soon as it is dispatched: before
/// any message that arrived after it (a signal it makes relevant) is.
pub fn call_then(
    lp: &mut EventLoop<Ctl>,
    ctl: &mut Ctl,
    msg: Message,
    interactive: bool,
    then: fn(&mut Ctl, &Message),
) -> Result<Message, BusError> {
    debug_assert!(ctl.reply.is_none(), "one call at a time");
    let store = move |_: &mut EventLoop<Ctl>, ctl: &mut Ctl, r: Result<Message, BusError>| {
        if let Ok(reply) = &r {
            then(ctl, reply);
        }
        ctl.reply = Some(r);
    };
    if interactive {
        ctl.bus.call_interactive(lp, msg, store);
    } else {
        ctl.bus.call(lp, msg, store);
    }
    loop {
        if let Some(r) = ctl.reply.take() {
            return r;
        }
        if lp.exit_requested() {
            // Nothing asks to exit before our calls are answered; never spin if it did.
            return Err(BusError::from_errno(libc::ECANCELED));
        }
        if let Err(e) = lp.run_once(ctl, None) {
            return Err(BusError::from(e));
        }
    }
}

/// Whether an error says the daemon lacks the member called: it does not know it, or
/// (systemd 252's D-Bus policy lists the members it has) the bus refused to deliver it.
pub fn is_unknown_member(e: &BusError) -> bool {
    e.has_name(&[names::UNKNOWN_METHOD])
        || (e.has_name(&[names::ACCESS_DENIED]) && e.message().starts_with("Rejected send message"))
}
