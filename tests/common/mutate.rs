//! Seeded mutation ("fuzz") testing without extra crates: the engine (a splitmix64 PRNG,
//! the classic byte mutations and the campaign runner with the oracles every mutation
//! test shares) is the library's `src/util/mutate/`, included here; this file adds the
//! structure-aware mutations of tar archives and qcow2 images.
//!
//! Everything is a pure function of the seed; the environment a campaign reads is listed
//! in `src/util/mutate/mod.rs`. A long local run, for example:
//! `MUTATION_ITERATIONS=200000 MUTATION_KEEP_GOING=1 cargo test --release --test
//! mutation_tar -- --nocapture`.

// Not every test binary uses all of it.
#[allow(unused_imports)]
#[path = "../../src/util/mutate/mod.rs"]
mod engine;

pub use engine::*;

pub mod qcow2;
pub mod tar;
