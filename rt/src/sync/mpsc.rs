//! The mailbox queue: many producers (other shards, outside threads), one
//! consumer (the actor's shard), in two separately bounded lanes.
//!
//! # Algorithm
//!
//! Each lane is Dmitry Vyukov's bounded queue ("Bounded MPMC queue",
//! 1024cores.net, 2010) with per-slot stamps and lap-encoded positions, the
//! same ring as [`mpmc`](super::mpmc) (read its docs for the protocol and for
//! how a capacity that is not a power of two is held exactly). Producers
//! claim positions with a CAS on `tail`, exactly as there. The consumer side
//! is simpler because there is one consumer: it owns `head`, reads it
//! without racing anyone, and advances it with a plain store instead of a
//! CAS. That is why [`MpscQueue::pop`] is `unsafe`: the caller promises that
//! one thread pops at a time. [`mailbox`] returns safe handles that keep the
//! promise by construction.
//!
//! One consumer also means that neither side ever waits for the other:
//!
//! * **Full is decided from the slot alone.** The consumer frees slots in
//!   position order, so a producer at `tail` that finds the slot still
//!   taken by last lap's element knows every position from that element up
//!   to `tail` is pushed and none is popped: exactly `capacity` elements.
//!   (`mpmc` must re-check `head`, because there a later pop can finish
//!   before an earlier one.) If the consumer has finished that pop before
//!   the push starts, its `Release` store of the free stamp happens before
//!   the push's `Acquire` load, which therefore sees it; so [`Full`] is never
//!   answered for room that a finished pop made.
//! * **Pop never waits for a sender.** If the slot under `head` is not
//!   written yet, `pop` returns `None` at once, whether the lane is empty or
//!   a sender has claimed the position and is still writing it. A shard must
//!   not stall behind a preempted outside thread; that sender has not
//!   returned from `push` yet, and a runtime that wakes the consumer after
//!   `push` returns (it must anyway) wakes it once the message is visible.
//!   So `None` means "nothing ready": when no `push` is in flight it means
//!   empty, but a message whose `push` has returned can sit behind an older
//!   one whose `push` has not. [`MpscQueue::len`] counts claimed positions,
//!   so it can be non-zero while `pop` answers `None`.
//!
//! # Order
//!
//! Each lane is FIFO: elements leave in the order their pushes claimed
//! positions. So **the messages one producer sends arrive in the order it
//! sent them** (per-producer FIFO); messages from different producers
//! interleave in claim order. Between the lanes there is no order: a system
//! signal sent after a user message may be received before it, which is the
//! point of a priority lane.
//!
//! # Two lanes
//!
//! [`Mailbox`] pairs a system lane (exit, down, stop, supervision signals)
//! with a user lane, each with its own bound, so a flood of user messages
//! can fill only the user lane and a stop signal still gets through.
//! [`Mailbox::recv`] takes a system signal if one is ready, else a user
//! message.
//!
//! # Memory ordering
//!
//! * As in `mpmc`: a producer writes the value and stores the full stamp
//!   with `Release`; the consumer loads the stamp with `Acquire` before
//!   reading the value. The consumer stores the next-lap free stamp with
//!   `Release`; the producer of the next lap loads it with `Acquire` before
//!   writing, so the two never race on the value.
//! * Producers never read `head`, and the consumer never reads `tail` to
//!   pop, so no `SeqCst` fence is needed: every decision is made from one
//!   stamp, and the Release/Acquire pairs above order it.
//! * The consumer stores `head` with `Release` after its `Acquire` load of a
//!   stamp whose push had already moved `tail`; so a `len` snapshot that
//!   loads `head` (`Acquire`) and then `tail` never sees `head` past `tail`.
//!   No model checks this snapshot (weakening the `head` store to Relaxed
//!   passes every model); it rests on this argument.

use std::cell::Cell;
use std::fmt;
use std::marker::PhantomData;

use super::error::{BlockError, CapacityError, Full};
use super::facade::{Arc, Ordering};
use super::mpmc::{Consumers, Ring, ring_bytes};
use zbmd_alloc::PooledBuf;

