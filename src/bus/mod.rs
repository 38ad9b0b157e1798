//! A D-Bus connection driven by our event loop, as sd-bus attaches to sd-event: the
//! connection's socket is an io source of [`EventLoop`], and everything the bus delivers
//! is dispatched from that source's callback on the loop's one thread.
//!
//! * Server side: objects with interfaces ([`Interface`]: methods with typed arguments,
//!   read-only properties, signals) at exact paths or below a fallback prefix whose
//!   children are looked up at call time; `Introspect`, `Properties` and `Peer` answered
//!   for them; method calls routed by (path, interface, member) with the signature checked
//!   before the handler runs; signals emitted with [`Bus::emit`].
//! * Client side: method calls whose reply (or error) goes to a callback ([`Bus::call`]),
//!   signal matches ([`Bus::add_match`], registered with the bus daemon), name requests.
//! * Authorization: [`Bus::authorize`] (polkit, in `polkit.rs`).
//!
//! The connection is dbus-rs's [`Channel`] on libdbus: non-blocking, with the socket
//! exposed through `watch()`, `read_write(0)` to move bytes, `pop_message()` to take what
//! arrived and `send()` to queue. While libdbus holds output it could not write, the io
//! source also waits for EPOLLOUT.
//!
//! Ownership follows the loop's rule: the `Bus<D>` lives inside the loop's data `D`, and
//! an accessor `fn(&mut D) -> &mut Bus<D>` given at construction lets the bus find itself
//! again. Handlers and reply callbacks get `(&mut EventLoop<D>, &mut D, …)`, never a
//! borrow of the bus. Object tables are immutable once registered and shared through
//! `Rc` so that a handler can run while the table it came from is still in use.

mod client;
pub mod error;
pub mod import1;
mod interface;
mod introspect;
pub mod message;
mod object;
mod polkit;

pub use client::{MatchId, SignalMatch};
pub use error::{names, BusError};
pub use interface::{Args, EmitsChanged, Interface, Value};
pub use message::{Call, Handled};

use std::collections::HashMap;
use std::rc::Rc;
use std::time::Duration;

use dbus::arg::AppendAll;
use dbus::channel::{BusType, Channel};
use dbus::{Message, MessageType};

use crate::event::{Clock, Enabled, EventLoop, SourceId, EPOLLIN, EPOLLOUT};
use crate::util::error::{Error, Result};

use client::{Matches, ReplyFn};
use object::Object;

/// How a callback finds the bus inside the loop's data.
pub type Access<D> = fn(&mut D) -> &mut Bus<D>;

/// Called once when the connection to the bus is lost.
pub type DisconnectFn<D> = fn(&mut EventLoop<D>, &mut D);

/// The bus driver's name, path and interface.
pub const DBUS_NAME: &str = "org.freedesktop.DBus";
pub const DBUS_PATH: &str = "/org/freedesktop/DBus";
pub const DBUS_INTERFACE: &str = "org.freedesktop.DBus";

/// `RequestName` replies.
pub const NAME_PRIMARY_OWNER: u32 = 1;
pub const NAME_IN_QUEUE: u32 = 2;
pub const NAME_EXISTS: u32 = 3;
pub const NAME_ALREADY_OWNER: u32 = 4;

/// A connection to a message bus. See the module documentation.
pub struct Bus<D> {
    channel: Channel,
    access: Access<D>,
    /// The io source of the connection's socket; `Some` from `attach()` until the
    /// connection is lost.
    io: Option<SourceId>,
    /// The events `io` waits for: EPOLLIN, plus EPOLLOUT while libdbus has output queued.
    events: u32,
    /// A defer source that hands out queued messages and failed calls; enabled ONESHOT
    /// whenever there is such work (see `wake()`).
    defer: Option<SourceId>,
    objects: Vec<Rc<Object<D>>>,
    /// Reply callbacks of our outgoing calls, by the call's serial.
    calls: HashMap<u32, Box<ReplyFn<D>>>,
    /// Calls that could not be sent, with their error: delivered from `defer`.
    failed: Vec<(Box<ReplyFn<D>>, BusError)>,
    matches: Matches<D>,
    /// The next serial for messages that must carry one before they are sent (the
    /// interactive-authorization flag is set on the marshalled form). libdbus numbers its
    /// messages from 1 upwards; ours count down from the top, so they never meet.
    next_preset_serial: u32,
    /// When the last message arrived (µs, CLOCK_MONOTONIC): the idle logic's clock.
    last_activity: u64,
    on_disconnect: Option<DisconnectFn<D>>,
}

