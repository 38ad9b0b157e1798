//! Hostile archives. Every case plants a sentinel file and a sentinel directory next to
//! the root (outside it), runs the unpacker, checks the expected error (errno and a
//! fragment of the logged line) or the expected contained result, and then proves that
//! nothing outside the root changed: the sentinel's content, mode, owner and mtime, the
//! sentinel directory's listing, and the scratch directory itself (no new entries).

mod common;

use std::fs;
use std::io::{Cursor, Read, Write};
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};

use common::tarball::{self, base256, Header, Snapshot, Tarball};
use systemd_import::import::unpack::{Limits, Mode, Options};
use systemd_import::util::error::Result;

/// Log lines per thread (tests run in parallel threads of this binary).
static LINES: std::sync::Mutex<Vec<(std::thread::ThreadId, log::Level, String)>> =
    std::sync::Mutex::new(Vec::new());

struct Capture;

impl log::Log for Capture {
    fn enabled(&self, _: &log::Metadata<'_>) -> bool {
        true
    }
    fn log(&self, record: &log::Record<'_>) {
        let line = (
            std::thread::current().id(),
            record.level(),
            record.args().to_string(),
        );
        LINES.lock().unwrap().push(line);
    }
    fn flush(&self) {}
}

static CAPTURE: Capture = Capture;

/// This thread's log lines at `level` since the last call.
fn take_lines(level: log::Level) -> Vec<String> {
    let me = std::thread::current().id();
    let mut lines = LINES.lock().unwrap();
    let mine: Vec<String> = lines
        .iter()
        .filter(|(t, l, _)| *t == me && *l == level)
        .map(|(_, _, m)| m.clone())
        .collect();
    lines.retain(|(t, l, _)| *t != me || *l != level);
    mine
}

struct Sandbox {
    tmp: tempfile::TempDir,
    root: PathBuf,
    outside: PathBuf,
    before: Snapshot,
}

/// Everything in the scratch directory except the root's contents.
fn outside_state(tmp: &Path) -> Snapshot {
    tarball::snapshot(tmp)
        .into_iter()
        .filter(|(p, _)| !p.starts_with("./root/"))
        .map(|(p, mut n)| {
            // The root's own mtime and mode may change (it is ours to change).
            if p == Path::new("./root") {
                n.mtime = (0, 0);
                n.mode = 0;
            }
            (p, n)
        })
        .collect()
}

impl Sandbox {
    fn new() -> Self {
        static INIT: std::sync::Once = std::sync::Once::new();
        INIT.call_once(|| {
            log::set_logger(&CAPTURE).unwrap();
            log::set_max_level(log::LevelFilter::Warn);
        });
        take_lines(log::Level::Error);
        take_lines(log::Level::Warn);
        let tmp = tarball::scratch();
        let root = tmp.path().join("root");
        let outside = tmp.path().join("outside");
        fs::create_dir(&root).unwrap();
        fs::create_dir(&outside).unwrap();
        fs::write(outside.join("sentinel"), b"sentinel content").unwrap();
        fs::create_dir(outside.join("sentinel-dir")).unwrap();
        fs::write(outside.join("sentinel-dir/inner"), b"inner").unwrap();
        let before = outside_state(tmp.path());
        Sandbox {
            tmp,
            root,
            outside,
            before,
        }
    }

    fn outside_str(&self) -> String {
        self.outside.display().to_string()
    }

    fn run(&self, data: &[u8], mode: Mode) -> Result<systemd_import::import::unpack::Stats> {
        tarball::unpack_bytes(&self.root, data, mode)
    }

    fn run_with(
        &self,
        input: &mut dyn Read,
        options: &Options,
    ) -> Result<systemd_import::import::unpack::Stats> {
        tarball::unpack_with(&self.root, input, options)
    }

    /// Nothing outside the root changed.
    fn check(&self) {
        let after = outside_state(self.tmp.path());
        let differences = tarball::diff(&self.before, &after);
        assert!(
            differences.is_empty(),
            "outside the root changed:\n{}",
            differences.join("\n")
        );
        assert_eq!(
            fs::read(self.outside.join("sentinel")).unwrap(),
            b"sentinel content"
        );
    }

    fn expect_err(&self, data: &[u8], mode: Mode, errno: i32, fragment: &str) {
        let err = self
            .run(data, mode)
            .expect_err("hostile archive was accepted");
        check_err(&err, errno, fragment);
        self.check();
    }
}

