//! systemd-importd's `Import*` and `Export*` members, end to end: Debian 12's own
//! `machinectl` (systemd 252) `import-tar`, `import-raw`, `import-fs`, `export-tar` and
//! `export-raw` against our daemon and our workers (the caller's file passed as an fd,
//! the worker reading it as stdin or writing it as stdout), the members in the
//! introspection data, and the checks of the fd and the arguments.

mod common;

use std::fs;
use std::os::fd::IntoRawFd;
use std::os::unix::fs::symlink;
use std::path::Path;
use std::process::Command;

use common::btrfs::make_sparse_file;
use common::cli::CliOutput;
use common::importd::{call, manager, Importd, Options, MANAGER};
use common::tarball::{self, Tarball};

const EXE: &str = env!("CARGO_BIN_EXE_systemd-import");

/// Our daemon with our worker under each of its four names.
fn daemon(bin: &Path) -> Importd {
    let name = |n: &str| {
        let link = bin.join(n);
        symlink(EXE, &link).unwrap();
        link.display().to_string()
    };
    Importd::start(
        Options::default()
            .with("SYSTEMD_IMPORT_PATH", &name("systemd-import"))
            .with("SYSTEMD_IMPORT_FS_PATH", &name("systemd-import-fs"))
            .with("SYSTEMD_EXPORT_PATH", &name("systemd-export")),
    )
}

fn ok(label: &str, out: CliOutput) -> CliOutput {
    assert_eq!(out.status, 0, "{label}: {}", out.stderr);
    out
}

fn s(p: &Path) -> String {
    p.display().to_string()
}

#[test]
fn machinectl_imports_and_exports_through_our_daemon() {
    let work = tarball::scratch();
    let bin = work.path().join("bin");
    fs::create_dir(&bin).unwrap();
    let d = daemon(&bin);
    let machines = d.machines.path().to_path_buf();

    // import-tar, from a compressed file.
    let tar = work.path().join("demo.tar");
    fs::write(
        &tar,
        Tarball::new()
            .dir("./")
            .dir("etc/")
            .file("etc/os-release", b"ID=imported\n")
            .file("data", &[5u8; 300_000])
            .finish(),
    )
    .unwrap();
    let status = Command::new("xz").arg("-k").arg(&tar).status().unwrap();
    assert!(status.success());
    let out = ok(
        "import-tar",
        d.machinectl(&["import-tar", &s(&tar.with_extension("tar.xz")), "demo"]),
    );
    assert!(
        out.stderr.contains("Enqueued transfer job 1."),
        "{}",
        out.stderr
    );
    assert!(
        out.stderr.contains("Operation completed successfully."),
        "{}",
        out.stderr
    );
    assert_eq!(
        fs::read(machines.join("demo/etc/os-release")).unwrap(),
        b"ID=imported\n"
    );
    assert!(d.log().iter().any(|l| l.contains("(transfer1) Importing ")));

    // import-raw.
    let raw = work.path().join("disk.raw");
    let content = make_sparse_file(&raw, 4 << 20, &[(0, 512), (1 << 20, 4096)]);
    ok(
        "import-raw",
        d.machinectl(&["import-raw", &s(&raw), "disk"]),
    );
    assert_eq!(fs::read(machines.join("disk.raw")).unwrap(), content);

    // import-fs, read-only.
    let dir = work.path().join("tree");
    fs::create_dir_all(dir.join("etc")).unwrap();
    fs::write(dir.join("etc/hostname"), b"tree\n").unwrap();
    ok(
        "import-fs",
        d.machinectl(&["import-fs", "--read-only", &s(&dir), "tree"]),
    );
    assert_eq!(
        fs::read(machines.join("tree/etc/hostname")).unwrap(),
        b"tree\n"
    );
    let lsattr = Command::new("lsattr")
        .arg("-d")
        .arg(machines.join("tree"))
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&lsattr.stdout).starts_with("----i"));
    let _ = Command::new("chattr")
        .arg("-i")
        .arg(machines.join("tree"))
        .status();

    // export-tar, gzip from the suffix (machinectl passes the format), and uncompressed.
    for (file, flag) in [("out.tar.gz", "-z"), ("out.tar", "")] {
        let out_file = work.path().join(file);
        ok(
            "export-tar",
            d.machinectl(&["export-tar", "demo", &s(&out_file)]),
        );
        let x = work.path().join(format!("x-{file}"));
        fs::create_dir(&x).unwrap();
        let mut tar = Command::new("tar");
        tar.arg("-x").args((!flag.is_empty()).then_some(flag));
        assert!(tar
            .arg("-C")
            .arg(&x)
            .arg("-f")
            .arg(&out_file)
            .status()
            .unwrap()
            .success());
        assert_eq!(
            fs::read(x.join("etc/os-release")).unwrap(),
            b"ID=imported\n"
        );
        assert_eq!(fs::read(x.join("data")).unwrap(), vec![5u8; 300_000]);
    }

    // export-raw, to a file.
    let out_raw = work.path().join("out.raw");
    ok(
        "export-raw",
        d.machinectl(&["export-raw", "disk", &s(&out_raw)]),
    );
    assert_eq!(fs::read(&out_raw).unwrap(), content);

    // A failure is relayed and exits 1.
    let out = d.machinectl(&["export-tar", "missing", &s(&work.path().join("m.tar"))]);
    assert_eq!(out.status, 1, "{}", out.stderr);
    assert!(
        out.stderr.contains("Machine image missing not found."),
        "{}",
        out.stderr
    );
}

