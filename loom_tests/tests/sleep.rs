//! loom models of the shard sleep/wake handshake (`zbmd_rt::sync::sleep`)
//! with the real injection queue, ring and parker: work pushed by another
//! shard (through its ring) or by an outside thread (through the injection
//! queue) while the shard decides to sleep always ends with the shard awake
//! and holding the work. The shard parks without a timeout here, so a lost
//! wake-up leaves it asleep forever, which loom reports as a deadlock. A
//! waker without its fence shows what the fence is for.
#![cfg(zbmd_loom)]

use loom::sync::Arc;
use loom::sync::atomic::{AtomicBool, Ordering, fence};
use loom::thread;
use zbmd_rt::sync::mpmc::MpmcQueue;
use zbmd_rt::sync::park::{self, Parker, Unparker};
use zbmd_rt::sync::sleep::SleepFlag;
use zbmd_rt::sync::spsc::{self, Consumer, Producer};

mod common;
use common::model;

/// What the model needs of a handshake: the shipped one, or a broken one.
trait Handshake: Default + Send + Sync + 'static {
    /// The sleeper: announce, `look`, park with `park` if it found nothing.
    fn sleep(&self, look: &mut dyn FnMut() -> bool, park: &dyn Fn());
    /// The waker, after its push: whether to unpark.
    fn needs_wake(&self) -> bool;
}

impl Handshake for SleepFlag {
    fn sleep(&self, look: &mut dyn FnMut() -> bool, park: &dyn Fn()) {
        let announced = self.announce();
        if !look() {
            park();
        }
        drop(announced);
    }

    fn needs_wake(&self) -> bool {
        SleepFlag::needs_wake(self)
    }
}

/// What other threads share of the shard.
struct Shared<H> {
    flag: H,
    injection: MpmcQueue<u32>,
}

/// The shard's loop cut down to its idle path: take what the ring and the
/// injection queue hold; with nothing taken, sleep (announce, look once
/// more, park). Returns once it holds `want` items.
fn shard<H: Handshake>(
    shared: &Shared<H>,
    ring: &mut Option<Consumer<u32>>,
    parker: &Parker,
    want: usize,
) -> Vec<u32> {
    let mut taken = Vec::new();
    let mut take = |taken: &mut Vec<u32>| {
        let before = taken.len();
        if let Some(ring) = ring.as_mut() {
            taken.extend(std::iter::from_fn(|| ring.pop()));
        }
        taken.extend(std::iter::from_fn(|| shared.injection.pop()));
        taken.len() > before
    };
    loop {
        take(&mut taken);
        if taken.len() >= want {
            return taken;
        }
        shared.flag.sleep(&mut || take(&mut taken), &|| parker.park());
    }
}

/// A shard's shared part with an empty injection queue of one slot.
fn shared<H: Handshake>() -> Arc<Shared<H>> {
    Arc::new(Shared { flag: H::default(), injection: MpmcQueue::with_capacity(1).unwrap() })
}

/// A waker on its own thread: `push`, then unpark the shard if its flag
/// says so (`Scheduler::wake`).
fn spawn_waker<H: Handshake>(
    shared: &Arc<Shared<H>>,
    unparker: Unparker,
    push: impl FnOnce(&Shared<H>) + Send + 'static,
) -> thread::JoinHandle<()> {
    let shared = shared.clone();
    thread::spawn(move || {
        push(&shared);
        if shared.flag.needs_wake() {
            unparker.unpark();
        }
    })
}

/// A ring of one slot between another shard and this one, with `value`
/// pushed into it by a waker on its own thread.
fn spawn_ring_waker<H: Handshake>(
    shared: &Arc<Shared<H>>,
    unparker: Unparker,
    value: u32,
) -> (thread::JoinHandle<()>, Consumer<u32>) {
    let (mut tx, rx): (Producer<u32>, Consumer<u32>) = spsc::channel(1).unwrap();
    let waker = spawn_waker(shared, unparker, move |_| tx.push(value).unwrap());
    (waker, rx)
}

/// An outside thread injects one item while the shard goes to sleep.
#[test]
fn an_injection_racing_the_sleep_wakes_the_shard() {
    model(|| {
        let shared = shared::<SleepFlag>();
        let (parker, unparker) = park::pair();
        let outside = spawn_waker(&shared, unparker, |shared| shared.injection.push(7).unwrap());
        assert_eq!(shard(&shared, &mut None, &parker, 1), [7]);
        outside.join().unwrap();
    });
}

/// Another shard pushes one item through the ring of the pair (a Release
/// store of the ring's tail) while the shard goes to sleep.
fn ring_push_while_sleeping<H: Handshake>() {
    model(|| {
        let shared = shared::<H>();
        let (parker, unparker) = park::pair();
        let (other_shard, rx) = spawn_ring_waker(&shared, unparker, 7);
        assert_eq!(shard(&shared, &mut Some(rx), &parker, 1), [7]);
        other_shard.join().unwrap();
    });
}

#[test]
fn a_ring_push_racing_the_sleep_wakes_the_shard() {
    ring_push_while_sleeping::<SleepFlag>();
}

/// Another shard (through the ring of the pair) and an outside thread
/// (through the injection queue) each hand the shard one item while it
/// sleeps, wakes and sleeps again: it ends awake with both.
#[test]
fn a_ring_push_and_an_injection_both_reach_the_shard() {
    model(|| {
        let shared = shared::<SleepFlag>();
        let (parker, unparker) = park::pair();
        let (other_shard, rx) = spawn_ring_waker(&shared, unparker.clone(), 1);
        let outside = spawn_waker(&shared, unparker, |shared| shared.injection.push(2).unwrap());
        let mut taken = shard(&shared, &mut Some(rx), &parker, 2);
        taken.sort_unstable();
        assert_eq!(taken, [1, 2]);
        other_shard.join().unwrap();
        outside.join().unwrap();
    });
}

/// The broken design: a waker that reads the flag right after its ring
/// push, without the fence. The push is a Release store and the read an
/// ordinary load, which a store buffer lets pass the store (even on x86):
/// the read misses the announcement while the sleeper's look misses the
/// push, and the shard sleeps on with the item queued. (Every access here
/// is `SeqCst`, which changes nothing: the push's store is not.)
#[derive(Default)]
struct WakerWithoutFence(AtomicBool);

impl Handshake for WakerWithoutFence {
    fn sleep(&self, look: &mut dyn FnMut() -> bool, park: &dyn Fn()) {
        self.0.store(true, Ordering::SeqCst);
        fence(Ordering::SeqCst);
        if !look() {
            park();
        }
        self.0.store(false, Ordering::SeqCst);
    }

    fn needs_wake(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }
}

#[test]
#[should_panic(expected = "deadlock")]
fn without_the_wakers_fence_a_wake_up_is_lost() {
    ring_push_while_sleeping::<WakerWithoutFence>();
}
