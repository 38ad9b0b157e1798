//! CurlGlue: libcurl's multi-socket interface driven by our event loop.
//!
//! libcurl tells us which sockets to watch (socket callback) and when to call it back
//! (timer callback); we watch those sockets in the loop and report readiness with
//! `curl_multi_socket_action`. Completed transfers are reaped and handed to the owner.
//!
//! Three rules shape this module (style.md §0, §12):
//! * **Never call back up from inside libcurl.** curl-rust's socket and timer closures must
//!   be `Send + 'static`, and libcurl forbids re-entering it from its callbacks, so they only
//!   *queue* what curl asked for ([`Pending`]). After every call into the multi handle
//!   (`add`, `remove`, `action`, `timeout`, `unpause`) [`CurlGlue::flush`] applies the queue
//!   to the loop.
//! * **Watch fds we own.** Older libcurl closes a socket before it tells us to forget it,
//!   and the number may be reused at once; like systemd's 2015 glue we watch a `dup()` of
//!   each socket, closed only when curl says `CURL_POLL_REMOVE`.
//! * **Completions are processed outside libcurl**, after `action()` returned, until the
//!   message queue is empty (decision Q1), and not at all once the loop is exiting.
//!
//! The defaults of every easy handle, and the [`CurlSettings`] they come from (given to
//! [`CurlGlue::new`], never read from the environment here), are in `easy.rs`.

mod easy;

pub use easy::{allow_insecure_redirects, CurlSettings, Transport, MAX_REDIRECTS, PACKAGE_VERSION};

use std::collections::HashMap;
use std::os::fd::{AsRawFd, BorrowedFd, OwnedFd};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use curl::easy::{Easy2, Handler};
use curl::multi::{Easy2Handle, Events, Multi, Socket};

use crate::event::{self, Clock, Enabled, EventLoop, SourceId, TimerAction, EPOLLIN, EPOLLOUT};
use crate::util::error::{Error, Result};

/// The owner of a [`CurlGlue`]: the loop's data. Replaces the C glue's `on_finished` hook
/// and `userdata` pointer.
pub trait CurlHost: Sized + 'static {
    /// The glue this host owns.
    fn glue(&mut self) -> &mut CurlGlue;
    /// A transfer finished (the handle is still attached to the multi handle; the owner
    /// detaches it with [`CurlGlue::remove`]). `token` is the one [`CurlGlue::add`] returned.
    fn on_transfer_done(
        &mut self,
        lp: &mut EventLoop<Self>,
        token: usize,
        result: std::result::Result<(), curl::Error>,
    );
}

/// What curl's callbacks asked for since the last flush. Written only by the socket and
/// timer closures (on the loop thread, from inside libcurl), drained by `flush`.
#[derive(Default)]
struct Pending {
    /// In order: a socket may be removed and its number reused within one call.
    sockets: Vec<(Socket, SocketWant)>,
    /// `Some(None)`: delete the timer; `Some(Some(d))`: call `timeout()` after `d`.
    timer: Option<Option<Duration>>,
}

#[derive(Clone, Copy, Debug)]
enum SocketWant {
    Remove,
    Events(u32),
}

/// One watched curl socket.
struct WatchedSocket {
    /// Our duplicate of curl's socket: what epoll watches.
    dup: OwnedFd,
    source: SourceId,
}

/// The glue. Owners must drop every easy handle they added **before** dropping the glue
/// (curl-rust frees the multi's callbacks with it; see curl-rust PR #645).
pub struct CurlGlue {
    multi: Multi,
    pending: Arc<Mutex<Pending>>,
    /// curl socket → our duplicate and its io source.
    sockets: HashMap<Socket, WatchedSocket>,
    /// The armed "curl-timer" source, if curl asked for one (see [`on_timer`]).
    timer: Option<SourceId>,
    /// Never reused, so a late message can never be taken for a newer transfer.
    next_token: usize,
    /// What every easy handle gets (see `easy.rs`).
    settings: CurlSettings,
}

