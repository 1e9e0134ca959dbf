//! A bounded single-producer single-consumer ring: the shard-to-shard lane.
//!
//! # Algorithm
//!
//! Lamport's ring buffer ("Specifying Concurrent Program Modules", TOPLAS
//! 1983) in the form Seastar uses between shards and Erik Rigtorp describes in
//! "Optimizing a ring buffer for throughput" (2021): two monotonically
//! increasing counters, `head` (next slot to read, written only by the
//! consumer) and `tail` (next slot to write, written only by the producer),
//! each on its own 128-byte line ([`CachePadded`]), and each side keeping a
//! private cached copy of the *other* side's counter. A side re-reads the
//! shared counter only when its cached copy says the ring is full (producer)
//! or empty (consumer), so in steady state a push or pop touches no line the
//! other core writes, except the slot itself.
//!
//! The counters run over all of `usize` and wrap; the slot of counter `i` is
//! `i & mask` in a buffer of `capacity.next_power_of_two()` slots, while
//! "full" is `tail - head == capacity`, so the ring holds exactly the capacity
//! it was asked for.
//!
//! Every operation is wait-free: a bounded number of steps, no loop that
//! depends on the other side.
//!
//! # Memory ordering
//!
//! * The producer writes the slot, then stores `tail` with `Release`; the
//!   consumer loads `tail` with `Acquire` before reading any slot below it.
//!   This pair publishes the element.
//! * The consumer moves the element out, then stores `head` with `Release`;
//!   the producer loads `head` with `Acquire` before overwriting any slot
//!   below it. This pair hands the slot back, so the producer's write cannot
//!   race with the consumer's read of the previous lap.
//! * A side loads its *own* counter with `Relaxed` (it is the only writer);
//!   in fact it keeps it in a private field and never loads it at all.
//!
//! Batch operations ([`Producer::push_slice`], [`Consumer::pop_into`]) write
//! or read many slots under one counter store, which is where the throughput
//! of shard-to-shard batches comes from.

use std::fmt;
use std::mem::MaybeUninit;

use crossbeam_utils::CachePadded;

use super::error::{CapacityError, Full, check_capacity};
use super::facade::{Arc, AtomicUsize, Ordering, UnsafeCell};

/// The shared part of the ring.
struct Ring<T> {
    /// Next counter the consumer reads; written only by the consumer.
    head: CachePadded<AtomicUsize>,
    /// Next counter the producer writes; written only by the producer.
    tail: CachePadded<AtomicUsize>,
    /// `capacity.next_power_of_two()` slots; slot `i & mask` holds counter `i`.
    slots: Box<[UnsafeCell<MaybeUninit<T>>]>,
    mask: usize,
    capacity: usize,
}

// SAFETY: the ring moves `T` values between the two threads that hold the
// producer and the consumer, so it needs `T: Send`; it never hands out `&T`
// to two threads at once (each slot is accessed by one side at a time, as the
// module-level ordering argument shows), so `T: Sync` is not needed.
unsafe impl<T: Send> Send for Ring<T> {}
// SAFETY: as above; shared access to the `Ring` only reaches slots through
// the counter protocol that gives each slot to one side at a time.
unsafe impl<T: Send> Sync for Ring<T> {}

impl<T> Ring<T> {
    /// The slot that holds counter `index`.
    #[inline(always)]
    fn slot(&self, index: usize) -> &UnsafeCell<MaybeUninit<T>> {
        // `mask` is `slots.len() - 1` and the length is a power of two, so the
        // masked index is always in bounds; the compiler can see it and drops
        // the bounds check.
        &self.slots[index & self.mask]
    }
}

impl<T> Drop for Ring<T> {
    fn drop(&mut self) {
        let head = self.head.load(Ordering::Relaxed);
        let tail = self.tail.load(Ordering::Relaxed);
        let mut index = head;
        while index != tail {
            // SAFETY: `drop` has `&mut self`: both handles are gone, so no
            // other thread touches the ring, and the `Arc` that owned it
            // synchronised with their last operations. Counters in
            // `head..tail` hold initialised elements that nobody popped.
            self.slot(index).with_mut(|slot| unsafe { (*slot).assume_init_drop() });
            index = index.wrapping_add(1);
        }
    }
}

