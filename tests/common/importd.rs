//! systemd-importd under test: the daemon on a private bus ([`TestBus`]), in a private
//! mount namespace whose `/var/lib/machines` is a temporary directory (the host's is never
//! touched), with our worker (or a fake one) as `SYSTEMD_PULL_PATH`. Clients: Debian's
//! `machinectl` (in a mount namespace of its own where `/run/systemd/system` exists, since
//! it refuses to work on a system not booted with systemd), `busctl`, a blocking dbus-rs
//! connection for the tests' own calls, and a [`SignalRecorder`] on our own bus layer.
//!
//! Fake workers ([`fake_worker`]) are shell scripts, used only for fault injection.

use std::collections::HashMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use dbus::arg::AppendAll;
use dbus::blocking::Connection;
use dbus::Message;
use nix::sys::signal::Signal;

use super::cli::{program, spawn_watch, CliOutput, TempRoot, Watched};
use super::dbus::{TestBus, CALL_TIMEOUT};
use super::http::{lock, wait_until};
use systemd_import::bus::{Bus, SignalMatch};
use systemd_import::event::EventLoop;

pub const NAME: &str = "org.freedesktop.import1";
pub const MANAGER: &str = "/org/freedesktop/import1";
pub const MANAGER_IFACE: &str = "org.freedesktop.import1.Manager";
pub const TRANSFER_IFACE: &str = "org.freedesktop.import1.Transfer";
/// This project's interface next to upstream's on each transfer object.
pub const EXT_IFACE: &str = "io.github.systemd_import.Transfer1";

/// Debian's own systemd-importd (systemd 252) and the path where it finds its worker.
pub const DEBIAN_IMPORTD: &str = "/lib/systemd/systemd-importd";
pub const DEBIAN_PULL: &str = "/lib/systemd/systemd-pull";

/// How long a test waits for something the daemon does.
pub const PATIENCE: Duration = Duration::from_secs(60);

/// Runs the command after `--` with the temporary directory `$1` bind-mounted at
/// /var/lib/machines (in the mount namespace `unshare` made), and each following pair
/// `SOURCE TARGET` bind-mounted too. Where the host has no /var/lib/machines to mount
/// over, a tmpfs on /var/lib (again only in the namespace) provides one.
/// With `IMPORTD_TEST_PRIVATE_RUN` set, a tmpfs is mounted over /run first (with an
/// empty /run/systemd), for a daemon that binds a socket there (systemd 252's
/// /run/systemd/import/notify).
const MACHINES_NAMESPACE: &str = r#"set -e
machines=$1; shift
if [ -n "$IMPORTD_TEST_PRIVATE_RUN" ]; then
    mount -t tmpfs -o mode=0755 tmpfs /run
    mkdir /run/systemd
fi
unset IMPORTD_TEST_PRIVATE_RUN
if [ ! -d /var/lib/machines ]; then
    mount -t tmpfs -o mode=0755 tmpfs /var/lib
    mkdir /var/lib/machines
fi
mount --bind "$machines" /var/lib/machines
while [ "$1" != -- ]; do mount --bind "$1" "$2"; shift 2; done
shift
exec "$@""#;

/// Runs the command given after it where `/run/systemd/system` exists (sd_booted()), on a
/// tmpfs over /run in the namespace `unshare` made.
const BOOTED_NAMESPACE: &str = r#"set -e
mount -t tmpfs -o mode=0755 tmpfs /run
mkdir -p /run/systemd/system
exec "$@""#;

/// How to start the daemon.
pub struct Options {
    /// The daemon binary (its path inside the namespace).
    pub daemon: PathBuf,
    /// `SYSTEMD_PULL_PATH`; `None` leaves the daemon's default.
    pub worker: Option<PathBuf>,
    /// More environment for the daemon (and so its workers).
    pub env: Vec<(String, String)>,
    /// Files bind-mounted over others in the daemon's namespace: (source, target).
    pub binds: Vec<(PathBuf, PathBuf)>,
    /// The import1 D-Bus policy the bus uses.
    pub policy: PathBuf,
    /// A private tmpfs over /run in the daemon's namespace.
    pub private_run: bool,
}

impl Default for Options {
    fn default() -> Options {
        Options {
            daemon: PathBuf::from(env!("CARGO_BIN_EXE_systemd-importd")),
            worker: Some(PathBuf::from(env!("CARGO_BIN_EXE_systemd-import"))),
            env: Vec::new(),
            binds: Vec::new(),
            policy: super::dbus::data_dir().join("org.freedesktop.import1.conf"),
            private_run: false,
        }
    }
}

