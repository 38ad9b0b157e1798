//! The progress socket: the `NOTIFY_SOCKET` the workers report `X_IMPORT_PROGRESS=` to.
//!
//! An `AF_UNIX` datagram socket with `SO_PASSCRED`, bound to an abstract address the
//! kernel picks (`@xxxxx`), as systemd-importd does since v258 (v252–v257 bound the fixed
//! path `/run/systemd/import/notify`; an abstract socket needs no directory, leaves
//! nothing behind, and lets several daemons run side by side, e.g. in tests).
//!
//! A datagram counts only when it carries the sender's credentials and comes from a
//! transfer's worker; datagrams with file descriptors are refused (the fds are closed),
//! truncated ones too. Of the payload only the first `X_IMPORT_PROGRESS=` line (at the
//! start or after a newline) is read, as `NN%` (what v255+ workers send and v240+ daemons
//! require) or a bare `NN` (what v219–v254 workers, ours included, send), 0 to 100.
//!
//! Our workers add fields of their own to the same datagram (bytes done and expected, the
//! rate, per-layer state: the format is in [`crate::util::progress`]); they are read into
//! [`Report::details`] and published on this project's interface
//! ([`crate::bus::import1::EXT_TRANSFER_INTERFACE`]). Unknown fields are ignored.

use std::io::IoSliceMut;
use std::os::fd::{AsRawFd, OwnedFd};

use nix::sys::socket::{
    self, sockopt, AddressFamily, ControlMessageOwned, MsgFlags, SockFlag, SockType, UnixAddr,
};

use crate::util::error::{Error, Result};
use crate::util::progress::{self as fields, Details};

/// The largest datagram read whole (systemd's `NOTIFY_BUFFER_MAX`, PIPE_BUF).
const BUFFER_MAX: usize = 4096;

/// What a datagram says, as far as we read it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Report {
    /// `X_IMPORT_PROGRESS=`: `Some(Ok(percent))`, or `Some(Err(text))` when malformed.
    pub percent: Option<Result<u32, String>>,
    /// The extended fields, when the datagram has any.
    pub details: Option<Details>,
}

/// Parse a datagram's text.
pub fn parse(text: &str) -> Report {
    let value = text
        .split('\n')
        .find_map(|line| line.strip_prefix("X_IMPORT_PROGRESS="));
    Report {
        percent: value.map(|v| parse_percent(v).ok_or_else(|| v.to_string())),
        details: fields::parse(text),
    }
}

/// `NN%` or `NN`, an integer from 0 to 100.
fn parse_percent(v: &str) -> Option<u32> {
    let digits = v.strip_suffix('%').unwrap_or(v);
    if digits.is_empty() || digits.len() > 3 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse::<u32>().ok().filter(|p| *p <= 100)
}

/// A datagram that passed the socket-level checks.
#[derive(Debug, PartialEq, Eq)]
pub struct Datagram {
    /// The sender's pid, from its credentials.
    pub pid: i32,
    pub text: String,
}

/// The daemon's progress socket.
pub struct NotifySocket {
    fd: OwnedFd,
    /// `@name`, for the workers' `NOTIFY_SOCKET`.
    address: String,
}

impl NotifySocket {
    /// A new socket on an address the kernel picks.
    pub fn bind() -> Result<NotifySocket> {
        let fd = socket::socket(
            AddressFamily::Unix,
            SockType::Datagram,
            SockFlag::SOCK_CLOEXEC | SockFlag::SOCK_NONBLOCK,
            None,
        )?;
        // An address of just the family asks the kernel for an unused abstract name.
        socket::bind(fd.as_raw_fd(), &UnixAddr::new_unnamed())?;
        socket::setsockopt(&fd, sockopt::PassCred, &true)?;
        let addr: UnixAddr = socket::getsockname(fd.as_raw_fd())?;
        let name = addr
            .as_abstract()
            .ok_or_else(|| Error::with_message(libc::EADDRNOTAVAIL, "no abstract address"))?;
        Ok(NotifySocket {
            address: format!("@{}", String::from_utf8_lossy(name)),
            fd,
        })
    }

    pub fn address(&self) -> &str {
        &self.address
    }