/// Creates a ring that holds exactly `capacity` elements and returns its two
/// ends.
///
/// ```
/// use zbmd_rt::sync::spsc;
///
/// let (mut tx, mut rx) = spsc::channel::<u64>(2).unwrap();
/// tx.push(1).unwrap();
/// tx.push(2).unwrap();
/// assert_eq!(tx.push(3).unwrap_err().into_inner(), 3); // full: handed back
/// assert_eq!(rx.pop(), Some(1));
/// assert_eq!(tx.push_slice(&[3, 4]), 1); // room for one
/// let mut out = [0; 4];
/// assert_eq!(rx.pop_into(&mut out), 2);
/// assert_eq!(&out[..2], &[2, 3]);
/// ```
///
/// # Errors
///
/// [`CapacityError`] when `capacity` is 0 or above
/// [`CAPACITY_MAX`](super::CAPACITY_MAX).
pub fn channel<T>(capacity: usize) -> Result<(Producer<T>, Consumer<T>), CapacityError> {
    let capacity = check_capacity(capacity)?;
    let slot_count = capacity.next_power_of_two();
    let slots = (0..slot_count).map(|_| UnsafeCell::new(MaybeUninit::uninit())).collect();
    let ring = Arc::new(Ring {
        head: CachePadded::new(AtomicUsize::new(0)),
        tail: CachePadded::new(AtomicUsize::new(0)),
        slots,
        mask: slot_count - 1,
        capacity,
    });
    let producer = Producer { ring: ring.clone(), tail: 0, head_cached: 0 };
    let consumer = Consumer { ring, head: 0, tail_cached: 0 };
    Ok((producer, consumer))
}

/// The writing end of an SPSC ring. Exactly one exists per ring.
pub struct Producer<T> {
    ring: Arc<Ring<T>>,
    /// Our own counter; `ring.tail` is its published copy.
    tail: usize,
    /// The consumer's `head` as we last read it: a lower bound of the real one.
    head_cached: usize,
}

impl<T> Producer<T> {
    /// Pushes one element, or hands it back in [`Full`] when the ring holds
    /// `capacity` elements.
    #[inline]
    pub fn push(&mut self, value: T) -> Result<(), Full<T>> {
        if self.free_slots(1) == 0 {
            return Err(Full(value));
        }
        let tail = self.tail;
        // SAFETY: `free_slots` saw `tail - head < capacity` against a `head`
        // loaded with Acquire, so the consumer finished with this slot's
        // previous lap and will not read it until we publish `tail + 1`.
        self.ring.slot(tail).with_mut(|slot| unsafe { (*slot).write(value) });
        self.publish(tail.wrapping_add(1));
        Ok(())
    }

    /// Pushes as many elements of `values` as there is room for, in order,
    /// with one publication, and returns how many it pushed.
    #[inline]
    pub fn push_slice(&mut self, values: &[T]) -> usize
    where
        T: Copy,
    {
        let count = self.free_slots(values.len()).min(values.len());
        let tail = self.tail;
        for (offset, value) in values[..count].iter().enumerate() {
            let index = tail.wrapping_add(offset);
            // SAFETY: as in `push`: the `count` slots from `tail` are free,
            // because `free_slots` proved `count` of them are behind the
            // consumer's Acquire-loaded `head`.
            self.ring.slot(index).with_mut(|slot| unsafe { (*slot).write(*value) });
        }
        if count > 0 {
            self.publish(tail.wrapping_add(count));
        }
        count
    }

    /// How many elements the ring holds: exact for the producer's own
    /// pushes, a snapshot of the consumer's progress.
    pub fn len(&self) -> usize {
        // Relaxed: a snapshot that reads no slot (`push` makes its own
        // Acquire load before it writes one).
        self.tail.wrapping_sub(self.ring.head.load(Ordering::Relaxed))
    }

    /// Whether the ring looked empty at the moment of the call.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The number of elements the ring holds when full.
    pub fn capacity(&self) -> usize {
        self.ring.capacity
    }

    /// Returns how many slots are free, at least `wanted` if that many are.
    /// Re-reads the consumer's `head` only when the cached copy shows fewer.
    #[inline(always)]
    fn free_slots(&mut self, wanted: usize) -> usize {
        let capacity = self.ring.capacity;
        let mut used = self.tail.wrapping_sub(self.head_cached);
        if capacity - used < wanted {
            self.head_cached = self.ring.head.load(Ordering::Acquire);
            used = self.tail.wrapping_sub(self.head_cached);
        }
        debug_assert!(used <= capacity, "spsc: {used} elements in a ring of {capacity}");
        capacity - used
    }