impl Options {
    /// Trust `ca_pem` (SSL_CERT_FILE, inherited by the workers).
    pub fn trusting(ca_pem: &Path) -> Options {
        Options::default().with("SSL_CERT_FILE", &ca_pem.to_string_lossy())
    }

    pub fn with(mut self, key: &str, value: &str) -> Options {
        self.env.push((key.into(), value.into()));
        self
    }

    pub fn worker(mut self, worker: &Path) -> Options {
        self.worker = Some(worker.to_path_buf());
        self
    }

    /// Debian's own systemd-importd (252) trusting `ca_pem`, with our worker
    /// bind-mounted over its `systemd-pull` and /run private (its progress socket lives
    /// there).
    pub fn debian(ca_pem: &Path) -> Options {
        let mut opts = Options::trusting(ca_pem);
        opts.daemon = PathBuf::from(DEBIAN_IMPORTD);
        opts.worker = None;
        opts.binds = vec![(
            PathBuf::from(env!("CARGO_BIN_EXE_systemd-import")),
            PathBuf::from(DEBIAN_PULL),
        )];
        opts.private_run = true;
        // Its log on stderr (not the journal or kmsg of the machine).
        opts.with("SYSTEMD_LOG_TARGET", "console")
    }
}

pub struct Importd {
    /// The daemon; dropped (killed) before the bus.
    run: Option<Watched>,
    pub machines: TempRoot,
    /// An empty HOME for the daemon and its workers (no auth files of the machine).
    home: tempfile::TempDir,
    pub bus: TestBus,
}

impl Importd {
    /// Start the daemon and wait until it owns its bus name.
    pub fn start(opts: Options) -> Importd {
        let bus = TestBus::start_with_policy(&opts.policy);
        let machines = TempRoot::new();
        let home = tempfile::tempdir().expect("home");
        let mut cmd = program("unshare");
        cmd.args(["--mount", "--propagation", "private", "--"])
            .args(["sh", "-c", MACHINES_NAMESPACE, "sh"])
            .arg(machines.path());
        for (source, target) in &opts.binds {
            cmd.arg(source).arg(target);
        }
        cmd.arg("--")
            .arg(&opts.daemon)
            .env("DBUS_SYSTEM_BUS_ADDRESS", bus.address())
            .env("HOME", home.path())
            .env_remove("XDG_RUNTIME_DIR")
            .env_remove("XDG_CONFIG_HOME")
            .env_remove("DOCKER_CONFIG")
            .env_remove("REGISTRY_AUTH_FILE")
            .env_remove("WATCHDOG_USEC")
            .env_remove("WATCHDOG_PID");
        match &opts.worker {
            Some(worker) => cmd.env("SYSTEMD_PULL_PATH", worker),
            None => cmd.env_remove("SYSTEMD_PULL_PATH"),
        };
        if opts.private_run {
            cmd.env("IMPORTD_TEST_PRIVATE_RUN", "1");
        }
        for (k, v) in &opts.env {
            cmd.env(k, v);
        }
        let run = spawn_watch(&mut cmd);
        let d = Importd {
            run: Some(run),
            machines,
            home,
            bus,
        };
        d.wait_for_name(true);
        d
    }

    fn run(&self) -> &Watched {
        self.run.as_ref().expect("daemon running")
    }

