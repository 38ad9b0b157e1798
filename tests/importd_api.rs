//! systemd-importd's D-Bus API through `busctl` and a plain dbus-rs client: introspection
//! against upstream's members and signatures, PullOci (real registry) and PullDkr (v1
//! fixture) end to end with the real worker, listing, properties and signals, every
//! argument error with its name and text, and who may call what (root, nobody without
//! polkit, nobody with a stand-in polkit).

mod common;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use dbus::arg::{AppendAll, RefArg, Variant};
use dbus::Message;

use common::dbus::TestBus;
use common::dkr_registry::DkrRegistry;
use common::http::lock;
use common::importd::{
    call, call_message, fake_worker, manager, start_pull, Importd, Options, Seen, SignalRecorder,
    WithFakeWorker, HANGING_WORKER, MANAGER, MANAGER_IFACE, NAME, PATIENCE, TRANSFER_IFACE,
};
use common::oci::{base_layer, Codec, ImageBuilder};
use common::registry::{Registry, RegistryOptions};
use common::tarball::Tarball;
use systemd_import::bus::{Bus, Call, Handled, Interface};
use systemd_import::event::EventLoop;

const INVALID: &str = "org.freedesktop.DBus.Error.InvalidArgs";
const FORCE: u64 = 1;
const READ_ONLY: u64 = 2;
const KEEP_DOWNLOAD: u64 = 4;

/// `busctl introspect` rows of `iface` at `path`: (member, kind, signature, result).
fn members(bus: &TestBus, path: &str, iface: &str) -> Vec<(String, String, String, String)> {
    let out = bus.busctl(&["introspect", "--no-legend", NAME, path, iface]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| {
            let cells: Vec<&str> = l.split_whitespace().collect();
            let name = cells.first()?.strip_prefix('.')?;
            let result = if cells[1] == "property" { "" } else { cells[3] };
            Some((
                name.to_string(),
                cells[1].to_string(),
                cells[2].to_string(),
                result.to_string(),
            ))
        })
        .collect()
}

fn rows(expected: &[(&str, &str, &str, &str)]) -> Vec<(String, String, String, String)> {
    let mut v: Vec<_> = expected
        .iter()
        .map(|(a, b, c, d)| (a.to_string(), b.to_string(), c.to_string(), d.to_string()))
        .collect();
    v.sort();
    v
}