impl CurlGlue {
    /// A glue with a fresh multi handle, making easy handles with `settings`.
    pub fn new(settings: CurlSettings) -> Result<Self> {
        let pending = Arc::new(Mutex::new(Pending::default()));
        let mut multi = Multi::new();

        let p = pending.clone();
        multi
            .socket_function(move |socket, events, _token| {
                let want = if events.remove() {
                    SocketWant::Remove
                } else {
                    let mut bits = 0;
                    if events.input() || events.input_and_output() {
                        bits |= EPOLLIN;
                    }
                    if events.output() || events.input_and_output() {
                        bits |= EPOLLOUT;
                    }
                    SocketWant::Events(bits)
                };
                // Never panic inside a curl callback (curl-rust would swallow it and
                // silently disable all later callbacks): recover a poisoned lock.
                p.lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .sockets
                    .push((socket, want));
            })
            .map_err(|e| Error::with_message(libc::EIO, e.to_string()))?;

        let p = pending.clone();
        multi
            .timer_function(move |timeout| {
                p.lock().unwrap_or_else(|e| e.into_inner()).timer = Some(timeout);
                true
            })
            .map_err(|e| Error::with_message(libc::EIO, e.to_string()))?;

        Ok(CurlGlue {
            multi,
            pending,
            sockets: HashMap::new(),
            timer: None,
            next_token: 1,
            settings,
        })
    }

    /// `curl_glue_make()`: an easy handle for `url` with the defaults every handle gets:
    /// URL, User-Agent, redirects followed, NOSIGNAL, the low-speed limit, HTTP(S) only
    /// (also for redirects), and the CA bundle and directory of the settings; then what
    /// the request's `transport` adds.
    pub fn make<H: Handler>(
        &self,
        url: &str,
        transport: &Transport,
        handler: H,
    ) -> Result<Easy2<H>> {
        easy::make(&self.settings, transport, url, handler)
    }

    /// Attach `easy` to the multi handle; returns the handle and its token (never reused).
    pub fn add<D: CurlHost, H: Handler>(
        &mut self,
        lp: &mut EventLoop<D>,
        easy: Easy2<H>,
    ) -> Result<(Easy2Handle<H>, usize)> {
        let token = self.next_token;
        self.next_token += 1;
        let r = self.multi.add2(easy);
        self.flush(lp);
        let mut handle = r.map_err(|e| Error::with_message(libc::EIO, e.to_string()))?;
        handle
            .set_token(token)
            .map_err(|e| Error::with_message(libc::EIO, e.to_string()))?;
        Ok((handle, token))
    }

    /// Detach a transfer (finished or not) and get the easy handle back.
    pub fn remove<D: CurlHost, H: Handler>(
        &mut self,
        lp: &mut EventLoop<D>,
        handle: Easy2Handle<H>,
    ) -> Result<Easy2<H>> {
        let r = self.multi.remove2(handle);
        self.flush(lp);
        r.map_err(|e| Error::with_message(libc::EIO, e.to_string()))
    }

    /// Resume a transfer whose write callback returned `WriteError::Pause`.
    pub fn unpause_write<D: CurlHost, H: Handler>(
        &mut self,
        lp: &mut EventLoop<D>,
        handle: &Easy2Handle<H>,
    ) -> Result<()> {
        let r = handle.unpause_write();
        self.flush(lp);
        r.map_err(|e| Error::with_message(libc::EIO, e.to_string()))
    }

    /// Apply what curl's callbacks queued: add, change or drop io sources, arm or disarm
    /// the timer. Called after every call into the multi handle.
    fn flush<D: CurlHost>(&mut self, lp: &mut EventLoop<D>) {
        let (sockets, timer) = {
            let mut p = self.pending.lock().unwrap_or_else(|e| e.into_inner());
            (std::mem::take(&mut p.sockets), p.timer.take())
        };
        for (i, &(socket, want)) in sockets.iter().enumerate() {
            // A socket curl watched and then forgot within the one call (a transfer that
            // failed at once, its connection closed) is not watched at all: curl has
            // closed the number by now, and a dup() of it would fail (or, were the number
            // reused, dup a stranger's fd). A later entry for the same number is a new
            // socket and is applied.
            let forgotten = || {
                sockets[i + 1..]
                    .iter()
                    .any(|&(s, w)| s == socket && matches!(w, SocketWant::Remove))
            };
            if matches!(want, SocketWant::Events(_))
                && !self.sockets.contains_key(&socket)
                && forgotten()
            {
                continue;
            }
            if let Err(e) = self.apply_socket(lp, socket, want) {
                // There is nobody to return this to: curl's callback has long returned.
                // The transfer will then fail by its low-speed limit.
                log::error!("Failed to watch curl socket {socket}: {e}");
            }
        }
        if let Some(timeout) = timer {
            if let Err(e) = self.apply_timer(lp, timeout) {
                log::error!("Failed to arm curl timer: {e}");
            }
        }
    }

