//! Blocking until a condition another thread makes true: an eventcount on
//! a Linux futex, the one way a thread of zbmd waits for something.
//!
//! # Design
//!
//! Dmitry Vyukov's eventcount ("Eventcount", 1024cores.net, 2008; folly's
//! `EventCount` is the same shape): the condition itself lives elsewhere
//! (a mailbox with room, an actor that died) and the [`Event`] only carries
//! the sleep. Two words:
//!
//! * `waiters`, how many threads are between [`Event::prepare`] and the end
//!   of their wait;
//! * `epoch`, the futex word, moved by every notify that found a waiter.
//!
//! A waiter takes a [`Ticket`] (count itself in `waiters`, then read
//! `epoch`), checks its condition, and only if the condition is still false
//! sleeps with [`Ticket::wait`] until `epoch` moves past the ticket's value
//! or its deadline passes. A notifier makes the condition true, then calls
//! [`Event::notify`], which moves `epoch` and issues `FUTEX_WAKE` only when
//! `waiters` is not zero: with nobody waiting a notify is a fence and one
//! load (Drepper, "Futexes Are Tricky", 2011: pay for the system call only
//! when someone may sleep). A notify wakes every waiter; each re-checks its
//! own condition, and one that finds it false again takes a new ticket.
//!
//! A notify leaves no token: it moves the epoch only for tickets already
//! taken, so a ticket taken after it waits for the next notify (unlike
//! [`park`](super::park), whose unpark before a park is kept).
//!
//! # Why no wake-up is lost
//!
//! The waiter's registration and the notifier's condition write are a
//! Dekker pair, each followed by a SeqCst fence before the other side's
//! word is read:
//!
//! ```text
//! waiter:   waiters += 1;  fence(SeqCst);  e = epoch;  check condition;  futex_wait(epoch, e)
//! notifier: make condition true;  fence(SeqCst);  if waiters != 0 { epoch += 1; futex_wake }
//! ```
//!
//! The two fences are totally ordered. If the notifier's comes first, the
//! condition write (before it) is visible to the waiter's check (after its
//! fence), and the waiter does not sleep. If the waiter's comes first, the
//! notifier's load of `waiters` sees the registration (C++ \[atomics.fences\]:
//! a modification before one SeqCst fence is seen by a load after a later
//! one), so it moves `epoch` and wakes the futex: the waiter's `futex_wait`
//! finds the word changed and returns (`EAGAIN`), or sleeps and is woken
//! (the kernel makes the compare and the sleep atomic with respect to the
//! wake). And if the waiter's read of `epoch` already saw the new value
//! (Acquire, synchronising with the notifier's fence, which precedes its
//! increment), its condition check sees the write the notify published,
//! and it does not sleep. The same Acquire, in [`Ticket::wait`]'s reads of
//! `epoch`, makes a wait that reports a notify see what the notifier wrote
//! before it. The condition must be read and written through atomics
//! (every condition in zbmd is: a mailbox's stamps, an actor's run state)
//! so the fence rules apply to it.
//!
//! Each ordering is checked: the loom models fail when either fence is
//! removed, when `prepare`'s load of `epoch` is Relaxed (a waiter sleeps
//! forever), and when `wait`'s is (`a_woken_ticket_sees_what_the_notifier_wrote`).
//!
//! `waiters` itself is only a hint that may be stale upwards: a waiter that
//! left decrements it with Relaxed, and a notifier that still sees it pays
//! one needless wake. The epoch is a `u32` and wraps: a waiter that slept
//! through exactly 2^32 notifies between its ticket and its `futex_wait`
//! would miss them (then wakes at its deadline); that takes hours of
//! notifies against one preempted thread, and no caller waits without a
//! deadline on an event that notifies that often.
//!
//! # Under loom
//!
//! The futex is emulated with loom's mutex and condvar (see `sync/futex.rs`),
//! with the same check-and-sleep atomicity; a timed wait's deadline passes
//! after one look. `loom_tests/tests/event.rs` checks that a waiter without
//! a deadline always wakes (a lost wake-up is a deadlock loom reports), that
//! one notify wakes every waiter, and that a timed wait ends.

use std::fmt;
use std::time::Instant;

use super::facade::{AtomicU32, Ordering, fence};
use super::futex::{Deadline, Futex};

