//! The `systemd-import` command line: options, verbs, validation, and the loop that runs an
//! importer.
//!
//! Exit status is 0 on success and 1 on any failure, as the C tool's. Every message is one
//! plain line on stderr (see [`crate::util::log`]).

mod options;
mod verbs;

pub(crate) use verbs::check_local;
pub use verbs::{DkrRequest, UrlRequest};

pub use options::{Settings, Verify, DEFAULT_IMAGE_ROOT};

use crate::curl_glue::{CurlSettings, PACKAGE_VERSION};
use crate::event::{self, EventLoop};
use crate::import::Importer;
use crate::log_notice;

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

    let parsed = match options::parse(&argv0, &argv[1..]) {
        Ok(p) => p,
        Err(()) => return 1,
    };
    match parsed {
        options::Parsed::Help => {
            print!("{}", options::help_text(&program_short_name(&argv0)));
            0
        }
        options::Parsed::Version => {
            println!("systemd {PACKAGE_VERSION}");
            println!("{FEATURES} (systemd-import {})", env!("CARGO_PKG_VERSION"));
            0
        }
        options::Parsed::Run { mut settings, args } => {
            settings.curl =
                CurlSettings::from_env(&argv0, crate::util::test_seams::low_speed_time());
            verbs::dispatch(&argv0, &settings, &args)
        }
    }
}

/// `program_invocation_short_name`.
fn program_short_name(argv0: &str) -> String {
    argv0.rsplit('/').next().unwrap_or(argv0).to_string()
}

/// Run an importer to completion on a fresh event loop, as the C tool's pull verbs do:
/// SIGINT/SIGTERM log "Transfer aborted." and stop the loop with EINTR; the importer's
/// completion stops it with its error; then "Exiting." and the importer is dropped, which
/// removes whatever temporary state it still holds. Returns the exit status.
pub fn run_importer<I: Importer>(mut importer: I) -> i32 {
    let mut lp = match EventLoop::<I>::new() {
        Ok(lp) => lp,
        Err(e) => {
            log::error!("Failed to allocate event loop: {e}");
            return 1;
        }
    };
    for signo in [libc::SIGTERM, libc::SIGINT] {
        let r = lp.add_signal(signo, |lp, _, _, _| {
            log_notice!("Transfer aborted.");
            lp.exit(libc::EINTR);
            Ok(())
        });
        if let Err(e) = r {
            log::error!("Failed to install signal handler: {e}");
            return 1;
        }
    }
    if let Err(e) = importer.start(&mut lp) {
        log::error!("Failed to pull image: {e}");
        return 1;
    }
    let code = match lp.run(&mut importer) {
        Ok(code) => code,
        Err(e) => {
            log::error!("Failed to run event loop: {e}");
            return 1;
        }
    };
    log::info!("Exiting.");
    drop(importer);
    if code == 0 {
        0
    } else {
        1
    }
}
