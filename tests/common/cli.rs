//! Running the binary under test: capture its output, watch its stderr while it runs, signal it,
//! and check what it left behind in an image root.
//!
//! ```ignore
//! let root = TempRoot::new();
//! let mut cmd = systemd_import();
//! cmd.args(["pull-tar", &url, "img"]).arg(format!("--image-root={}", root.path().display()));
//! let mut run = spawn_watch(&mut cmd);
//! run.wait_for_stderr_line(|l| l.contains("Downloading"), Duration::from_secs(30));
//! run.signal(Signal::SIGINT);
//! let out = run.wait();
//! assert_eq!(out.status, libc::EINTR);
//! assert!(root.list_all().is_empty());
//! ```

use std::fs;
use std::io::{BufRead, BufReader, Read};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::sys::wait::{waitid, Id, WaitPidFlag};
use nix::unistd::Pid;

use super::http::{lock, wait_until};

/// How long [`Watched::wait`] lets a process run before killing it and failing the test: a
/// safety net against hangs, not a performance bound.
const WAIT_DEADLINE: Duration = Duration::from_secs(300);

/// How long the output pipes may stay open after the process exited.
const OUTPUT_EOF_DEADLINE: Duration = Duration::from_secs(10);

/// Environment variables that would change what the program under test logs or how it connects;
/// removed by [`systemd_import`] so every test starts from the defaults.
const SCRUBBED_ENV: [&str; 11] = [
    // CA settings of the machine: curl's CURL_CA_BUNDLE wins over SSL_CERT_FILE, so a test
    // that trusts its own CA through SSL_CERT_FILE must not inherit them.
    "CURL_CA_BUNDLE",
    "SSL_CERT_DIR",
    "SSL_CERT_FILE",
    "http_proxy",
    "https_proxy",
    "HTTP_PROXY",
    "HTTPS_PROXY",
    "ALL_PROXY",
    "all_proxy",
    "NO_PROXY",
    "no_proxy",
];

/// A `Command` for the `systemd-import` binary of this crate, with every `SYSTEMD_LOG_*`
/// variable (so logging has its defaults), every `SYSTEMD_IMPORT_TEST_*` setting,
/// `NOTIFY_SOCKET`, and the CA and proxy variables removed from its environment: a test
/// sets what it needs, nothing leaks in from the machine or the test runner. It runs under
/// the usual umask 022 whatever the runner's, since the modes of cache entries follow it
/// (as in the C tool); a test that wants another adds its own `pre_exec`, which runs later.
pub fn systemd_import() -> Command {
    program(env!("CARGO_BIN_EXE_systemd-import"))
}

/// A `Command` for the binary under test run as `systemd-pull` (argv[0]), which makes it
/// speak systemd 252's command line; otherwise as [`systemd_import`].
pub fn systemd_pull() -> Command {
    let mut cmd = systemd_import();
    cmd.arg0("/usr/lib/systemd/systemd-pull");
    cmd
}

/// A `Command` for `path` with the environment and umask [`systemd_import`] gives the
/// binary under test (for systemd-importd and the wrappers that start it).
pub fn program(path: impl AsRef<std::ffi::OsStr>) -> Command {
    let mut cmd = Command::new(path);
    // SAFETY: umask() is async-signal-safe and touches nothing else.
    unsafe {
        cmd.pre_exec(|| {
            libc::umask(0o022);
            Ok(())
        });
    }
    for (key, _) in std::env::vars_os() {
        let k = key.to_string_lossy();
        if k.starts_with("SYSTEMD_LOG_") || k.starts_with("SYSTEMD_IMPORT_TEST_") {
            cmd.env_remove(&key);
        }
    }
    cmd.env_remove("NOTIFY_SOCKET");
    for key in SCRUBBED_ENV {
        cmd.env_remove(key);
    }
    cmd
}

/// What a finished process printed and how it ended.
#[derive(Clone, Debug)]
pub struct CliOutput {
    /// The exit code, or 128 + the signal number if a signal killed it (shell convention).
    pub status: i32,
    /// Everything written to stdout (lossy UTF-8).
    pub stdout: String,
    /// Everything written to stderr (lossy UTF-8).
    pub stderr: String,
    /// `stderr` split into lines, without line terminators.
    pub stderr_lines: Vec<String>,
}

/// Run `cmd` (stdin from /dev/null) to completion and capture its output. Fails the test if it
/// runs longer than the safety deadline.
pub fn run(cmd: &mut Command) -> CliOutput {
    spawn_watch(cmd).wait()
}

