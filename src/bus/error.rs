//! D-Bus errors: a name and a human message, as they travel in an error reply.
//!
//! Handlers fail with a [`BusError`]. Errors that start life as an errno are named the way
//! sd-bus names them (`EINVAL` → `org.freedesktop.DBus.Error.InvalidArgs`, an errno
//! without a standard name → `System.Error.E2BIG`), with `strerror()` as the message, so
//! clients see what they would see from systemd's own daemons.

use std::fmt;

use dbus::Message;

use crate::util::error::{strerror, Error};

/// The standard error names this crate uses (D-Bus specification, plus sd-bus's
/// `InteractiveAuthorizationRequired`).
pub mod names {
    pub const FAILED: &str = "org.freedesktop.DBus.Error.Failed";
    pub const NO_MEMORY: &str = "org.freedesktop.DBus.Error.NoMemory";
    pub const SERVICE_UNKNOWN: &str = "org.freedesktop.DBus.Error.ServiceUnknown";
    pub const NAME_HAS_NO_OWNER: &str = "org.freedesktop.DBus.Error.NameHasNoOwner";
    pub const NO_REPLY: &str = "org.freedesktop.DBus.Error.NoReply";
    pub const IO_ERROR: &str = "org.freedesktop.DBus.Error.IOError";
    pub const BAD_ADDRESS: &str = "org.freedesktop.DBus.Error.BadAddress";
    pub const NOT_SUPPORTED: &str = "org.freedesktop.DBus.Error.NotSupported";
    pub const LIMITS_EXCEEDED: &str = "org.freedesktop.DBus.Error.LimitsExceeded";
    pub const ACCESS_DENIED: &str = "org.freedesktop.DBus.Error.AccessDenied";
    pub const TIMEOUT: &str = "org.freedesktop.DBus.Error.Timeout";
    pub const ADDRESS_IN_USE: &str = "org.freedesktop.DBus.Error.AddressInUse";
    pub const DISCONNECTED: &str = "org.freedesktop.DBus.Error.Disconnected";
    pub const INVALID_ARGS: &str = "org.freedesktop.DBus.Error.InvalidArgs";
    pub const FILE_NOT_FOUND: &str = "org.freedesktop.DBus.Error.FileNotFound";
    pub const FILE_EXISTS: &str = "org.freedesktop.DBus.Error.FileExists";
    pub const UNKNOWN_METHOD: &str = "org.freedesktop.DBus.Error.UnknownMethod";
    pub const UNKNOWN_OBJECT: &str = "org.freedesktop.DBus.Error.UnknownObject";
    pub const UNKNOWN_INTERFACE: &str = "org.freedesktop.DBus.Error.UnknownInterface";
    pub const UNKNOWN_PROPERTY: &str = "org.freedesktop.DBus.Error.UnknownProperty";
    pub const PROPERTY_READ_ONLY: &str = "org.freedesktop.DBus.Error.PropertyReadOnly";
    pub const UNIX_PROCESS_ID_UNKNOWN: &str = "org.freedesktop.DBus.Error.UnixProcessIdUnknown";
    pub const INCONSISTENT_MESSAGE: &str = "org.freedesktop.DBus.Error.InconsistentMessage";
    pub const INTERACTIVE_AUTHORIZATION_REQUIRED: &str =
        "org.freedesktop.DBus.Error.InteractiveAuthorizationRequired";
}

/// An error reply's name and message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BusError {
    name: String,
    message: String,
}

impl BusError {
    /// An error with this name (which must be a valid D-Bus error name) and message.
    pub fn new(name: &str, message: impl Into<String>) -> BusError {
        BusError {
            name: name.to_string(),
            message: message.into(),
        }
    }

    /// `org.freedesktop.DBus.Error.InvalidArgs` with this message.
    pub fn invalid_args(message: impl Into<String>) -> BusError {
        BusError::new(names::INVALID_ARGS, message)
    }

