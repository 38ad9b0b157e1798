//! The event loop, tested the way sd-event's test-event.c does it: real fds, flags set by
//! handlers, and one `run_once` per assertion so the dispatch order is visible.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::time::Duration;

use systemd_import::event::{
    now, Clock, Enabled, EventLoop, SourceId, TimerAction, EPOLLIN, PRIORITY_IDLE,
    PRIORITY_IMPORTANT, PRIORITY_NORMAL,
};
use systemd_import::util::error::Error;

/// What the handlers saw, in order.
#[derive(Default)]
struct Log {
    fired: Vec<&'static str>,
    ids: Vec<Option<SourceId>>,
    /// fds a handler created and the test uses afterwards.
    fds: Vec<OwnedFd>,
}

fn pipe() -> (OwnedFd, OwnedFd) {
    let mut fds = [0; 2];
    // SAFETY: valid array for two fds.
    assert_eq!(
        unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC | libc::O_NONBLOCK) },
        0
    );
    // SAFETY: fresh fds from pipe2.
    unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) }
}

fn write_byte(fd: &OwnedFd) {
    // SAFETY: one-byte write from a valid buffer.
    assert_eq!(
        unsafe { libc::write(fd.as_raw_fd(), b"x".as_ptr() as *const _, 1) },
        1
    );
}

fn drain(fd: RawFd) {
    let mut buf = [0u8; 64];
    // SAFETY: read into a valid buffer from a non-blocking fd.
    while unsafe { libc::read(fd, buf.as_mut_ptr() as *mut _, buf.len()) } > 0 {}
}

/// A handler that records its name and consumes what made it ready (as real handlers do:
/// with level-triggered epoll an undrained fd is ready again on the next iteration).
fn io_recorder(
    name: &'static str,
    fd: RawFd,
) -> impl FnMut(&mut EventLoop<Log>, &mut Log, SourceId, u32) -> Result<(), Error> {
    move |_, log, _, _| {
        log.fired.push(name);
        drain(fd);
        Ok(())
    }
}

const NO_WAIT: Option<Duration> = Some(Duration::ZERO);

#[test]
fn one_source_per_iteration_in_priority_order() {
    let mut lp = EventLoop::<Log>::new().unwrap();
    let mut log = Log::default();
    let (ra, wa) = pipe();
    let (rb, wb) = pipe();
    let (rc, wc) = pipe();
    let a = lp
        .add_io(ra.as_raw_fd(), EPOLLIN, io_recorder("a", ra.as_raw_fd()))
        .unwrap();
    let b = lp
        .add_io(rb.as_raw_fd(), EPOLLIN, io_recorder("b", rb.as_raw_fd()))
        .unwrap();
    let c = lp
        .add_io(rc.as_raw_fd(), EPOLLIN, io_recorder("c", rc.as_raw_fd()))
        .unwrap();
    lp.set_priority(a, PRIORITY_IDLE).unwrap();
    lp.set_priority(b, PRIORITY_NORMAL).unwrap();
    lp.set_priority(c, PRIORITY_IMPORTANT).unwrap();
    // Nothing ready: nothing runs.
    assert!(!lp.run_once(&mut log, NO_WAIT).unwrap());
    write_byte(&wa);
    write_byte(&wb);
    write_byte(&wc);
    for (n, expected) in ["c", "b", "a"].iter().enumerate() {
        assert!(lp.run_once(&mut log, NO_WAIT).unwrap());
        assert_eq!(log.fired.len(), n + 1, "exactly one dispatch per iteration");
        assert_eq!(log.fired[n], *expected);
    }
    // All drained: the loop is quiet.
    assert!(!lp.run_once(&mut log, NO_WAIT).unwrap());
    assert_eq!(log.fired.len(), 3);
}

#[test]
fn an_undrained_fd_stays_ready_level_triggered() {
    let mut lp = EventLoop::<Log>::new().unwrap();
    let mut log = Log::default();
    let (r, w) = pipe();
    lp.add_io(r.as_raw_fd(), EPOLLIN, |_, log: &mut Log, _, revents| {
        assert_ne!(revents & EPOLLIN, 0);
        log.fired.push("peek");
        Ok(())
    })
    .unwrap();
    write_byte(&w);
    for n in 1..=3 {
        assert!(lp.run_once(&mut log, NO_WAIT).unwrap());
        assert_eq!(log.fired.len(), n);
    }
    drain(r.as_raw_fd());
    assert!(!lp.run_once(&mut log, NO_WAIT).unwrap());
}

