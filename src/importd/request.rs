//! What a `Pull*` call asks for, checked before anything runs, with systemd-importd's
//! error names and texts (modern-systemd.md §3.1, the seed's `PullDkr` from spec §6.2).
//!
//! Texts are those of systemd 256 for the members 252 and 256 share (`URL %s is invalid`,
//! `Local image name %s is invalid` with image-name rules, …), v260's for `PullOci`
//! (`Reference '%s' is invalid`), and v219's for the seed-only `PullDkr`.

use crate::bus::BusError;
use crate::util::{oci_ref, validate};

pub use crate::bus::import1::{ImageClass, Verify, FLAG_FORCE, FLAG_KEEP_DOWNLOAD, FLAG_READ_ONLY};

/// Where the seed's `PullDkr` looks when the caller passes no index URL: nowhere (the C
/// tool's `DEFAULT_DKR_INDEX_URL` is unset unless configured at build time).
const DEFAULT_DKR_INDEX_URL: Option<&str> = None;

/// The longest name systemd's `filename_is_valid()` accepts (NAME_MAX).
const NAME_MAX: usize = 255;

/// The longest URL or reference passed on to a worker. `execve()` refuses a single
/// argument of 128 KiB (MAX_ARG_STRLEN) or more; refusing earlier gives the caller a
/// clear error instead of a transfer that fails to start.
const REMOTE_MAX: usize = 64 * 1024;

/// The kind of a transfer, as the `Type` property and `ListTransfers` name it. (The
/// `Pull` prefix stays: `import-*` and `export-*` transfers join these later.)
#[allow(clippy::enum_variant_names)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TransferType {
    PullTar,
    PullRaw,
    PullOci,
    PullDkr,
}

impl TransferType {
    pub fn as_str(self) -> &'static str {
        match self {
            TransferType::PullTar => "pull-tar",
            TransferType::PullRaw => "pull-raw",
            TransferType::PullOci => "pull-oci",
            TransferType::PullDkr => "pull-dkr",
        }
    }
}

/// The class named `s`, or InvalidArgs `Image class '%s' not known`.
fn parse_class(s: &str) -> Result<ImageClass, BusError> {
    ImageClass::from_name(s)
        .ok_or_else(|| BusError::invalid_args(format!("Image class '{s}' not known")))
}

/// A verification mode: `""` means `signature`; an unknown mode is InvalidArgs.
fn parse_verify(s: &str) -> Result<Verify, BusError> {
    match s {
        "" => Ok(Verify::Signature),
        _ => Verify::from_name(s)
            .ok_or_else(|| BusError::invalid_args(format!("Unknown verification mode {s}"))),
    }
}

/// A checked pull request: everything the worker's command line is built from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PullRequest {
    pub kind: TransferType,
    /// The URL, the OCI reference, or for dkr `NAME:TAG`.
    pub remote: String,
    pub local: Option<String>,
    pub class: ImageClass,
    /// `None` for pull-oci, which has no verification mode.
    pub verify: Option<Verify>,
    /// `FLAG_*` bits.
    pub flags: u64,
    /// Asked through the legacy members (`PullTar`, `PullRaw`, `PullDkr`), which have no
    /// keep-download flag: the worker keeps its default, as a systemd 252 daemon does.
    pub legacy: bool,
    /// pull-dkr's index URL.
    pub dkr_index_url: Option<String>,
}

impl PullRequest {
    pub fn has(&self, flag: u64) -> bool {
        self.flags & flag != 0
    }
}

/// The arguments of `PullTar`/`PullRaw` (`sssb`) or `PullTarEx`/`PullRawEx` (`sssst`).
pub struct UrlArgs<'a> {
    pub url: &'a str,
    pub local: &'a str,
    /// `None` for the legacy members.
    pub class: Option<&'a str>,
    pub verify: &'a str,
    pub flags: u64,
}

/// Check a tar or raw pull.
pub fn url_pull(kind: TransferType, a: UrlArgs<'_>) -> Result<PullRequest, BusError> {
    let class = match a.class {
        Some(c) => {
            let class = parse_class(c)?;
            check_flags(a.flags, FLAG_FORCE | FLAG_READ_ONLY | FLAG_KEEP_DOWNLOAD)?;
            class
        }
        None => ImageClass::Machine,
    };
    if a.url.len() > REMOTE_MAX
        || !(validate::http_url_is_valid(a.url) || validate::file_url_is_valid(a.url))
    {
        return Err(BusError::invalid_args(format!("URL {} is invalid", a.url)));
    }
    let local = local_name(a.local)?;
    let verify = parse_verify(a.verify)?;
    Ok(PullRequest {
        kind,
        remote: a.url.to_string(),
        local,
        class,
        verify: Some(verify),
        flags: a.flags,
        legacy: a.class.is_none(),
        dkr_index_url: None,
    })
}

