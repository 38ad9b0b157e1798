//! Layer semantics of the `aufs` and `oci` modes: whiteouts, opaque directories,
//! replacement, hard links into lower layers, aufs pseudo-links, and the plain mode
//! extracting `.wh.*` verbatim.

mod common;

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;

use common::isolate::in_own_process;
use common::tarball::{self, Header, Tarball};
use systemd_import::import::unpack::Mode;

/// Relative paths in the tree, directories with a trailing '/', symlinks with '->'.
fn listing(root: &Path) -> Vec<String> {
    tarball::snapshot(root)
        .into_iter()
        .filter(|(p, _)| p != Path::new("."))
        .map(|(p, n)| {
            let p = p.strip_prefix(".").unwrap().display().to_string();
            match n.kind {
                "dir" => format!("{p}/"),
                "symlink" => format!(
                    "{p} -> {}",
                    String::from_utf8_lossy(n.link.as_deref().unwrap())
                ),
                _ => p,
            }
        })
        .collect()
}

/// A lower layer made with the plain mode.
fn lower(root: &Path, build: impl FnOnce(&mut Tarball)) {
    let mut t = Tarball::new();
    build(&mut t);
    tarball::unpack_bytes(root, &t.finish(), Mode::Plain).unwrap();
}

fn apply(
    root: &Path,
    mode: Mode,
    build: impl FnOnce(&mut Tarball),
) -> systemd_import::util::error::Result<systemd_import::import::unpack::Stats> {
    let mut t = Tarball::new();
    build(&mut t);
    tarball::unpack_bytes(root, &t.finish(), mode)
}

const LAYER_MODES: [Mode; 2] = [Mode::Aufs, Mode::Oci];

#[test]
fn whiteouts_remove_lower_files_and_directories() {
    for mode in LAYER_MODES {
        let work = tarball::scratch();
        let root = work.path();
        lower(root, |t| {
            t.dir("etc")
                .file("etc/a", b"a")
                .file("etc/b", b"b")
                .dir("dir")
                .dir("dir/sub")
                .file("dir/sub/x", b"x");
        });
        let stats = apply(root, mode, |t| {
            t.file("etc/.wh.a", b"")
                .file(".wh.dir", b"")
                .file(".wh.missing", b"")
                .file("nodir/.wh.x", b"");
        })
        .unwrap();
        assert_eq!(listing(root), ["etc/", "etc/b"], "{mode:?}");
        assert_eq!(stats.whiteouts, 4, "{mode:?}");
    }
}

#[test]
fn whiteouts_never_remove_what_the_same_layer_created() {
    for mode in LAYER_MODES {
        let work = tarball::scratch();
        let root = work.path();
        lower(root, |t| {
            t.file("x", b"lower x")
                .file("y", b"lower y")
                .dir("d")
                .file("d/lower", b"l");
        });
        apply(root, mode, |t| {
            // After: the layer's own x survives its whiteout.
            t.file("x", b"layer x").file(".wh.x", b"");
            // Before: the lower y goes, the layer's y arrives.
            t.file(".wh.y", b"").file("y", b"layer y");
            // A whiteout of a directory the layer also writes into: only lower parts go.
            t.file("d/mine", b"m").file(".wh.d", b"");
        })
        .unwrap();
        assert_eq!(listing(root), ["d/", "d/mine", "x", "y"], "{mode:?}");
        assert_eq!(fs::read(root.join("x")).unwrap(), b"layer x");
        assert_eq!(fs::read(root.join("y")).unwrap(), b"layer y");
    }
}

#[test]
fn opaque_marker_before_siblings() {
    for mode in LAYER_MODES {
        let work = tarball::scratch();
        let root = work.path();
        lower(root, |t| {
            t.dir("d")
                .file("d/old1", b"1")
                .dir("d/old2")
                .file("d/old2/x", b"x")
                .file("keep", b"k");
        });
        let stats = apply(root, mode, |t| {
            t.dir("d").file("d/.wh..wh..opq", b"").file("d/new", b"n");
        })
        .unwrap();
        assert_eq!(listing(root), ["d/", "d/new", "keep"], "{mode:?}");
        assert_eq!(stats.opaque, 1);
    }
}