#[test]
fn equal_priorities_run_in_the_order_they_became_pending() {
    let mut lp = EventLoop::<Log>::new().unwrap();
    let mut log = Log::default();
    let (ra, wa) = pipe();
    let (rb, wb) = pipe();
    lp.add_io(ra.as_raw_fd(), EPOLLIN, io_recorder("a", ra.as_raw_fd()))
        .unwrap();
    lp.add_io(rb.as_raw_fd(), EPOLLIN, io_recorder("b", rb.as_raw_fd()))
        .unwrap();
    write_byte(&wb);
    // b becomes pending first; a a wait later.
    let d = lp.add_defer(|_, log, _| {
        log.fired.push("defer");
        Ok(())
    });
    d.unwrap();
    assert!(lp.run_once(&mut log, NO_WAIT).unwrap());
    write_byte(&wa);
    assert!(lp.run_once(&mut log, NO_WAIT).unwrap());
    assert!(lp.run_once(&mut log, NO_WAIT).unwrap());
    let order: Vec<_> = log.fired.clone();
    let pos = |n| order.iter().position(|x| *x == n).unwrap();
    assert!(pos("b") < pos("a"), "{order:?}");
}

#[test]
fn oneshot_disables_itself_and_can_be_reenabled() {
    let mut lp = EventLoop::<Log>::new().unwrap();
    let mut log = Log::default();
    let (r, w) = pipe();
    // This handler leaves the byte in the pipe, so the fd stays readable throughout.
    let id = lp
        .add_io(r.as_raw_fd(), EPOLLIN, |_, log: &mut Log, _, _| {
            log.fired.push("io");
            Ok(())
        })
        .unwrap();
    lp.set_enabled(id, Enabled::Oneshot).unwrap();
    write_byte(&w);
    assert!(lp.run_once(&mut log, NO_WAIT).unwrap());
    assert_eq!(lp.enabled(id), Some(Enabled::Off));
    // Still readable but off: nothing runs.
    assert!(!lp.run_once(&mut log, NO_WAIT).unwrap());
    assert_eq!(log.fired, ["io"]);
    lp.set_enabled(id, Enabled::Oneshot).unwrap();
    assert!(lp.run_once(&mut log, NO_WAIT).unwrap());
    assert_eq!(log.fired, ["io", "io"]);
    assert_eq!(lp.enabled(id), Some(Enabled::Off));
}

#[test]
fn a_source_may_remove_itself_and_another_pending_source() {
    let mut lp = EventLoop::<Log>::new().unwrap();
    let mut log = Log::default();
    let (ra, wa) = pipe();
    let (rb, wb) = pipe();
    let b = lp
        .add_io(rb.as_raw_fd(), EPOLLIN, io_recorder("b", rb.as_raw_fd()))
        .unwrap();
    lp.set_priority(b, PRIORITY_IDLE).unwrap();
    let a = lp
        .add_io(ra.as_raw_fd(), EPOLLIN, move |lp, log: &mut Log, me, _| {
            log.fired.push("a");
            assert!(lp.remove(me), "removing myself works");
            assert!(lp.remove(b), "removing the pending b works");
            Ok(())
        })
        .unwrap();
    lp.set_priority(a, PRIORITY_IMPORTANT).unwrap();
    write_byte(&wa);
    write_byte(&wb);
    // Both become pending in the same wait; a runs first and removes both.
    assert!(lp.run_once(&mut log, NO_WAIT).unwrap());
    assert!(!lp.exists(a));
    assert!(!lp.exists(b));
    for _ in 0..3 {
        assert!(!lp.run_once(&mut log, NO_WAIT).unwrap());
    }
    assert_eq!(log.fired, ["a"], "the removed pending source never fired");
}