/// A place to wait for a condition that other threads make true, and to
/// announce that it may have become true. See the module docs.
///
/// ```
/// use std::sync::Arc;
/// use std::sync::atomic::{AtomicBool, Ordering};
/// use std::time::{Duration, Instant};
/// use zbmd_rt::sync::event::Event;
///
/// let event = Arc::new(Event::new());
/// let ready = Arc::new(AtomicBool::new(false));
/// let notifier = {
///     let (event, ready) = (event.clone(), ready.clone());
///     std::thread::spawn(move || {
///         ready.store(true, Ordering::Relaxed); // 1. make it true
///         event.notify(); //                       2. then notify
///     })
/// };
/// let deadline = Instant::now() + Duration::from_secs(60);
/// let seen = event.wait_until(Some(deadline), || ready.load(Ordering::Relaxed).then_some(()));
/// assert_eq!(seen, Some(()));
/// notifier.join().unwrap();
/// ```
pub struct Event {
    /// The futex word: moves on every notify that found a waiter.
    epoch: AtomicU32,
    /// Tickets taken and not yet dropped.
    waiters: AtomicU32,
    futex: Futex,
}

impl Event {
    /// An event nobody waits on.
    pub fn new() -> Self {
        Event { epoch: AtomicU32::new(0), waiters: AtomicU32::new(0), futex: Futex::new() }
    }

    /// Registers the calling thread as a waiter. Check the condition after
    /// this, then [`wait`](Ticket::wait) if it is false; a notify that
    /// comes after `prepare` returns makes that wait return.
    pub fn prepare(&self) -> Ticket<'_> {
        self.waiters.fetch_add(1, Ordering::Relaxed);
        // The waiter's half of the Dekker pair (module docs).
        fence(Ordering::SeqCst);
        let epoch = self.epoch.load(Ordering::Acquire);
        Ticket { event: self, epoch }
    }

    /// Announces that a condition may have become true: wakes every thread
    /// that took a [`Ticket`] before this call. With nobody waiting it costs
    /// a fence and one load, and leaves nothing behind for later waiters.
    #[inline]
    pub fn notify(&self) {
        // The notifier's half of the Dekker pair (module docs).
        fence(Ordering::SeqCst);
        if self.waiters.load(Ordering::Relaxed) != 0 {
            self.wake();
        }
    }

    /// Moves the epoch and wakes the sleepers. Call only after `notify`'s
    /// fence.
    #[cold]
    fn wake(&self) {
        // Relaxed: the SeqCst fence in `notify`, sequenced before this
        // increment, is the release that the waiters' Acquire loads of
        // `epoch` synchronise with (a fence before a store that an acquire
        // load reads, C++ [atomics.fences]); a Release here would add
        // nothing, and the loom models pass with either, as they must.
        self.epoch.fetch_add(1, Ordering::Relaxed);
        self.futex.wake_all(&self.epoch);
    }

    /// Blocks until `poll` answers `Some`, or `deadline` passes (`None`
    /// waits for good): polls at once, then once more after each notify,
    /// and a last time at the deadline. Returns what `poll` answered, or
    /// `None` if it never answered `Some` by the deadline.
    pub fn wait_until<T>(
        &self,
        deadline: Option<Instant>,
        mut poll: impl FnMut() -> Option<T>,
    ) -> Option<T> {
        if let Some(value) = poll() {
            return Some(value);
        }
        loop {
            let ticket = self.prepare();
            if let Some(value) = poll() {
                return Some(value);
            }
            if !ticket.wait(deadline) {
                return poll();
            }
        }
    }
}

impl Default for Event {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Debug for Event {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Event")
            .field("waiters", &self.waiters.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

/// A waiter's registration with an [`Event`], from [`Event::prepare`] until
/// it is dropped (or consumed by [`wait`](Self::wait)).
#[must_use = "take a ticket, check the condition, then wait on the ticket"]
pub struct Ticket<'a> {
    event: &'a Event,
    /// The epoch when the ticket was taken.
    epoch: u32,
}

impl Ticket<'_> {
    /// Sleeps until a notify that came after this ticket was taken, or
    /// `deadline` (`None`: no deadline). True if notified, false if the
    /// deadline passed first. Either way, re-check the condition: a notify
    /// says only that it may have become true.
    pub fn wait(self, deadline: Option<Instant>) -> bool {
        let event = self.event;
        let deadline = Deadline::at(deadline);
        loop {
            if event.epoch.load(Ordering::Acquire) != self.epoch {
                return true;
            }
            let Some(remaining) = deadline.remaining() else {
                return false;
            };
            event.futex.wait(&event.epoch, self.epoch, remaining);
        }
    }
}

impl Drop for Ticket<'_> {
    fn drop(&mut self) {
        // A hint only: a notifier that still sees us pays one needless wake.
        self.event.waiters.fetch_sub(1, Ordering::Relaxed);
    }
}