/// Start `cmd` in the background (stdin from /dev/null, stdout and stderr captured) to watch its
/// stderr and signal it while it runs.
pub fn spawn_watch(cmd: &mut Command) -> Watched {
    // The signals a test sends must meet their default actions, as under a terminal or a
    // service manager. A runner started in the background by a non-interactive shell has
    // SIGINT and SIGQUIT ignored, and exec passes that on: `sleep` would never die of them.
    // SAFETY: signal() is async-signal-safe, and SIG_DFL installs no handler code.
    unsafe {
        cmd.pre_exec(|| {
            for sig in [libc::SIGHUP, libc::SIGINT, libc::SIGQUIT, libc::SIGTERM] {
                libc::signal(sig, libc::SIG_DFL);
            }
            Ok(())
        });
    }
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {cmd:?}: {e}"));
    let pid = Pid::from_raw(child.id() as i32);
    let mut stdout = child.stdout.take().expect("stdout pipe");
    let (stdout_tx, stdout_rx) = mpsc::channel();
    thread::spawn(move || {
        let mut out = Vec::new();
        let _ = stdout.read_to_end(&mut out);
        let _ = stdout_tx.send(out);
    });
    let stderr_state = Arc::new(StderrState::default());
    {
        let state = Arc::clone(&stderr_state);
        let stderr = child.stderr.take().expect("stderr pipe");
        thread::spawn(move || state.pump(stderr));
    }
    let reaped = Arc::new(Mutex::new(false));
    let (status_tx, status_rx) = mpsc::channel();
    let waiter = {
        let reaped = Arc::clone(&reaped);
        thread::spawn(move || reap(child, &reaped, status_tx))
    };
    Watched {
        pid,
        reaped,
        status_rx,
        waiter: Some(waiter),
        stdout_rx,
        stderr: stderr_state,
        finished: false,
    }
}

/// Wait for `child` to exit and reap it, marking it reaped under the lock `signal()` takes, so a
/// signal can never hit a recycled pid.
fn reap(mut child: Child, reaped: &Mutex<bool>, status_tx: mpsc::Sender<ExitStatus>) {
    let pid = Pid::from_raw(child.id() as i32);
    // WNOWAIT: learn that it exited while leaving the zombie (and so the pid) in place.
    let wnowait = WaitPidFlag::WEXITED | WaitPidFlag::WNOWAIT;
    while let Err(nix::errno::Errno::EINTR) = waitid(Id::Pid(pid), wnowait) {}
    let mut reaped = lock(reaped);
    let status = child.wait().expect("reap child");
    *reaped = true;
    drop(reaped);
    let _ = status_tx.send(status);
}

/// Stderr lines seen so far, and whether the stream ended.
#[derive(Default)]
struct StderrLines {
    lines: Vec<String>,
    /// Bytes after the last newline (a line still being written).
    partial: Vec<u8>,
    eof: bool,
}

#[derive(Default)]
struct StderrState {
    lines: Mutex<StderrLines>,
    cv: Condvar,
}

impl StderrState {
    fn pump(&self, stderr: impl Read) {
        let mut reader = BufReader::new(stderr);
        let mut buf = Vec::new();
        loop {
            buf.clear();
            let n = reader.read_until(b'\n', &mut buf).unwrap_or(0);
            let mut state = lock(&self.lines);
            if n == 0 {
                if !state.partial.is_empty() {
                    let last = String::from_utf8_lossy(&state.partial).into_owned();
                    state.lines.push(last);
                    state.partial.clear();
                }
                state.eof = true;
                self.cv.notify_all();
                return;
            }
            if buf.last() == Some(&b'\n') {
                buf.pop();
                state.partial.append(&mut buf);
                let line = String::from_utf8_lossy(&state.partial).into_owned();
                state.partial.clear();
                state.lines.push(line);
                self.cv.notify_all();
            } else {
                state.partial.append(&mut buf);
            }
        }
    }

    /// Wait until the stream ended; panic with `why` after `timeout`.
    fn wait_eof(&self, timeout: Duration, why: &str) {
        let deadline = Instant::now() + timeout;
        let ended = wait_until(&self.lines, &self.cv, deadline, |s| s.eof.then_some(()));
        assert!(ended.is_ok(), "stderr: {why}");
    }
}

/// A running process started by [`spawn_watch`]. Dropping it unwaited kills (SIGKILL) and reaps
/// the process.
pub struct Watched {
    pid: Pid,
    reaped: Arc<Mutex<bool>>,
    status_rx: Receiver<ExitStatus>,
    waiter: Option<JoinHandle<()>>,
    /// The whole stdout, sent by its reader thread at EOF.
    stdout_rx: Receiver<Vec<u8>>,
    stderr: Arc<StderrState>,
    finished: bool,
}

impl Watched {
    /// The process id.
    pub fn pid(&self) -> Pid {
        self.pid
    }

    /// The complete stderr lines printed so far.
    pub fn stderr_lines(&self) -> Vec<String> {
        lock(&self.stderr.lines).lines.clone()
    }

