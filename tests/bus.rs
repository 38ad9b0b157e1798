//! The bus layer (`systemd_import::bus`) against a real dbus-daemon: a server and a client
//! connection on one event loop, as systemd-importd and importctl use them. Method calls
//! routed by path, interface and member with sd-bus's errors, replies given later,
//! properties, introspection, signals through matches, name requests, the interactive
//! authorization flag, the polkit check, and a lost connection.

mod common;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use dbus::arg::Variant;
use dbus::Message;

use common::dbus::TestBus;
use systemd_import::bus::{
    names, Bus, BusError, Call, EmitsChanged, Handled, Interface, SignalMatch, Value,
};
use systemd_import::event::EventLoop;

const NAME: &str = "org.example.Test";
const PATH: &str = "/org/example/Thing";
const IFACE: &str = "org.example.Thing";
const ITEMS: &str = "/org/example/Thing/items";

/// The loop's data: both ends and what they saw.
struct World {
    server: Bus<World>,
    client: Bus<World>,
    /// Items below ITEMS that exist.
    items: Vec<u32>,
    /// Calls answered later, kept by the `Later` handler.
    held: Vec<Call>,
    replies: Vec<Result<Message, BusError>>,
    signals: Vec<String>,
    name_reply: Option<Result<u32, BusError>>,
    disconnected: bool,
}

fn server(w: &mut World) -> &mut Bus<World> {
    &mut w.server
}

fn client(w: &mut World) -> &mut Bus<World> {
    &mut w.client
}

fn echo(_: &mut EventLoop<World>, _: &mut World, call: Call) -> Handled {
    let text: String = call.message().read1().expect("signature checked");
    call.ok((text,))
}

fn fail(_: &mut EventLoop<World>, _: &mut World, call: Call) -> Handled {
    call.fail(BusError::new("org.example.Error.Nope", "Not today."))
}

fn later(_: &mut EventLoop<World>, w: &mut World, call: Call) -> Handled {
    w.held.push(call);
    Handled::Later
}

fn shout(lp: &mut EventLoop<World>, w: &mut World, call: Call) -> Handled {
    let what: String = call.message().read1().expect("signature checked");
    w.server
        .emit(lp, PATH, IFACE, "Shouted", (what,))
        .expect("emit");
    call.ok(())
}

fn guarded(lp: &mut EventLoop<World>, w: &mut World, call: Call) -> Handled {
    let r = w
        .server
        .authorize(lp, call, "org.example.act", |lp, w, call, verdict| {
            let h = match verdict {
                Ok(()) => call.ok(("allowed",)),
                Err(e) => call.fail(e),
            };
            w.server.finish(lp, h);
        });
    match r {
        Ok(()) => Handled::Later,
        Err((call, e)) => call.fail(e),
    }
}

fn count(w: &World, _: &str) -> Value {
    Value::U32(w.items.len() as u32)
}

fn item_id(_: &World, path: &str) -> Value {
    Value::U32(path.rsplit('_').next().unwrap().parse().unwrap())
}

fn item_exists(w: &World, path: &str) -> bool {
    path.strip_prefix("/org/example/Thing/items/_")
        .and_then(|n| n.parse::<u32>().ok())
        .is_some_and(|n| w.items.contains(&n))
}

fn item_paths(w: &World) -> Vec<String> {
    w.items.iter().map(|n| format!("{ITEMS}/_{n}")).collect()
}

fn on_disconnect(_: &mut EventLoop<World>, w: &mut World) {
    w.disconnected = true;
}

/// Both connections on one loop, the server serving the test objects under NAME.
fn world(bus: &TestBus) -> (EventLoop<World>, World) {
    let mut lp = EventLoop::new().unwrap();
    let mut w = World {
        server: Bus::open(bus.address(), server).unwrap(),
        client: Bus::open(bus.address(), client).unwrap(),
        items: vec![1, 2],
        held: Vec::new(),
        replies: Vec::new(),
        signals: Vec::new(),
        name_reply: None,
        disconnected: false,
    };
    w.server.add_object(
        PATH,
        vec![Interface::new(IFACE)
            .method("Echo", &[("text", "s")], &[("text", "s")], echo)
            .method("Fail", &[], &[], fail)
            .method("Later", &[("n", "u")], &[("n", "u")], later)
            .method("Shout", &[("what", "s")], &[], shout)
            .method("Guarded", &[], &[("verdict", "s")], guarded)
            .property("Count", "u", EmitsChanged::False, count)
            .signal("Shouted", &[("what", "s")])],
    );
    w.server.add_fallback(
        ITEMS,
        item_exists,
        item_paths,
        vec![Interface::new("org.example.Item").property("Id", "u", EmitsChanged::Const, item_id)],
    );
    w.server.set_disconnect_handler(on_disconnect);
    w.server.attach(&mut lp).unwrap();
    w.client.attach(&mut lp).unwrap();
    w.server
        .request_name(&mut lp, NAME, |_, w, r| w.name_reply = Some(r));
    run_until(&mut lp, &mut w, |w| w.name_reply.is_some());
    assert_eq!(w.name_reply.clone().unwrap(), Ok(1));
    (lp, w)
}

