//! The importer lifecycle, written once for every importer (tar, raw, dkr, oci):
//!
//! * **finish once** ([`finish`], the C `*_import_finish()` plus its `on_finished`): the
//!   first call ends the pull: the importer's own [`on_finish`](Importer::on_finish),
//!   then [`cancel_all`], then "Operation completed successfully." or the error's errno
//!   as the loop's exit code. Later calls (a late completion, a second failure) do
//!   nothing;
//! * **the progress timer**: every second, while it runs, the importer's
//!   [`report_progress`](Importer::report_progress), which sends `X_IMPORT_PROGRESS=`
//!   through [`Lifecycle::report_progress`] when the value changed (v219), or with our
//!   extended fields (bytes, rate, layers: [`crate::util::progress`]) through
//!   [`Lifecycle::report_details`], which computes the rate from the bytes it is given;
//! * **cancel all** ([`cancel_all`]): every job still running is stopped, the progress
//!   timer removed and the running step's task told to stop (it is joined when the
//!   importer is dropped);
//! * **steps as tasks** ([`run_step`]): blocking work after the downloads (gpg, a qcow2
//!   conversion, a local copy) runs on a task; its result continues the pull on the loop
//!   thread, and an error finishes it.
//!
//! The state all this needs is a [`Lifecycle`], which each importer owns and lends out
//! through [`Importer::lifecycle`].

use std::sync::atomic::AtomicBool;
use std::time::Duration;

use super::Importer;
use crate::event::{Clock, EventLoop, SourceId, TaskHandle, TimerAction};
use crate::log_error_errno;
use crate::util::error::Result;
use crate::util::format::USEC_PER_SEC;
use crate::util::notify::{self, LastProgress};
use crate::util::progress::{Details, LayerProgress};

/// How often the progress timer asks the importer for its progress.
const PROGRESS_INTERVAL: Duration = Duration::from_secs(1);

/// An importer's lifecycle state. Dropping it cancels and joins the running step's task,
/// so an importer declares it before the temporary files that task may write.
#[derive(Default)]
pub struct Lifecycle {
    /// The running step's task, between [`run_step`] and its result.
    task: Option<TaskHandle>,
    /// The progress timer, between [`Lifecycle::start_progress_timer`] and
    /// [`Lifecycle::stop_progress_timer`] (or the end of the pull).
    progress_timer: Option<SourceId>,
    /// The last value sent as `X_IMPORT_PROGRESS=`, with the extended fields sent along.
    last_sent: LastProgress,
    /// The importer's latest extended fields ([`Lifecycle::report_details`]), sent again
    /// with the percentages of later milestones.
    details: Details,
    /// The bytes of the previous [`Lifecycle::report_details`] and when (µs,
    /// CLOCK_MONOTONIC): the rate is measured between two reports.
    rate_sample: Option<(u64, u64)>,
    /// Set by the first [`finish`].
    finished: bool,
}

impl Lifecycle {
    pub fn new() -> Self {
        Self::default()
    }

    /// Whether [`finish`] ran: the pull is over.
    pub fn is_finished(&self) -> bool {
        self.finished
    }

    /// Whether a step's task is running.
    pub fn step_running(&self) -> bool {
        self.task.is_some()
    }

    /// Send `X_IMPORT_PROGRESS=percent` to systemd-importd (with the extended fields last
    /// reported) unless nothing changed since the last datagram.
    pub fn report_progress(&mut self, percent: u32) {
        if self.last_progress() != Some(percent.min(100)) {
            log::debug!("Combined progress {percent}%");
        }
        notify::progress(&mut self.last_sent, percent, &self.details);
    }

