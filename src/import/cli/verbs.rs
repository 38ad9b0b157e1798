//! Verb dispatch (systemd's `dispatch_verb()`) and the per-verb validation of spec §1.5.
//! Each check logs the C tool's message and makes the tool exit 1.

use super::options::{Settings, Verify};
use super::personality::{Invocation, Personality};
use super::program_short_name;
use crate::import;
use crate::import::dkr::{DkrImport, DkrRequest};
use crate::import::local::{LocalImport, Work};
use crate::import::oci::archive::{self, ArchiveRequest, ArchiveSource};
use crate::import::oci::credentials::CredentialStore;
use crate::import::oci::platform::Platform;
use crate::import::oci::ranges::RangePlan;
use crate::import::oci::reference::{ImageName, ReferenceError};
use crate::import::oci::registry::RegistryConfig;
use crate::import::oci::{OciImport, PullRequest, DEFAULT_CONCURRENT_DOWNLOADS};
use crate::import::url::{Direct, PullOptions, RawImport, SideFiles, TarImport, UrlRequest};
use crate::import::Dialect;
use crate::util::{getopt, image, names, validate};

/// Find and run the verb in `args[0]` among the personality's verbs; returns the exit
/// status.
pub fn dispatch(inv: &Invocation, args: &[String]) -> i32 {
    let v219 = inv.settings.dialect == Dialect::V219;
    let Some(name) = args.first() else {
        if v219 {
            log::error!("Requires operation parameter.");
        } else {
            log::error!("Command verb required.");
        }
        return 1;
    };
    let verbs = inv.personality.verbs;
    let Some(verb) = verbs.iter().find(|v| v.names.contains(&name.as_str())) else {
        if v219 {
            log::error!("Unknown operation {name}.");
        } else {
            log::error!("Unknown command verb {name}.");
        }
        return 1;
    };
    if !getopt::verb_arg_count_ok(args.len(), verb.min_args, verb.max_args) {
        return 1;
    }
    (verb.run)(inv, args)
}

/// `help`: the personality's help text.
pub fn help(inv: &Invocation, _: &[String]) -> i32 {
    print_help(inv.personality, inv.argv0)
}

/// Print the help text of `personality` for the program run as `argv0`; exit status 0,
/// or that of SIGPIPE if stdout was closed (as for a C program).
pub fn print_help(personality: &Personality, argv0: &str) -> i32 {
    stdout_or_sigpipe(&(personality.help)(&program_short_name(argv0)))
}

/// Write `text` to stdout. When the reader went away (EPIPE), die of SIGPIPE as a C
/// program does: restore its default action and raise it. Returns the exit status
/// otherwise.
pub fn stdout_or_sigpipe(text: &str) -> i32 {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Ok(()) => 0,
        Err(e) if e.raw_os_error() == Some(libc::EPIPE) => {
            crate::util::sys::die_of_sigpipe();
            1
        }
        Err(_) => 1,
    }
}

/// `--dkr-index-url=`, validated.
pub fn set_dkr_index_url(settings: &mut Settings, value: Option<String>) -> Result<(), ()> {
    let v = value.unwrap_or_default();
    if !validate::http_url_is_valid(&v) {
        log::error!("Index URL is not valid: {v}");
        return Err(());
    }
    settings.dkr_index_url = Some(v);
    Ok(())
}

/// `--max-concurrent-downloads=N`, 1…64.
pub fn set_max_downloads(settings: &mut Settings, value: Option<String>) -> Result<(), ()> {
    let v = value.unwrap_or_default();
    match v.parse::<usize>() {
        Ok(n) if (1..=64).contains(&n) => {
            settings.max_concurrent_downloads = Some(n);
            Ok(())
        }
        _ => {
            log::error!("Invalid number of concurrent downloads '{v}', expected 1…64.");
            Err(())
        }
    }
}

