//! The client side of a [`Bus`]: method calls whose reply goes to a callback, signal
//! matches, and the bus driver's name calls.
//!
//! A reply callback runs exactly once: with the reply, with the error reply, or with an
//! error when the call could not be sent or the connection was lost first. It is dropped
//! unrun only by [`Bus::cancel_call`] or when the bus itself is dropped.
//!
//! Signal matches are registered with the bus daemon (`AddMatch`) and checked again here
//! for each signal, since one connection's rules all feed one stream. A rule naming a
//! well-known sender cannot be checked here (signals carry the sender's unique name), so,
//! like sd-bus on dbus-daemon, such a rule accepts any unique sender and relies on the
//! daemon's filtering.

use dbus::arg::AppendAll;
use dbus::Message;

use super::error::BusError;
use super::message::with_interactive_authorization;
use super::{Access, Bus, DBUS_INTERFACE, DBUS_NAME, DBUS_PATH};
use crate::event::EventLoop;
use crate::util::error::Result;

/// A reply callback: the reply, or the error reply / failure.
pub type ReplyFn<D> = dyn FnOnce(&mut EventLoop<D>, &mut D, Result<Message, BusError>);

/// A signal callback.
pub type SignalFn<D> = dyn FnMut(&mut EventLoop<D>, &mut D, &Message);

/// Which signals a match selects; `None` fields match anything.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SignalMatch {
    pub sender: Option<String>,
    pub path: Option<String>,
    pub interface: Option<String>,
    pub member: Option<String>,
}

impl SignalMatch {
    /// Signals `member` of `interface` sent by `sender` from `path`.
    pub fn new(sender: &str, path: &str, interface: &str, member: &str) -> SignalMatch {
        SignalMatch {
            sender: Some(sender.into()),
            path: Some(path.into()),
            interface: Some(interface.into()),
            member: Some(member.into()),
        }
    }

    /// The rule in the bus daemon's syntax. Every field is a bus name, object path,
    /// interface or member name, none of which can contain a quote.
    pub fn rule(&self) -> String {
        let mut rule = String::from("type='signal'");
        for (key, value) in [
            ("sender", &self.sender),
            ("path", &self.path),
            ("interface", &self.interface),
            ("member", &self.member),
        ] {
            if let Some(v) = value {
                rule.push_str(&format!(",{key}='{v}'"));
            }
        }
        rule
    }

    /// Whether `msg` (a signal) is selected.
    pub fn matches(&self, msg: &Message) -> bool {
        let field = |want: &Option<String>, have: Option<String>| {
            want.as_ref().is_none_or(|w| have.as_deref() == Some(w))
        };
        let sender_ok = match (&self.sender, msg.sender()) {
            (None, _) => true,
            (Some(want), Some(have)) => {
                *want == *have || (!want.starts_with(':') && have.starts_with(':'))
            }
            (Some(_), None) => false,
        };
        sender_ok
            && field(&self.path, msg.path().map(|p| p.to_string()))
            && field(&self.interface, msg.interface().map(|i| i.to_string()))
            && field(&self.member, msg.member().map(|m| m.to_string()))
    }
}

/// Names a signal match; stale once the match is removed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct MatchId {
    idx: u32,
    generation: u32,
}

struct MatchEntry<D> {
    rule: SignalMatch,
    /// Taken out while the callback runs.
    callback: Option<Box<SignalFn<D>>>,
}

struct MatchSlot<D> {
    generation: u32,
    entry: Option<MatchEntry<D>>,
}

/// The signal matches of a bus, in slots with generations (like the loop's sources).
pub(super) struct Matches<D> {
    slots: Vec<MatchSlot<D>>,
}

impl<D> Default for Matches<D> {
    fn default() -> Self {
        Matches { slots: Vec::new() }
    }
}

impl<D> Matches<D> {
    fn insert(&mut self, entry: MatchEntry<D>) -> MatchId {
        let idx = match self.slots.iter().position(|s| s.entry.is_none()) {
            Some(i) => i,
            None => {
                self.slots.push(MatchSlot {
                    generation: 0,
                    entry: None,
                });
                self.slots.len() - 1
            }
        };
        let slot = &mut self.slots[idx];
        slot.entry = Some(entry);
        MatchId {
            idx: idx as u32,
            generation: slot.generation,
        }
    }

