//! `sd_notify()`: state messages to the service manager or to systemd-importd.
//!
//! systemd-importd (v219) starts its worker with `NOTIFY_SOCKET` pointing at its own
//! datagram socket and reads `X_IMPORT_PROGRESS=N` from it (spec §6.6); our workers add
//! the extended fields of [`crate::util::progress`] to the same datagram. Without
//! `NOTIFY_SOCKET` nothing is sent.

use std::os::unix::ffi::OsStrExt;
use std::os::unix::net::{SocketAddr, UnixDatagram};

use crate::util::error::{Error, Result};
use crate::util::progress::{self, Details};

/// Send `state` (newline-separated `KEY=VALUE` lines) to `$NOTIFY_SOCKET`, if set.
/// Returns whether something was sent. Errors are for the caller to ignore or log.
pub fn notify(state: &str) -> Result<bool> {
    match std::env::var_os("NOTIFY_SOCKET").filter(|p| !p.is_empty()) {
        Some(path) => notify_to(&path, state).map(|()| true),
        None => Ok(false),
    }
}

/// Send `state` to the notification socket at `path` (`@name` for an abstract socket).
pub fn notify_to(path: &std::ffi::OsStr, state: &str) -> Result<()> {
    let bytes = path.as_bytes();
    let addr = match bytes.first() {
        // Linux abstract namespace, written with a leading '@'.
        Some(b'@') => {
            use std::os::linux::net::SocketAddrExt;
            SocketAddr::from_abstract_name(&bytes[1..]).map_err(Error::from)?
        }
        Some(b'/') => SocketAddr::from_pathname(path).map_err(Error::from)?,
        _ => return Err(Error::new(libc::EAFNOSUPPORT)),
    };
    let sock = UnixDatagram::unbound().map_err(Error::from)?;
    sock.send_to_addr(state.as_bytes(), &addr)
        .map_err(Error::from)?;
    Ok(())
}

/// What [`progress`] sent last: the percentage and the extended fields.
pub type LastProgress = Option<(u32, Details)>;

/// Report overall progress (0–100) the way systemd-importd expects it, with the extended
/// fields of `details` in the same datagram. Sends only when something changed since
/// the last call made through `last`.
pub fn progress(last: &mut LastProgress, percent: u32, details: &Details) {
    if let Some(msg) = progress_message(last, percent, details) {
        if let Err(e) = notify(&msg) {
            log::debug!("Failed to send progress notification: {e}");
        }
    }
}

/// The message [`progress`] sends, or `None` when nothing changed. `X_IMPORT_PROGRESS=`
/// is sent once per value, as v219 does; new details alone go out without it (systemd's
/// daemons ignore a datagram without that line, ours reads the details).
fn progress_message(last: &mut LastProgress, percent: u32, details: &Details) -> Option<String> {
    let percent = percent.min(100);
    let (same_percent, same_details) = match last.as_ref() {
        Some((p, d)) => (*p == percent, d == details),
        None => (false, false),
    };
    if same_percent && same_details {
        return None;
    }
    *last = Some((percent, details.clone()));
    if same_percent {
        let text = progress::format("", details);
        return Some(text.trim_start_matches('\n').to_string());
    }
    Some(progress::format(
        &format!("X_IMPORT_PROGRESS={percent}"),
        details,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn progress_messages_are_sent_once_per_value_and_capped() {
        let mut last = None;
        let none = Details::default();
        assert_eq!(
            progress_message(&mut last, 5, &none).as_deref(),
            Some("X_IMPORT_PROGRESS=5")
        );
        assert_eq!(progress_message(&mut last, 5, &none), None);
        assert_eq!(
            progress_message(&mut last, 150, &none).as_deref(),
            Some("X_IMPORT_PROGRESS=100")
        );
        // New details alone are worth a datagram, without the percentage line.
        let bytes = Details {
            bytes: Some((1, Some(2))),
            ..Details::default()
        };
        assert_eq!(
            progress_message(&mut last, 100, &bytes).as_deref(),
            Some("X_IMPORT_PROGRESS_BYTES=1/2")
        );
        assert_eq!(progress_message(&mut last, 100, &bytes), None);
        // A new percentage carries the details along.
        let mut last = None;
        assert_eq!(
            progress_message(&mut last, 7, &bytes).as_deref(),
            Some("X_IMPORT_PROGRESS=7\nX_IMPORT_PROGRESS_BYTES=1/2")
        );
    }

    #[test]
    fn messages_reach_path_and_abstract_sockets() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify");
        let server = UnixDatagram::bind(&path).unwrap();
        notify_to(path.as_os_str(), "X_IMPORT_PROGRESS=7").unwrap();
        let mut buf = [0u8; 64];
        let n = server.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"X_IMPORT_PROGRESS=7");

        use std::os::linux::net::SocketAddrExt;
        let name = format!("systemd-import-test-{}", std::process::id());
        let addr = SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
        let server = UnixDatagram::bind_addr(&addr).unwrap();
        notify_to(std::ffi::OsStr::new(&format!("@{name}")), "READY=1").unwrap();
        let n = server.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"READY=1");
        assert!(notify_to(std::ffi::OsStr::new("relative"), "X=1").is_err());
    }
}