/// Check `PullOci(ref, local_name, class, flags)`.
pub fn oci_pull(
    reference: &str,
    local: &str,
    class: &str,
    flags: u64,
) -> Result<PullRequest, BusError> {
    let class = parse_class(class)?;
    check_flags(flags, FLAG_FORCE | FLAG_READ_ONLY)?;
    if reference.len() > REMOTE_MAX || !oci_ref::reference_is_valid(reference) {
        return Err(BusError::invalid_args(format!(
            "Reference '{reference}' is invalid"
        )));
    }
    Ok(PullRequest {
        kind: TransferType::PullOci,
        remote: reference.to_string(),
        local: local_name(local)?,
        class,
        verify: None,
        flags,
        legacy: false,
        dkr_index_url: None,
    })
}

/// The arguments of the seed's `PullDkr` (`sssssb`).
pub struct DkrArgs<'a> {
    pub index_url: &'a str,
    pub remote: &'a str,
    pub tag: &'a str,
    pub local: &'a str,
    pub verify: &'a str,
    pub force: bool,
}

/// Check a dkr pull (spec §6.2).
pub fn dkr_pull(a: DkrArgs<'_>) -> Result<PullRequest, BusError> {
    let index_url = match (a.index_url, DEFAULT_DKR_INDEX_URL) {
        ("", Some(default)) => default,
        ("", None) => return Err(BusError::invalid_args("Index URL must be specified.")),
        (url, _) => url,
    };
    if index_url.len() > REMOTE_MAX || !validate::http_url_is_valid(index_url) {
        return Err(BusError::invalid_args(format!(
            "Index URL {index_url} is invalid"
        )));
    }
    if !validate::dkr_name_is_valid(a.remote) {
        return Err(BusError::invalid_args(format!(
            "Remote name {} is not valid",
            a.remote
        )));
    }
    let tag = if a.tag.is_empty() { "latest" } else { a.tag };
    if !validate::dkr_tag_is_valid(tag) {
        return Err(BusError::invalid_args(format!("Tag {tag} is not valid")));
    }
    let local = match a.local {
        "" => None,
        l if validate::machine_name_is_valid(l) => Some(l.to_string()),
        l => return Err(BusError::invalid_args(format!("Local name {l} is invalid"))),
    };
    if parse_verify(a.verify)? != Verify::No {
        return Err(BusError::new(
            crate::bus::names::NOT_SUPPORTED,
            "DKR does not support verification.",
        ));
    }
    Ok(PullRequest {
        kind: TransferType::PullDkr,
        remote: format!("{}:{tag}", a.remote),
        local,
        class: ImageClass::Machine,
        verify: Some(Verify::No),
        flags: if a.force { FLAG_FORCE } else { 0 },
        legacy: true,
        dkr_index_url: Some(index_url.to_string()),
    })
}

/// The `(class, flags)` filter of `ListTransfersEx` and `ListImages`: `""` is every class,
/// and no flag is defined.
pub fn list_filter(class: &str, flags: u64) -> Result<Option<ImageClass>, BusError> {
    let class = match class {
        "" => None,
        c => Some(parse_class(c)?),
    };
    check_flags(flags, 0)?;
    Ok(class)
}

fn check_flags(flags: u64, allowed: u64) -> Result<(), BusError> {
    if flags & !allowed != 0 {
        return Err(BusError::invalid_args(format!("Flags 0x{flags:x} invalid")));
    }
    Ok(())
}

