//! Mutation tests of the tar reader and applier (`import::unpack`), in all three modes,
//! with and without a hostile lower layer.
//!
//! Seeds: archives made by GNU tar from a staged tree with every kind of member (gnu,
//! oldgnu, ustar, v7, posix with xattrs, all sparse formats) and hand-crafted ones
//! (`common::tarball`: PAX overrides, global headers, base-256 numbers, GNU long names,
//! whiteouts, opaque markers, aufs hard-link stashes, symlinks that point out).
//!
//! Every case runs in a fresh sandbox at a fixed path (so absolute names in the inputs
//! replay): `root/` is unpacked into, `outside/` holds sentinels (a file with an owner,
//! mode, mtime and xattr; a directory; a file hard-linked into the lower layer). Oracles:
//! * no panic, no hang (watchdog), peak memory of the case below 16 MiB;
//! * nothing outside `root/` changed: listing, type, content, mode, owner, mtime,
//!   ctime, xattrs and inode of every path (the root directory's own attributes are
//!   ours to set);
//! * a failure is an `Error` with a positive errno whose message was logged, as the only
//!   error line of the case; a success logged no error.
//!
//! A seventh campaign runs with some limits (`unpack::Limits`) tiny, drawn per input.
//!
//! CI size: a few hundred cases per campaign. Long runs: `MUTATION_ITERATIONS=200000
//! cargo test --release --test mutation_tar` (see `tests/common/mutate.rs` for the other
//! variables; `MUTATION_SANDBOX` moves the sandboxes, so two runs can go side by side,
//! and a saved input replays only with the sandbox path it was found with). Needs root,
//! GNU tar, tmpfs on /dev/shm, and xattr support under /var/tmp (for staging GNU tar's
//! seed tree).

mod common;

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::fs;
use std::io::Cursor;
use std::os::fd::AsFd;
use std::os::unix::fs::{symlink, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use common::fsmeta::{lchown, mknod, set_lxattr, set_mtime};
use common::mutate::{self, Campaign, CountingAlloc};
use common::tarball::{self, base256, Header, Tarball};
use systemd_import::import::unpack::{unpack, Mode, Options};

#[global_allocator]
static ALLOC: CountingAlloc = CountingAlloc;

/// Largest mutated archive.
const MAX_LEN: usize = 256 << 10;
/// Peak bytes one case may allocate (the reader's 1 MiB buffer, one meta header, …).
const MEMORY_LIMIT: usize = 16 << 20;
/// Where the sandboxes live (`MUTATION_SANDBOX` overrides it): one fixed directory per
/// campaign, so absolute names in saved inputs replay. On tmpfs because a case is mostly
/// metadata operations (ten times faster than on ext4 here). Tmpfs has trusted xattrs on
/// every kernel; user xattrs only from Linux 6.6, before which the unpacker warns once
/// and goes on, as it would on such a file system in production.
const SANDBOX_BASE: &str = "/dev/shm/systemd-import-mutation";

fn sandbox_base() -> PathBuf {
    std::env::var_os("MUTATION_SANDBOX").map_or_else(|| PathBuf::from(SANDBOX_BASE), PathBuf::from)
}

/// Hold the campaign's sandbox for this process (two runs on one path would see each
/// other's files as escapes).
fn lock_sandbox(campaign: &str) -> fs::File {
    use std::os::fd::AsRawFd;
    let base = sandbox_base();
    fs::create_dir_all(&base).unwrap();
    let path = base.join(format!("{campaign}.lock"));
    let lock = fs::File::create(&path).unwrap();
    // SAFETY: flock on an open descriptor.
    let r = unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    assert_eq!(
        r,
        0,
        "{} is locked: another run uses this sandbox (set MUTATION_SANDBOX to another directory)",
        path.display()
    );
    lock
}

// ---------------------------------------------------------------------------------------
// Log capture: this thread's lines of the running case
// ---------------------------------------------------------------------------------------

thread_local! {
    static LINES: RefCell<Vec<(log::Level, String)>> = const { RefCell::new(Vec::new()) };
}

struct Capture;

impl log::Log for Capture {
    fn enabled(&self, metadata: &log::Metadata<'_>) -> bool {
        metadata.level() <= log::Level::Warn
    }
    fn log(&self, record: &log::Record<'_>) {
        if self.enabled(record.metadata()) {
            let line = (record.level(), record.args().to_string());
            let _ = LINES.try_with(|l| l.borrow_mut().push(line));
        }
    }
    fn flush(&self) {}
}

static CAPTURE: Capture = Capture;

fn install_logger() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        log::set_logger(&CAPTURE).unwrap();
        log::set_max_level(log::LevelFilter::Warn);
    });
}

