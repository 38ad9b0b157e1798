//! Tests for the unpacker: a tar writer for hand-crafted (and deliberately broken)
//! archives, and a snapshot of an extracted tree for comparisons.

use std::collections::BTreeMap;
use std::ffi::{CString, OsStr};
use std::fs;
use std::io::Read;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

pub const BLOCK: usize = 512;

/// Header dialect to write.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// POSIX ustar magic ("ustar\0" "00"), used with PAX headers too.
    Ustar,
    /// GNU magic ("ustar  \0"); numbers that do not fit octal are written base-256.
    Gnu,
}

/// One header, with every field settable. `size` defaults to the content length.
#[derive(Clone, Debug)]
pub struct Header {
    pub name: Vec<u8>,
    pub mode: u32,
    pub uid: i64,
    pub gid: i64,
    pub size: Option<i64>,
    pub mtime: i64,
    pub typeflag: u8,
    pub link: Vec<u8>,
    pub dev_major: u32,
    pub dev_minor: u32,
    pub format: Format,
    /// Raw bytes written over the block at an offset, before the checksum is computed.
    pub patches: Vec<(usize, Vec<u8>)>,
    /// Write a wrong checksum.
    pub bad_checksum: bool,
}

impl Header {
    pub fn new(name: impl AsRef<[u8]>, typeflag: u8) -> Self {
        Header {
            name: name.as_ref().to_vec(),
            mode: if typeflag == b'5' { 0o755 } else { 0o644 },
            uid: 0,
            gid: 0,
            size: None,
            mtime: 1_600_000_000,
            typeflag,
            link: Vec::new(),
            dev_major: 0,
            dev_minor: 0,
            format: Format::Ustar,
            patches: Vec::new(),
            bad_checksum: false,
        }
    }
    pub fn file(name: impl AsRef<[u8]>) -> Self {
        Header::new(name, b'0')
    }
    pub fn dir(name: impl AsRef<[u8]>) -> Self {
        Header::new(name, b'5')
    }
    pub fn symlink(name: impl AsRef<[u8]>, target: impl AsRef<[u8]>) -> Self {
        Header::new(name, b'2').link(target)
    }
    pub fn hardlink(name: impl AsRef<[u8]>, target: impl AsRef<[u8]>) -> Self {
        Header::new(name, b'1').link(target)
    }
    pub fn link(mut self, target: impl AsRef<[u8]>) -> Self {
        self.link = target.as_ref().to_vec();
        self
    }
    pub fn mode(mut self, mode: u32) -> Self {
        self.mode = mode;
        self
    }
    pub fn owner(mut self, uid: i64, gid: i64) -> Self {
        self.uid = uid;
        self.gid = gid;
        self
    }
    pub fn mtime(mut self, mtime: i64) -> Self {
        self.mtime = mtime;
        self
    }
    pub fn size(mut self, size: i64) -> Self {
        self.size = Some(size);
        self
    }
    pub fn gnu(mut self) -> Self {
        self.format = Format::Gnu;
        self
    }
    pub fn dev(mut self, major: u32, minor: u32) -> Self {
        self.dev_major = major;
        self.dev_minor = minor;
        self
    }
    pub fn patch(mut self, offset: usize, bytes: impl AsRef<[u8]>) -> Self {
        self.patches.push((offset, bytes.as_ref().to_vec()));
        self
    }