    fn get_mut(&mut self, id: MatchId) -> Option<&mut MatchEntry<D>> {
        let slot = self.slots.get_mut(id.idx as usize)?;
        if slot.generation != id.generation {
            return None;
        }
        slot.entry.as_mut()
    }

    fn remove(&mut self, id: MatchId) -> Option<MatchEntry<D>> {
        self.get_mut(id)?;
        let slot = &mut self.slots[id.idx as usize];
        slot.generation = slot.generation.wrapping_add(1);
        slot.entry.take()
    }

    fn selecting(&self, msg: &Message) -> Vec<MatchId> {
        self.slots
            .iter()
            .enumerate()
            .filter(|(_, s)| s.entry.as_ref().is_some_and(|e| e.rule.matches(msg)))
            .map(|(i, s)| MatchId {
                idx: i as u32,
                generation: s.generation,
            })
            .collect()
    }
}

impl<D: 'static> Bus<D> {
    /// Send the method call `msg`; `on_reply` gets the reply or the error.
    pub fn call(
        &mut self,
        lp: &mut EventLoop<D>,
        msg: Message,
        on_reply: impl FnOnce(&mut EventLoop<D>, &mut D, Result<Message, BusError>) + 'static,
    ) -> Option<u32> {
        match self.send(lp, msg) {
            Ok(serial) => {
                self.calls.insert(serial, Box::new(on_reply));
                Some(serial)
            }
            Err(e) => {
                self.failed
                    .push((Box::new(on_reply), BusError::from_errno(e.errno())));
                self.wake(lp);
                None
            }
        }
    }

    /// Like [`call`](Self::call), allowing the callee to ask the user for authorization
    /// (polkit) while the call is pending.
    pub fn call_interactive(
        &mut self,
        lp: &mut EventLoop<D>,
        msg: Message,
        on_reply: impl FnOnce(&mut EventLoop<D>, &mut D, Result<Message, BusError>) + 'static,
    ) -> Option<u32> {
        let serial = self.next_preset_serial;
        self.next_preset_serial -= 1;
        match with_interactive_authorization(msg, serial) {
            Ok(msg) => self.call(lp, msg, on_reply),
            Err(e) => {
                self.failed.push((Box::new(on_reply), e));
                self.wake(lp);
                None
            }
        }
    }

    /// Forget a pending call: its callback is dropped unrun, a late reply ignored.
    pub fn cancel_call(&mut self, serial: u32) -> bool {
        self.calls.remove(&serial).is_some()
    }

    /// How many of our calls await their reply.
    pub fn pending_calls(&self) -> usize {
        self.calls.len() + self.failed.len()
    }

    /// Call `member` of the bus driver with `args`.
    pub fn call_driver<A: AppendAll>(
        &mut self,
        lp: &mut EventLoop<D>,
        member: &str,
        args: A,
        on_reply: impl FnOnce(&mut EventLoop<D>, &mut D, Result<Message, BusError>) + 'static,
    ) -> Option<u32> {
        let mut msg = Message::new_method_call(DBUS_NAME, DBUS_PATH, DBUS_INTERFACE, member)
            .expect("the bus driver's names are valid");
        msg.append_all(args);
        self.call(lp, msg, on_reply)
    }

    /// Ask for the well-known `name` (no flags: queue if it is taken); `on_done` gets the
    /// driver's answer (`NAME_PRIMARY_OWNER`, …).
    pub fn request_name(
        &mut self,
        lp: &mut EventLoop<D>,
        name: &str,
        on_done: impl FnOnce(&mut EventLoop<D>, &mut D, Result<u32, BusError>) + 'static,
    ) {
        self.call_driver(lp, "RequestName", (name, 0u32), move |lp, d, r| {
            on_done(lp, d, r.and_then(read_u32))
        });
    }

    /// Give up the well-known `name`.
    pub fn release_name(
        &mut self,
        lp: &mut EventLoop<D>,
        name: &str,
        on_done: impl FnOnce(&mut EventLoop<D>, &mut D, Result<u32, BusError>) + 'static,
    ) {
        self.call_driver(lp, "ReleaseName", (name,), move |lp, d, r| {
            on_done(lp, d, r.and_then(read_u32))
        });
    }

    /// Deliver the signals `rule` selects to `on_signal`, and ask the bus daemon to send
    /// them to us. A failure of `AddMatch` is logged.
    pub fn add_match(
        &mut self,
        lp: &mut EventLoop<D>,
        rule: SignalMatch,
        on_signal: impl FnMut(&mut EventLoop<D>, &mut D, &Message) + 'static,
    ) -> MatchId {
        let text = rule.rule();
        let id = self.matches.insert(MatchEntry {
            rule,
            callback: Some(Box::new(on_signal)),
        });
        self.call_driver(lp, "AddMatch", (text.clone(),), move |_, _, r| {
            if let Err(e) = r {
                log::warn!("Failed to add match '{text}': {e}");
            }
        });
        id
    }

    /// Stop delivering a match's signals. Safe from inside its own callback.
    pub fn remove_match(&mut self, lp: &mut EventLoop<D>, id: MatchId) -> bool {
        let Some(entry) = self.matches.remove(id) else {
            return false;
        };
        self.call_driver(lp, "RemoveMatch", (entry.rule.rule(),), |_, _, _| {});
        true
    }
}