    /// [`report_progress`](Self::report_progress) with what the importer knows beyond the
    /// percentage: bytes received and expected, and its layers (pull-oci). The rate is
    /// the bytes received since the previous call over the time since, averaged with the
    /// previous rate; it is left out once every byte expected has arrived.
    pub fn report_details(
        &mut self,
        percent: u32,
        bytes: Option<(u64, Option<u64>)>,
        layers: Vec<LayerProgress>,
    ) {
        let now = crate::event::now(Clock::Monotonic);
        let rate = match (bytes, self.rate_sample) {
            (Some((done, total)), _) if total.is_some_and(|t| done >= t) => None,
            (Some((done, _)), Some((then, before))) if now > then => {
                let measured = u128::from(done.saturating_sub(before)) * u128::from(USEC_PER_SEC)
                    / u128::from(now - then);
                let measured = u64::try_from(measured).unwrap_or(u64::MAX);
                Some(self.details.rate.map_or(measured, |r| r / 2 + measured / 2))
            }
            _ => self.details.rate,
        };
        self.rate_sample = bytes.map(|(done, _)| (now, done));
        self.details = Details {
            bytes,
            rate,
            layers,
        };
        self.report_progress(percent);
    }

    /// The value sent last, if any.
    pub fn last_progress(&self) -> Option<u32> {
        self.last_sent.as_ref().map(|(p, _)| *p)
    }

    /// Call the importer's [`report_progress`](Importer::report_progress) every second
    /// until [`stop_progress_timer`](Self::stop_progress_timer) or the end of the pull.
    pub fn start_progress_timer<D: Importer>(&mut self, lp: &mut EventLoop<D>) -> Result<()> {
        self.stop_progress_timer(lp);
        let id = lp.add_timer_in(Clock::Monotonic, PROGRESS_INTERVAL, |_, d: &mut D, _, _| {
            d.report_progress();
            Ok(TimerAction::ToDuration(PROGRESS_INTERVAL))
        })?;
        lp.set_description(id, "import-progress");
        self.progress_timer = Some(id);
        Ok(())
    }

    /// Stop the progress timer, if it runs.
    pub fn stop_progress_timer<D: 'static>(&mut self, lp: &mut EventLoop<D>) {
        if let Some(id) = self.progress_timer.take() {
            lp.remove(id);
        }
    }
}

/// End the pull with `result`, once (see the module documentation). Failures were logged
/// where they happened.
pub fn finish<D: Importer>(importer: &mut D, lp: &mut EventLoop<D>, result: Result<()>) {
    let lifecycle = importer.lifecycle();
    if lifecycle.finished {
        return;
    }
    lifecycle.finished = true;
    importer.on_finish(lp, &result);
    cancel_all(importer, lp);
    match result {
        Ok(()) => {
            log::info!("Operation completed successfully.");
            lp.exit(0);
        }
        Err(e) => lp.exit(e.errno()),
    }
}

/// Stop every job that still runs, the progress timer and the running step's task.
pub fn cancel_all<D: Importer>(importer: &mut D, lp: &mut EventLoop<D>) {
    let (glue, jobs) = importer.glue_and_jobs();
    jobs.cancel_all(lp, glue);
    let lifecycle = importer.lifecycle();
    lifecycle.stop_progress_timer(lp);
    if let Some(task) = &lifecycle.task {
        task.cancel();
    }
}

/// Run `work` as the importer's current step on a task named `name`; with its result,
/// `next` continues the pull on the loop thread, and an error finishes it. Nothing
/// continues once the pull finished meanwhile.
pub fn run_step<D, T, W>(
    importer: &mut D,
    lp: &mut EventLoop<D>,
    name: &str,
    work: W,
    next: impl FnOnce(&mut D, &mut EventLoop<D>, T) + 'static,
) where
    D: Importer,
    T: Send + 'static,
    W: FnOnce(&AtomicBool) -> Result<T> + Send + 'static,
{
    let spawned = lp.spawn_task(name, work, move |lp, importer: &mut D, result| {
        importer.lifecycle().task = None;
        if importer.lifecycle().finished {
            return;
        }
        match result {
            Ok(value) => next(importer, lp, value),
            Err(e) => finish(importer, lp, Err(e)),
        }
    });
    match spawned {
        Ok(task) => importer.lifecycle().task = Some(task),
        Err(e) => {
            let e = log_error_errno!(e.clone(), "Failed to start {} thread: {}", name, e);
            finish(importer, lp, Err(e));
        }
    }
}