#[test]
fn opaque_marker_after_siblings_keeps_this_layers_entries() {
    for mode in LAYER_MODES {
        let work = tarball::scratch();
        let root = work.path();
        lower(root, |t| {
            t.dir("d")
                .file("d/old", b"o")
                .dir("d/sub")
                .file("d/sub/lower", b"l")
                .file("d/sub/n", b"lower n");
        });
        apply(root, mode, |t| {
            t.dir("d")
                .file("d/new", b"n")
                .dir("d/sub")
                .file("d/sub/n", b"layer n")
                .file("d/.wh..wh..opq", b"");
        })
        .unwrap();
        // The layer's d/sub replaced attributes only, so without opaque semantics the
        // lower d/sub/lower would still show; the opaque marker removes it.
        assert_eq!(
            listing(root),
            ["d/", "d/new", "d/sub/", "d/sub/n"],
            "{mode:?}"
        );
        assert_eq!(fs::read(root.join("d/sub/n")).unwrap(), b"layer n");
    }
}

#[test]
fn opaque_root_and_layer_chain() {
    let work = tarball::scratch();
    let root = work.path();
    lower(root, |t| {
        t.dir("a").file("a/1", b"1").file("top", b"t");
    });
    apply(root, Mode::Oci, |t| {
        t.dir("a").file("a/2", b"2").file("a/.wh.1", b"");
    })
    .unwrap();
    assert_eq!(listing(root), ["a/", "a/2", "top"]);
    apply(root, Mode::Oci, |t| {
        t.file("fresh", b"f").file(".wh..wh..opq", b"");
    })
    .unwrap();
    assert_eq!(listing(root), ["fresh"]);
}

#[test]
fn hardlink_to_a_lower_layer_file() {
    for mode in LAYER_MODES {
        let work = tarball::scratch();
        let root = work.path();
        lower(root, |t| {
            t.dir("bin").file("bin/tool", b"binary");
        });
        apply(root, mode, |t| {
            t.hardlink("bin/alias", "bin/tool");
        })
        .unwrap();
        let a = fs::metadata(root.join("bin/alias")).unwrap();
        let t = fs::metadata(root.join("bin/tool")).unwrap();
        assert_eq!((a.dev(), a.ino()), (t.dev(), t.ino()), "{mode:?}");
        assert_eq!(a.nlink(), 2);
    }
}

#[test]
fn file_replaced_by_directory_and_back() {
    for mode in LAYER_MODES {
        let work = tarball::scratch();
        let root = work.path();
        lower(root, |t| {
            t.file("p", b"file")
                .dir("q")
                .dir("q/deep")
                .file("q/deep/child", b"c")
                .symlink("s", "q");
        });
        apply(root, mode, |t| {
            t.dir("p").file("p/child", b"c");
            t.file("q", b"now a file");
            // A directory over a symlink to a directory replaces the symlink.
            t.entry(&Header::dir("s").mode(0o700), b"");
        })
        .unwrap();
        assert_eq!(listing(root), ["p/", "p/child", "q", "s/"], "{mode:?}");
        assert_eq!(fs::read(root.join("q")).unwrap(), b"now a file");
        assert_eq!(
            fs::symlink_metadata(root.join("s")).unwrap().mode() & 0o7777,
            0o700
        );
    }
}

#[test]
fn directory_over_directory_keeps_children_and_takes_attributes() {
    for mode in LAYER_MODES {
        let work = tarball::scratch();
        let root = work.path();
        lower(root, |t| {
            t.entry(
                &Header::dir("d")
                    .mode(0o755)
                    .owner(0, 0)
                    .mtime(1_000_000_000),
                b"",
            )
            .file("d/lower", b"l");
        });
        apply(root, mode, |t| {
            t.entry(
                &Header::dir("d")
                    .mode(0o1770)
                    .owner(1000, 2000)
                    .mtime(1_500_000_000),
                b"",
            );
        })
        .unwrap();
        assert_eq!(listing(root), ["d/", "d/lower"], "{mode:?}");
        let md = fs::metadata(root.join("d")).unwrap();
        assert_eq!(
            (md.mode() & 0o7777, md.uid(), md.gid(), md.mtime()),
            (0o1770, 1000, 2000, 1_500_000_000)
        );
    }
}

