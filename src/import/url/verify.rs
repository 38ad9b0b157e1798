//! `--verify=checksum|signature` (spec §5.2): check the downloaded file's SHA-256
//! against `SHA256SUMS`, and `SHA256SUMS` against its detached gpg signature.
//!
//! Both checks run on worker threads and may block. Every failure is logged here with
//! the C tool's wording (error level; gpg killed by a signal: warning; cancellation:
//! debug) and returned with its errno, so callers only propagate.
//!
//! Decisions that differ from v219 (see the README's compatibility section):
//! * Q13: `SHA256SUMS` lines may use the text-mode separator (`<hash>  <file>`) as well as
//!   the binary-mode one (`<hash> *<file>`), as systemd accepts since v234.
//! * A matching line may also end at the end of the file instead of with `\n` (systemd,
//!   to this day, requires the newline; a hand-written file without one is harmless).
//! * A URL whose last component cannot be derived at all (`/`, `?x`) is reported as
//!   "could not determine valid server-side file name" instead of "Out of memory.".
//! * gpg gets a private, empty `--homedir` under `/tmp` that is removed afterwards, as
//!   later systemd does. gpg 2.2 (Debian 12) verifies fine without one, but then it
//!   looks at root's `~/.gnupg`: with gnupg 2.4 a `common.conf` there can switch it to
//!   keyboxd, which ignores `--keyring`, and a fresh gpg 2.4 home gets such a file.
//! * gpg exiting with status 0 before it read all of `SHA256SUMS` is not trusted:
//!   `Failed to write to pipe: Broken pipe`.

use std::ffi::OsString;
use std::fs::File;
use std::io::{self, Write};
use std::os::fd::OwnedFd;
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};

use nix::errno::Errno;
use nix::fcntl::{fcntl, FcntlArg, FdFlag, OFlag};
use nix::sys::epoll::{Epoll, EpollCreateFlags, EpollEvent, EpollFlags, EpollTimeout};
use nix::sys::signal::{sigaction, SaFlags, SigAction, SigHandler, SigSet, Signal};

use crate::util::dialect::Dialect;
use crate::util::error::{Error, Result};
use crate::util::{fs, names, sys, validate};
use crate::{log_debug_errno, log_error_errno, log_warning_errno};

/// The administrator's keyring; replaces the vendor one when it exists (v219).
pub const USER_KEYRING_PATH: &str = "/etc/systemd/import-pubring.gpg";
/// The keyring shipped by the distribution.
pub const VENDOR_KEYRING_PATH: &str = "/usr/lib/systemd/import-pubring.gpg";

/// How often a running gpg is checked for cancellation (only when a flag is given).
const CANCEL_POLL_MS: u16 = 100;
/// Separators between hash and file name in `SHA256SUMS`: binary mode, text mode.
const SUMS_SEPARATORS: [&str; 2] = [" *", "  "];

/// §5.2 checksum check. `sums` = the SHA256SUMS payload, `url` = the image URL (its last
/// component, query dropped, names the file), `sha256` = lowercase hex of the bytes as
/// served.
pub fn verify_checksum(sums: &[u8], url: &str, sha256: &str) -> Result<()> {
    verify_checksum_as(sums, url, sha256, Dialect::V219)
}

/// [`verify_checksum`] with the messages of `dialect`.
pub fn verify_checksum_as(sums: &[u8], url: &str, sha256: &str, dialect: Dialect) -> Result<()> {
    let v219 = dialect == Dialect::V219;
    if sums.is_empty() {
        return Err(log_error_errno!(
            Errno::EBADMSG,
            "Checksum is empty, cannot verify."
        ));
    }
    let Some(name) = names::url_last_component(url)
        .ok()
        .filter(|n| validate::filename_is_valid(n))
    else {
        if !v219 {
            return Err(log_error_errno!(
                Errno::EBADMSG,
                "Cannot verify checksum, could not determine server-side file name."
            ));
        }
        return Err(log_error_errno!(
            Errno::EBADMSG,
            "Cannot verify checksum, could not determine valid server-side file name."
        ));
    };
    if !sums_have_line(sums, sha256, &name) {
        if !v219 {
            return Err(log_error_errno!(
                Errno::EBADMSG,
                "DOWNLOAD INVALID: Checksum of {} file did not check out, file has been tampered with.",
                name
            ));
        }
        return Err(log_error_errno!(
            Errno::EBADMSG,
            "Checksum did not check out, payload has been tempered with."
        ));
    }
    log::info!("SHA256 checksum of {url} is valid.");
    Ok(())
}