#[test]
fn a_stale_event_never_reaches_a_reused_fd_or_slot() {
    // a (important) and b (idle) both become pending; a removes b, puts a new pipe under
    // b's fd number, and watches it with c, which gets b's slot. b must never fire, and c
    // must not inherit b's pending state.
    let mut lp = EventLoop::<Log>::new().unwrap();
    let mut log = Log::default();
    let (ra, wa) = pipe();
    let (rb, wb) = pipe();
    let rb_num = rb.as_raw_fd();
    let b = lp
        .add_io(rb_num, EPOLLIN, io_recorder("b", rb_num))
        .unwrap();
    lp.set_priority(b, PRIORITY_IDLE).unwrap();
    let mut rb_holder = Some(rb);
    let a = lp
        .add_io(ra.as_raw_fd(), EPOLLIN, move |lp, log: &mut Log, _, _| {
            log.fired.push("a");
            drain(ra.as_raw_fd());
            lp.remove(b);
            // Reuse b's fd number for the new pipe's read end. dup3 closes b's pipe and
            // installs the new one under the number in one step: closing and then opening
            // could hand the free number to another test's thread in between.
            let (new_r, w2) = pipe();
            let r2 = rb_holder.take().unwrap();
            // SAFETY: `rb_num` is owned by `r2`, which owns the new pipe's read end after
            // the call; `new_r` stays open across it.
            let rc = unsafe { libc::dup3(new_r.as_raw_fd(), rb_num, libc::O_CLOEXEC) };
            assert_eq!(rc, rb_num);
            drop(new_r);
            let c = lp
                .add_io(rb_num, EPOLLIN, io_recorder("c", rb_num))
                .unwrap();
            log.ids.push(Some(c));
            log.fds.push(r2);
            log.fds.push(w2);
            Ok(())
        })
        .unwrap();
    lp.set_priority(a, PRIORITY_IMPORTANT).unwrap();
    write_byte(&wa);
    write_byte(&wb);
    assert!(lp.run_once(&mut log, NO_WAIT).unwrap());
    let c = log.ids[0].unwrap();
    assert_ne!(Some(c), Some(b), "a reused slot gets a new generation");
    // c's pipe is empty: nothing may fire.
    for _ in 0..3 {
        assert!(!lp.run_once(&mut log, NO_WAIT).unwrap());
    }
    assert_eq!(log.fired, ["a"]);
    // Data on the new pipe reaches c, never b.
    write_byte(&log.fds[1]);
    assert!(lp.run_once(&mut log, NO_WAIT).unwrap());
    assert_eq!(log.fired, ["a", "c"]);
    drop(wb);
}

#[test]
fn timers_fire_in_deadline_order_including_past_and_zero_deadlines() {
    let mut lp = EventLoop::<Log>::new().unwrap();
    let mut log = Log::default();
    let t0 = now(Clock::Monotonic);
    let timer = |name: &'static str| {
        move |_: &mut EventLoop<Log>, log: &mut Log, _, _| {
            log.fired.push(name);
            Ok(TimerAction::Drop)
        }
    };
    lp.add_timer(Clock::Monotonic, t0 + 30_000, timer("30ms"))
        .unwrap();
    lp.add_timer(
        Clock::Boottime,
        now(Clock::Boottime) + 10_000,
        timer("10ms-boottime"),
    )
    .unwrap();
    lp.add_timer(Clock::Monotonic, 0, timer("epoch")).unwrap();
    lp.add_timer(Clock::Monotonic, t0 - 1, timer("past"))
        .unwrap();
    lp.add_timer(Clock::Monotonic, t0 + 20_000, timer("20ms"))
        .unwrap();
    while log.fired.len() < 5 {
        lp.run_once(&mut log, None).unwrap();
    }
    // Expired timers fire in the order they were found pending (both at once: deadline
    // order); the future ones in deadline order.
    assert_eq!(&log.fired[2..], ["10ms-boottime", "20ms", "30ms"]);
    assert!(log.fired[..2].contains(&"epoch") && log.fired[..2].contains(&"past"));
    assert!(now(Clock::Monotonic) >= t0 + 30_000, "no timer fires early");
}

#[test]
fn a_sub_millisecond_deadline_waits_instead_of_spinning() {
    // 1.5 ms away: the wait must round up to 2 ms, so the first iteration already fires it.
    // Rounding down would wake after 1 ms with nothing to do (a busy loop in the limit).
    let mut lp = EventLoop::<Log>::new().unwrap();
    let mut log = Log::default();
    for _ in 0..20 {
        let deadline = now(Clock::Monotonic) + 1_500;
        lp.add_timer(Clock::Monotonic, deadline, |_, log, _, _| {
            log.fired.push("t");
            Ok(TimerAction::Drop)
        })
        .unwrap();
        let before = log.fired.len();
        assert!(
            lp.run_once(&mut log, None).unwrap(),
            "the first wait reaches the deadline"
        );
        assert_eq!(log.fired.len(), before + 1);
    }
}

#[test]
fn a_repeating_timer_is_rearmed_by_its_callback() {
    let mut lp = EventLoop::<u32>::new().unwrap();
    let mut count = 0u32;
    let id = lp
        .add_timer(
            Clock::Monotonic,
            now(Clock::Monotonic),
            |lp, count: &mut u32, _, deadline| {
                *count += 1;
                if *count < 3 {
                    Ok(TimerAction::ToInstant(deadline + 1_000))
                } else {
                    lp.exit(7);
                    Ok(TimerAction::Drop)
                }
            },
        )
        .unwrap();
    assert_eq!(lp.run(&mut count).unwrap(), 7);
    assert_eq!(count, 3);
    assert!(!lp.exists(id), "a dropped timer is removed");
}

