//! The unpacker keeps the tar's order: a hard link to a file just written sees its whole
//! content, a path written twice holds the second member (a hard link made to the first
//! keeps the first's content), and a file system that refuses a write fails the unpack
//! with that error at that member, creating nothing after it.

mod common;

use std::ffi::CString;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::sync::mpsc;

use common::isolate::in_own_process;
use common::tarball::{self, Header, Tarball};
use systemd_import::import::unpack::{Mode, Options};

/// Unpack `tar` in `mode` into a fresh scratch tree, with a queue for written files
/// (pull-oci's btrfs path) when `offer` is set.
fn unpack(tar: &[u8], mode: Mode, offer: bool) -> tempfile::TempDir {
    let work = tarball::scratch();
    let (tx, rx) = mpsc::sync_channel(64);
    let options = Options {
        written: offer.then_some(tx),
        ..Options::new(mode)
    };
    tarball::unpack_with(work.path(), &mut std::io::Cursor::new(tar), &options).unwrap();
    drop(options);
    drop(rx);
    work
}

#[test]
fn a_hard_link_to_a_file_just_written_sees_its_whole_content() {
    let small = b"small content\n".to_vec();
    let big: Vec<u8> = (0..(3u32 << 20)).map(|i| (i % 251) as u8).collect();
    let tar = Tarball::new()
        .entry(&Header::file("small").mtime(1_000_000), &small)
        .hardlink("small.link", "small")
        .entry(&Header::file("big").mtime(2_000_000), &big)
        .hardlink("big.link", "big")
        .finish();
    for (mode, offer) in [(Mode::Plain, false), (Mode::Oci, true), (Mode::Aufs, false)] {
        let work = unpack(&tar, mode, offer);
        let p = work.path();
        for (name, link, content, mtime) in [
            ("small", "small.link", &small, 1_000_000),
            ("big", "big.link", &big, 2_000_000),
        ] {
            assert_eq!(&fs::read(p.join(link)).unwrap(), content, "{mode:?} {link}");
            let (a, b) = (
                fs::metadata(p.join(name)).unwrap(),
                fs::metadata(p.join(link)).unwrap(),
            );
            assert_eq!((a.ino(), a.nlink()), (b.ino(), 2), "{mode:?} {link}");
            assert_eq!(b.mtime(), mtime, "{mode:?} {link}");
        }
    }
}

#[test]
fn a_path_written_twice_holds_the_second_member() {
    let tar = Tarball::new()
        .file("x", b"first\n")
        .hardlink("kept", "x")
        .entry(&Header::file("x").mode(0o600).mtime(7), b"second, longer\n")
        .finish();
    for (mode, offer) in [(Mode::Plain, false), (Mode::Oci, true)] {
        let work = unpack(&tar, mode, offer);
        let p = work.path();
        assert_eq!(fs::read(p.join("x")).unwrap(), b"second, longer\n");
        // The link was made to the first member's inode, which the second replaced.
        assert_eq!(fs::read(p.join("kept")).unwrap(), b"first\n");
        let x = fs::metadata(p.join("x")).unwrap();
        assert_eq!((x.mode() & 0o7777, x.mtime(), x.nlink()), (0o600, 7, 1));
    }
}

/// A tmpfs mounted by [`mount_small_tmpfs`], unmounted on drop: the temporary directory it
/// covers can be removed only then (before, removing it fails with EBUSY and leaves it
/// behind in /var/tmp).
struct SmallTmpfs(CString);

impl Drop for SmallTmpfs {
    fn drop(&mut self) {
        // SAFETY: a plain system call with a NUL-terminated string that outlives it.
        unsafe { libc::umount2(self.0.as_ptr(), libc::MNT_DETACH) };
    }
}

/// Mount a tmpfs of `size` bytes on `dir` in a mount namespace of this process's own.
#[must_use = "the tmpfs is unmounted when this is dropped"]
fn mount_small_tmpfs(dir: &std::path::Path, size: &str) -> SmallTmpfs {
    let target = CString::new(dir.as_os_str().as_bytes()).unwrap();
    let data = CString::new(format!("size={size}")).unwrap();
    // SAFETY: plain system calls with NUL-terminated strings that outlive them.
    unsafe {
        assert_eq!(libc::unshare(libc::CLONE_NEWNS), 0);
        assert_eq!(
            libc::mount(
                c"none".as_ptr(),
                c"/".as_ptr(),
                std::ptr::null(),
                libc::MS_REC | libc::MS_PRIVATE,
                std::ptr::null()
            ),
            0
        );
        assert_eq!(
            libc::mount(
                c"tmpfs".as_ptr(),
                target.as_ptr(),
                c"tmpfs".as_ptr(),
                0,
                data.as_ptr().cast()
            ),
            0,
            "mount tmpfs: {}",
            std::io::Error::last_os_error()
        );
    }
    SmallTmpfs(target)
}

#[test]
fn a_refused_write_fails_the_unpack_at_that_member() {
    in_own_process("a_refused_write_fails_the_unpack_at_that_member", || {
        let work = tempfile::tempdir_in("/var/tmp").unwrap();
        let _tmpfs = mount_small_tmpfs(work.path(), "256k");
        let mut t = Tarball::new();
        for i in 0..8 {
            t.file(&format!("f{i}"), &[b'a'; 1000]);
        }
        let tar = t
            .file("too-big", &vec![b'b'; 1 << 20])
            .dir("after/")
            .file("after/file", b"never\n")
            .finish();
        for (mode, offer) in [(Mode::Plain, false), (Mode::Oci, true)] {
            let root = work.path().join(format!("{mode:?}"));
            fs::create_dir(&root).unwrap();
            let (tx, rx) = mpsc::sync_channel(64);
            let options = Options {
                written: offer.then_some(tx),
                ..Options::new(mode)
            };
            let err = tarball::unpack_with(&root, &mut std::io::Cursor::new(&tar), &options)
                .expect_err("a 1 MiB file fits no 256 KiB file system");
            drop((options, rx));
            assert_eq!(err.errno(), libc::ENOSPC, "{mode:?}: {err}");
            assert_eq!(fs::read(root.join("f7")).unwrap(), [b'a'; 1000]);
            assert!(
                !root.join("after").exists(),
                "{mode:?}: went on after the error"
            );
            fs::remove_dir_all(&root).unwrap();
        }
    });
}