/// The errno, a fragment of the message, and that exactly that one line was logged.
fn check_err(err: &systemd_import::util::error::Error, errno: i32, fragment: &str) {
    let msg = err.msg().unwrap_or_default();
    assert_eq!(err.errno(), errno, "wrong errno for {msg:?}");
    assert!(msg.contains(fragment), "message {msg:?} lacks {fragment:?}");
    assert_eq!(
        take_lines(log::Level::Error),
        [msg],
        "the failure must be logged once"
    );
}

fn archive(build: impl FnOnce(&mut Tarball, &str)) -> impl FnOnce(&Sandbox) -> Vec<u8> {
    move |sb| {
        let mut t = Tarball::new();
        build(&mut t, &sb.outside_str());
        t.finish()
    }
}

#[test]
fn absolute_names_are_contained() {
    let sb = Sandbox::new();
    let data = archive(|t, out| {
        t.file(&format!("{out}/sentinel"), b"overwritten?");
        t.file("/abs-file", b"a");
    })(&sb);
    sb.run(&data, Mode::Plain).unwrap();
    assert_eq!(
        take_lines(log::Level::Warn),
        ["Removing leading '/' from member names."]
    );
    let inside = sb
        .root
        .join(sb.outside.strip_prefix("/").unwrap())
        .join("sentinel");
    assert_eq!(fs::read(inside).unwrap(), b"overwritten?");
    assert_eq!(fs::read(sb.root.join("abs-file")).unwrap(), b"a");
    sb.check();
}

#[test]
fn dotdot_names_are_refused() {
    for name in [
        "../outside/sentinel",
        "a/../../outside/sentinel",
        "a/b/../c",
        "..",
    ] {
        let sb = Sandbox::new();
        let mut t = Tarball::new();
        t.file(name, b"evil");
        sb.expect_err(
            &t.finish(),
            Mode::Plain,
            libc::EINVAL,
            "member name contains '..'",
        );
    }
    // The same through a PAX path and a GNU long name.
    let sb = Sandbox::new();
    let mut t = Tarball::new();
    t.pax(&[("path", b"../outside/sentinel")])
        .file("harmless", b"evil");
    sb.expect_err(
        &t.finish(),
        Mode::Oci,
        libc::EINVAL,
        "'../outside/sentinel': member name contains '..'",
    );
    let mut t = Tarball::new();
    t.gnu_long(b'L', b"x/../../../outside/sentinel")
        .file("harmless", b"evil");
    sb.expect_err(
        &t.finish(),
        Mode::Aufs,
        libc::EINVAL,
        "member name contains '..'",
    );
}

#[test]
fn symlink_parent_in_the_same_archive() {
    // Absolute target: resolved inside the root, where it does not exist.
    let sb = Sandbox::new();
    let data = archive(|t, out| {
        t.symlink("evil", out).file("evil/sentinel", b"evil");
    })(&sb);
    sb.expect_err(
        &data,
        Mode::Plain,
        libc::EEXIST,
        "cannot open or create parent directory 'evil'",
    );

    // '../..' target: clamped at the root, so it lands in the root's own 'outside'.
    let sb = Sandbox::new();
    let mut t = Tarball::new();
    t.dir("outside")
        .symlink("evil", "../../../outside")
        .file("evil/sentinel", b"contained");
    sb.run(&t.finish(), Mode::Plain).unwrap();
    assert_eq!(
        fs::read(sb.root.join("outside/sentinel")).unwrap(),
        b"contained"
    );
    sb.check();
}

#[test]
fn symlink_parent_in_a_lower_layer() {
    for mode in [Mode::Plain, Mode::Aufs, Mode::Oci] {
        let sb = Sandbox::new();
        symlink(&sb.outside, sb.root.join("lowerlink")).unwrap();
        symlink("../outside", sb.root.join("relative")).unwrap();
        let mut t = Tarball::new();
        t.file("lowerlink/sentinel", b"evil");
        sb.expect_err(&t.finish(), mode, libc::EEXIST, "'lowerlink/sentinel'");
        let mut t = Tarball::new();
        t.file("relative/sentinel-dir/new", b"evil");
        sb.expect_err(
            &t.finish(),
            mode,
            libc::EEXIST,
            "'relative/sentinel-dir/new'",
        );
    }
}

#[test]
fn symlink_chains_stay_inside() {
    let sb = Sandbox::new();
    let data = archive(|t, out| {
        t.symlink("a", "b")
            .symlink("b", "c")
            .symlink("c", "../../outside");
        t.symlink("d", out);
        t.symlink("e", "d");
        t.file("a/sentinel", b"chain");
    })(&sb);
    sb.expect_err(&data, Mode::Plain, libc::EEXIST, "'a/sentinel'");
    let mut t = Tarball::new();
    t.file("e/sentinel", b"chain");
    sb.expect_err(&t.finish(), Mode::Plain, libc::EEXIST, "'e/sentinel'");
}

