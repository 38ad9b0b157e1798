//! Server programs run for a test (docker-registry, nginx, tinyproxy): spawned with their
//! stdout and stderr captured, started only once they are really ready (a log line, or a
//! port that accepts), killed and reaped on drop.
//!
//! ```ignore
//! let (daemon, port) = start_on_free_port("nginx", Ready::Accepting, |port| {
//!     write_config(port);
//!     let mut cmd = Command::new("/usr/sbin/nginx");
//!     cmd.args(["-c", "…"]);
//!     cmd
//! });
//! ```

use std::io::{BufRead, BufReader, Read};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use super::http::{lock, wait_until};

/// How long a server may take to become ready before the test fails.
pub const START_DEADLINE: Duration = Duration::from_secs(30);
/// How long [`eventually`] waits for a server's log to show something.
pub const LOG_DEADLINE: Duration = Duration::from_secs(10);
/// Attempts at starting when the chosen port was taken by someone else in the meantime.
const START_ATTEMPTS: usize = 3;

/// The process's combined stdout/stderr so far, and how many of the two streams hit EOF.
#[derive(Default)]
struct LogState {
    text: String,
    closed_streams: usize,
}

/// A process's log, with a condvar signalled on every new line and on EOF.
#[derive(Default)]
struct LogCapture {
    state: Mutex<LogState>,
    cv: Condvar,
}

impl LogCapture {
    fn pump(self: &Arc<Self>, stream: impl Read + Send + 'static) -> JoinHandle<()> {
        let log = Arc::clone(self);
        thread::spawn(move || {
            let mut reader = BufReader::new(stream);
            let mut line = Vec::new();
            while matches!(reader.read_until(b'\n', &mut line), Ok(n) if n > 0) {
                lock(&log.state)
                    .text
                    .push_str(&String::from_utf8_lossy(&line));
                line.clear();
                log.cv.notify_all();
            }
            lock(&log.state).closed_streams += 1;
            log.cv.notify_all();
        })
    }

    fn text(&self) -> String {
        lock(&self.state).text.clone()
    }

    /// Wait until the log contains `needle` (true), or the process closed both streams or the
    /// deadline passed (false).
    fn wait_for(&self, needle: &str, deadline: Instant) -> bool {
        wait_until(&self.state, &self.cv, deadline, |state| {
            if state.text.contains(needle) {
                Some(true)
            } else {
                (state.closed_streams == 2).then_some(false)
            }
        })
        .unwrap_or(false)
    }

    /// Whether the process closed both its streams (it exited, most likely).
    fn closed(&self) -> bool {
        lock(&self.state).closed_streams == 2
    }
}

/// When a freshly spawned server counts as started.
#[derive(Clone, Debug)]
pub enum Ready {
    /// Its log contains this text.
    LogLine(String),
    /// `127.0.0.1:PORT` accepts connections.
    Accepting(u16),
}

/// A running server process and its log pumps. Killed and reaped on drop.
pub struct Daemon {
    name: String,
    child: Child,
    log: Arc<LogCapture>,
    pumps: Vec<JoinHandle<()>>,
    stopped: bool,
}

impl Daemon {
    /// Spawn `cmd` (its stdout and stderr are captured) and wait until `ready`. On failure the
    /// process is killed and its log returned.
    pub fn spawn(name: &str, mut cmd: Command, ready: Ready) -> Result<Daemon, String> {
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {name} ({:?}): {e}", cmd.get_program()));
        let log = Arc::new(LogCapture::default());
        let pumps = vec![
            log.pump(child.stdout.take().expect("stdout pipe")),
            log.pump(child.stderr.take().expect("stderr pipe")),
        ];
        let mut daemon = Daemon {
            name: name.to_string(),
            child,
            log,
            pumps,
            stopped: false,
        };
        let deadline = Instant::now() + START_DEADLINE;
        let started = match ready {
            Ready::LogLine(needle) => daemon.log.wait_for(&needle, deadline),
            Ready::Accepting(port) => loop {
                if TcpStream::connect(("127.0.0.1", port)).is_ok() {
                    break true;
                }
                let exited = matches!(daemon.child.try_wait(), Ok(Some(_)));
                if exited || Instant::now() >= deadline {
                    break false;
                }
                thread::sleep(Duration::from_millis(20));
            },
        };
        if started {
            Ok(daemon)
        } else {
            daemon.stop();
            Err(daemon.log())
        }
    }

    /// The process's stdout and stderr so far.
    pub fn log(&self) -> String {
        self.log.text()
    }

    /// Wait up to `timeout` for `needle` in the log.
    pub fn wait_for_log(&self, needle: &str, timeout: Duration) -> bool {
        self.log.wait_for(needle, Instant::now() + timeout)
    }

    /// Kill and reap the process (idempotent): its port stops answering.
    pub fn stop(&mut self) {
        if !self.stopped {
            let _ = self.child.kill();
            let _ = self.child.wait();
            self.stopped = true;
        }
    }

    /// Whether the process still runs.
    pub fn is_running(&mut self) -> bool {
        !self.stopped && matches!(self.child.try_wait(), Ok(None)) && !self.log.closed()
    }

    /// The name given at spawn, for messages.
    pub fn name(&self) -> &str {
        &self.name
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.stop();
        for pump in self.pumps.drain(..) {
            let _ = pump.join();
        }
    }
}

/// Poll `check` until it yields a value: servers write their logs after answering, so what
/// a test looks for may appear a moment later. Panics after [`LOG_DEADLINE`] saying `what`
/// was awaited.
pub fn eventually<T>(what: &str, mut check: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + LOG_DEADLINE;
    loop {
        if let Some(value) = check() {
            return value;
        }
        assert!(
            Instant::now() < deadline,
            "waited {LOG_DEADLINE:?} in vain for {what}"
        );
        thread::sleep(Duration::from_millis(10));
    }
}

/// A port that was free a moment ago (the server binds it itself).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("probe a free port")
        .port()
}

/// Start a server on a free port: `command(port)` writes its configuration and returns the
/// command line, `ready(port)` says when it has started. A port someone else took meanwhile
/// is retried with another; any other failure panics with the server's log.
pub fn start_on_free_port(
    name: &str,
    ready: impl Fn(u16) -> Ready,
    mut command: impl FnMut(u16) -> Command,
) -> (Daemon, u16) {
    let mut last_log = String::new();
    for _ in 0..START_ATTEMPTS {
        let port = free_port();
        match Daemon::spawn(name, command(port), ready(port)) {
            Ok(daemon) => return (daemon, port),
            Err(log) if log.to_lowercase().contains("address already in use") => last_log = log,
            Err(log) => panic!("{name} did not start:\n{log}"),
        }
    }
    panic!("{name} could not bind a free port:\n{last_log}");
}