    /// The 512-byte block for `content_len` bytes of content.
    pub fn block(&self, content_len: usize) -> [u8; BLOCK] {
        let mut b = [0u8; BLOCK];
        let name_len = self.name.len().min(100);
        b[..name_len].copy_from_slice(&self.name[..name_len]);
        put_number(&mut b[100..108], i64::from(self.mode), self.format);
        put_number(&mut b[108..116], self.uid, self.format);
        put_number(&mut b[116..124], self.gid, self.format);
        put_number(
            &mut b[124..136],
            self.size.unwrap_or(content_len as i64),
            self.format,
        );
        put_number(&mut b[136..148], self.mtime, self.format);
        b[156] = self.typeflag;
        let link_len = self.link.len().min(100);
        b[157..157 + link_len].copy_from_slice(&self.link[..link_len]);
        match self.format {
            Format::Ustar => b[257..265].copy_from_slice(b"ustar\x0000"),
            Format::Gnu => b[257..265].copy_from_slice(b"ustar  \0"),
        }
        put_number(&mut b[329..337], i64::from(self.dev_major), self.format);
        put_number(&mut b[337..345], i64::from(self.dev_minor), self.format);
        for (offset, bytes) in &self.patches {
            b[*offset..*offset + bytes.len()].copy_from_slice(bytes);
        }
        b[148..156].copy_from_slice(b"        ");
        let mut sum: u32 = b.iter().map(|&x| u32::from(x)).sum();
        if self.bad_checksum {
            sum += 1;
        }
        b[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
        b
    }
}

/// Write a number: octal if it fits, else base-256 (GNU), else octal digits truncated
/// (a writer bug a test can ask for with `patches`).
fn put_number(field: &mut [u8], value: i64, format: Format) {
    let width = field.len();
    let octal = format!("{value:0w$o}\0", w = width - 1);
    if value >= 0 && octal.len() == width {
        field.copy_from_slice(octal.as_bytes());
    } else if format == Format::Gnu || value < 0 {
        field.copy_from_slice(&base256(value, width));
    } else {
        panic!("{value} does not fit a {width}-byte ustar field");
    }
}

/// A base-256 field of `width` bytes (two's complement, high bit of byte 0 set).
pub fn base256(value: i64, width: usize) -> Vec<u8> {
    let mut out = vec![if value < 0 { 0xff } else { 0 }; width];
    let be = value.to_be_bytes();
    let n = width.min(8);
    out[width - n..].copy_from_slice(&be[8 - n..]);
    out[0] |= 0x80;
    out
}

/// One PAX record with its length prefix computed.
pub fn pax_record(key: &str, value: &[u8]) -> Vec<u8> {
    let body_len = 1 + key.len() + 1 + value.len() + 1;
    let mut len = body_len + 1;
    while len.to_string().len() + body_len != len {
        len = len.to_string().len() + body_len;
    }
    let mut r = format!("{len} {key}=").into_bytes();
    r.extend_from_slice(value);
    r.push(b'\n');
    r
}

/// An archive being written.
#[derive(Default)]
pub struct Tarball {
    pub data: Vec<u8>,
}

impl Tarball {
    pub fn new() -> Self {
        Self::default()
    }

    /// A header followed by its content and padding.
    pub fn entry(&mut self, header: &Header, content: &[u8]) -> &mut Self {
        self.data.extend_from_slice(&header.block(content.len()));
        self.data.extend_from_slice(content);
        self.pad();
        self
    }

    /// Like [`Self::entry`], with the full name in a PAX `path` record (for names
    /// longer than the 100-byte header field).
    pub fn long_entry(&mut self, header: &Header, content: &[u8]) -> &mut Self {
        let name = header.name.clone();
        self.pax(&[("path", &name)]);
        self.entry(header, content)
    }

    pub fn file(&mut self, name: &str, content: &[u8]) -> &mut Self {
        self.entry(&Header::file(name), content)
    }
    pub fn dir(&mut self, name: &str) -> &mut Self {
        self.entry(&Header::dir(name), b"")
    }
    pub fn symlink(&mut self, name: &str, target: &str) -> &mut Self {
        self.entry(&Header::symlink(name, target), b"")
    }
    pub fn hardlink(&mut self, name: &str, target: &str) -> &mut Self {
        self.entry(&Header::hardlink(name, target), b"")
    }

    /// A local PAX extended header (`x`) with these records, applying to the next entry.
    pub fn pax(&mut self, records: &[(&str, &[u8])]) -> &mut Self {
        let body: Vec<u8> = records.iter().flat_map(|(k, v)| pax_record(k, v)).collect();
        self.pax_raw(b'x', &body)
    }