#[test]
fn symlink_to_slash_resolves_to_the_root() {
    let sb = Sandbox::new();
    let mut t = Tarball::new();
    t.symlink("rootlink", "/")
        .symlink("up", "../../../../..")
        .file("rootlink/etc-file", b"r");
    t.file("up/via-up", b"u");
    sb.run(&t.finish(), Mode::Plain).unwrap();
    assert_eq!(fs::read(sb.root.join("etc-file")).unwrap(), b"r");
    assert_eq!(fs::read(sb.root.join("via-up")).unwrap(), b"u");
    sb.check();
}

#[test]
fn hardlink_escapes_are_refused() {
    let sb = Sandbox::new();
    let mut t = Tarball::new();
    t.hardlink("h", "../outside/sentinel");
    sb.expect_err(&t.finish(), Mode::Plain, libc::EINVAL, "contains '..'");

    let data = archive(|t, out| {
        t.hardlink("h", &format!("{out}/sentinel"));
    })(&sb);
    sb.expect_err(&data, Mode::Plain, libc::ENOENT, "does not exist");

    let data = archive(|t, out| {
        t.symlink("evil", out).hardlink("h", "evil/sentinel");
    })(&sb);
    sb.expect_err(
        &data,
        Mode::Oci,
        libc::ENOENT,
        "hard link target 'evil/sentinel' does not exist",
    );

    let mut t = Tarball::new();
    t.hardlink("h", "missing");
    sb.expect_err(
        &t.finish(),
        Mode::Plain,
        libc::ENOENT,
        "'h': hard link target 'missing' does not exist",
    );

    let mut t = Tarball::new();
    t.dir("d").hardlink("h", "d");
    sb.expect_err(&t.finish(), Mode::Plain, libc::EPERM, "is a directory");

    let mut t = Tarball::new();
    t.hardlink("h", "/");
    sb.expect_err(&t.finish(), Mode::Plain, libc::EPERM, "root directory");
}

#[test]
fn hardlink_to_a_symlink_links_the_symlink_itself() {
    let sb = Sandbox::new();
    let data = archive(|t, out| {
        t.symlink("s", &format!("{out}/sentinel"))
            .hardlink("h", "s");
        // Writing a member over the hard link replaces it; the target is not opened.
        t.file("h", b"evil");
    })(&sb);
    sb.run(&data, Mode::Plain).unwrap();
    assert!(fs::symlink_metadata(sb.root.join("s"))
        .unwrap()
        .file_type()
        .is_symlink());
    assert_eq!(fs::read(sb.root.join("h")).unwrap(), b"evil");
    sb.check();
    // A lower file hard-linked to the outside cannot exist, but a lower hard link group
    // inside the root keeps its other names unchanged when one name is replaced.
    fs::write(sb.root.join("lower"), b"lower").unwrap();
    fs::hard_link(sb.root.join("lower"), sb.root.join("other-name")).unwrap();
    let mut t = Tarball::new();
    t.file("lower", b"replaced");
    sb.run(&t.finish(), Mode::Oci).unwrap();
    assert_eq!(fs::read(sb.root.join("other-name")).unwrap(), b"lower");
    sb.check();
}

#[test]
fn root_as_a_symlink_is_refused() {
    // CVE-2021-29136: a `/.` symlink.
    for name in [".", "/.", "./", "/"] {
        let sb = Sandbox::new();
        let data = archive(|t, out| {
            t.symlink(name, out).file("sentinel", b"evil");
        })(&sb);
        sb.expect_err(
            &data,
            Mode::Oci,
            libc::EINVAL,
            "names the root directory but is not a directory",
        );
    }
    // As a directory it only sets the root's attributes.
    let sb = Sandbox::new();
    let mut t = Tarball::new();
    t.entry(&Header::dir("./").mode(0o700), b"");
    sb.run(&t.finish(), Mode::Plain).unwrap();
    sb.check();
}

