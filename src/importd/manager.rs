//! The manager: the loop's data. It owns the bus connection, the transfers, the progress
//! socket and the service state, and runs a transfer's life: start the worker, relay its
//! output and progress, cancel it, reap it and report how it ended.
//!
//! Events, by source (all on the loop's one thread):
//! * a worker's output pipe (priority NORMAL−5, so output is relayed before the exit is
//!   handled, as upstream) → lines re-logged as `(transferN) …` and sent as `LogMessage`;
//! * SIGCHLD through signalfd → every exited worker is reaped (`waitpid` on the
//!   transfer's own pid only), its remaining output drained, and `TransferRemoved` sent
//!   with `done`, `canceled` or `failed`. SIGCHLD rather than a pidfd per worker: the
//!   loop already has signal sources, and a pidfd would need a raw `pidfd_open` call;
//! * the progress socket → `Progress` and `ProgressUpdate`, and the extended fields →
//!   our interface's `DetailsUpdate`.

use std::collections::BTreeMap;
use std::os::fd::AsRawFd;
use std::os::unix::process::ExitStatusExt;
use std::process::ExitStatus;

use nix::sys::signal::Signal;

use super::log_relay::Read;
use super::progress::{self, NotifySocket};
use super::request::PullRequest;
use super::service::{self, Daemon, Service};
use super::transfer::{Transfer, TRANSFERS_MAX};
use super::{api, worker, Settings};
use crate::bus::{Bus, BusError};
use crate::event::{EventLoop, EPOLLIN, PRIORITY_NORMAL};
use crate::util::error::Result;
use crate::util::log::{LOG_ERR, LOG_INFO, LOG_NOTICE, LOG_WARNING};

use crate::bus::import1::{DETAILS_UPDATE, EXT_TRANSFER_INTERFACE};
pub use crate::bus::import1::{
    ERROR_NO_SUCH_TRANSFER, ERROR_TRANSFER_IN_PROGRESS, MANAGER_INTERFACE, MANAGER_PATH,
    TRANSFER_INTERFACE,
};

pub struct Manager {
    pub bus: Bus<Manager>,
    /// By id; ids start at 1 and are never reused.
    pub transfers: BTreeMap<u32, Transfer>,
    /// The last id handed out.
    last_id: u32,
    pub settings: Settings,
    pub notify: NotifySocket,
    pub service: Service,
}

fn bus_of(m: &mut Manager) -> &mut Bus<Manager> {
    &mut m.bus
}

impl Manager {
    /// Connect to the system bus and open the progress socket.
    pub fn new(settings: Settings) -> Result<Manager> {
        let bus = Bus::system(bus_of)?;
        Ok(Manager {
            bus,
            transfers: BTreeMap::new(),
            last_id: 0,
            notify: NotifySocket::bind()?,
            service: Service::new(&settings),
            settings,
        })
    }

    /// Register everything with the loop and ask for the bus name.
    pub fn start(&mut self, lp: &mut EventLoop<Manager>) -> Result<()> {
        self.bus.attach(lp)?;
        api::register(&mut self.bus);
        let notify = lp.add_io(self.notify.fd().as_raw_fd(), EPOLLIN, |lp, m, _, _| {
            on_notify(lp, m);
            Ok(())
        })?;
        lp.set_description(notify, "notify");
        let sigchld = lp.add_signal(libc::SIGCHLD, |lp, m, _, _| {
            reap(lp, m);
            Ok(())
        })?;
        lp.set_priority(sigchld, PRIORITY_NORMAL)?;
        service::start(lp, self)
    }

