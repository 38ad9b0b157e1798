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
//! module defining such a constant plus one row in `PERSONALITIES` (cli/mod.rs, which
//! picks one by name).

use super::options::{Parsed, Settings};
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

/// A verb: its names (seed, then the v219 short alias), and its argument counts including
/// the verb itself (`None` = any).
pub struct VerbSpec {
    pub(super) names: &'static [&'static str],
    pub(super) min_args: usize,
    pub(super) max_args: Option<usize>,
    pub(super) run: fn(&Invocation, &[String]) -> i32,
}

impl VerbSpec {
    pub const fn new(
        names: &'static [&'static str],
        min_args: usize,
        max_args: Option<usize>,
        run: fn(&Invocation, &[String]) -> i32,
    ) -> Self {
        VerbSpec {
            names,
            min_args,
            max_args,
            run,
        }
    }
}

/// One run of the program: which personality, under what name, with which settings.
pub struct Invocation<'a> {
    pub personality: &'static Personality,
    pub argv0: &'a str,
    pub settings: &'a Settings,
}
