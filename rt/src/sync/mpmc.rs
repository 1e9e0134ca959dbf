//! A bounded multi-producer multi-consumer queue: the global overflow and
//! blocking hand-off lane.
//!
//! # Algorithm
//!
//! Dmitry Vyukov's bounded MPMC queue ("Bounded MPMC queue", 1024cores.net,
//! 2010). Every slot of a fixed ring carries its own sequence number, the
//! *stamp*, next to the value. Two counters, `tail` (next position to push)
//! and `head` (next position to pop), each on its own 128-byte line
//! ([`CachePadded`]), are advanced by compare-and-swap. A producer that finds
//! the stamp of the slot under `tail` equal to `tail` knows the slot is free
//! for this lap, claims the position with a CAS on `tail`, writes the value
//! and stores `tail + 1` into the stamp: "full, waiting for the pop of
//! position `tail`". A consumer that finds the stamp of the slot under `head`
//! equal to `head + 1` claims the position with a CAS on `head`, moves the
//! value out and stores `head + one lap` into the stamp: "free, waiting for
//! the push one lap later". Each thread touches the shared counter once and
//! the slot itself; producers and consumers of different slots never wait
//! for each other.
//!
//! ## Positions: exact capacity without a power of two
//!
//! Vyukov's original masks a free-running counter, so its capacity must be a
//! power of two. Here a position packs a *lap* and an *index*, as crossbeam's
//! `ArrayQueue` does: with `one_lap` the smallest power of two above
//! `capacity`, a position is `lap * one_lap + index` with
//! `index < capacity`. Stepping past the last index does not go to index
//! `capacity`; it jumps to index 0 of the next lap (`Laps::next`). So one
//! lap holds exactly `capacity` positions and the ring holds exactly
//! `capacity` elements, whatever that number is. `one_lap` is strictly above
//! `capacity` so that the "full" stamp of the last index, `index + 1 ==
//! capacity`, is still distinct from index 0 of the next lap. The lap part
//! wraps around `usize` (all arithmetic on it is wrapping); with at most
//! 2^31 positions per lap, a 64-bit counter has 2^33 laps before it repeats.
//!
//! ## Full and empty, without false answers
//!
//! A producer at position `t` may find the slot still taken by the push one
//! lap earlier (stamp `t - one_lap` while that push writes, `t - one_lap +
//! 1` once written). Either the queue is full, or a consumer has already
//! claimed that element (moved `head` past it) and is still moving it out
//! while later pops have made room. Answering [`Full`] in the second case
//! would be a lie. So the producer issues a `SeqCst` fence and loads
//! `head`: only if `head` is still `t - one_lap`, that is, no pop has
//! claimed the oldest element, is the queue full; otherwise the slot is a
//! few instructions from free and the producer retries. (crossbeam's
//! `ArrayQueue` makes the same re-check.) A consumer that finds a slot not
//! yet written for its lap does the mirror image: after a `SeqCst` fence it
//! loads `tail`, and only `tail == head` means empty; otherwise a producer
//! has claimed the position and is writing it, and the consumer waits for
//! it. This is why the queue is not lock-free in the strict sense: a thread
//! preempted between its claim and its stamp store holds up the thread that
//! wants that one slot next. (The [`mpsc`](super::mpsc) lanes, with one
//! consumer, need neither wait.)
//!
//! # Memory ordering
//!
//! * The stamp publishes the value. A producer writes the value, then
//!   stores the stamp with `Release`; a consumer loads the stamp with
//!   `Acquire` before reading the value. The mirror pair hands the slot
//!   back: the consumer's `Release` store of the next-lap stamp pairs with
//!   the `Acquire` stamp load of the producer one lap later, so the
//!   producer's write never races with the consumer's read.
//! * The CASes on `head` and `tail` only claim positions; the data travels
//!   through the stamps, so the CAS failure ordering and the loads of a
//!   thread's own counter are `Relaxed`.
//! * The full and empty decisions use `SeqCst`: the CASes on `head` and
//!   `tail` are `SeqCst` and the deciding thread issues a `SeqCst` fence
//!   before loading the other side's counter. Every counter CAS that
//!   precedes that fence in the single total order of `SeqCst` operations is
//!   then visible to the load, so "`head` is still `t - one_lap`" (or "`tail`
//!   is still `head`") held at the fence: the queue was full (empty) at that
//!   point of the total order, which is where the answer is linearized.
//! * [`MpmcQueue::len`] loads `head` before `tail`, both with `Acquire`. A
//!   `head` value was written by a pop that had seen (`Acquire`) the stamp
//!   of a push, whose `tail` CAS came before its stamp store; so the later
//!   `tail` load sees at least as far, and a snapshot never has `head`
//!   past `tail`. No model checks this snapshot (weakening either load to
//!   Relaxed passes every model); it rests on this argument.
//!
//! The queue is linearizable and FIFO: elements leave in the order their
//! pushes claimed positions, so the elements one producer pushes leave in
//! the order it pushed them.