/// One bounded lane: many producers, one consumer.
///
/// ```
/// use zbmd_rt::sync::mpsc::MpscQueue;
///
/// let queue = MpscQueue::with_capacity(2).unwrap();
/// queue.push("a").unwrap();
/// queue.push("b").unwrap();
/// assert_eq!(queue.push("c").unwrap_err().into_inner(), "c");
/// // SAFETY: this thread is the only one that pops.
/// assert_eq!(unsafe { queue.pop() }, Some("a"));
/// ```
pub struct MpscQueue<T> {
    ring: Ring<T>,
}

// SAFETY: the queue owns its elements and moves them between threads, so it
// needs `T: Send` and no more; it never hands out `&T`.
unsafe impl<T: Send> Send for MpscQueue<T> {}
// SAFETY: producers reach a slot's value only after winning the CAS on
// `tail` for a slot whose free stamp they saw; the one consumer (the
// contract of the `unsafe` `pop`) reaches it only after seeing the full
// stamp. Each value is written by one thread and moved out by one thread,
// ordered by the stamps' Release/Acquire pairs. No `&T` is ever shared, so
// `T: Sync` is not needed.
unsafe impl<T: Send> Sync for MpscQueue<T> {}

impl<T> MpscQueue<T> {
    /// Creates a lane that holds exactly `capacity` elements.
    ///
    /// # Errors
    ///
    /// [`CapacityError`] when `capacity` is 0 or above
    /// [`CAPACITY_MAX`](super::CAPACITY_MAX).
    pub fn with_capacity(capacity: usize) -> Result<Self, CapacityError> {
        Ok(Self { ring: Ring::with_capacity(capacity)? })
    }

    /// Creates a lane of `capacity` elements in a block lent by a memory
    /// pool (at least [`MpscQueue::block_bytes`] bytes); the block goes home
    /// when the lane drops.
    ///
    /// # Errors
    ///
    /// [`BlockError`] for a bad capacity or a block that does not fit.
    pub fn in_block(capacity: usize, block: PooledBuf) -> Result<Self, BlockError> {
        Ok(Self { ring: Ring::in_block(capacity, block)? })
    }

    /// The bytes a block must hold for a lane of `capacity` elements.
    pub fn block_bytes(capacity: usize) -> usize {
        ring_bytes::<T>(capacity)
    }

    /// Pushes an element from any thread, or hands it back in [`Full`] when
    /// the lane holds `capacity` elements. Never allocates, never drops.
    ///
    /// # Errors
    ///
    /// [`Full`] with the value, when the lane was full at the moment of the
    /// push.
    #[inline]
    pub fn push(&self, value: T) -> Result<(), Full<T>> {
        self.ring.push(value, Consumers::One)
    }

    /// Pops the oldest element, or `None` when nothing is ready: the lane
    /// is empty, or its oldest position is claimed by a `push` that has not
    /// finished writing (see the module docs). Never waits.
    ///
    /// # Safety
    ///
    /// Only one thread may pop at a time (the single consumer): no two calls
    /// may overlap, and each call must happen before the next one, which
    /// holds for calls from the same thread or from threads that hand the
    /// consumer role over through something that synchronises (a join, a
    /// channel, a mutex).
    #[inline]
    pub unsafe fn pop(&self) -> Option<T> {
        let ring = &self.ring;
        let laps = ring.laps;
        // Only the consumer writes `head`, and consumer calls are ordered, so
        // this load sees the last store.
        let head = ring.head.load(Ordering::Relaxed);
        let slot = ring.slot(head);
        let stamp = slot.stamp.load(Ordering::Acquire);
        if stamp != laps.full_stamp(head) {
            // We freed this slot ourselves one lap ago (or it is fresh), so
            // until a push fills it, it is free for `head`.
            debug_assert_eq!(stamp, head, "mpsc: unexpected stamp under head");
            return None;
        }
        // SAFETY: 1. the full stamp, loaded with Acquire, says the push of
        // position `head` wrote the value and that write happened before;
        // 2. we are the only consumer (function contract) and producers do
        // not touch a full slot, so this is the only read before we store
        // the free stamp.
        let value = unsafe { slot.take() };
        ring.head.store(laps.next(head), Ordering::Release);
        slot.stamp.store(laps.free_stamp(head), Ordering::Release);
        Some(value)
    }