#[test]
fn introspection_has_upstreams_members_and_signatures() {
    let (_w, worker) = fake_worker(HANGING_WORKER);
    let d = Importd::start(Options::default().worker(&worker));
    let mut got = members(&d.bus, MANAGER, MANAGER_IFACE);
    got.sort();
    assert_eq!(
        got,
        rows(&[
            ("CancelTransfer", "method", "u", "-"),
            ("ExportRaw", "method", "shs", "uo"),
            ("ExportRawEx", "method", "sshst", "uo"),
            ("ExportTar", "method", "shs", "uo"),
            ("ExportTarEx", "method", "sshst", "uo"),
            ("ImportFileSystem", "method", "hsbb", "uo"),
            ("ImportFileSystemEx", "method", "hsst", "uo"),
            ("ImportRaw", "method", "hsbb", "uo"),
            ("ImportRawEx", "method", "hsst", "uo"),
            ("ImportTar", "method", "hsbb", "uo"),
            ("ImportTarEx", "method", "hsst", "uo"),
            ("ListImages", "method", "st", "a(ssssbtttttt)"),
            ("ListTransfers", "method", "-", "a(usssdo)"),
            ("ListTransfersEx", "method", "st", "a(ussssdo)"),
            ("PullDkr", "method", "sssssb", "uo"),
            ("PullOci", "method", "ssst", "uo"),
            ("PullRaw", "method", "sssb", "uo"),
            ("PullRawEx", "method", "sssst", "uo"),
            ("PullTar", "method", "sssb", "uo"),
            ("PullTarEx", "method", "sssst", "uo"),
            ("TransferNew", "signal", "uo", "-"),
            ("TransferRemoved", "signal", "uos", "-"),
        ])
    );
    // Argument names, as sd-bus clients and documentation generators see them.
    let xml = d
        .bus
        .busctl(&["introspect", "--xml-interface", NAME, MANAGER]);
    let xml = String::from_utf8_lossy(&xml.stdout);
    for arg in [
        r#"<arg type="s" name="url" direction="in"/>"#,
        r#"<arg type="s" name="verify_mode" direction="in"/>"#,
        r#"<arg type="t" name="flags" direction="in"/>"#,
        r#"<arg type="o" name="transfer_path" direction="out"/>"#,
        r#"<arg type="s" name="result"/>"#,
    ] {
        assert!(xml.contains(arg), "{arg} missing:\n{xml}");
    }

    let conn = d.connect();
    let (_, path) = start_pull(&conn, "PullTar", ("https://h/i.tar", "i", "no", false));
    let mut got = members(&d.bus, &path, TRANSFER_IFACE);
    got.sort();
    assert_eq!(
        got,
        rows(&[
            ("Cancel", "method", "-", "-"),
            ("Id", "property", "u", ""),
            ("Local", "property", "s", ""),
            ("LogMessage", "signal", "us", "-"),
            ("Progress", "property", "d", ""),
            ("ProgressUpdate", "signal", "d", "-"),
            ("Remote", "property", "s", ""),
            ("Type", "property", "s", ""),
            ("Verify", "property", "s", ""),
        ])
    );
    let tree = d.bus.busctl(&["tree", "--list", NAME]);
    let tree = String::from_utf8_lossy(&tree.stdout);
    assert!(tree.lines().any(|l| l == path), "{tree}");
    // Introspection and properties are open to everyone.
    let out = d
        .bus
        .busctl_as_nobody(&["introspect", "--no-legend", NAME, &path]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = d
        .bus
        .busctl_as_nobody(&["get-property", NAME, &path, TRANSFER_IFACE, "Type"]);
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "s \"pull-tar\""
    );
}

#[test]
fn pull_oci_runs_the_worker_against_a_real_registry() {
    let reg = Registry::start(RegistryOptions::plain());
    let image = ImageBuilder::oci().layer(base_layer(), Codec::Gzip).build();
    image.push(&reg, "tests/importd-oci", Some("v1"));
    let d = Importd::start(Options::trusting(&reg.ca().ca_pem_path()));
    let signals = SignalRecorder::start(&d.bus);
    let conn = d.connect();
    let reference = format!("{}/tests/importd-oci:v1", reg.host());
    let (id, path) = start_pull(
        &conn,
        "PullOci",
        (reference.as_str(), "ocit", "machine", 0u64),
    );
    assert_eq!(signals.removed(id), "done", "{:?}", d.log());
    assert!(signals.seen().contains(&Seen::New(id, path.clone())));
    let lines = signals.log_lines(&path);
    for want in [
        format!("Pulling '{reference}', saving as 'ocit'."),
        "Operation completed successfully.".to_string(),
    ] {
        assert!(
            lines.iter().any(|(_, l)| *l == want),
            "{want} not in {lines:?}"
        );
    }
    let os_release = d.machines.path().join("ocit/etc/os-release");
    assert_eq!(std::fs::read_to_string(os_release).unwrap(), "ID=test\n");
}

