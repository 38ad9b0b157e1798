//! Timers: what a timer's callback returns ([`TimerAction`]) and the deadline heap the loop
//! waits on ([`TimerHeap`]), calloop-style.
//!
//! Each clock has a `BinaryHeap` of armed deadlines, earliest first. An entry carries a
//! sequence number; the timer source remembers the number of its current entry, and an
//! entry whose number no longer matches (the timer was re-armed, disabled or removed) is
//! dead and skipped when it reaches the top. Dead entries are also swept out once they
//! outnumber the live ones, so a timer re-armed often (curl's) cannot grow the heap.

use std::cmp::Ordering;
use std::collections::BinaryHeap;
use std::time::Duration;

use super::source::SourceId;
use super::sys::Clock;

/// What happens to a timer after its callback returned.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum TimerAction {
    /// The timer is removed; its id goes stale.
    Drop,
    /// Fire again at this deadline (absolute µs on the timer's clock).
    ToInstant(u64),
    /// Fire again this long after the current iteration's timestamp
    /// ([`EventLoop::now`](super::EventLoop::now) on the timer's clock).
    ToDuration(Duration),
}

/// `d` in µs, saturating (a deadline that far away is "never" in practice).
pub(super) fn duration_usec(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

/// One armed deadline.
#[derive(PartialEq, Eq, Debug)]
pub(super) struct Deadline {
    pub(super) usec: u64,
    /// Unique per arming; the source keeps the number of its live entry.
    pub(super) seq: u64,
    pub(super) id: SourceId,
}

/// Reversed, so that `BinaryHeap` (a max-heap) pops the earliest deadline first; equal
/// deadlines pop in the order they were armed.
impl Ord for Deadline {
    fn cmp(&self, other: &Self) -> Ordering {
        (other.usec, other.seq).cmp(&(self.usec, self.seq))
    }
}

impl PartialOrd for Deadline {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

/// The armed deadlines of both clocks. Whether an entry is still live is the loop's to
/// say (it knows the sources): every method that may meet dead entries takes `live`.
pub(super) struct TimerHeap {
    monotonic: BinaryHeap<Deadline>,
    boottime: BinaryHeap<Deadline>,
    last_seq: u64,
    /// Entries known to be dead but still in a heap.
    dead: usize,
}

impl TimerHeap {
    pub(super) fn new() -> Self {
        TimerHeap {
            monotonic: BinaryHeap::new(),
            boottime: BinaryHeap::new(),
            last_seq: 0,
            dead: 0,
        }
    }

    fn heap(&mut self, clock: Clock) -> &mut BinaryHeap<Deadline> {
        match clock {
            Clock::Monotonic => &mut self.monotonic,
            Clock::Boottime => &mut self.boottime,
        }
    }

    /// Arm timer `id` for `usec` on `clock`; returns the entry's sequence number (never 0).
    pub(super) fn arm(&mut self, clock: Clock, usec: u64, id: SourceId) -> u64 {
        self.last_seq += 1;
        let seq = self.last_seq;
        self.heap(clock).push(Deadline { usec, seq, id });
        seq
    }

    /// An armed entry was given up (re-armed, disabled, removed) and is now dead. Sweeps the
    /// heaps once dead entries are the majority.
    pub(super) fn forget(&mut self, live: impl Fn(&Deadline) -> bool) {
        self.dead += 1;
        let len = self.monotonic.len() + self.boottime.len();
        if len > 64 && self.dead * 2 > len {
            self.monotonic.retain(&live);
            self.boottime.retain(&live);
            self.dead = 0;
        }
    }

    /// The earliest live deadline on `clock` (dead entries on top are dropped).
    pub(super) fn next_deadline(
        &mut self,
        clock: Clock,
        live: impl Fn(&Deadline) -> bool,
    ) -> Option<u64> {
        self.prune(clock, &live);
        self.heap(clock).peek().map(|d| d.usec)
    }

    /// Take the earliest live entry of `clock` if its deadline is at or before `now`.
    pub(super) fn pop_expired(
        &mut self,
        clock: Clock,
        now: u64,
        live: impl Fn(&Deadline) -> bool,
    ) -> Option<Deadline> {
        self.prune(clock, &live);
        let heap = self.heap(clock);
        if heap.peek()?.usec > now {
            return None;
        }
        heap.pop()
    }

    fn prune(&mut self, clock: Clock, live: &impl Fn(&Deadline) -> bool) {
        let mut pruned = 0;
        let heap = self.heap(clock);
        while heap.peek().is_some_and(|d| !live(d)) {
            heap.pop();
            pruned += 1;
        }
        self.dead = self.dead.saturating_sub(pruned);
    }
}

#[cfg(test)]
mod tests {
    use super::super::source::Slots;
    use super::*;

    fn ids(n: usize) -> Vec<SourceId> {
        let mut slots = Slots::new();
        (0..n).map(|_| slots.insert(())).collect()
    }

    #[test]
    fn the_earliest_deadline_pops_first_and_ties_in_arming_order() {
        let id = ids(4);
        let mut heap = TimerHeap::new();
        heap.arm(Clock::Monotonic, 30, id[0]);
        heap.arm(Clock::Monotonic, 10, id[1]);
        heap.arm(Clock::Monotonic, 20, id[2]);
        heap.arm(Clock::Monotonic, 10, id[3]);
        heap.arm(Clock::Boottime, 1, id[0]);
        let all = |_: &Deadline| true;
        assert_eq!(heap.next_deadline(Clock::Monotonic, all), Some(10));
        let mut order = Vec::new();
        while let Some(d) = heap.pop_expired(Clock::Monotonic, 25, all) {
            order.push(d.id);
        }
        assert_eq!(order, [id[1], id[3], id[2]], "30 is not due at 25");
        assert_eq!(heap.next_deadline(Clock::Monotonic, all), Some(30));
        assert_eq!(heap.next_deadline(Clock::Boottime, all), Some(1));
    }

    #[test]
    fn dead_entries_are_skipped_and_swept() {
        let id = ids(1)[0];
        let mut heap = TimerHeap::new();
        let mut live_seq = 0;
        // Re-arm one timer many times, as curl's timer is: only the last entry is live.
        for usec in (0..1000).rev() {
            if live_seq != 0 {
                // The loop clears the source's entry number first: nothing is live here.
                heap.forget(|_| false);
            }
            live_seq = heap.arm(Clock::Boottime, usec + 100, id);
        }
        let live = |d: &Deadline| d.seq == live_seq;
        assert!(heap.boottime.len() <= 130, "swept: {}", heap.boottime.len());
        assert_eq!(heap.next_deadline(Clock::Boottime, live), Some(100));
        assert_eq!(heap.pop_expired(Clock::Boottime, 99, live), None);
        assert_eq!(heap.pop_expired(Clock::Boottime, 100, live).unwrap().id, id);
        assert_eq!(heap.next_deadline(Clock::Boottime, live), None);
    }
}