    /// The number of elements the lane holds when full.
    pub fn capacity(&self) -> usize {
        self.ring.capacity()
    }

    /// How many elements the lane holds: a snapshot that concurrent
    /// operations may overtake, never above the capacity, exact when no
    /// push or pop is in flight.
    pub fn len(&self) -> usize {
        self.ring.len()
    }

    /// Whether the lane looked empty at the moment of the call.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl<T> fmt::Debug for MpscQueue<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MpscQueue")
            .field("len", &self.len())
            .field("capacity", &self.capacity())
            .finish()
    }
}

/// Which lane a message came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Envelope<S, U> {
    /// A signal from the system lane (exit, down, stop, supervision).
    System(S),
    /// A message from the user lane.
    User(U),
}

/// The two-lane mailbox: a system lane (exit, down, stop, supervision
/// signals) and a user lane, each separately bounded so user traffic can
/// never fill the system lane. Many threads send; one receives.
///
/// Messages from one sender arrive in the order it sent them, within each
/// lane. A system signal may overtake user messages sent before it.
///
/// ```
/// use zbmd_rt::sync::mpsc::{Envelope, Mailbox};
///
/// let mailbox = Mailbox::with_capacity(1, 1).unwrap();
/// mailbox.send("hello").unwrap();
/// assert!(mailbox.send("again").is_err()); // the user lane is full ...
/// mailbox.send_system("stop").unwrap(); // ... the system lane is not
/// // SAFETY: this thread is the only one that receives.
/// assert_eq!(unsafe { mailbox.recv() }, Some(Envelope::System("stop")));
/// assert_eq!(unsafe { mailbox.recv() }, Some(Envelope::User("hello")));
/// ```
pub struct Mailbox<S, U> {
    system: MpscQueue<S>,
    user: MpscQueue<U>,
}

impl<S, U> Mailbox<S, U> {
    /// Creates a mailbox whose lanes hold exactly `system_capacity` signals
    /// and `user_capacity` messages.
    ///
    /// # Errors
    ///
    /// [`CapacityError`] when either capacity is 0 or above
    /// [`CAPACITY_MAX`](super::CAPACITY_MAX).
    pub fn with_capacity(
        system_capacity: usize,
        user_capacity: usize,
    ) -> Result<Self, CapacityError> {
        Ok(Self {
            system: MpscQueue::with_capacity(system_capacity)?,
            user: MpscQueue::with_capacity(user_capacity)?,
        })
    }

    /// Creates a mailbox whose lanes live in blocks lent by a memory pool
    /// (see [`MpscQueue::in_block`]).
    ///
    /// # Errors
    ///
    /// [`BlockError`] for a bad capacity or a block that does not fit.
    pub fn in_blocks(
        system: (usize, PooledBuf),
        user: (usize, PooledBuf),
    ) -> Result<Self, BlockError> {
        Ok(Self {
            system: MpscQueue::in_block(system.0, system.1)?,
            user: MpscQueue::in_block(user.0, user.1)?,
        })
    }

    /// Sends a user message from any thread.
    ///
    /// # Errors
    ///
    /// [`Full`] with the message when the user lane is full.
    #[inline]
    pub fn send(&self, msg: U) -> Result<(), Full<U>> {
        self.user.push(msg)
    }

    /// Sends a system signal from any thread; user traffic cannot fill this
    /// lane.
    ///
    /// # Errors
    ///
    /// [`Full`] with the signal when the system lane is full.
    #[inline]
    pub fn send_system(&self, signal: S) -> Result<(), Full<S>> {
        self.system.push(signal)
    }