fn run_until(lp: &mut EventLoop<World>, w: &mut World, done: impl Fn(&World) -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !done(w) {
        assert!(Instant::now() < deadline, "timed out");
        lp.run_once(w, Some(Duration::from_millis(100))).unwrap();
    }
}

fn method(path: &str, iface: &str, member: &str) -> Message {
    Message::new_method_call(NAME, path, iface, member).unwrap()
}

/// Call from the client and wait for the answer.
fn call(lp: &mut EventLoop<World>, w: &mut World, msg: Message) -> Result<Message, BusError> {
    let before = w.replies.len();
    w.client
        .call(lp, msg, |_, w, r| w.replies.push(r))
        .expect("sent");
    run_until(lp, w, |w| w.replies.len() > before);
    w.replies.pop().unwrap()
}

fn error_of<T: std::fmt::Debug>(r: Result<T, BusError>) -> (String, String) {
    let e = r.expect_err("an error reply");
    (e.name().to_string(), e.message().to_string())
}

/// Call `Later(n)` from the client and wait until the server holds it.
fn send_held(lp: &mut EventLoop<World>, w: &mut World, n: u32) {
    let msg = method(PATH, IFACE, "Later").append1(n);
    w.client.call(lp, msg, |_, w, r| w.replies.push(r)).unwrap();
    run_until(lp, w, |w| w.held.len() == 1);
}

/// Each call fails with this error name and text.
fn assert_errors<const N: usize>(
    lp: &mut EventLoop<World>,
    w: &mut World,
    cases: [(Message, (&str, &str)); N],
) {
    for (msg, (name, text)) in cases {
        let (got_name, got_text) = error_of(call(lp, w, msg));
        assert_eq!((got_name.as_str(), got_text.as_str()), (name, text));
    }
}

#[test]
fn calls_are_routed_and_errors_named_as_sd_bus_names_them() {
    let bus = TestBus::start();
    let (mut lp, mut w) = world(&bus);
    let reply = call(
        &mut lp,
        &mut w,
        method(PATH, IFACE, "Echo").append1("hello"),
    )
    .unwrap();
    assert_eq!(reply.read1::<&str>().unwrap(), "hello");

    let cases = [
        (
            method(PATH, IFACE, "Fail"),
            ("org.example.Error.Nope", "Not today."),
        ),
        (
            method(PATH, IFACE, "Echo").append1(5u32),
            (
                names::INVALID_ARGS,
                "Invalid arguments 'u' to call org.example.Thing.Echo(), expecting 's'.",
            ),
        ),
        (
            method(PATH, IFACE, "Nope"),
            (
                names::UNKNOWN_METHOD,
                "Unknown method Nope or interface org.example.Thing.",
            ),
        ),
        (
            method(PATH, "org.example.Other", "Echo").append1("x"),
            (
                names::UNKNOWN_METHOD,
                "Unknown method Echo or interface org.example.Other.",
            ),
        ),
        (
            method("/org/example/Nowhere", IFACE, "Echo").append1("x"),
            (
                names::UNKNOWN_OBJECT,
                "Unknown object '/org/example/Nowhere'.",
            ),
        ),
        (
            method(&format!("{ITEMS}/_3"), "org.example.Item", "X"),
            (
                names::UNKNOWN_OBJECT,
                "Unknown object '/org/example/Thing/items/_3'.",
            ),
        ),
    ];
    assert_errors(&mut lp, &mut w, cases);
    // Peer answers on any path.
    let ping = Message::new_method_call(NAME, "/x", "org.freedesktop.DBus.Peer", "Ping").unwrap();
    assert!(call(&mut lp, &mut w, ping).is_ok());
}