    /// Wait until the daemon's name is (or is no longer) on the bus.
    pub fn wait_for_name(&self, owned: bool) {
        let conn = self.bus.connect();
        let deadline = Instant::now() + PATIENCE;
        loop {
            let has: bool = conn
                .with_proxy(
                    "org.freedesktop.DBus",
                    "/org/freedesktop/DBus",
                    CALL_TIMEOUT,
                )
                .method_call("org.freedesktop.DBus", "NameHasOwner", (NAME,))
                .map(|(b,): (bool,)| b)
                .expect("NameHasOwner");
            if has == owned {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "name owned is not {owned}; daemon stderr:\n{}",
                self.log().join("\n")
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    pub fn pid(&self) -> i32 {
        self.run().pid().as_raw()
    }

    /// The daemon's stderr lines so far.
    pub fn log(&self) -> Vec<String> {
        self.run().stderr_lines()
    }

    /// Wait for a daemon stderr line.
    pub fn wait_log(&self, pred: impl Fn(&str) -> bool) -> String {
        self.run().wait_for_stderr_line(pred, PATIENCE)
    }

    pub fn signal(&self, sig: Signal) {
        self.run().signal(sig);
    }

    /// Wait for the daemon to exit (after a signal, or idle).
    pub fn wait_exit(&mut self) -> CliOutput {
        self.run.take().expect("daemon running").wait()
    }

    /// The pids of the daemon's children that run a worker (have called exec).
    pub fn workers(&self) -> Vec<i32> {
        // A child that has not called exec yet still runs the daemon's image, with the
        // daemon's environment and fds: it is no worker yet.
        let exe = |pid: i32| std::fs::read_link(format!("/proc/{pid}/exe")).ok();
        let daemon = exe(self.pid());
        children_of(self.pid())
            .into_iter()
            .filter(|&pid| exe(pid).is_some_and(|e| Some(&e) != daemon.as_ref()))
            .collect()
    }

    /// A blocking connection for the test's own calls.
    pub fn connect(&self) -> Connection {
        self.bus.connect()
    }

    /// Debian's machinectl with `args`, run to completion.
    pub fn machinectl(&self, args: &[&str]) -> CliOutput {
        self.machinectl_spawn(args).wait()
    }

    /// Debian's machinectl with `args`, in the background.
    pub fn machinectl_spawn(&self, args: &[&str]) -> Watched {
        let mut cmd = Command::new("unshare");
        cmd.args(["--mount", "--propagation", "private", "--"])
            .args([
                "sh",
                "-c",
                BOOTED_NAMESPACE,
                "sh",
                "machinectl",
                "--no-pager",
            ])
            .args(args)
            .env("DBUS_SYSTEM_BUS_ADDRESS", self.bus.address())
            .env("SYSTEMD_COLORS", "0")
            .env("SYSTEMD_LOG_COLOR", "0")
            .env("SYSTEMD_PAGER", "cat")
            .env_remove("SYSTEMD_LOG_LEVEL");
        spawn_watch(&mut cmd)
    }

    /// The daemon's HOME.
    pub fn home(&self) -> &Path {
        self.home.path()
    }

    /// Our importctl with `args`, against this daemon's bus (output captured).
    pub fn importctl_cmd(&self, args: &[&str]) -> Command {
        importctl_on(self.bus.address(), args)
    }

    /// Our importctl with `args`, run to completion.
    pub fn importctl(&self, args: &[&str]) -> CliOutput {
        spawn_watch(&mut self.importctl_cmd(args)).wait()
    }

    /// Our importctl with `args`, in the background.
    pub fn importctl_spawn(&self, args: &[&str]) -> Watched {
        spawn_watch(&mut self.importctl_cmd(args))
    }
}

/// Our importctl with `args` against the bus at `address`, with a clean environment
/// (no `SYSTEMD_LOG_*`, no `TERM`).
pub fn importctl_on(address: &str, args: &[&str]) -> Command {
    let mut cmd = program(env!("CARGO_BIN_EXE_importctl"));
    std::os::unix::process::CommandExt::arg0(&mut cmd, "importctl");
    cmd.args(args)
        .env("DBUS_SYSTEM_BUS_ADDRESS", address)
        .env_remove("TERM")
        .env_remove("COLUMNS");
    cmd
}

/// What machinectl and importctl print after calling a pull member.
pub const ENQUEUED: &str = "Press C-c to continue download in background.";

/// A client's stderr after its first line (`Enqueued transfer job ID. …`): the lines it
/// relayed, without those `skip` accepts (a client's own progress lines). Checks that
/// they are the daemon's `(transferID) …` lines, in order.
pub fn relayed_lines(
    d: &Importd,
    stderr_lines: &[String],
    id: u32,
    skip: impl Fn(&str) -> bool,
) -> Vec<String> {
    let all = stderr_lines.join("\n");
    assert_eq!(
        stderr_lines.first().map(String::as_str),
        Some(format!("Enqueued transfer job {id}. {ENQUEUED}").as_str()),
        "{all}"
    );
    let lines: Vec<String> = stderr_lines[1..]
        .iter()
        .filter(|l| !skip(l))
        .cloned()
        .collect();
    let prefix = format!("(transfer{id}) ");
    // The daemon's stderr is collected by a reader thread: wait until it has caught up
    // with the last line the client printed before comparing.
    if let Some(last) = lines.last() {
        let want = format!("{prefix}{last}");
        d.wait_log(|l| l == want);
    }
    let logged: Vec<String> = d
        .log()
        .iter()
        .filter_map(|l| l.strip_prefix(&prefix).map(str::to_string))
        .collect();
    assert_eq!(lines, logged, "the client and the daemon's log differ");
    lines
}

/// Processes whose parent is `pid`.
pub fn children_of(pid: i32) -> Vec<i32> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir("/proc").expect("/proc") {
        let Ok(entry) = entry else { continue };
        let Ok(child) = entry.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{child}/stat")) else {
            continue;
        };
        // "pid (comm) state ppid …": comm may contain anything, so split after the ')'.
        let ppid = stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().nth(1))
            .and_then(|p| p.parse::<i32>().ok());
        if ppid == Some(pid) {
            out.push(child);
        }
    }
    out
}

