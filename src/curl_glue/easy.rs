//! What every easy handle starts with (`curl_glue_make()`): [`CurlSettings`], the values
//! the glue is given (User-Agent, low-speed window, CA bundle and directory), and the
//! defaults applied to each handle: URL, User-Agent, redirects followed, NOSIGNAL, the
//! low-speed limit, HTTP(S) only (also for redirects; from an `https` URL only to `https`
//! unless [`allow_insecure_redirects`]), at most [`MAX_REDIRECTS`] hops, and the CA bundle.
//!
//! [`CurlSettings::from_env`] is the one place the CA environment variables are read
//! (`CURL_CA_BUNDLE`, `SSL_CERT_FILE`, `SSL_CERT_DIR`, as curl(1) reads them); the command
//! line calls it once at start-up and passes the value down to the importers.
//!
//! A request may add a [`Transport`] on top (a registry endpoint's configuration): extra
//! CA certificates, a client certificate, no verification, a connect timeout. libcurl
//! takes one CA file (`CURLOPT_CAINFO`), and an in-memory bundle (`CURLOPT_CAINFO_BLOB`)
//! replaces that file rather than adding to it; so extra CAs are given as a blob holding
//! the CA file the glue would have used (the settings' file, else libcurl's built-in one,
//! else the first of the usual distribution bundles that exists) followed by the extra
//! certificates. The CA directory (`CURLOPT_CAPATH`) stays in use either way. Nothing here
//! sets `CURLOPT_PROXY` or `CURLOPT_NOPROXY`: libcurl's proxy environment variables
//! (`https_proxy`, `HTTPS_PROXY`, `http_proxy`, `ALL_PROXY`, `NO_PROXY`, …) apply as in
//! curl(1).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use curl::easy::{Easy2, Handler};

use crate::util::error::{Error, Result};

/// The version the User-Agent names by default (the seed's, v219's PACKAGE_VERSION).
pub const PACKAGE_VERSION: &str = "219";

/// The program name of the User-Agent when argv[0] gives none.
const DEFAULT_PROGRAM_NAME: &str = "systemd-import";

/// Low-speed limit: a transfer slower than `LOW_SPEED_LIMIT` bytes/s for the low-speed time
/// (`DEFAULT_LOW_SPEED_TIME` unless set) fails (decision Q15), so a stalled server cannot
/// hang us.
const LOW_SPEED_LIMIT: u32 = 30;
const DEFAULT_LOW_SPEED_TIME: Duration = Duration::from_secs(60);

/// Most redirects a request follows (libcurl 7.x follows without end by default).
pub const MAX_REDIRECTS: u32 = 20;

/// What the glue gives every easy handle it makes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CurlSettings {
    /// `<program>/<version>`, see [`user_agent`].
    pub user_agent: String,
    /// How long a transfer may stay under the low-speed limit before it fails.
    pub low_speed_time: Duration,
    /// CA bundle (file) and directory; `None`: libcurl's built-in defaults.
    pub ca_file: Option<PathBuf>,
    pub ca_dir: Option<PathBuf>,
}

impl Default for CurlSettings {
    /// `systemd-import/219`, 60 s, libcurl's CA defaults.
    fn default() -> Self {
        CurlSettings {
            user_agent: user_agent(DEFAULT_PROGRAM_NAME, PACKAGE_VERSION),
            low_speed_time: DEFAULT_LOW_SPEED_TIME,
            ca_file: None,
            ca_dir: None,
        }
    }
}

