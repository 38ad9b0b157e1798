//! Which command line the binary speaks, chosen by the name it is run as (argv[0]'s
//! basename), as one C binary per name would:
//!
//! | name | personality | module |
//! | --- | --- | --- |
//! | `systemd-pull` | systemd 252's `systemd-pull` (v252–v260 options) | [`super::pull`] |
//! | `systemd-import-fs`, `systemd-export` | systemd 252's local tools | [`super::local`] |
//! | anything else (`systemd-import`, …) | the seed: v219's `systemd-import` (plus the local `tar`/`raw` of systemd 220+) | [`super::seed`] |
//!
//! A personality is a [`Personality`] value: its option parser (built on the shared
//! getopt engine, [`super::options::walk`]), its help text, its verb table (verbs are
//! shared functions in [`super::verbs`]), the systemd version `--version` and the
//! User-Agent name, and the [`Dialect`] of its messages and progress. Adding one is a
//! module defining such a constant plus one row in [`PERSONALITIES`].

use super::options::Parsed;
use super::verbs::VerbSpec;
use super::{local, pull, seed};
use crate::import::Dialect;

/// One command line of the binary.
pub struct Personality {
    /// argv[0]'s basename that selects it.
    pub program: &'static str,
    /// The messages and progress format its runs follow.
    pub dialect: Dialect,
    /// The systemd version it follows: `--version`'s first line and the User-Agent.
    pub version: &'static str,
    /// Its command line: options, in getopt order, into settings and positional words.
    pub parse: fn(&str, &[String]) -> Result<Parsed, ()>,
    /// Its `--help` text for a program called by the given short name.
    pub help: fn(&str) -> String,
    /// Its verbs.
    pub verbs: &'static [VerbSpec],
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
mod tests {
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