use std::fmt;
use std::mem::{self, ManuallyDrop, MaybeUninit};
use std::ptr::NonNull;

use crossbeam_utils::CachePadded;

use super::error::{BlockError, CapacityError, Full, check_capacity};
use super::facade::{AtomicUsize, Ordering, UnsafeCell, fence, spin_hint};
use zbmd_alloc::PooledBuf;

/// The position arithmetic of a ring that holds exactly `capacity` elements:
/// a position is `lap * one_lap + index`, with `index < capacity`.
#[derive(Clone, Copy, Debug)]
pub(super) struct Laps {
    capacity: usize,
    /// The smallest power of two strictly above `capacity`.
    one_lap: usize,
}

impl Laps {
    fn new(capacity: usize) -> Self {
        debug_assert!(capacity >= 1);
        Self { capacity, one_lap: (capacity + 1).next_power_of_two() }
    }

    /// The slot of a position.
    #[inline(always)]
    pub(super) fn index(self, position: usize) -> usize {
        position & (self.one_lap - 1)
    }

    /// The position after `position`: the next index, or index 0 of the next
    /// lap after the last index.
    #[inline(always)]
    pub(super) fn next(self, position: usize) -> usize {
        if self.index(position) + 1 < self.capacity {
            position + 1
        } else {
            (position & !(self.one_lap - 1)).wrapping_add(self.one_lap)
        }
    }

    /// The stamp of a slot that holds the element pushed at `position`. The
    /// index part is at most `capacity < one_lap`, so it never carries into
    /// the lap.
    #[inline(always)]
    pub(super) fn full_stamp(self, position: usize) -> usize {
        position + 1
    }

    /// The stamp of a slot freed by the pop at `position`: free for the push
    /// at the same index one lap later.
    #[inline(always)]
    pub(super) fn free_stamp(self, position: usize) -> usize {
        position.wrapping_add(self.one_lap)
    }

    /// The position one lap before `position` (same index).
    #[inline(always)]
    pub(super) fn lap_before(self, position: usize) -> usize {
        position.wrapping_sub(self.one_lap)
    }

    /// Whether `stamp`, found in the slot of `position`, is still last lap's:
    /// the push one lap earlier has claimed the slot (stamp `position -
    /// one_lap`) or filled it (that plus one), and its pop has not freed it.
    #[inline(always)]
    pub(super) fn is_last_lap(self, stamp: usize, position: usize) -> bool {
        stamp.wrapping_sub(self.lap_before(position)) <= 1
    }

    /// How many positions lie from `head` up to `tail`, at most `capacity`.
    /// Exact for a consistent pair; a `tail` read long after `head` gives
    /// `capacity`.
    pub(super) fn distance(self, head: usize, tail: usize) -> usize {
        let lap_mask = !(self.one_lap - 1);
        let laps = (tail & lap_mask).wrapping_sub(head & lap_mask) / self.one_lap;
        let (head_index, tail_index) = (self.index(head), self.index(tail));
        match laps {
            0 => tail_index.saturating_sub(head_index),
            1 => (self.capacity - head_index + tail_index).min(self.capacity),
            _ => self.capacity,
        }
    }
}

/// One cell of the ring: the stamp says whose turn it is, the value is
/// initialised exactly while the stamp is a "full" stamp.
pub(super) struct Slot<T> {
    pub(super) stamp: AtomicUsize,
    value: UnsafeCell<MaybeUninit<T>>,
}

