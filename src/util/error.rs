//! Errors as systemd passes them around: an errno, nothing more, plus (for tests and
//! debugging) the one line that was logged where the error happened.
//!
//! The C code logs a human sentence at the failure site and returns `-errno`; callers
//! higher up only look at the number. We keep that shape: `Error` carries a positive
//! errno, its `Display` is `strerror(errno)` (what `%m` prints), and the message logged at
//! the failure site rides along so tests can assert it without scraping stderr.

use std::borrow::Cow;
use std::fmt;
use std::io;

use crate::util::sys;

/// An errno-carrying error. `Display` prints `strerror(errno)`, like `%m`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Error {
    /// Positive errno value (`libc::EIO`, …).
    errno: i32,
    /// The line logged where this error was detected, if any.
    message: Option<Cow<'static, str>>,
}

/// `Result` with our [`Error`] as the default error type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// An error with this (positive) errno and no message.
    pub fn new(errno: i32) -> Self {
        debug_assert!(errno > 0, "errno must be positive, got {errno}");
        Error {
            errno: errno.abs().max(1),
            message: None,
        }
    }

    /// An error with an errno and the message that describes it (not logged here).
    pub fn with_message(errno: i32, message: impl Into<Cow<'static, str>>) -> Self {
        Error::new(errno).message(message)
    }

    /// Attach (or replace) the descriptive message.
    pub fn message(mut self, message: impl Into<Cow<'static, str>>) -> Self {
        self.message = Some(message.into());
        self
    }

    /// The errno of the last failed libc call.
    pub fn last_os_error() -> Self {
        io::Error::last_os_error().into()
    }

    /// The positive errno value.
    pub fn errno(&self) -> i32 {
        self.errno
    }

    /// The line logged where the error was detected, if any.
    pub fn msg(&self) -> Option<&str> {
        self.message.as_deref()
    }

    /// `strerror(errno)`: what systemd's `%m` expands to.
    pub fn strerror(&self) -> String {
        strerror(self.errno)
    }
}

/// `strerror(errno)` as glibc words it, without Rust's " (os error N)" suffix.
pub fn strerror(errno: i32) -> String {
    // glibc's own table: nix's descriptions differ for some errnos (EOPNOTSUPP reads
    // "Operation not supported on transport endpoint" there).
    sys::strerror(errno).unwrap_or_else(|| format!("Unknown error {errno}"))
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&strerror(self.errno))
    }
}

impl std::error::Error for Error {}

impl From<io::Error> for Error {
    fn from(e: io::Error) -> Self {
        if let Some(errno) = e.raw_os_error() {
            return Error::new(errno);
        }
        // Errors that never came from the kernel (from std's own checks or from a
        // codec's `Read` impl) have no errno; map the kinds that have an obvious one.
        let errno = match e.kind() {
            io::ErrorKind::NotFound => libc::ENOENT,
            io::ErrorKind::PermissionDenied => libc::EACCES,
            io::ErrorKind::AlreadyExists => libc::EEXIST,
            io::ErrorKind::InvalidInput => libc::EINVAL,
            io::ErrorKind::InvalidData => libc::EBADMSG,
            io::ErrorKind::UnexpectedEof => libc::EPIPE,
            io::ErrorKind::OutOfMemory => libc::ENOMEM,
            io::ErrorKind::Interrupted => libc::EINTR,
            io::ErrorKind::WriteZero => libc::EIO,
            _ => libc::EIO,
        };
        // An inner `Error` (we wrap ours into io::Error to pass them through `Read`)
        // comes back out unchanged.
        if let Some(inner) = e.get_ref().and_then(|i| i.downcast_ref::<Error>()) {
            return inner.clone();
        }
        Error::new(errno).message(e.to_string())
    }
}

impl From<Error> for io::Error {
    fn from(e: Error) -> Self {
        if e.message.is_none() {
            io::Error::from_raw_os_error(e.errno)
        } else {
            // Keep the message: it travels through `Read` impls and comes back out
            // of `From<io::Error>` above.
            let kind = io::Error::from_raw_os_error(e.errno).kind();
            io::Error::new(kind, e)
        }
    }
}

impl From<nix::errno::Errno> for Error {
    fn from(e: nix::errno::Errno) -> Self {
        Error::new(e as i32)
    }
}

/// Log at error level and evaluate to an [`Error`] carrying `errno` and the line.
///
/// The first argument is anything that converts into [`Error`]; it is converted
/// *after* the message is formatted, so the message may display it (`{}` prints `%m`).
///
/// ```
/// use systemd_import::log_error_errno;
/// use systemd_import::util::error::{Error, Result};
///
/// fn make(path: &std::path::Path) -> Result<()> {
///     std::fs::create_dir(path).map_err(|io_err| {
///         let e = Error::from(io_err);
///         log_error_errno!(e.clone(), "Failed to create directory {}: {}", path.display(), e)
///     })
/// }
/// let e = make(std::path::Path::new("/nonexistent/x")).unwrap_err();
/// assert_eq!(e.errno(), libc::ENOENT);
/// assert_eq!(e.msg(), Some("Failed to create directory /nonexistent/x: No such file or directory"));
/// ```
#[macro_export]
macro_rules! log_error_errno {
    ($err:expr, $($arg:tt)+) => {{
        let __msg = format!($($arg)+);
        ::log::error!("{}", __msg);
        $crate::util::error::Error::from($err).message(__msg)
    }};
}

/// Like [`log_error_errno!`] at warning level.
#[macro_export]
macro_rules! log_warning_errno {
    ($err:expr, $($arg:tt)+) => {{
        let __msg = format!($($arg)+);
        ::log::warn!("{}", __msg);
        $crate::util::error::Error::from($err).message(__msg)
    }};
}

/// Like [`log_error_errno!`] at debug level.
#[macro_export]
macro_rules! log_debug_errno {
    ($err:expr, $($arg:tt)+) => {{
        let __msg = format!($($arg)+);
        ::log::debug!("{}", __msg);
        $crate::util::error::Error::from($err).message(__msg)
    }};
}

/// Shorthand for an [`Error`] from a libc errno constant.
pub fn errno(e: i32) -> Error {
    Error::new(e)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_is_strerror_without_rust_suffix() {
        let e = Error::from(io::Error::from_raw_os_error(libc::ENOENT));
        assert_eq!(e.errno(), libc::ENOENT);
        assert_eq!(e.to_string(), "No such file or directory");
        // glibc's wording, which nix's table does not have for every errno.
        assert_eq!(strerror(libc::EOPNOTSUPP), "Operation not supported");
    }

    #[test]
    fn message_survives_a_trip_through_io_error() {
        let e = Error::with_message(libc::EBADMSG, "bad entry");
        let io: io::Error = e.clone().into();
        let back = Error::from(io);
        assert_eq!(back, e);
    }

    #[test]
    fn io_errors_without_errno_map_to_an_errno() {
        let e = Error::from(io::Error::new(io::ErrorKind::InvalidData, "corrupt"));
        assert_eq!(e.errno(), libc::EBADMSG);
        assert_eq!(e.msg(), Some("corrupt"));
    }
}
