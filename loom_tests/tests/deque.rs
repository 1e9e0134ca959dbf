//! loom models of the work-stealing deque: every interleaving of the owner
//! and one or two thieves, within the preemption bound, takes each element
//! exactly once (or leaves it for the final drain), thieves take oldest
//! first, no slot is read while the owner rewrites it (the steal claim), and
//! full answers are true.
#![cfg(zbmd_loom)]

use loom::thread;
use zbmd_rt::sync::Full;
use zbmd_rt::sync::deque::{self, Steal, Stealer, Worker};

mod common;
use common::model;

/// Steals until the answer is settled: an element, or empty.
fn steal_settled(stealer: &Stealer<u32>) -> Option<u32> {
    loop {
        match stealer.steal() {
            Steal::Success(value) => return Some(value),
            Steal::Empty => return None,
            Steal::Retry => thread::yield_now(),
        }
    }
}

/// Steals a batch into `dest`, retrying on `Retry`; returns the element the
/// batch steal hands back to run at once.
fn steal_batch_into(stealer: &Stealer<u32>, dest: &Worker<u32>, max: usize) -> Option<u32> {
    loop {
        match stealer.steal_batch_and_pop(dest, max) {
            Steal::Success(value) => return Some(value),
            Steal::Empty => return None,
            Steal::Retry => thread::yield_now(),
        }
    }
}

/// Pushes `value`, yielding while a claim keeps the deque full.
fn push_settled(worker: &Worker<u32>, mut value: u32) {
    while let Err(Full(back)) = worker.push(value) {
        value = back;
        thread::yield_now();
    }
}

/// Pops everything the owner still holds.
fn drain(worker: &Worker<u32>) -> Vec<u32> {
    std::iter::from_fn(|| worker.pop()).collect()
}

/// Asserts that `taken` holds exactly the values `1..=count`.
fn assert_each_once(mut taken: Vec<u32>, count: u32) {
    taken.sort_unstable();
    assert_eq!(taken, (1..=count).collect::<Vec<_>>(), "lost or duplicated element");
}

/// Asserts that a thief's takes are oldest first.
fn assert_increasing(taken: &[u32]) {
    assert!(taken.windows(2).all(|pair| pair[0] < pair[1]), "thief out of order: {taken:?}");
}

/// The owner pushes, pops and pushes across the ring's wrap while a thief
/// steals three times: every element is taken once, the thief in order.
#[test]
fn owner_and_thief_take_each_element_once() {
    model(|| {
        let (worker, stealer) = deque::bounded::<u32>(2).unwrap();
        let thief = thread::spawn(move || {
            let taken: Vec<u32> = (0..3).filter_map(|_| steal_settled(&stealer)).collect();
            taken
        });
        worker.push(1).unwrap();
        worker.push(2).unwrap();
        let mut taken: Vec<u32> = worker.pop().into_iter().collect();
        for value in [3, 4] {
            if let Err(Full(back)) = worker.push(value) {
                // Make room ourselves; the thief may have finished already.
                taken.extend(worker.pop());
                push_settled(&worker, back);
            }
        }
        taken.extend(worker.pop());
        let stolen = thief.join().unwrap();
        assert_increasing(&stolen);
        taken.extend(stolen);
        taken.extend(drain(&worker));
        assert_each_once(taken, 4);
    });
}

/// The owner pops and pushes while two thieves steal.
#[test]
fn two_thieves_and_the_owner_take_each_element_once() {
    model(|| {
        let (worker, stealer) = deque::bounded::<u32>(4).unwrap();
        for value in 1..=3 {
            worker.push(value).unwrap();
        }
        let thieves: Vec<_> = (0..2)
            .map(|_| {
                let stealer = stealer.clone();
                thread::spawn(move || steal_settled(&stealer))
            })
            .collect();
        let mut taken: Vec<u32> = worker.pop().into_iter().collect();
        push_settled(&worker, 4);
        taken.extend(worker.pop());
        for thief in thieves {
            taken.extend(thief.join().unwrap());
        }
        taken.extend(drain(&worker));
        assert_each_once(taken, 4);
    });
}

/// The owner's pop and a thief race for the only element: exactly one wins.
#[test]
fn the_last_element_goes_to_exactly_one_side() {
    model(|| {
        let (worker, stealer) = deque::bounded::<u32>(2).unwrap();
        worker.push(1).unwrap();
        let thief = thread::spawn(move || steal_settled(&stealer));
        let popped = worker.pop();
        let stolen = thief.join().unwrap();
        assert!(popped.is_some() != stolen.is_some(), "owner {popped:?}, thief {stolen:?}");
        assert_eq!(popped.or(stolen), Some(1));
        assert_eq!(worker.pop(), None);
    });
}

/// A batch steal against three owner pops: the batch is the oldest elements
/// in order, and nothing is taken twice even though the owner pops down into
/// the positions the thief is claiming (a batch claimed with one CAS fails
/// this model).
#[test]
fn batch_steal_against_owner_pops() {
    model(|| {
        let (worker, stealer) = deque::bounded::<u32>(4).unwrap();
        for value in 1..=4 {
            worker.push(value).unwrap();
        }
        let thief = thread::spawn(move || steal_batch_settled(&stealer, 2, 4));
        // Three pops reach down into the two positions the thief claims.
        let mut taken: Vec<u32> = (0..3).filter_map(|_| worker.pop()).collect();
        let stolen = thief.join().unwrap();
        assert!(stolen.len() <= 2, "more than half of 4 stolen: {stolen:?}");
        assert_increasing(&stolen);
        taken.extend(stolen);
        taken.extend(drain(&worker));
        assert_each_once(taken, 4);
    });
}

