//! Shared test support. Each integration test binary includes this with `mod common;`,
//! so not every helper is used by every binary.
#![allow(dead_code)]

pub mod btrfs;
pub mod cli;
pub mod connect_proxy;
pub mod daemon;
pub mod dbus;
pub mod dkr_registry;
pub mod export;
pub mod fault_proxy;
pub mod fleet_registry;
pub mod fsmeta;
pub mod gpg;
pub mod hostile;
pub mod http;
pub mod importd;
pub mod isolate;
pub mod mutate;
pub mod nginx;
pub mod oci;
pub mod pull;
pub mod qemu;
pub mod registry;
pub mod stage;
pub mod tarball;
pub mod tls;
