//! The unpacker's hostile corpus: single archives, each with the unpacker mode it is
//! meant for, an optional lower layer prepared in the root before it (as an earlier
//! layer would leave it), the warnings it must log and what must happen: refused with an
//! errno and a message fragment, or accepted with everything staying inside the root.
//! The archives name the outside directory `outside` (a sibling of the root holding a
//! sentinel file and a sentinel directory) by its absolute path or as `../outside`.
//! tests/unpack_hostile.rs runs each case through the unpacker, tests/local_import.rs
//! through `systemd-import tar` (compared with the unpacker in pull-tar's plain mode).

use std::fs;
use std::os::unix::fs::symlink;
use std::path::Path;

use super::tarball::{self, base256, Header, Tarball};
use systemd_import::import::unpack::Mode;

/// What a case must do.
pub enum Expect {
    /// Refused with this errno and a message containing this fragment.
    Refused(i32, &'static str),
    /// Accepted; nothing outside the root changes.
    Contained,
}

/// Prepares the root (first argument) before the archive, given the outside directory.
pub type Setup = Box<dyn Fn(&Path, &Path)>;
/// Checks the root after an accepted archive, given the outside directory.
pub type Check = Box<dyn Fn(&Path, &Path)>;

pub struct Case {
    pub label: String,
    pub mode: Mode,
    pub lower: Option<Setup>,
    pub bytes: Vec<u8>,
    pub warnings: Vec<&'static str>,
    pub expect: Expect,
    pub inside: Option<Check>,
}

impl Case {
    fn new(label: impl Into<String>, mode: Mode, bytes: Vec<u8>, expect: Expect) -> Self {
        Case {
            label: label.into(),
            mode,
            lower: None,
            bytes,
            warnings: Vec::new(),
            expect,
            inside: None,
        }
    }

    fn lower(mut self, setup: impl Fn(&Path, &Path) + 'static) -> Self {
        self.lower = Some(Box::new(setup));
        self
    }