    /// Pops a system signal if one is ready, else a user message; `None`
    /// when nothing is ready (see [`MpscQueue::pop`]).
    ///
    /// # Safety
    ///
    /// Single consumer, as [`MpscQueue::pop`]: only one thread may receive at
    /// a time, and each call must happen before the next.
    #[inline]
    pub unsafe fn recv(&self) -> Option<Envelope<S, U>> {
        // SAFETY: the caller is the single consumer of the mailbox, hence of
        // each lane (function contract).
        if let Some(signal) = unsafe { self.system.pop() } {
            return Some(Envelope::System(signal));
        }
        // SAFETY: as above.
        unsafe { self.user.pop() }.map(Envelope::User)
    }

    /// How many (system, user) elements the lanes hold: snapshots, exact
    /// when no send or receive is in flight.
    pub fn len(&self) -> (usize, usize) {
        (self.system.len(), self.user.len())
    }

    /// How many (system, user) elements the lanes hold when full.
    pub fn capacity(&self) -> (usize, usize) {
        (self.system.capacity(), self.user.capacity())
    }

    /// Whether both lanes looked empty.
    pub fn is_empty(&self) -> bool {
        self.system.is_empty() && self.user.is_empty()
    }

    /// For the receiver only: whether a send has claimed room in either
    /// lane that was not received yet (its message may still be being
    /// written), read in the sequentially consistent order the run state's
    /// wake-up handshake relies on (see [`run_state`](super::run_state)).
    pub fn has_claims(&self) -> bool {
        self.system.ring.has_claims() || self.user.ring.has_claims()
    }
}

impl<S, U> fmt::Debug for Mailbox<S, U> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Mailbox").field("system", &self.system).field("user", &self.user).finish()
    }
}

/// Creates a mailbox and returns its safe handles: a sender to clone for
/// every producer and the one receiver.
///
/// ```
/// use zbmd_rt::sync::mpsc::{Envelope, mailbox};
///
/// let (tx, mut rx) = mailbox::<&str, u32>(4, 16).unwrap();
/// let producer = {
///     let tx = tx.clone();
///     std::thread::spawn(move || tx.send(7).unwrap())
/// };
/// producer.join().unwrap();
/// tx.send_system("stop").unwrap();
/// assert_eq!(rx.recv(), Some(Envelope::System("stop")));
/// assert_eq!(rx.recv(), Some(Envelope::User(7)));
/// assert_eq!(rx.recv(), None);
/// ```
///
/// # Errors
///
/// [`CapacityError`] when either capacity is 0 or above
/// [`CAPACITY_MAX`](super::CAPACITY_MAX).
#[expect(
    clippy::type_complexity,
    reason = "the pair of handles reads best spelled out; an alias would hide it"
)]
pub fn mailbox<S, U>(
    system_capacity: usize,
    user_capacity: usize,
) -> Result<(MailboxSender<S, U>, MailboxReceiver<S, U>), CapacityError> {
    let mailbox = Arc::new(Mailbox::with_capacity(system_capacity, user_capacity)?);
    let sender = MailboxSender { mailbox: mailbox.clone() };
    let receiver = MailboxReceiver { mailbox, not_sync: PhantomData };
    Ok((sender, receiver))
}

/// The sending side of a [`mailbox`]: clone it for every producer.
pub struct MailboxSender<S, U> {
    mailbox: Arc<Mailbox<S, U>>,
}

impl<S, U> MailboxSender<S, U> {
    /// Sends a user message; see [`Mailbox::send`].
    ///
    /// # Errors
    ///
    /// [`Full`] with the message when the user lane is full.
    #[inline]
    pub fn send(&self, msg: U) -> Result<(), Full<U>> {
        self.mailbox.send(msg)
    }

    /// Sends a system signal; see [`Mailbox::send_system`].
    ///
    /// # Errors
    ///
    /// [`Full`] with the signal when the system lane is full.
    #[inline]
    pub fn send_system(&self, signal: S) -> Result<(), Full<S>> {
        self.mailbox.send_system(signal)
    }
}

