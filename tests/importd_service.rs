//! systemd-importd as a service: the workers' environment and progress socket (foreign
//! senders, fds, both percent formats), log relay framing, crashing and missing workers,
//! the 64-transfer limit, the idle exit, SIGTERM while transfers run, and a seeded
//! campaign of random calls after which the daemon still answers.
//!
//! Fake workers (shell scripts) only inject faults; real transfers use our worker.

mod common;

use std::io::IoSlice;
use std::os::fd::{AsRawFd, RawFd};
use std::time::{Duration, Instant};

use dbus::arg::Variant;
use dbus::Message;
use nix::sys::signal::Signal;
use nix::sys::socket::{
    sendmsg, socket, AddressFamily, ControlMessage, MsgFlags, SockFlag, SockType, UnixAddr,
    UnixCredentials,
};

use common::importd::{
    call, call_message, environ, fake_worker, manager, start_pull, Importd, Options, Seen,
    SignalRecorder, WithFakeWorker, EXT_IFACE, HANGING_WORKER, MANAGER, MANAGER_IFACE, NAME,
    PATIENCE, TRANSFER_IFACE,
};
use common::mutate::Rng;
use common::pull::ImageServer;
use common::tarball::Tarball;

/// Send `text` to the abstract socket `address` (`@name`), claiming to be `pid` (root
/// may) and passing `fd` if given. Without a claim the kernel attaches our own pid.
fn notify(address: &str, text: &str, pid: Option<i32>, fd: Option<RawFd>) {
    let sock = socket(
        AddressFamily::Unix,
        SockType::Datagram,
        SockFlag::SOCK_CLOEXEC,
        None,
    )
    .unwrap();
    let addr = UnixAddr::new_abstract(address.strip_prefix('@').unwrap().as_bytes()).unwrap();
    let iov = [IoSlice::new(text.as_bytes())];
    let creds = pid.map(|pid| {
        UnixCredentials::from(libc::ucred {
            pid,
            uid: 0,
            gid: 0,
        })
    });
    let fds: Vec<RawFd> = fd.into_iter().collect();
    let mut cmsgs = Vec::new();
    if let Some(c) = &creds {
        cmsgs.push(ControlMessage::ScmCredentials(c));
    }
    if !fds.is_empty() {
        cmsgs.push(ControlMessage::ScmRights(&fds));
    }
    sendmsg(
        sock.as_raw_fd(),
        &iov,
        &cmsgs,
        MsgFlags::empty(),
        Some(&addr),
    )
    .unwrap();
}