/// `""` means "no local name"; otherwise systemd's image-name rules.
fn local_name(local: &str) -> Result<Option<String>, BusError> {
    if local.is_empty() {
        return Ok(None);
    }
    if local.len() > NAME_MAX || !validate::image_name_is_valid(local) {
        return Err(BusError::invalid_args(format!(
            "Local image name {local} is invalid"
        )));
    }
    Ok(Some(local.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tar(url: &str, local: &str, class: Option<&str>, verify: &str, flags: u64) -> PullRequest {
        try_tar(url, local, class, verify, flags).unwrap()
    }

    fn try_tar(
        url: &str,
        local: &str,
        class: Option<&str>,
        verify: &str,
        flags: u64,
    ) -> Result<PullRequest, BusError> {
        url_pull(
            TransferType::PullTar,
            UrlArgs {
                url,
                local,
                class,
                verify,
                flags,
            },
        )
    }

    fn error(r: Result<PullRequest, BusError>) -> String {
        let e = r.unwrap_err();
        format!("{}: {}", e.name(), e.message())
    }

    const INVALID: &str = "org.freedesktop.DBus.Error.InvalidArgs";

    #[test]
    fn url_pulls_take_defaults_and_refuse_bad_arguments() {
        let r = tar("https://h/i.tar.xz", "", None, "", 0);
        assert_eq!(r.local, None);
        assert_eq!(r.verify, Some(Verify::Signature));
        assert!(r.legacy && r.class == ImageClass::Machine);
        let r = tar("file:///srv/i.tar", "img", Some("sysext"), "no", 7);
        assert_eq!((r.class, r.flags, r.legacy), (ImageClass::Sysext, 7, false));
        for (args, want) in [
            (
                ("ftp://h/i", "", None, "", 0),
                format!("{INVALID}: URL ftp://h/i is invalid"),
            ),
            (("", "", None, "", 0), format!("{INVALID}: URL  is invalid")),
            (
                ("http://h/i", ".#tmp", None, "", 0),
                format!("{INVALID}: Local image name .#tmp is invalid"),
            ),
            (
                ("http://h/i", "a/b", None, "", 0),
                format!("{INVALID}: Local image name a/b is invalid"),
            ),
            (
                ("http://h/i", "", None, "sum", 0),
                format!("{INVALID}: Unknown verification mode sum"),
            ),
            (
                ("http://h/i", "", Some("vm"), "", 0),
                format!("{INVALID}: Image class 'vm' not known"),
            ),
            (
                ("http://h/i", "", Some("machine"), "", 8),
                format!("{INVALID}: Flags 0x8 invalid"),
            ),
        ] {
            let (url, local, class, verify, flags) = args;
            assert_eq!(error(try_tar(url, local, class, verify, flags)), want);
        }
        let long = "x".repeat(NAME_MAX + 1);
        assert!(try_tar("http://h/i", &long, None, "", 0).is_err());
        let url = format!("http://h/{}", "a".repeat(REMOTE_MAX));
        assert!(try_tar(&url, "", None, "", 0).is_err());
    }

    #[test]
    fn oci_and_dkr_pulls() {
        let r = oci_pull("quay.io/a/b:1", "", "machine", 3).unwrap();
        assert_eq!(
            (r.kind, r.verify, r.flags),
            (TransferType::PullOci, None, 3)
        );
        assert_eq!(
            error(oci_pull("Bad Ref", "", "machine", 0)),
            format!("{INVALID}: Reference 'Bad Ref' is invalid")
        );
        assert_eq!(
            error(oci_pull("a/b", "", "machine", 4)),
            format!("{INVALID}: Flags 0x4 invalid")
        );
        let dkr = |index_url, remote, tag, local, verify| {
            dkr_pull(DkrArgs {
                index_url,
                remote,
                tag,
                local,
                verify,
                force: true,
            })
        };
        let r = dkr("https://index", "library/debian", "", "", "no").unwrap();
        assert_eq!(r.remote, "library/debian:latest");
        assert_eq!(r.dkr_index_url.as_deref(), Some("https://index"));
        assert_eq!(r.flags, FLAG_FORCE);
        for (r, want) in [
            (
                dkr("", "a/b", "", "", "no"),
                format!("{INVALID}: Index URL must be specified."),
            ),
            (
                dkr("ftp://x", "a/b", "", "", "no"),
                format!("{INVALID}: Index URL ftp://x is invalid"),
            ),
            (
                dkr("http://x", "debian", "", "", "no"),
                format!("{INVALID}: Remote name debian is not valid"),
            ),
            (
                dkr("http://x", "a/b", "a/b", "", "no"),
                format!("{INVALID}: Tag a/b is not valid"),
            ),
            (
                dkr("http://x", "a/b", "", "no:colon", "no"),
                format!("{INVALID}: Local name no:colon is invalid"),
            ),
            (
                dkr("http://x", "a/b", "", "", ""),
                "org.freedesktop.DBus.Error.NotSupported: DKR does not support verification."
                    .to_string(),
            ),
        ] {
            assert_eq!(error(r), want);
        }
    }

    #[test]
    fn list_filters() {
        assert_eq!(list_filter("", 0).unwrap(), None);
        assert_eq!(
            list_filter("portable", 0).unwrap(),
            Some(ImageClass::Portable)
        );
        assert_eq!(
            error(list_filter("", 1).map(|_| unreachable!())),
            format!("{INVALID}: Flags 0x1 invalid")
        );
    }
}
