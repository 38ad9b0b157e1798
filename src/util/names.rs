//! Deriving names from URLs: the local image name a download is saved as, and the
//! `SHA256SUMS` URL next to an image (spec §1.7).

use crate::util::error::{Error, Result};

/// The URL up to its query string, with trailing slashes removed.
fn url_path_part(url: &str) -> &str {
    let without_query = url.split_once('?').map_or(url, |(head, _)| head);
    without_query.trim_end_matches('/')
}

/// The last path component of a URL: the query is cut off, trailing `/`s are dropped,
/// and what follows the last remaining `/` is returned. EINVAL when that is empty.
///
/// `https://h/a/b.tar.xz?x=1` gives `b.tar.xz`; `http://host/` gives `host`.
pub fn url_last_component(url: &str) -> Result<String> {
    let path = url_path_part(url);
    let last = path.rsplit_once('/').map_or(path, |(_, tail)| tail);
    if last.is_empty() {
        return Err(Error::new(libc::EINVAL));
    }
    Ok(last.to_string())
}

/// The URL with its last path component replaced by `name`. The query string is lost
/// (as in C, spec Q14). EINVAL when the URL (without query) has no `/` at all.
pub fn url_change_last_component(url: &str, name: &str) -> Result<String> {
    let path = url_path_part(url);
    match path.rfind('/') {
        Some(slash) => Ok(format!("{}{}", &path[..=slash], name)),
        None => Err(Error::new(libc::EINVAL)),
    }
}

/// Tarball suffixes, tried in this order; only the first match is removed.
const TAR_SUFFIXES: [&str; 5] = [".tar", ".tar.xz", ".tar.gz", ".tar.bz2", ".tgz"];

/// Raw image suffixes, removed repeatedly in passes over this list until none matches.
const RAW_SUFFIXES: [&str; 7] = [".xz", ".gz", ".bz2", ".raw", ".qcow2", ".img", ".bin"];

/// The local name for a tarball: one tarball suffix removed. EINVAL when nothing would
/// remain (the C tool misreported that as "Out of memory."; spec Q11).
pub fn tar_strip_suffixes(name: &str) -> Result<String> {
    let stripped = TAR_SUFFIXES
        .iter()
        .find_map(|suffix| name.strip_suffix(suffix))
        .unwrap_or(name);
    if stripped.is_empty() {
        return Err(Error::new(libc::EINVAL));
    }
    Ok(stripped.to_string())
}

/// The local name for a raw image: compression and image suffixes removed until none is
/// left, so `foo.raw.xz` and `foo.img.gz` both give `foo`. May return an empty string
/// (`.raw` gives ``), which the machine-name check then rejects.
pub fn raw_strip_suffixes(name: &str) -> String {
    let mut current = name;
    loop {
        let before = current.len();
        for suffix in RAW_SUFFIXES {
            if let Some(stripped) = current.strip_suffix(suffix) {
                current = stripped;
            }
        }
        if current.len() == before {
            return current.to_string();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn last_component_spec_vectors() {
        let ok = [
            ("http://a/b/c.tar.gz", "c.tar.gz"),
            ("http://a/b/c/", "c"),
            ("http://a/b?x/y", "b"),
            ("http://", "http:"),
            ("https://h/a/b.tar.xz?x=1", "b.tar.xz"),
            ("http://host/", "host"),
            ("http://host//", "host"),
            ("noslash", "noslash"),
        ];
        for (url, expected) in ok {
            assert_eq!(url_last_component(url).unwrap(), expected, "url {url:?}");
        }
        for url in ["?x", "/", "", "///", "?"] {
            assert_eq!(
                url_last_component(url).unwrap_err().errno(),
                libc::EINVAL,
                "url {url:?}"
            );
        }
    }

    #[test]
    fn change_last_component_drops_the_query() {
        let cases = [
            ("http://a/b/c.tar.gz", "http://a/b/SHA256SUMS"),
            ("http://a/b/c.tar.gz?token=1", "http://a/b/SHA256SUMS"),
            ("http://a/b/c/", "http://a/b/SHA256SUMS"),
            ("http://a/b?x/y", "http://a/SHA256SUMS"),
            ("http://host", "http://SHA256SUMS"),
            ("/x", "/SHA256SUMS"),
        ];
        for (url, expected) in cases {
            assert_eq!(
                url_change_last_component(url, "SHA256SUMS").unwrap(),
                expected,
                "url {url:?}"
            );
        }
        for url in ["noslash", "", "?a/b"] {
            assert_eq!(
                url_change_last_component(url, "SHA256SUMS")
                    .unwrap_err()
                    .errno(),
                libc::EINVAL,
                "url {url:?}"
            );
        }
    }

    #[test]
    fn tar_suffixes_spec_vectors() {
        let cases = [
            (
                "trusty-server-cloudimg-amd64-root.tar.gz",
                "trusty-server-cloudimg-amd64-root",
            ),
            ("a.tgz", "a"),
            ("a.tar.tar", "a.tar"),
            ("a.tar", "a"),
            ("a.tar.xz", "a"),
            ("a.tar.bz2", "a"),
            ("a.tar.gz.tar.gz", "a.tar.gz"),
            ("plain", "plain"),
            ("a.raw.xz", "a.raw.xz"),
        ];
        for (name, expected) in cases {
            assert_eq!(tar_strip_suffixes(name).unwrap(), expected, "name {name:?}");
        }
        for name in ["", ".tar", ".tgz", ".tar.xz"] {
            assert_eq!(
                tar_strip_suffixes(name).unwrap_err().errno(),
                libc::EINVAL,
                "name {name:?}"
            );
        }
    }

    #[test]
    fn raw_suffixes_spec_vectors() {
        let cases = [
            (
                "Fedora-Cloud-Base-20141203-21.x86_64.raw.xz",
                "Fedora-Cloud-Base-20141203-21.x86_64",
            ),
            ("disk.qcow2.gz", "disk"),
            ("x.img.bin", "x"),
            ("foo.raw.xz", "foo"),
            ("foo.img.gz", "foo"),
            ("foo.xz.raw.gz.bz2", "foo"),
            (".raw", ""),
            ("plain", "plain"),
            ("foo.tar.gz", "foo.tar"),
        ];
        for (name, expected) in cases {
            assert_eq!(raw_strip_suffixes(name), expected, "name {name:?}");
        }
    }
}