/// systemd-pull's `--verify=<hex>`: the download's SHA-256 (`sha256`, lowercase hex)
/// must be `expected`.
pub fn verify_literal(expected: &[u8; 32], url: &str, sha256: &str) -> Result<()> {
    let expected: String = expected.iter().map(|b| format!("{b:02x}")).collect();
    if expected != sha256 {
        return Err(log_error_errno!(
            Errno::EBADMSG,
            "DOWNLOAD INVALID: Checksum of {} file did not check out, file has been tampered with.",
            url
        ));
    }
    log::info!("SHA256 checksum of {url} is valid.");
    Ok(())
}

/// Whether `sums` has a line `<sha256><separator><name>`. As in the C code the line
/// must start at offset 0 or right after `\n` and end with `\n`; ending at the end of
/// the file counts too (our addition).
fn sums_have_line(sums: &[u8], sha256: &str, name: &str) -> bool {
    let line_starts = std::iter::once(0).chain(
        sums.iter()
            .enumerate()
            .filter_map(|(i, &b)| (b == b'\n').then_some(i + 1)),
    );
    let lines: Vec<Vec<u8>> = SUMS_SEPARATORS
        .iter()
        .map(|sep| [sha256.as_bytes(), sep.as_bytes(), name.as_bytes()].concat())
        .collect();
    line_starts.map(|start| &sums[start..]).any(|rest| {
        lines.iter().any(|line| {
            rest.strip_prefix(line.as_slice())
                .is_some_and(|after| after.is_empty() || after[0] == b'\n')
        })
    })
}

/// The keyring gpg is given: `test_keyring` if given (a test setting), else the v219
/// rule (§5.2): `/etc/systemd/import-pubring.gpg` if it exists, else
/// `/usr/lib/systemd/import-pubring.gpg`.
pub fn keyring_path(test_keyring: Option<&Path>) -> PathBuf {
    if let Some(path) = test_keyring {
        // gpg looks up a keyring name without a slash in its home directory.
        return std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
    }
    if Path::new(USER_KEYRING_PATH).exists() {
        PathBuf::from(USER_KEYRING_PATH)
    } else {
        PathBuf::from(VENDOR_KEYRING_PATH)
    }
}

/// §5.2 signature check: run gpg on `sums` with the detached `signature` (`None`: `sums`
/// is inline-signed, systemd-pull's `.sha256`), against `keyring` (see
/// [`keyring_path`]).
///
/// Blocks until gpg exits. When `cancel` is given it is polled every 100 ms; once set,
/// gpg is killed and reaped and ECANCELED returned.
pub fn verify_signature(
    sums: &[u8],
    signature: &[u8],
    keyring: &Path,
    cancel: Option<&AtomicBool>,
) -> Result<()> {
    verify_signature_as(sums, Some(signature), keyring, cancel, Dialect::V219)
}