impl<T> Slot<T> {
    /// A slot free for lap 0 of its position.
    fn free(index: usize) -> Self {
        Slot { stamp: AtomicUsize::new(index), value: UnsafeCell::new(MaybeUninit::uninit()) }
    }

    /// Writes the value of a claimed push.
    ///
    /// # Safety
    ///
    /// The caller claimed this slot for a push (saw its free stamp with
    /// `Acquire`, then won the counter CAS or is the only producer of that
    /// position) and has not yet published the full stamp.
    #[inline(always)]
    pub(super) unsafe fn write(&self, value: T) {
        // SAFETY: the caller holds the only claim on the slot, and the
        // `Acquire` load of the free stamp ordered the previous reader's move
        // out before this write (function contract).
        self.value.with_mut(|cell| unsafe { (*cell).write(value) });
    }

    /// Moves the value of a claimed pop out.
    ///
    /// # Safety
    ///
    /// The caller claimed this slot for a pop (saw its full stamp with
    /// `Acquire`, then won the counter CAS or is the single consumer) and has
    /// not yet published the free stamp; the value is read exactly once.
    #[inline(always)]
    pub(super) unsafe fn take(&self) -> T {
        // SAFETY: 1. the full stamp, loaded with `Acquire`, says the value was
        // initialised and its write happened before; 2. the caller's claim is
        // the only one, so nobody else reads or overwrites it before the free
        // stamp is stored (function contract).
        self.value.with_mut(|cell| unsafe { (*cell).assume_init_read() })
    }
}

/// Who pops from a ring. It decides what a push concludes from a slot that
/// still holds last lap's element.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Consumers {
    /// Pops claim positions by CAS and finish in any order: the element may
    /// already be claimed by a slow pop while later pops have made room, so
    /// the push confirms against `head` and waits if a pop is in flight.
    Many,
    /// One consumer frees slots in position order: last lap's element
    /// still here means every position since is pushed and none popped, so
    /// the ring is full (see `mpsc`'s module docs).
    One,
}

/// The ring of stamped slots and its two counters, shared by [`MpmcQueue`]
/// and [`MpscQueue`](super::mpsc::MpscQueue); each of them adds its own pop.
pub(super) struct Ring<T> {
    /// Next position to pop.
    pub(super) head: CachePadded<AtomicUsize>,
    /// Next position to push.
    pub(super) tail: CachePadded<AtomicUsize>,
    pub(super) laps: Laps,
    /// `capacity` slots; slot `i` starts with stamp `i` (free for lap 0).
    slots: NonNull<[Slot<T>]>,
    /// Who owns the memory behind `slots`.
    storage: Storage,
}

/// Where a ring's slots live.
enum Storage {
    /// A `Box<[Slot<T>]>` of the ring's own (`slots` came from `Box::into_raw`).
    Heap,
    /// A block lent by a shard's pool (zbmd-alloc), which goes home when the
    /// ring drops: no allocation after startup for an actor's mailbox.
    Pooled(ManuallyDrop<PooledBuf>),
}

/// The bytes of a block that holds a ring of `capacity` slots of `T`.
pub(crate) fn ring_bytes<T>(capacity: usize) -> usize {
    capacity.saturating_mul(mem::size_of::<Slot<T>>())
}

impl<T> Ring<T> {
    pub(super) fn with_capacity(capacity: usize) -> Result<Self, CapacityError> {
        let capacity = check_capacity(capacity)?;
        let slots: Box<[Slot<T>]> = (0..capacity).map(Slot::free).collect();
        Ok(Self::new(NonNull::from(Box::leak(slots)), Storage::Heap))
    }