#[test]
fn aufs_pseudo_links_are_resolved_and_meta_entries_skipped() {
    let work = tarball::scratch();
    let root = work.path();
    lower(root, |t| {
        t.dir("a");
    });
    let stats = apply(root, Mode::Aufs, |t| {
        t.entry(&Header::file(".wh..wh.aufs"), b"");
        t.dir(".wh..wh.orph").file(".wh..wh.orph/junk", b"j");
        t.dir(".wh..wh.plnk");
        t.entry(
            &Header::file(".wh..wh.plnk/1234.5678")
                .mode(0o750)
                .owner(7, 8),
            b"shared content",
        );
        t.hardlink("a/one", ".wh..wh.plnk/1234.5678");
        t.hardlink("/a/two", "/.wh..wh.plnk/1234.5678");
    })
    .unwrap();
    assert_eq!(listing(root), ["a/", "a/one", "a/two"]);
    let one = fs::metadata(root.join("a/one")).unwrap();
    let two = fs::metadata(root.join("a/two")).unwrap();
    assert_eq!(one.ino(), two.ino());
    assert_eq!((one.mode() & 0o7777, one.uid(), one.gid()), (0o750, 7, 8));
    assert_eq!(fs::read(root.join("a/two")).unwrap(), b"shared content");
    assert_eq!(stats.skipped, 4, "aufs, orph, orph/junk, plnk dir");

    let err = apply(root, Mode::Aufs, |t| {
        t.hardlink("a/three", ".wh..wh.plnk/missing");
    })
    .unwrap_err();
    assert_eq!(err.errno(), libc::ENOENT);
    assert!(err.msg().unwrap().contains("a/three"), "{err:?}");
    assert!(err.msg().unwrap().contains("pseudo-link"), "{err:?}");
}

#[test]
fn aufs_pseudo_link_stash_survives_an_opaque_root_reached_through_a_symlink() {
    // `up -> ..` resolves to the root inside it, so `up/.wh..wh..opq` empties the root;
    // the stash of pseudo-link sources must survive that (and be removed at the end).
    let work = tarball::scratch();
    let root = work.path();
    std::os::unix::fs::symlink("..", root.join("up")).unwrap();
    fs::write(root.join("lower-file"), b"lower").unwrap();
    apply(root, Mode::Aufs, |t| {
        t.file(".wh..wh.plnk/1.2", b"stashed")
            .file("up/.wh..wh..opq", b"")
            .hardlink("linked", ".wh..wh.plnk/1.2");
    })
    .unwrap();
    assert_eq!(listing(root), ["linked"]);
    assert_eq!(fs::read(root.join("linked")).unwrap(), b"stashed");
}

#[test]
fn oci_refuses_a_bare_whiteout_and_skips_meta_entries() {
    let work = tarball::scratch();
    let root = work.path();
    let stats = apply(root, Mode::Oci, |t| {
        t.file(".wh..wh.something", b"").file("ok", b"");
    })
    .unwrap();
    assert_eq!(stats.skipped, 1);
    assert_eq!(listing(root), ["ok"]);
    let err = apply(root, Mode::Oci, |t| {
        t.dir("d").file("d/.wh.", b"");
    })
    .unwrap_err();
    assert_eq!(err.errno(), libc::EINVAL);
    assert_eq!(
        err.msg(),
        Some("Refusing to extract 'd/.wh.': whiteout with an empty name ('.wh.').")
    );
    let err = apply(root, Mode::Oci, |t| {
        t.file("d/.wh.x/y", b"");
    })
    .unwrap_err();
    assert_eq!(err.errno(), libc::EINVAL);
}

#[test]
fn plain_mode_extracts_whiteouts_verbatim() {
    let work = tarball::scratch();
    let root = work.path();
    lower(root, |t| {
        t.file("x", b"x").dir("d").file("d/y", b"y");
    });
    let stats = apply(root, Mode::Plain, |t| {
        t.file(".wh.x", b"w")
            .file("d/.wh..wh..opq", b"")
            .file(".wh.", b"");
    })
    .unwrap();
    assert_eq!(
        listing(root),
        [".wh.", ".wh.x", "d/", "d/.wh..wh..opq", "d/y", "x"]
    );
    assert_eq!((stats.whiteouts, stats.opaque), (0, 0));
}