    /// The error sd-bus sends for a handler that failed with `errno`: a standard name where
    /// sd-bus has one, else `System.Error.<ENAME>`; the message is `strerror(errno)`.
    pub fn from_errno(errno: i32) -> BusError {
        let name = match errno {
            libc::ENOMEM => names::NO_MEMORY.to_string(),
            libc::EPERM | libc::EACCES => names::ACCESS_DENIED.to_string(),
            libc::EINVAL => names::INVALID_ARGS.to_string(),
            libc::ESRCH => names::UNIX_PROCESS_ID_UNKNOWN.to_string(),
            libc::ENOENT => names::FILE_NOT_FOUND.to_string(),
            libc::EEXIST => names::FILE_EXISTS.to_string(),
            libc::ETIMEDOUT | libc::ETIME => names::TIMEOUT.to_string(),
            libc::EIO => names::IO_ERROR.to_string(),
            libc::ENETRESET | libc::ECONNABORTED | libc::ECONNRESET => {
                names::DISCONNECTED.to_string()
            }
            libc::EOPNOTSUPP => names::NOT_SUPPORTED.to_string(),
            libc::EADDRNOTAVAIL => names::BAD_ADDRESS.to_string(),
            libc::ENOBUFS => names::LIMITS_EXCEEDED.to_string(),
            libc::EADDRINUSE => names::ADDRESS_IN_USE.to_string(),
            libc::EBADMSG => names::INCONSISTENT_MESSAGE.to_string(),
            // nix's Debug output of an errno is its symbolic name ("E2BIG").
            _ => format!("System.Error.{:?}", nix::errno::Errno::from_raw(errno)),
        };
        BusError {
            name,
            message: strerror(errno),
        }
    }

    /// The error carried by an error reply, or `None` for any other message.
    pub fn from_reply(msg: &mut Message) -> Option<BusError> {
        match msg.as_result() {
            Ok(_) => None,
            Err(e) => Some(BusError::new(
                e.name().unwrap_or(names::FAILED),
                e.message().unwrap_or_default(),
            )),
        }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn message(&self) -> &str {
        &self.message
    }

    /// Whether this is one of `names`.
    pub fn has_name(&self, names: &[&str]) -> bool {
        names.contains(&self.name.as_str())
    }

    /// The error reply to `call`.
    pub fn reply_to(&self, call: &Message) -> Message {
        // Names come from our own constants or from a message libdbus validated; the
        // message text may contain anything but NUL, which C strings cannot carry.
        let text =
            std::ffi::CString::new(self.message.replace('\0', " ")).expect("NULs were replaced");
        let name = dbus::strings::ErrorName::new(self.name.as_str())
            .unwrap_or_else(|_| dbus::strings::ErrorName::from(names::FAILED));
        call.error(&name, &text)
    }
}

impl From<Error> for BusError {
    fn from(e: Error) -> BusError {
        BusError::from_errno(e.errno())
    }
}

impl fmt::Display for BusError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for BusError {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errnos_are_named_as_sd_bus_names_them() {
        let e = BusError::from_errno(libc::E2BIG);
        assert_eq!(e.name(), "System.Error.E2BIG");
        assert_eq!(e.message(), "Argument list too long");
        let e = BusError::from_errno(libc::EACCES);
        assert_eq!(e.name(), names::ACCESS_DENIED);
        assert_eq!(e.message(), "Permission denied");
        assert_eq!(
            BusError::from_errno(libc::ESHUTDOWN).name(),
            "System.Error.ESHUTDOWN"
        );
        assert_eq!(
            BusError::from_errno(libc::EINVAL).name(),
            names::INVALID_ARGS
        );
    }

    #[test]
    fn error_replies_round_trip() {
        let mut call = Message::new_method_call("org.example", "/x", "org.example.I", "M").unwrap();
        call.set_serial(7);
        let mut reply = BusError::invalid_args("Bad\0thing").reply_to(&call);
        assert_eq!(reply.get_reply_serial(), Some(7));
        let back = BusError::from_reply(&mut reply).unwrap();
        assert_eq!(back.name(), names::INVALID_ARGS);
        assert_eq!(back.message(), "Bad thing");
        assert_eq!(BusError::from_reply(&mut call), None);
    }
}