/// Wait until the daemon has one worker; returns its pid.
fn the_worker(d: &Importd) -> i32 {
    let deadline = Instant::now() + PATIENCE;
    loop {
        if let [pid] = d.workers()[..] {
            return pid;
        }
        assert!(Instant::now() < deadline, "workers: {:?}", d.workers());
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn progress(conn: &dbus::blocking::Connection, path: &str) -> f64 {
    let reply = call(
        conn,
        path,
        "org.freedesktop.DBus.Properties",
        "Get",
        (TRANSFER_IFACE, "Progress"),
    )
    .unwrap();
    reply.read1::<Variant<f64>>().unwrap().0
}

#[test]
fn workers_report_progress_only_from_their_own_pid() {
    let f = WithFakeWorker::start(HANGING_WORKER);
    let (d, signals, conn) = (&f.d, &f.signals, &f.conn);
    let (_, path) = start_pull(conn, "PullTar", ("https://h/p.tar", "p", "no", false));
    let pid = the_worker(d);
    // The worker's world: its own log target, the daemon's socket, stdin /dev/null, one
    // pipe for stdout and stderr.
    let env = environ(pid);
    assert_eq!(env["SYSTEMD_LOG_TARGET"], "console-prefixed");
    let socket = env["NOTIFY_SOCKET"].clone();
    assert!(socket.starts_with('@'), "{socket}");
    let fd = |n: u32| std::fs::read_link(format!("/proc/{pid}/fd/{n}")).unwrap();
    assert_eq!(fd(0), std::path::Path::new("/dev/null"));
    assert_eq!(fd(1), fd(2));
    assert!(fd(1).to_string_lossy().starts_with("pipe:"), "{:?}", fd(1));
    assert_eq!(progress(conn, &path), -f64::MAX);

    notify(&socket, "X_IMPORT_PROGRESS=42%", None, None);
    d.wait_log(|l| l == "Got notification datagram from unexpected peer, ignoring.");
    let stdin = std::io::stdin();
    notify(
        &socket,
        "X_IMPORT_PROGRESS=43%",
        Some(pid),
        Some(stdin.as_raw_fd()),
    );
    d.wait_log(|l| l == "Somebody sent us unexpected fds, ignoring.");
    assert_eq!(progress(conn, &path), -f64::MAX);

    // From the worker's pid (claimed, as root may): `NN%` and the bare `NN` both count.
    notify(&socket, "X_IMPORT_PROGRESS=42%", Some(pid), None);
    signals.wait_for("42%", |s| *s == Seen::Progress(path.clone(), 0.42));
    notify(&socket, "READY=1\nX_IMPORT_PROGRESS=57", Some(pid), None);
    signals.wait_for("57%", |s| *s == Seen::Progress(path.clone(), 0.57));
    // Unchanged or malformed: no update.
    notify(&socket, "X_IMPORT_PROGRESS=57%", Some(pid), None);
    notify(&socket, "X_IMPORT_PROGRESS=150%", Some(pid), None);
    d.wait_log(|l| l == "Got invalid percent value '150%', ignoring.");
    assert_eq!(progress(conn, &path), 0.57);
    let updates = signals
        .seen()
        .iter()
        .filter(|s| matches!(s, Seen::Progress(..)))
        .count();
    assert_eq!(updates, 2);
    let reply = manager(conn, "ListTransfers", ()).unwrap();
    let list: Vec<(u32, String, String, String, f64, dbus::Path)> = reply.read1().unwrap();
    assert_eq!(list[0].4, 0.57);
}

/// All properties of `iface` on `path`, as text.
fn all_properties(conn: &dbus::blocking::Connection, path: &str, iface: &str) -> Vec<String> {
    use dbus::arg::RefArg;
    let reply = call(
        conn,
        path,
        "org.freedesktop.DBus.Properties",
        "GetAll",
        (iface,),
    )
    .unwrap();
    let props: dbus::arg::PropMap = reply.read1().unwrap();
    let mut out: Vec<String> = props
        .iter()
        .map(|(k, v)| format!("{k}={:?}", v.0.box_clone()))
        .collect();
    out.sort();
    out
}

#[test]
fn extended_progress_fields_reach_our_interface_and_only_it() {
    let f = WithFakeWorker::start(HANGING_WORKER);
    let (d, signals, conn) = (&f.d, &f.signals, &f.conn);
    let (_, path) = start_pull(conn, "PullTar", ("https://h/x.tar", "x", "no", false));
    let pid = the_worker(d);
    let socket = environ(pid)["NOTIFY_SOCKET"].clone();
    let upstream_before = all_properties(conn, &path, TRANSFER_IFACE);
    assert!(all_properties(conn, &path, EXT_IFACE)
        .contains(&"BytesDone=18446744073709551615".to_string()));

    let text = "X_IMPORT_PROGRESS=40\nX_IMPORT_PROGRESS_BYTES=400/1000\n\
                X_IMPORT_PROGRESS_RATE=200\nX_IMPORT_LAYER=1/2:done:300/300\n\
                X_IMPORT_LAYER=2/2:downloading:100/-";
    notify(&socket, text, Some(pid), None);
    let layers = vec![
        (1, 2, "done".to_string(), 300, 300),
        (2, 2, "downloading".to_string(), 100, u64::MAX),
    ];
    let want = Seen::Details(path.clone(), 0.4, 400, 1000, 200, layers);
    signals.wait_for("DetailsUpdate", |s| *s == want);
    signals.wait_for("ProgressUpdate", |s| {
        *s == Seen::Progress(path.clone(), 0.4)
    });
    let ours = all_properties(conn, &path, EXT_IFACE);
    for p in ["BytesDone=400", "BytesTotal=1000", "Rate=200"] {
        assert!(ours.contains(&p.to_string()), "{p} not in {ours:?}");
    }
    let reply = call(
        conn,
        &path,
        "org.freedesktop.DBus.Properties",
        "Get",
        (EXT_IFACE, "Layers"),
    )
    .unwrap();
    type Layers = Vec<(u32, u32, String, u64, u64)>;
    let Variant(got): Variant<Layers> = reply.read1().unwrap();
    assert_eq!(got.len(), 2);
    // Upstream's interface: the same properties, only Progress moved.
    let upstream_after = all_properties(conn, &path, TRANSFER_IFACE);
    assert_eq!(upstream_after.len(), upstream_before.len());
    assert!(
        upstream_after.iter().any(|p| p.starts_with("Progress=0.4")),
        "{upstream_after:?}"
    );

    // The same report again sends nothing; a changed one does; a bad field is skipped.
    notify(&socket, text, Some(pid), None);
    notify(
        &socket,
        "X_IMPORT_PROGRESS=40\nX_IMPORT_PROGRESS_BYTES=500/1000\nX_IMPORT_PROGRESS_RATE=x",
        Some(pid),
        None,
    );
    signals.wait_for(
        "second DetailsUpdate",
        |s| matches!(s, Seen::Details(_, _, 500, 1000, u64::MAX, l) if l.is_empty()),
    );
    let details = signals
        .seen()
        .iter()
        .filter(|s| matches!(s, Seen::Details(..)))
        .count();
    assert_eq!(details, 2);
}

/// A worker that crashes, exits 3, or writes oddly framed output, depending on its URL.
const FAULTY_WORKER: &str = r#"case "$*" in
*crash*) echo "<3>about to crash"; kill -SEGV $$ ;;
*exit3*) echo "<4>exiting with 3"; exit 3 ;;
*relay*) printf 'one\0two\n\n<4>three\n'; head -c 5000 /dev/zero | tr '\0' x; echo
         printf '<5>no newline at the end'; exit 0 ;;
