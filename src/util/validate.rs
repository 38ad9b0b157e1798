//! Syntax checks for everything the user or a server hands us: URLs, file and machine
//! names, Docker registry names, tags and ids, ETags and image names.
//!
//! The rules are the C tool's, byte for byte (spec §1.6). They are deliberately shallow:
//! `http_url_is_valid` accepts spaces and a missing host because the C code did, and the
//! CLI's error messages depend on which check fails first.
//!
//! Rust strings may contain NUL bytes, C strings cannot; every check here rejects a NUL
//! (in C the string would simply have ended there, and nothing with a NUL can be passed
//! on to the kernel or to libcurl anyway).

/// glibc's `FILENAME_MAX`: the C tool's upper bound for a file name (not `NAME_MAX`).
pub const FILENAME_MAX: usize = 4096;

/// `HOST_NAME_MAX` on Linux: the longest host name, and so the longest machine name.
pub const HOST_NAME_MAX: usize = 64;

/// An `http://` or `https://` URL with a non-empty, pure-ASCII remainder. Nothing else is
/// checked (no host, port or path syntax), exactly like the C tool.
pub fn http_url_is_valid(url: &str) -> bool {
    let rest = match url
        .strip_prefix("http://")
        .or_else(|| url.strip_prefix("https://"))
    {
        Some(rest) => rest,
        None => return false,
    };
    !rest.is_empty() && rest.bytes().all(|b| b != 0 && b < 0x80)
}

/// A `file:/` URL with a non-empty, pure-ASCII remainder (systemd's `file_url_is_valid`):
/// systemd-importd accepts these besides http(s) URLs for `PullTar`/`PullRaw`.
pub fn file_url_is_valid(url: &str) -> bool {
    url.strip_prefix("file:/")
        .is_some_and(|rest| !rest.is_empty() && rest.bytes().all(|b| b != 0 && b < 0x80))
}

/// A single path component: non-empty, no `/`, not `.` or `..`, at most [`FILENAME_MAX`]
/// bytes.
pub fn filename_is_valid(name: &str) -> bool {
    !name.is_empty()
        && !name.contains(['/', '\0'])
        && name != "."
        && name != ".."
        && name.len() <= FILENAME_MAX
}

/// A host name as systemd's 2015 `hostname_is_valid` saw it: `[A-Za-z0-9_.-]` only, no
/// leading or trailing dot, no empty label, at most [`HOST_NAME_MAX`] bytes. `_` is
/// accepted; `:` (so `host:port`) is not.
pub fn hostname_is_valid(name: &str) -> bool {
    if name.is_empty() || name.len() > HOST_NAME_MAX {
        return false;
    }
    // Starting as if a dot had just been seen rejects a leading dot with the same
    // check that rejects two dots in a row.
    let mut after_dot = true;
    for b in name.bytes() {
        if b == b'.' {
            if after_dot {
                return false;
            }
            after_dot = true;
        } else if b.is_ascii_alphanumeric() || b == b'-' || b == b'_' {
            after_dot = false;
        } else {
            return false;
        }
    }
    !after_dot
}

/// A host name as systemd 247+'s `hostname_is_valid(s, 0)` sees it (the local-name check
/// of systemd-pull 252): letters, digits, `-` and `.` only; no leading, trailing or
/// doubled dot; no label that starts or ends with `-`; at most [`HOST_NAME_MAX`] bytes.
pub fn ldh_hostname_is_valid(name: &str) -> bool {
    if name.is_empty() || name.len() > HOST_NAME_MAX {
        return false;
    }
    let (mut dot, mut hyphen) = (true, true);
    for b in name.bytes() {
        match b {
            b'.' if dot || hyphen => return false,
            b'.' => (dot, hyphen) = (true, false),
            b'-' if dot => return false,
            b'-' => (dot, hyphen) = (false, true),
            _ if b.is_ascii_alphanumeric() => (dot, hyphen) = (false, false),
            _ => return false,
        }
    }
    !dot && !hyphen
}

/// A machine (and local image) name: a valid host name of at most 64 bytes.
pub fn machine_name_is_valid(name: &str) -> bool {
    hostname_is_valid(name) && name.len() <= HOST_NAME_MAX
}

/// A Docker registry v1 repository name `NAMESPACE/REPO`: exactly one slash, both halves
/// valid file names. A bare `debian` is rejected (the C tool needs the namespace, e.g.
/// `library/debian`).
pub fn dkr_name_is_valid(name: &str) -> bool {
    match name.split_once('/') {
        Some((namespace, repo)) => filename_is_valid(namespace) && filename_is_valid(repo),
        None => false,
    }
}

/// A Docker tag: any valid file name.
pub fn dkr_tag_is_valid(tag: &str) -> bool {
    filename_is_valid(tag)
}

