//! The worker process of a transfer: its command line, and starting it.
//!
//! The command line is the one modern systemd-importd builds (modern-systemd.md §3.2),
//! with two choices that give Debian 12's machinectl the behaviour of a systemd 252
//! daemon:
//! * the legacy `PullTar`/`PullRaw` pass no `--keep-download=` (the worker's default keeps
//!   the downloaded file, as v252 did; a v256+ daemon passes `--keep-download=no`);
//! * the `…Ex` members pass `--keep-download=no` only when class `machine` comes without
//!   the keep-download flag, and `--keep-download=yes` only when another class has it
//!   (each class's default is then the worker's).
//!
//! `--class` is passed only for a class other than `machine`, `--read-only` only with its
//! flag. pull-oci runs verb `oci`; the seed's pull-dkr runs `dkr --verify no
//! --dkr-index-url URL NAME:TAG`.
//!
//! Imports run verb `tar`, `raw` (systemd-import) or `run` (systemd-import-fs) with `-`
//! as the source, exports `tar` or `raw` (systemd-export) with `--format` if one was
//! asked for and no source (modern-systemd.md §3.2).
//!
//! The worker runs with stdin on /dev/null (an import: the caller's fd), stdout (an
//! export: the caller's fd) and stderr on one pipe whose other end
//! the daemon reads (the log relay), `SYSTEMD_LOG_TARGET=console-prefixed` so each line
//! carries its priority, `NOTIFY_SOCKET` naming the daemon's progress socket, and SIGTERM
//! as its parent-death signal. The rest of the daemon's environment is inherited (proxy
//! and CA settings reach the worker that way), except the service manager's own
//! notification and socket-activation variables.

use std::os::fd::OwnedFd;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};

use nix::fcntl::OFlag;
use nix::sys::signal::{sigprocmask, SigHandler, SigSet, SigmaskHow, Signal};

use super::request::{
    ImageClass, PullRequest, TransferType, FLAG_FORCE, FLAG_KEEP_DOWNLOAD, FLAG_READ_ONLY,
};
use crate::util::error::{Error, Result};

/// Variables of the service manager that are the daemon's, not the worker's.
const NOT_INHERITED: [&str; 5] = [
    "WATCHDOG_USEC",
    "WATCHDOG_PID",
    "LISTEN_FDS",
    "LISTEN_PID",
    "LISTEN_FDNAMES",
];

/// The worker's arguments after argv[0].
pub fn arguments(req: &PullRequest) -> Vec<String> {
    let verb = match req.kind {
        TransferType::PullTar | TransferType::ImportTar | TransferType::ExportTar => "tar",
        TransferType::PullRaw | TransferType::ImportRaw | TransferType::ExportRaw => "raw",
        TransferType::PullOci => "oci",
        TransferType::PullDkr => "dkr",
        TransferType::ImportFs => "run",
    };
    let mut argv = vec![verb.to_string()];
    if let Some(verify) = req.verify {
        argv.extend(["--verify".to_string(), verify.as_str().to_string()]);
    }
    if req.class != ImageClass::Machine {
        argv.extend(["--class".to_string(), req.class.as_str().to_string()]);
    }
    let url_pull = matches!(req.kind, TransferType::PullTar | TransferType::PullRaw);
    if url_pull && !req.legacy {
        let keep = req.has(FLAG_KEEP_DOWNLOAD);
        match (req.class == ImageClass::Machine, keep) {
            (true, false) => argv.push("--keep-download=no".into()),
            (false, true) => argv.push("--keep-download=yes".into()),
            _ => {}
        }
    }
    if req.has(FLAG_FORCE) {
        argv.push("--force".into());
    }
    if req.has(FLAG_READ_ONLY) {
        argv.push("--read-only".into());
    }
    if let Some(format) = &req.format {
        argv.extend(["--format".to_string(), format.clone()]);
    }
    if let Some(index) = &req.dkr_index_url {
        argv.extend(["--dkr-index-url".to_string(), index.clone()]);
    }
    // An import reads stdin ("-"); an export names no source.
    if req.kind.is_import() {
        argv.push("-".into());
    } else if !req.kind.is_export() {
        argv.push(req.remote.clone());
    }
    if let Some(local) = &req.local {
        argv.push(local.clone());
    }
    argv
}

/// The caller's fd of an import or export: the worker's stdin or stdout.
#[derive(Debug)]
pub enum Passed {
    None,
    Stdin(OwnedFd),
    Stdout(OwnedFd),
}

/// Start `program` with `args`, with `passed` as its stdin or stdout; returns the child
/// and the read end of its output pipe (non-blocking, close-on-exec).
pub fn spawn(
    program: &Path,
    args: &[String],
    notify_socket: &str,
    passed: Passed,
) -> Result<(Child, OwnedFd)> {
    let (read, write) = nix::unistd::pipe2(OFlag::O_CLOEXEC)?;
    nix::fcntl::fcntl(&read, nix::fcntl::FcntlArg::F_SETFL(OFlag::O_NONBLOCK))?;
    let stderr = write.try_clone().map_err(Error::from)?;
    let (stdin, stdout) = match passed {
        Passed::None => (Stdio::null(), Stdio::from(write)),
        Passed::Stdin(fd) => (Stdio::from(fd), Stdio::from(write)),
        Passed::Stdout(fd) => {
            drop(write);
            (Stdio::null(), Stdio::from(fd))
        }
    };
    let mut cmd = Command::new(program);
    cmd.args(args)
        .stdin(stdin)
        .stdout(stdout)
        .stderr(Stdio::from(stderr))
        .env("SYSTEMD_LOG_TARGET", "console-prefixed")
        .env("NOTIFY_SOCKET", notify_socket);
    for var in NOT_INHERITED {
        cmd.env_remove(var);
    }
    // SAFETY: the closure runs in the child between fork and exec and only makes system
    // calls (sigaction, sigprocmask, prctl), which are async-signal-safe; it allocates
    // nothing and takes no locks.
    unsafe {
        cmd.pre_exec(|| {
            reset_signals();
            nix::sys::prctl::set_pdeathsig(Signal::SIGTERM).map_err(std::io::Error::from)
        });
    }
    let child = cmd.spawn().map_err(Error::from)?;
    Ok((child, read))
}