/// `--download-ranges=N|no`, 1…16 (1 and `no`: one stream per layer).
pub fn set_download_ranges(settings: &mut Settings, value: Option<String>) -> Result<(), ()> {
    let v = value.unwrap_or_default();
    let n = if v == "no" {
        Some(1)
    } else {
        v.parse::<usize>().ok()
    };
    match n {
        Some(n) if (1..=16).contains(&n) => {
            settings.download_ranges = Some(n);
            Ok(())
        }
        _ => {
            log::error!("Invalid number of download ranges '{v}', expected 1…16 or 'no'.");
            Err(())
        }
    }
}

/// `--download-range-size=BYTES` (K, M, G, T suffixes), at least 64K.
pub fn set_download_range_size(settings: &mut Settings, value: Option<String>) -> Result<(), ()> {
    let v = value.unwrap_or_default();
    match super::options::parse_size(&v) {
        Some(n) if n >= 64 << 10 => {
            settings.download_range_size = Some(n);
            Ok(())
        }
        _ => {
            log::error!(
                "Invalid download range size '{v}', expected at least 64K (bytes with an optional K, M, G or T suffix)."
            );
            Err(())
        }
    }
}

/// `--layer-size-max=BYTES` (K, M, G, T suffixes): what one layer of pull-oci may
/// expand to.
pub fn set_layer_size_max(settings: &mut Settings, value: Option<String>) -> Result<(), ()> {
    let v = value.unwrap_or_default();
    match super::options::parse_size(&v) {
        Some(n) if n > 0 => {
            settings.layer_size_max = Some(n);
            Ok(())
        }
        _ => {
            log::error!(
                "Invalid layer size limit '{v}', expected bytes with an optional K, M, G or T suffix."
            );
            Err(())
        }
    }
}