fn take_error_lines() -> Vec<String> {
    LINES.with(|l| {
        l.borrow_mut()
            .drain(..)
            .filter(|(level, _)| *level == log::Level::Error)
            .map(|(_, m)| m)
            .collect()
    })
}

// ---------------------------------------------------------------------------------------
// Sandbox
// ---------------------------------------------------------------------------------------

/// What a path outside the root looks like (everything a write could change).
#[derive(Debug, PartialEq, Eq)]
struct Outside {
    kind: u32,
    mode: u32,
    uid: u32,
    gid: u32,
    size: u64,
    /// Lossy UTF-8: the sentinels are text, and a diff must be readable.
    content: Option<String>,
    link: Option<PathBuf>,
    rdev: u64,
    ino: u64,
    mtime: (i64, i64),
    /// None for the inode that is hard-linked into the lower layer (unlinking that name
    /// legitimately changes its link count and so its ctime).
    ctime: Option<(i64, i64)>,
    xattrs: BTreeMap<String, String>,
}

struct Sandbox {
    base: PathBuf,
    root: PathBuf,
    lower: bool,
}

impl Sandbox {
    fn base(campaign: &str) -> PathBuf {
        sandbox_base().join(campaign)
    }

    /// A fresh sandbox at the campaign's fixed path.
    fn create(campaign: &str, lower: bool) -> Sandbox {
        let base = Self::base(campaign);
        match fs::remove_dir_all(&base) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => panic!("cannot remove {}: {e}", base.display()),
        }
        fs::create_dir_all(&base).unwrap();
        let root = base.join("root");
        let outside = base.join("outside");
        fs::create_dir(&root).unwrap();
        fs::create_dir(&outside).unwrap();

        let sentinel = outside.join("sentinel");
        fs::write(&sentinel, b"sentinel content").unwrap();
        fs::set_permissions(&sentinel, fs::Permissions::from_mode(0o640)).unwrap();
        lchown(&sentinel, 4242, 4343);
        set_lxattr(&sentinel, "trusted.sentinel", b"1");
        set_mtime(&sentinel, (1_000_000_000, 123));
        let dir = outside.join("sentinel-dir");
        fs::create_dir(&dir).unwrap();
        fs::write(dir.join("inner"), b"inner").unwrap();
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o750)).unwrap();
        set_mtime(&dir, (1_000_000_000, 123));
        let hard = outside.join("sentinel-hard");
        fs::write(&hard, b"hard-linked sentinel").unwrap();
        fs::set_permissions(&hard, fs::Permissions::from_mode(0o600)).unwrap();

        if lower {
            // A lower layer whose symlinks all point out of the root, one way or another.
            symlink("/", root.join("slash")).unwrap();
            symlink("..", root.join("up")).unwrap();
            symlink("../../..", root.join("upup")).unwrap();
            symlink(&outside, root.join("abs")).unwrap();
            symlink(&outside, root.join("outside")).unwrap();
            symlink("../outside", root.join("rel")).unwrap();
            fs::create_dir_all(root.join("dir/sub")).unwrap();
            fs::write(root.join("dir/file"), b"lower file").unwrap();
            fs::write(root.join("file"), b"lower file").unwrap();
            symlink(&sentinel, root.join("dir/link")).unwrap();
            symlink("../../outside/sentinel-dir", root.join("dir/sub/deep")).unwrap();
            fs::create_dir_all(root.join("a/b")).unwrap();
            symlink("../../../outside", root.join("a/b/up")).unwrap();
            // A lower file that shares its inode with a file outside: only a writer that
            // opens existing files (instead of replacing them) could change it.
            fs::hard_link(&hard, root.join("hard")).unwrap();
        }
        Sandbox { base, root, lower }
    }

    /// Every path of the sandbox except the root's contents.
    fn outside_state(&self) -> BTreeMap<PathBuf, Outside> {
        let mut out = BTreeMap::new();
        let hard_ino = fs::metadata(self.base.join("outside/sentinel-hard"))
            .map(|m| m.ino())
            .ok();
        let mut stack = vec![self.base.clone()];
        while let Some(path) = stack.pop() {
            let md = fs::symlink_metadata(&path).unwrap();
            let is_root = path == self.root;
            if md.is_dir() && !is_root {
                for e in fs::read_dir(&path).unwrap() {
                    stack.push(e.unwrap().path());
                }
            }
            let rel = path.strip_prefix(&self.base).unwrap().to_path_buf();
            let node = Outside {
                kind: md.mode() & libc::S_IFMT,
                // The root's own mode, owner and times belong to the archive.
                mode: if is_root { 0 } else { md.mode() & 0o7777 },
                uid: if is_root { 0 } else { md.uid() },
                gid: if is_root { 0 } else { md.gid() },
                size: if md.is_dir() { 0 } else { md.size() },
                content: md
                    .is_file()
                    .then(|| String::from_utf8_lossy(&fs::read(&path).unwrap()).into_owned()),
                link: md.is_symlink().then(|| fs::read_link(&path).unwrap()),
                rdev: md.rdev(),
                ino: md.ino(),
                mtime: if is_root {
                    (0, 0)
                } else {
                    (md.mtime(), md.mtime_nsec())
                },
                ctime: (!is_root && Some(md.ino()) != hard_ino)
                    .then(|| (md.ctime(), md.ctime_nsec())),
                xattrs: if is_root {
                    BTreeMap::new()
                } else {
                    tarball::xattrs(&path)
                        .into_iter()
                        .map(|(k, v)| {
                            let lossy = |b: Vec<u8>| String::from_utf8_lossy(&b).into_owned();
                            (lossy(k), lossy(v))
                        })
                        .collect()
                },
            };
            out.insert(rel, node);
        }
        out
    }
}

