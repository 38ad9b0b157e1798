//! The syntax of image references as docker and podman read them:
//! `[host[:port]/]path[:tag][@digest]` — only the grammar, shared by pull-oci (which
//! normalizes and resolves references in `import::oci::reference`) and systemd-importd
//! (which refuses a bad `PullOci` reference before it starts a worker).
//!
//! The grammar is distribution's (`reference/regexp.go`):
//! * the first `/`-separated component is a registry host if it contains `.` or `:`, is
//!   `localhost`, or has an uppercase letter; otherwise the name is on Docker Hub;
//! * a host is DNS labels (`[A-Za-z0-9]`, inner `-`) joined by `.`, or a bracketed IPv6
//!   address, with an optional decimal port;
//! * path components are `[a-z0-9]+` joined by one `.`, one `_`, `__`, or any run of `-`;
//! * a tag is `[A-Za-z0-9_][A-Za-z0-9._-]{0,127}`;
//! * host, `/` and path together are at most 255 characters.

/// The longest name (host, `/` and path) distribution accepts.
const NAME_MAX: usize = 255;
/// The longest tag.
const TAG_MAX: usize = 128;

/// A reference without its digest, split into its parts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NameParts<'a> {
    /// `host[:port]` as written, or `None` when the name has no registry host.
    pub domain: Option<&'a str>,
    /// The repository path as written.
    pub path: &'a str,
    pub tag: Option<&'a str>,
}

/// Split and check `name[:tag]` (a reference with any `@digest` already removed).
pub fn split_name(name_and_tag: &str) -> Option<NameParts<'_>> {
    // The tag follows the last ':' unless a '/' comes after it (then it was a port).
    let (name, tag) = match name_and_tag.rsplit_once(':') {
        Some((n, t)) if !t.contains('/') => (n, Some(t)),
        _ => (name_and_tag, None),
    };
    if tag.is_some_and(|t| !tag_is_valid(t)) || name.is_empty() || name.len() > NAME_MAX {
        return None;
    }
    let (domain, path) = match name.split_once('/') {
        Some((first, rest)) if looks_like_domain(first) => (Some(first), rest),
        _ => (None, name),
    };
    if domain.is_some_and(|d| !domain_is_valid(d)) || !path_is_valid(path) {
        return None;
    }
    Some(NameParts { domain, path, tag })
}

/// Whether `s` is a reference pull-oci can use: the grammar above, and a digest, if any,
/// of the one algorithm supported (`sha256:` and 64 lowercase hex digits).
pub fn reference_is_valid(s: &str) -> bool {
    let name_and_tag = match s.split_once('@') {
        Some((n, digest)) => {
            let hex_ok = |h: &str| {
                h.len() == 64 && h.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
            };
            if !digest.strip_prefix("sha256:").is_some_and(hex_ok) {
                return false;
            }
            n
        }
        None => s,
    };
    split_name(name_and_tag).is_some()
}

/// distribution's rule for "is the first component a registry host".
fn looks_like_domain(first: &str) -> bool {
    first.contains(['.', ':'])
        || first == "localhost"
        || first.bytes().any(|b| b.is_ascii_uppercase())
}

/// `[A-Za-z0-9_][A-Za-z0-9._-]{0,127}`.
pub fn tag_is_valid(tag: &str) -> bool {
    let mut bytes = tag.bytes();
    match bytes.next() {
        Some(b) if b.is_ascii_alphanumeric() || b == b'_' => {}
        _ => return false,
    }
    tag.len() <= TAG_MAX
        && bytes.all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
}

/// `host[:port]`: DNS labels or `[IPv6]`, then an optional port 1–65535.
pub fn domain_is_valid(domain: &str) -> bool {
    let (host, port) = if let Some(rest) = domain.strip_prefix('[') {
        let Some((v6, after)) = rest.split_once(']') else {
            return false;
        };
        if v6.parse::<std::net::Ipv6Addr>().is_err() {
            return false;
        }
        match after {
            "" => return true,
            _ => match after.strip_prefix(':') {
                Some(p) => ("", Some(p)),
                None => return false,
            },
        }
    } else {
        match domain.split_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (domain, None),
        }
    };
    if let Some(port) = port {
        let digits_ok =
            !port.is_empty() && port.len() <= 5 && port.bytes().all(|b| b.is_ascii_digit());
        if !digits_ok || !(1..=65535).contains(&port.parse::<u32>().unwrap_or(0)) {
            return false;
        }
    }
    if domain.starts_with('[') {
        return true;
    }
    !host.is_empty()
        && host.split('.').all(|label| {
            let b = label.as_bytes();
            !b.is_empty()
                && b[0].is_ascii_alphanumeric()
                && b[b.len() - 1].is_ascii_alphanumeric()
                && b.iter().all(|c| c.is_ascii_alphanumeric() || *c == b'-')
        })
}

/// `component ('/' component)*`, each `[a-z0-9]+ (sep [a-z0-9]+)*` with sep one of `.`,
/// `_`, `__` or a run of `-`.
pub fn path_is_valid(path: &str) -> bool {
    !path.is_empty() && path.split('/').all(component_is_valid)
}

fn component_is_valid(c: &str) -> bool {
    let b = c.as_bytes();
    if b.is_empty() || !is_alnum(b[0]) || !is_alnum(b[b.len() - 1]) {
        return false;
    }
    let mut i = 0;
    while i < b.len() {
        if is_alnum(b[i]) {
            i += 1;
            continue;
        }
        // A separator run between two alphanumerics.
        let start = i;
        while i < b.len() && !is_alnum(b[i]) {
            i += 1;
        }
        let sep = &c[start..i];
        let ok = matches!(sep, "." | "_" | "__") || sep.bytes().all(|s| s == b'-');
        if !ok {
            return false;
        }
    }
    true
}

fn is_alnum(b: u8) -> bool {
    b.is_ascii_lowercase() || b.is_ascii_digit()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_split_into_domain_path_and_tag() {
        let parts = |d, p, t| {
            Some(NameParts {
                domain: d,
                path: p,
                tag: t,
            })
        };
        assert_eq!(split_name("debian"), parts(None, "debian", None));
        assert_eq!(
            split_name("localhost:5000/a/b:x"),
            parts(Some("localhost:5000"), "a/b", Some("x"))
        );
        assert_eq!(
            split_name("[::1]:5000/img"),
            parts(Some("[::1]:5000"), "img", None)
        );
        assert_eq!(split_name("Upper"), None);
        assert_eq!(split_name("a//b"), None);
        assert_eq!(split_name("host:0/img"), None);
        assert_eq!(split_name("img:-tag"), None);
    }

    #[test]
    fn references_need_a_sha256_digest_if_any() {
        let hex = "ab".repeat(32);
        assert!(reference_is_valid("quay.io/org/img:1"));
        assert!(reference_is_valid(&format!("img@sha256:{hex}")));
        assert!(reference_is_valid(&format!("img:1@sha256:{hex}")));
        assert!(!reference_is_valid(&format!("img@sha512:{hex}")));
        assert!(!reference_is_valid("img@sha256:abc"));
        assert!(!reference_is_valid(""));
        assert!(!reference_is_valid("a b"));
        assert!(!reference_is_valid(&"a".repeat(256)));
    }
}
