//! The server side of a [`Bus`]: objects, their interfaces, and the routing of incoming
//! method calls by (path, interface, member).
//!
//! An interface is a table built once at start-up: methods (name, named in and out
//! arguments, a plain `fn` handler), read-only properties (a getter reading `&D`) and
//! signals (for introspection). Routing answers as sd-bus does, with its error names and
//! texts: `Peer` on any path; `Introspect` on objects and on the nodes above them;
//! `Properties.Get/GetAll/Set`; an unknown object, method, interface or property; and a
//! call whose arguments do not match the method's signature is refused before the handler
//! runs.

use std::collections::BTreeSet;
use std::rc::Rc;

use dbus::arg::IterAppend;
use dbus::strings::Signature;
use dbus::Message;

use super::error::{names, BusError};
use super::introspect;
use super::message::{signature, Call, Handled};
use super::Access;
use crate::event::EventLoop;

pub const PEER: &str = "org.freedesktop.DBus.Peer";
pub const INTROSPECTABLE: &str = "org.freedesktop.DBus.Introspectable";
pub const PROPERTIES: &str = "org.freedesktop.DBus.Properties";

/// Named arguments: `(name, type signature)` in order.
pub type Args = &'static [(&'static str, &'static str)];

/// A method handler. It gets the call by value: see [`Handled`].
pub type MethodFn<D> = fn(&mut EventLoop<D>, &mut D, Call) -> Handled;

/// A property getter: the loop's data and the object's path.
pub type GetterFn<D> = fn(&D, &str) -> Value;

/// The `org.freedesktop.DBus.Property.EmitsChangedSignal` annotation of a property.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EmitsChanged {
    /// The value never changes for the object's lifetime.
    Const,
    /// It changes, and no `PropertiesChanged` signal says so.
    False,
}

/// A property's value.
#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    Bool(bool),
    U32(u32),
    U64(u64),
    F64(f64),
    Str(String),
    /// A struct of these members.
    Struct(Vec<Value>),
    /// An array whose elements have the signature given (needed for an empty array).
    Array(&'static str, Vec<Value>),
}

impl Value {
    /// The value's D-Bus type signature.
    fn signature(&self) -> String {
        match self {
            Value::Bool(_) => "b".into(),
            Value::U32(_) => "u".into(),
            Value::U64(_) => "t".into(),
            Value::F64(_) => "d".into(),
            Value::Str(_) => "s".into(),
            Value::Struct(members) => {
                let inner: String = members.iter().map(Value::signature).collect();
                format!("({inner})")
            }
            Value::Array(element, _) => format!("a{element}"),
        }
    }

    fn append(&self, ia: &mut IterAppend<'_>) {
        match self {
            Value::Bool(v) => ia.append(*v),
            Value::U32(v) => ia.append(*v),
            Value::U64(v) => ia.append(*v),
            Value::F64(v) => ia.append(*v),
            Value::Str(v) => ia.append(v.as_str()),
            Value::Struct(members) => ia.append_struct(|ia| {
                for m in members {
                    m.append(ia);
                }
            }),
            Value::Array(element, items) => ia.append_array(&Signature::from(*element), |ia| {
                for item in items {
                    item.append(ia);
                }
            }),
        }
    }

    fn append_variant(&self, ia: &mut IterAppend<'_>) {
        ia.append_variant(&Signature::from(self.signature()), |ia| self.append(ia));
    }
}

pub struct Method<D> {
    pub(super) name: &'static str,
    pub(super) inputs: Args,
    pub(super) outputs: Args,
    handler: MethodFn<D>,
}

pub struct Property<D> {
    pub(super) name: &'static str,
    pub(super) signature: &'static str,
    pub(super) emits: EmitsChanged,
    get: GetterFn<D>,
}

pub struct SignalSpec {
    pub(super) name: &'static str,
    pub(super) args: Args,
}