/// A method call's answer, or its error (name, message).
type Reply = Result<dbus::Message, (String, String)>;

/// A passed fd (the test keeps nothing: the message owns it).
fn fd_of(path: &Path, write: bool) -> dbus::arg::OwnedFd {
    let file = if write {
        fs::File::create(path).unwrap()
    } else {
        fs::File::open(path).unwrap()
    };
    // SAFETY: the descriptor was just opened and is owned by nothing else.
    unsafe { dbus::arg::OwnedFd::new(file.into_raw_fd()) }
}

#[test]
fn members_are_introspected_and_check_their_arguments() {
    let work = tarball::scratch();
    let bin = work.path().join("bin");
    fs::create_dir(&bin).unwrap();
    let d = daemon(&bin);
    let conn = d.connect();

    let xml: String = call(
        &conn,
        MANAGER,
        "org.freedesktop.DBus.Introspectable",
        "Introspect",
        (),
    )
    .unwrap()
    .read1()
    .unwrap();
    for (member, first_arg) in [
        ("ImportTar", r#"<arg type="h" name="fd" direction="in"/>"#),
        ("ImportTarEx", ""),
        ("ImportRaw", ""),
        ("ImportRawEx", ""),
        ("ImportFileSystem", ""),
        ("ImportFileSystemEx", ""),
        (
            "ExportTar",
            r#"<arg type="s" name="local_name" direction="in"/>"#,
        ),
        ("ExportTarEx", ""),
        ("ExportRaw", ""),
        ("ExportRawEx", ""),
    ] {
        let tag = format!(r#"<method name="{member}">"#);
        let at = xml
            .find(&tag)
            .unwrap_or_else(|| panic!("{member} missing:\n{xml}"));
        assert!(xml[at..].contains(first_arg), "{member}");
    }

    let file = work.path().join("f.tar");
    fs::write(&file, b"").unwrap();
    let dir = work.path().join("dir");
    fs::create_dir(&dir).unwrap();
    let dir_fd = || {
        let f = fs::File::open(&dir).unwrap();
        // SAFETY: just opened, owned by nothing else.
        unsafe { dbus::arg::OwnedFd::new(f.into_raw_fd()) }
    };
    let invalid = "org.freedesktop.DBus.Error.InvalidArgs";
    let cases: Vec<(Reply, &str, &str)> = vec![
        (
            manager(&conn, "ImportTar", (dir_fd(), "x", false, false)),
            invalid,
            "",
        ),
        (
            manager(
                &conn,
                "ImportFileSystem",
                (fd_of(&file, false), "x", false, false),
            ),
            "System.Error.ENOTDIR",
            "",
        ),
        (
            manager(
                &conn,
                "ImportRaw",
                (fd_of(&file, false), "a/b", false, false),
            ),
            invalid,
            "Local image name a/b is invalid",
        ),
        (
            manager(
                &conn,
                "ImportTarEx",
                (fd_of(&file, false), "x", "machine", 8u64),
            ),
            invalid,
            "Flags 0x8 invalid",
        ),
        (
            manager(&conn, "ImportRawEx", (fd_of(&file, false), "x", "vm", 0u64)),
            invalid,
            "Image class 'vm' not known",
        ),
        (
            manager(
                &conn,
                "ExportTar",
                ("x", fd_of(&work.path().join("o"), true), "lz4"),
            ),
            invalid,
            "Unknown format specified.",
        ),
        (
            manager(
                &conn,
                "ExportRawEx",
                (
                    "x",
                    "machine",
                    fd_of(&work.path().join("o2"), true),
                    "",
                    1u64,
                ),
            ),
            invalid,
            "Flags 0x1 invalid",
        ),
        (
            manager(&conn, "ExportTar", ("x", dir_fd(), "")),
            invalid,
            "",
        ),
    ];
    for (i, (result, name, message)) in cases.into_iter().enumerate() {
        let (n, m) = result.expect_err("refused");
        assert!(n.ends_with(name), "case {i}: {n}: {m}");
        assert!(m.contains(message), "case {i}: {n}: {m}");
    }
    // Nothing was started.
    let reply = manager(&conn, "ListTransfers", ()).unwrap();
    let rows: Vec<(u32, String, String, String, f64, dbus::Path)> = reply.read1().unwrap();
    assert!(rows.is_empty());
}

#[test]
fn importctl_imports_and_exports_through_our_daemon() {
    let work = tarball::scratch();
    let bin = work.path().join("bin");
    fs::create_dir(&bin).unwrap();
    let d = daemon(&bin);
    let machines = d.machines.path().to_path_buf();

    let tar = work.path().join("demo.tar.gz");
    let bytes = Tarball::new()
        .dir("./")
        .dir("etc/")
        .file("etc/os-release", b"ID=ctl\n")
        .finish();
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    std::io::Write::write_all(&mut gz, &bytes).unwrap();
    fs::write(&tar, gz.finish().unwrap()).unwrap();
    let out = ok("import-tar", d.importctl(&["import-tar", "-m", &s(&tar)]));
    assert!(
        out.stderr.contains("Importing '") && out.stderr.contains("saving as 'demo'."),
        "{}",
        out.stderr
    );
    assert_eq!(
        fs::read(machines.join("demo/etc/os-release")).unwrap(),
        b"ID=ctl\n"
    );

    let raw = work.path().join("disk.raw");
    let content = make_sparse_file(&raw, 2 << 20, &[(4096, 4096)]);
    ok(
        "import-raw",
        d.importctl(&["import-raw", "--class=machine", &s(&raw), "disk"]),
    );
    assert_eq!(fs::read(machines.join("disk.raw")).unwrap(), content);

    let dir = work.path().join("tree");
    fs::create_dir(&dir).unwrap();
    fs::write(dir.join("file"), b"tree").unwrap();
    ok(
        "import-fs",
        d.importctl(&["import-fs", "-m", &s(&dir), "tree"]),
    );
    assert_eq!(fs::read(machines.join("tree/file")).unwrap(), b"tree");

    for (file, tool) in [("out.tar.xz", "--xz"), ("out.tar", "-f")] {
        let out_file = work.path().join(file);
        ok(
            "export-tar",
            d.importctl(&["export-tar", "-m", "demo", &s(&out_file)]),
        );
        let listing = String::from_utf8_lossy(&listing_of(&out_file, tool)).into_owned();
        assert!(listing.contains("./etc/os-release"), "{file}: {listing}");
    }
    let out_raw = work.path().join("out.raw");
    ok(
        "export-raw",
        d.importctl(&["export-raw", "-m", "disk", &s(&out_raw)]),
    );
    assert_eq!(fs::read(&out_raw).unwrap(), content);

    // The checks before any call.
    let out = d.importctl(&["import-tar", &s(&tar)]);
    assert_eq!(out.status, 1);
    assert!(
        out.stderr.contains("No image class specified"),
        "{}",
        out.stderr
    );
    let out = d.importctl(&["export-tar", "-m", "--format=lz4", "demo", "x"]);
    assert_eq!(out.status, 1);
    assert!(out.stderr.contains("Unknown format: lz4"), "{}", out.stderr);
}

/// `tar -t` of an archive (`--xz` or plain).
fn listing_of(archive: &Path, flag: &str) -> Vec<u8> {
    let mut cmd = Command::new("tar");
    if flag != "-f" {
        cmd.arg(flag);
    }
    cmd.arg("-tf").arg(archive).output().unwrap().stdout
}