/// `--registry-config=DIR`: pull-oci reads its registry configuration below DIR only.
pub fn set_registry_config(settings: &mut Settings, value: Option<String>) -> Result<(), ()> {
    let v = value.unwrap_or_default();
    if v.is_empty() {
        log::error!("Registry configuration directory must not be empty.");
        return Err(());
    }
    settings.registry_config = Some(std::path::PathBuf::from(v));
    Ok(())
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Suffixes {
    Tar,
    Raw,
}

/// Spec §1.5 for pull-tar and pull-raw. `Err(())` means "logged, exit 1".
fn validate_url_request(
    settings: &Settings,
    args: &[String],
    suffixes: Suffixes,
) -> Result<UrlRequest, ()> {
    let url = &args[1];
    let v219 = settings.dialect == Dialect::V219;
    // systemd-pull also reads `file:/` URLs (curl does); the seed only http(s) ones.
    let file_ok = !v219 && validate::file_url_is_valid(url);
    if !validate::http_url_is_valid(url) && !file_ok {
        log::error!("URL '{url}' is not valid.");
        return Err(());
    }
    // systemd-pull takes an explicit NAME as it is; only a name derived from the URL
    // loses its suffixes there.
    let (local, strip) = match args.get(2) {
        Some(l) => (l.clone(), v219),
        None => {
            let last = names::url_last_component(url).map_err(|e| {
                if v219 {
                    log::error!("Failed get final component of URL: {e}");
                } else {
                    log::error!("Failed to get final component of URL: {e}");
                }
            })?;
            (last, true)
        }
    };
    let options = if v219 {
        PullOptions::SEED
    } else {
        PullOptions {
            side_files: SideFiles {
                settings: settings.settings.unwrap_or(false),
                roothash: settings.roothash && suffixes == Suffixes::Raw,
                roothash_signature: settings.roothash_signature && suffixes == Suffixes::Raw,
                verity: settings.verity && suffixes == Suffixes::Raw,
            },
            read_only: settings.read_only,
            keep_download: settings.keep_download.unwrap_or(true),
            sync: settings.sync,
            convert_qcow2: settings.convert_qcow2,
            btrfs_subvol: settings.btrfs_subvol,
            btrfs_quota: settings.btrfs_quota,
            size_max: settings.size_max,
            force: settings.force,
        }
    };
    let request = |local, direct| UrlRequest {
        url: url.clone(),
        local,
        image_root: settings.image_root.clone(),
        force: settings.force,
        verify: settings.verify,
        curl: settings.curl.clone(),
        keyring: settings.test.pubring.clone(),
        hold: settings.test.hold,
        dialect: settings.dialect,
        options,
        direct,
    };
    if settings.direct {
        let direct = direct_target(settings, url, &local, strip, suffixes)?;
        return Ok(request(None, Some(direct)));
    }
    if local.is_empty() || local == "-" {
        pulling(settings, &format!("Pulling '{url}'."));
        return Ok(request(None, None));
    }
    let local = match suffixes {
        _ if !strip => local,
        // Q11: the C tool reported this EINVAL as "Out of memory."
        Suffixes::Tar => names::tar_strip_suffixes(&local).map_err(|e| {
            log::error!("Failed to strip tar suffixes from '{local}': {e}");
        })?,
        Suffixes::Raw => names::raw_strip_suffixes(&local),
    };
    check_local(settings, &local)?;
    pulling(settings, &format!("Pulling '{url}', saving as '{local}'."));
    Ok(request(Some(local), None))
}

/// Say what is pulled where, and that nothing will be synced if so (systemd-pull).
fn pulling(settings: &Settings, line: &str) {
    log::info!("{line}");
    if !settings.sync && settings.dialect == Dialect::V252 {
        log::info!("File system synchronization on completion is off.");
    }
}

/// systemd's `path_is_valid()`: not empty, shorter than `PATH_MAX`, no component longer
/// than `NAME_MAX`.
fn path_is_valid(path: &std::path::Path) -> bool {
    let bytes = path.as_os_str().as_encoded_bytes();
    !bytes.is_empty()
        && bytes.len() < libc::PATH_MAX as usize
        && bytes.split(|&b| b == b'/').all(|c| c.len() <= 255)
}

/// `--direct` (systemd-pull): the local name is a path (relative ones are under the image
/// root), `-` or empty means stdout (raw only); nothing is checked for existing.
fn direct_target(
    settings: &Settings,
    url: &str,
    local: &str,
    strip: bool,
    suffixes: Suffixes,
) -> Result<Direct, ()> {
    let to_stdout = local.is_empty() || local == "-";
    if to_stdout && suffixes == Suffixes::Tar {
        log::error!("Pulling tar images to STDOUT is not supported.");
        return Err(());
    }
    if to_stdout {
        pulling(settings, &format!("Pulling '{url}'."));
        return Ok(Direct {
            path: None,
            offset: settings.offset,
        });
    }
    let local = match suffixes {
        _ if !strip => local.to_string(),
        Suffixes::Tar => names::tar_strip_suffixes(local).map_err(|e| {
            log::error!("Failed to strip tar suffixes from '{local}': {e}");
        })?,
        Suffixes::Raw => names::raw_strip_suffixes(local),
    };
    let path = settings.image_root.join(&local);
    if !path_is_valid(&path) {
        log::error!("Local path name '{}' is not valid.", path.display());
        return Err(());
    }
    match settings.offset {
        Some(offset) => pulling(
            settings,
            &format!(
                "Pulling '{url}', saving at offset {offset} in '{}'.",
                path.display()
            ),
        ),
        None => pulling(
            settings,
            &format!("Pulling '{url}', saving as '{}'.", path.display()),
        ),
    }
    Ok(Direct {
        path: Some(path),
        offset: settings.offset,
    })
}

/// The local name must be a valid machine name and, unless `--force`, must not exist yet:
/// the seed looks under `--image-root` as well as on the fixed search path (Q9),
/// systemd-pull on its class's search path only, as upstream.
pub(super) fn check_local(settings: &Settings, local: &str) -> Result<(), ()> {
    let valid = match settings.dialect {
        Dialect::V219 => validate::machine_name_is_valid(local),
        Dialect::V252 => validate::ldh_hostname_is_valid(local),
    };
    if !valid {
        log::error!("Local image name '{local}' is not valid.");
        return Err(());
    }
    if !settings.force {
        let found = match settings.dialect {
            Dialect::V219 => image::image_find(local, &settings.image_root),
            Dialect::V252 => image::image_find_in_class(local, settings.class),
        };
        match found {
            Err(e) => {
                log::error!("Failed to check whether image '{local}' exists: {e}");
                return Err(());
            }
            Ok(Some(_)) => {
                log::error!("Image '{local}' already exists.");
                return Err(());
            }
            Ok(None) => {}
        }
    }
    Ok(())
}

pub fn pull_tar(inv: &Invocation, args: &[String]) -> i32 {
    let settings = inv.settings;
    let Ok(req) = validate_url_request(settings, args, Suffixes::Tar) else {
        return 1;
    };
    import::run(TarImport::new(req))
}

pub fn pull_raw(inv: &Invocation, args: &[String]) -> i32 {
    let settings = inv.settings;
    let Ok(req) = validate_url_request(settings, args, Suffixes::Raw) else {
        return 1;
    };
    import::run(RawImport::new(req))
}

/// Spec §1.5 for pull-dkr.
fn validate_dkr_request(settings: &Settings, args: &[String]) -> Result<DkrRequest, ()> {
    let Some(index_url) = settings.dkr_index_url.clone() else {
        log::error!("Please specify an index URL with --dkr-index-url=");
        return Err(());
    };
    if settings.verify != Verify::No {
        log::error!("Imports from dkr do not support image verification, please pass --verify=no.");
        return Err(());
    }
    let (name, tag) = match args[1].split_once(':') {
        Some((n, t)) => (n.to_string(), t.to_string()),
        None => (args[1].clone(), "latest".to_string()),
    };
    if !validate::dkr_name_is_valid(&name) {
        log::error!("Remote name '{name}' is not valid.");
        return Err(());
    }
    if !validate::dkr_tag_is_valid(&tag) {
        log::error!("Tag name '{tag}' is not valid.");
        return Err(());
    }
    let local = match args.get(2) {
        Some(l) => l.clone(),
        None => name
            .split_once('/')
            .map_or(name.as_str(), |(_, rest)| rest)
            .to_string(),
    };
    let local = if local.is_empty() || local == "-" {
        log::info!("Pulling '{name}' with tag '{tag}'.");
        None
    } else {
        check_local(settings, &local)?;
        log::info!("Pulling '{name}' with tag '{tag}', saving as '{local}'.");
        Some(local)
    };
    Ok(DkrRequest {
        index_url,
        name,
        tag,
        local,
        image_root: settings.image_root.clone(),
        force: settings.force,
        curl: settings.curl.clone(),
        registry_port: settings.test.dkr_registry_port,
    })
}

pub fn pull_dkr(inv: &Invocation, args: &[String]) -> i32 {
    let settings = inv.settings;
    let Ok(req) = validate_dkr_request(settings, args) else {
        return 1;
    };
    import::run(DkrImport::new(req))
}

pub fn pull_oci(inv: &Invocation, args: &[String]) -> i32 {
    let settings = inv.settings;
    if let Some(source) = ArchiveSource::parse(&args[1]) {
        let Ok(req) = validate_archive_request(settings, source, args.get(2)) else {
            return 1;
        };
        let root = req.image_root.clone();
        let local = req.local.clone();
        let work: Work = Box::new(move |cancel, progress| archive::run(req, cancel, progress));
        return import::run(LocalImport::new("Imported", root, local, work));
    }
    let Ok(req) = validate_oci_request(settings, &args[1..]) else {
        return 1;
    };
    import::run(OciImport::new(req))
}

/// pull-oci's words when REF names an archive or layout (`oci-archive:`,
/// `docker-archive:`, `oci:`).
fn validate_archive_request(
    settings: &Settings,
    source: ArchiveSource,
    local: Option<&String>,
) -> Result<ArchiveRequest, ()> {
    let platform = oci_platform(settings)?;
    let local = local.cloned().unwrap_or_else(|| source.local_name());
    let text = format!("{}", source.path.display());
    let local = if local.is_empty() || local == "-" {
        log::info!("Importing '{text}'.");
        None
    } else {
        check_local(settings, &local)?;
        log::info!("Importing '{text}', saving as '{local}'.");
        Some(local)
    };
    Ok(ArchiveRequest {
        source,
        local,
        image_root: settings.image_root.clone(),
        force: settings.force,
        platform,
        layer_size_max: settings
            .layer_size_max
            .unwrap_or(crate::import::job::DEFAULT_SIZE_MAX),
    })
}

/// `--platform=`, or ours.
fn oci_platform(settings: &Settings) -> Result<Platform, ()> {
    match &settings.platform {
        Some(p) => Platform::parse(p).ok_or_else(|| {
            log::error!("Platform '{p}' is not valid, expected OS/ARCH[/VARIANT].");
        }),
        None => Ok(Platform::native()),
    }
}

/// The checks of pull-oci's words (`REF [LOCAL]`), in the style of the other verbs.
fn validate_oci_request(settings: &Settings, args: &[String]) -> Result<PullRequest, ()> {
    let text = args.first().map(String::as_str).unwrap_or("");
    let name = ImageName::parse(text).map_err(|e| match e {
        ReferenceError::Invalid if text.contains("://") => log::error!(
            "Reference '{text}' is not valid: a reference names a registry host, not a URL \
             (write it without '{}://'; plain HTTP registries need 'insecure = true' in registries.conf).",
            text.split("://").next().unwrap_or_default()
        ),
        ReferenceError::Invalid => log::error!("Reference '{text}' is not valid."),
        ReferenceError::UnsupportedDigest(algorithm) => log::error!(
            "Reference '{text}' uses the digest algorithm '{algorithm}', only sha256 is supported."
        ),
    })?;
    let reference = name.clone().into_reference();
    let platform = oci_platform(settings)?;
    let local = args
        .get(1)
        .cloned()
        .unwrap_or_else(|| reference.local_name().to_string());
    let local = if local.is_empty() || local == "-" {
        log::info!("Pulling '{reference}'.");
        None
    } else {
        check_local(settings, &local)?;
        log::info!("Pulling '{reference}', saving as '{local}'.");
        Some(local)
    };
    // The registry configuration applies before any request: a blocked registry or an
    // ambiguous short name fails here.
    let config = RegistryConfig::load(&settings.registry_paths).map_err(|e| log::error!("{e}"))?;
    let resolution = config.resolve(&name).map_err(|e| log::error!("{e}"))?;
    for c in &resolution.candidates {
        log::debug!("Candidate '{}' ({}).", c.image, c.how);
    }
    let mut credentials = CredentialStore::from_env();
    if let Some(helpers) = config.credential_helpers() {
        credentials = credentials.with_credential_helpers(helpers);
    }
    Ok(PullRequest {
        reference,
        resolution,
        local,
        image_root: settings.image_root.clone(),
        force: settings.force,
        platform,
        max_downloads: settings
            .max_concurrent_downloads
            .unwrap_or(DEFAULT_CONCURRENT_DOWNLOADS),
        layer_size_max: settings
            .layer_size_max
            .unwrap_or(crate::import::job::DEFAULT_SIZE_MAX),
        ranges: RangePlan {
            connections: settings
                .download_ranges
                .unwrap_or(RangePlan::DEFAULT.connections),
            part_size: settings
                .download_range_size
                .unwrap_or(RangePlan::DEFAULT.part_size),
        },
        credentials,
        curl: settings.curl.clone(),
        retry_delay: settings.test.retry_delay,
    })
}
