//! The `systemd-import` command line: options, verbs and validation; the verbs run an
//! importer with [`crate::import::run`].
//!
//! Exit status is 0 on success and 1 on any failure, as the C tool's. Every message is one
//! plain line on stderr (see [`crate::util::log`]).

mod local;
mod options;
mod verbs;

pub use options::{Settings, Verify, DEFAULT_IMAGE_ROOT};

use crate::curl_glue::{CurlSettings, PACKAGE_VERSION};
use crate::event;
use crate::util::test_seams::TestSettings;

/// The features line of `--version`.
const FEATURES: &str = "+CURL +XZ +ZLIB +BZIP2 +ZSTD +GPG +QCOW2 +OCI";

/// Entry point; returns the process exit status.
pub fn main() -> i32 {
    let argv: Vec<String> = std::env::args_os()
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
    let argv0 = argv
        .first()
        .cloned()
        .unwrap_or_else(|| "systemd-import".into());
    crate::util::log::init();

    // Block SIGINT and SIGTERM before any thread exists (curl's resolver, job workers):
    // they inherit the mask, so the signals only ever arrive through our signalfd.
    if let Err(e) = event::block_signals(&[libc::SIGINT, libc::SIGTERM]) {
        log::error!("Failed to block signals: {e}");
        return 1;
    }

    let short = program_short_name(&argv0);
    let personality = local::Personality::from_program(&short);
    let parsed = match options::parse_with(&argv0, &argv[1..], env_defaults()) {
        Ok(p) => p,
        Err(()) => return 1,
    };
    match parsed {
        options::Parsed::Help => {
            match personality {
                Some(p) => print!("{}", p.help(&short)),
                None => print!("{}", options::help_text(&short)),
            }
            0
        }
        options::Parsed::Version => {
            println!("systemd {PACKAGE_VERSION}");
            println!("{FEATURES} (systemd-import {})", env!("CARGO_PKG_VERSION"));
            0
        }
        options::Parsed::Run { mut settings, args } => {
            settings.test = TestSettings::from_env();
            settings.curl = CurlSettings::from_env(&argv0, settings.test.low_speed_time);
            match personality {
                Some(p) => p.dispatch(&short, &settings, &args),
                None => verbs::dispatch(&argv0, &settings, &args),
            }
        }
    }
}

/// The settings before the options: `$SYSTEMD_IMPORT_BTRFS_SUBVOL`,
/// `$SYSTEMD_IMPORT_BTRFS_QUOTA` and `$SYSTEMD_IMPORT_SYNC` (booleans; a bad value warns).
fn env_defaults() -> Settings {
    let mut settings = Settings::default();
    let local = &mut settings.local;
    for (name, field) in [
        ("SYSTEMD_IMPORT_BTRFS_SUBVOL", &mut local.btrfs_subvol),
        ("SYSTEMD_IMPORT_BTRFS_QUOTA", &mut local.btrfs_quota),
        ("SYSTEMD_IMPORT_SYNC", &mut local.sync),
    ] {
        let Some(value) = std::env::var_os(name) else {
            continue;
        };
        match options::parse_boolean(&value.to_string_lossy()) {
            Some(b) => *field = b,
            None => log::warn!("Failed to parse ${name}: Invalid argument"),
        }
    }
    settings
}

/// `program_invocation_short_name`.
fn program_short_name(argv0: &str) -> String {
    argv0.rsplit('/').next().unwrap_or(argv0).to_string()
}
