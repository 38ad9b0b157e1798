//! Who may call a privileged method: the daemon's own user (root for a system service)
//! always; anyone else if polkit says so.
//!
//! The check is asynchronous, like systemd's `bus_verify_polkit_async()`: the bus driver
//! is asked for the caller's uid (`GetConnectionUnixUser`, which the caller cannot
//! forge), then, for another uid, polkit's `CheckAuthorization` for the caller's bus name
//! and the action, interactive only when the call carries the
//! `ALLOW_INTERACTIVE_AUTHORIZATION` flag. Answers, as systemd gives them:
//! * authorized → allowed;
//! * not authorized, but polkit could ask the user → `InteractiveAuthorizationRequired`
//!   (`Interactive authentication required.`);
//! * not authorized → `AccessDenied` (`Permission denied`, from EACCES);
//! * polkit not on the bus (`ServiceUnknown`, `NameHasNoOwner`, or systemd's activation
//!   failure `NoSuchUnit`) → `AccessDenied`;
//! * another error from polkit → that error.
//!
//! The call is kept while the check runs and handed back with the verdict, so the method
//! runs (and validates its arguments) only once the caller is allowed, as upstream does.

use std::collections::HashMap;

use dbus::arg::Variant;
use dbus::Message;

use super::error::{names, BusError};
use super::message::Call;
use super::Bus;
use crate::event::EventLoop;

const POLKIT_NAME: &str = "org.freedesktop.PolicyKit1";
const POLKIT_PATH: &str = "/org/freedesktop/PolicyKit1/Authority";
const POLKIT_INTERFACE: &str = "org.freedesktop.PolicyKit1.Authority";
/// `CheckAuthorization` flag: the user may be asked.
const ALLOW_USER_INTERACTION: u32 = 1;
/// systemd's error for a unit that activation could not find.
const NO_SUCH_UNIT: &str = "org.freedesktop.systemd1.NoSuchUnit";

/// What the check hands back: the call, and whether it may proceed.
pub type VerdictFn<D> = dyn FnOnce(&mut EventLoop<D>, &mut D, Call, Result<(), BusError>);

impl<D: 'static> Bus<D> {
    /// Check whether the caller of `call` may perform polkit `action`. On success the
    /// check runs and `verdict` gets the call back later; `Err` returns the call with the
    /// error when the check cannot even start.
    pub fn authorize(
        &mut self,
        lp: &mut EventLoop<D>,
        call: Call,
        action: &'static str,
        verdict: impl FnOnce(&mut EventLoop<D>, &mut D, Call, Result<(), BusError>) + 'static,
    ) -> Result<(), (Call, BusError)> {
        let Some(sender) = call.sender() else {
            return Err((call, BusError::from_errno(libc::EBADMSG)));
        };
        let interactive = call.allows_interactive_authorization();
        let verdict: Box<VerdictFn<D>> = Box::new(verdict);
        let access = self.access;
        let query = sender.clone();
        self.call_driver(
            lp,
            "GetConnectionUnixUser",
            (query,),
            move |lp, d, reply| {
                let uid = match reply.and_then(|m| {
                    m.read1::<u32>()
                        .map_err(|e| BusError::invalid_args(e.to_string()))
                }) {
                    Ok(uid) => uid,
                    Err(e) => return verdict(lp, d, call, Err(e)),
                };
                if uid == nix::unistd::geteuid().as_raw() {
                    return verdict(lp, d, call, Ok(()));
                }
                let check = check_authorization(&sender, action, interactive);
                access(d).call(lp, check, move |lp, d, reply| {
                    verdict(lp, d, call, polkit_verdict(reply))
                });
            },
        );
        Ok(())
    }
}

/// polkit's `CheckAuthorization(subject, action_id, details, flags, cancellation_id)` for
/// the bus name `sender`.
fn check_authorization(sender: &str, action: &str, interactive: bool) -> Message {
    let subject: HashMap<&str, Variant<&str>> = HashMap::from([("name", Variant(sender))]);
    let details: HashMap<&str, &str> = HashMap::new();
    let flags = if interactive {
        ALLOW_USER_INTERACTION
    } else {
        0
    };
    Message::new_method_call(
        POLKIT_NAME,
        POLKIT_PATH,
        POLKIT_INTERFACE,
        "CheckAuthorization",
    )
    .expect("polkit's names are valid")
    .append3(("system-bus-name", subject), action, details)
    .append2(flags, "")
}

/// Map polkit's answer (`(bba{ss})`: authorized, challenge, details) to a verdict.
fn polkit_verdict(reply: Result<Message, BusError>) -> Result<(), BusError> {
    let msg = match reply {
        Ok(m) => m,
        Err(e)
            if e.has_name(&[
                names::SERVICE_UNKNOWN,
                names::NAME_HAS_NO_OWNER,
                NO_SUCH_UNIT,
            ]) =>
        {
            return Err(BusError::from_errno(libc::EACCES));
        }
        Err(e) => return Err(e),
    };
    let (authorized, challenge, _details) = msg
        .read1::<(bool, bool, HashMap<String, String>)>()
        .map_err(|e| BusError::invalid_args(e.to_string()))?;
    if authorized {
        Ok(())
    } else if challenge {
        Err(BusError::new(
            names::INTERACTIVE_AUTHORIZATION_REQUIRED,
            "Interactive authentication required.",
        ))
    } else {
        Err(BusError::from_errno(libc::EACCES))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(authorized: bool, challenge: bool) -> Result<Message, BusError> {
        let m = Message::new_method_call("a.b", "/", "a.b", "C").unwrap();
        Ok(m.append1((authorized, challenge, HashMap::<String, String>::new())))
    }

    #[test]
    fn polkit_answers_map_to_systemds_errors() {
        assert_eq!(polkit_verdict(answer(true, false)), Ok(()));
        let e = polkit_verdict(answer(false, true)).unwrap_err();
        assert_eq!(e.name(), names::INTERACTIVE_AUTHORIZATION_REQUIRED);
        let e = polkit_verdict(answer(false, false)).unwrap_err();
        assert_eq!(
            (e.name(), e.message()),
            (names::ACCESS_DENIED, "Permission denied")
        );
        let gone = Err(BusError::new(names::SERVICE_UNKNOWN, "not here"));
        assert_eq!(
            polkit_verdict(gone).unwrap_err().name(),
            names::ACCESS_DENIED
        );
        let other = Err(BusError::new(names::NO_REPLY, "slow"));
        assert_eq!(polkit_verdict(other).unwrap_err().name(), names::NO_REPLY);
    }

    #[test]
    fn the_query_names_the_caller_and_the_action() {
        let m = check_authorization(":1.5", "org.freedesktop.import1.pull", true);
        assert_eq!(crate::bus::message::signature(&m), "(sa{sv})sa{ss}us");
        let (kind, subject): (String, HashMap<String, Variant<String>>) = m.read1().unwrap();
        assert_eq!(kind, "system-bus-name");
        assert_eq!(subject["name"].0, ":1.5");
        let mut it = m.iter_init();
        it.next();
        assert_eq!(it.read::<&str>().unwrap(), "org.freedesktop.import1.pull");
        it.next();
        assert_eq!(it.read::<u32>().unwrap(), 1);
    }
}