    /// Block until a stderr line satisfies `pred` (earlier lines count too) and return it.
    /// Panics with the stderr so far if the stream ends or `timeout` passes first.
    pub fn wait_for_stderr_line(&self, pred: impl Fn(&str) -> bool, timeout: Duration) -> String {
        let deadline = Instant::now() + timeout;
        let found = wait_until(
            &self.stderr.lines,
            &self.stderr.cv,
            deadline,
            |state| match state.lines.iter().find(|l| pred(l)) {
                Some(line) => Some(Ok(line.clone())),
                None => state.eof.then_some(Err("stderr closed")),
            },
        );
        let why = match &found {
            Ok(Ok(line)) => return line.clone(),
            Ok(Err(why)) => why.to_string(),
            Err(_) => format!("{timeout:?} passed"),
        };
        drop(found); // releases the lock stderr_lines() takes
        panic!(
            "no matching stderr line ({why}); stderr so far:\n{}",
            self.stderr_lines().join("\n")
        );
    }

    /// Send `sig` to the process. Panics if it has already exited and been reaped.
    pub fn signal(&self, sig: Signal) {
        let reaped = lock(&self.reaped);
        assert!(!*reaped, "signal {sig}: the process has already exited");
        kill(self.pid, sig).unwrap_or_else(|e| panic!("kill({}, {sig}): {e}", self.pid));
    }

    /// Wait for the process to exit and return its output. Kills it and fails the test if it
    /// is still running after the safety deadline.
    pub fn wait(mut self) -> CliOutput {
        let status = match self.status_rx.recv_timeout(WAIT_DEADLINE) {
            Ok(status) => status,
            Err(RecvTimeoutError::Timeout) => {
                self.kill_and_reap();
                panic!(
                    "process {} still running after {WAIT_DEADLINE:?}; stderr:\n{}",
                    self.pid,
                    self.stderr_lines().join("\n")
                );
            }
            Err(RecvTimeoutError::Disconnected) => panic!("reaper thread of {} died", self.pid),
        };
        self.finished = true;
        self.join_waiter();
        // The pipes close when the process exits, unless something it started still holds them.
        let leftover = "a process started by the program under test still holds its output open";
        let stdout = self
            .stdout_rx
            .recv_timeout(OUTPUT_EOF_DEADLINE)
            .unwrap_or_else(|_| panic!("stdout of {}: {leftover}", self.pid));
        self.stderr.wait_eof(OUTPUT_EOF_DEADLINE, leftover);
        let stderr_lines = self.stderr_lines();
        let mut stderr = stderr_lines.join("\n");
        if !stderr.is_empty() {
            stderr.push('\n');
        }
        CliOutput {
            status: status
                .code()
                .unwrap_or_else(|| 128 + status.signal().unwrap_or(0)),
            stdout: String::from_utf8_lossy(&stdout).into_owned(),
            stderr,
            stderr_lines,
        }
    }

    fn kill_and_reap(&mut self) {
        {
            let reaped = lock(&self.reaped);
            if !*reaped {
                let _ = kill(self.pid, Signal::SIGKILL);
            }
        }
        self.join_waiter();
        self.finished = true;
    }

    fn join_waiter(&mut self) {
        if let Some(t) = self.waiter.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Watched {
    fn drop(&mut self) {
        if !self.finished {
            self.kill_and_reap();
        }
    }
}

/// A temporary directory to use as `--image-root`, removed on Drop.
pub struct TempRoot {
    dir: tempfile::TempDir,
}

impl TempRoot {
    /// A new empty directory.
    pub fn new() -> TempRoot {
        TempRoot {
            dir: tempfile::Builder::new()
                .prefix("test-root.")
                .tempdir()
                .expect("create temporary image root"),
        }
    }

    /// Its path.
    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Every path below the root (dot files included, symlinks not followed), relative to it
    /// and sorted: for "nothing left behind" assertions.
    pub fn list_all(&self) -> Vec<PathBuf> {
        let mut out = Vec::new();
        collect(self.path(), Path::new(""), &mut out);
        out.sort();
        out
    }
}

impl Drop for TempRoot {
    /// Removed with the crate's own `rm_rf`: the cache entries and read-only images the
    /// pulls leave are immutable (chattr +i) off btrfs, which `TempDir` cannot remove; it
    /// would leave the whole root behind in /tmp.
    fn drop(&mut self) {
        let _ = systemd_import::util::fs::rm_rf(self.dir.path());
    }
}

impl Default for TempRoot {
    fn default() -> Self {
        TempRoot::new()
    }
}

fn collect(base: &Path, rel: &Path, out: &mut Vec<PathBuf>) {
    let dir = base.join(rel);
    let entries = fs::read_dir(&dir).unwrap_or_else(|e| panic!("read {}: {e}", dir.display()));
    for entry in entries {
        let entry = entry.unwrap_or_else(|e| panic!("read {}: {e}", dir.display()));
        let rel_path = rel.join(entry.file_name());
        let is_dir = entry
            .file_type()
            .unwrap_or_else(|e| panic!("stat {}: {e}", rel_path.display()))
            .is_dir();
        out.push(rel_path.clone());
        if is_dir {
            collect(base, &rel_path, out);
        }
    }
}
