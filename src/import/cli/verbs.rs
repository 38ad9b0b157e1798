//! Verb dispatch (systemd's `dispatch_verb()`) and the per-verb validation of spec §1.5.
//! Each check logs the C tool's message and makes the tool exit 1.

use super::options::{help_text, Settings, Verify};
use super::program_short_name;
use crate::import;
use crate::import::dkr::{DkrImport, DkrRequest};
use crate::import::oci::credentials;
use crate::import::oci::platform::Platform;
use crate::import::oci::reference::{Reference, ReferenceError};
use crate::import::oci::{OciImport, PullRequest, DEFAULT_CONCURRENT_DOWNLOADS};
use crate::import::url::{RawImport, TarImport, UrlRequest};
use crate::util::{getopt, image, names, validate};

/// A verb: its names (seed, then the v219 short alias), and its argument counts including
/// the verb itself (`None` = any).
struct VerbSpec {
    names: &'static [&'static str],
    min_args: usize,
    max_args: Option<usize>,
    run: fn(&str, &Settings, &[String]) -> i32,
}

const VERBS: &[VerbSpec] = &[
    VerbSpec {
        names: &["help"],
        min_args: 0,
        max_args: None,
        run: verb_help,
    },
    VerbSpec {
        names: &["pull-tar", "tar"],
        min_args: 2,
        max_args: Some(3),
        run: verb_pull_tar,
    },
    VerbSpec {
        names: &["pull-raw", "raw"],
        min_args: 2,
        max_args: Some(3),
        run: verb_pull_raw,
    },
    VerbSpec {
        names: &["pull-dkr", "dkr"],
        min_args: 2,
        max_args: Some(3),
        run: verb_pull_dkr,
    },
    VerbSpec {
        names: &["pull-oci", "oci"],
        min_args: 2,
        max_args: Some(3),
        run: verb_pull_oci,
    },
];

/// Find and run the verb in `args[0]`; returns the exit status.
pub fn dispatch(argv0: &str, settings: &Settings, args: &[String]) -> i32 {
    let Some(name) = args.first() else {
        log::error!("Requires operation parameter.");
        return 1;
    };
    let Some(verb) = VERBS.iter().find(|v| v.names.contains(&name.as_str())) else {
        log::error!("Unknown operation {name}.");
        return 1;
    };
    if !getopt::verb_arg_count_ok(args.len(), verb.min_args, verb.max_args) {
        return 1;
    }
    (verb.run)(argv0, settings, args)
}

fn verb_help(argv0: &str, _: &Settings, _: &[String]) -> i32 {
    print!("{}", help_text(&program_short_name(argv0)));
    0
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
    if !validate::http_url_is_valid(url) {
        log::error!("URL '{url}' is not valid.");
        return Err(());
    }
    let local = match args.get(2) {
        Some(l) => l.clone(),
        None => names::url_last_component(url).map_err(|e| {
            log::error!("Failed get final component of URL: {e}");
        })?,
    };
    let request = |local| UrlRequest {
        url: url.clone(),
        local,
        image_root: settings.image_root.clone(),
        force: settings.force,
        verify: settings.verify,
        curl: settings.curl.clone(),
        keyring: settings.test.pubring.clone(),
        hold: settings.test.hold,
    };
    if local.is_empty() || local == "-" {
        log::info!("Pulling '{url}'.");
        return Ok(request(None));
    }
    let local = match suffixes {
        // Q11: the C tool reported this EINVAL as "Out of memory."
        Suffixes::Tar => names::tar_strip_suffixes(&local).map_err(|e| {
            log::error!("Failed to strip tar suffixes from '{local}': {e}");
        })?,
        Suffixes::Raw => names::raw_strip_suffixes(&local),
    };
    check_local(settings, &local)?;
    log::info!("Pulling '{url}', saving as '{local}'.");
    Ok(request(Some(local)))
}

/// The local name must be a valid machine name and, unless `--force`, must not exist yet
/// (Q9: under `--image-root` as well as on the fixed search path).
fn check_local(settings: &Settings, local: &str) -> Result<(), ()> {
    if !validate::machine_name_is_valid(local) {
        log::error!("Local image name '{local}' is not valid.");
        return Err(());
    }
    if !settings.force {
        match image::image_find(local, &settings.image_root) {
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

fn verb_pull_tar(_: &str, settings: &Settings, args: &[String]) -> i32 {
    let Ok(req) = validate_url_request(settings, args, Suffixes::Tar) else {
        return 1;
    };
    import::run(TarImport::new(req))
}

fn verb_pull_raw(_: &str, settings: &Settings, args: &[String]) -> i32 {
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

fn verb_pull_dkr(_: &str, settings: &Settings, args: &[String]) -> i32 {
    let Ok(req) = validate_dkr_request(settings, args) else {
        return 1;
    };
    import::run(DkrImport::new(req))
}

fn verb_pull_oci(_: &str, settings: &Settings, args: &[String]) -> i32 {
    let Ok(req) = validate_oci_request(settings, &args[1..]) else {
        return 1;
    };
    import::run(OciImport::new(req))
}

/// The checks of pull-oci's words (`REF [LOCAL]`), in the style of the other verbs.
fn validate_oci_request(settings: &Settings, args: &[String]) -> Result<PullRequest, ()> {
    let text = args.first().map(String::as_str).unwrap_or("");
    let reference = Reference::parse(text).map_err(|e| match e {
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
    let platform = match &settings.platform {
        Some(p) => Platform::parse(p).ok_or_else(|| {
            log::error!("Platform '{p}' is not valid, expected OS/ARCH[/VARIANT].");
        })?,
        None => Platform::native(),
    };
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
    let credentials = credentials::find(&reference);
    if let Some((c, path)) = &credentials {
        log::debug!("Using credentials of '{}' from {}.", c.user, path.display());
    }
    Ok(PullRequest {
        reference,
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
        credentials,
        curl: settings.curl.clone(),
        retry_delay: settings.test.retry_delay,
    })
}