impl<D: 'static> Bus<D> {
    /// Connect to the system bus (libdbus honours `DBUS_SYSTEM_BUS_ADDRESS`) and say
    /// Hello. Blocks until connected: done once, before the loop runs.
    pub fn system(access: Access<D>) -> Result<Bus<D>> {
        let channel = Channel::get_private(BusType::System).map_err(connect_error)?;
        Ok(Bus::from_channel(channel, access))
    }

    /// Connect to the bus at `address` (`unix:path=…`) and say Hello. Blocking.
    pub fn open(address: &str, access: Access<D>) -> Result<Bus<D>> {
        let mut channel = Channel::open_private(address).map_err(connect_error)?;
        channel.register().map_err(connect_error)?;
        Ok(Bus::from_channel(channel, access))
    }

    fn from_channel(mut channel: Channel, access: Access<D>) -> Bus<D> {
        channel.set_watch_enabled(true);
        Bus {
            channel,
            access,
            io: None,
            events: EPOLLIN,
            defer: None,
            objects: Vec::new(),
            calls: HashMap::new(),
            failed: Vec::new(),
            matches: Matches::default(),
            next_preset_serial: u32::MAX,
            last_activity: crate::event::now(Clock::Monotonic),
            on_disconnect: None,
        }
    }

    /// Make the connection a source of `lp`. Messages already queued (the bus's greeting
    /// arrived while we said Hello) are dispatched on the next iteration.
    pub fn attach(&mut self, lp: &mut EventLoop<D>) -> Result<()> {
        debug_assert!(self.io.is_none(), "attached twice");
        let access = self.access;
        let fd = self.channel.watch().fd;
        let io = lp.add_io(fd, EPOLLIN, move |lp, d, _, _| {
            process(lp, d, access);
            Ok(())
        })?;
        lp.set_description(io, "bus-io");
        let defer = lp.add_defer(move |lp, d, _| {
            deliver_failed(lp, d, access);
            process(lp, d, access);
            Ok(())
        })?;
        lp.set_description(defer, "bus-defer");
        self.io = Some(io);
        self.defer = Some(defer);
        Ok(())
    }

    /// Called when the connection is lost (after pending calls failed).
    pub fn set_disconnect_handler(&mut self, f: DisconnectFn<D>) {
        self.on_disconnect = Some(f);
    }

    /// Whether the connection is attached and up.
    pub fn is_connected(&self) -> bool {
        self.io.is_some() && self.channel.is_connected()
    }

    /// Our unique name (`:1.42`).
    pub fn unique_name(&self) -> String {
        self.channel.unique_name().unwrap_or_default().to_string()
    }

    /// When the last message arrived (µs on CLOCK_MONOTONIC).
    pub fn last_activity(&self) -> u64 {
        self.last_activity
    }

    /// The accessor this bus was built with.
    pub fn access(&self) -> Access<D> {
        self.access
    }

    /// Queue `msg` for sending; returns its serial.
    pub fn send(&mut self, lp: &mut EventLoop<D>, msg: Message) -> Result<u32> {
        if self.io.is_none() {
            return Err(Error::with_message(libc::ENOTCONN, "not connected"));
        }
        let serial = self
            .channel
            .send(msg)
            .map_err(|()| Error::new(libc::ENOMEM))?;
        self.update_events(lp);
        Ok(serial)
    }

    /// Send what a handler produced for a call it answered later.
    pub fn finish(&mut self, lp: &mut EventLoop<D>, handled: Handled) {
        if let Handled::Reply(reply) = handled {
            if let Err(e) = self.send(lp, reply) {
                log::debug!("Failed to send reply: {e}");
            }
        }
    }

    /// Emit a signal from `path`.
    pub fn emit<A: AppendAll>(
        &mut self,
        lp: &mut EventLoop<D>,
        path: &str,
        interface: &str,
        member: &str,
        args: A,
    ) -> Result<()> {
        let mut msg = Message::new_signal(path, interface, member)
            .map_err(|e| Error::with_message(libc::EINVAL, e))?;
        msg.append_all(args);
        self.send(lp, msg).map(|_| ())
    }

    /// Serve `interfaces` at exactly `path`.
    pub fn add_object(&mut self, path: &str, interfaces: Vec<Interface<D>>) {
        self.objects.push(Rc::new(Object::exact(path, interfaces)));
    }

    /// Serve `interfaces` at every path below `prefix` for which `exists` says yes;
    /// `children` lists them for introspection.
    pub fn add_fallback(
        &mut self,
        prefix: &str,
        exists: fn(&D, &str) -> bool,
        children: fn(&D) -> Vec<String>,
        interfaces: Vec<Interface<D>>,
    ) {
        self.objects.push(Rc::new(Object::fallback(
            prefix, exists, children, interfaces,
        )));
    }

    /// Write out everything queued, blocking. For the very end (after the loop stopped):
    /// libdbus also reads while it flushes, so it is not used while the loop runs.
    pub fn flush(&self) {
        if self.channel.is_connected() {
            self.channel.flush();
        }
    }

    /// Wait for EPOLLOUT exactly while libdbus has output it could not write yet.
    fn update_events(&mut self, lp: &mut EventLoop<D>) {
        let Some(io) = self.io else { return };
        let want = if self.channel.has_messages_to_send() {
            EPOLLIN | EPOLLOUT
        } else {
            EPOLLIN
        };
        if want != self.events && lp.set_io_events(io, want).is_ok() {
            self.events = want;
        }
    }

    /// Run the defer source on the next iteration.
    fn wake(&mut self, lp: &mut EventLoop<D>) {
        if let Some(defer) = self.defer {
            let _ = lp.set_enabled(defer, Enabled::Oneshot);
        }
    }

    /// Stop watching the connection. The defer source stays: calls made afterwards still
    /// get their (failed) callback through it.
    fn detach(&mut self, lp: &mut EventLoop<D>) {
        if let Some(io) = self.io.take() {
            lp.remove(io);
        }
    }
}

