//! `systemd-import`: a drop-in replacement for systemd's image downloader.
//!
//! Architecture (one module per object, as in the C original):
//! * [`event`]: an sd-event-style epoll loop (io, time, signal, defer and exit sources);
//! * [`curl_glue`]: libcurl's multi-socket interface driven by that loop;
//! * [`import`]: `ImportJob` (one HTTP GET), the unpacker, and the importers;
//! * [`util`]: validators, escaping, formatting, errors, logging, file-system helpers;
//! * [`cli`]: the `systemd-import` command line;
//! * [`bus`], [`importd`], [`importctl`]: the D-Bus layer, `systemd-importd` and its client.

pub mod bus;
pub mod cli;
pub mod curl_glue;
pub mod event;
pub mod import;
pub mod importctl;
pub mod importd;
pub mod util;

/// The mutation-test support of `tests/common/`, for the campaigns of parsers that are
/// private to the crate (their unit tests run them).
#[cfg(test)]
#[path = "../tests/common/mutate.rs"]
pub(crate) mod test_mutate;
