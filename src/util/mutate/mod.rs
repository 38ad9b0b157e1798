//! Seeded mutation ("fuzz") testing without extra crates, for tests only: a splitmix64
//! PRNG and the classic byte and text mutations (`rng.rs`), and a campaign runner with
//! the oracles every mutation test shares: no panic, a watchdog for hangs, per-case
//! memory accounting, saved inputs that can be replayed (`campaign.rs`). The
//! structure-aware mutations of tar archives and qcow2 images are the integration
//! tests' (`tests/common/mutate.rs`).
//!
//! Everything is a pure function of the seed, so a CI run is deterministic and a failure
//! is reproduced from the seed it prints or from the input file it writes.
//!
//! Environment of a campaign (all optional):
//! * `MUTATION_ITERATIONS`: cases per campaign (default: each test's CI-sized count);
//! * `MUTATION_SEED`: base seed (default: derived from the campaign's name), to explore
//!   new inputs in long local runs;
//! * `MUTATION_CASE_SEED`: run only the case with this seed (as printed on failure);
//! * `MUTATION_REPLAY`: run only this saved input file (written on failure; the file
//!   name starts with the campaign's name, other campaigns ignore it);
//! * `MUTATION_TIMEOUT`: seconds one case may take before the watchdog fails the run
//!   (default 5);
//! * `MUTATION_KEEP_GOING=1`: record failures and go on, report them all at the end;
//! * `MUTATION_FAILURES`: directory for failing inputs (default `target/tmp/mutation-failures`
//!   for integration tests, `$TMPDIR/systemd-import-mutation-failures` for unit tests);
//! * `MUTATION_STATS=1`: print how the cases ended (error messages with names and
//!   numbers blanked), to see which code the mutations reach (needs `--nocapture`).
//!
//! A long local run, for example: `MUTATION_ITERATIONS=200000 MUTATION_KEEP_GOING=1
//! cargo test --release --test mutation_tar -- --nocapture`.
//!
//! The library compiles this into its own unit tests only (`#[cfg(test)]`: the
//! campaigns of parsers private to the crate), and the integration tests include it
//! from `tests/common/mutate.rs`; so it uses nothing but `std`. Like every test, it reads
//! its settings from the environment.
#![allow(dead_code)]

mod campaign;
mod rng;

pub use campaign::*;
pub use rng::*;
