//! A million hand-offs ping-ponged between two threads that sleep with
//! park/unpark: no wake-up is lost (the run would hang, and a 60-second
//! guard fails it), every hand-off is seen, and the turn counter, written
//! Relaxed, is published by the unpark/park pair alone whenever the waiter
//! slept.
#![cfg(not(zbmd_loom))]

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::thread;
use std::time::Duration;

use zbmd_rt::sync::park::{self, Parker, Unparker};

/// One-way hand-offs in the main run, half by each side.
const HANDOFFS: u64 = 1_000_000;

/// Hand-offs in the run with timeouts: each timed-out park costs a system
/// call, so fewer, to stay within a few seconds on two cores.
const HANDOFFS_TIMED: u64 = 250_000;

/// Far beyond any healthy run; only a lost wake-up gets here.
const DEADLOCK_GUARD: Duration = Duration::from_secs(60);

/// How a side sleeps while it waits for its turn.
#[derive(Clone, Copy)]
enum Sleep {
    Park,
    /// `park_timeout` with a short timeout, so timeouts race with unparks.
    ParkTimeout(Duration),
}

/// One side of the ping-pong.
struct Side {
    parker: Parker,
    peer: Unparker,
    sleep: Sleep,
}

/// Takes the turns `first, first + 2, ...` below `count`: waits until the
/// counter reaches the turn, advances it, and wakes the other side. Returns
/// how many hand-offs it made and how many times it woke by token.
fn run_side(turn: &AtomicU64, first: u64, count: u64, side: &Side) -> (u64, u64) {
    let Side { parker, peer, sleep } = side;
    let (mut handoffs, mut tokens) = (0, 0);
    for mine in (first..count).step_by(2) {
        while turn.load(Ordering::Relaxed) != mine {
            let woken = match *sleep {
                Sleep::Park => {
                    parker.park();
                    true
                }
                Sleep::ParkTimeout(timeout) => parker.park_timeout(timeout),
            };
            tokens += u64::from(woken);
        }
        turn.store(mine + 1, Ordering::Relaxed);
        peer.unpark();
        handoffs += 1;
    }
    (handoffs, tokens)
}

fn ping_pong(count: u64, sleep_a: Sleep, sleep_b: Sleep) {
    let (parker_a, unparker_a) = park::pair();
    let (parker_b, unparker_b) = park::pair();
    let sides = [
        Side { parker: parker_a, peer: unparker_b, sleep: sleep_a },
        Side { parker: parker_b, peer: unparker_a, sleep: sleep_b },
    ];
    let turn = Arc::new(AtomicU64::new(0));
    let (report, reports) = mpsc::channel();
    for (first, side) in (0..).zip(sides) {
        let (turn, report) = (turn.clone(), report.clone());
        thread::spawn(move || report.send(run_side(&turn, first, count, &side)).unwrap());
    }
    let mut total = 0;
    for _ in 0..2 {
        let (handoffs, tokens) = reports
            .recv_timeout(DEADLOCK_GUARD)
            .expect("a side is still waiting: a wake-up was lost");
        assert_eq!(handoffs, count / 2);
        assert!(tokens <= count, "more tokens than unparks");
        total += handoffs;
    }
    assert_eq!(total, count);
    assert_eq!(turn.load(Ordering::Relaxed), count);
}

#[test]
fn a_million_handoffs_with_park() {
    ping_pong(HANDOFFS, Sleep::Park, Sleep::Park);
}

#[test]
fn handoffs_with_timeouts_racing_unparks() {
    ping_pong(HANDOFFS_TIMED, Sleep::Park, Sleep::ParkTimeout(Duration::from_micros(50)));
}