/// The environment of process `pid`.
pub fn environ(pid: i32) -> HashMap<String, String> {
    // Early in execve the process already shows its new executable but its environment
    // is not in place yet (the kernel sets it up after switching the image), so
    // /proc/PID/environ reads empty for a moment: read again until it is not.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let raw = loop {
        let raw = std::fs::read(format!("/proc/{pid}/environ")).expect("environ");
        if !raw.is_empty() || std::time::Instant::now() > deadline {
            break raw;
        }
        std::thread::sleep(std::time::Duration::from_millis(5));
    };
    raw.split(|b| *b == 0)
        .filter_map(|kv| {
            let kv = String::from_utf8_lossy(kv);
            kv.split_once('=')
                .map(|(k, v)| (k.to_string(), v.to_string()))
        })
        .collect()
}

/// A shell-script worker with `body`, in a directory of its own.
pub fn fake_worker(body: &str) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().expect("worker dir");
    let path = dir.path().join("fake-systemd-pull");
    std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).expect("write worker");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    (dir, path)
}

/// A daemon with the fake worker `body`, a signal recorder and a client connection.
pub struct WithFakeWorker {
    pub d: Importd,
    pub signals: SignalRecorder,
    pub conn: Connection,
    /// Holds the worker script: bind it for as long as the daemon runs.
    pub worker: tempfile::TempDir,
}

impl WithFakeWorker {
    pub fn start(body: &str) -> WithFakeWorker {
        let (dir, worker) = fake_worker(body);
        let d = Importd::start(Options::default().worker(&worker));
        let signals = SignalRecorder::start(&d.bus);
        let conn = d.connect();
        WithFakeWorker {
            d,
            signals,
            conn,
            worker: dir,
        }
    }
}

/// A worker that logs its arguments at notice level and then waits to be stopped.
pub const HANGING_WORKER: &str = "echo \"<5>fake worker: $*\"\nexec sleep 600";

/// Call `member` of `iface` at `path` and wait for the answer: the reply, or the error's
/// (name, message).
pub fn call<A: AppendAll>(
    conn: &Connection,
    path: &str,
    iface: &str,
    member: &str,
    args: A,
) -> Result<Message, (String, String)> {
    let mut msg = Message::new_method_call(NAME, path, iface, member).expect("valid call");
    msg.append_all(args);
    call_message(conn, msg)
}

/// Send `msg` and wait for the answer.
pub fn call_message(conn: &Connection, msg: Message) -> Result<Message, (String, String)> {
    conn.channel()
        .send_with_reply_and_block(msg, CALL_TIMEOUT)
        .map_err(|e| {
            (
                e.name().unwrap_or_default().to_string(),
                e.message().unwrap_or_default().to_string(),
            )
        })
}

/// A manager method.
pub fn manager<A: AppendAll>(
    conn: &Connection,
    member: &str,
    args: A,
) -> Result<Message, (String, String)> {
    call(conn, MANAGER, MANAGER_IFACE, member, args)
}

/// `PullTar`/`PullRaw`/… that must succeed: the transfer's (id, path).
pub fn start_pull<A: AppendAll>(conn: &Connection, member: &str, args: A) -> (u32, String) {
    let reply = manager(conn, member, args).unwrap_or_else(|e| panic!("{member} failed: {e:?}"));
    let (id, path): (u32, dbus::Path) = reply.read2().expect("(uo)");
    (id, path.to_string())
}

/// A signal of the import1 API.
#[derive(Clone, Debug, PartialEq)]
pub enum Seen {
    New(u32, String),
    Removed(u32, String, String),
    Log(String, u32, String),
    Progress(String, f64),
    /// Our `DetailsUpdate`: path, progress, bytes done, bytes total, rate, layers.
    Details(
        String,
        f64,
        u64,
        u64,
        u64,
        Vec<(u32, u32, String, u64, u64)>,
    ),
}

struct Recorded {
    seen: Vec<Seen>,
    ready: bool,
}