fn read_u32(msg: Message) -> Result<u32, BusError> {
    msg.read1::<u32>()
        .map_err(|e| BusError::invalid_args(e.to_string()))
}

/// Hand `msg` to every match that selects it, one callback at a time (take–call–restore:
/// a callback may add or remove matches, its own included).
pub(super) fn dispatch_signal<D: 'static>(
    lp: &mut EventLoop<D>,
    d: &mut D,
    access: Access<D>,
    msg: &Message,
) {
    for id in access(d).matches.selecting(msg) {
        let Some(mut callback) = access(d)
            .matches
            .get_mut(id)
            .and_then(|e| e.callback.take())
        else {
            continue;
        };
        callback(lp, d, msg);
        if let Some(entry) = access(d).matches.get_mut(id) {
            entry.callback = Some(callback);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn signal(sender: &str, path: &str, member: &str) -> Message {
        let mut m = Message::new_signal(path, "org.freedesktop.import1.Manager", member).unwrap();
        m.set_sender(Some(sender.into()));
        m
    }

    #[test]
    fn rules_are_written_and_checked_field_by_field() {
        let rule = SignalMatch::new(
            "org.freedesktop.import1",
            "/org/freedesktop/import1",
            "org.freedesktop.import1.Manager",
            "TransferRemoved",
        );
        assert_eq!(
            rule.rule(),
            "type='signal',sender='org.freedesktop.import1',path='/org/freedesktop/import1',\
             interface='org.freedesktop.import1.Manager',member='TransferRemoved'"
        );
        // A well-known sender in the rule accepts the unique name the signal carries.
        assert!(rule.matches(&signal(
            ":1.7",
            "/org/freedesktop/import1",
            "TransferRemoved"
        )));
        assert!(!rule.matches(&signal(":1.7", "/org/freedesktop/import1", "TransferNew")));
        assert!(!rule.matches(&signal(":1.7", "/other", "TransferRemoved")));
        let unique = SignalMatch {
            sender: Some(":1.8".into()),
            ..SignalMatch::default()
        };
        assert!(!unique.matches(&signal(":1.7", "/x", "A")));
        assert!(unique.matches(&signal(":1.8", "/x", "A")));
        assert_eq!(SignalMatch::default().rule(), "type='signal'");
    }

    #[test]
    fn match_ids_go_stale_when_removed() {
        let mut m: Matches<()> = Matches::default();
        let a = m.insert(MatchEntry {
            rule: SignalMatch::default(),
            callback: None,
        });
        assert!(m.remove(a).is_some());
        let b = m.insert(MatchEntry {
            rule: SignalMatch::default(),
            callback: None,
        });
        assert_eq!(a.idx, b.idx);
        assert!(m.get_mut(a).is_none());
        assert!(m.get_mut(b).is_some());
    }
}