/// In the child before exec: every signal back to its default action and none blocked
/// (systemd's FORK_RESET_SIGNALS). std's `Command` leaves the mask alone, and the daemon
/// blocks SIGCHLD, SIGTERM and SIGINT for its signalfds: a worker inheriting that mask
/// would never see the SIGTERM of a cancel. Only async-signal-safe system calls.
fn reset_signals() {
    for signal in Signal::iterator() {
        if matches!(signal, Signal::SIGKILL | Signal::SIGSTOP) {
            continue;
        }
        // SAFETY: installing SIG_DFL replaces no handler we rely on (this is the child
        // about to exec) and is async-signal-safe.
        let _ = unsafe { nix::sys::signal::signal(signal, SigHandler::SigDfl) };
    }
    let _ = sigprocmask(SigmaskHow::SIG_SETMASK, Some(&SigSet::empty()), None);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::importd::request::Verify;

    fn request(kind: TransferType, class: ImageClass, flags: u64, legacy: bool) -> PullRequest {
        PullRequest {
            kind,
            remote: "https://h/i.tar".into(),
            local: Some("img".into()),
            class,
            verify: Some(Verify::Checksum),
            flags,
            legacy,
            dkr_index_url: None,
            format: None,
        }
    }

    fn line(req: &PullRequest) -> String {
        arguments(req).join(" ")
    }

    #[test]
    fn legacy_pulls_leave_keep_download_to_the_worker() {
        let r = request(TransferType::PullTar, ImageClass::Machine, FLAG_FORCE, true);
        assert_eq!(
            line(&r),
            "tar --verify checksum --force https://h/i.tar img"
        );
        let mut r = request(TransferType::PullRaw, ImageClass::Machine, 0, true);
        r.local = None;
        assert_eq!(line(&r), "raw --verify checksum https://h/i.tar");
    }

    #[test]
    fn ex_pulls_pass_class_keep_download_and_read_only_as_modern_importd() {
        let cases = [
            (
                ImageClass::Machine,
                0,
                "tar --verify checksum --keep-download=no https://h/i.tar img",
            ),
            (
                ImageClass::Machine,
                FLAG_KEEP_DOWNLOAD,
                "tar --verify checksum https://h/i.tar img",
            ),
            (
                ImageClass::Sysext,
                0,
                "tar --verify checksum --class sysext https://h/i.tar img",
            ),
            (
                ImageClass::Portable,
                FLAG_KEEP_DOWNLOAD | FLAG_READ_ONLY | FLAG_FORCE,
                "tar --verify checksum --class portable --keep-download=yes --force \
                 --read-only https://h/i.tar img",
            ),
        ];
        for (class, flags, want) in cases {
            assert_eq!(
                line(&request(TransferType::PullTar, class, flags, false)),
                want
            );
        }
        let raw = request(
            TransferType::PullRaw,
            ImageClass::Confext,
            FLAG_READ_ONLY,
            false,
        );
        assert_eq!(
            line(&raw),
            "raw --verify checksum --class confext --read-only https://h/i.tar img"
        );
    }

    #[test]
    fn import_and_export_command_lines() {
        let mut r = request(
            TransferType::ImportTar,
            ImageClass::Machine,
            FLAG_FORCE,
            false,
        );
        r.verify = None;
        assert_eq!(line(&r), "tar --force - img");
        r.kind = TransferType::ImportFs;
        r.flags = FLAG_READ_ONLY;
        r.class = ImageClass::Sysext;
        assert_eq!(line(&r), "run --class sysext --read-only - img");
        r.kind = TransferType::ExportRaw;
        r.flags = 0;
        r.class = ImageClass::Machine;
        r.format = Some("xz".into());
        assert_eq!(line(&r), "raw --format xz img");
        r.format = None;
        r.kind = TransferType::ExportTar;
        assert_eq!(line(&r), "tar img");
    }

    #[test]
    fn oci_and_dkr_command_lines() {
        let mut oci = request(
            TransferType::PullOci,
            ImageClass::Machine,
            FLAG_FORCE,
            false,
        );
        oci.verify = None;
        oci.remote = "quay.io/a/b:1".into();
        oci.local = None;
        assert_eq!(line(&oci), "oci --force quay.io/a/b:1");
        oci.class = ImageClass::Portable;
        oci.flags = FLAG_READ_ONLY | FLAG_KEEP_DOWNLOAD;
        assert_eq!(line(&oci), "oci --class portable --read-only quay.io/a/b:1");
        let mut dkr = request(TransferType::PullDkr, ImageClass::Machine, 0, true);
        dkr.verify = Some(Verify::No);
        dkr.remote = "library/debian:12".into();
        dkr.dkr_index_url = Some("https://index.example".into());
        dkr.local = None;
        assert_eq!(
            line(&dkr),
            "dkr --verify no --dkr-index-url https://index.example library/debian:12"
        );
    }
}