    /// Start a transfer for a checked request (spec §6.3): refuse a duplicate and the
    /// 65th, run the worker, watch its output, announce it.
    pub fn start_transfer(
        &mut self,
        lp: &mut EventLoop<Manager>,
        req: PullRequest,
    ) -> std::result::Result<(u32, String), BusError> {
        if self.service.stopping {
            return Err(BusError::from_errno(libc::ESHUTDOWN));
        }
        let duplicate = self.transfers.values().any(|t| {
            t.request.kind == req.kind
                && t.request.remote == req.remote
                && t.request.dkr_index_url == req.dkr_index_url
        });
        if duplicate {
            return Err(BusError::new(
                ERROR_TRANSFER_IN_PROGRESS,
                format!("Transfer for {} already in progress.", req.remote),
            ));
        }
        if self.transfers.len() >= TRANSFERS_MAX {
            return Err(BusError::from_errno(libc::E2BIG));
        }
        // The id is used up even if the worker does not start, as upstream.
        self.last_id += 1;
        let id = self.last_id;
        let args = worker::arguments(&req);
        let program = &self.settings.pull_path;
        log::debug!("Calling: {} {}", program.display(), args.join(" "));
        let (mut child, output) =
            worker::spawn(program, &args, self.notify.address()).map_err(|e| {
                log::error!("Failed to execute {} tool: {e}", program.display());
                BusError::from(e)
            })?;
        let io = match lp.add_io(output.as_raw_fd(), EPOLLIN, move |lp, m, _, _| {
            on_output(lp, m, id);
            Ok(())
        }) {
            Ok(io) => io,
            Err(e) => {
                // Not watched, not a transfer: the worker must not outlive this call.
                let _ = child.kill();
                let _ = child.wait();
                return Err(BusError::from(e));
            }
        };
        // Cannot fail for the source just added.
        let _ = lp.set_priority(io, PRIORITY_NORMAL - 5);
        lp.set_description(io, "transfer-log");
        let transfer = Transfer::new(id, req, child, (output, io));
        let path = transfer.path.clone();
        self.transfers.insert(id, transfer);
        let _ = self.bus.emit(
            lp,
            MANAGER_PATH,
            MANAGER_INTERFACE,
            "TransferNew",
            (id, dbus::Path::from(path.as_str())),
        );
        Ok((id, path))
    }

    /// Cancel transfer `id` (see [`Transfer::cancel`]).
    pub fn cancel(&mut self, id: u32) -> std::result::Result<(), BusError> {
        let t = self.transfers.get_mut(&id).ok_or_else(|| {
            BusError::new(ERROR_NO_SUCH_TRANSFER, format!("No transfer by id {id}"))
        })?;
        t.cancel().map_err(BusError::from)
    }
}

impl Daemon for Manager {
    fn bus(&mut self) -> &mut Bus<Manager> {
        &mut self.bus
    }

    fn service(&mut self) -> &mut Service {
        &mut self.service
    }

    /// Whether nothing runs and nothing waits: the idle exit may happen.
    fn is_idle(&self) -> bool {
        self.transfers.is_empty() && self.bus.pending_calls() == 0
    }

    fn has_transfers(&self) -> bool {
        !self.transfers.is_empty()
    }

    fn cancel_all(&mut self) {
        let ids: Vec<u32> = self.transfers.keys().copied().collect();
        for id in ids {
            if let Err(e) = self.cancel(id) {
                log::warn!("Failed to cancel transfer {id}: {}", e.message());
            }
        }
    }

    /// Kill every worker now (the shutdown deadline passed).
    fn kill_all(&mut self) {
        for t in self.transfers.values() {
            let _ = t.signal(Signal::SIGKILL);
        }
    }
}

/// The worker's output is readable: relay complete lines; stop watching at EOF.
fn on_output(lp: &mut EventLoop<Manager>, m: &mut Manager, id: u32) {
    let Some(t) = m.transfers.get_mut(&id) else {
        return;
    };
    match t.read_log() {
        Ok(Read::Data) => relay(lp, m, id, false),
        Ok(Read::Empty) => {}
        Ok(Read::Eof) => close_output(lp, m, id),
        Err(e) => {
            log::error!("Failed to read log message: {e}");
            close_output(lp, m, id);
        }
    }
}

fn close_output(lp: &mut EventLoop<Manager>, m: &mut Manager, id: u32) {
    if let Some((_, io)) = m.transfers.get_mut(&id).and_then(|t| t.log.take()) {
        lp.remove(io);
    }
}

/// Log and send the lines buffered for transfer `id`; with `flush`, the rest too.
fn relay(lp: &mut EventLoop<Manager>, m: &mut Manager, id: u32, flush: bool) {
    let Some(t) = m.transfers.get_mut(&id) else {
        return;
    };
    let lines = t.buffer.lines(flush);
    let path = t.path.clone();
    for line in lines {
        let text = format!("(transfer{id}) {}", line.text);
        match line.priority {
            p if p <= LOG_ERR => log::error!("{text}"),
            LOG_WARNING => log::warn!("{text}"),
            LOG_NOTICE => crate::log_notice!("{text}"),
            LOG_INFO => log::info!("{text}"),
            _ => log::debug!("{text}"),
        }
        let r = m.bus.emit(
            lp,
            &path,
            TRANSFER_INTERFACE,
            "LogMessage",
            (u32::from(line.priority), line.text),
        );
        if let Err(e) = r {
            log::warn!("Cannot emit log message signal, ignoring: {e}");
        }
    }
}

