//! `sd_notify()`: state messages to the service manager or to systemd-importd.
//!
//! systemd-importd (v219) starts its worker with `NOTIFY_SOCKET` pointing at its own
//! datagram socket and reads `X_IMPORT_PROGRESS=N` from it (spec §6.6). Without
//! `NOTIFY_SOCKET` nothing is sent.

use std::os::unix::ffi::OsStrExt;
use std::os::unix::net::{SocketAddr, UnixDatagram};

use crate::util::error::{Error, Result};

/// Send `state` (newline-separated `KEY=VALUE` lines) to `$NOTIFY_SOCKET`, if set.
/// Returns whether something was sent. Errors are for the caller to ignore or log.
pub fn notify(state: &str) -> Result<bool> {
    let Some(path) = std::env::var_os("NOTIFY_SOCKET").filter(|p| !p.is_empty()) else {
        return Ok(false);
    };
    let bytes = path.as_bytes();
    let addr = match bytes.first() {
        // Linux abstract namespace, written with a leading '@'.
        Some(b'@') => {
            use std::os::linux::net::SocketAddrExt;
            SocketAddr::from_abstract_name(&bytes[1..]).map_err(Error::from)?
        }
        Some(b'/') => SocketAddr::from_pathname(&path).map_err(Error::from)?,
        _ => return Err(Error::new(libc::EAFNOSUPPORT)),
    };
    let sock = UnixDatagram::unbound().map_err(Error::from)?;
    sock.send_to_addr(state.as_bytes(), &addr).map_err(Error::from)?;
    Ok(true)
}

/// Report overall progress (0–100) the way systemd-importd expects it. Sends only when
/// the value changed since the last call made through `last`.
pub fn progress(last: &mut Option<u32>, percent: u32) {
    let percent = percent.min(100);
    if *last == Some(percent) {
        return;
    }
    *last = Some(percent);
    if let Err(e) = notify(&format!("X_IMPORT_PROGRESS={percent}")) {
        log::debug!("Failed to send progress notification: {e}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn progress_reaches_the_notify_socket_once_per_value() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify");
        let server = UnixDatagram::bind(&path).unwrap();
        server.set_nonblocking(true).unwrap();
        // The only test in this binary that touches NOTIFY_SOCKET.
        std::env::set_var("NOTIFY_SOCKET", &path);
        let mut last = None;
        progress(&mut last, 5);
        progress(&mut last, 5);
        progress(&mut last, 150);
        std::env::remove_var("NOTIFY_SOCKET");
        let mut buf = [0u8; 64];
        let n = server.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"X_IMPORT_PROGRESS=5");
        let n = server.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"X_IMPORT_PROGRESS=100");
        assert!(server.recv(&mut buf).is_err(), "the repeated 5 was not sent again");
        assert!(!notify("X=1").unwrap(), "nothing is sent without NOTIFY_SOCKET");
    }
}