/// [`verify_signature`] with the messages of `dialect`, and `signature` `None` for an
/// inline-signed `sums`.
pub fn verify_signature_as(
    sums: &[u8],
    signature: Option<&[u8]>,
    keyring: &Path,
    cancel: Option<&AtomicBool>,
    dialect: Dialect,
) -> Result<()> {
    if signature.is_some_and(<[u8]>::is_empty) {
        return Err(log_error_errno!(
            Errno::EBADMSG,
            "Signature is empty, cannot verify."
        ));
    }
    let (stdin_read, stdin_write) = nix::unistd::pipe2(OFlag::O_CLOEXEC)
        .map_err(|e| fail(e, "Failed to create pipe for gpg"))?;
    // Declared before the child so they are removed after it is killed and reaped.
    let signature_file = match signature {
        Some(signature) => {
            let mut file =
                TempSignature::create().map_err(|e| fail(e, "Failed to create temporary file"))?;
            file.file
                .write_all(signature)
                .map_err(|e| fail(e, "Failed to write to temporary file"))?;
            Some(file)
        }
        None => None,
    };
    let home = TempHome::create()
        .map_err(|e| fail(e, "Failed to create temporary home directory for gpg"))?;

    let signature_path = signature_file.as_ref().map(|f| f.path.as_path());
    let mut gpg = Gpg::spawn(&home.path, keyring, signature_path, stdin_read)?;
    let delivery = gpg.feed(stdin_write, sums, cancel)?;
    let status = gpg.wait(cancel)?;
    if let Some(signal) = status.signal() {
        return Err(log_warning_errno!(
            Errno::EPROTO,
            "gpg terminated by signal {}.",
            signal_name(signal)
        ));
    }
    match (status.code(), delivery) {
        (Some(0), Delivery::Complete) => {
            log::info!("Signature verification succeeded.");
            Ok(())
        }
        // gpg cannot have checked a signature over data it never read.
        (Some(0), Delivery::ReaderGone) => Err(fail(Errno::EPIPE, "Failed to write to pipe")),
        (code, _) => {
            if dialect == Dialect::V252 {
                return Err(log_error_errno!(
                    Errno::EBADMSG,
                    "DOWNLOAD INVALID: Signature verification failed."
                ));
            }
            log::warn!("gpg failed with error code {}.", code.unwrap_or(-1));
            Err(log_error_errno!(
                Errno::EBADMSG,
                "Signature verification failed."
            ))
        }
    }
}

/// How much of `SHA256SUMS` reached gpg.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Delivery {
    /// All of it; stdin was closed after it.
    Complete,
    /// gpg closed its stdin early (EPIPE); its exit status decides what that means.
    ReaderGone,
}

/// Log "`what`: %m" at error level and return the error.
fn fail(e: impl Into<Error>, what: &str) -> Error {
    let e = e.into();
    log_error_errno!(e.clone(), "{what}: {e}")
}

/// systemd's `signal_to_string()`: `KILL`, `TERM`, … or the number.
fn signal_name(signal: i32) -> String {
    match Signal::try_from(signal) {
        Ok(s) => s.as_str().trim_start_matches("SIG").to_string(),
        Err(_) => signal.to_string(),
    }
}

/// The detached signature, written to `/tmp/sigXXXXXX` for gpg; unlinked on drop.
struct TempSignature {
    path: PathBuf,
    file: File,
}

impl TempSignature {
    /// A new file `/tmp/sig<6 random characters>`, mode 0600, as mkostemp() makes them.
    fn create() -> io::Result<TempSignature> {
        const CHARS: &[u8; 62] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
        loop {
            let mut r = fs::random_u64();
            let suffix: String = (0..6)
                .map(|_| {
                    let c = CHARS[(r % 62) as usize] as char;
                    r /= 62;
                    c
                })
                .collect();
            let path = PathBuf::from(format!("/tmp/sig{suffix}"));
            // std opens with O_CLOEXEC: gpg does not inherit it by accident.
            let opened = std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&path);
            match opened {
                Ok(file) => return Ok(TempSignature { path, file }),
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(e),
            }
        }
    }
}

impl Drop for TempSignature {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// gpg's private home directory, `/tmp/gpghomeXXXXXX`; removed with its contents on drop.
struct TempHome {
    path: PathBuf,
}

impl TempHome {
    fn create() -> nix::Result<TempHome> {
        Ok(TempHome {
            path: nix::unistd::mkdtemp("/tmp/gpghomeXXXXXX")?,
        })
    }
}

impl Drop for TempHome {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

/// A running gpg; killed (SIGKILL) and reaped on drop unless it was waited for.
struct Gpg {
    child: Child,
    /// Becomes readable when gpg exits; `None` where pidfd_open() is unavailable.
    pidfd: Option<OwnedFd>,
    /// Set once the child was reaped.
    status: Option<ExitStatus>,
}

impl Gpg {
    fn spawn(home: &Path, keyring: &Path, signature: Option<&Path>, stdin: OwnedFd) -> Result<Gpg> {
        let mut cmd = Command::new("gpg");
        cmd.args([
            "--no-options",
            "--no-default-keyring",
            "--no-auto-key-locate",
            "--no-auto-check-trustdb",
            "--batch",
            "--trust-model=always",
        ])
        .arg(prefixed("--homedir=", home))
        .arg(prefixed("--keyring=", keyring))
        .arg("--verify")
        .args(signature)
        .arg("-")
        .stdin(Stdio::from(stdin))
        .stdout(Stdio::null())
        .stderr(Stdio::inherit());
        let parent = nix::unistd::getpid();
        // SAFETY: the closure runs between fork and exec and only makes
        // async-signal-safe system calls (sigaction, sigprocmask, prctl, getppid); it
        // allocates nothing and touches no locks.
        unsafe {
            cmd.pre_exec(move || reset_child(parent));
        }
        let child = cmd.spawn().map_err(|e| {
            let e = Error::from(e);
            match e.errno() {
                libc::EAGAIN | libc::ENOMEM | libc::ENOSYS => fail(e, "Failed to fork off gpg"),
                _ => fail(e, "Failed to execute gpg"),
            }
        })?;
        let pidfd = pidfd_open(child.id());
        Ok(Gpg {
            child,
            pidfd,
            status: None,
        })
    }

