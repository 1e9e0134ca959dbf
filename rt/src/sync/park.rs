//! Parking an idle consumer without losing a wake-up: a token-carrying
//! parker on a Linux futex.
//!
//! # Design
//!
//! The parker of `std::thread::park` and of parking_lot, reduced to one
//! futex word: an `AtomicU32` in one of three states,
//!
//! * `EMPTY`: no token, nobody asleep;
//! * `PARKED`: the [`Parker`] is asleep, or about to sleep;
//! * `NOTIFIED`: an [`Unparker`] left a token that the next park consumes.
//!
//! [`Unparker::unpark`] swaps in `NOTIFIED` and, only when it replaced
//! `PARKED`, issues `FUTEX_WAKE` (Drepper, "Futexes Are Tricky", 2011: pay
//! for the system call only when someone may sleep). [`Parker::park`] moves
//! `EMPTY` to `PARKED` (or consumes a waiting token and returns at once),
//! then calls `FUTEX_WAIT(word, PARKED)` until it can move `NOTIFIED` back
//! to `EMPTY`. Several unparks before one park leave one token, so they
//! count as one, exactly like `std::thread::park`.
//!
//! The futex makes the "is the word still `PARKED`?" check and the sleep one
//! atomic step with respect to `FUTEX_WAKE` on the same word (futex(2): the
//! load, the comparison and the blocking "happen atomically and are totally
//! ordered with respect to concurrent operations" on the word). So an unpark
//! that lands between our `EMPTY -> PARKED` and the wait makes the wait
//! return at once (`EAGAIN`), and one that lands after finds us asleep and
//! wakes us. The wait also returns on a signal (`EINTR`), on a timeout, and
//! spuriously; every return re-checks the word, so all four are harmless.
//!
//! # Memory ordering
//!
//! `unpark` swaps with Release and the parker leaves `NOTIFIED` only with an
//! Acquire read-modify-write, so everything the unparker wrote before
//! unparking (the element it pushed) is visible once `park` returns. All
//! transitions are read-modify-writes on one word, whose modification order
//! is total: there is no store-load pattern, and no SeqCst is needed. The
//! `EMPTY -> PARKED` step carries no data and is Relaxed.
//!
//! # The race-free consumer pattern
//!
//! ```
//! use std::sync::atomic::{AtomicU64, Ordering};
//! use std::sync::Arc;
//! use zbmd_rt::sync::park;
//!
//! let (parker, unparker) = park::pair();
//! let queue = Arc::new(AtomicU64::new(0)); // stands in for a real queue
//! let producer = {
//!     let queue = queue.clone();
//!     std::thread::spawn(move || {
//!         queue.store(7, Ordering::Relaxed); // 1. push
//!         unparker.unpark(); //                  2. then unpark
//!     })
//! };
//! let item = loop {
//!     match queue.load(Ordering::Relaxed) {  // check the queue
//!         0 => parker.park(),                 // empty: park, then recheck
//!         item => break item,
//!     }
//! };
//! assert_eq!(item, 7);
//! producer.join().unwrap();
//! ```
//!
//! No wake-up is lost: take the modification order of the state word. If the
//! producer's swap to `NOTIFIED` comes before the consumer's `EMPTY ->
//! PARKED`, that step fails, the consumer consumes the token (Acquire) and
//! returns at once, and its recheck sees the push. If it comes after, the
//! producer saw `PARKED` and wakes the futex; the consumer's wait returns
//! (woken, or because the word is no longer `PARKED`), it consumes the token
//! (Acquire), and its recheck sees the push. Either way `park` returns only
//! after consuming a token written after the push, so the recheck cannot
//! miss it. A token left over from an earlier unpark only makes `park`
//! return early; the loop rechecks and parks again.
//!
//! # Under loom
//!
//! The futex is emulated with loom's mutex and condvar, with the same
//! check-and-sleep atomicity as the kernel's; a timed park's timeout
//! "elapses" at once (see `sync/futex.rs`), so the models check the
//! exact protocol above.

use std::cell::Cell;
use std::fmt;
use std::marker::PhantomData;
use std::time::Duration;

use super::facade::{Arc, AtomicU32, Ordering};
use super::futex::{Deadline, Futex};

/// No token and nobody asleep.
const EMPTY: u32 = 0;
/// The parker sleeps on the futex, or is about to.
const PARKED: u32 = 1;
/// An unpark left a token for the next park.
const NOTIFIED: u32 = 2;

/// Creates a parker and its first unparker (clone it for more).
///
/// ```
/// use std::time::Duration;
/// use zbmd_rt::sync::park;
///
/// let (parker, unparker) = park::pair();
/// unparker.unpark();
/// unparker.unpark(); // tokens do not add up
/// parker.park(); // returns at once: the token was waiting
/// assert!(!parker.park_timeout(Duration::from_millis(1))); // no token left
/// ```
pub fn pair() -> (Parker, Unparker) {
    let inner = Arc::new(Inner { state: AtomicU32::new(EMPTY), futex: Futex::new() });
    let unparker = Unparker { inner: inner.clone() };
    (Parker { inner, _not_sync: PhantomData }, unparker)
}

/// The state word and the sleep it parks on.
struct Inner {
    state: AtomicU32,
    futex: Futex,
}