#[test]
fn properties_and_introspection() {
    let bus = TestBus::start();
    let (mut lp, mut w) = world(&bus);
    let props = "org.freedesktop.DBus.Properties";
    let get = method(PATH, props, "Get").append2(IFACE, "Count");
    let v: Variant<u32> = call(&mut lp, &mut w, get).unwrap().read1().unwrap();
    assert_eq!(v.0, 2);
    let get_all = method(&format!("{ITEMS}/_2"), props, "GetAll").append1("");
    let all: HashMap<String, Variant<u32>> =
        call(&mut lp, &mut w, get_all).unwrap().read1().unwrap();
    assert_eq!(all["Id"].0, 2);
    let cases = [
        (
            method(PATH, props, "Get").append2(IFACE, "Nope"),
            (
                names::UNKNOWN_PROPERTY,
                "Unknown interface org.example.Thing or property Nope.",
            ),
        ),
        (
            method(PATH, props, "GetAll").append1("org.example.None"),
            (
                names::UNKNOWN_INTERFACE,
                "Unknown interface 'org.example.None'.",
            ),
        ),
        (
            method(PATH, props, "Set").append3(IFACE, "Count", Variant(5u32)),
            (
                names::PROPERTY_READ_ONLY,
                "Property 'Count' is not writable.",
            ),
        ),
        (
            method(PATH, props, "Get").append1(IFACE),
            (
                names::INVALID_ARGS,
                "Expected interface and member parameters",
            ),
        ),
    ];
    assert_errors(&mut lp, &mut w, cases);

    let introspect = |lp: &mut EventLoop<World>, w: &mut World, path: &str| {
        let m = method(path, "org.freedesktop.DBus.Introspectable", "Introspect");
        call(lp, w, m).map(|r| r.read1::<String>().unwrap())
    };
    let xml = introspect(&mut lp, &mut w, PATH).unwrap();
    for needle in [
        "<interface name=\"org.example.Thing\">",
        "<method name=\"Echo\">",
        "<node name=\"items\"/>",
        "<signal name=\"Shouted\">",
    ] {
        assert!(xml.contains(needle), "{needle} in {xml}");
    }
    let xml = introspect(&mut lp, &mut w, ITEMS).unwrap();
    assert!(xml.contains("<node name=\"_1\"/>") && xml.contains("<node name=\"_2\"/>"));
    w.items.push(7);
    let xml = introspect(&mut lp, &mut w, ITEMS).unwrap();
    assert!(xml.contains("<node name=\"_7\"/>"), "{xml}");
    let xml = introspect(&mut lp, &mut w, "/").unwrap();
    assert!(xml.contains("<node name=\"org\"/>"), "{xml}");
    assert_eq!(
        error_of(introspect(&mut lp, &mut w, "/elsewhere")).0,
        names::UNKNOWN_OBJECT
    );
}

#[test]
fn later_replies_signals_and_no_reply_calls() {
    let bus = TestBus::start();
    let (mut lp, mut w) = world(&bus);
    let rule = SignalMatch::new(NAME, PATH, IFACE, "Shouted");
    let id = w.client.add_match(&mut lp, rule, |_, w, msg| {
        w.signals.push(msg.read1::<String>().unwrap());
    });
    // AddMatch is processed before the call that makes the server shout: both go out
    // in order on the one connection.
    call(&mut lp, &mut w, method(PATH, IFACE, "Shout").append1("one")).unwrap();
    run_until(&mut lp, &mut w, |w| w.signals.len() == 1);
    assert_eq!(w.signals, ["one"]);

    // A call answered later: the handler keeps it, the reply follows when it is finished.
    let before = w.replies.len();
    send_held(&mut lp, &mut w, 9u32);
    assert_eq!(w.replies.len(), before);
    let held = w.held.pop().unwrap();
    let n: u32 = held.message().read1().unwrap();
    w.server.finish(&mut lp, held.ok((n + 1,)));
    run_until(&mut lp, &mut w, |w| w.replies.len() > before);
    assert_eq!(
        w.replies.pop().unwrap().unwrap().read1::<u32>().unwrap(),
        10
    );

    // No reply expected: the handler runs, nothing comes back.
    let mut m = method(PATH, IFACE, "Shout").append1("two");
    m.set_no_reply(true);
    w.client.send(&mut lp, m).unwrap();
    run_until(&mut lp, &mut w, |w| w.signals.len() == 2);

    // A removed match delivers nothing more.
    assert!(w.client.remove_match(&mut lp, id));
    call(
        &mut lp,
        &mut w,
        method(PATH, IFACE, "Shout").append1("three"),
    )
    .unwrap();
    call(&mut lp, &mut w, method(PATH, IFACE, "Echo").append1("sync")).unwrap();
    assert_eq!(w.signals, ["one", "two"]);
}

#[test]
fn root_callers_pass_the_authorization_check() {
    let bus = TestBus::start();
    let (mut lp, mut w) = world(&bus);
    let reply = call(&mut lp, &mut w, method(PATH, IFACE, "Guarded")).unwrap();
    assert_eq!(reply.read1::<&str>().unwrap(), "allowed");
    // The interactive flag travels with the call (the server reads it when it asks polkit).
    let before = w.replies.len();
    w.client
        .call_interactive(&mut lp, method(PATH, IFACE, "Guarded"), |_, w, r| {
            w.replies.push(r)
        })
        .unwrap();
    run_until(&mut lp, &mut w, |w| w.replies.len() > before);
    assert!(w.replies.pop().unwrap().is_ok());
}

#[test]
fn a_lost_connection_fails_pending_calls_and_reports_once() {
    let mut bus = TestBus::start();
    let (mut lp, mut w) = world(&bus);
    // A call the server holds will never be answered: the bus goes away first.
    let before = w.replies.len();
    send_held(&mut lp, &mut w, 1u32);
    drop(std::mem::replace(&mut bus, TestBus::start()));
    run_until(&mut lp, &mut w, |w| {
        w.disconnected && w.replies.len() > before
    });
    assert_eq!(error_of(w.replies.pop().unwrap()).0, names::DISCONNECTED);
    assert!(!w.server.is_connected());
    // Calls on a lost connection fail through their callback, not by panicking.
    w.server
        .call(&mut lp, method(PATH, IFACE, "Echo"), |_, w, r| {
            w.replies.push(r)
        });
    run_until(&mut lp, &mut w, |w| w.replies.len() > before);
    assert!(w.replies.pop().unwrap().is_err());
}