fn connect_error(e: dbus::Error) -> Error {
    Error::with_message(
        libc::ECONNREFUSED,
        e.message().unwrap_or("failed to connect").to_string(),
    )
}

/// Move bytes, then dispatch every message that arrived.
fn process<D: 'static>(lp: &mut EventLoop<D>, d: &mut D, access: Access<D>) {
    if access(d).io.is_none() {
        return;
    }
    let alive = access(d).channel.read_write(Some(Duration::ZERO)).is_ok();
    while let Some(msg) = access(d).channel.pop_message() {
        access(d).last_activity = lp.now(Clock::Monotonic);
        if is_local_disconnect(&msg) {
            disconnected(lp, d, access);
            return;
        }
        dispatch(lp, d, access, msg);
        if access(d).io.is_none() {
            return;
        }
    }
    if !alive || !access(d).channel.is_connected() {
        disconnected(lp, d, access);
        return;
    }
    access(d).update_events(lp);
}

/// libdbus's own signal for a lost connection.
fn is_local_disconnect(msg: &Message) -> bool {
    msg.msg_type() == MessageType::Signal
        && msg.interface().as_deref() == Some("org.freedesktop.DBus.Local")
        && msg.member().as_deref() == Some("Disconnected")
}

fn dispatch<D: 'static>(lp: &mut EventLoop<D>, d: &mut D, access: Access<D>, mut msg: Message) {
    match msg.msg_type() {
        MessageType::MethodReturn | MessageType::Error => {
            let Some(serial) = msg.get_reply_serial() else {
                return;
            };
            let Some(callback) = access(d).calls.remove(&serial) else {
                return;
            };
            let result = match BusError::from_reply(&mut msg) {
                Some(e) => Err(e),
                None => Ok(msg),
            };
            callback(lp, d, result);
        }
        MessageType::Signal => client::dispatch_signal(lp, d, access, &msg),
        MessageType::MethodCall => {
            let handled = object::dispatch_call(lp, d, access, msg);
            access(d).finish(lp, handled);
        }
    }
}

/// The connection is gone: stop watching it, fail every pending call, tell the owner.
fn disconnected<D: 'static>(lp: &mut EventLoop<D>, d: &mut D, access: Access<D>) {
    let bus = access(d);
    bus.detach(lp);
    let calls: Vec<Box<ReplyFn<D>>> = bus.calls.drain().map(|(_, f)| f).collect();
    let on_disconnect = bus.on_disconnect;
    for callback in calls {
        callback(
            lp,
            d,
            Err(BusError::new(names::DISCONNECTED, "Connection terminated")),
        );
    }
    deliver_failed(lp, d, access);
    if let Some(f) = on_disconnect {
        f(lp, d);
    }
}

fn deliver_failed<D: 'static>(lp: &mut EventLoop<D>, d: &mut D, access: Access<D>) {
    let failed = std::mem::take(&mut access(d).failed);
    for (callback, e) in failed {
        callback(lp, d, Err(e));
    }
}