#[test]
fn a_timer_repeats_every_duration_until_it_drops_itself() {
    let mut lp = EventLoop::<Vec<u64>>::new().unwrap();
    let mut fired = Vec::new();
    let start = now(Clock::Boottime);
    let id = lp
        .add_timer_in(
            Clock::Boottime,
            Duration::from_millis(2),
            |lp, fired: &mut Vec<u64>, _, deadline| {
                assert!(lp.now(Clock::Boottime) >= deadline, "never early");
                fired.push(deadline);
                if fired.len() < 3 {
                    return Ok(TimerAction::ToDuration(Duration::from_millis(2)));
                }
                lp.exit(0);
                Ok(TimerAction::Drop)
            },
        )
        .unwrap();
    assert_eq!(lp.run(&mut fired).unwrap(), 0);
    assert_eq!(fired.len(), 3);
    assert!(fired[0] >= start + 2_000);
    for pair in fired.windows(2) {
        assert!(pair[1] >= pair[0] + 2_000, "{fired:?}");
    }
    assert!(!lp.exists(id));
}

#[test]
fn a_disabled_timer_keeps_its_deadline_and_fires_once_reenabled() {
    let mut lp = EventLoop::<Log>::new().unwrap();
    let mut log = Log::default();
    let id = lp
        .add_timer(Clock::Monotonic, 0, |_, log: &mut Log, _, _| {
            log.fired.push("t");
            Ok(TimerAction::ToInstant(u64::MAX))
        })
        .unwrap();
    lp.set_enabled(id, Enabled::Off).unwrap();
    assert!(!lp.run_once(&mut log, NO_WAIT).unwrap(), "off: not due");
    lp.set_enabled(id, Enabled::On).unwrap();
    assert!(
        lp.run_once(&mut log, NO_WAIT).unwrap(),
        "on again: the past deadline fires"
    );
    assert_eq!(log.fired, ["t"]);
    // Re-armed for "never": nothing more.
    assert!(!lp.run_once(&mut log, NO_WAIT).unwrap());
    assert_eq!(lp.enabled(id), Some(Enabled::On));
}

#[test]
fn a_failing_timer_is_disabled_not_rearmed() {
    let mut lp = EventLoop::<Log>::new().unwrap();
    let mut log = Log::default();
    let id = lp
        .add_timer(Clock::Monotonic, 0, |_, log: &mut Log, _, _| {
            log.fired.push("t");
            Err(Error::new(libc::EIO))
        })
        .unwrap();
    assert!(lp.run_once(&mut log, NO_WAIT).unwrap());
    assert_eq!(lp.enabled(id), Some(Enabled::Off));
    assert!(!lp.run_once(&mut log, NO_WAIT).unwrap());
    assert_eq!(log.fired, ["t"]);
}

#[test]
fn exit_runs_exit_sources_by_priority_then_returns_the_code() {
    let mut lp = EventLoop::<Log>::new().unwrap();
    let mut log = Log::default();
    let late = lp
        .add_exit(|_, log, _| {
            log.fired.push("exit-idle");
            Ok(())
        })
        .unwrap();
    lp.set_priority(late, PRIORITY_IDLE).unwrap();
    let early = lp
        .add_exit(|_, log, _| {
            log.fired.push("exit-important");
            Ok(())
        })
        .unwrap();
    lp.set_priority(early, PRIORITY_IMPORTANT).unwrap();
    let (r, w) = pipe();
    lp.add_io(r.as_raw_fd(), EPOLLIN, |lp, log, _, _| {
        log.fired.push("io");
        lp.exit(42);
        Ok(())
    })
    .unwrap();
    write_byte(&w);
    assert_eq!(lp.run(&mut log).unwrap(), 42);
    assert_eq!(log.fired, ["io", "exit-important", "exit-idle"]);
    assert!(lp.is_finished());
    // After finishing, nothing runs any more even though the pipe is readable.
    assert!(!lp.run_once(&mut log, NO_WAIT).unwrap());
    assert_eq!(log.fired.len(), 3);
}

