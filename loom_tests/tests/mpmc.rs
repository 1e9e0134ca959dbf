//! loom models of the MPMC queue: every interleaving of two or three
//! threads on a queue of two, within the preemption bound, delivers each
//! element exactly once and in FIFO order, never reads an unwritten slot
//! (loom tracks every cell access), and answers full and empty truly: a
//! slot still being moved out by a slower pop is not "full", and a position
//! whose push is still writing is not "empty".
#![cfg(zbmd_loom)]

use loom::sync::Arc;
use loom::sync::atomic::{AtomicUsize, Ordering};
use loom::thread;
use zbmd_rt::sync::mpmc::MpmcQueue;

mod common;
use common::model;

/// Pops what is left, oldest first.
fn drain(queue: &MpmcQueue<usize>) -> Vec<usize> {
    std::iter::from_fn(|| queue.pop()).collect()
}

/// Two threads each take one element of a full queue of two and put one
/// back, twice. Each thread pushes only after its own pop, so the queue
/// never holds more than two: no push may answer "full", even when it lands
/// on the slot the other thread's pop is still moving out of; and no pop may
/// answer "empty", since at most one element is out at a time per thread.
#[test]
fn pop_then_push_is_never_refused() {
    model(|| {
        let queue = Arc::new(MpmcQueue::with_capacity(2).unwrap());
        queue.push(1).unwrap();
        queue.push(2).unwrap();
        let workers: Vec<_> = [10, 20]
            .into_iter()
            .map(|base| {
                let queue = queue.clone();
                thread::spawn(move || {
                    let mut popped = Vec::new();
                    for round in 0..2 {
                        popped.push(queue.pop().expect("an element is left for us"));
                        assert!(queue.push(base + round).is_ok(), "push refused with room");
                    }
                    popped
                })
            })
            .collect();
        let mut all: Vec<usize> = workers.into_iter().flat_map(|w| w.join().unwrap()).collect();
        let rest = drain(&queue);
        assert_eq!(rest.len(), 2, "the queue ends as full as it started");
        for base in [10, 20] {
            let mine: Vec<usize> = rest.iter().copied().filter(|v| v / 10 == base / 10).collect();
            assert!(mine.windows(2).all(|w| w[0] < w[1]), "FIFO: {rest:?}");
        }
        all.extend(rest);
        all.sort_unstable();
        assert_eq!(all, [1, 2, 10, 11, 20, 21], "lost or duplicated");
    });
}

/// A queue of two holds 1; the main thread pushes 2, then 3, while two
/// consumers pop once each. Nothing is lost or duplicated, what the
/// consumers took comes before what is left (FIFO), a consumer that knows 2
/// was pushed never sees "empty" (two elements, the other consumer takes at
/// most one), and a push of 3 made after a pop is known done is never
/// refused. (Only one thread can be waiting on another at a time here: two
/// spinning waiters would let loom alternate them forever.)
#[test]
fn one_producer_two_consumers() {
    model(|| {
        let queue = Arc::new(MpmcQueue::with_capacity(2).unwrap());
        queue.push(1).unwrap();
        let pushed = Arc::new(AtomicUsize::new(1));
        let taken = Arc::new(AtomicUsize::new(0));
        let consumers: Vec<_> = (0..2)
            .map(|_| {
                let (queue, pushed, taken) = (queue.clone(), pushed.clone(), taken.clone());
                thread::spawn(move || {
                    let seen = pushed.load(Ordering::Acquire);
                    let popped = queue.pop();
                    assert!(seen < 2 || popped.is_some(), "empty with two pushed");
                    if popped.is_some() {
                        taken.fetch_add(1, Ordering::Release);
                    }
                    popped
                })
            })
            .collect();
        assert!(queue.push(2).is_ok(), "a queue of two refused its second element");
        pushed.store(2, Ordering::Release);
        let room_known = taken.load(Ordering::Acquire) > 0;
        let third = queue.push(3).map_err(|full| full.into_inner());
        assert!(!room_known || third.is_ok(), "full after a pop made room");
        assert!(third.is_ok() || third == Err(3), "the refused value is handed back");
        let popped: Vec<usize> = consumers.into_iter().filter_map(|c| c.join().unwrap()).collect();
        let rest = drain(&queue);
        let mut all: Vec<usize> = popped.iter().chain(&rest).copied().collect();
        all.sort_unstable();
        let expected: &[usize] = if third.is_ok() { &[1, 2, 3] } else { &[1, 2] };
        assert_eq!(all, expected, "lost or duplicated");
        if let (Some(taken), Some(left)) = (popped.iter().max(), rest.first()) {
            assert!(taken < left, "FIFO: popped {popped:?} but {rest:?} left");
        }
        assert!(rest.windows(2).all(|w| w[0] < w[1]), "FIFO: {rest:?}");
    });
}

/// Two producers push 1, 2 and 3, 4 into a queue of two while the main
/// thread pops three times. Each producer's elements leave in its order,
/// nothing is lost or duplicated, the first two pushes are never refused (a
/// refusal needs two queued), and a pop never answers "empty" while a push it
/// knows has finished is still queued, even when an older push is still
/// writing its slot (the pop waits for that one).
#[test]
fn two_producers_one_consumer() {
    model(|| {
        let queue = Arc::new(MpmcQueue::with_capacity(2).unwrap());
        let finished = Arc::new(AtomicUsize::new(0));
        let producers: Vec<_> = [vec![1, 2], vec![3, 4]]
            .into_iter()
            .map(|values| {
                let (queue, finished) = (queue.clone(), finished.clone());
                thread::spawn(move || {
                    let mut accepted = Vec::new();
                    for value in values {
                        if queue.push(value).is_ok() {
                            accepted.push(value);
                            finished.fetch_add(1, Ordering::Release);
                        }
                    }
                    accepted
                })
            })
            .collect();
        let mut out = Vec::new();
        for _ in 0..3 {
            let known_pushed = finished.load(Ordering::Acquire);
            match queue.pop() {
                Some(value) => out.push(value),
                None => assert!(out.len() >= known_pushed, "empty with a finished push queued"),
            }
        }
        let accepted: Vec<Vec<usize>> = producers.into_iter().map(|p| p.join().unwrap()).collect();
        out.extend(drain(&queue));
        assert!(accepted.iter().map(Vec::len).sum::<usize>() >= 2, "a push refused with room");
        for mine in &accepted {
            let seen: Vec<usize> = out.iter().copied().filter(|v| mine.contains(v)).collect();
            assert_eq!(&seen, mine, "lost, duplicated or reordered: out {out:?}");
        }
        assert_eq!(out.len(), accepted.iter().map(Vec::len).sum::<usize>(), "out {out:?}");
    });
}