    /// A ring of `capacity` slots written into `block`, which must hold
    /// [`ring_bytes::<T>(capacity)`](ring_bytes) bytes aligned for the
    /// slots; [`BlockError::Unfit`] (the block dropped, so back home) when
    /// it does not.
    pub(super) fn in_block(capacity: usize, block: PooledBuf) -> Result<Self, BlockError> {
        let capacity = check_capacity(capacity).map_err(BlockError::Capacity)?;
        let base = block.as_ptr() as *mut Slot<T>;
        if block.capacity() < ring_bytes::<T>(capacity) || !base.is_aligned() {
            return Err(BlockError::Unfit);
        }
        for index in 0..capacity {
            // SAFETY: the block holds `capacity` slots at `base`, aligned
            // (checked above), and nothing else uses it: it is ours until
            // the ring drops.
            unsafe { base.add(index).write(Slot::free(index)) };
        }
        let slots = std::ptr::slice_from_raw_parts_mut(base, capacity);
        // SAFETY: `base` comes from a live block, so it is not null.
        let slots = unsafe { NonNull::new_unchecked(slots) };
        Ok(Self::new(slots, Storage::Pooled(ManuallyDrop::new(block))))
    }

    fn new(slots: NonNull<[Slot<T>]>, storage: Storage) -> Self {
        Self {
            head: CachePadded::new(AtomicUsize::new(0)),
            tail: CachePadded::new(AtomicUsize::new(0)),
            laps: Laps::new(slots.len()),
            slots,
            storage,
        }
    }

    #[inline(always)]
    fn slots(&self) -> &[Slot<T>] {
        // SAFETY: `slots` points at `capacity` initialised slots that live
        // as long as the ring (its box or its block are released in drop).
        unsafe { self.slots.as_ref() }
    }

    /// The slot of a position.
    #[inline(always)]
    pub(super) fn slot(&self, position: usize) -> &Slot<T> {
        // The index is below `capacity == slots.len()` by construction of
        // positions; the bounds check stays as a cheap guard.
        debug_assert!(
            self.laps.index(position) < self.laps.capacity,
            "ring: position {position:#x} has no slot"
        );
        &self.slots()[self.laps.index(position)]
    }

    /// Pushes from any thread; see the module docs for the protocol.
    /// `consumers` says how to read a slot that still holds last lap's
    /// element.
    #[inline(always)]
    pub(super) fn push(&self, value: T, consumers: Consumers) -> Result<(), Full<T>> {
        let laps = self.laps;
        let mut tail = self.tail.load(Ordering::Relaxed);
        loop {
            let slot = self.slot(tail);
            let stamp = slot.stamp.load(Ordering::Acquire);
            if stamp == tail {
                let next = laps.next(tail);
                match self.tail.compare_exchange_weak(
                    tail,
                    next,
                    Ordering::SeqCst,
                    Ordering::Relaxed,
                ) {
                    Ok(_) => {
                        // SAFETY: the stamp said "free for position `tail`"
                        // (loaded with Acquire) and our CAS moved `tail` past
                        // it, so we hold the only claim on this slot.
                        unsafe { slot.write(value) };
                        slot.stamp.store(laps.full_stamp(tail), Ordering::Release);
                        return Ok(());
                    }
                    Err(current) => {
                        tail = current;
                        continue;
                    }
                }
            }
            if laps.is_last_lap(stamp, tail)
                && (consumers == Consumers::One || self.head_is_a_lap_behind(tail))
            {
                return Err(Full(value));
            }
            // Either our `tail` is stale (another push took the position),
            // or a pop has claimed last lap's element and is moving it out.
            spin_hint();
            tail = self.tail.load(Ordering::Relaxed);
        }
    }

    /// Whether no pop has claimed the position one lap before `tail`, as of
    /// a `SeqCst` fence: the full decision of a queue with many consumers.
    fn head_is_a_lap_behind(&self, tail: usize) -> bool {
        fence(Ordering::SeqCst);
        self.head.load(Ordering::Relaxed) == self.laps.lap_before(tail)
    }

    pub(super) fn capacity(&self) -> usize {
        self.laps.capacity
    }

    /// Consumer side: whether a push has claimed a position not yet popped
    /// (written or still being written), from a sequentially consistent
    /// read of `tail`. One half of an actor's wake-up handshake
    /// (`sync::run_state`); `head` is the caller's own. loom models a SeqCst
    /// load as Acquire (the loom build adds a fence in `run_state`), so no
    /// model tells this SeqCst, or the SeqCst of the push's `tail` CAS it
    /// pairs with, from weaker orderings: they rest on `run_state`'s
    /// argument.
    pub(super) fn has_claims(&self) -> bool {
        let tail = self.tail.load(Ordering::SeqCst);
        self.head.load(Ordering::Relaxed) != tail
    }

