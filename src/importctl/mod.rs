//! `importctl`: the client people type. It asks systemd-importd (ours, or systemd's
//! own) over the system bus to pull images, watches the transfer until it ends, lists
//! and cancels transfers and lists images, with upstream importctl's command line,
//! messages and exit statuses (modern-systemd.md §4.2).
//!
//! Layout (no file imports one that lists it):
//! * `options` parses the command line, `verbs` dispatches and checks each pull's
//!   arguments before anything is called;
//! * `client` is the loop's data and the bus calls; `pull` the watch of one transfer
//!   (signals, fallbacks for older daemons, Ctrl-C); `list` the listing and cancelling
//!   verbs;
//! * `progress` is what is known of a transfer's progress and its text, `display` puts
//!   it and the relayed log lines on stderr (live on a terminal, plain elsewhere);
//!   `table` prints tables and JSON.
//!
//! One thread: the bus is a source of [`crate::event::EventLoop`], SIGINT and SIGTERM
//! arrive through signalfd sources. importctl imports the bus layer, the loop and util,
//! never the importers or the daemon.
//!
//! Deviations from upstream's importctl: no `import-*`/`export-*` verbs (the daemon has
//! no such members yet), no `--host`/`--machine`/`--user`, no pager and no polkit agent
//! of its own; arguments are checked before connecting to the bus (upstream connects
//! first); `cancel-transfer` checks every id before cancelling the first; pull-dkr is
//! ours; the progress display is richer (see `display`).

mod client;
mod display;
mod list;
mod options;
mod progress;
mod pull;
mod table;
mod verbs;

/// Entry point of `importctl`; returns the exit status.
pub fn main() -> i32 {
    crate::util::log::init();
    let argv: Vec<String> = std::env::args_os()
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
    let argv0 = argv.first().cloned().unwrap_or_else(|| "importctl".into());
    let program = argv0.rsplit('/').next().unwrap_or(&argv0).to_string();
    match options::parse(&argv0, &program, argv.get(1..).unwrap_or_default()) {
        Err(()) => 1,
        Ok(options::Parsed::Done) => 0,
        Ok(options::Parsed::Run(settings, args)) => verbs::dispatch(&program, &settings, &args),
    }
}