esac"#;

#[test]
fn worker_failures_and_output_framing() {
    let f = WithFakeWorker::start(FAULTY_WORKER);
    let (d, signals, conn) = (&f.d, &f.signals, &f.conn);
    let (crash, crash_path) = start_pull(conn, "PullTar", ("https://h/crash", "", "no", false));
    assert_eq!(signals.removed(crash), "failed");
    d.wait_log(|l| l == "Transfer process terminated by signal SEGV.");
    assert_eq!(
        signals.log_lines(&crash_path),
        [(3, "about to crash".to_string())]
    );
    let (exit3, _) = start_pull(conn, "PullRaw", ("https://h/exit3", "", "no", false));
    assert_eq!(signals.removed(exit3), "failed");
    d.wait_log(|l| l == "Transfer process failed with exit code 3.");

    let (relay, relay_path) = start_pull(conn, "PullTar", ("https://h/relay", "", "no", false));
    assert_eq!(signals.removed(relay), "done");
    let x = |n: usize| "x".repeat(n);
    assert_eq!(
        signals.log_lines(&relay_path),
        [
            (6, "one".to_string()),
            (6, "two".to_string()),
            (4, "three".to_string()),
            (6, x(2048)),
            (6, x(2048)),
            (6, x(904)),
            (5, "no newline at the end".to_string()),
        ]
    );
    d.wait_log(|l| l == format!("(transfer{relay}) three"));
}

#[test]
fn a_missing_worker_fails_the_call() {
    let d = Importd::start(
        Options::default().worker(std::path::Path::new("/nonexistent/systemd-pull")),
    );
    let conn = d.connect();
    let e = manager(&conn, "PullTar", ("https://h/x.tar", "", "no", false)).unwrap_err();
    assert_eq!(
        (e.0.as_str(), e.1.as_str()),
        (
            "org.freedesktop.DBus.Error.FileNotFound",
            "No such file or directory"
        )
    );
    d.wait_log(|l| {
        l == "Failed to execute /nonexistent/systemd-pull tool: No such file or directory"
    });
    // The id was used up, as upstream's is.
    let e = manager(&conn, "CancelTransfer", (1u32,)).unwrap_err();
    assert_eq!(e.1, "No transfer by id 1");
}