#[test]
fn exit_stops_normal_dispatch() {
    let mut lp = EventLoop::<Log>::new().unwrap();
    let mut log = Log::default();
    let (r, w) = pipe();
    let id = lp
        .add_io(r.as_raw_fd(), EPOLLIN, |lp, log, _, _| {
            log.fired.push("io");
            lp.exit(1);
            Ok(())
        })
        .unwrap();
    lp.set_priority(id, PRIORITY_IMPORTANT).unwrap();
    lp.add_defer(|_, log, _| {
        log.fired.push("defer");
        Ok(())
    })
    .unwrap();
    write_byte(&w);
    assert!(lp.run_once(&mut log, NO_WAIT).unwrap());
    assert!(lp.exit_requested());
    assert_eq!(lp.run(&mut log).unwrap(), 1);
    assert_eq!(
        log.fired,
        ["io"],
        "a pending defer does not run after exit()"
    );
}

#[test]
fn a_failing_callback_disables_only_its_source() {
    let mut lp = EventLoop::<Log>::new().unwrap();
    let mut log = Log::default();
    let (r, w) = pipe();
    let bad = lp
        .add_io(r.as_raw_fd(), EPOLLIN, |_, log, _, _| {
            log.fired.push("bad");
            Err(Error::new(libc::EIO))
        })
        .unwrap();
    write_byte(&w);
    assert!(lp.run_once(&mut log, NO_WAIT).unwrap());
    assert_eq!(lp.enabled(bad), Some(Enabled::Off));
    assert!(!lp.run_once(&mut log, NO_WAIT).unwrap());
    assert_eq!(log.fired, ["bad"]);
}

#[test]
fn signals_arrive_through_signalfd() {
    let mut lp = EventLoop::<Log>::new().unwrap();
    let mut log = Log::default();
    lp.add_signal(libc::SIGUSR1, |lp, log, _, si| {
        assert_eq!(si.ssi_signo, libc::SIGUSR1 as u32);
        log.fired.push("usr1");
        lp.exit(libc::EINTR);
        Ok(())
    })
    .unwrap();
    // Thread-directed, so it stays pending on this thread (where add_signal blocked it)
    // rather than being delivered to another test thread with the default action.
    // SAFETY: signalling our own thread.
    assert_eq!(
        unsafe { libc::pthread_kill(libc::pthread_self(), libc::SIGUSR1) },
        0
    );
    assert_eq!(lp.run(&mut log).unwrap(), libc::EINTR);
    assert_eq!(log.fired, ["usr1"]);
}

#[test]
fn defer_sources_run_on_the_next_iteration_and_are_oneshot() {
    let mut lp = EventLoop::<Log>::new().unwrap();
    let mut log = Log::default();
    let d = lp
        .add_defer(|_, log, _| {
            log.fired.push("defer");
            Ok(())
        })
        .unwrap();
    assert!(
        lp.run_once(&mut log, None).unwrap(),
        "a pending defer means no waiting"
    );
    assert!(!lp.run_once(&mut log, NO_WAIT).unwrap());
    assert_eq!(log.fired, ["defer"]);
    lp.set_enabled(d, Enabled::On).unwrap();
    assert!(lp.run_once(&mut log, NO_WAIT).unwrap());
    assert!(lp.run_once(&mut log, NO_WAIT).unwrap());
    assert_eq!(log.fired, ["defer", "defer", "defer"]);
}

#[test]
fn tasks_deliver_their_result_on_the_loop_thread() {
    let mut lp = EventLoop::<Vec<u64>>::new().unwrap();
    let mut results = Vec::new();
    let loop_thread = std::thread::current().id();
    let _handle = lp
        .spawn_task(
            "sum",
            |_cancel| (1..=100u64).sum::<u64>(),
            move |lp, results: &mut Vec<u64>, sum| {
                assert_eq!(std::thread::current().id(), loop_thread);
                results.push(sum);
                lp.exit(0);
            },
        )
        .unwrap();
    assert_eq!(lp.run(&mut results).unwrap(), 0);
    assert_eq!(results, [5050]);
}

#[test]
fn dropping_a_task_handle_cancels_and_joins_without_calling_back() {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;
    let mut lp = EventLoop::<Vec<&'static str>>::new().unwrap();
    let mut log = Vec::new();
    let stopped = Arc::new(AtomicBool::new(false));
    let stopped2 = stopped.clone();
    let handle = lp
        .spawn_task(
            "spin",
            move |cancel| {
                while !cancel.load(Ordering::Acquire) {
                    std::thread::yield_now();
                }
                stopped2.store(true, Ordering::Release);
            },
            |_, log: &mut Vec<&'static str>, ()| log.push("done"),
        )
        .unwrap();
    drop(handle);
    assert!(
        stopped.load(Ordering::Acquire),
        "the work ran its cleanup before drop returned"
    );
    for _ in 0..3 {
        lp.run_once(&mut log, NO_WAIT).unwrap();
    }
    assert!(log.is_empty(), "no callback after the handle was dropped");
}