fn differences(
    before: &BTreeMap<PathBuf, Outside>,
    after: &BTreeMap<PathBuf, Outside>,
) -> Vec<String> {
    let mut d = Vec::new();
    for (p, b) in before {
        match after.get(p) {
            None => d.push(format!("removed: {}", p.display())),
            Some(a) if a != b => d.push(format!("changed: {}: {b:?} -> {a:?}", p.display())),
            Some(_) => {}
        }
    }
    for p in after.keys() {
        if !before.contains_key(p) {
            d.push(format!("created: {}", p.display()));
        }
    }
    d
}

// ---------------------------------------------------------------------------------------
// Corpus
// ---------------------------------------------------------------------------------------

fn run_tar(stage: &Path, args: &[&str]) -> Vec<u8> {
    let out = Command::new("tar")
        .arg("-C")
        .arg(stage)
        .args(["--numeric-owner", "-cf", "-"])
        .args(args)
        .arg(".")
        .output()
        .unwrap_or_else(|e| panic!("cannot run GNU tar ({e}): install the Debian package tar"));
    // Status 2 is a member tar could not store in this format (v7 and devices): the
    // archive of the rest is still a useful seed.
    assert!(
        out.status.success() || (out.status.code() == Some(2) && !out.stdout.is_empty()),
        "tar {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// Archives GNU tar makes of a staged tree with every kind of member, in every format.
fn gnu_tar_corpus() -> &'static [Vec<u8>] {
    static CORPUS: OnceLock<Vec<Vec<u8>>> = OnceLock::new();
    CORPUS.get_or_init(|| {
        let tmp = tarball::scratch();
        let full = tmp.path().join("full");
        let short = tmp.path().join("short");
        for stage in [&full, &short] {
            fs::create_dir_all(stage.join("d/sub/deep")).unwrap();
            fs::write(stage.join("d/file"), b"file content\n").unwrap();
            fs::write(stage.join("d/sub/deep/f"), b"deep").unwrap();
            fs::write(stage.join("d/empty"), b"").unwrap();
            fs::write(stage.join("d/suid"), b"#!/bin/sh\n").unwrap();
            fs::set_permissions(stage.join("d/suid"), fs::Permissions::from_mode(0o4755)).unwrap();
            fs::hard_link(stage.join("d/file"), stage.join("d/hardlink")).unwrap();
            symlink("file", stage.join("d/sym")).unwrap();
            symlink("/etc/passwd", stage.join("d/abs")).unwrap();
            symlink("../..", stage.join("d/up")).unwrap();
            lchown(&stage.join("d/file"), 1000, 1000);
            lchown(&stage.join("d/sym"), 2000, 2000);
            set_lxattr(&stage.join("d/file"), "user.note", b"hello");
            set_lxattr(&stage.join("d/sub"), "trusted.overlay.opaque", b"y");
            for (name, kind, major, minor) in [
                ("d/null", libc::S_IFCHR, 1, 3),
                ("d/loop", libc::S_IFBLK, 7, 0),
                ("d/fifo", libc::S_IFIFO, 0, 0),
            ] {
                mknod(&stage.join(name), kind, 0o644, major, minor);
            }
            // Whiteouts, an opaque marker and an aufs pseudo-link (a hard link to it is in the
            // crafted seeds: the OCI mode refuses it).
            fs::write(stage.join("d/.wh.gone"), b"").unwrap();
            fs::write(stage.join("d/sub/.wh..wh..opq"), b"").unwrap();
            fs::create_dir(stage.join(".wh..wh.plnk")).unwrap();
            fs::write(stage.join(".wh..wh.plnk/12.34"), b"pseudo-link").unwrap();
            // A sparse file: three small data segments in 192 KiB.
            let sparse = fs::File::create(stage.join("d/sparse")).unwrap();
            for at in [0u64, 64 << 10, (192 << 10) - 512] {
                std::os::unix::fs::FileExt::write_all_at(&sparse, &[0x5a; 512], at).unwrap();
            }
            set_mtime(&stage.join("d"), (1_500_000_000, 123));
        }
        // Long names only where the format can store them.
        let long_dir = full.join(format!("d/{}", "n".repeat(120)));
        fs::create_dir_all(&long_dir).unwrap();
        fs::write(long_dir.join("l".repeat(130)), b"long").unwrap();
        symlink("t".repeat(150), full.join("d/longlink")).unwrap();

        let mut corpus = Vec::new();
        for args in [
            &["--format=gnu"][..],
            &["--format=oldgnu"],
            &["--format=posix", "--xattrs", "--xattrs-include=*"],
            &["--format=gnu", "--sparse"],
            &["--format=posix", "--sparse", "--sparse-version=0.0"],
            &["--format=posix", "--sparse", "--sparse-version=0.1"],
            &["--format=posix", "--sparse", "--sparse-version=1.0"],
        ] {
            corpus.push(run_tar(&full, args));
        }
        corpus.push(run_tar(&short, &["--format=ustar"]));
        corpus.push(run_tar(&short, &["--format=v7"]));
        for a in &corpus {
            assert!(a.len() <= MAX_LEN, "seed archive of {} bytes", a.len());
        }
        corpus
    })
}

/// Hand-crafted archives: what GNU tar does not write by itself, and members that aim
/// at the lower layer's symlinks and the sandbox's absolute path.
fn crafted_corpus(absolute: &str) -> Vec<Vec<u8>> {
    let mut corpus = Vec::new();

    let mut t = Tarball::new();
    t.pax_raw(b'g', &tarball::pax_record("mtime", b"1700000000.5"));
    t.dir("a").file("a/one", b"1").symlink("a/s", "one");
    t.pax(&[
        ("path", b"a/pax-named"),
        ("uid", b"4000000000"),
        ("mtime", b"-1.25"),
        ("SCHILY.xattr.user.k", b"v\0w"),
        ("size", b"3"),
    ])
    .entry(&Header::file("a/ignored"), b"abc");
    t.entry(
        &Header::file("a/b256").gnu().owner(1 << 40, 7).mtime(-5),
        b"x",
    );
    t.gnu_long(b'L', "L".repeat(300).as_bytes())
        .entry(&Header::file("short"), b"long named");
    t.gnu_long(b'K', format!("a/{}", "k".repeat(200)).as_bytes())
        .entry(&Header::symlink("a/longlink", "x"), b"");
    t.entry(&Header::new("a/chr", b'3').dev(1, 7), b"");
    t.entry(&Header::new("a/fifo", b'6'), b"");
    t.file("a/one", b"duplicate").hardlink("a/h", "a/one");
    t.entry(
        &Header::new("a/sparse", b'S')
            .gnu()
            .patch(386, b"00000001000\x00000000000010\x00")
            .patch(483, b"00000010000\0"),
        &[0x33; 8],
    );
    corpus.push(t.finish());

    let mut t = Tarball::new();
    t.file(".wh.file", b"")
        .file("dir/.wh..wh..opq", b"")
        .file("dir/new", b"new")
        .file(".wh..wh.plnk/1.2", b"stashed")
        .hardlink("dir/linked", ".wh..wh.plnk/1.2")
        .file(".wh..wh.aufs", b"")
        .file("a/.wh.b", b"")
        .dir(".wh..wh.orph");
    corpus.push(t.finish());

    let mut t = Tarball::new();
    t.file("slash/etc-file", b"through /")
        .file("up/outside/sentinel", b"through ..")
        .file("abs/sentinel", b"through abs")
        .file("rel/sentinel-dir/new", b"through rel")
        .file("dir/link", b"replaces the link")
        .file("dir/sub/deep/inner", b"through deep")
        .file("a/b/up/sentinel", b"through a/b/up")
        .file("hard", b"replaces the hard link")
        .hardlink("hl", "hard")
        .file(&format!("{absolute}/outside/sentinel"), b"absolute");
    t.symlink("mine", "../outside")
        .file("mine/sentinel", b"through mine");
    corpus.push(t.finish());

    let mut t = Tarball::new();
    t.symlink("evil", &format!("{absolute}/outside"))
        .file("evil/sentinel", b"x")
        .hardlink("h", "evil/sentinel")
        .entry(&Header::dir("./").mode(0o700), b"")
        .file(".wh.abs", b"")
        .file("dir/.wh.link", b"")
        .file(".wh.slash", b"");
    t.entry(&Header::file("big").gnu().size(1 << 36), b"");
    corpus.push(t.finish());

    let mut t = Tarball::new();
    t.entry(
        &Header::file("b256-size").gnu().patch(124, base256(700, 12)),
        &[1; 700],
    );
    t.entry(&Header::file("neg").patch(136, base256(-1, 12)), b"");
    corpus.push(t.finish());
    corpus
}

// ---------------------------------------------------------------------------------------
// The campaigns
// ---------------------------------------------------------------------------------------

/// Unpack one input into a fresh sandbox and check the oracles.
fn check_case(campaign: &str, options: &Options, lower: bool, input: &[u8]) -> Result<(), String> {
    let mode = options.mode;
    let sandbox = Sandbox::create(campaign, lower);
    let before = sandbox.outside_state();
    take_error_lines();
    let root = fs::File::open(&sandbox.root).unwrap();
    let result = unpack(root.as_fd(), &mut Cursor::new(input), options);
    drop(root);
    let errors = take_error_lines();

    let changed = differences(&before, &sandbox.outside_state());
    if !changed.is_empty() {
        return Err(format!(
            "outside the root changed (mode {mode:?}, lower layer {}):\n{}",
            sandbox.lower,
            changed.join("\n")
        ));
    }
    match &result {
        Ok(_) => mutate::note_outcome("ok"),
        Err(e) => mutate::note_outcome(e.msg().unwrap_or("(no message)")),
    }
    match result {
        Ok(_) if errors.is_empty() => Ok(()),
        Ok(_) => Err(format!("succeeded but logged errors: {errors:?}")),
        Err(e) => {
            let msg = e.msg().map(str::to_string);
            if e.errno() <= 0 {
                return Err(format!("errno {} is not positive ({msg:?})", e.errno()));
            }
            match msg {
                None => Err(format!(
                    "error {} carries no message; logged {errors:?}",
                    e.errno()
                )),
                Some(m) if errors != [m.clone()] => Err(format!(
                    "error {:?} (errno {}) but the logged error lines were {errors:?}",
                    m,
                    e.errno()
                )),
                Some(_) => Ok(()),
            }
        }
    }
}

/// The options of a case: the campaign's mode and default limits, or (for the limits
/// campaign) a mode and tiny limits drawn from a hash of the input, so that a saved
/// input replays with the same ones.
#[derive(Clone, Copy)]
enum Setup {
    Mode(Mode),
    TinyLimits,
}

impl Setup {
    fn options(self, input: &[u8]) -> Options {
        let mode = match self {
            Setup::Mode(mode) => return Options::new(mode),
            Setup::TinyLimits => Mode::Plain,
        };
        let hash = input.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, &b| {
            (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
        });
        let mut rng = mutate::Rng::new(hash);
        let mut options = Options::new(*rng.pick(&[mode, Mode::Aufs, Mode::Oci]));
        // Each limit tiny one time in three (all of them at once stop at the first).
        let l = &mut options.limits;
        if rng.chance(1, 6) {
            l.max_total_bytes = rng.between(0, input.len() + 1024) as u64;
        }
        if rng.chance(1, 3) {
            l.max_entries = rng.between(0, 30) as u64;
        }
        if rng.chance(1, 3) {
            l.max_path_len = rng.between(0, 300);
        }
        if rng.chance(1, 3) {
            l.max_header_bytes = rng.between(0, 2048);
        }
        if rng.chance(1, 3) {
            l.max_xattrs = rng.between(0, 3);
        }
        if rng.chance(1, 3) {
            l.max_xattr_size = rng.between(0, 64);
        }
        if rng.chance(1, 3) {
            l.max_sparse_entries = rng.between(0, 4);
        }
        if rng.chance(1, 3) {
            l.max_depth = rng.between(0, 5);
        }
        options
    }
}

fn campaign(name: &str, setup: Setup, lower: bool, iterations: u64) {
    install_logger();
    let _lock = lock_sandbox(name);
    let base = Sandbox::base(name);
    let absolute = base.display().to_string();
    let outside = format!("{absolute}/outside");
    let sentinel = format!("{absolute}/outside/sentinel");
    let names = [absolute.as_str(), outside.as_str(), sentinel.as_str()];
    let mut corpus = gnu_tar_corpus().to_vec();
    // GNU tar's archives are benign: they must unpack (else the harness is broken and
    // the mutations start from nothing useful).
    if let Setup::Mode(mode) = setup {
        for (i, seed) in corpus.iter().enumerate() {
            let sandbox = Sandbox::create(name, lower);
            let root = fs::File::open(&sandbox.root).unwrap();
            if let Err(e) = unpack(root.as_fd(), &mut Cursor::new(seed), &Options::new(mode)) {
                panic!(
                    "GNU tar seed archive {i} does not unpack: {e} ({:?})",
                    e.msg()
                );
            }
        }
    }
    corpus.extend(crafted_corpus(&absolute));
    // Every seed must pass the oracles too, whether it unpacks or is refused.
    for (i, seed) in corpus.iter().enumerate() {
        if let Err(e) = check_case(name, &setup.options(seed), lower, seed) {
            panic!("seed archive {i}: {e}");
        }
    }

    Campaign::new(name, iterations)
        .memory_limit(MEMORY_LIMIT)
        .run(
            |rng| mutate::tar::mutate(rng, &corpus, &names, MAX_LEN),
            |input| check_case(name, &setup.options(input), lower, input),
        );
    let _ = fs::remove_dir_all(&base);
}

#[test]
fn mutated_archives_plain() {
    campaign("tar-plain", Setup::Mode(Mode::Plain), false, 300);
}

#[test]
fn mutated_archives_plain_over_hostile_lower_layer() {
    campaign("tar-plain-lower", Setup::Mode(Mode::Plain), true, 300);
}

#[test]
fn mutated_archives_aufs() {
    campaign("tar-aufs", Setup::Mode(Mode::Aufs), false, 300);
}

#[test]
fn mutated_archives_aufs_over_hostile_lower_layer() {
    campaign("tar-aufs-lower", Setup::Mode(Mode::Aufs), true, 300);
}

#[test]
fn mutated_archives_oci() {
    campaign("tar-oci", Setup::Mode(Mode::Oci), false, 300);
}

#[test]
fn mutated_archives_oci_over_hostile_lower_layer() {
    campaign("tar-oci-lower", Setup::Mode(Mode::Oci), true, 300);
}

/// Limits tiny (drawn per input), in all modes: the refusals at each limit, from
/// wherever in the stream the mutations make them happen.
#[test]
fn mutated_archives_under_tiny_limits() {
    campaign("tar-limits", Setup::TinyLimits, true, 300);
}
