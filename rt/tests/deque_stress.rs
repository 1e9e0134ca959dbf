//! Millions of elements through the work-stealing deque: the owner pushes and
//! pops while thieves steal single elements and batches into their own
//! deques (and steal back from each other's). Every element is taken exactly
//! once, the checksums of what went in and what came out agree, and each
//! thief's takes from the owner come oldest first.
#![cfg(not(zbmd_loom))]

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Barrier};
use std::thread;

use zbmd_rt::sync::deque::{self, Steal, Stealer, Worker};

/// How a thief takes from the owner.
#[derive(Clone, Copy)]
enum Mode {
    /// Alternate single steals and batch steals.
    Mixed,
    /// Batch steals only.
    Batch,
}

/// What one thread took: in `ordered`, the values taken from the owner's
/// deque by a thief, in the order of its claims; in `other`, the rest.
#[derive(Default)]
struct Taken {
    ordered: Vec<u64>,
    other: Vec<u64>,
}

/// The owner: pushes `0..count`, pops one in eight itself, and when the
/// deque is full mostly yields to the thieves (popping one every fourth
/// try), then drains what is left.
fn owner(worker: Worker<u64>, count: u64, start: &Barrier, done: &AtomicBool) -> Taken {
    let mut taken = Taken::default();
    start.wait();
    for value in 0..count {
        let mut tries = 0u32;
        while worker.push(value).is_err() {
            tries += 1;
            if tries % 4 == 0 {
                // `None` when the deque is full of claimed slots.
                taken.other.extend(worker.pop());
            } else {
                thread::yield_now();
            }
        }
        if value % 8 == 7 {
            taken.other.extend(worker.pop());
        }
    }
    taken.other.extend(std::iter::from_fn(|| worker.pop()));
    done.store(true, Ordering::Release);
    taken
}

/// One thief round against the owner; returns false if the owner's deque
/// was empty.
fn steal_round(victim: &Stealer<u64>, local: &Worker<u64>, batch: bool, taken: &mut Taken) -> bool {
    let answer = if batch { victim.steal_batch_and_pop(local, 32) } else { victim.steal() };
    let first = match answer {
        Steal::Success(value) => value,
        Steal::Empty => return false,
        Steal::Retry => {
            thread::yield_now();
            return true;
        }
    };
    // The batch sits in `local` oldest at the top; our pops see it newest
    // first (a peer may have stolen some of its oldest meanwhile).
    let mut moved: Vec<u64> = std::iter::from_fn(|| local.pop()).collect();
    moved.reverse();
    let previous = taken.ordered.last().copied();
    assert!(previous < Some(first), "steal went backwards: {previous:?} then {first}");
    taken.ordered.push(first);
    for value in moved {
        assert!(taken.ordered.last() < Some(&value), "batch out of order at {value}");
        taken.ordered.push(value);
    }
    true
}

fn thief(
    victim: Stealer<u64>,
    local: Worker<u64>,
    peer: Stealer<u64>,
    mode: Mode,
    start: &Barrier,
    done: &AtomicBool,
) -> Taken {
    let mut taken = Taken::default();
    start.wait();
    let mut round = 0u64;
    loop {
        round += 1;
        let batch = matches!(mode, Mode::Batch) || round % 2 == 0;
        let finished = done.load(Ordering::Acquire);
        if steal_round(&victim, &local, batch, &mut taken) {
            continue;
        }
        if let Steal::Success(value) = peer.steal() {
            taken.other.push(value);
            continue;
        }
        if finished {
            // The owner drained and stopped before our Empty answer.
            return taken;
        }
        thread::yield_now();
    }
}

fn run(capacity: usize, count: u64, modes: &[Mode]) {
    let (worker, stealer) = deque::bounded::<u64>(capacity).unwrap();
    let done = Arc::new(AtomicBool::new(false));
    let start = Arc::new(Barrier::new(modes.len() + 1));
    let locals: Vec<_> = modes.iter().map(|_| deque::bounded::<u64>(64).unwrap()).collect();
    let mut handles = Vec::new();
    let peers: Vec<Stealer<u64>> = locals.iter().map(|(_, stealer)| stealer.clone()).collect();
    for (index, ((local, _), mode)) in locals.into_iter().zip(modes.iter().copied()).enumerate() {
        let victim = stealer.clone();
        let peer = peers[(index + 1) % peers.len()].clone();
        let (start, done) = (start.clone(), done.clone());
        handles.push(thread::spawn(move || thief(victim, local, peer, mode, &start, &done)));
    }
    let mut all = owner(worker, count, &start, &done);
    let mut ordered_total = 0;
    for handle in handles {
        let taken = handle.join().unwrap();
        ordered_total += taken.ordered.len();
        all.other.extend(taken.ordered);
        all.other.extend(taken.other);
    }
    assert!(ordered_total > 0, "the thieves never stole anything");
    check_each_once(&all.other, count);
}

/// Every value in `0..count` exactly once, and matching checksums.
fn check_each_once(values: &[u64], count: u64) {
    assert_eq!(values.len() as u64, count, "lost or duplicated elements");
    let mut seen = vec![false; count as usize];
    let (mut sum, mut xor) = (0u64, 0u64);
    for &value in values {
        assert!(!std::mem::replace(&mut seen[value as usize], true), "{value} taken twice");
        sum = sum.wrapping_add(value);
        xor ^= value;
    }
    let expected_xor = (0..count).fold(0, |acc, value| acc ^ value);
    assert_eq!((sum, xor), (count * (count - 1) / 2, expected_xor));
}

#[test]
fn single_and_batch_thieves_take_each_element_once() {
    run(256, 2_000_000, &[Mode::Mixed, Mode::Batch]);
}

#[test]
fn a_tiny_deque_under_batch_steals_takes_each_element_once() {
    run(4, 1_000_000, &[Mode::Batch]);
}