    fn inside(mut self, check: impl Fn(&Path, &Path) + 'static) -> Self {
        self.inside = Some(Box::new(check));
        self
    }
}

fn refused(
    label: impl Into<String>,
    mode: Mode,
    bytes: Vec<u8>,
    errno: i32,
    fragment: &'static str,
) -> Case {
    Case::new(label, mode, bytes, Expect::Refused(errno, fragment))
}

fn contained(label: impl Into<String>, mode: Mode, bytes: Vec<u8>) -> Case {
    Case::new(label, mode, bytes, Expect::Contained)
}

fn build(f: impl FnOnce(&mut Tarball)) -> Vec<u8> {
    let mut t = Tarball::new();
    f(&mut t);
    t.finish()
}

fn is_symlink(p: &Path) -> bool {
    fs::symlink_metadata(p).unwrap().file_type().is_symlink()
}

/// `a/a/…/a` (`levels` deep), then symlinks `t1`, `t2`, … each pointing at the bottom of
/// the previous chunk, each followed by a chunk below it: every chunk adds `levels`
/// physical levels, although no name has more than `levels` components.
pub fn symlink_chained_depth(chunks: usize, levels: usize) -> Vec<u8> {
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

/// The whole corpus for an outside directory at `outside`.
pub fn corpus(outside: &Path) -> Vec<Case> {
    let out = outside.display().to_string();
    let mut cases = Vec::new();
    names(&out, &mut cases);
    symlinks(&out, &mut cases);
    hardlinks(&out, &mut cases);
    whiteouts(&out, &mut cases);
    metadata(&out, &mut cases);
    headers(&mut cases);
    sparse(&mut cases);
    cases
}

fn names(out: &str, cases: &mut Vec<Case>) {
    let mut c = contained(
        "absolute-names",
        Mode::Plain,
        build(|t| {
            t.file(&format!("{out}/sentinel"), b"overwritten?");
            t.file("/abs-file", b"a");
        }),
    )
    .inside(|root, outside| {
        let inside = root
            .join(outside.strip_prefix("/").unwrap())
            .join("sentinel");
        assert_eq!(fs::read(inside).unwrap(), b"overwritten?");
        assert_eq!(fs::read(root.join("abs-file")).unwrap(), b"a");
    });
    c.warnings = vec!["Removing leading '/' from member names."];
    cases.push(c);
    for (i, name) in [
        "../outside/sentinel",
        "a/../../outside/sentinel",
        "a/b/../c",
        "..",
    ]
    .into_iter()
    .enumerate()
    {
        cases.push(refused(
            format!("dotdot-{i}"),
            Mode::Plain,
            build(|t| {
                t.file(name, b"evil");
            }),
            libc::EINVAL,
            "member name contains '..'",
        ));
    }
    cases.push(refused(
        "dotdot-pax",
        Mode::Oci,
        build(|t| {
            t.pax(&[("path", b"../outside/sentinel")])
                .file("harmless", b"evil");
        }),
        libc::EINVAL,
        "'../outside/sentinel': member name contains '..'",
    ));
    cases.push(refused(
        "dotdot-gnu-long",
        Mode::Aufs,
        build(|t| {
            t.gnu_long(b'L', b"x/../../../outside/sentinel")
                .file("harmless", b"evil");
        }),
        libc::EINVAL,
        "member name contains '..'",
    ));
    cases.push(refused(
        "device-dotdot",
        Mode::Plain,
        build(|t| {
            t.entry(&Header::new("../outside/node", b'4').dev(7, 0), b"");
        }),
        libc::EINVAL,
        "contains '..'",
    ));
    for (i, name) in [".", "/.", "./", "/"].into_iter().enumerate() {
        // CVE-2021-29136: a `/.` symlink.
        cases.push(refused(
            format!("root-symlink-{i}"),
            Mode::Oci,
            build(|t| {
                t.symlink(name, out).file("sentinel", b"evil");
            }),
            libc::EINVAL,
            "names the root directory but is not a directory",
        ));
    }
    // As a directory it only sets the root's attributes.
    cases.push(contained(
        "root-as-directory",
        Mode::Plain,
        build(|t| {
            t.entry(&Header::dir("./").mode(0o700), b"");
        }),
    ));
}

fn symlinks(out: &str, cases: &mut Vec<Case>) {
    // Absolute target: resolved inside the root, where it does not exist.
    cases.push(refused(
        "symlink-parent-absolute",
        Mode::Plain,
        build(|t| {
            t.symlink("evil", out).file("evil/sentinel", b"evil");
        }),
        libc::EEXIST,
        "cannot open or create parent directory 'evil'",
    ));
    // '../..' target: clamped at the root, so it lands in the root's own 'outside'.
    cases.push(
        contained(
            "symlink-parent-dotdot",
            Mode::Plain,
            build(|t| {
                t.dir("outside")
                    .symlink("evil", "../../../outside")
                    .file("evil/sentinel", b"contained");
            }),
        )
        .inside(|root, _| {
            assert_eq!(
                fs::read(root.join("outside/sentinel")).unwrap(),
                b"contained"
            );
        }),
    );
    for (label, mode) in [
        ("plain", Mode::Plain),
        ("aufs", Mode::Aufs),
        ("oci", Mode::Oci),
    ] {
        let lower = |root: &Path, outside: &Path| {
            symlink(outside, root.join("lowerlink")).unwrap();
            symlink("../outside", root.join("relative")).unwrap();
        };
        cases.push(
            refused(
                format!("lower-symlink-{label}"),
                mode,
                build(|t| {
                    t.file("lowerlink/sentinel", b"evil");
                }),
                libc::EEXIST,
                "'lowerlink/sentinel'",
            )
            .lower(lower),
        );
        cases.push(
            refused(
                format!("lower-relative-symlink-{label}"),
                mode,
                build(|t| {
                    t.file("relative/sentinel-dir/new", b"evil");
                }),
                libc::EEXIST,
                "'relative/sentinel-dir/new'",
            )
            .lower(lower),
        );
    }
    cases.push(refused(
        "symlink-chain",
        Mode::Plain,
        build(|t| {
            t.symlink("a", "b")
                .symlink("b", "c")
                .symlink("c", "../../outside");
            t.symlink("d", out);
            t.symlink("e", "d");
            t.file("a/sentinel", b"chain");
        }),
        libc::EEXIST,
        "'a/sentinel'",
    ));
    cases.push(refused(
        "symlink-chain-absolute",
        Mode::Plain,
        build(|t| {
            t.symlink("d", out).symlink("e", "d");
            t.file("e/sentinel", b"chain");
        }),
        libc::EEXIST,
        "'e/sentinel'",
    ));
    cases.push(
        contained(
            "symlink-to-slash",
            Mode::Plain,
            build(|t| {
                t.symlink("rootlink", "/")
                    .symlink("up", "../../../../..")
                    .file("rootlink/etc-file", b"r");
                t.file("up/via-up", b"u");
            }),
        )
        .inside(|root, _| {
            assert_eq!(fs::read(root.join("etc-file")).unwrap(), b"r");
            assert_eq!(fs::read(root.join("via-up")).unwrap(), b"u");
        }),
    );
    cases.push(
        contained(
            "directory-over-symlink",
            Mode::Oci,
            build(|t| {
                t.symlink("samedir", out);
                for d in ["samedir", "lowerdir"] {
                    t.entry(&Header::dir(d).mode(0o777).owner(1234, 1234).mtime(1), b"");
                }
            }),
        )
        .lower(|root, outside| symlink(outside, root.join("lowerdir")).unwrap())
        .inside(|root, _| {
            for d in ["samedir", "lowerdir"] {
                assert!(fs::symlink_metadata(root.join(d)).unwrap().is_dir(), "{d}");
            }
        }),
    );
    // The directory's owner/mode/mtime are applied after its children; by then it is a
    // symlink to the outside, which must not receive them.
    cases.push(contained(
        "directory-replaced-by-symlink",
        Mode::Plain,
        build(|t| {
            t.entry(
                &Header::dir("d").mode(0o777).owner(1234, 1234).mtime(1),
                b"",
            );
            t.symlink("d", &format!("{out}/sentinel-dir"));
            t.entry(&Header::symlink("d2", "../outside/sentinel-dir"), b"");
            t.file("after", b"x");
        }),
    ));
    // A parent cached before the replacement is not reused afterwards.
    cases.push(refused(
        "cached-parent-replaced",
        Mode::Plain,
        build(|t| {
            t.dir("p")
                .file("p/one", b"1")
                .symlink("p", out)
                .file("p/sentinel", b"evil");
        }),
        libc::EEXIST,
        "'p/sentinel'",
    ));
    cases.push(refused(
        "device-through-symlink",
        Mode::Plain,
        build(|t| {
            t.symlink("dev", out);
            t.entry(&Header::new("dev/evil", b'3').dev(1, 3), b"");
        }),
        libc::EEXIST,
        "'dev/evil'",
    ));
    // Five chunks of 2000 levels made a tree 10,000 deep, and removing it (the last
    // member) overflowed the unpacking thread's stack: an abort, not an error.
    cases.push(refused(
        "deeper-than-names",
        Mode::Plain,
        symlink_chained_depth(5, 2000),
        libc::ENAMETOOLONG,
        "'t1/a/a/a/",
    ));
}

fn hardlinks(out: &str, cases: &mut Vec<Case>) {
    let plain = |label: &str, f: &dyn Fn(&mut Tarball), errno, fragment| {
        refused(label, Mode::Plain, build(|t| f(t)), errno, fragment)
    };
    cases.push(plain(
        "hardlink-dotdot",
        &|t| {
            t.hardlink("h", "../outside/sentinel");
        },
        libc::EINVAL,
        "contains '..'",
    ));
    cases.push(plain(
        "hardlink-absolute",
        &|t| {
            t.hardlink("h", &format!("{out}/sentinel"));
        },
        libc::ENOENT,
        "does not exist",
    ));
    cases.push(refused(
        "hardlink-through-symlink",
        Mode::Oci,
        build(|t| {
            t.symlink("evil", out).hardlink("h", "evil/sentinel");
        }),
        libc::ENOENT,
        "hard link target 'evil/sentinel' does not exist",
    ));
    cases.push(plain(
        "hardlink-missing",
        &|t| {
            t.hardlink("h", "missing");
        },
        libc::ENOENT,
        "'h': hard link target 'missing' does not exist",
    ));
    cases.push(plain(
        "hardlink-directory",
        &|t| {
            t.dir("d").hardlink("h", "d");
        },
        libc::EPERM,
        "is a directory",
    ));
    cases.push(plain(
        "hardlink-root",
        &|t| {
            t.hardlink("h", "/");
        },
        libc::EPERM,
        "root directory",
    ));
    cases.push(
        contained(
            "hardlink-to-symlink",
            Mode::Plain,
            build(|t| {
                t.symlink("s", &format!("{out}/sentinel"))
                    .hardlink("h", "s");
                // Writing a member over the hard link replaces it; the target is not opened.
                t.file("h", b"evil");
            }),
        )
        .inside(|root, _| {
            assert!(is_symlink(&root.join("s")));
            assert_eq!(fs::read(root.join("h")).unwrap(), b"evil");
        }),
    );
    // A lower hard link group inside the root keeps its other names unchanged when one
    // name is replaced.
    cases.push(
        contained(
            "lower-hardlink-group",
            Mode::Oci,
            build(|t| {
                t.file("lower", b"replaced");
            }),
        )
        .lower(|root, _| {
            fs::write(root.join("lower"), b"lower").unwrap();
            fs::hard_link(root.join("lower"), root.join("other-name")).unwrap();
        })
        .inside(|root, _| {
            assert_eq!(fs::read(root.join("other-name")).unwrap(), b"lower");
            assert_eq!(fs::read(root.join("lower")).unwrap(), b"replaced");
        }),
    );
}

fn whiteouts(out: &str, cases: &mut Vec<Case>) {
    for (i, target) in [out, "../outside", "../../outside"].into_iter().enumerate() {
        let target = target.to_string();
        cases.push(
            contained(
                format!("whiteouts-through-symlink-{i}"),
                Mode::Oci,
                build(|t| {
                    t.file("link/.wh.sentinel", b"")
                        .file("link/.wh.sentinel-dir", b"");
                    t.file("link/sentinel-dir/.wh..wh..opq", b"");
                    t.file("link/.wh..wh..opq", b"");
                }),
            )
            .lower(move |root, _| symlink(&target, root.join("link")).unwrap())
            .inside(|root, _| assert!(is_symlink(&root.join("link")))),
        );
        // Whiting out the link itself removes the link, not its target.
        let target = [out, "../outside", "../../outside"][i].to_string();
        cases.push(
            contained(
                format!("whiteout-of-a-symlink-{i}"),
                Mode::Aufs,
                build(|t| {
                    t.file(".wh.link", b"");
                }),
            )
            .lower(move |root, _| symlink(&target, root.join("link")).unwrap())
            .inside(|root, _| assert!(fs::symlink_metadata(root.join("link")).is_err())),
        );
    }
    // `.wh...` at the top would name the root's parent.
    for (i, name) in [".wh..", ".wh...", "sub/.wh...", "sub/.wh.."]
        .into_iter()
        .enumerate()
    {
        for (label, mode) in [("aufs", Mode::Aufs), ("oci", Mode::Oci)] {
            cases.push(
                refused(
                    format!("whiteout-dot-{i}-{label}"),
                    mode,
                    build(|t| {
                        t.file(name, b"");
                    }),
                    libc::EINVAL,
                    "whiteout of '.' or '..'",
                )
                .lower(|root, _| {
                    fs::create_dir(root.join("sub")).unwrap();
                    fs::write(root.join("sub/lower"), b"l").unwrap();
                }),
            );
        }
    }
}

fn metadata(out: &str, cases: &mut Vec<Case>) {
    cases.push(
        contained(
            "symlink-metadata",
            Mode::Plain,
            build(|t| {
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
            }),
        )
        .inside(|root, _| {
            use std::os::unix::fs::MetadataExt;
            let md = fs::symlink_metadata(root.join("s")).unwrap();
            assert_eq!((md.uid(), md.gid(), md.mtime()), (1234, 4321, 5));
            assert!(tarball::xattrs(&root.join("s2")).contains_key(&b"trusted.evil"[..]));
        }),
    );
    // A later member of another type at that path replaces the symlink.
    for (i, entry) in [
        Header::file("s").mode(0o4777),
        Header::new("s", b'6'),
        Header::new("s", b'3').dev(1, 3),
    ]
    .into_iter()
    .enumerate()
    {
        cases.push(
            contained(
                format!("replaces-symlink-{i}"),
                Mode::Plain,
                build(|t| {
                    t.entry(&entry.owner(1234, 1234), b"");
                }),
            )
            .lower(|root, outside| symlink(outside.join("sentinel"), root.join("s")).unwrap())
            .inside(|root, _| assert!(!is_symlink(&root.join("s")))),
        );
    }
}

fn headers(cases: &mut Vec<Case>) {
    let plain = |label: &str, bytes: Vec<u8>, errno, fragment| {
        refused(label, Mode::Plain, bytes, errno, fragment)
    };
    // Larger than the total limit allows: refused before anything is created.
    cases.push(plain(
        "size-huge",
        build(|t| {
            t.entry(
                &Header::file("huge").gnu().patch(124, base256(1 << 40, 12)),
                b"",
            );
        }),
        libc::EFBIG,
        "'huge': size 1099511627776 exceeds",
    ));
    cases.push(plain(
        "size-past-the-end",
        build(|t| {
            t.entry(&Header::file("short").size(1 << 30), b"only this");
        }),
        libc::EBADMSG,
        "'short': unexpected end of archive",
    ));
    cases.push(plain(
        "size-negative",
        build(|t| {
            t.entry(
                &Header::file("neg").gnu().patch(124, base256(-512, 12)),
                b"",
            );
        }),
        libc::EBADMSG,
        "'neg': size field is negative",
    ));
    cases.push(plain(
        "uid-negative",
        build(|t| {
            t.entry(
                &Header::file("neguid").gnu().patch(108, base256(-1, 8)),
                b"",
            );
        }),
        libc::EBADMSG,
        "uid field is negative",
    ));
    let pax: [(&[u8], &str); 6] = [
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
    for (i, (body, fragment)) in pax.into_iter().enumerate() {
        cases.push(plain(
            &format!("pax-{i}"),
            build(|t| {
                t.pax_raw(b'x', body).file("f", b"");
            }),
            libc::EBADMSG,
            fragment,
        ));
    }
    cases.push(plain(
        "pax-global",
        build(|t| {
            t.pax_raw(b'g', b"10 uid=x1\n").file("f", b"");
        }),
        libc::EBADMSG,
        "invalid number",
    ));
    cases.push(plain(
        "pax-before-the-end",
        build(|t| {
            t.pax(&[("path", b"x")]);
        }),
        libc::EBADMSG,
        "end-of-archive marker after an extended header",
    ));
    cases.push(plain(
        "pax-oversized",
        build(|t| {
            t.pax_raw(b'x', &tarball::pax_record("comment", &vec![b'c'; 2 << 20]))
                .file("f", b"");
        }),
        libc::EFBIG,
        "PAX header of 2097169 bytes exceeds the limit",
    ));
    cases.push(plain(
        "gnu-long-oversized",
        build(|t| {
            t.gnu_long(b'L', &vec![b'n'; (1 << 20) + 1]).file("f", b"");
        }),
        libc::EFBIG,
        "GNU long name of 1048578 bytes exceeds",
    ));
    cases.push(plain(
        "name-too-long",
        build(|t| {
            t.pax(&[("path", "p/".repeat(2100).as_bytes())])
                .file("f", b"");
        }),
        libc::ENAMETOOLONG,
        "member name of 4200 bytes exceeds the limit of 4096",
    ));
    cases.push(plain(
        "link-target-too-long",
        build(|t| {
            t.pax(&[("linkpath", "l".repeat(5000).as_bytes())])
                .symlink("s", "x");
        }),
        libc::ENAMETOOLONG,
        "link target of 5000 bytes",
    ));
    let full = build(|t| {
        t.file("a", b"complete").file("b", &[7u8; 3000]);
    });
    cases.push(plain(
        "truncated-header",
        full[..512 + 512 + 300].to_vec(),
        libc::EBADMSG,
        "ends inside a header block",
    ));
    cases.push(plain(
        "truncated-content",
        full[..512 + 512 + 512 + 1000].to_vec(),
        libc::EBADMSG,
        "'b': unexpected end of archive",
    ));
    let mut t = Tarball::new();
    t.pax(&[("path", b"x")]);
    cases.push(plain(
        "truncated-pax",
        t.data[..600].to_vec(),
        libc::EBADMSG,
        "unexpected end of archive",
    ));
    let mut h = Header::file("bad");
    h.bad_checksum = true;
    cases.push(plain(
        "bad-checksum",
        build(|t| {
            t.entry(&h, b"");
        }),
        libc::EBADMSG,
        "header checksum mismatch",
    ));
}

fn sparse(cases: &mut Vec<Case>) {
    let plain = |label: &str, bytes: Vec<u8>, fragment| {
        refused(label, Mode::Plain, bytes, libc::EBADMSG, fragment)
    };
    // Old GNU sparse: one segment 4096+512 in a file of real size 1024.
    let mut map = Vec::new();
    map.extend_from_slice(b"00000010000\0"); // offset 4096
    map.extend_from_slice(b"00000001000\0"); // length 512
    let h = Header::new("sparse", b'S')
        .gnu()
        .patch(386, &map)
        .patch(483, b"00000002000\0");
    cases.push(plain(
        "sparse-old-gnu-past-size",
        build(|t| {
            t.entry(&h, &[1u8; 512]);
        }),
        "lies beyond the file size 1024",
    ));
    // PAX 1.0: the map in the data.
    let pax10 = |t: &mut Tarball, realsize: &[u8]| {
        t.pax(&[
            ("GNU.sparse.major", b"1"),
            ("GNU.sparse.minor", b"0"),
            ("GNU.sparse.name", b"s"),
            ("GNU.sparse.realsize", realsize),
        ]);
    };
    cases.push(plain(
        "sparse-pax-1.0-past-size",
        build(|t| {
            pax10(t, b"100");
            let mut body = b"1\n50\n100\n".to_vec();
            body.resize(512, 0);
            body.extend_from_slice(&[2u8; 100]);
            t.file("GNUSparseFile.0/s", &body);
        }),
        "lies beyond the file size 100",
    ));
    // PAX 0.1: more data than stored.
    cases.push(plain(
        "sparse-pax-0.1-short",
        build(|t| {
            t.pax(&[
                ("GNU.sparse.size", b"100000"),
                ("GNU.sparse.map", b"0,5000"),
            ]);
            t.file("s", &[3u8; 10]);
        }),
        "describes 5000 bytes but the entry stores 10",
    ));
    cases.push(plain(
        "sparse-overlap",
        build(|t| {
            t.pax(&[
                ("GNU.sparse.size", b"100"),
                ("GNU.sparse.map", b"0,10,5,10"),
            ]);
            t.file("s", &[3u8; 20]);
        }),
        "overlap",
    ));
    // PAX 1.0 keeps the map at the start of the content; a content that ends inside
    // the map (here: empty, then cut after the count) is refused, not read past.
    for (i, content) in [&b""[..], b"1\n", b"1\n4096\n"].into_iter().enumerate() {
        cases.push(plain(
            &format!("sparse-map-longer-{i}"),
            build(|t| {
                pax10(t, b"8192");
                t.file("GNUSparseFile.0/s", content);
                t.file("after", b"the next member");
            }),
            "'s': sparse map is larger than the entry",
        ));
    }
}