    pub(super) fn len(&self) -> usize {
        // `head` first: see the module docs for why `tail` then cannot lag.
        let head = self.head.load(Ordering::Acquire);
        let tail = self.tail.load(Ordering::Acquire);
        self.laps.distance(head, tail)
    }
}

impl<T> Drop for Ring<T> {
    fn drop(&mut self) {
        let mut position = self.head.load(Ordering::Relaxed);
        let tail = self.tail.load(Ordering::Relaxed);
        let mut remaining = self.laps.distance(position, tail);
        while remaining > 0 {
            let slot = self.slot(position);
            debug_assert_eq!(
                slot.stamp.load(Ordering::Relaxed),
                self.laps.full_stamp(position),
                "ring: a queued slot is not full at drop"
            );
            // SAFETY: `drop` has `&mut self`, so no push or pop is in flight
            // (nothing between a claim and its stamp store can panic, so every
            // claimed push was published); positions in `head..tail` hold
            // initialised elements that nobody popped, each visited once.
            drop(unsafe { slot.take() });
            position = self.laps.next(position);
            remaining -= 1;
        }
        match &mut self.storage {
            // SAFETY: `slots` came from `Box::leak` of this very box, and
            // nothing uses it after the ring.
            Storage::Heap => drop(unsafe { Box::from_raw(self.slots.as_ptr()) }),
            Storage::Pooled(block) => {
                // SAFETY: the slots were written in place and are dropped
                // once, here (their values are already moved out); then
                // the block, untouched since, goes home.
                unsafe {
                    std::ptr::drop_in_place(self.slots.as_ptr());
                    ManuallyDrop::drop(block);
                }
            }
        }
    }
}

/// A bounded queue that any number of threads push into and pop from.
///
/// It holds exactly the capacity it was created with, allocates nothing
/// after construction, and answers a push into a full queue with [`Full`],
/// which hands the value back. Elements leave in FIFO order.
///
/// ```
/// use zbmd_rt::sync::mpmc::MpmcQueue;
///
/// let queue = MpmcQueue::with_capacity(3).unwrap();
/// for i in 0..3 {
///     queue.push(i).unwrap();
/// }
/// assert!(queue.is_full());
/// assert_eq!(queue.push(3).unwrap_err().into_inner(), 3);
/// assert_eq!(queue.pop(), Some(0));
/// assert_eq!(queue.len(), 2);
/// ```
pub struct MpmcQueue<T> {
    ring: Ring<T>,
}

// SAFETY: the queue owns its elements and moves them between threads, so
// it needs `T: Send` and no more; it never hands out `&T`.
unsafe impl<T: Send> Send for MpmcQueue<T> {}
// SAFETY: shared access reaches a slot's value only through a claim: a
// winning CAS on `tail` (push) or `head` (pop) after the matching stamp was
// seen, so each value is written by one thread and moved out by one thread,
// ordered by the stamp's Release/Acquire pairs (module docs). `T: Sync` is
// not needed because no `&T` is ever shared.
unsafe impl<T: Send> Sync for MpmcQueue<T> {}

impl<T> MpmcQueue<T> {
    /// Creates a queue that holds exactly `capacity` elements.
    ///
    /// # Errors
    ///
    /// [`CapacityError`] when `capacity` is 0 or above
    /// [`CAPACITY_MAX`](super::CAPACITY_MAX).
    pub fn with_capacity(capacity: usize) -> Result<Self, CapacityError> {
        Ok(Self { ring: Ring::with_capacity(capacity)? })
    }

    /// Pushes an element at the back, or hands it back in [`Full`] when the
    /// queue holds `capacity` elements.
    ///
    /// # Errors
    ///
    /// [`Full`] with the value, when the queue was full at the moment of the
    /// push. A slot that a concurrent pop is still moving out of is not
    /// "full": the push waits for it instead.
    #[inline]
    pub fn push(&self, value: T) -> Result<(), Full<T>> {
        self.ring.push(value, Consumers::Many)
    }

