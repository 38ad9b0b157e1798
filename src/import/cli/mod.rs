//! The command line of the worker binary: which personality it speaks (by the name it
//! is run as, [`personality`]), options and verbs, and the validation of each request;
//! the verbs run an importer with [`crate::import::run`].
//!
//! * `personality.rs`: the table of personalities and the choice by argv[0];
//! * `seed.rs`: `systemd-import` as v219 shipped it (plus pull-oci);
//! * `pull.rs`: systemd 252's `systemd-pull` (with the options of v252–v260);
//! * `options.rs`: the getopt engine they share and [`Settings`];
//! * `verbs.rs`: the verbs, their checks and the requests they build.
//!
//! Exit status is 0 on success and 1 on any failure, as the C tool's. Every message is one
//! plain line on stderr (see [`crate::util::log`]).

mod local;
mod options;
mod personality;
mod pull;
mod seed;
mod verbs;

pub use options::{Settings, Verify, DEFAULT_IMAGE_ROOT};

use personality::Personality;

use crate::curl_glue::CurlSettings;
use crate::event;
use crate::import::oci::registry::ConfigPaths;
use crate::import::Dialect;
use crate::util::test_seams::TestSettings;

/// Size the descriptor table for the most descriptors a pull holds at once (the btrfs
/// writeback queue alone keeps up to 8 batches of 32 files open, and the unpacker the
/// batch it fills, plus connections, spools and pipes) while the process still has one
/// thread. The kernel grows the table by
/// doubling, and once threads share it every growth waits for an RCU grace period:
/// measured 5–26 ms stalls of the unpacker in the middle of a layer (`perf sched`,
/// `expand_files` < `synchronize_rcu`). A table never shrinks, so one `F_DUPFD` high up
/// now (on any of the standard descriptors, immediately closed) does it for the whole
/// run. Best effort: a lower `RLIMIT_NOFILE` takes the next smaller size.
fn grow_fd_table() {
    use std::os::fd::AsFd;
    let (stdin, stdout, stderr) = (std::io::stdin(), std::io::stdout(), std::io::stderr());
    let standard = [stdin.as_fd(), stdout.as_fd(), stderr.as_fd()];
    for fd in standard {
        for top in [1023, 511, 255] {
            match crate::util::sys::dup_at_least(fd, top) {
                Ok(_dup) => return,
                Err(nix::errno::Errno::EBADF) => break,
                Err(_) => continue,
            }
        }
    }
}

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
    let personality = by_argv0(&argv0);

    // Block SIGINT and SIGTERM before any thread exists (curl's resolver, job workers):
    // they inherit the mask, so the signals only ever arrive through our signalfd.
    if let Err(e) = event::block_signals(&[libc::SIGINT, libc::SIGTERM]) {
        log::error!("Failed to block signals: {e}");
        return 1;
    }

    grow_fd_table();

    let parsed = match (personality.parse)(&argv0, &argv[1..]) {
        Ok(p) => p,
        Err(()) => return 1,
    };
    match parsed {
        options::Parsed::Help => verbs::print_help(personality, &argv0),
        options::Parsed::Version => verbs::stdout_or_sigpipe(&version_text(personality)),
        options::Parsed::Run { mut settings, args } => {
            settings.dialect = personality.dialect;
            settings.test = TestSettings::from_env();
            settings.curl = CurlSettings::from_env(
                &program_short_name(&argv0),
                personality.version,
                settings.test.low_speed_time,
            );
            settings.registry_paths = ConfigPaths::from_env(settings.registry_config.as_deref());
            let inv = personality::Invocation {
                personality,
                argv0: &argv0,
                settings: &settings,
            };
            verbs::dispatch(&inv, &args)
        }
    }
}

/// `--version`: the systemd version followed, the features line, and this
/// implementation's name and version (v219's layout for the seed, v252's for the others:
/// there the parenthesis of the first line names the package build).
fn version_text(personality: &Personality) -> String {
    let ours = format!("systemd-import {}", env!("CARGO_PKG_VERSION"));
    match personality.dialect {
        Dialect::V219 => format!("systemd {}\n{FEATURES} ({ours})\n", personality.version),
        Dialect::V252 => format!("systemd {} ({ours})\n{FEATURES}\n", personality.version),
    }
}

/// `program_invocation_short_name`.
fn program_short_name(argv0: &str) -> String {
    argv0.rsplit('/').next().unwrap_or(argv0).to_string()
}

/// Every personality but the default one ([`seed::SEED`]), by the name that selects it.
pub const PERSONALITIES: &[&Personality] = &[&pull::PULL, &local::IMPORT_FS, &local::EXPORT];

/// The personality of a program run as `argv0`.
pub fn by_argv0(argv0: &str) -> &'static Personality {
    let name = argv0.rsplit('/').next().unwrap_or(argv0);
    PERSONALITIES
        .iter()
        .copied()
        .find(|p| p.program == name)
        .unwrap_or(&seed::SEED)
}

#[cfg(test)]
mod personality_tests {
    use super::*;

    #[test]
    fn the_name_picks_the_personality() {
        assert_eq!(
            by_argv0("/usr/lib/systemd/systemd-pull").program,
            "systemd-pull"
        );
        assert_eq!(by_argv0("systemd-pull").dialect, Dialect::V252);
        assert_eq!(
            by_argv0("/usr/lib/systemd/systemd-import").program,
            "systemd-import"
        );
        assert_eq!(by_argv0("whatever").program, "systemd-import");
        assert_eq!(by_argv0("").dialect, Dialect::V219);
    }
}