#[test]
fn the_65th_transfer_is_refused_and_sigterm_cancels_all() {
    let mut f = WithFakeWorker::start(HANGING_WORKER);
    let (signals, conn) = (&f.signals, &f.conn);
    for i in 1..=64u32 {
        let url = format!("https://h/{i}.tar");
        let (id, _) = start_pull(conn, "PullTar", (url.as_str(), "", "no", false));
        assert_eq!(id, i);
    }
    let e = manager(conn, "PullTar", ("https://h/65.tar", "", "no", false)).unwrap_err();
    assert_eq!(
        (e.0.as_str(), e.1.as_str()),
        ("System.Error.E2BIG", "Argument list too long")
    );
    let workers = f.d.workers();
    assert_eq!(workers.len(), 64);
    let reply = manager(conn, "ListTransfers", ()).unwrap();
    let list: Vec<(u32, String, String, String, f64, dbus::Path)> = reply.read1().unwrap();
    assert_eq!(list.len(), 64);

    f.d.signal(Signal::SIGTERM);
    let out = f.d.wait_exit();
    assert_eq!(out.status, 0, "{}", out.stderr);
    for id in 1..=64 {
        assert_eq!(signals.removed(id), "canceled");
    }
    for pid in workers {
        assert!(
            !std::path::Path::new(&format!("/proc/{pid}")).exists(),
            "worker {pid} left behind"
        );
    }
}

#[test]
fn the_daemon_exits_when_idle_but_not_while_a_transfer_runs() {
    let (_w, worker) = fake_worker("exec sleep 1");
    let idle = Options::default()
        .worker(&worker)
        .with("SYSTEMD_IMPORT_TEST_IMPORTD_EXIT_AFTER_MS", "400");
    // Unused: gone after the idle time.
    let started = Instant::now();
    let mut d = Importd::start(idle);
    let out = d.wait_exit();
    assert_eq!(out.status, 0, "{}", out.stderr);
    let waited = started.elapsed();
    assert!(waited >= Duration::from_millis(400), "{waited:?}");
    d.wait_for_name(false);

    // A transfer keeps it, then the idle time starts over.
    let (_w, worker) = fake_worker("exec sleep 1");
    let mut d = Importd::start(
        Options::default()
            .worker(&worker)
            .with("SYSTEMD_IMPORT_TEST_IMPORTD_EXIT_AFTER_MS", "400"),
    );
    let signals = SignalRecorder::start(&d.bus);
    let conn = d.connect();
    let begun = Instant::now();
    let (id, _) = start_pull(&conn, "PullTar", ("https://h/i.tar", "", "no", false));
    std::thread::sleep(Duration::from_millis(700));
    d.wait_for_name(true);
    let out = d.wait_exit();
    assert_eq!(out.status, 0, "{}", out.stderr);
    assert!(
        begun.elapsed() >= Duration::from_millis(1400),
        "{:?}",
        begun.elapsed()
    );
    assert_eq!(signals.removed(id), "done");
}

#[test]
fn sigterm_cancels_a_running_download_which_cleans_up() {
    let server = ImageServer::new();
    let mut t = Tarball::new();
    t.dir("./").file("big", &vec![2u8; 3 << 20]);
    server.put("/slow/big.tar", t.finish());
    server.shape("/slow/big.tar", |r| r.slow(128 * 1024));
    let mut d = Importd::start(Options::trusting(&server.ca.ca_pem_path()));
    let signals = SignalRecorder::start(&d.bus);
    let conn = d.connect();
    let url = server.url("/slow/big.tar");
    let (id, path) = start_pull(&conn, "PullTar", (url.as_str(), "big", "no", false));
    signals.wait_for(
        "progress",
        |s| matches!(s, Seen::Progress(p, _) if *p == path),
    );
    let worker = d.workers()[0];
    d.signal(Signal::SIGTERM);
    let out = d.wait_exit();
    assert_eq!(out.status, 0, "{}", out.stderr);
    assert_eq!(signals.removed(id), "canceled");
    assert!(out
        .stderr_lines
        .contains(&format!("(transfer{id}) Transfer aborted.")));
    assert!(
        d.machines.list_all().is_empty(),
        "{:?}",
        d.machines.list_all()
    );
    assert!(!std::path::Path::new(&format!("/proc/{worker}")).exists());
}

// ---------------------------------------------------------------------------------------
// The bad-input campaign