    /// Write `data` to gpg's stdin and close it. Errors end the verification: cancelled,
    /// or a write error other than EPIPE.
    fn feed(
        &mut self,
        stdin: OwnedFd,
        data: &[u8],
        cancel: Option<&AtomicBool>,
    ) -> Result<Delivery> {
        let write_failed = |e: Errno| fail(e, "Failed to write to pipe");
        // Non-blocking, so a gpg that never reads cannot make us miss a cancellation.
        fcntl(&stdin, FcntlArg::F_SETFL(OFlag::O_NONBLOCK)).map_err(write_failed)?;
        let epoll = Epoll::new(EpollCreateFlags::EPOLL_CLOEXEC).map_err(write_failed)?;
        epoll
            .add(&stdin, EpollEvent::new(EpollFlags::EPOLLOUT, 0))
            .map_err(write_failed)?;
        let mut written = 0;
        while written < data.len() {
            self.check_cancelled(cancel)?;
            match nix::unistd::write(&stdin, &data[written..]) {
                Ok(n) => written += n,
                Err(Errno::EINTR) => {}
                Err(Errno::EAGAIN) => {
                    let mut events = [EpollEvent::empty()];
                    match epoll.wait(&mut events, poll_timeout(cancel)) {
                        Ok(_) | Err(Errno::EINTR) => {}
                        Err(e) => return Err(write_failed(e)),
                    }
                }
                Err(Errno::EPIPE) => return Ok(Delivery::ReaderGone),
                Err(e) => return Err(write_failed(e)),
            }
        }
        Ok(Delivery::Complete)
    }

    /// Wait for gpg to exit (killing it if `cancel` gets set).
    fn wait(&mut self, cancel: Option<&AtomicBool>) -> Result<ExitStatus> {
        let waited = |e: io::Error| fail(e, "Failed to wait for gpg");
        if cancel.is_none() {
            let status = self.child.wait().map_err(waited)?;
            self.status = Some(status);
            return Ok(status);
        }
        let epoll = Epoll::new(EpollCreateFlags::EPOLL_CLOEXEC)
            .map_err(|e| fail(e, "Failed to wait for gpg"))?;
        if let Some(pidfd) = &self.pidfd {
            epoll
                .add(pidfd, EpollEvent::new(EpollFlags::EPOLLIN, 0))
                .map_err(|e| fail(e, "Failed to wait for gpg"))?;
        }
        loop {
            self.check_cancelled(cancel)?;
            if let Some(status) = self.child.try_wait().map_err(waited)? {
                self.status = Some(status);
                return Ok(status);
            }
            // Wakes up when gpg exits (pidfd) or after the cancellation poll interval.
            let mut events = [EpollEvent::empty()];
            match epoll.wait(&mut events, poll_timeout(cancel)) {
                Ok(_) | Err(Errno::EINTR) => {}
                Err(e) => return Err(fail(e, "Failed to wait for gpg")),
            }
        }
    }

    /// ECANCELED (after killing and reaping gpg) once the flag is set.
    fn check_cancelled(&mut self, cancel: Option<&AtomicBool>) -> Result<()> {
        if cancel.is_some_and(|flag| flag.load(Ordering::Relaxed)) {
            self.kill_and_reap();
            return Err(log_debug_errno!(
                Errno::ECANCELED,
                "Signature verification cancelled."
            ));
        }
        Ok(())
    }

