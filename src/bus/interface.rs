//! The table of one D-Bus interface as a server publishes it: methods with named in and
//! out arguments and a plain `fn` handler, read-only properties with their getter and
//! change annotation, signals (for introspection), and the property values. Built once at
//! start-up; routing (object.rs) and the XML (introspect.rs) both read it, so it is its
//! own module below both.

use dbus::arg::IterAppend;
use dbus::strings::Signature;

use super::message::{Call, Handled};
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

    pub(super) fn append_variant(&self, ia: &mut IterAppend<'_>) {
        ia.append_variant(&Signature::from(self.signature()), |ia| self.append(ia));
    }
}

pub struct Method<D> {
    pub(super) name: &'static str,
    pub(super) inputs: Args,
    pub(super) outputs: Args,
    pub(super) handler: MethodFn<D>,
}

pub struct Property<D> {
    pub(super) name: &'static str,
    pub(super) signature: &'static str,
    pub(super) emits: EmitsChanged,
    pub(super) get: GetterFn<D>,
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

#[cfg(test)]
mod tests {
    use super::*;
    use dbus::Message;

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
}
