//! The server side of a [`Bus`]: objects (a path or a fallback prefix with their
//! interface tables, interface.rs) and the routing of incoming method calls by (path,
//! interface, member).
//!
//! Routing answers as sd-bus does, with its error names and
//! texts: `Peer` on any path; `Introspect` on objects and on the nodes above them;
//! `Properties.Get/GetAll/Set`; an unknown object, method, interface or property; and a
//! call whose arguments do not match the method's signature is refused before the handler
//! runs.

use std::collections::BTreeSet;
use std::rc::Rc;

use dbus::strings::Signature;
use dbus::Message;

use super::error::{names, BusError};
use super::interface::{
    args_signature, Interface, Property, Value, INTROSPECTABLE, PEER, PROPERTIES,
};
use super::introspect;
use super::message::{signature, Call, Handled};
use super::Access;
use crate::event::EventLoop;

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
