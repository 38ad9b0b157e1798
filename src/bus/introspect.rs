//! Introspection XML (the D-Bus specification's format): the standard interfaces every
//! object has, the object's own interfaces with named arguments and property
//! annotations, and the child nodes.

use std::collections::BTreeSet;
use std::fmt::Write;

use super::interface::{Args, EmitsChanged, Interface, INTROSPECTABLE, PEER, PROPERTIES};

const DOCTYPE: &str =
    "<!DOCTYPE node PUBLIC \"-//freedesktop//DTD D-BUS Object Introspection 1.0//EN\"\n\
\"http://www.freedesktop.org/standards/dbus/1.0/introspect.dtd\">\n";

/// The standard interfaces: (interface, methods with (name, in, out), signals).
type Standard = (
    &'static str,
    &'static [(&'static str, Args, Args)],
    &'static [(&'static str, Args)],
);

const STANDARD: [Standard; 3] = [
    (
        PEER,
        &[
            ("Ping", &[], &[]),
            ("GetMachineId", &[], &[("machine_uuid", "s")]),
        ],
        &[],
    ),
    (
        INTROSPECTABLE,
        &[("Introspect", &[], &[("xml_data", "s")])],
        &[],
    ),
    (
        PROPERTIES,
        &[
            (
                "Get",
                &[("interface_name", "s"), ("property_name", "s")],
                &[("value", "v")],
            ),
            ("GetAll", &[("interface_name", "s")], &[("props", "a{sv}")]),
            (
                "Set",
                &[
                    ("interface_name", "s"),
                    ("property_name", "s"),
                    ("value", "v"),
                ],
                &[],
            ),
        ],
        &[(
            "PropertiesChanged",
            &[
                ("interface_name", "s"),
                ("changed_properties", "a{sv}"),
                ("invalidated_properties", "as"),
            ],
        )],
    ),
];

/// The document for a node with `interfaces` (none for a node that only has children,
/// which still answers the standard ones) and the child nodes `children`.
pub(super) fn document<D>(interfaces: &[Interface<D>], children: &BTreeSet<String>) -> String {
    let mut out = String::from(DOCTYPE);
    out.push_str("<node>\n");
    for (name, methods, signals) in STANDARD {
        let _ = writeln!(out, " <interface name=\"{name}\">");
        for (method, inputs, outputs) in methods {
            write_method(&mut out, method, inputs, outputs);
        }
        for (signal, args) in signals {
            write_signal(&mut out, signal, args);
        }
        out.push_str(" </interface>\n");
    }
    for iface in interfaces {
        let _ = writeln!(out, " <interface name=\"{}\">", iface.name);
        for m in &iface.methods {
            write_method(&mut out, m.name, m.inputs, m.outputs);
        }
        for p in &iface.properties {
            let annotation = match p.emits {
                EmitsChanged::Const => "const",
                EmitsChanged::False => "false",
            };
            let _ = writeln!(
                out,
                "  <property name=\"{}\" type=\"{}\" access=\"read\">\n   \
                 <annotation name=\"org.freedesktop.DBus.Property.EmitsChangedSignal\" \
                 value=\"{annotation}\"/>\n  </property>",
                p.name, p.signature
            );
        }
        for s in &iface.signals {
            write_signal(&mut out, s.name, s.args);
        }
        out.push_str(" </interface>\n");
    }
    for child in children {
        let _ = writeln!(out, " <node name=\"{child}\"/>");
    }
    out.push_str("</node>\n");
    out
}

fn write_method(out: &mut String, name: &str, inputs: Args, outputs: Args) {
    if inputs.is_empty() && outputs.is_empty() {
        let _ = writeln!(out, "  <method name=\"{name}\"/>");
        return;
    }
    let _ = writeln!(out, "  <method name=\"{name}\">");
    for (direction, args) in [("in", inputs), ("out", outputs)] {
        for (arg, ty) in args {
            let _ = writeln!(
                out,
                "   <arg type=\"{ty}\" name=\"{arg}\" direction=\"{direction}\"/>"
            );
        }
    }
    out.push_str("  </method>\n");
}

fn write_signal(out: &mut String, name: &str, args: Args) {
    if args.is_empty() {
        let _ = writeln!(out, "  <signal name=\"{name}\"/>");
        return;
    }
    let _ = writeln!(out, "  <signal name=\"{name}\">");
    for (arg, ty) in args {
        let _ = writeln!(out, "   <arg type=\"{ty}\" name=\"{arg}\"/>");
    }
    out.push_str("  </signal>\n");
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bus::{Call, Handled, Value};
    use crate::event::EventLoop;

    fn nop(_: &mut EventLoop<()>, _: &mut (), call: Call) -> Handled {
        call.ok(())
    }

    fn zero(_: &(), _: &str) -> Value {
        Value::U32(0)
    }

    #[test]
    fn documents_name_every_member_with_its_arguments() {
        let iface = Interface::new("org.example.Thing")
            .method("Do", &[("what", "s")], &[("id", "u")], nop)
            .method("Nothing", &[], &[], nop)
            .property("Id", "u", EmitsChanged::Const, zero)
            .signal("Done", &[("id", "u"), ("result", "s")]);
        let children = BTreeSet::from(["_1".to_string()]);
        let xml = document(&[iface], &children);
        assert!(xml.starts_with("<!DOCTYPE node"));
        for needle in [
            "<interface name=\"org.freedesktop.DBus.Peer\">",
            "<interface name=\"org.example.Thing\">",
            "   <arg type=\"s\" name=\"what\" direction=\"in\"/>\n   <arg type=\"u\" name=\"id\" direction=\"out\"/>",
            "<method name=\"Nothing\"/>",
            "<property name=\"Id\" type=\"u\" access=\"read\">",
            "value=\"const\"/>",
            "<signal name=\"Done\">\n   <arg type=\"u\" name=\"id\"/>",
            " <node name=\"_1\"/>\n</node>\n",
        ] {
            assert!(xml.contains(needle), "{needle:?} missing in\n{xml}");
        }
        // A node without interfaces of its own has the standard ones and its children.
        let bare = document::<()>(&[], &children);
        assert!(!bare.contains("org.example"));
        assert!(bare.contains("<interface name=\"org.freedesktop.DBus.Introspectable\">"));
        assert!(bare.contains("<node name=\"_1\"/>"));
    }
}
