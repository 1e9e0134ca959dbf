//! The sleep/wake handshake of an idle shard: how a shard goes to sleep
//! without missing work that another shard or an outside thread hands it at
//! that very moment.
//!
//! # Protocol
//!
//! The sleeper (the shard's own thread) and any number of wakers share one
//! flag, [`SleepFlag`]:
//!
//! ```text
//!   sleeper                                 waker
//!   flag.announce()   sleeping = true       push the work (ring, queue)
//!                     fence(SeqCst)         flag.needs_wake(): fence(SeqCst)
//!   look at every source once more                            read sleeping
//!   nothing? park                           true? unpark the sleeper
//!   drop the guard    sleeping = false
//! ```
//!
//! This is Dekker's handshake, as in the wake-up of an actor
//! ([`run_state`](super::run_state)) and in BEAM's and Go's schedulers: each
//! side writes its own location (the flag; a queue's index), issues a
//! `SeqCst` fence, then reads the other side's. The two fences are ordered
//! one way or the other in the single total order of `SeqCst` operations
//! (C++20 \[atomics.fences\] p6 and \[atomics.order\] p4):
//!
//! * the sleeper's fence first: the waker's read of the flag, after its own
//!   fence, returns `true` (or a later value, written after the sleeper's
//!   look, when it is awake again), and the waker unparks it;
//! * the waker's fence first: the sleeper's look, after its own fence,
//!   reads the queue index the push wrote (or a later one) and finds the
//!   work, so it does not park.
//!
//! Both may happen (a spurious unpark, which the parker's token absorbs);
//! neither is impossible. A lost wake-up would leave a shard asleep with
//! work queued until the park's backstop timeout: `loom_tests/tests/sleep.rs`
//! models it with the real injection queue, ring and parker, and shows that
//! the waker's fence is needed.
//!
//! # Memory ordering
//!
//! The fences carry the whole handshake, so the flag's own accesses are
//! `Relaxed`: the fence rule above holds for any atomic accesses on either
//! side of the fences, and the flag publishes no data (the work travels
//! through the queue's own Release/Acquire pairs and the parker's token).
//! loom models `SeqCst` fences, so the model checks exactly this code. The
//! cost sits on the rare paths: the sleeper pays one fence per park, the
//! waker one fence per wake-up it might owe (on x86 an `mfence`, against
//! the futex syscall an unpark costs).

use crossbeam_utils::CachePadded;

use super::facade::{AtomicBool, Ordering, fence};

/// Whether a shard is asleep or about to be; see the module's doc.
#[derive(Debug, Default)]
pub struct SleepFlag {
    sleeping: CachePadded<AtomicBool>,
}

impl SleepFlag {
    /// A flag for an awake shard.
    pub fn new() -> Self {
        Self::default()
    }

    /// The sleeper announces that it is about to sleep. Look at every source
    /// of work after this returns and park only if all were empty; the
    /// announcement ends when the guard drops (after the park, or at once).
    #[must_use = "look for work while the guard lives, then drop it"]
    pub fn announce(&self) -> Announced<'_> {
        // Relaxed: the fence below orders it before the sleeper's look.
        self.sleeping.store(true, Ordering::Relaxed);
        fence(Ordering::SeqCst);
        Announced { flag: self }
    }

    /// The waker, after pushing work for the sleeper: whether the sleeper
    /// may have missed the push and must be unparked.
    #[inline]
    pub fn needs_wake(&self) -> bool {
        fence(Ordering::SeqCst);
        // Relaxed: the fence above orders the push before this read.
        self.sleeping.load(Ordering::Relaxed)
    }
}

/// The sleeper's announcement, from [`SleepFlag::announce`] until dropped.
#[derive(Debug)]
pub struct Announced<'a> {
    flag: &'a SleepFlag,
}

impl Drop for Announced<'_> {
    fn drop(&mut self) {
        // Relaxed: a waker that reads `false` acts as if the sleeper were
        // awake, which it is; whatever the waker pushed, the sleeper's
        // next round (or the look it is making now) takes.
        self.flag.sleeping.store(false, Ordering::Relaxed);
    }
}

#[cfg(all(test, not(zbmd_loom)))]
mod tests {
    use super::*;

    #[test]
    fn the_flag_is_up_exactly_while_an_announcement_lives() {
        let flag = SleepFlag::new();
        assert!(!flag.needs_wake());
        let announced = flag.announce();
        assert!(flag.needs_wake());
        assert!(flag.needs_wake(), "reading the flag does not lower it");
        drop(announced);
        assert!(!flag.needs_wake());
    }
}