    fn kill_and_reap(&mut self) {
        if self.status.is_none() {
            let _ = self.child.kill();
            self.status = self.child.wait().ok();
        }
    }
}

impl Drop for Gpg {
    fn drop(&mut self) {
        self.kill_and_reap();
    }
}

/// Epoll timeout while gpg runs: forever without a cancellation flag.
fn poll_timeout(cancel: Option<&AtomicBool>) -> EpollTimeout {
    match cancel {
        Some(_) => EpollTimeout::from(CANCEL_POLL_MS),
        None => EpollTimeout::NONE,
    }
}

/// `prefix` followed by `path`, for `--option=<path>` arguments (paths need not be UTF-8).
fn prefixed(prefix: &str, path: &Path) -> OsString {
    let mut arg = OsString::from(prefix);
    arg.push(path.as_os_str());
    arg
}

/// In the child before exec: default signal dispositions (exec keeps ignored signals
/// ignored), an empty signal mask, stderr kept across exec, and SIGTERM when the parent
/// thread goes away.
fn reset_child(parent: nix::unistd::Pid) -> io::Result<()> {
    let default = SigAction::new(SigHandler::SigDfl, SaFlags::empty(), SigSet::empty());
    for signal in Signal::iterator() {
        if signal == Signal::SIGKILL || signal == Signal::SIGSTOP {
            continue;
        }
        // SAFETY: installing SIG_DFL replaces no handler that could run meanwhile and
        // needs no handler code; failures (none are expected) are ignored.
        let _ = unsafe { sigaction(signal, &default) };
    }
    nix::sys::signal::sigprocmask(
        nix::sys::signal::SigmaskHow::SIG_SETMASK,
        Some(&nix::sys::signal::SigSet::empty()),
        None,
    )?;
    // PDEATHSIG follows the thread that forked: the worker thread, which blocks until
    // gpg is reaped, so it cannot fire early.
    // stdin and stdout were dup2()ed (which clears CLOEXEC); stderr is inherited as is.
    // An fd 2 that is not open fails with EBADF, which we ignore.
    let _ = fcntl(io::stderr(), FcntlArg::F_SETFD(FdFlag::empty()));
    nix::sys::prctl::set_pdeathsig(Signal::SIGTERM)?;
    if nix::unistd::getppid() != parent {
        // The parent died before prctl(): the signal will never come.
        return Err(io::Error::from_raw_os_error(libc::ESRCH));
    }
    Ok(())
}

/// A pidfd for our (unreaped) child, so it cannot name another process; `None` on
/// kernels without pidfd_open (< 5.3).
fn pidfd_open(pid: u32) -> Option<OwnedFd> {
    sys::pidfd_open(pid as libc::pid_t).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    const HASH: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    #[test]
    fn a_sums_line_must_be_a_whole_line() {
        let line = format!("{HASH} *img\n");
        assert!(sums_have_line(line.as_bytes(), HASH, "img"));
        // Only as a suffix of a longer name or hash: no.
        assert!(!sums_have_line(
            format!("{HASH} *img.old\n").as_bytes(),
            HASH,
            "img"
        ));
        assert!(!sums_have_line(
            format!("0{HASH} *img\n").as_bytes(),
            HASH,
            "img"
        ));
        // Preceded by another line: yes; with a trailing CR: no (as in C).
        assert!(sums_have_line(
            format!("x\n{HASH}  img\n").as_bytes(),
            HASH,
            "img"
        ));
        assert!(!sums_have_line(
            format!("{HASH} *img\r\n").as_bytes(),
            HASH,
            "img"
        ));
        // Ending at the end of the file.
        assert!(sums_have_line(
            format!("x\n{HASH} *img").as_bytes(),
            HASH,
            "img"
        ));
        // Single-space separator (linuxcontainers.org style) is not accepted.
        assert!(!sums_have_line(
            format!("{HASH} img\n").as_bytes(),
            HASH,
            "img"
        ));
    }

    #[test]
    fn signal_names_drop_the_sig_prefix() {
        assert_eq!(signal_name(libc::SIGKILL), "KILL");
        assert_eq!(signal_name(libc::SIGTERM), "TERM");
    }
}