    #[inline(always)]
    fn publish(&mut self, tail: usize) {
        self.tail = tail;
        self.ring.tail.store(tail, Ordering::Release);
    }
}

/// The reading end of an SPSC ring. Exactly one exists per ring.
pub struct Consumer<T> {
    ring: Arc<Ring<T>>,
    /// Our own counter; `ring.head` is its published copy.
    head: usize,
    /// The producer's `tail` as we last read it: a lower bound of the real one.
    tail_cached: usize,
}

impl<T> Consumer<T> {
    /// Pops the oldest element, or `None` when the ring is empty.
    #[inline]
    pub fn pop(&mut self) -> Option<T> {
        if self.ready_slots(1) == 0 {
            return None;
        }
        let head = self.head;
        // SAFETY: `ready_slots` saw `head < tail` against a `tail` loaded with
        // Acquire, so the producer initialised this slot and will not touch
        // it again until we publish `head + 1`.
        let value = self.ring.slot(head).with(|slot| unsafe { (*slot).assume_init_read() });
        self.publish(head.wrapping_add(1));
        Some(value)
    }

    /// Pops up to `out.len()` elements, oldest first, into `out` with one
    /// publication, and returns how many it popped.
    #[inline]
    pub fn pop_into(&mut self, out: &mut [T]) -> usize
    where
        T: Copy,
    {
        self.pop_batch(out.len(), |offset, value| out[offset] = value)
    }

    /// Pops up to `max` elements, oldest first, handing each to `sink`
    /// (with its position in the batch), with one publication; returns how
    /// many it popped. The general form of [`pop_into`](Self::pop_into) for
    /// element types that are not `Copy`.
    #[inline]
    pub fn pop_batch(&mut self, max: usize, mut sink: impl FnMut(usize, T)) -> usize {
        let count = self.ready_slots(max).min(max);
        let head = self.head;
        for offset in 0..count {
            let index = head.wrapping_add(offset);
            // SAFETY: as in `pop`: the `count` slots from `head` are below the
            // Acquire-loaded `tail`, hence initialised, and each is read once.
            let value = self.ring.slot(index).with(|slot| unsafe { (*slot).assume_init_read() });
            sink(offset, value);
        }
        // The slots are published back only after the whole batch is out. A
        // panicking `sink` would leave the rest unread but still counted as
        // queued, so nothing is dropped twice; `Ring::drop` reclaims them.
        if count > 0 {
            self.publish(head.wrapping_add(count));
        }
        count
    }

    /// How many elements the ring holds: a snapshot of the producer's
    /// progress, exact for the consumer's own pops.
    pub fn len(&self) -> usize {
        // Relaxed: a snapshot that reads no slot (`pop` makes its own
        // Acquire load before it reads one).
        self.ring.tail.load(Ordering::Relaxed).wrapping_sub(self.head)
    }

    /// Whether the ring looked empty at the moment of the call.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The number of elements the ring holds when full.
    pub fn capacity(&self) -> usize {
        self.ring.capacity
    }

    /// Returns how many elements are ready, at least `wanted` if that many
    /// are. Re-reads the producer's `tail` only when the cached copy shows
    /// fewer.
    #[inline(always)]
    fn ready_slots(&mut self, wanted: usize) -> usize {
        let mut ready = self.tail_cached.wrapping_sub(self.head);
        if ready < wanted {
            self.tail_cached = self.ring.tail.load(Ordering::Acquire);
            ready = self.tail_cached.wrapping_sub(self.head);
        }
        debug_assert!(
            ready <= self.ring.capacity,
            "spsc: {ready} ready in a ring of {}",
            self.ring.capacity
        );
        ready
    }

    #[inline(always)]
    fn publish(&mut self, head: usize) {
        self.head = head;
        self.ring.head.store(head, Ordering::Release);
    }
}

impl<T> fmt::Debug for Producer<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("spsc::Producer")
            .field("len", &self.len())
            .field("capacity", &self.capacity())
            .finish()
    }
}