/// SIGCHLD: reap every worker that exited.
fn reap(lp: &mut EventLoop<Manager>, m: &mut Manager) {
    let ids: Vec<u32> = m.transfers.keys().copied().collect();
    for id in ids {
        if let Some(status) = m.transfers.get_mut(&id).and_then(|t| t.try_wait()) {
            finish(lp, m, id, status);
        }
    }
}

/// A worker exited: relay what it still wrote, log how it ended, report and forget the
/// transfer.
fn finish(lp: &mut EventLoop<Manager>, m: &mut Manager, id: u32, status: ExitStatus) {
    // The pipe may still hold output (a process the worker started may even keep it
    // open): read what is there without waiting.
    while let Some(Ok(Read::Data)) = m.transfers.get_mut(&id).map(|t| t.read_log()) {
        relay(lp, m, id, false);
    }
    relay(lp, m, id, true);
    close_output(lp, m, id);
    let success = match (status.code(), status.signal()) {
        (Some(0), _) => {
            log::debug!("Transfer process succeeded.");
            true
        }
        (Some(code), _) => {
            log::error!("Transfer process failed with exit code {code}.");
            false
        }
        (None, Some(signal)) => {
            log::error!(
                "Transfer process terminated by signal {}.",
                signal_name(signal)
            );
            false
        }
        _ => {
            log::error!("Transfer process failed due to unknown reason.");
            false
        }
    };
    let Some(t) = m.transfers.remove(&id) else {
        return;
    };
    let result = match (success, t.n_canceled) {
        (true, _) => "done",
        (false, 0) => "failed",
        (false, _) => "canceled",
    };
    let r = m.bus.emit(
        lp,
        MANAGER_PATH,
        MANAGER_INTERFACE,
        "TransferRemoved",
        (id, dbus::Path::from(t.path.as_str()), result),
    );
    if let Err(e) = r {
        log::error!("Cannot emit message: {e}");
    }
    drop(t);
    service::transfer_ended(lp, m);
}

/// systemd's `signal_to_string()`: `TERM`, `KILL`, … or the number.
fn signal_name(signal: i32) -> String {
    Signal::try_from(signal).map_or_else(
        |_| signal.to_string(),
        |s| s.as_str().trim_start_matches("SIG").to_string(),
    )
}

/// A datagram on the progress socket: the percentage goes to `Progress` and
/// `ProgressUpdate` (upstream's interface), the extended fields to `DetailsUpdate` (ours).
fn on_notify(lp: &mut EventLoop<Manager>, m: &mut Manager) {
    let datagram = match m.notify.receive() {
        Ok(Some(d)) => d,
        Ok(None) => return,
        Err(e) => {
            log::warn!("Failed to receive notification message: {e}");
            return;
        }
    };
    let Some(t) = m.transfers.values_mut().find(|t| t.pid() == datagram.pid) else {
        log::warn!("Got notification datagram from unexpected peer, ignoring.");
        return;
    };
    let report = progress::parse(&datagram.text);
    let mut progress_changed = false;
    match report.percent {
        None => {}
        Some(Err(value)) => log::warn!("Got invalid percent value '{value}', ignoring."),
        Some(Ok(percent)) => {
            t.progress = Some(percent);
            log::debug!("Got percentage from client: {percent}%");
            progress_changed = t.progress_sent != Some(percent);
            t.progress_sent = Some(percent);
        }
    }
    let details_changed = report.details.is_some() && report.details != t.details;
    if details_changed {
        t.details = report.details;
    }
    let (id, path, value) = (t.id, t.path.clone(), t.progress_value());
    if progress_changed {
        if let Err(e) = m
            .bus
            .emit(lp, &path, TRANSFER_INTERFACE, "ProgressUpdate", (value,))
        {
            log::warn!("Cannot emit progress update signal, ignoring: {e}");
        }
    }
    if details_changed || (progress_changed && m.transfers[&id].details.is_some()) {
        let args = api::details_update(&m.transfers[&id]);
        if let Err(e) = m
            .bus
            .emit(lp, &path, EXT_TRANSFER_INTERFACE, DETAILS_UPDATE, args)
        {
            log::warn!("Cannot emit details update signal, ignoring: {e}");
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn signal_names_drop_the_prefix() {
        assert_eq!(super::signal_name(libc::SIGKILL), "KILL");
        assert_eq!(super::signal_name(libc::SIGSEGV), "SEGV");
        assert_eq!(super::signal_name(200), "200");
    }
}