/// Records the import1 signals from a thread running our bus layer on our event loop
/// (its client side, as importctl uses it).
pub struct SignalRecorder {
    state: Arc<(Mutex<Recorded>, Condvar)>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

struct Listener {
    bus: Bus<Listener>,
    state: Arc<(Mutex<Recorded>, Condvar)>,
}

fn listener_bus(l: &mut Listener) -> &mut Bus<Listener> {
    &mut l.bus
}

fn record(l: &mut Listener, seen: Seen) {
    let (m, cv) = &*l.state;
    lock(m).seen.push(seen);
    cv.notify_all();
}

fn parse_signal(msg: &Message) -> Option<Seen> {
    let path = msg.path()?.to_string();
    Some(match &*msg.member()? {
        "TransferNew" => {
            let (id, p): (u32, dbus::Path) = msg.read2().ok()?;
            Seen::New(id, p.to_string())
        }
        "TransferRemoved" => {
            let (id, p, result): (u32, dbus::Path, String) = msg.read3().ok()?;
            Seen::Removed(id, p.to_string(), result)
        }
        "LogMessage" => {
            let (prio, line): (u32, String) = msg.read2().ok()?;
            Seen::Log(path, prio, line)
        }
        "ProgressUpdate" => Seen::Progress(path, msg.read1().ok()?),
        "DetailsUpdate" => {
            type Args = (f64, u64, u64, u64, Vec<(u32, u32, String, u64, u64)>);
            let (p, done, total, rate, layers): Args = msg.read_all().ok()?;
            Seen::Details(path, p, done, total, rate, layers)
        }
        _ => return None,
    })
}

impl SignalRecorder {
    /// Start recording; returns once the bus daemon has the matches.
    pub fn start(bus: &TestBus) -> SignalRecorder {
        let state = Arc::new((
            Mutex::new(Recorded {
                seen: Vec::new(),
                ready: false,
            }),
            Condvar::new(),
        ));
        let stop = Arc::new(AtomicBool::new(false));
        let address = bus.address().to_string();
        let (thread_state, thread_stop) = (Arc::clone(&state), Arc::clone(&stop));
        let thread = std::thread::spawn(move || {
            let mut lp = EventLoop::new().expect("loop");
            let mut l = Listener {
                bus: Bus::open(&address, listener_bus).expect("listener connects"),
                state: thread_state,
            };
            l.bus.attach(&mut lp).expect("attach");
            for iface in [MANAGER_IFACE, TRANSFER_IFACE, EXT_IFACE] {
                let rule = SignalMatch {
                    sender: Some(NAME.into()),
                    interface: Some(iface.into()),
                    ..SignalMatch::default()
                };
                l.bus.add_match(&mut lp, rule, |_, l, msg| {
                    if let Some(seen) = parse_signal(msg) {
                        record(l, seen);
                    }
                });
            }
            // The bus daemon answers in order: once GetId is answered, it has the matches.
            l.bus.call_driver(&mut lp, "GetId", (), |_, l, _| {
                let (m, cv) = &*l.state;
                lock(m).ready = true;
                cv.notify_all();
            });
            while !thread_stop.load(Ordering::Acquire) {
                lp.run_once(&mut l, Some(Duration::from_millis(20)))
                    .expect("listener loop");
            }
        });
        let r = SignalRecorder {
            state,
            stop,
            thread: Some(thread),
        };
        {
            let (m, cv) = &*r.state;
            let ready = wait_until(m, cv, Instant::now() + PATIENCE, |s| s.ready.then_some(()));
            assert!(ready.is_ok(), "the signal recorder did not start");
        }
        r
    }

    /// Everything recorded so far.
    pub fn seen(&self) -> Vec<Seen> {
        lock(&self.state.0).seen.clone()
    }

    /// Wait for a signal `pred` accepts (earlier ones count) and return it.
    pub fn wait_for(&self, what: &str, pred: impl Fn(&Seen) -> bool) -> Seen {
        let (m, cv) = &*self.state;
        let found = wait_until(m, cv, Instant::now() + PATIENCE, |s| {
            s.seen.iter().find(|x| pred(x)).cloned()
        })
        .ok();
        match found {
            Some(seen) => seen,
            None => panic!("no {what} among {:?}", self.seen()),
        }
    }

    /// Wait for `TransferRemoved` of transfer `id`; returns its result.
    pub fn removed(&self, id: u32) -> String {
        match self.wait_for(
            "TransferRemoved",
            |s| matches!(s, Seen::Removed(i, ..) if *i == id),
        ) {
            Seen::Removed(_, _, result) => result,
            _ => unreachable!(),
        }
    }

    /// The `LogMessage` lines of the transfer at `path`.
    pub fn log_lines(&self, path: &str) -> Vec<(u32, String)> {
        self.seen()
            .into_iter()
            .filter_map(|s| match s {
                Seen::Log(p, prio, line) if p == path => Some((prio, line)),
                _ => None,
            })
            .collect()
    }
}

impl Drop for SignalRecorder {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