/// One interface of an object. Built with the chained methods, then registered with
/// `Bus::add_object` or `Bus::add_fallback`.
pub struct Interface<D> {
    pub(super) name: &'static str,
    pub(super) methods: Vec<Method<D>>,
    pub(super) properties: Vec<Property<D>>,
    pub(super) signals: Vec<SignalSpec>,
}

impl<D> Interface<D> {
    pub fn new(name: &'static str) -> Interface<D> {
        Interface {
            name,
            methods: Vec::new(),
            properties: Vec::new(),
            signals: Vec::new(),
        }
    }

    pub fn method(
        mut self,
        name: &'static str,
        inputs: Args,
        outputs: Args,
        handler: MethodFn<D>,
    ) -> Self {
        self.methods.push(Method {
            name,
            inputs,
            outputs,
            handler,
        });
        self
    }

    pub fn property(
        mut self,
        name: &'static str,
        signature: &'static str,
        emits: EmitsChanged,
        get: GetterFn<D>,
    ) -> Self {
        self.properties.push(Property {
            name,
            signature,
            emits,
            get,
        });
        self
    }

    pub fn signal(mut self, name: &'static str, args: Args) -> Self {
        self.signals.push(SignalSpec { name, args });
        self
    }
}

/// The signature of a list of arguments.
pub(super) fn args_signature(args: Args) -> String {
    args.iter().map(|(_, t)| *t).collect()
}

enum Location<D> {
    /// Exactly this path.
    Exact,
    /// Paths below the prefix for which `exists` says yes, listed by `children`.
    Fallback {
        exists: fn(&D, &str) -> bool,
        children: fn(&D) -> Vec<String>,
    },
}

pub(super) struct Object<D> {
    path: String,
    location: Location<D>,
    interfaces: Vec<Interface<D>>,
}

impl<D> Object<D> {
    pub(super) fn exact(path: &str, interfaces: Vec<Interface<D>>) -> Object<D> {
        Object {
            path: path.to_string(),
            location: Location::Exact,
            interfaces,
        }
    }

    pub(super) fn fallback(
        prefix: &str,
        exists: fn(&D, &str) -> bool,
        children: fn(&D) -> Vec<String>,
        interfaces: Vec<Interface<D>>,
    ) -> Object<D> {
        Object {
            path: prefix.to_string(),
            location: Location::Fallback { exists, children },
            interfaces,
        }
    }

    /// Whether this object answers at `path`.
    fn serves(&self, d: &D, path: &str) -> bool {
        match &self.location {
            Location::Exact => self.path == path,
            Location::Fallback { exists, .. } => {
                is_below(path, &self.path) && path != self.path && exists(d, path)
            }
        }
    }

    /// Every path this object stands for: its own, or the prefix and its children.
    fn paths(&self, d: &D) -> Vec<String> {
        match &self.location {
            Location::Exact => vec![self.path.clone()],
            Location::Fallback { children, .. } => {
                let mut v = children(d);
                v.push(self.path.clone());
                v
            }
        }
    }
}

/// Whether `path` is `prefix` or below it.
fn is_below(path: &str, prefix: &str) -> bool {
    prefix == "/"
        || path == prefix
        || path
            .strip_prefix(prefix)
            .is_some_and(|rest| rest.starts_with('/'))
}

/// The names of the nodes directly below `path`, and whether `path` is a node at all.
fn child_nodes<D>(objects: &[Rc<Object<D>>], d: &D, path: &str) -> (BTreeSet<String>, bool) {
    let mut children = BTreeSet::new();
    let mut known = false;
    for known_path in objects.iter().flat_map(|o| o.paths(d)) {
        if !is_below(&known_path, path) {
            continue;
        }
        known = true;
        let rest = known_path[path.len()..].trim_start_matches('/');
        if let Some(first) = rest.split('/').next().filter(|s| !s.is_empty()) {
            children.insert(first.to_string());
        }
    }
    (children, known)
}