impl<S, U> Clone for MailboxSender<S, U> {
    fn clone(&self) -> Self {
        Self { mailbox: self.mailbox.clone() }
    }
}

impl<S, U> fmt::Debug for MailboxSender<S, U> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MailboxSender").field("mailbox", &*self.mailbox).finish()
    }
}

/// The receiving side of a [`mailbox`]. Exactly one exists per mailbox; it
/// can move to another thread (`Send`) but not be shared or cloned, which
/// is what makes [`recv`](Self::recv) safe.
///
/// ```compile_fail
/// fn shared<T: Sync>(_: &T) {}
/// let (_tx, rx) = zbmd_rt::sync::mpsc::mailbox::<(), u32>(1, 1).unwrap();
/// shared(&rx); // a receiver is not `Sync`
/// ```
///
/// ```compile_fail
/// let (_tx, rx) = zbmd_rt::sync::mpsc::mailbox::<(), u32>(1, 1).unwrap();
/// let second = rx.clone(); // nor `Clone`
/// ```
pub struct MailboxReceiver<S, U> {
    mailbox: Arc<Mailbox<S, U>>,
    /// `Cell` is `Send` but not `Sync`: the receiver may move, not be shared.
    not_sync: PhantomData<Cell<()>>,
}

impl<S, U> MailboxReceiver<S, U> {
    /// Pops a system signal if one is ready, else a user message; `None`
    /// when nothing is ready (see [`MpscQueue::pop`]).
    #[inline]
    pub fn recv(&mut self) -> Option<Envelope<S, U>> {
        // SAFETY: `mailbox` creates exactly one receiver, which is neither
        // `Clone` nor `Sync`, and `recv` takes `&mut self`: so calls never
        // overlap, and a move of the receiver to another thread synchronises
        // (spawn, channel), so each call happens before the next.
        unsafe { self.mailbox.recv() }
    }

    /// How many (system, user) elements the lanes hold; see [`Mailbox::len`].
    pub fn len(&self) -> (usize, usize) {
        self.mailbox.len()
    }

    /// Whether both lanes looked empty.
    pub fn is_empty(&self) -> bool {
        self.mailbox.is_empty()
    }

    /// See [`Mailbox::has_claims`].
    pub fn has_claims(&self) -> bool {
        self.mailbox.has_claims()
    }
}

impl<S, U> fmt::Debug for MailboxReceiver<S, U> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MailboxReceiver").field("mailbox", &*self.mailbox).finish()
    }
}

#[cfg(all(test, not(zbmd_loom)))]
mod tests {
    use super::*;
    use crate::sync::CAPACITY_MAX;
    use std::sync::atomic::AtomicUsize as StdAtomicUsize;

    fn assert_send<T: Send>() {}
    fn assert_sync<T: Sync>() {}

    #[test]
    fn handles_are_send_and_the_sender_is_sync() {
        assert_send::<MpscQueue<String>>();
        assert_sync::<MpscQueue<String>>();
        assert_send::<MailboxSender<u8, String>>();
        assert_sync::<MailboxSender<u8, String>>();
        assert_send::<MailboxReceiver<u8, String>>();
    }

    #[test]
    fn rejects_zero_and_oversized_capacities() {
        assert_eq!(MpscQueue::<u8>::with_capacity(0).unwrap_err(), CapacityError::Zero);
        let too_large = CapacityError::TooLarge { requested: CAPACITY_MAX + 1, max: CAPACITY_MAX };
        assert_eq!(MpscQueue::<u8>::with_capacity(CAPACITY_MAX + 1).unwrap_err(), too_large);
        assert_eq!(Mailbox::<u8, u8>::with_capacity(0, 4).unwrap_err(), CapacityError::Zero);
        assert_eq!(Mailbox::<u8, u8>::with_capacity(4, 0).unwrap_err(), CapacityError::Zero);
        assert_eq!(mailbox::<u8, u8>(4, CAPACITY_MAX + 1).unwrap_err(), too_large);
    }