#[test]
fn whiteouts_through_symlinks_stay_inside() {
    for target in ["abs", "../outside", "../../outside"] {
        let sb = Sandbox::new();
        let target = if target == "abs" {
            sb.outside_str()
        } else {
            target.to_string()
        };
        symlink(&target, sb.root.join("link")).unwrap();
        let mut t = Tarball::new();
        t.file("link/.wh.sentinel", b"")
            .file("link/.wh.sentinel-dir", b"");
        t.file("link/sentinel-dir/.wh..wh..opq", b"");
        t.file("link/.wh..wh..opq", b"");
        sb.run(&t.finish(), Mode::Oci).unwrap();
        assert!(fs::symlink_metadata(sb.root.join("link"))
            .unwrap()
            .file_type()
            .is_symlink());
        sb.check();
        // Whiting out the link itself removes the link, not its target.
        let mut t = Tarball::new();
        t.file(".wh.link", b"");
        sb.run(&t.finish(), Mode::Aufs).unwrap();
        assert!(!sb.root.join("link").exists());
        sb.check();
    }
}

#[test]
fn whiteouts_of_dot_and_dotdot_are_refused() {
    // `.wh...` at the top would name the root's parent.
    for name in [".wh..", ".wh...", "sub/.wh...", "sub/.wh.."] {
        for mode in [Mode::Aufs, Mode::Oci] {
            let sb = Sandbox::new();
            fs::create_dir(sb.root.join("sub")).unwrap();
            fs::write(sb.root.join("sub/lower"), b"l").unwrap();
            let mut t = Tarball::new();
            t.file(name, b"");
            sb.expect_err(&t.finish(), mode, libc::EINVAL, "whiteout of '.' or '..'");
            assert!(sb.root.join("sub/lower").exists());
        }
    }
}

#[test]
fn directory_entry_over_a_symlink_to_outside() {
    let sb = Sandbox::new();
    symlink(&sb.outside, sb.root.join("lowerdir")).unwrap();
    let data = archive(|t, out| {
        t.symlink("samedir", out);
        t.entry(
            &Header::dir("samedir")
                .mode(0o777)
                .owner(1234, 1234)
                .mtime(1),
            b"",
        );
        t.entry(
            &Header::dir("lowerdir")
                .mode(0o777)
                .owner(1234, 1234)
                .mtime(1),
            b"",
        );
    })(&sb);
    sb.run(&data, Mode::Oci).unwrap();
    for d in ["samedir", "lowerdir"] {
        assert!(
            fs::symlink_metadata(sb.root.join(d)).unwrap().is_dir(),
            "{d}"
        );
    }
    sb.check();
}

#[test]
fn a_directory_replaced_by_a_symlink_gets_no_delayed_attributes() {
    // The directory's owner/mode/mtime are applied after its children; by then it is a
    // symlink to the outside, which must not receive them.
    let sb = Sandbox::new();
    let data = archive(|t, out| {
        t.entry(
            &Header::dir("d").mode(0o777).owner(1234, 1234).mtime(1),
            b"",
        );
        t.symlink("d", &format!("{out}/sentinel-dir"));
        t.entry(&Header::symlink("d2", "../outside/sentinel-dir"), b"");
        t.file("after", b"x");
    })(&sb);
    sb.run(&data, Mode::Plain).unwrap();
    sb.check();
    // And a parent cached before the replacement is not reused afterwards.
    let data = archive(|t, out| {
        t.dir("p")
            .file("p/one", b"1")
            .symlink("p", out)
            .file("p/sentinel", b"evil");
    })(&sb);
    sb.expect_err(&data, Mode::Plain, libc::EEXIST, "'p/sentinel'");
}

#[test]
fn metadata_of_symlinks_is_set_without_following() {
    let sb = Sandbox::new();
    let data = archive(|t, out| {
        t.entry(
            &Header::symlink("s", format!("{out}/sentinel"))
                .owner(1234, 4321)
                .mode(0o777)
                .mtime(5),
            b"",
        );
        t.pax(&[("SCHILY.xattr.trusted.evil", b"1")]);
        t.entry(
            &Header::symlink("s2", "../outside/sentinel")
                .owner(1234, 4321)
                .mtime(5),
            b"",
        );
    })(&sb);
    sb.run(&data, Mode::Plain).unwrap();
    let md = fs::symlink_metadata(sb.root.join("s")).unwrap();
    use std::os::unix::fs::MetadataExt;
    assert_eq!((md.uid(), md.gid(), md.mtime()), (1234, 4321, 5));
    assert!(tarball::xattrs(&sb.root.join("s2")).contains_key(&b"trusted.evil"[..]));
    sb.check();
    // A later member of another type at that path replaces the symlink.
    for entry in [
        Header::file("s").mode(0o4777),
        Header::new("s", b'6'),
        Header::new("s", b'3').dev(1, 3),
    ] {
        let mut t = Tarball::new();
        t.entry(&entry.owner(1234, 1234), b"");
        sb.run(&t.finish(), Mode::Plain).unwrap();
        assert!(!fs::symlink_metadata(sb.root.join("s"))
            .unwrap()
            .file_type()
            .is_symlink());
        sb.check();
        fs::remove_file(sb.root.join("s")).unwrap();
        symlink(sb.outside.join("sentinel"), sb.root.join("s")).unwrap();
    }
}