/// Route one method call addressed to us; returns the reply to send, if any.
pub(super) fn dispatch_call<D: 'static>(
    lp: &mut EventLoop<D>,
    d: &mut D,
    access: Access<D>,
    msg: Message,
) -> Handled {
    let interface = msg.interface().map(|i| i.to_string());
    if interface.as_deref() == Some(PEER) {
        if msg.get_no_reply() {
            return Handled::NoReply;
        }
        return match dbus::channel::default_reply(&msg) {
            Some(reply) => Handled::Reply(reply),
            None => Handled::NoReply,
        };
    }
    let call = Call::new(msg);
    let path = call.path();
    let member = call.member();
    let objects = access(d).objects.clone();
    let found = objects.iter().find(|o| o.serves(d, &path)).cloned();

    if interface.as_deref() == Some(INTROSPECTABLE) {
        return introspect_call(d, &objects, found.as_deref(), call, &path, &member);
    }
    let Some(object) = found else {
        return call.fail(BusError::new(
            names::UNKNOWN_OBJECT,
            format!("Unknown object '{path}'."),
        ));
    };
    if interface.as_deref() == Some(PROPERTIES) {
        return properties_call(d, &object, call, &path, &member);
    }
    let method = object
        .interfaces
        .iter()
        .filter(|i| interface.as_deref().is_none_or(|want| want == i.name))
        .find_map(|i| i.methods.iter().find(|m| m.name == member).map(|m| (i, m)));
    let Some((iface, method)) = method else {
        return call.fail(BusError::new(
            names::UNKNOWN_METHOD,
            format!(
                "Unknown method {member} or interface {}.",
                interface.as_deref().unwrap_or("(null)")
            ),
        ));
    };
    let expected = args_signature(method.inputs);
    let got = signature(call.message());
    if got != expected {
        return call.fail(BusError::invalid_args(format!(
            "Invalid arguments '{got}' to call {}.{member}(), expecting '{expected}'.",
            iface.name
        )));
    }
    let handler = method.handler;
    handler(lp, d, call)
}

fn introspect_call<D>(
    d: &D,
    objects: &[Rc<Object<D>>],
    found: Option<&Object<D>>,
    call: Call,
    path: &str,
    member: &str,
) -> Handled {
    if member != "Introspect" {
        return unknown_standard_method(call, member, INTROSPECTABLE);
    }
    if !signature(call.message()).is_empty() {
        return call.fail(BusError::invalid_args("Expected no parameters"));
    }
    let (children, known) = child_nodes(objects, d, path);
    if found.is_none() && !known {
        return call.fail(BusError::new(
            names::UNKNOWN_OBJECT,
            format!("Unknown object '{path}'."),
        ));
    }
    let interfaces = found.map_or(&[][..], |o| &o.interfaces[..]);
    let xml = introspect::document(interfaces, &children);
    call.ok((xml,))
}