/// A Docker layer/image id: a valid file name made of lowercase hex digits only (any
/// length).
pub fn dkr_id_is_valid(id: &str) -> bool {
    filename_is_valid(id) && id.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// An HTTP entity tag: ends with `"` and starts with `"` or `W/"`. As in C, the lone
/// string `"` passes (its only quote both opens and closes it).
pub fn http_etag_is_valid(etag: &str) -> bool {
    !etag.is_empty()
        && !etag.contains('\0')
        && etag.ends_with('"')
        && (etag.starts_with('"') || etag.starts_with("W/\""))
}

/// A name `image_find` can find: a valid file name without control characters (bytes
/// below 0x20 and DEL) that does not start with `.#` (the prefix of temporary files).
/// Valid UTF-8 is guaranteed by `&str`.
pub fn image_name_is_valid(name: &str) -> bool {
    filename_is_valid(name)
        && !name.bytes().any(|b| b < 0x20 || b == 0x7f)
        && !name.starts_with(".#")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ldh_host_names() {
        for ok in ["a", "foo.bar", "a-b", "x1.y-2.z", &"a".repeat(64)] {
            assert!(ldh_hostname_is_valid(ok), "{ok}");
        }
        for bad in [
            "",
            "a_b",
            ".a",
            "a.",
            "a..b",
            "-a",
            "a-",
            "a.-b",
            "a-.b",
            &"a".repeat(65),
        ] {
            assert!(!ldh_hostname_is_valid(bad), "{bad}");
        }
    }

    fn check(f: fn(&str) -> bool, cases: &[(&str, bool)]) {
        for (input, expected) in cases {
            assert_eq!(f(input), *expected, "input {input:?}");
        }
    }

    #[test]
    fn http_urls() {
        check(
            http_url_is_valid,
            &[
                ("http://a/b/c.tar.gz", true),
                ("https://hub.nspawn.org/storage/image.tar.xz", true),
                // Only the scheme is checked: spaces, no host, odd characters pass.
                ("http://has space", true),
                ("http:///nohost", true),
                ("http://\x01ctl", true),
                ("https://x", true),
                ("http://", false),
                ("https://", false),
                ("", false),
                ("ftp://host/file", false),
                ("HTTP://host/file", false),
                ("file:///tmp/x", false),
                ("http:/host", false),
                ("http://höst/", false),
                ("http://host/\0", false),
            ],
        );
    }

    #[test]
    fn file_urls() {
        check(
            file_url_is_valid,
            &[
                ("file:///var/tmp/x.tar", true),
                ("file:/x", true),
                ("file:/", false),
                ("file://", true),
                ("file:x", false),
                ("FILE:///x", false),
                ("file:///ä", false),
                ("http://x", false),
            ],
        );
    }

    #[test]
    fn filenames() {
        let longest = "a".repeat(FILENAME_MAX);
        let too_long = "a".repeat(FILENAME_MAX + 1);
        check(
            filename_is_valid,
            &[
                ("foo", true),
                (".foo", true),
                ("...", true),
                ("a b", true),
                (&longest, true),
                (&too_long, false),
                ("", false),
                (".", false),
                ("..", false),
                ("a/b", false),
                ("/", false),
                ("a\0b", false),
            ],
        );
    }

    #[test]
    fn hostnames() {
        let longest = "a".repeat(HOST_NAME_MAX);
        let too_long = "a".repeat(HOST_NAME_MAX + 1);
        check(
            hostname_is_valid,
            &[
                ("foo", true),
                ("foo.bar", true),
                ("foo_bar", true),
                ("foo-bar", true),
                ("F00-b4r.example", true),
                ("-leading-dash", true),
                (&longest, true),
                (&too_long, false),
                ("", false),
                (".foo", false),
                ("foo.", false),
                ("foo..bar", false),
                (".", false),
                ("a:b", false),
                ("host:8080", false),
                ("a b", false),
                ("a/b", false),
                ("ä", false),
            ],
        );
    }

    #[test]
    fn machine_names_spec_vectors() {
        let sixty_four = "m".repeat(64);
        let sixty_five = "m".repeat(65);
        check(
            machine_name_is_valid,
            &[
                ("foo_bar", true),
                ("foo..bar", false),
                (".foo", false),
                ("foo.", false),
                (&sixty_four, true),
                (&sixty_five, false),
                ("a:b", false),
                ("fedora-21", true),
                ("", false),
            ],
        );
    }

    #[test]
    fn dkr_names_spec_vectors() {
        check(
            dkr_name_is_valid,
            &[
                ("mattdm/fedora", true),
                ("library/debian", true),
                ("_/debian", true),
                ("fedora", false),
                ("a/b/c", false),
                ("./x", false),
                ("../x", false),
                ("x/..", false),
                ("a/", false),
                ("/a", false),
                ("/", false),
                ("", false),
            ],
        );
    }

    #[test]
    fn dkr_tags_and_ids() {
        check(
            dkr_tag_is_valid,
            &[
                ("latest", true),
                ("21", true),
                ("v1.0-rc", true),
                ("", false),
                (".", false),
                ("a/b", false),
            ],
        );
        check(
            dkr_id_is_valid,
            &[
                ("0123456789abcdef", true),
                ("a", true),
                (&"f".repeat(64), true),
                ("", false),
                ("ABCDEF", false),
                ("abcdeg", false),
                ("ab cd", false),
                ("ab/cd", false),
            ],
        );
    }

    #[test]
    fn etags() {
        check(
            http_etag_is_valid,
            &[
                ("\"abc\"", true),
                ("W/\"abc\"", true),
                ("\"\"", true),
                ("\"2d9c858-5d07d4127fef9\"", true),
                // The C rule: a single quote both starts and ends the tag.
                ("\"", true),
                ("", false),
                ("abc", false),
                ("\"abc", false),
                ("abc\"", false),
                ("W/abc\"", false),
                ("w/\"abc\"", false),
                ("\"a\0\"", false),
            ],
        );
    }

    #[test]
    fn image_names() {
        check(
            image_name_is_valid,
            &[
                ("fedora", true),
                ("foo.raw", true),
                (".tar-https:\\x2f\\x2fx", true),
                (".host", true),
                ("bäume", true),
                (".#fedora0123", false),
                (".#", false),
                ("a\tb", false),
                ("a\x7fb", false),
                ("", false),
                (".", false),
                ("..", false),
                ("a/b", false),
            ],
        );
    }
}