impl CurlSettings {
    /// The settings of a run of the program invoked as `argv0`: its User-Agent, the CA
    /// bundle and directory from the environment as curl(1) reads them (`CURL_CA_BUNDLE`,
    /// else `SSL_CERT_FILE`; `SSL_CERT_DIR`; empty means unset), and `low_speed_time` if
    /// given (a test setting), else 60 s. The only place the CA variables are read.
    pub fn from_env(argv0: &str, version: &str, low_speed_time: Option<Duration>) -> Self {
        let env_path = |name: &str| {
            std::env::var_os(name)
                .filter(|v| !v.is_empty())
                .map(PathBuf::from)
        };
        CurlSettings {
            user_agent: user_agent(argv0, version),
            low_speed_time: low_speed_time.unwrap_or(DEFAULT_LOW_SPEED_TIME),
            ca_file: env_path("CURL_CA_BUNDLE").or_else(|| env_path("SSL_CERT_FILE")),
            ca_dir: env_path("SSL_CERT_DIR"),
        }
    }
}

/// `<program>/<version>`, e.g. `systemd-import/219` or `systemd-pull/252`, where the
/// program is what `program_invocation_short_name` is for the C tool: the basename of
/// `argv0`.
pub fn user_agent(argv0: &str, version: &str) -> String {
    let name = argv0.rsplit('/').next().unwrap_or(argv0);
    let name = if name.is_empty() {
        DEFAULT_PROGRAM_NAME
    } else {
        name
    };
    format!("{name}/{version}")
}

/// The CA bundles distributions install, tried when neither the settings nor libcurl name
/// one.
const DISTRIBUTION_BUNDLES: &[&str] = &[
    "/etc/ssl/certs/ca-certificates.crt",
    "/etc/pki/tls/certs/ca-bundle.crt",
    "/etc/ssl/cert.pem",
];

/// What one request adds to the glue's settings (a registry endpoint's TLS, timeout). The
/// default adds nothing.
#[derive(Clone, Debug, Default)]
pub struct Transport {
    /// The whole trust (PEM): the usual CA file and the extra certificates, see
    /// [`Transport::trust_with`]. `None`: the usual CA file alone.
    pub ca_bundle: Option<Arc<[u8]>>,
    /// A client certificate (PEM) and its key (`None`: in the certificate file).
    pub client_cert: Option<(PathBuf, Option<PathBuf>)>,
    /// Do not verify the server's certificate or name.
    pub skip_verify: bool,
    pub connect_timeout: Option<Duration>,
}

impl Transport {
    /// The CA bundle that trusts what `settings` trust plus the certificates in `extra`
    /// (PEM files). Fails naming the file that could not be read.
    pub fn trust_with(settings: &CurlSettings, extra: &[PathBuf]) -> Result<Arc<[u8]>> {
        let read = |p: &Path| {
            std::fs::read(p).map_err(|e| {
                let e = Error::from(e);
                Error::with_message(
                    e.errno(),
                    format!("Failed to read CA file {}: {}", p.display(), e),
                )
            })
        };
        let base = settings
            .ca_file
            .clone()
            .or_else(|| curl::Version::get().cainfo().map(PathBuf::from))
            .or_else(|| {
                DISTRIBUTION_BUNDLES
                    .iter()
                    .map(PathBuf::from)
                    .find(|p| p.is_file())
            });
        let mut bundle = match &base {
            Some(p) => read(p)?,
            None => Vec::new(),
        };
        for file in extra {
            if !bundle.is_empty() && !bundle.ends_with(b"\n") {
                bundle.push(b'\n');
            }
            bundle.extend(read(file)?);
        }
        Ok(bundle.into())
    }

    fn apply<H>(&self, easy: &mut Easy2<H>) -> Result<()> {
        if let Some(bundle) = &self.ca_bundle {
            easy.ssl_cainfo_blob(bundle).map_err(eio)?;
        }
        if let Some((cert, key)) = &self.client_cert {
            easy.ssl_cert(cert).map_err(eio)?;
            if let Some(key) = key {
                easy.ssl_key(key).map_err(eio)?;
            }
        }
        if self.skip_verify {
            easy.ssl_verify_peer(false).map_err(eio)?;
            easy.ssl_verify_host(false).map_err(eio)?;
        }
        if let Some(t) = self.connect_timeout {
            easy.connect_timeout(t).map_err(eio)?;
        }
        Ok(())
    }
}