#[test]
fn whiteout_does_not_follow_a_final_symlink() {
    for mode in LAYER_MODES {
        let work = tarball::scratch();
        let root = work.path();
        lower(root, |t| {
            t.dir("real").file("real/f", b"f").symlink("link", "real");
        });
        apply(root, mode, |t| {
            t.file(".wh.link", b"");
        })
        .unwrap();
        assert_eq!(listing(root), ["real/", "real/f"], "{mode:?}");
    }
}

#[test]
fn stats_count_entries_and_bytes() {
    let work = tarball::scratch();
    let mut t = Tarball::new();
    t.dir("a").file("a/b", b"12345");
    let data = t.finish();
    let stats = tarball::unpack_bytes(work.path(), &data, Mode::Plain).unwrap();
    assert_eq!(stats.entries, 2);
    assert_eq!(stats.bytes, data.len() as u64);
    assert_eq!(
        fs::metadata(work.path().join("a"))
            .unwrap()
            .permissions()
            .mode()
            & 0o777,
        0o755
    );
}

/// Files are created with the member's mode and only chowned/chmodded when what the
/// kernel made differs: a set-gid lower directory hands its group to new files, the
/// umask strips bits, set-id bits never come from creation. Every case must still end
/// with exactly the member's owner and mode.
#[test]
fn new_files_get_exactly_the_members_owner_and_mode() {
    // The umask is process-wide: set it where no other test runs.
    in_own_process("new_files_get_exactly_the_members_owner_and_mode", || {
        for mode in [Mode::Plain, Mode::Aufs, Mode::Oci] {
            let work = tarball::scratch();
            let root = work.path();
            lower(root, |t| {
                t.entry(&Header::dir("shared").mode(0o2775).owner(0, 50), b"");
            });
            // The lower layer's directory really is set-gid (so the kernel gives new files
            // group 50), or the cases below test nothing.
            let shared = fs::metadata(root.join("shared")).unwrap();
            assert_eq!((shared.mode() & 0o7777, shared.gid()), (0o2775, 50));
            // SAFETY: umask only swaps the process mask, in a process of its own.
            let old_umask = unsafe { libc::umask(0o022) };
            apply(root, mode, |t| {
                t.entry(&Header::file("shared/root").owner(0, 0), b"r")
                    .entry(&Header::file("shared/group50").owner(0, 50), b"g")
                    .entry(&Header::file("shared/open").mode(0o666), b"o")
                    .entry(&Header::file("shared/suid").mode(0o4755), b"s")
                    .entry(
                        &Header::file("shared/user").mode(0o640).owner(1000, 1000),
                        b"u",
                    )
                    .entry(&Header::file("plain").mode(0o600), b"p")
                    .entry(&Header::dir("shared/dir-root").mode(0o755), b"")
                    .entry(&Header::dir("shared/dir50").mode(0o2775).owner(0, 50), b"")
                    .entry(&Header::dir("dir-user").mode(0o750).owner(1000, 1000), b"");
            })
            .unwrap();
            // SAFETY: as above.
            unsafe { libc::umask(old_umask) };
            for (name, want_mode, uid, gid) in [
                ("shared/root", 0o644, 0, 0),
                ("shared/group50", 0o644, 0, 50),
                ("shared/open", 0o666, 0, 0),
                ("shared/suid", 0o4755, 0, 0),
                ("shared/user", 0o640, 1000, 1000),
                ("plain", 0o600, 0, 0),
                // Directories too (their owner and mode are set when the stream leaves
                // them, skipped where they match): the set-gid parent hands its group and
                // bit to the first, which wants neither.
                ("shared/dir-root", 0o755, 0, 0),
                ("shared/dir50", 0o2775, 0, 50),
                ("dir-user", 0o750, 1000, 1000),
            ] {
                let m = fs::metadata(root.join(name)).unwrap();
                assert_eq!(
                    (m.mode() & 0o7777, m.uid(), m.gid()),
                    (want_mode, uid, gid),
                    "{name} in {mode:?}"
                );
            }
        }
    });
}