impl<T> fmt::Debug for Consumer<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("spsc::Consumer")
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
        assert_eq!(channel::<u8>(0).unwrap_err(), CapacityError::Zero);
        assert_eq!(
            channel::<u8>(CAPACITY_MAX + 1).unwrap_err(),
            CapacityError::TooLarge { requested: CAPACITY_MAX + 1, max: CAPACITY_MAX }
        );
    }

    #[test]
    fn holds_exactly_a_non_power_of_two_capacity() {
        let (mut tx, mut rx) = channel(3).unwrap();
        for i in 0..3 {
            tx.push(i).unwrap();
        }
        assert_eq!(tx.push(9), Err(Full(9)));
        assert_eq!(tx.len(), 3);
        assert_eq!(rx.pop(), Some(0));
        tx.push(3).unwrap();
        assert_eq!(tx.push(9), Err(Full(9)));
        assert_eq!((1..4).map(|_| rx.pop().unwrap()).collect::<Vec<_>>(), [1, 2, 3]);
        assert_eq!(rx.pop(), None);
    }

    #[test]
    fn capacity_one_alternates_full_and_empty_across_many_laps() {
        let (mut tx, mut rx) = channel(1).unwrap();
        for i in 0..1_000u32 {
            assert!(rx.is_empty());
            tx.push(i).unwrap();
            assert_eq!(tx.push(i), Err(Full(i)));
            assert_eq!(rx.pop(), Some(i));
            assert_eq!(rx.pop(), None);
        }
    }

    #[test]
    fn batches_stop_at_full_and_empty_and_wrap_around() {
        let (mut tx, mut rx) = channel(5).unwrap();
        let mut out = [0u32; 8];
        let mut next_in = 0u32;
        let mut next_out = 0u32;
        for _ in 0..100 {
            let batch: Vec<u32> = (next_in..next_in + 4).collect();
            let pushed = tx.push_slice(&batch);
            next_in += pushed as u32;
            let popped = rx.pop_into(&mut out[..3]);
            for value in &out[..popped] {
                assert_eq!(*value, next_out);
                next_out += 1;
            }
        }
        assert!(next_out > 150, "the ring must keep moving across laps");
        assert_eq!(tx.push_slice(&[]), 0);
        assert_eq!(rx.pop_into(&mut []), 0);
    }

    #[test]
    fn counters_wrap_past_usize_max() {
        let (mut tx, mut rx) = channel(4).unwrap();
        let start = usize::MAX - 2;
        tx.tail = start;
        tx.head_cached = start;
        tx.ring.tail.store(start, Ordering::Relaxed);
        tx.ring.head.store(start, Ordering::Relaxed);
        rx.head = start;
        rx.tail_cached = start;
        for i in 0..4 {
            tx.push(i).unwrap();
        }
        assert_eq!(tx.push(4), Err(Full(4)));
        assert_eq!((0..4).map(|_| rx.pop().unwrap()).collect::<Vec<_>>(), [0, 1, 2, 3]);
        assert_eq!(rx.pop(), None);
    }

    #[test]
    fn dropping_the_ring_drops_what_is_still_queued() {
        static DROPS: StdAtomicUsize = StdAtomicUsize::new(0);
        struct Counted;
        impl Drop for Counted {
            fn drop(&mut self) {
                DROPS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
        }
        let (mut tx, mut rx) = channel(4).unwrap();
        for _ in 0..4 {
            assert!(tx.push(Counted).is_ok());
        }
        drop(rx.pop());
        assert_eq!(DROPS.load(std::sync::atomic::Ordering::Relaxed), 1);
        drop(tx);
        assert_eq!(
            DROPS.load(std::sync::atomic::Ordering::Relaxed),
            1,
            "consumer still holds the ring"
        );
        drop(rx);
        assert_eq!(DROPS.load(std::sync::atomic::Ordering::Relaxed), 4);
    }

    #[test]
    fn pop_batch_moves_non_copy_elements_in_order() {
        let (mut tx, mut rx) = channel(4).unwrap();
        for word in ["a", "b", "c"] {
            tx.push(word.to_string()).unwrap();
        }
        let mut seen = Vec::new();
        assert_eq!(rx.pop_batch(8, |offset, value| seen.push((offset, value))), 3);
        assert_eq!(seen, [(0, "a".to_string()), (1, "b".to_string()), (2, "c".to_string())]);
    }
}