fn properties_call<D>(d: &D, object: &Object<D>, call: Call, path: &str, member: &str) -> Handled {
    let sig = signature(call.message());
    match member {
        "Get" | "Set" => {
            let expected = if member == "Get" { "ss" } else { "ssv" };
            if sig != expected {
                return call.fail(BusError::invalid_args(
                    "Expected interface and member parameters",
                ));
            }
            let (iface, prop) = call
                .message()
                .read2::<String, String>()
                .expect("signature checked");
            let Some(p) = find_property(object, &iface, &prop) else {
                return call.fail(BusError::new(
                    names::UNKNOWN_PROPERTY,
                    format!("Unknown interface {iface} or property {prop}."),
                ));
            };
            if member == "Set" {
                return call.fail(BusError::new(
                    names::PROPERTY_READ_ONLY,
                    format!("Property '{prop}' is not writable."),
                ));
            }
            let value = (p.get)(d, path);
            call.reply_with(|ia| value.append_variant(ia))
        }
        "GetAll" => {
            if sig != "s" {
                return call.fail(BusError::invalid_args("Expected interface parameter"));
            }
            let iface: String = call.message().read1().expect("signature checked");
            let selected: Vec<&Interface<D>> = object
                .interfaces
                .iter()
                .filter(|i| iface.is_empty() || i.name == iface)
                .collect();
            if selected.is_empty() && !iface.is_empty() {
                return call.fail(BusError::new(
                    names::UNKNOWN_INTERFACE,
                    format!("Unknown interface '{iface}'."),
                ));
            }
            let values: Vec<(&str, Value)> = selected
                .iter()
                .flat_map(|i| i.properties.iter())
                .map(|p| (p.name, (p.get)(d, path)))
                .collect();
            call.reply_with(|ia| {
                ia.append_dict(&Signature::from("s"), &Signature::from("v"), |ia| {
                    for (name, value) in &values {
                        ia.append_dict_entry(|ia| {
                            ia.append(*name);
                            value.append_variant(ia);
                        });
                    }
                });
            })
        }
        _ => unknown_standard_method(call, member, PROPERTIES),
    }
}

fn find_property<'a, D>(object: &'a Object<D>, iface: &str, prop: &str) -> Option<&'a Property<D>> {
    object
        .interfaces
        .iter()
        .filter(|i| i.name == iface)
        .find_map(|i| i.properties.iter().find(|p| p.name == prop))
}

fn unknown_standard_method(call: Call, member: &str, interface: &str) -> Handled {
    call.fail(BusError::new(
        names::UNKNOWN_METHOD,
        format!("Unknown method {member} or interface {interface}."),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn no_children(_: &()) -> Vec<String> {
        vec!["/a/items/_1".into(), "/a/items/_2".into()]
    }

    fn exists(_: &(), p: &str) -> bool {
        p == "/a/items/_1" || p == "/a/items/_2"
    }

    #[test]
    fn values_carry_their_signature() {
        let layers = Value::Array(
            "(us)",
            vec![Value::Struct(vec![
                Value::U32(1),
                Value::Str("done".into()),
            ])],
        );
        assert_eq!(layers.signature(), "a(us)");
        assert_eq!(Value::Array("(us)", vec![]).signature(), "a(us)");
        let mut msg = Message::new_method_call("org.example", "/o", "org.example.I", "M").unwrap();
        let mut ia = IterAppend::new(&mut msg);
        layers.append_variant(&mut ia);
        Value::F64(0.5).append_variant(&mut ia);
        let (v, d): (
            dbus::arg::Variant<Vec<(u32, String)>>,
            dbus::arg::Variant<f64>,
        ) = msg.read2().unwrap();
        assert_eq!(v.0, vec![(1, "done".to_string())]);
        assert_eq!(d.0, 0.5);
    }

    #[test]
    fn nodes_list_their_children() {
        let objects: Vec<Rc<Object<()>>> = vec![
            Rc::new(Object::exact("/a", Vec::new())),
            Rc::new(Object::fallback(
                "/a/items",
                exists,
                no_children,
                Vec::new(),
            )),
        ];
        let names = |p: &str| {
            let (c, known) = child_nodes(&objects, &(), p);
            (c.into_iter().collect::<Vec<_>>(), known)
        };
        assert_eq!(names("/"), (vec!["a".to_string()], true));
        assert_eq!(names("/a"), (vec!["items".to_string()], true));
        assert_eq!(names("/a/items"), (vec!["_1".into(), "_2".into()], true));
        assert_eq!(names("/a/items/_1"), (vec![], true));
        assert_eq!(names("/b"), (vec![], false));
        assert_eq!(names("/a/it"), (vec![], false));
        assert!(objects[1].serves(&(), "/a/items/_2"));
        assert!(!objects[1].serves(&(), "/a/items/_3"));
        assert!(!objects[1].serves(&(), "/a/items"));
    }
}
