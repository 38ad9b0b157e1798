//! `systemd-import`: a drop-in replacement for systemd's image downloader.
//!
//! Architecture (one module per object, as in the C original), top down; each module
//! uses only those below it:
//! * [`importctl`]: the client people type, talking to `systemd-importd` (on [`bus`]);
//! * [`importd`]: `systemd-importd`, the D-Bus daemon that runs the workers (on [`bus`]);
//! * [`import`]: the worker's command line (`import::cli`), the importers and what they
//!   are built of (`ImportJob`, the byte pipeline, the unpacker, the store), and export;
//! * [`bus`]: a D-Bus connection driven by the loop;
//! * [`curl_glue`]: libcurl's multi-socket interface driven by the loop;
//! * [`event`]: an sd-event-style epoll loop (io, time, signal, defer and exit sources);
//! * [`util`]: validators, escaping, formatting, errors, logging, file-system helpers.

pub mod bus;
pub mod curl_glue;
pub mod event;
pub mod import;
pub mod importctl;
pub mod importd;
pub mod util;