#[test]
fn pull_dkr_runs_the_worker_against_a_v1_registry() {
    let reg = DkrRegistry::new();
    let tar = Tarball::new()
        .dir("./")
        .dir("etc/")
        .file("etc/os-release", b"ID=dkr\n")
        .finish();
    let layer = reg.add_layer("base", None, &tar);
    reg.tag("test/one", "latest", &layer);
    let d = Importd::start(Options::trusting(&reg.ca.ca_pem_path()).with(
        "SYSTEMD_IMPORT_TEST_DKR_REGISTRY_PORT",
        &reg.registry.port().to_string(),
    ));
    let signals = SignalRecorder::start(&d.bus);
    let conn = d.connect();
    let index = reg.index_url();
    let args = (index.as_str(), "test/one", "", "dkrt", "no", false);
    let (id, path) = start_pull(&conn, "PullDkr", args);
    assert_eq!(signals.removed(id), "done", "{:?}", d.log());
    let lines = signals.log_lines(&path);
    let want = "Pulling 'test/one' with tag 'latest', saving as 'dkrt'.";
    assert!(lines.iter().any(|(_, l)| l == want), "{lines:?}");
    let os_release = d.machines.path().join("dkrt/etc/os-release");
    assert_eq!(std::fs::read_to_string(os_release).unwrap(), "ID=dkr\n");
}

/// `Properties.GetAll` of a transfer, values as text.
fn properties(conn: &dbus::blocking::Connection, path: &str) -> HashMap<String, String> {
    let reply = call(
        conn,
        path,
        "org.freedesktop.DBus.Properties",
        "GetAll",
        (TRANSFER_IFACE,),
    )
    .unwrap();
    let all: HashMap<String, Variant<Box<dyn RefArg>>> = reply.read1().unwrap();
    all.into_iter()
        .map(|(k, v)| {
            let text = match v.0.as_str() {
                Some(s) => s.to_string(),
                None => {
                    v.0.as_f64()
                        .map_or_else(|| v.0.as_u64().unwrap().to_string(), |f| f.to_string())
                }
            };
            (k, text)
        })
        .collect()
}