/// Strings the campaign draws from: valid and invalid values of every argument. URLs
/// and references point at a closed local port, so the workers that do start fail fast.
const STRINGS: &[&str] = &[
    "",
    "http://127.0.0.1:1/a.tar",
    "https://127.0.0.1:1/b.raw.xz",
    "file:///nonexistent/c.tar",
    "ftp://x/y",
    "127.0.0.1:1/a/b:1",
    "https://127.0.0.1:1",
    "a/b",
    "library/debian",
    "latest",
    "machine",
    "portable",
    "sysext",
    "confext",
    "no",
    "checksum",
    "signature",
    "img",
    "img2",
    ".#img",
    "a b",
    "ä€",
    "org.freedesktop.import1.Manager",
    "org.freedesktop.import1.Transfer",
    "Id",
    "Progress",
];

const MEMBERS: &[(&str, &str)] = &[
    ("PullTar", "sssb"),
    ("PullRaw", "sssb"),
    ("PullTarEx", "sssst"),
    ("PullRawEx", "sssst"),
    ("PullOci", "ssst"),
    ("PullDkr", "sssssb"),
    ("ListTransfers", ""),
    ("ListTransfersEx", "st"),
    ("CancelTransfer", "u"),
    ("ListImages", "st"),
    ("Cancel", ""),
    ("Get", "ss"),
    ("GetAll", "s"),
    ("Set", "ssv"),
    ("Introspect", ""),
    ("Ping", ""),
    ("Nope", "s"),
];

const INTERFACES: &[&str] = &[
    MANAGER_IFACE,
    TRANSFER_IFACE,
    "org.freedesktop.DBus.Properties",
    "org.freedesktop.DBus.Introspectable",
    "org.freedesktop.DBus.Peer",
    "org.example.Nothing",
];

fn random_string(rng: &mut Rng) -> String {
    match rng.below(10) {
        0 => (0..rng.small_len(40))
            .map(|_| char::from(rng.between(0x21, 0x7e) as u8))
            .collect(),
        1 => "n".repeat(rng.between(60, 300)),
        _ => rng.pick(STRINGS).to_string(),
    }
}

/// Append one random value of type `t` (`s u t b d o v`), or of a random type for `?`.
fn append_value(rng: &mut Rng, msg: &mut Message, t: char) {
    let t = if t == '?' {
        *rng.pick(&['s', 'u', 't', 'b', 'd', 'o', 'v', 'a'])
    } else {
        t
    };
    match t {
        's' => msg.append_all((random_string(rng),)),
        'u' => msg.append_all((*rng.pick(&[0u32, 1, 2, 3, 64, 65, u32::MAX]),)),
        't' => msg.append_all((rng.interesting_u64() & if rng.chance(1, 2) { 7 } else { !0 },)),
        'b' => msg.append_all((rng.chance(1, 2),)),
        'd' => msg.append_all((rng.next_u64() as f64 / 3.0,)),
        'o' => msg.append_all((dbus::Path::from("/org/freedesktop/import1/transfer/_1"),)),
        'v' => msg.append_all((Variant(rng.next_u64() as u32),)),
        _ => msg.append_all((vec![random_string(rng), random_string(rng)],)),
    }
}

/// One argument of a plausible call.
enum Arg {
    S(String),
    B(bool),
    T(u64),
}

/// A well-formed call of a manager member with plausible arguments, one of which is
/// sometimes replaced by a random value of its type.
fn plausible_call(rng: &mut Rng) -> Message {
    let n = rng.below(1000);
    let class = Arg::S(
        rng.pick(&["machine", "portable", "sysext", "confext"])
            .to_string(),
    );
    let verify = Arg::S(rng.pick(&["", "no", "checksum", "signature"]).to_string());
    let local = Arg::S(if rng.chance(1, 3) {
        String::new()
    } else {
        format!("img{n}")
    });
    let url = Arg::S(format!(
        "{}://127.0.0.1:1/{n}.{}",
        rng.pick(&["http", "https"]),
        rng.pick(&["tar", "tar.xz", "raw", "raw.gz"])
    ));
    let force = Arg::B(rng.chance(1, 2));
    let member = *rng.pick(&[
        "PullTar",
        "PullRaw",
        "PullTarEx",
        "PullRawEx",
        "PullOci",
        "PullDkr",
    ]);
    let args = match member {
        "PullTar" | "PullRaw" => vec![url, local, verify, force],
        "PullTarEx" | "PullRawEx" => {
            vec![url, local, class, verify, Arg::T(rng.below(8) as u64)]
        }
        "PullOci" => {
            let reference = Arg::S(format!("127.0.0.1:1/a/b:{n}"));
            vec![reference, local, class, Arg::T(rng.below(4) as u64)]
        }
        _ => {
            let index = Arg::S("https://127.0.0.1:1".into());
            let name = Arg::S(format!("a/b{n}"));
            vec![
                index,
                name,
                Arg::S(String::new()),
                local,
                Arg::S("no".into()),
                force,
            ]
        }
    };
    let mut msg = Message::new_method_call(NAME, MANAGER, MANAGER_IFACE, member).unwrap();
    let sig = MEMBERS.iter().find(|(m, _)| *m == member).unwrap().1;
    let mutate = rng.chance(1, 2).then(|| rng.below(args.len()));
    for (i, (arg, t)) in args.into_iter().zip(sig.chars()).enumerate() {
        match arg {
            _ if mutate == Some(i) => append_value(rng, &mut msg, t),
            Arg::S(v) => msg.append_all((v,)),
            Arg::B(v) => msg.append_all((v,)),
            Arg::T(v) => msg.append_all((v,)),
        }
    }
    msg
}