    /// Pops the element at the front, or `None` when the queue is empty.
    ///
    /// A position that a concurrent push has claimed but not yet written is
    /// not "empty": the pop waits for that push to finish its write.
    #[inline]
    pub fn pop(&self) -> Option<T> {
        let ring = &self.ring;
        let laps = ring.laps;
        let mut head = ring.head.load(Ordering::Relaxed);
        loop {
            let slot = ring.slot(head);
            let stamp = slot.stamp.load(Ordering::Acquire);
            if stamp == laps.full_stamp(head) {
                let next = laps.next(head);
                match ring.head.compare_exchange_weak(
                    head,
                    next,
                    Ordering::SeqCst,
                    Ordering::Relaxed,
                ) {
                    Ok(_) => {
                        // SAFETY: the stamp said "holds position `head`"
                        // (loaded with Acquire) and our CAS moved `head` past
                        // it, so we hold the only claim on this value.
                        let value = unsafe { slot.take() };
                        slot.stamp.store(laps.free_stamp(head), Ordering::Release);
                        return Some(value);
                    }
                    Err(current) => head = current,
                }
            } else if stamp == head || laps.is_last_lap(stamp, head) {
                // Not written for this lap: empty, unless a push has claimed
                // the position and is writing it.
                fence(Ordering::SeqCst);
                if ring.tail.load(Ordering::Relaxed) == head {
                    return None;
                }
                spin_hint();
                head = ring.head.load(Ordering::Relaxed);
            } else {
                // Our `head` is stale: another pop took the position.
                spin_hint();
                head = ring.head.load(Ordering::Relaxed);
            }
        }
    }

    /// The number of elements the queue holds when full.
    pub fn capacity(&self) -> usize {
        self.ring.capacity()
    }

    /// How many elements the queue holds: a snapshot that concurrent
    /// operations may overtake, never above the capacity, exact when no
    /// push or pop is in flight.
    pub fn len(&self) -> usize {
        self.ring.len()
    }

    /// Whether the queue looked empty at the moment of the call.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Whether the queue looked full at the moment of the call.
    pub fn is_full(&self) -> bool {
        self.len() == self.capacity()
    }
}

impl<T> fmt::Debug for MpmcQueue<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MpmcQueue")
            .field("len", &self.len())
            .field("capacity", &self.capacity())
            .finish()
    }
}

#[cfg(all(test, not(zbmd_loom)))]
mod tests {
    use super::*;
    use crate::sync::CAPACITY_MAX;
    use std::sync::atomic::AtomicUsize as StdAtomicUsize;

    #[test]
    fn rejects_zero_and_oversized_capacities() {
        assert_eq!(MpmcQueue::<u8>::with_capacity(0).unwrap_err(), CapacityError::Zero);
        assert_eq!(
            MpmcQueue::<u8>::with_capacity(CAPACITY_MAX + 1).unwrap_err(),
            CapacityError::TooLarge { requested: CAPACITY_MAX + 1, max: CAPACITY_MAX }
        );
    }

    #[test]
    fn capacity_one_alternates_full_and_empty_across_many_laps() {
        let queue = MpmcQueue::with_capacity(1).unwrap();
        for i in 0..1_000u32 {
            assert!(queue.is_empty());
            assert_eq!(queue.pop(), None);
            queue.push(i).unwrap();
            assert!(queue.is_full());
            assert_eq!(queue.len(), 1);
            assert_eq!(queue.push(i + 1), Err(Full(i + 1)));
            assert_eq!(queue.pop(), Some(i));
        }
    }

    #[test]
    fn holds_exactly_non_power_of_two_capacities_across_laps() {
        for capacity in [2, 3, 5, 6, 7, 9] {
            let queue = MpmcQueue::with_capacity(capacity).unwrap();
            let mut next_in = 0usize;
            let mut next_out = 0usize;
            for _ in 0..20 {
                while queue.push(next_in).is_ok() {
                    next_in += 1;
                }
                assert_eq!(queue.len(), capacity, "capacity {capacity}");
                assert!(queue.is_full());
                // Pop a varying amount so the front walks round every index.
                for _ in 0..(next_in % capacity) + 1 {
                    assert_eq!(queue.pop(), Some(next_out));
                    next_out += 1;
                }
            }
            while let Some(value) = queue.pop() {
                assert_eq!(value, next_out);
                next_out += 1;
            }
            assert_eq!(next_out, next_in);
            assert!(queue.is_empty());
        }
    }