    /// A PAX header of type `typeflag` (`x` or `g`) with a raw body.
    pub fn pax_raw(&mut self, typeflag: u8, body: &[u8]) -> &mut Self {
        self.entry(&Header::new("././@PaxHeader", typeflag), body)
    }

    /// GNU long name (`L`) or long link (`K`) for the next entry.
    pub fn gnu_long(&mut self, typeflag: u8, name: &[u8]) -> &mut Self {
        let mut body = name.to_vec();
        body.push(0);
        self.entry(&Header::new("././@LongLink", typeflag).gnu(), &body)
    }

    /// Raw bytes (for broken archives).
    pub fn raw(&mut self, bytes: &[u8]) -> &mut Self {
        self.data.extend_from_slice(bytes);
        self
    }

    pub fn pad(&mut self) -> &mut Self {
        let rem = self.data.len() % BLOCK;
        if rem != 0 {
            self.data.resize(self.data.len() + BLOCK - rem, 0);
        }
        self
    }

    /// The archive with its end-of-archive marker.
    pub fn finish(&mut self) -> Vec<u8> {
        let mut d = std::mem::take(&mut self.data);
        d.resize(d.len() + 2 * BLOCK, 0);
        d
    }
}

/// What a tree entry looks like, for comparisons.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Node {
    pub kind: &'static str,
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub size: u64,
    pub sha256: Option<String>,
    pub link: Option<Vec<u8>>,
    pub rdev: u64,
    pub xattrs: BTreeMap<Vec<u8>, Vec<u8>>,
    pub mtime: (i64, i64),
    /// For files with several links: the first path (sorted) of the group.
    pub link_group: Option<PathBuf>,
}

/// A snapshot of a tree: relative path → node (`.` is the root).
pub type Snapshot = BTreeMap<PathBuf, Node>;

/// The extended attributes of a path (not following a final symlink).
pub use super::fsmeta::lxattrs as xattrs;

pub fn sha256_file(path: &Path) -> String {
    let mut f = fs::File::open(path).unwrap();
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = f.read(&mut buf).unwrap();
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    format!("{:x}", h.finalize())
}

/// Walk a tree without following symlinks. File content is compared through
/// [`super::fsmeta::content_digest`], which reads only data segments, so that large
/// sparse files cost what their data costs (and a hole equals written zeros).
pub fn snapshot(root: &Path) -> Snapshot {
    let mut out = Snapshot::new();
    let mut inodes: BTreeMap<(u64, u64), PathBuf> = BTreeMap::new();
    let mut stack = vec![PathBuf::from(".")];
    let mut all = Vec::new();
    while let Some(rel) = stack.pop() {
        let path = root.join(&rel);
        let md = fs::symlink_metadata(&path).unwrap();
        let ft = md.file_type();
        let kind = if ft.is_dir() {
            "dir"
        } else if ft.is_symlink() {
            "symlink"
        } else if ft.is_file() {
            "file"
        } else {
            use std::os::unix::fs::FileTypeExt;
            if ft.is_char_device() {
                "chr"
            } else if ft.is_block_device() {
                "blk"
            } else if ft.is_fifo() {
                "fifo"
            } else {
                "socket"
            }
        };
        if ft.is_dir() {
            for e in fs::read_dir(&path).unwrap() {
                stack.push(rel.join(e.unwrap().file_name()));
            }
        }
        if kind != "dir" && md.nlink() > 1 {
            let key = (md.dev(), md.ino());
            let first = inodes.entry(key).or_insert_with(|| rel.clone());
            if rel < *first {
                *first = rel.clone();
            }
        }
        let node = Node {
            kind,
            mode: md.mode() & 0o7777,
            uid: md.uid(),
            gid: md.gid(),
            size: if kind == "dir" { 0 } else { md.size() },
            sha256: (kind == "file").then(|| super::fsmeta::content_digest(&path)),
            link: ft.is_symlink().then(|| {
                fs::read_link(&path)
                    .unwrap()
                    .as_os_str()
                    .as_bytes()
                    .to_vec()
            }),
            rdev: md.rdev(),
            xattrs: xattrs(&path),
            mtime: (md.mtime(), md.mtime_nsec()),
            link_group: None,
        };
        all.push((rel, (md.dev(), md.ino()), md.nlink(), node));
    }
    for (rel, key, nlink, mut node) in all {
        if node.kind != "dir" && nlink > 1 {
            node.link_group = inodes.get(&key).cloned();
        }
        out.insert(rel, node);
    }
    out
}