fn random_call(rng: &mut Rng) -> Message {
    if rng.chance(1, 2) {
        return plausible_call(rng);
    }
    let (member, sig) = *rng.pick(MEMBERS);
    let path = match rng.below(6) {
        0..=2 => MANAGER.to_string(),
        3 => format!("/org/freedesktop/import1/transfer/_{}", rng.below(8)),
        4 => "/org/freedesktop/import1/transfer".to_string(),
        _ => "/".to_string(),
    };
    let of_manager =
        member.starts_with("Pull") || member.starts_with("List") || member == "CancelTransfer";
    let iface = if of_manager && rng.chance(3, 4) {
        MANAGER_IFACE
    } else {
        rng.pick(INTERFACES)
    };
    let mut msg = Message::new_method_call(NAME, path, iface, member).unwrap();
    let types: Vec<char> = if rng.chance(3, 4) {
        sig.chars().collect()
    } else {
        (0..rng.below(7)).map(|_| '?').collect()
    };
    for t in types {
        append_value(rng, &mut msg, t);
    }
    msg
}

#[test]
fn a_seeded_campaign_of_random_calls_leaves_the_daemon_answering() {
    let seed: u64 = std::env::var("IMPORTD_CAMPAIGN_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x1e4f_0d15);
    let mut rng = Rng::new(seed);
    let mut d = Importd::start(Options::default().with("SYSTEMD_IMPORT_TEST_RETRY_DELAY_MS", "10"));
    let conn = d.connect();
    let (mut replies, mut started) = (0, 0);
    let mut errors = std::collections::BTreeMap::<String, usize>::new();
    for i in 0..3000 {
        let mut msg = random_call(&mut rng);
        if rng.chance(1, 40) {
            // No reply wanted: the daemon must stay quiet and keep going.
            msg.set_no_reply(true);
            conn.channel().send(msg).unwrap();
            continue;
        }
        let pull = msg.member().is_some_and(|m| m.starts_with("Pull"));
        match call_message(&conn, msg) {
            Ok(_) => {
                replies += 1;
                started += usize::from(pull);
            }
            Err((name, text)) => {
                assert!(
                    name != "org.freedesktop.DBus.Error.NoReply"
                        && name != "org.freedesktop.DBus.Error.ServiceUnknown",
                    "seed {seed:#x}, call {i}: {name}: {text}"
                );
                *errors.entry(name).or_default() += 1;
            }
        }
    }
    // The campaign reached the handlers: transfers started, and most kinds of refusal.
    eprintln!("seed {seed:#x}: {replies} replies ({started} transfers), errors {errors:?}");
    assert!(started >= 10 && errors.len() >= 6, "{started} {errors:?}");
    // Still answering, and every worker it started ends.
    let deadline = Instant::now() + PATIENCE;
    loop {
        let reply = manager(&conn, "ListTransfers", ()).expect("the daemon answers");
        let list: Vec<(u32, String, String, String, f64, dbus::Path)> = reply.read1().unwrap();
        if list.is_empty() {
            break;
        }
        assert!(Instant::now() < deadline, "seed {seed:#x}: {list:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
    d.wait_for_name(true);
    d.signal(Signal::SIGTERM);
    assert_eq!(d.wait_exit().status, 0);
}
