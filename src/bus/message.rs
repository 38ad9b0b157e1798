//! Message helpers: an incoming method call ([`Call`]) and what a handler made of it
//! ([`Handled`]), a message's signature, and the header flag libdbus has no accessor for
//! (`ALLOW_INTERACTIVE_AUTHORIZATION`).

use dbus::arg::{AppendAll, IterAppend};
use dbus::Message;

use super::error::BusError;

/// The header flag a caller sets to say it can wait for an interactive polkit prompt.
const FLAG_ALLOW_INTERACTIVE_AUTHORIZATION: u8 = 0x4;
/// Offset of the flags byte in a marshalled message (after endianness and type).
const FLAGS_OFFSET: usize = 2;

/// A method call addressed to one of our objects. Handlers take it by value: a handler
/// that cannot answer at once (a polkit check is on the way) keeps it and answers later.
pub struct Call {
    msg: Message,
}

/// What a method handler did with its [`Call`].
pub enum Handled {
    /// Send this reply (a method return or an error).
    Reply(Message),
    /// The caller asked for no reply (`NO_REPLY_EXPECTED`): nothing is sent.
    NoReply,
    /// The handler kept the call and answers it later (see `Bus::finish`).
    Later,
}

impl Call {
    pub(super) fn new(msg: Message) -> Call {
        Call { msg }
    }

    pub fn message(&self) -> &Message {
        &self.msg
    }

    /// The object path the call was sent to.
    pub fn path(&self) -> String {
        self.msg.path().map(|p| p.to_string()).unwrap_or_default()
    }

    /// The member (method name).
    pub fn member(&self) -> String {
        self.msg.member().map(|m| m.to_string()).unwrap_or_default()
    }

    /// The caller's unique bus name.
    pub fn sender(&self) -> Option<String> {
        self.msg.sender().map(|s| s.to_string())
    }

    /// Whether the caller allows an interactive authorization for this call.
    pub fn allows_interactive_authorization(&self) -> bool {
        header_flags(&self.msg) & FLAG_ALLOW_INTERACTIVE_AUTHORIZATION != 0
    }

    /// Answer with a method return carrying `args`.
    pub fn ok<A: AppendAll>(self, args: A) -> Handled {
        if self.msg.get_no_reply() {
            return Handled::NoReply;
        }
        Handled::Reply(self.msg.return_with_args(args))
    }

    /// Answer with a method return whose arguments `build` appends.
    pub fn reply_with(self, build: impl FnOnce(&mut IterAppend<'_>)) -> Handled {
        if self.msg.get_no_reply() {
            return Handled::NoReply;
        }
        let mut reply = self.msg.method_return();
        build(&mut IterAppend::new(&mut reply));
        Handled::Reply(reply)
    }

    /// Answer with an error.
    pub fn fail(self, e: BusError) -> Handled {
        if self.msg.get_no_reply() {
            return Handled::NoReply;
        }
        Handled::Reply(e.reply_to(&self.msg))
    }
}

/// The signature of the message's body (`""` for none), e.g. `"sssb"`.
pub fn signature(msg: &Message) -> String {
    let mut sig = String::new();
    let mut iter = msg.iter_init();
    while iter.arg_type() != dbus::arg::ArgType::Invalid {
        sig.push_str(&iter.signature());
        if !iter.next() {
            break;
        }
    }
    sig
}

/// The header's flags byte. libdbus has no getter for the interactive-authorization flag
/// that dbus-rs exposes, but the marshalled form has every flag at a fixed offset.
fn header_flags(msg: &Message) -> u8 {
    let mut flags = 0;
    let _ = msg.marshal(|bytes: &[u8]| -> Result<(), ()> {
        flags = bytes.get(FLAGS_OFFSET).copied().unwrap_or(0);
        Ok(())
    });
    flags
}

/// `msg` (an outgoing method call not sent yet) with the interactive-authorization flag
/// set, for clients that let polkit ask the user. libdbus offers no setter through
/// dbus-rs, so the message is marshalled, the flag set, and the bytes read back. The wire
/// form needs a serial: `serial` is kept by libdbus when the message is sent (it only
/// assigns one to messages that have none), so callers pass a serial from a range
/// libdbus's own counter never reaches (see `Bus::call_interactive`).
pub fn with_interactive_authorization(mut msg: Message, serial: u32) -> Result<Message, BusError> {
    msg.set_serial(serial);
    let mut bytes = Vec::new();
    msg.marshal(|b: &[u8]| -> Result<(), ()> {
        bytes.extend_from_slice(b);
        Ok(())
    })
    .map_err(|()| BusError::from_errno(libc::ENOMEM))?;
    let flags = bytes
        .get_mut(FLAGS_OFFSET)
        .ok_or_else(|| BusError::from_errno(libc::EBADMSG))?;
    *flags |= FLAG_ALLOW_INTERACTIVE_AUTHORIZATION;
    Message::demarshal(&bytes).map_err(|e| {
        BusError::new(
            e.name().unwrap_or(super::error::names::FAILED),
            e.message().unwrap_or_default(),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn call(member: &str) -> Message {
        Message::new_method_call("org.example", "/o", "org.example.I", member).unwrap()
    }

    #[test]
    fn signatures_concatenate_the_arguments() {
        assert_eq!(signature(&call("M")), "");
        let m = call("M").append3("a", 7u32, true).append1(vec![1u64, 2]);
        assert_eq!(signature(&m), "subat");
        let m = call("M").append1(dbus::arg::Variant(5i32));
        assert_eq!(signature(&m), "v");
    }

    #[test]
    fn the_interactive_flag_survives_the_round_trip() {
        let m = call("M").append1("x");
        let mut plain = m.duplicate().unwrap();
        plain.set_serial(1);
        assert_eq!(
            header_flags(&plain) & FLAG_ALLOW_INTERACTIVE_AUTHORIZATION,
            0
        );
        let flagged = with_interactive_authorization(m, 0x8000_0001).unwrap();
        assert_eq!(flagged.get_serial(), Some(0x8000_0001));
        assert_eq!(flagged.member().unwrap().to_string(), "M");
        assert_eq!(flagged.read1::<&str>().unwrap(), "x");
        let c = Call::new(flagged);
        assert!(c.allows_interactive_authorization());
        assert!(!Call::new(plain).allows_interactive_authorization());
    }
}