/// [`snapshot`] without directory mtimes (those of directories an archive does not
/// describe are the time of the run).
pub fn snapshot_without_dir_mtimes(root: &Path) -> Snapshot {
    snapshot(root)
        .into_iter()
        .map(|(p, mut n)| {
            if n.kind == "dir" {
                n.mtime = (0, 0);
            }
            (p, n)
        })
        .collect()
}

/// Human-readable differences between two snapshots (empty if equal).
pub fn diff(expected: &Snapshot, actual: &Snapshot) -> Vec<String> {
    let mut out = Vec::new();
    for (path, e) in expected {
        match actual.get(path) {
            None => out.push(format!("missing: {}", path.display())),
            Some(a) if a != e => out.push(format!(
                "{}:\n  expected {e:?}\n  actual   {a:?}",
                path.display()
            )),
            Some(_) => {}
        }
    }
    for path in actual.keys() {
        if !expected.contains_key(path) {
            out.push(format!("unexpected: {}", path.display()));
        }
    }
    out
}

/// A path as bytes, for building names.
pub fn bytes(p: &Path) -> &[u8] {
    OsStr::new(p).as_bytes()
}

/// Run the unpacker on in-memory archive bytes into an existing directory.
pub fn unpack_bytes(
    dir: &Path,
    data: &[u8],
    mode: systemd_import::import::unpack::Mode,
) -> systemd_import::util::error::Result<systemd_import::import::unpack::Stats> {
    let options = systemd_import::import::unpack::Options::new(mode);
    unpack_with(dir, &mut std::io::Cursor::new(data), &options)
}

/// Run the unpacker on a reader into an existing directory.
pub fn unpack_with(
    dir: &Path,
    input: &mut dyn Read,
    options: &systemd_import::import::unpack::Options,
) -> systemd_import::util::error::Result<systemd_import::import::unpack::Stats> {
    use std::os::fd::AsFd;
    let root = fs::File::open(dir).unwrap();
    systemd_import::import::unpack::unpack(root.as_fd(), input, options)
}

/// A scratch directory on a file system that supports user, trusted and security xattrs
/// (ext4 under /var/tmp on the CI machine; tmpfs lacks user.* on older kernels).
pub fn scratch() -> tempfile::TempDir {
    let dir = tempfile::Builder::new()
        .prefix("unpack-test.")
        .tempdir_in("/var/tmp")
        .unwrap();
    let probe = dir.path().join("probe");
    fs::write(&probe, b"").unwrap();
    let c = CString::new(probe.as_os_str().as_bytes()).unwrap();
    for name in [c"user.probe", c"trusted.probe"] {
        // SAFETY: valid NUL-terminated strings and a 1-byte value.
        let r = unsafe { libc::lsetxattr(c.as_ptr(), name.as_ptr(), b"x".as_ptr().cast(), 1, 0) };
        assert_eq!(
            r,
            0,
            "{} does not support {:?} xattrs ({}); these tests need ext4/xfs/btrfs under /var/tmp and root",
            dir.path().display(),
            name,
            std::io::Error::last_os_error()
        );
    }
    fs::remove_file(&probe).unwrap();
    dir
}

/// A tree of `./`, `etc/` and `etc/os-release` holding `ID=<marker>`: the smallest image a
/// test can tell apart from another.
pub fn os_release_tar(marker: &str) -> Vec<u8> {
    Tarball::new()
        .dir("./")
        .dir("etc/")
        .file("etc/os-release", format!("ID={marker}\n").as_bytes())
        .finish()
}