/// Capacity 2, full, while a thief steals: a push answers `Full` (handing the
/// value back) or succeeds only once the thief has released its slot; after
/// the thief is done there is room for exactly one more.
#[test]
fn full_answers_with_capacity_two() {
    model(|| {
        let (worker, stealer) = deque::bounded::<u32>(2).unwrap();
        worker.push(1).unwrap();
        worker.push(2).unwrap();
        let thief = thread::spawn(move || steal_settled(&stealer));
        let first_try = worker.push(3);
        assert_eq!(thief.join().unwrap(), Some(1));
        if let Err(Full(back)) = first_try {
            assert_eq!(back, 3, "full must hand the value back");
            worker.push(back).unwrap();
        }
        assert_eq!(worker.push(4), Err(Full(4)));
        assert_eq!(worker.len(), 2);
        assert_eq!(drain(&worker), [3, 2]);
    });
}

/// The bounded-ring race itself: with one slot, the owner's next push goes
/// to the very slot the thief is reading. The claim must hold the owner off
/// (loom's cell tracking fails the model on a concurrent read and write).
#[test]
fn a_claimed_slot_is_not_reused_while_the_thief_reads_it() {
    model(|| {
        let (worker, stealer) = deque::bounded::<u32>(1).unwrap();
        worker.push(1).unwrap();
        let thief = thread::spawn(move || steal_settled(&stealer));
        push_settled(&worker, 2);
        assert_eq!(thief.join().unwrap(), Some(1));
        assert_eq!(drain(&worker), [2]);
    });
}

/// Steals a batch into a fresh local deque, retrying on `Retry`; returns what
/// it took, oldest first.
fn steal_batch_settled(stealer: &Stealer<u32>, local_capacity: usize, max: usize) -> Vec<u32> {
    let (local, _) = deque::bounded::<u32>(local_capacity).unwrap();
    let mut taken: Vec<u32> = steal_batch_into(stealer, &local, max).into_iter().collect();
    let mut moved = drain(&local);
    moved.reverse(); // the local owner pops newest first
    taken.extend(moved);
    taken
}

/// A batch thief, a single thief and the owner (popping and pushing) on a
/// deque that has wrapped: one claim at a time, each element once.
#[test]
fn batch_thief_single_thief_and_owner() {
    model(|| {
        let (worker, stealer) = deque::bounded::<u32>(4).unwrap();
        worker.push(0).unwrap();
        assert_eq!(worker.pop(), Some(0)); // start one position into the ring
        for value in 1..=4 {
            worker.push(value).unwrap();
        }
        let batch_thief = {
            let stealer = stealer.clone();
            thread::spawn(move || steal_batch_settled(&stealer, 4, 4))
        };
        let single_thief = thread::spawn(move || steal_settled(&stealer));
        let mut taken: Vec<u32> = worker.pop().into_iter().collect();
        push_settled(&worker, 5);
        let batch = batch_thief.join().unwrap();
        assert_increasing(&batch);
        taken.extend(batch);
        taken.extend(single_thief.join().unwrap());
        taken.extend(drain(&worker));
        assert_each_once(taken, 5);
    });
}

/// A batch steal extends its claim onto a position the owner popped and
/// refilled after the thief's first look: the thief must see the new
/// element's write through its re-read of `bottom` (loom fails the model on
/// the slot's cell otherwise). Five elements, so the batch wants three and
/// extends twice; the owner pops three and pushes one back.
#[test]
fn a_batch_steal_takes_a_refilled_position_whole() {
    model(|| {
        let (worker, stealer) = deque::bounded::<u32>(8).unwrap();
        for value in 1..=5 {
            worker.push(value).unwrap();
        }
        let thief = thread::spawn(move || steal_batch_settled(&stealer, 4, 3));
        let mut taken: Vec<u32> = (0..3).filter_map(|_| worker.pop()).collect();
        push_settled(&worker, 6);
        let stolen = thief.join().unwrap();
        assert_increasing(&stolen);
        taken.extend(stolen);
        taken.extend(drain(&worker));
        assert_each_once(taken, 6);
    });
}

/// A batch steal pushes what it took into the thief's own deque while a
/// thief of that deque steals from it: the batch's publication (`bottom`
/// Release in `append_claimed`) must make the moved elements visible to it.
#[test]
fn a_stolen_batch_is_published_to_the_thiefs_own_thieves() {
    model(|| {
        let (victim, victim_stealer) = deque::bounded::<u32>(4).unwrap();
        for value in 1..=4 {
            victim.push(value).unwrap();
        }
        let (local, local_stealer) = deque::bounded::<u32>(4).unwrap();
        let second_thief = thread::spawn(move || steal_settled(&local_stealer));
        let first = steal_batch_into(&victim_stealer, &local, 4);
        let mut taken: Vec<u32> = first.into_iter().collect();
        taken.extend(second_thief.join().unwrap());
        taken.extend(drain(&local));
        taken.extend(drain(&victim));
        assert_each_once(taken, 4);
    });
}
