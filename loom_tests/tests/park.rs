//! loom models of the parker: the futex is emulated with loom's mutex and
//! condvar (check-and-sleep atomic, as in the kernel), so a lost wake-up
//! leaves the consumer asleep forever, which loom reports as a deadlock.
#![cfg(zbmd_loom)]

use std::time::Duration;

use loom::sync::Arc;
use loom::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use loom::thread;
use zbmd_rt::sync::park;

mod common;
use common::model;

/// Producer: publish, then unpark. Consumer: check, park, recheck. The flag
/// is Relaxed on purpose: only the park/unpark pair may make it visible.
#[test]
fn no_wake_up_is_lost() {
    model(|| {
        let (parker, unparker) = park::pair();
        let ready = Arc::new(AtomicBool::new(false));
        let producer = {
            let ready = ready.clone();
            thread::spawn(move || {
                ready.store(true, Ordering::Relaxed);
                unparker.unpark();
            })
        };
        while !ready.load(Ordering::Relaxed) {
            parker.park();
        }
        producer.join().unwrap();
    });
}

/// Two producers, two unparks, which may merge into one token: the consumer
/// still sees both publications.
#[test]
fn two_unparkers_wake_the_consumer_for_both_items() {
    model(|| {
        let (parker, unparker) = park::pair();
        let items = Arc::new(AtomicUsize::new(0));
        let producers: Vec<_> = (0..2)
            .map(|_| {
                let items = items.clone();
                let unparker = unparker.clone();
                thread::spawn(move || {
                    items.fetch_add(1, Ordering::Relaxed);
                    unparker.unpark();
                })
            })
            .collect();
        while items.load(Ordering::Relaxed) < 2 {
            parker.park();
        }
        for producer in producers {
            producer.join().unwrap();
        }
    });
}

/// One unpark is one token: the park after it consumed the token finds none.
#[test]
fn one_unpark_releases_one_park() {
    model(|| {
        let (parker, unparker) = park::pair();
        let producer = thread::spawn(move || unparker.unpark());
        parker.park();
        assert!(!parker.park_timeout(Duration::from_secs(1)), "a token appeared twice");
        producer.join().unwrap();
    });
}

/// Timed parks (which under loom time out at once) around an unpark: a true
/// answer means the token came, and so the publication is visible.
#[test]
fn park_timeout_reports_the_token_truly() {
    model(|| {
        let (parker, unparker) = park::pair();
        let ready = Arc::new(AtomicBool::new(false));
        let producer = {
            let ready = ready.clone();
            thread::spawn(move || {
                ready.store(true, Ordering::Relaxed);
                unparker.unpark();
            })
        };
        loop {
            if parker.park_timeout(Duration::from_millis(1)) {
                assert!(ready.load(Ordering::Relaxed), "woken without the publication");
                break;
            }
            thread::yield_now();
        }
        producer.join().unwrap();
    });
}
