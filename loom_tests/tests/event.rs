//! loom models of the eventcount (`zbmd_rt::sync::event`): the futex is
//! emulated with loom's mutex and condvar (check-and-sleep atomic, as in the
//! kernel), so a lost wake-up leaves a waiter without a deadline asleep
//! forever, which loom reports as a deadlock. The conditions are Relaxed
//! atomics on purpose: only the event's fences may order them.
#![cfg(zbmd_loom)]

use std::time::Instant;

use loom::sync::Arc;
use loom::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use loom::thread;
use zbmd_rt::sync::event::Event;

mod common;
use common::model;

/// A thread that makes the condition true, then notifies.
fn notifier(event: &Arc<Event>, ready: &Arc<AtomicBool>) -> thread::JoinHandle<()> {
    let (event, ready) = (event.clone(), ready.clone());
    thread::spawn(move || {
        ready.store(true, Ordering::Relaxed);
        event.notify();
    })
}

/// Waits, without a deadline, until the condition holds.
fn wait_ready(event: &Event, ready: &AtomicBool) -> Option<()> {
    event.wait_until(None, || ready.load(Ordering::Relaxed).then_some(()))
}

/// A waiter that found the condition false, then a notifier that made it
/// true: the waiter (no deadline) always wakes and sees the condition.
#[test]
fn no_wake_up_is_lost() {
    model(|| {
        let event = Arc::new(Event::new());
        let ready = Arc::new(AtomicBool::new(false));
        let notifier = notifier(&event, &ready);
        let seen = wait_ready(&event, &ready);
        assert_eq!(seen, Some(()));
        notifier.join().unwrap();
    });
}

/// The ticket API used directly, as the blocking sends use it: a wait that
/// reports a notify is followed by a look that sees what the notifier wrote
/// before notifying (no fresh ticket in between to order it).
#[test]
fn a_woken_ticket_sees_what_the_notifier_wrote() {
    model(|| {
        let event = Arc::new(Event::new());
        let ready = Arc::new(AtomicBool::new(false));
        let notifier = notifier(&event, &ready);
        let ticket = event.prepare();
        if !ready.load(Ordering::Relaxed) {
            assert!(ticket.wait(None), "a wait without a deadline ended unnotified");
            assert!(ready.load(Ordering::Relaxed), "woken without the notifier's write");
        }
        notifier.join().unwrap();
    });
}

/// One notify wakes every waiter, each for its own look at the condition.
#[test]
fn one_notify_wakes_two_waiters() {
    model(|| {
        let event = Arc::new(Event::new());
        let ready = Arc::new(AtomicBool::new(false));
        let waiter = {
            let (event, ready) = (event.clone(), ready.clone());
            thread::spawn(move || wait_ready(&event, &ready))
        };
        let notifier = notifier(&event, &ready);
        let seen = wait_ready(&event, &ready);
        assert_eq!(seen, Some(()));
        assert_eq!(waiter.join().unwrap(), Some(()));
        notifier.join().unwrap();
    });
}

/// Two notifiers, each making one item ready: a waiter that needs both is
/// woken for the second even when the two notifies race its ticket.
#[test]
fn a_waiter_for_two_items_sees_both() {
    model(|| {
        let event = Arc::new(Event::new());
        let items = Arc::new(AtomicUsize::new(0));
        let notifiers: Vec<_> = (0..2)
            .map(|_| {
                let (event, items) = (event.clone(), items.clone());
                thread::spawn(move || {
                    items.fetch_add(1, Ordering::Relaxed);
                    event.notify();
                })
            })
            .collect();
        let seen = event.wait_until(None, || (items.load(Ordering::Relaxed) == 2).then_some(()));
        assert_eq!(seen, Some(()));
        for notifier in notifiers {
            notifier.join().unwrap();
        }
    });
}

/// A timed wait ends (loom does not model time: the deadline passes after
/// one look) whether or not the notify came; when it reports the
/// condition, the condition holds.
#[test]
fn a_timed_wait_ends_and_reports_truly() {
    model(|| {
        let event = Arc::new(Event::new());
        let ready = Arc::new(AtomicBool::new(false));
        let notifier = notifier(&event, &ready);
        let deadline = Some(Instant::now());
        if event.wait_until(deadline, || ready.load(Ordering::Relaxed).then_some(())).is_some() {
            assert!(ready.load(Ordering::Relaxed));
        }
        notifier.join().unwrap();
    });
}

/// A notify that came before the ticket leaves nothing behind: the timed
/// wait of a later ticket is not reported as notified.
#[test]
fn a_notify_before_the_ticket_leaves_no_token() {
    model(|| {
        let event = Arc::new(Event::new());
        let notifier = {
            let event = event.clone();
            thread::spawn(move || event.notify())
        };
        notifier.join().unwrap();
        // A deadline already passed (under loom it passes after one look):
        // the answer is the epoch's alone, not the clock's.
        assert!(!event.prepare().wait(Some(Instant::now())), "an old notify woke a new ticket");
    });
}
