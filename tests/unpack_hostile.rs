//! Hostile archives. Every case plants a sentinel file and a sentinel directory next to
//! the root (outside it), runs the unpacker, checks the expected error (errno and a
//! fragment of the logged line) or the expected contained result, and then proves that
//! nothing outside the root changed: the sentinel's content, mode, owner and mtime, the
//! sentinel directory's listing, and the scratch directory itself (no new entries).
//! The single-archive cases are the shared corpus (tests/common/hostile.rs, also fed
//! through `systemd-import tar`); the cases here need their own limits or readers.

mod common;

use std::fs;
use std::io::{Cursor, Read, Write};
use std::path::{Path, PathBuf};

use common::hostile::{self, symlink_chained_depth, Expect};
use common::tarball::{self, Header, Snapshot, Tarball};
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

/// Every case of the shared corpus (tests/common/hostile.rs), each in a fresh sandbox.
#[test]
fn the_corpus() {
    let probe = Sandbox::new();
    let count = hostile::corpus(&probe.outside).len();
    drop(probe);
    for index in 0..count {
        let sb = Sandbox::new();
        let case = hostile::corpus(&sb.outside).swap_remove(index);
        let label = &case.label;
        if let Some(lower) = &case.lower {
            lower(&sb.root, &sb.outside);
        }
        match case.expect {
            Expect::Refused(errno, fragment) => {
                let err = sb
                    .run(&case.bytes, case.mode)
                    .expect_err(&format!("{label}: hostile archive was accepted"));
                check_err(&err, errno, fragment);
            }
            Expect::Contained => {
                if let Err(e) = sb.run(&case.bytes, case.mode) {
                    panic!("{label}: {e}");
                }
                if let Some(inside) = &case.inside {
                    inside(&sb.root, &sb.outside);
                }
            }
        }
        // (Refused names may warn about a leading '/' before they are refused.)
        let warnings = take_lines(log::Level::Warn);
        if !case.warnings.is_empty() {
            assert_eq!(warnings, case.warnings, "{label}");
        }
        sb.check();
    }
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

#[test]
fn trees_deeper_than_names_can_spell_are_refused() {
    // (Five chunks of 2000 levels: the corpus.) The limit counts physical levels below the root.
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