#[test]
fn device_nodes_through_symlinks_stay_inside() {
    let sb = Sandbox::new();
    let data = archive(|t, out| {
        t.symlink("dev", out);
        t.entry(&Header::new("dev/evil", b'3').dev(1, 3), b"");
    })(&sb);
    sb.expect_err(&data, Mode::Plain, libc::EEXIST, "'dev/evil'");
    let mut t = Tarball::new();
    t.entry(&Header::new("../outside/node", b'4').dev(7, 0), b"");
    sb.expect_err(&t.finish(), Mode::Plain, libc::EINVAL, "contains '..'");
}

#[test]
fn huge_and_negative_sizes() {
    let sb = Sandbox::new();
    // Larger than the total limit allows: refused before anything is created.
    let mut t = Tarball::new();
    t.entry(
        &Header::file("huge").gnu().patch(124, base256(1 << 40, 12)),
        b"",
    );
    sb.expect_err(
        &t.finish(),
        Mode::Plain,
        libc::EFBIG,
        "'huge': size 1099511627776 exceeds",
    );
    assert!(!sb.root.join("huge").exists());
    // Larger than the rest of the stream.
    let mut t = Tarball::new();
    t.entry(&Header::file("short").size(1 << 30), b"only this");
    sb.expect_err(
        &t.finish(),
        Mode::Plain,
        libc::EBADMSG,
        "'short': unexpected end of archive",
    );
    // Negative base-256.
    let mut t = Tarball::new();
    t.entry(
        &Header::file("neg").gnu().patch(124, base256(-512, 12)),
        b"",
    );
    sb.expect_err(
        &t.finish(),
        Mode::Plain,
        libc::EBADMSG,
        "'neg': size field is negative",
    );
    let mut t = Tarball::new();
    t.entry(
        &Header::file("neguid").gnu().patch(108, base256(-1, 8)),
        b"",
    );
    sb.expect_err(
        &t.finish(),
        Mode::Plain,
        libc::EBADMSG,
        "uid field is negative",
    );
}

#[test]
fn bogus_pax_records() {
    let sb = Sandbox::new();
    let cases: [(&[u8], &str); 6] = [
        (b"99 path=short\n", "does not fit"),
        (b"15 pathnoequal\n", "without '='"),
        (
            b"99999999999999999999999999 path=x\n",
            "PAX record without a length",
        ),
        (b"18446744073709551617 path=x\n", "overflows"),
        (b"12 path=a\0b\n", "contains a NUL byte"),
        (b"12 size=-12\n", "invalid number"),
    ];
    for (body, fragment) in cases {
        let mut t = Tarball::new();
        t.pax_raw(b'x', body).file("f", b"");
        sb.expect_err(&t.finish(), Mode::Plain, libc::EBADMSG, fragment);
    }
    let mut t = Tarball::new();
    t.pax_raw(b'g', b"10 uid=x1\n").file("f", b"");
    sb.expect_err(&t.finish(), Mode::Plain, libc::EBADMSG, "invalid number");
    // A PAX header directly before the end-of-archive marker.
    let mut t = Tarball::new();
    t.pax(&[("path", b"x")]);
    sb.expect_err(
        &t.finish(),
        Mode::Plain,
        libc::EBADMSG,
        "end-of-archive marker after an extended header",
    );
}

#[test]
fn oversized_headers_and_names() {
    let sb = Sandbox::new();
    let mut t = Tarball::new();
    t.pax_raw(b'x', &tarball::pax_record("comment", &vec![b'c'; 2 << 20]))
        .file("f", b"");
    sb.expect_err(
        &t.finish(),
        Mode::Plain,
        libc::EFBIG,
        "PAX header of 2097169 bytes exceeds the limit",
    );
    let mut t = Tarball::new();
    t.gnu_long(b'L', &vec![b'n'; (1 << 20) + 1]).file("f", b"");
    sb.expect_err(
        &t.finish(),
        Mode::Plain,
        libc::EFBIG,
        "GNU long name of 1048578 bytes exceeds",
    );
    let mut t = Tarball::new();
    t.pax(&[("path", "p/".repeat(2100).as_bytes())])
        .file("f", b"");
    sb.expect_err(
        &t.finish(),
        Mode::Plain,
        libc::ENAMETOOLONG,
        "member name of 4200 bytes exceeds the limit of 4096",
    );
    let mut t = Tarball::new();
    t.pax(&[("linkpath", "l".repeat(5000).as_bytes())])
        .symlink("s", "x");
    sb.expect_err(
        &t.finish(),
        Mode::Plain,
        libc::ENAMETOOLONG,
        "link target of 5000 bytes",
    );
}