#[test]
fn transfers_are_listed_described_announced_and_cancelled() {
    let f = WithFakeWorker::start(HANGING_WORKER);
    let (d, signals, conn) = (&f.d, &f.signals, &f.conn);
    let (id1, p1) = start_pull(conn, "PullTar", ("https://h/a.tar.xz", "alpha", "", false));
    let (id2, p2) = start_pull(
        conn,
        "PullRawEx",
        (
            "https://h/b.raw",
            "beta",
            "portable",
            "checksum",
            FORCE | READ_ONLY | KEEP_DOWNLOAD,
        ),
    );
    let (id3, p3) = start_pull(conn, "PullOci", ("127.0.0.1:1/x/y:1", "", "sysext", 0u64));
    assert_eq!((id1, id2, id3), (1, 2, 3));
    // The worker's command line (a v256+ daemon's, legacy calls without keep-download),
    // relayed at the priority the fake worker gave it.
    for (path, argv) in [
        (&p1, "tar --verify signature https://h/a.tar.xz alpha"),
        (
            &p2,
            "raw --verify checksum --class portable --keep-download=yes --force --read-only \
             https://h/b.raw beta",
        ),
        (&p3, "oci --class sysext 127.0.0.1:1/x/y:1"),
    ] {
        let want = Seen::Log(path.clone(), 5, format!("fake worker: {argv}"));
        signals.wait_for("the worker's argv", |s| *s == want);
    }
    for (id, path) in [(id1, &p1), (id2, &p2), (id3, &p3)] {
        assert!(signals.seen().contains(&Seen::New(id, path.clone())));
    }

    let reply = manager(conn, "ListTransfers", ()).unwrap();
    let list: Vec<(u32, String, String, String, f64, dbus::Path)> = reply.read1().unwrap();
    let unknown = -f64::MAX;
    assert_eq!(
        list.iter()
            .map(|r| (
                r.0,
                r.1.as_str(),
                r.2.as_str(),
                r.3.as_str(),
                r.4,
                r.5.to_string()
            ))
            .collect::<Vec<_>>(),
        [
            (
                1,
                "pull-tar",
                "https://h/a.tar.xz",
                "alpha",
                unknown,
                p1.clone()
            ),
            (
                2,
                "pull-raw",
                "https://h/b.raw",
                "beta",
                unknown,
                p2.clone()
            ),
            (3, "pull-oci", "127.0.0.1:1/x/y:1", "", unknown, p3.clone()),
        ]
    );
    type RowEx = (
        u32,
        String,
        String,
        String,
        String,
        f64,
        dbus::Path<'static>,
    );
    let ex = |class: &str| -> Vec<(u32, String)> {
        let reply = manager(conn, "ListTransfersEx", (class, 0u64)).unwrap();
        let rows: Vec<RowEx> = reply.read1().unwrap();
        rows.into_iter().map(|r| (r.0, r.4)).collect()
    };
    assert_eq!(
        ex(""),
        [
            (1, "machine".into()),
            (2, "portable".into()),
            (3, "sysext".into())
        ]
    );
    assert_eq!(ex("portable"), [(2, "portable".to_string())]);
    assert!(ex("confext").is_empty());

    let props = properties(conn, &p1);
    let want: HashMap<String, String> = [
        ("Id", "1"),
        ("Local", "alpha"),
        ("Remote", "https://h/a.tar.xz"),
        ("Type", "pull-tar"),
        ("Verify", "signature"),
        ("Progress", &(-f64::MAX).to_string()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    assert_eq!(props, want);
    assert_eq!(properties(conn, &p3)["Verify"], "");

    // Cancel through the transfer object and through the manager.
    call(conn, &p2, TRANSFER_IFACE, "Cancel", ()).unwrap();
    assert_eq!(signals.removed(id2), "canceled");
    for id in [id1, id3] {
        manager(conn, "CancelTransfer", (id,)).unwrap();
        assert_eq!(signals.removed(id), "canceled");
    }
    d.wait_log(|l| l == "Transfer process terminated by signal TERM.");
    let reply = manager(conn, "ListTransfers", ()).unwrap();
    let list: Vec<(u32, String, String, String, f64, dbus::Path)> = reply.read1().unwrap();
    assert!(list.is_empty());
    // Ids are never reused.
    let (id4, _) = start_pull(conn, "PullTar", ("https://h/a.tar.xz", "alpha", "", false));
    assert_eq!(id4, 4);
}

/// A call of `member` on the manager.
fn mgr(member: &str) -> Message {
    method(MANAGER, MANAGER_IFACE, member)
}

fn method(path: &str, iface: &str, member: &str) -> Message {
    Message::new_method_call(NAME, path, iface, member).unwrap()
}

/// `msg` with `args` appended.
fn with<A: AppendAll>(mut msg: Message, args: A) -> Message {
    msg.append_all(args);
    msg
}

#[test]
fn every_bad_argument_is_refused_with_upstreams_error() {
    let f = WithFakeWorker::start(HANGING_WORKER);
    let (d, signals, conn) = (&f.d, &f.signals, &f.conn);
    let (_, running) = start_pull(conn, "PullTar", ("https://h/dup.tar", "dup", "no", false));
    let long = "n".repeat(256);
    let long_msg = format!("Local image name {long} is invalid");
    let cases: Vec<(Message, &str, &str)> = vec![
        (with(mgr("PullTar"), ("ftp://h/x", "", "", false)), INVALID, "URL ftp://h/x is invalid"),
        (with(mgr("PullRaw"), ("", "", "", false)), INVALID, "URL  is invalid"),
        (with(mgr("PullRaw"), ("https://h/x.raw", "a/b", "", false)), INVALID, "Local image name a/b is invalid"),
        (with(mgr("PullTar"), ("https://h/x", long.as_str(), "", false)), INVALID, long_msg.as_str()),
        (with(mgr("PullTar"), ("https://h/x", "", "sometimes", false)), INVALID, "Unknown verification mode sometimes"),
        (with(mgr("PullTarEx"), ("https://h/x", "", "vm", "", 0u64)), INVALID, "Image class 'vm' not known"),
        (with(mgr("PullRawEx"), ("https://h/x", "", "machine", "", 0xff08u64)), INVALID, "Flags 0xff08 invalid"),
        (with(mgr("PullOci"), ("bad ref", "", "machine", 0u64)), INVALID, "Reference 'bad ref' is invalid"),
        (with(mgr("PullOci"), ("a/b", "", "machine", KEEP_DOWNLOAD)), INVALID, "Flags 0x4 invalid"),
        (with(mgr("PullDkr"), ("", "a/b", "", "", "no", false)), INVALID, "Index URL must be specified."),
        (with(mgr("PullDkr"), ("ftp://i", "a/b", "", "", "no", false)), INVALID, "Index URL ftp://i is invalid"),
        (with(mgr("PullDkr"), ("https://i", "one", "", "", "no", false)), INVALID, "Remote name one is not valid"),
        (with(mgr("PullDkr"), ("https://i", "a/b", "x/y", "", "no", false)), INVALID, "Tag x/y is not valid"),
        (with(mgr("PullDkr"), ("https://i", "a/b", "", "a:b", "no", false)), INVALID, "Local name a:b is invalid"),
        (with(mgr("PullDkr"), ("https://i", "a/b", "", "", "", false)), "org.freedesktop.DBus.Error.NotSupported", "DKR does not support verification."),
        (with(mgr("ListTransfersEx"), ("vm", 0u64)), INVALID, "Image class 'vm' not known"),
        (with(mgr("ListTransfersEx"), ("", 1u64)), INVALID, "Flags 0x1 invalid"),
        (with(mgr("ListImages"), ("", 2u64)), INVALID, "Flags 0x2 invalid"),
        (with(mgr("CancelTransfer"), (0u32,)), INVALID, "Invalid transfer id"),
        (with(mgr("CancelTransfer"), (42u32,)), "org.freedesktop.import1.NoSuchTransfer", "No transfer by id 42"),
        (with(mgr("PullTar"), ("https://h/dup.tar", "other", "", true)), "org.freedesktop.import1.TransferInProgress", "Transfer for https://h/dup.tar already in progress."),
        (with(mgr("PullTar"), ("https://h/x", "", "")), INVALID, "Invalid arguments 'sss' to call org.freedesktop.import1.Manager.PullTar(), expecting 'sssb'."),
        (with(mgr("PullZip"), ()), "org.freedesktop.DBus.Error.UnknownMethod", "Unknown method PullZip or interface org.freedesktop.import1.Manager."),
        (with(method("/org/freedesktop/import1/transfer/_99", TRANSFER_IFACE, "Cancel"), ()), "org.freedesktop.DBus.Error.UnknownObject", "Unknown object '/org/freedesktop/import1/transfer/_99'."),
        (with(method(&running, "org.freedesktop.DBus.Properties", "Set"), (TRANSFER_IFACE, "Local", Variant("x"))), "org.freedesktop.DBus.Error.PropertyReadOnly", "Property 'Local' is not writable."),
    ];
    for (msg, name, text) in cases {
        let member = msg.member().unwrap().to_string();
        let (got_name, got_text) = call_message(conn, msg).expect_err(&member);
        assert_eq!(
            (got_name.as_str(), got_text.as_str()),
            (name, text),
            "{member}"
        );
    }
    // A transfer of another type for the same URL is no duplicate.
    let (second, _) = start_pull(conn, "PullRaw", ("https://h/dup.tar", "", "no", false));
    // Nothing else ran: two transfers, two workers. (The signal reaches the recorder's
    // connection on its own schedule.)
    signals.wait_for(
        "TransferNew",
        |s| matches!(s, Seen::New(id, _) if *id == second),
    );
    let news = signals
        .seen()
        .iter()
        .filter(|s| matches!(s, Seen::New(..)))
        .count();
    assert_eq!(news, 2);
    assert_eq!(
        d.workers().len(),
        2,
        "{:?}\n{}",
        d.workers(),
        d.log().join("\n")
    );
}

#[test]
fn callers_other_than_root_are_refused_without_polkit() {
    let f = WithFakeWorker::start(HANGING_WORKER);
    let (d, signals, conn) = (&f.d, &f.signals, &f.conn);
    let (id, path) = start_pull(conn, "PullTar", ("https://h/root.tar", "", "no", false));
    let denied = [
        vec!["PullTar", "sssb", "https://h/n.tar", "n", "no", "false"],
        vec![
            "PullRawEx",
            "sssst",
            "https://h/n.raw",
            "",
            "machine",
            "no",
            "0",
        ],
        vec!["PullOci", "ssst", "a/b", "", "machine", "0"],
        vec!["CancelTransfer", "u", "1"],
    ];
    for args in denied {
        let mut argv = vec!["call", NAME, MANAGER, MANAGER_IFACE];
        argv.extend(args.iter().copied());
        let out = d.bus.busctl_as_nobody(&argv);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?} was allowed");
        // busctl words AccessDenied as "Access denied" whatever the message.
        assert_eq!(stderr.trim(), "Call failed: Access denied", "{args:?}");
    }
    let out = d.bus.dbus_send_as_nobody(&[
        "--dest=org.freedesktop.import1",
        MANAGER,
        "org.freedesktop.import1.Manager.PullTar",
        "string:https://h/n.tar",
        "string:",
        "string:no",
        "boolean:false",
    ]);
    assert_eq!(
        String::from_utf8_lossy(&out.stderr).trim(),
        "Error org.freedesktop.DBus.Error.AccessDenied: Permission denied"
    );
    let out = d
        .bus
        .busctl_as_nobody(&["call", NAME, &path, TRANSFER_IFACE, "Cancel"]);
    assert!(!out.status.success());
    // Listing is open to all.
    let out = d
        .bus
        .busctl_as_nobody(&["call", NAME, MANAGER, MANAGER_IFACE, "ListTransfers"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.starts_with("a(usssdo) 1 1 \"pull-tar\""), "{stdout}");
    // Nothing was started or cancelled for nobody.
    signals.wait_for("TransferNew", |s| matches!(s, Seen::New(i, _) if *i == id));
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(d.workers().len(), 1);
    let news = signals
        .seen()
        .iter()
        .filter(|s| matches!(s, Seen::New(..)))
        .count();
    assert_eq!(news, 1);
    assert!(!signals
        .seen()
        .iter()
        .any(|s| matches!(s, Seen::Removed(i, ..) if *i == id)));
}

/// A stand-in for polkit on the test bus: answers `CheckAuthorization` as told and
/// records (action, flags) of every check.
struct FakePolkit {
    answer: Arc<Mutex<(bool, bool)>>,
    checks: Arc<Mutex<Vec<(String, u32)>>>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

struct PolkitData {
    bus: Bus<PolkitData>,
    answer: Arc<Mutex<(bool, bool)>>,
    checks: Arc<Mutex<Vec<(String, u32)>>>,
    owned: bool,
}

fn check_authorization(_: &mut EventLoop<PolkitData>, p: &mut PolkitData, call: Call) -> Handled {
    let mut it = call.message().iter_init();
    let _subject: (String, HashMap<String, Variant<Box<dyn RefArg>>>) = it.read().unwrap();
    let action: String = it.read().unwrap();
    let _details: HashMap<String, String> = it.read().unwrap();
    let flags: u32 = it.read().unwrap();
    lock(&p.checks).push((action, flags));
    let (authorized, challenge) = *lock(&p.answer);
    call.ok(((authorized, challenge, HashMap::<String, String>::new()),))
}

impl FakePolkit {
    fn start(bus: &TestBus) -> FakePolkit {
        let answer = Arc::new(Mutex::new((false, false)));
        let checks = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (a, c, s) = (Arc::clone(&answer), Arc::clone(&checks), Arc::clone(&stop));
        let address = bus.address().to_string();
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let thread = std::thread::spawn(move || {
            let mut lp = EventLoop::new().unwrap();
            let mut p = PolkitData {
                bus: Bus::open(&address, |p: &mut PolkitData| &mut p.bus).unwrap(),
                answer: a,
                checks: c,
                owned: false,
            };
            p.bus.add_object(
                "/org/freedesktop/PolicyKit1/Authority",
                vec![
                    Interface::new("org.freedesktop.PolicyKit1.Authority").method(
                        "CheckAuthorization",
                        &[
                            ("subject", "(sa{sv})"),
                            ("action_id", "s"),
                            ("details", "a{ss}"),
                            ("flags", "u"),
                            ("cancellation_id", "s"),
                        ],
                        &[("result", "(bba{ss})")],
                        check_authorization,
                    ),
                ],
            );
            p.bus.attach(&mut lp).unwrap();
            p.bus
                .request_name(&mut lp, "org.freedesktop.PolicyKit1", |_, p, r| {
                    assert_eq!(r, Ok(1));
                    p.owned = true;
                });
            let mut told = false;
            while !s.load(Ordering::Acquire) {
                lp.run_once(&mut p, Some(Duration::from_millis(20)))
                    .unwrap();
                if p.owned && !told {
                    told = true;
                    ready_tx.send(()).unwrap();
                }
            }
        });
        ready_rx
            .recv_timeout(PATIENCE)
            .expect("fake polkit owns its name");
        FakePolkit {
            answer,
            checks,
            stop,
            thread: Some(thread),
        }
    }

    fn answer(&self, authorized: bool, challenge: bool) {
        *lock(&self.answer) = (authorized, challenge);
    }

    fn checks(&self) -> Vec<(String, u32)> {
        lock(&self.checks).clone()
    }
}

impl Drop for FakePolkit {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

#[test]
fn polkit_decides_for_callers_other_than_root() {
    let (_w, worker) = fake_worker(HANGING_WORKER);
    let d = Importd::start(Options::default().worker(&worker));
    let polkit = FakePolkit::start(&d.bus);
    let pull = |interactive: &str, url: &str| {
        d.bus.busctl_as_nobody(&[
            &format!("--allow-interactive-authorization={interactive}"),
            "call",
            NAME,
            MANAGER,
            MANAGER_IFACE,
            "PullTar",
            "sssb",
            url,
            "",
            "no",
            "false",
        ])
    };
    let stderr =
        |out: &std::process::Output| String::from_utf8_lossy(&out.stderr).trim().to_string();

    polkit.answer(false, false);
    let out = pull("no", "https://h/1.tar");
    assert_eq!(stderr(&out), "Call failed: Access denied");
    // polkit could ask: the caller learns that it must allow interaction.
    polkit.answer(false, true);
    let out = pull("no", "https://h/2.tar");
    assert_eq!(
        stderr(&out),
        "Call failed: Interactive authentication required."
    );
    assert!(d.workers().is_empty());
    // Authorized: the transfer starts.
    polkit.answer(true, false);
    let out = pull("yes", "https://h/3.tar");
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "uo 1 \"/org/freedesktop/import1/transfer/_1\""
    );
    let out = d.bus.busctl_as_nobody(&[
        "call",
        NAME,
        MANAGER,
        MANAGER_IFACE,
        "CancelTransfer",
        "u",
        "1",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let pull_action = "org.freedesktop.import1.pull".to_string();
    assert_eq!(
        polkit.checks(),
        [
            (pull_action.clone(), 0),
            (pull_action.clone(), 0),
            (pull_action, 1),
            ("org.freedesktop.import1.cancel".to_string(), 1),
        ]
    );
    // Root never asks polkit.
    let conn = d.connect();
    start_pull(&conn, "PullTar", ("https://h/4.tar", "", "no", false));
    assert_eq!(polkit.checks().len(), 4);
}
