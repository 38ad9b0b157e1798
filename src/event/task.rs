//! Tasks: blocking work (disk, CPU, child processes) on a thread of its own, with the result
//! delivered to a callback on the loop thread.
//!
//! The loop thread must never wait on disk or CPU work: a local copy of a multi-GiB image, a
//! qcow2 conversion or a gpg run would otherwise delay every transfer and the SIGINT
//! handler. A task runs the work on a thread and signals an eventfd when done; the loop
//! picks the result up like any other io event.
//!
//! The owner keeps the [`TaskHandle`]. Dropping it asks the work to stop (the work polls the
//! `&AtomicBool` it is given) and **joins the thread**, so temporary files the work created
//! are gone by the time the owner's own cleanup runs; the callback is then never called.

use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use nix::sys::eventfd::EventFd;

use super::event_loop::EventLoop;
use super::sys::{self, EPOLLIN};
use crate::util::error::{Error, Result};

struct Shared<T> {
    /// Set by the owner to ask the work to stop early.
    cancel: AtomicBool,
    /// Set when the handle was dropped: the result is no longer wanted.
    detached: AtomicBool,
    /// Written once by the worker thread, taken by the loop callback.
    result: Mutex<Option<std::thread::Result<T>>>,
    /// Becomes readable when `result` is set.
    wake: EventFd,
}

/// Owner's handle on a running task. Dropping it cancels and joins.
pub struct TaskHandle {
    /// Sets the work's cancel flag; with `true`, also drops interest in the result.
    cancel: Box<dyn Fn(bool) + Send + Sync>,
    thread: Option<JoinHandle<()>>,
}

impl TaskHandle {
    /// Ask the work to stop early (it sees the flag it was given turn true).
    pub fn cancel(&self) {
        (self.cancel)(false);
    }
}

impl Drop for TaskHandle {
    fn drop(&mut self) {
        (self.cancel)(true);
        if let Some(t) = self.thread.take() {
            // The work must return promptly once cancelled; joining makes its cleanup
            // (RAII guards for temporary files) complete before the owner's own.
            let _ = t.join();
        }
    }
}

impl<D: 'static> EventLoop<D> {
    /// Run `work` on a new thread named `name`; when it returns, `done` runs on the loop
    /// thread with its result (unless the handle was dropped first).
    pub fn spawn_task<T, W, F>(&mut self, name: &str, work: W, done: F) -> Result<TaskHandle>
    where
        T: Send + 'static,
        W: FnOnce(&AtomicBool) -> T + Send + 'static,
        F: FnOnce(&mut EventLoop<D>, &mut D, T) + 'static,
    {
        let shared = Arc::new(Shared::<T> {
            cancel: AtomicBool::new(false),
            detached: AtomicBool::new(false),
            result: Mutex::new(None),
            wake: sys::event_fd()?,
        });

        let mut done = Some(done);
        let cb_shared = shared.clone();
        let wake_fd = shared.wake.as_raw_fd();
        let source = self.add_io(wake_fd, EPOLLIN, move |lp, data, id, _| {
            // Reset the counter; EAGAIN (nothing written yet) is fine too.
            let _ = cb_shared.wake.read();
            let result = cb_shared
                .result
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .take();
            let Some(result) = result else {
                return Ok(());
            };
            lp.remove(id);
            let result = match result {
                Ok(r) => r,
                Err(panic) => std::panic::resume_unwind(panic),
            };
            if !cb_shared.detached.load(Ordering::Acquire) {
                if let Some(done) = done.take() {
                    done(lp, data, result);
                }
            }
            Ok(())
        })?;
        self.set_description(source, name);

        let thread_shared = shared.clone();
        let thread = std::thread::Builder::new()
            .name(name.chars().take(15).collect())
            .spawn(move || {
                // Tasks return their errors as values; a panic is a bug. Re-raise it on the
                // loop thread rather than leaving the loop waiting for a result forever.
                let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    work(&thread_shared.cancel)
                }));
                *thread_shared
                    .result
                    .lock()
                    .unwrap_or_else(|p| p.into_inner()) = Some(result);
                // Cannot fail: the counter is far from its maximum.
                let _ = thread_shared.wake.write(1);
            })
            .map_err(|e| {
                self.remove(source);
                Error::from(e)
            })?;

        let cancel_shared = shared;
        Ok(TaskHandle {
            cancel: Box::new(move |detach| {
                if detach {
                    cancel_shared.detached.store(true, Ordering::Release);
                }
                cancel_shared.cancel.store(true, Ordering::Release);
            }),
            thread: Some(thread),
        })
    }
}