#[test]
fn too_many_entries() {
    let sb = Sandbox::new();
    let mut t = Tarball::new();
    for i in 0..20 {
        t.file(&format!("f{i}"), b"");
    }
    let mut options = Options::new(Mode::Plain);
    options.limits = Limits {
        max_entries: 10,
        ..Limits::default()
    };
    let err = sb
        .run_with(&mut Cursor::new(t.finish()), &options)
        .unwrap_err();
    check_err(
        &err,
        libc::E2BIG,
        "'f10': the archive has more than 10 entries",
    );
    sb.check();
}

/// A reader producing a tar stream whose members are `count` files of `size` zero bytes,
/// generated on the fly (no buffering of the whole archive).
struct ZeroFiles {
    pending: Vec<u8>,
    zeros_left: u64,
    count: u32,
    size: u64,
}

impl Read for ZeroFiles {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.pending.is_empty() && self.zeros_left == 0 {
            if self.count == 0 {
                return Ok(0);
            }
            self.count -= 1;
            self.pending = Header::file(format!("bomb{}", self.count))
                .size(self.size as i64)
                .block(0)
                .to_vec();
            self.zeros_left = self.size;
        }
        if !self.pending.is_empty() {
            let n = buf.len().min(self.pending.len());
            buf[..n].copy_from_slice(&self.pending[..n]);
            self.pending.drain(..n);
            return Ok(n);
        }
        let n = (buf.len() as u64).min(self.zeros_left) as usize;
        buf[..n].fill(0);
        self.zeros_left -= n as u64;
        Ok(n)
    }
}

#[test]
fn decompression_bomb_is_stopped_by_the_total_limit() {
    let sb = Sandbox::new();
    // 48 MiB of tar in about 50 KiB of gzip.
    let mut gz = Vec::new();
    {
        let mut enc = flate2::write::GzEncoder::new(&mut gz, flate2::Compression::fast());
        let mut src = ZeroFiles {
            pending: Vec::new(),
            zeros_left: 0,
            count: 6,
            size: 8 << 20,
        };
        std::io::copy(&mut src, &mut enc).unwrap();
        enc.finish().unwrap();
    }
    assert!(gz.len() < 1 << 20);
    let mut options = Options::new(Mode::Plain);
    options.limits = Limits {
        max_total_bytes: 20 << 20,
        ..Limits::default()
    };
    let mut input = flate2::read::GzDecoder::new(Cursor::new(&gz));
    let err = sb.run_with(&mut input, &options).unwrap_err();
    check_err(
        &err,
        libc::EFBIG,
        "exceeds what is left of the limit of 20971520 bytes",
    );
    sb.check();

    // Garbage after the end-of-archive marker counts too (the stream is read to its end).
    let mut t = Tarball::new();
    t.file("f", b"x");
    let mut data = t.finish();
    data.resize(data.len() + (3 << 20), 0);
    options.limits = Limits {
        max_total_bytes: 2 << 20,
        ..Limits::default()
    };
    let err = sb.run_with(&mut Cursor::new(data), &options).unwrap_err();
    check_err(
        &err,
        libc::EFBIG,
        "the archive exceeds the limit of 2097152 bytes",
    );
    sb.check();
}

#[test]
fn truncated_archives() {
    let sb = Sandbox::new();
    let mut t = Tarball::new();
    t.file("a", b"complete").file("b", &[7u8; 3000]);
    let full = t.finish();
    sb.expect_err(
        &full[..512 + 512 + 300],
        Mode::Plain,
        libc::EBADMSG,
        "ends inside a header block",
    );
    sb.expect_err(
        &full[..512 + 512 + 512 + 1000],
        Mode::Plain,
        libc::EBADMSG,
        "'b': unexpected end of archive",
    );
    let mut t = Tarball::new();
    t.pax(&[("path", b"x")]);
    let data = t.data.clone();
    sb.expect_err(
        &data[..600],
        Mode::Plain,
        libc::EBADMSG,
        "unexpected end of archive",
    );
    // A corrupted header.
    let mut t = Tarball::new();
    let mut h = Header::file("bad");
    h.bad_checksum = true;
    t.entry(&h, b"");
    sb.expect_err(
        &t.finish(),
        Mode::Plain,
        libc::EBADMSG,
        "header checksum mismatch",
    );
}