impl fmt::Debug for Ticket<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Ticket").field("epoch", &self.epoch).finish_non_exhaustive()
    }
}

#[cfg(all(test, not(zbmd_loom)))]
mod tests {
    use super::*;
    use std::sync::Arc as StdArc;
    use std::sync::atomic::{AtomicBool, AtomicU32 as StdAtomicU32};
    use std::time::Duration;

    fn assert_send_sync<T: Send + Sync>() {}

    /// Spins (without sleeping) until `count` tickets are taken: the signal
    /// that the waiters are registered before the test notifies.
    fn until_waiters(event: &Event, count: u32) {
        while event.waiters.load(Ordering::Acquire) < count {
            std::thread::yield_now();
        }
    }

    #[test]
    fn event_is_send_and_sync() {
        assert_send_sync::<Event>();
    }

    #[test]
    fn a_notify_from_another_thread_wakes_a_sleeping_waiter() {
        let event = StdArc::new(Event::new());
        let ready = StdArc::new(AtomicBool::new(false));
        let notifier = {
            let (event, ready) = (event.clone(), ready.clone());
            std::thread::spawn(move || {
                until_waiters(&event, 1);
                ready.store(true, Ordering::Relaxed);
                event.notify();
            })
        };
        // No deadline: only the notify can end this wait.
        let seen = event.wait_until(None, || ready.load(Ordering::Relaxed).then_some(7));
        assert_eq!(seen, Some(7));
        notifier.join().unwrap();
        assert_eq!(event.waiters.load(Ordering::Relaxed), 0, "a ticket was not given back");
    }

    #[test]
    fn one_notify_wakes_every_waiter() {
        let event = StdArc::new(Event::new());
        let ready = StdArc::new(AtomicBool::new(false));
        let waiters: Vec<_> = (0..3)
            .map(|_| {
                let (event, ready) = (event.clone(), ready.clone());
                std::thread::spawn(move || {
                    event.wait_until(None, || ready.load(Ordering::Relaxed).then_some(()))
                })
            })
            .collect();
        until_waiters(&event, 3);
        ready.store(true, Ordering::Relaxed);
        event.notify();
        for waiter in waiters {
            assert_eq!(waiter.join().unwrap(), Some(()));
        }
    }

    #[test]
    fn a_deadline_that_passes_ends_the_wait_unnotified() {
        let event = Event::new();
        let deadline = Instant::now() + Duration::from_millis(5);
        let polls = StdAtomicU32::new(0);
        let seen = event.wait_until(Some(deadline), || {
            polls.fetch_add(1, Ordering::Relaxed);
            None::<()>
        });
        assert_eq!(seen, None);
        // Not a timing assertion: the contract that a deadline is never cut
        // short, on the monotonic clock; it holds however slow the machine.
        assert!(Instant::now() >= deadline, "gave up before the deadline");
        // Once at once, once with the ticket, once at the deadline.
        assert_eq!(polls.load(Ordering::Relaxed), 3);
        // A deadline already passed: the answer is the epoch's alone (no
        // notify came), whatever the clock does.
        assert!(!event.prepare().wait(Some(Instant::now())), "a passed deadline was notified");
    }

    #[test]
    fn a_notify_with_nobody_waiting_moves_nothing_and_leaves_no_token() {
        let event = Event::new();
        event.notify();
        event.notify();
        assert_eq!(event.epoch.load(Ordering::Relaxed), 0, "the cheap path moved the epoch");
        let ticket = event.prepare();
        let deadline = Instant::now() + Duration::from_millis(5);
        assert!(!ticket.wait(Some(deadline)), "an earlier notify woke a later ticket");
    }

    #[test]
    fn a_notify_between_prepare_and_wait_is_not_lost() {
        let event = Event::new();
        let ticket = event.prepare();
        event.notify();
        assert!(ticket.wait(None), "the notify after prepare was lost");
        assert_eq!(event.waiters.load(Ordering::Relaxed), 0);
    }
}