    fn apply_socket<D: CurlHost>(
        &mut self,
        lp: &mut EventLoop<D>,
        socket: Socket,
        want: SocketWant,
    ) -> Result<()> {
        match want {
            SocketWant::Remove => {
                if let Some(w) = self.sockets.remove(&socket) {
                    lp.remove(w.source);
                    drop(w.dup);
                }
            }
            SocketWant::Events(events) => {
                if let Some(w) = self.sockets.get(&socket) {
                    lp.set_io_events(w.source, events)?;
                    lp.set_enabled(w.source, Enabled::On)?;
                    return Ok(());
                }
                // SAFETY: the borrow lasts for one fcntl(F_DUPFD_CLOEXEC) and nothing is
                // read or written through it. curl told us about the socket in the call into
                // the multi handle this flush follows; should it have closed the number since
                // (see the module documentation), the kernel answers EBADF, which we report.
                let dup = unsafe { BorrowedFd::borrow_raw(socket) }.try_clone_to_owned()?;
                let source =
                    lp.add_io(dup.as_raw_fd(), events, move |lp, d: &mut D, _, revents| {
                        on_io(lp, d, socket, revents)
                    })?;
                lp.set_description(source, "curl-io");
                self.sockets.insert(socket, WatchedSocket { dup, source });
            }
        }
        Ok(())
    }

    /// curl asked for its timer to fire after `timeout`, or (`None`) not at all: the armed
    /// timer, if any, is replaced by a new one.
    fn apply_timer<D: CurlHost>(
        &mut self,
        lp: &mut EventLoop<D>,
        timeout: Option<Duration>,
    ) -> Result<()> {
        if let Some(t) = self.timer.take() {
            lp.remove(t);
        }
        let Some(timeout) = timeout else {
            return Ok(());
        };
        // Round up to the next millisecond, as the C glue does (+999 µs).
        let deadline = event::now(Clock::Boottime) + timeout.as_micros() as u64 + 999;
        let t = lp.add_timer(Clock::Boottime, deadline, |lp, d: &mut D, me, _| {
            on_timer(lp, d, me)
        })?;
        lp.set_description(t, "curl-timer");
        self.timer = Some(t);
        Ok(())
    }
}

/// An io event on a curl socket: tell curl, then reap.
fn on_io<D: CurlHost>(
    lp: &mut EventLoop<D>,
    d: &mut D,
    socket: Socket,
    revents: u32,
) -> Result<()> {
    let glue = d.glue();
    let mut events = Events::new();
    // ERR/HUP alone map to no bits: curl then finds out by itself, as in the C glue.
    events.input(revents & EPOLLIN != 0);
    events.output(revents & EPOLLOUT != 0);
    let r = glue.multi.action(socket, &events);
    glue.flush(lp);
    if r.is_err() {
        log::debug!("Failed to propagate IO event.");
        return Err(Error::new(libc::EINVAL));
    }
    check_finished(lp, d);
    Ok(())
}

/// curl's timer `me` expired. It fires once: curl arms a new one through `flush` when it
/// wants another call. On failure the loop disables it and the next `apply_timer` removes it.
fn on_timer<D: CurlHost>(lp: &mut EventLoop<D>, d: &mut D, me: SourceId) -> Result<TimerAction> {
    let glue = d.glue();
    let r = glue.multi.timeout();
    glue.flush(lp);
    if r.is_err() {
        log::debug!("Failed to propagate timeout.");
        return Err(Error::new(libc::EINVAL));
    }
    // Unless `flush` already replaced it, this timer is spent (and dropped below).
    if glue.timer == Some(me) {
        glue.timer = None;
    }
    check_finished(lp, d);
    Ok(TimerAction::Drop)
}

/// Hand every finished transfer to the host, until curl's queue is empty (Q1). Messages
/// are collected first, so no host code runs inside `curl_multi_info_read`. Once the loop
/// is exiting nothing more is processed (as current systemd does).
fn check_finished<D: CurlHost>(lp: &mut EventLoop<D>, d: &mut D) {
    loop {
        if lp.exit_requested() {
            return;
        }
        let mut done = Vec::new();
        d.glue().multi.messages(|m| {
            if let (Some(result), Ok(token)) = (m.result(), m.token()) {
                done.push((token, result));
            }
        });
        if done.is_empty() {
            return;
        }
        for (token, result) in done {
            if lp.exit_requested() {
                return;
            }
            d.on_transfer_done(lp, token, result);
        }
    }
}

impl Drop for CurlGlue {
    fn drop(&mut self) {
        // The io sources stay in the loop with closed fds; the loop is being torn down too.
        self.sockets.clear();
    }
}