    pub fn fd(&self) -> &OwnedFd {
        &self.fd
    }

    /// Take one datagram. `Ok(None)`: nothing queued, or a datagram refused (and logged).
    pub fn receive(&self) -> Result<Option<Datagram>> {
        let mut buf = [0u8; BUFFER_MAX];
        let mut iov = [IoSliceMut::new(&mut buf)];
        let mut cmsg = nix::cmsg_space!(libc::ucred, [std::os::fd::RawFd; 16]);
        let msg = match socket::recvmsg::<()>(
            self.fd.as_raw_fd(),
            &mut iov,
            Some(&mut cmsg),
            MsgFlags::MSG_DONTWAIT | MsgFlags::MSG_CMSG_CLOEXEC,
        ) {
            Ok(m) => m,
            Err(nix::errno::Errno::EAGAIN) | Err(nix::errno::Errno::EINTR) => return Ok(None),
            Err(e) => return Err(e.into()),
        };
        let mut pid = None;
        let mut had_fds = msg.flags.contains(MsgFlags::MSG_CTRUNC);
        for c in msg.cmsgs()? {
            match c {
                ControlMessageOwned::ScmCredentials(cred) => pid = Some(cred.pid()),
                ControlMessageOwned::ScmRights(fds) => {
                    had_fds = true;
                    for fd in fds {
                        let _ = nix::unistd::close(fd);
                    }
                }
                _ => {}
            }
        }
        let bytes = msg.bytes;
        let truncated = msg.flags.contains(MsgFlags::MSG_TRUNC);
        if had_fds {
            log::warn!("Somebody sent us unexpected fds, ignoring.");
            return Ok(None);
        }
        if truncated {
            log::warn!("Got overly long notification datagram, ignoring.");
            return Ok(None);
        }
        let Some(pid) = pid.filter(|p| *p > 0) else {
            log::warn!("Got notification datagram lacking credential information, ignoring.");
            return Ok(None);
        };
        Ok(Some(Datagram {
            pid,
            text: String::from_utf8_lossy(&buf[..bytes]).into_owned(),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_progress_formats_are_read() {
        assert_eq!(parse("X_IMPORT_PROGRESS=42%").percent, Some(Ok(42)));
        assert_eq!(parse("X_IMPORT_PROGRESS=42").percent, Some(Ok(42)));
        assert_eq!(
            parse("READY=1\nX_IMPORT_PROGRESS=100%\n").percent,
            Some(Ok(100))
        );
        assert_eq!(parse("X_IMPORT_PROGRESS=0").percent, Some(Ok(0)));
        for bad in ["101%", "-1", "4 2", "", "%", "1.5%", "0x10", "0100%"] {
            assert_eq!(
                parse(&format!("X_IMPORT_PROGRESS={bad}")).percent,
                Some(Err(bad.to_string())),
                "{bad}"
            );
        }
        // Only a line that starts with the key counts, and only the first one.
        assert_eq!(parse("XX_IMPORT_PROGRESS=5").percent, None);
        assert_eq!(parse("A=1 X_IMPORT_PROGRESS=5").percent, None);
        assert_eq!(
            parse("X_IMPORT_PROGRESS=7\nX_IMPORT_PROGRESS=8").percent,
            Some(Ok(7))
        );
        // Unknown fields are ignored; the extended ones are read beside the percentage.
        assert_eq!(parse("X_IMPORT_BYTES=100\n"), Report::default());
        let r = parse("X_IMPORT_PROGRESS=3\nX_IMPORT_PROGRESS_BYTES=5/10\n");
        assert_eq!(r.percent, Some(Ok(3)));
        assert_eq!(r.details.unwrap().bytes, Some((5, Some(10))));
    }

    #[test]
    fn datagrams_carry_the_senders_pid() {
        let sock = NotifySocket::bind().unwrap();
        assert!(sock.address().starts_with('@'));
        assert_eq!(sock.receive().unwrap(), None);
        crate::util::notify::notify_to(std::ffi::OsStr::new(sock.address()), "X=1").unwrap();
        let d = sock.receive().unwrap().unwrap();
        assert_eq!(d.pid, std::process::id() as i32);
        assert_eq!(d.text, "X=1");
    }
}