#[test]
fn sparse_maps_pointing_past_the_size() {
    let sb = Sandbox::new();
    // Old GNU sparse: one segment 4096+512 in a file of real size 1024.
    let mut map = Vec::new();
    map.extend_from_slice(b"00000010000\0"); // offset 4096
    map.extend_from_slice(b"00000001000\0"); // length 512
    let h = Header::new("sparse", b'S')
        .gnu()
        .patch(386, &map)
        .patch(483, b"00000002000\0");
    let mut t = Tarball::new();
    t.entry(&h, &[1u8; 512]);
    sb.expect_err(
        &t.finish(),
        Mode::Plain,
        libc::EBADMSG,
        "lies beyond the file size 1024",
    );
    // PAX 1.0: the map in the data.
    let mut t = Tarball::new();
    t.pax(&[
        ("GNU.sparse.major", b"1"),
        ("GNU.sparse.minor", b"0"),
        ("GNU.sparse.name", b"s"),
        ("GNU.sparse.realsize", b"100"),
    ]);
    let mut body = b"1\n50\n100\n".to_vec();
    body.resize(512, 0);
    body.extend_from_slice(&[2u8; 100]);
    t.file("GNUSparseFile.0/s", &body);
    sb.expect_err(
        &t.finish(),
        Mode::Plain,
        libc::EBADMSG,
        "lies beyond the file size 100",
    );
    // PAX 0.1: more data than stored.
    let mut t = Tarball::new();
    t.pax(&[
        ("GNU.sparse.size", b"100000"),
        ("GNU.sparse.map", b"0,5000"),
    ]);
    t.file("s", &[3u8; 10]);
    sb.expect_err(
        &t.finish(),
        Mode::Plain,
        libc::EBADMSG,
        "describes 5000 bytes but the entry stores 10",
    );
    // Overlapping segments.
    let mut t = Tarball::new();
    t.pax(&[
        ("GNU.sparse.size", b"100"),
        ("GNU.sparse.map", b"0,10,5,10"),
    ]);
    t.file("s", &[3u8; 20]);
    sb.expect_err(&t.finish(), Mode::Plain, libc::EBADMSG, "overlap");
}

#[test]
fn sparse_map_longer_than_the_entry() {
    // PAX 1.0 keeps the map at the start of the content; a content that ends inside
    // the map (here: empty, then cut after the count) is refused, not read past.
    for content in [&b""[..], b"1\n", b"1\n4096\n"] {
        let sb = Sandbox::new();
        let mut t = Tarball::new();
        t.pax(&[
            ("GNU.sparse.major", b"1"),
            ("GNU.sparse.minor", b"0"),
            ("GNU.sparse.name", b"s"),
            ("GNU.sparse.realsize", b"8192"),
        ]);
        t.file("GNUSparseFile.0/s", content);
        t.file("after", b"the next member");
        sb.expect_err(
            &t.finish(),
            Mode::Plain,
            libc::EBADMSG,
            "'s': sparse map is larger than the entry",
        );
    }
}

#[test]
fn errors_from_the_input_pass_through() {
    struct Failing(u32);
    impl Read for Failing {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            if self.0 == 0 {
                let e = systemd_import::util::error::Error::with_message(
                    libc::ECONNRESET,
                    "Download failed.",
                );
                return Err(e.into());
            }
            self.0 -= 1;
            let block = Header::file("f").size(1 << 20).block(0);
            let n = buf.len().min(512);
            buf[..n].copy_from_slice(&block[..n]);
            Ok(n)
        }
    }
    let sb = Sandbox::new();
    let err = sb
        .run_with(&mut Failing(1), &Options::new(Mode::Plain))
        .unwrap_err();
    assert_eq!(err.errno(), libc::ECONNRESET);
    assert_eq!(err.msg(), Some("Download failed."));
    sb.check();
}

#[test]
fn trailing_data_is_consumed() {
    // A hashing wrapper must see every byte: the stream is read to its end.
    struct Counting<R>(R, u64);
    impl<R: Read> Read for Counting<R> {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            let n = self.0.read(buf)?;
            self.1 += n as u64;
            Ok(n)
        }
    }
    let sb = Sandbox::new();
    let mut t = Tarball::new();
    t.file("f", b"x");
    let mut data = t.finish();
    data.extend_from_slice(&[0u8; 10240]);
    data.write_all(b"trailing garbage").unwrap();
    let mut input = Counting(Cursor::new(&data), 0);
    sb.run_with(&mut input, &Options::new(Mode::Plain)).unwrap();
    assert_eq!(input.1, data.len() as u64);
    sb.check();
}

