//! Shared test support. Each integration test binary includes this with `mod common;`,
//! so not every helper is used by every binary.
#![allow(dead_code)]

pub mod btrfs;