    #[test]
    fn positions_skip_to_the_next_lap_after_the_last_index() {
        let laps = Laps::new(3);
        assert_eq!(laps.one_lap, 4);
        let walk: Vec<usize> =
            std::iter::successors(Some(0), |&p| Some(laps.next(p))).take(7).collect();
        assert_eq!(walk, [0, 1, 2, 4, 5, 6, 8]);
        assert_eq!(laps.distance(1, 5), 3);
        assert_eq!(laps.distance(2, 4), 1);
        assert_eq!(laps.distance(4, 4), 0);
        assert_eq!(laps.distance(0, 4), 3);
        assert_eq!(laps.distance(0, 12), 3, "a pair many laps apart is clamped");
        let largest = Laps::new(CAPACITY_MAX);
        assert_eq!(largest.one_lap, CAPACITY_MAX * 2);
        assert_eq!(largest.next(CAPACITY_MAX - 1), CAPACITY_MAX * 2);
    }

    #[test]
    fn positions_wrap_past_usize_max() {
        let queue = MpmcQueue::with_capacity(3).unwrap();
        let laps = queue.ring.laps;
        // Start on the last lap `usize` can hold; stamps must agree.
        let start = usize::MAX & !(laps.one_lap - 1);
        queue.ring.head.store(start, Ordering::Relaxed);
        queue.ring.tail.store(start, Ordering::Relaxed);
        for index in 0..3 {
            queue.ring.slots()[index].stamp.store(start + index, Ordering::Relaxed);
        }
        for round in 0..4 {
            for i in 0..3 {
                queue.push(round * 10 + i).unwrap();
            }
            assert_eq!(queue.push(99), Err(Full(99)));
            assert_eq!(queue.len(), 3);
            for i in 0..3 {
                assert_eq!(queue.pop(), Some(round * 10 + i));
            }
            assert_eq!(queue.pop(), None);
        }
        assert!(queue.ring.head.load(Ordering::Relaxed) < start, "the counters wrapped");
    }

    #[test]
    fn dropping_the_queue_drops_what_is_still_queued() {
        static DROPS: StdAtomicUsize = StdAtomicUsize::new(0);
        struct Counted;
        impl Drop for Counted {
            fn drop(&mut self) {
                DROPS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
        }
        let queue = MpmcQueue::with_capacity(3).unwrap();
        // Move the front off index 0 so the remaining elements straddle a lap.
        for _ in 0..2 {
            assert!(queue.push(Counted).is_ok());
            drop(queue.pop());
        }
        for _ in 0..3 {
            assert!(queue.push(Counted).is_ok());
        }
        let refused = queue.push(Counted).unwrap_err();
        drop(refused);
        assert_eq!(DROPS.load(std::sync::atomic::Ordering::Relaxed), 3);
        drop(queue.pop());
        assert_eq!(DROPS.load(std::sync::atomic::Ordering::Relaxed), 4);
        drop(queue);
        assert_eq!(DROPS.load(std::sync::atomic::Ordering::Relaxed), 6);
    }

    #[test]
    fn threads_share_the_queue() {
        let queue = MpmcQueue::with_capacity(4).unwrap();
        std::thread::scope(|scope| {
            scope.spawn(|| {
                for i in 0..1_000u64 {
                    let mut value = i;
                    while let Err(full) = queue.push(value) {
                        value = full.into_inner();
                        std::thread::yield_now();
                    }
                }
            });
            let mut expected = 0u64;
            while expected < 1_000 {
                match queue.pop() {
                    Some(value) => {
                        assert_eq!(value, expected);
                        expected += 1;
                    }
                    None => std::thread::yield_now(),
                }
            }
        });
        assert!(queue.is_empty());
    }
}