/// `a/a/…/a` (`levels` deep), then symlinks `t1`, `t2`, … each pointing at the bottom of
/// the previous chunk, each followed by a chunk below it: every chunk adds `levels`
/// physical levels, although no name has more than `levels` components.
fn symlink_chained_depth(chunks: usize, levels: usize) -> Vec<u8> {
    let chunk = vec!["a"; levels].join("/");
    let mut t = Tarball::new();
    t.long_entry(&Header::dir(&chunk), b"");
    let mut bottom = chunk.clone();
    for k in 1..chunks {
        let link = format!("t{k}");
        t.pax(&[("linkpath", bottom.as_bytes())])
            .entry(&Header::symlink(&link, "x"), b"");
        bottom = format!("{link}/{chunk}");
        t.long_entry(&Header::dir(&bottom), b"");
    }
    // Replacing the top of that tree walks all of it.
    t.file("a", b"replaces the deep tree");
    t.finish()
}

#[test]
fn trees_deeper_than_names_can_spell_are_refused() {
    // Five chunks of 2000 levels made a tree 10,000 deep, and removing it (the last
    // member) overflowed the unpacking thread's stack: an abort, not an error.
    let sb = Sandbox::new();
    sb.expect_err(
        &symlink_chained_depth(5, 2000),
        Mode::Plain,
        libc::ENAMETOOLONG,
        "'t1/a/a/a/",
    );
    assert!(
        take_lines(log::Level::Warn).is_empty(),
        "nothing else to report"
    );
    // The limit counts physical levels below the root.
    let sb = Sandbox::new();
    let mut options = Options::new(Mode::Oci);
    options.limits.max_depth = 30;
    let err = sb
        .run_with(&mut Cursor::new(symlink_chained_depth(3, 20)), &options)
        .unwrap_err();
    check_err(
        &err,
        libc::ENAMETOOLONG,
        "its directory would lie more than 30 levels below the root",
    );
    assert!(err
        .msg()
        .unwrap()
        .starts_with("Refusing to extract 't1/a/a/"));
    sb.check();
    let sb = Sandbox::new();
    options.limits.max_depth = 60;
    sb.run_with(&mut Cursor::new(symlink_chained_depth(3, 20)), &options)
        .unwrap();
    sb.check();
}

#[test]
fn deep_nesting_does_not_exhaust_file_descriptors() {
    use std::os::unix::fs::MetadataExt;
    // Run under a low fd limit: in a child process (this test binary again), so the
    // limit does not touch the tests running in parallel here.
    const CHILD: &str = "UNPACK_TEST_LOW_NOFILE";
    if std::env::var_os(CHILD).is_none() {
        let out = std::process::Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "deep_nesting_does_not_exhaust_file_descriptors",
                "--nocapture",
            ])
            .env(CHILD, "1")
            .output()
            .unwrap();
        assert!(
            out.status.success() && String::from_utf8_lossy(&out.stdout).contains("1 passed"),
            "child failed:\n{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        return;
    }
    let mut saved = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit fills the struct we pass.
    assert_eq!(
        unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut saved) },
        0
    );
    let limit = libc::rlimit {
        rlim_cur: 512,
        rlim_max: saved.rlim_max,
    };
    // SAFETY: plain setrlimit with a valid struct, in the child process only.
    assert_eq!(unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &limit) }, 0);
    let sb = Sandbox::new();
    let mut t = Tarball::new();
    let mut path = String::new();
    for _ in 0..1500 {
        path.push_str("d/");
        t.long_entry(&Header::dir(&path).mode(0o750).mtime(1_000_000), b"");
    }
    t.long_entry(&Header::file(format!("{path}bottom")), b"b");
    sb.run(&t.finish(), Mode::Plain).unwrap();
    let deep = sb.root.join(&path);
    assert_eq!(fs::read(deep.join("bottom")).unwrap(), b"b");
    let md = fs::metadata(&deep).unwrap();
    assert_eq!((md.mode() & 0o7777, md.mtime()), (0o750, 1_000_000));
    let top = fs::metadata(sb.root.join("d")).unwrap();
    assert_eq!((top.mode() & 0o7777, top.mtime()), (0o750, 1_000_000));
    sb.check();
    // Removing a tree 1500 levels deep takes an fd per level: lift the limit again first,
    // or the scratch directory outlives the test.
    // SAFETY: as above.
    assert_eq!(unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &saved) }, 0);
    let scratch = sb.tmp.path().to_path_buf();
    drop(sb);
    assert!(!scratch.exists(), "{} was not removed", scratch.display());
}