    #[test]
    fn capacity_one_alternates_full_and_empty_across_many_laps() {
        let queue = MpscQueue::with_capacity(1).unwrap();
        for i in 0..1_000u32 {
            assert!(queue.is_empty());
            // SAFETY: this test's thread is the only consumer.
            assert_eq!(unsafe { queue.pop() }, None);
            queue.push(i).unwrap();
            assert_eq!(queue.len(), 1);
            assert_eq!(queue.push(i + 1), Err(Full(i + 1)));
            // SAFETY: as above.
            assert_eq!(unsafe { queue.pop() }, Some(i));
        }
    }

    #[test]
    fn holds_exactly_a_non_power_of_two_capacity_across_laps() {
        let queue = MpscQueue::with_capacity(5).unwrap();
        let (mut next_in, mut next_out) = (0u32, 0u32);
        for round in 0..40 {
            while queue.push(next_in).is_ok() {
                next_in += 1;
            }
            assert_eq!(queue.len(), 5);
            for _ in 0..=(round % 5) {
                // SAFETY: this test's thread is the only consumer.
                assert_eq!(unsafe { queue.pop() }, Some(next_out));
                next_out += 1;
            }
        }
        assert_eq!(next_in - next_out, queue.len() as u32);
    }

    #[test]
    fn a_full_user_lane_leaves_the_system_lane_open() {
        let (tx, mut rx) = mailbox::<&str, u32>(2, 3).unwrap();
        for i in 0..3 {
            tx.send(i).unwrap();
        }
        assert_eq!(tx.send(3), Err(Full(3)));
        tx.send_system("down").unwrap();
        tx.send_system("stop").unwrap();
        assert_eq!(tx.send_system("extra"), Err(Full("extra")));
        assert_eq!(rx.len(), (2, 3));
        assert_eq!(rx.recv(), Some(Envelope::System("down")));
        tx.send(3).unwrap_err();
        assert_eq!(rx.recv(), Some(Envelope::System("stop")));
        for i in 0..3 {
            assert_eq!(rx.recv(), Some(Envelope::User(i)));
        }
        assert_eq!(rx.recv(), None);
        assert!(rx.is_empty());
    }

    #[test]
    fn dropping_the_last_handle_drops_what_is_still_queued() {
        static DROPS: StdAtomicUsize = StdAtomicUsize::new(0);
        struct Counted;
        impl Drop for Counted {
            fn drop(&mut self) {
                DROPS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
        }
        let (tx, mut rx) = mailbox::<Counted, Counted>(2, 3).unwrap();
        for _ in 0..3 {
            assert!(tx.send(Counted).is_ok());
        }
        assert!(tx.send_system(Counted).is_ok());
        drop(tx.send(Counted).unwrap_err());
        drop(rx.recv());
        assert_eq!(DROPS.load(std::sync::atomic::Ordering::Relaxed), 2);
        drop(rx);
        assert_eq!(
            DROPS.load(std::sync::atomic::Ordering::Relaxed),
            2,
            "the sender holds the mailbox"
        );
        drop(tx);
        assert_eq!(DROPS.load(std::sync::atomic::Ordering::Relaxed), 5);
    }

    #[test]
    fn producers_on_other_threads_keep_their_order() {
        let (tx, mut rx) = mailbox::<(), (usize, u32)>(1, 8).unwrap();
        std::thread::scope(|scope| {
            for producer in 0..2 {
                let tx = tx.clone();
                scope.spawn(move || {
                    for i in 0..1_000u32 {
                        while tx.send((producer, i)).is_err() {
                            std::thread::yield_now();
                        }
                    }
                });
            }
            let mut next = [0u32; 2];
            while next != [1_000; 2] {
                match rx.recv() {
                    Some(Envelope::User((producer, i))) => {
                        assert_eq!(i, next[producer]);
                        next[producer] += 1;
                    }
                    Some(Envelope::System(())) => unreachable!("nobody sends signals"),
                    None => std::thread::yield_now(),
                }
            }
        });
        assert!(rx.is_empty());
    }
}