impl Inner {
    /// `EMPTY -> PARKED`. Returns false, having consumed the token, when an
    /// unpark came first; the caller then must not sleep.
    fn begin_park(&self) -> bool {
        match self.state.compare_exchange(EMPTY, PARKED, Ordering::Relaxed, Ordering::Relaxed) {
            Ok(_) => true,
            Err(state) => {
                debug_assert_eq!(state, NOTIFIED, "park: only the parker sets PARKED");
                // A read-modify-write, not a store: a second unpark landing
                // now is merged into this token rather than overwritten
                // without its Release being acquired.
                let state = self.state.swap(EMPTY, Ordering::Acquire);
                debug_assert_eq!(state, NOTIFIED, "park: a token vanished");
                false
            }
        }
    }

    /// `NOTIFIED -> EMPTY` after a wait returned; false if still `PARKED`
    /// (a spurious wake-up, a signal or a timeout).
    fn take_token(&self) -> bool {
        self.state.compare_exchange(NOTIFIED, EMPTY, Ordering::Acquire, Ordering::Relaxed).is_ok()
    }

    /// Leaves `PARKED` when giving up on a timeout; true if a token came in
    /// the meantime (consumed).
    fn end_park(&self) -> bool {
        self.state.swap(EMPTY, Ordering::Acquire) == NOTIFIED
    }
}

/// The sleeping side. Exactly one exists per pair; it may move between
/// threads but not be shared or cloned:
///
/// ```compile_fail
/// fn shared<T: Sync>(_: &T) {}
/// let (parker, _) = zbmd_rt::sync::park::pair();
/// shared(&parker); // error: `Parker` is not `Sync`
/// ```
pub struct Parker {
    inner: Arc<Inner>,
    /// Two threads parking on one word would steal each other's tokens.
    _not_sync: PhantomData<Cell<()>>,
}

impl Parker {
    /// Sleeps until a token is available, then consumes it. Returns at once
    /// if an unpark came since the last park.
    pub fn park(&self) {
        let inner = &*self.inner;
        if !inner.begin_park() {
            return;
        }
        loop {
            inner.futex.wait(&inner.state, PARKED, None);
            if inner.take_token() {
                return;
            }
        }
    }

    /// Like [`park`](Self::park), but gives up after about `timeout`.
    /// Returns true if it consumed a token, false if the time ran out first.
    pub fn park_timeout(&self, timeout: Duration) -> bool {
        let inner = &*self.inner;
        if !inner.begin_park() {
            return true;
        }
        let deadline = Deadline::after(timeout);
        while let Some(remaining) = deadline.remaining() {
            inner.futex.wait(&inner.state, PARKED, remaining);
            if inner.take_token() {
                return true;
            }
        }
        inner.end_park()
    }

    /// Another unparker for this parker.
    pub fn unparker(&self) -> Unparker {
        Unparker { inner: self.inner.clone() }
    }
}

/// The waking side. Clone it freely.
#[derive(Clone)]
pub struct Unparker {
    inner: Arc<Inner>,
}

impl Unparker {
    /// Leaves a token for the parker and wakes it if it sleeps. Everything
    /// written before this call is visible to the parker once its park
    /// returns.
    pub fn unpark(&self) {
        let inner = &*self.inner;
        if inner.state.swap(NOTIFIED, Ordering::Release) == PARKED {
            inner.futex.wake_one(&inner.state);
        }
    }
}

impl fmt::Debug for Parker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("park::Parker").finish_non_exhaustive()
    }
}

impl fmt::Debug for Unparker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("park::Unparker").finish_non_exhaustive()
    }
}

#[cfg(all(test, not(zbmd_loom)))]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicBool as StdAtomicBool;

    fn assert_send<T: Send>() {}
    fn assert_send_sync_clone<T: Send + Sync + Clone>() {}

    #[test]
    fn ends_have_the_right_auto_traits() {
        assert_send::<Parker>();
        assert_send_sync_clone::<Unparker>();
    }

    #[test]
    fn unpark_before_park_returns_at_once_and_tokens_do_not_add_up() {
        let (parker, unparker) = pair();
        unparker.unpark();
        unparker.clone().unpark();
        parker.park();
        assert!(!parker.park_timeout(Duration::from_millis(5)), "a second token appeared");
        parker.unparker().unpark();
        assert!(parker.park_timeout(Duration::from_secs(60)));
    }

    #[test]
    fn park_timeout_of_zero_only_takes_a_waiting_token() {
        let (parker, unparker) = pair();
        assert!(!parker.park_timeout(Duration::ZERO));
        unparker.unpark();
        assert!(parker.park_timeout(Duration::ZERO));
        assert!(!parker.park_timeout(Duration::ZERO));
    }

    #[test]
    fn huge_timeouts_mean_no_deadline() {
        let (parker, unparker) = pair();
        let waker = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(20));
            unparker.unpark();
        });
        assert!(parker.park_timeout(Duration::MAX));
        waker.join().unwrap();
    }

    #[test]
    fn unpark_wakes_a_sleeping_parker_and_publishes_writes() {
        let (parker, unparker) = pair();
        let flag = std::sync::Arc::new(StdAtomicBool::new(false));
        let waker = {
            let flag = flag.clone();
            std::thread::spawn(move || {
                std::thread::sleep(Duration::from_millis(20));
                flag.store(true, std::sync::atomic::Ordering::Relaxed);
                unparker.unpark();
            })
        };
        while !flag.load(std::sync::atomic::Ordering::Relaxed) {
            parker.park();
        }
        waker.join().unwrap();
        assert_eq!(parker.inner.state.load(Ordering::Relaxed), EMPTY);
    }

    #[test]
    fn a_parker_can_move_to_another_thread() {
        let (parker, unparker) = pair();
        unparker.unpark();
        std::thread::spawn(move || parker.park()).join().unwrap();
    }
}