fn eio(e: curl::Error) -> Error {
    Error::with_message(libc::EIO, e.to_string())
}

/// An easy handle for `url` with the defaults of the module documentation and what
/// `transport` adds.
pub(super) fn make<H: Handler>(
    settings: &CurlSettings,
    transport: &Transport,
    url: &str,
    handler: H,
) -> Result<Easy2<H>> {
    let mut easy = Easy2::new(handler);
    easy.url(url).map_err(eio)?;
    easy.useragent(&settings.user_agent).map_err(eio)?;
    easy.follow_location(true).map_err(eio)?;
    easy.max_redirections(MAX_REDIRECTS).map_err(eio)?;
    easy.signal(false).map_err(eio)?;
    easy.low_speed_limit(LOW_SPEED_LIMIT).map_err(eio)?;
    easy.low_speed_time(settings.low_speed_time).map_err(eio)?;
    if let Some(f) = &settings.ca_file {
        easy.cainfo(f).map_err(eio)?;
    }
    if let Some(d) = &settings.ca_dir {
        easy.capath(d).map_err(eio)?;
    }
    transport.apply(&mut easy)?;
    let https = url
        .get(..8)
        .is_some_and(|s| s.eq_ignore_ascii_case("https://"));
    let web = curl_sys::CURLPROTO_HTTP | curl_sys::CURLPROTO_HTTPS;
    // A `file:` URL given as such (systemd-pull takes them) reads that file; nothing
    // else may lead to one, redirects included.
    let file = url
        .get(..5)
        .is_some_and(|s| s.eq_ignore_ascii_case("file:"));
    let asked = if file { curl_sys::CURLPROTO_FILE } else { web };
    set_protocols(&mut easy, curl_sys::CURLOPT_PROTOCOLS, asked)?;
    // No downgrade: what was asked for over TLS is not fetched in clear text.
    let redirects = if https {
        curl_sys::CURLPROTO_HTTPS
    } else {
        web
    };
    set_protocols(&mut easy, curl_sys::CURLOPT_REDIR_PROTOCOLS, redirects)?;
    Ok(easy)
}

/// Let a request for an `https` URL follow a redirect to plain `http` (an endpoint the
/// configuration explicitly marks insecure); by default that redirect is refused.
pub fn allow_insecure_redirects<H>(easy: &mut Easy2<H>) -> Result<()> {
    let web = curl_sys::CURLPROTO_HTTP | curl_sys::CURLPROTO_HTTPS;
    set_protocols(easy, curl_sys::CURLOPT_REDIR_PROTOCOLS, web)
}

/// Allow only `protos` for requests (`CURLOPT_PROTOCOLS`) or redirects
/// (`CURLOPT_REDIR_PROTOCOLS`): never anything libcurl happens to support beyond what
/// was asked for. (curl-rust has no setter for these options.)
fn set_protocols<H>(easy: &mut Easy2<H>, opt: curl_sys::CURLoption, protos: i32) -> Result<()> {
    // SAFETY: both options take a long bitmask; the handle is valid for `easy`'s life.
    let rc = unsafe { curl_sys::curl_easy_setopt(easy.raw(), opt, protos as libc::c_long) };
    if rc != curl_sys::CURLE_OK {
        return Err(eio(curl::Error::new(rc)));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_user_agent_names_the_program_by_its_basename() {
        assert_eq!(
            user_agent("/usr/lib/systemd/systemd-import", "219"),
            "systemd-import/219"
        );
        assert_eq!(user_agent("pull", "219"), "pull/219");
        assert_eq!(user_agent("/weird/", "219"), "systemd-import/219");
        assert_eq!(user_agent("", "219"), "systemd-import/219");
        assert_eq!(CurlSettings::default().user_agent, "systemd-import/219");
    }
}
