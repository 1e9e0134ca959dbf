//! A bounded work-stealing deque: the run queue of runnable actors.
//!
//! # Algorithm
//!
//! The Chase–Lev deque (Chase and Lev, "Dynamic Circular Work-Stealing
//! Deque", SPAA 2005) on a fixed ring, with the C11 orderings of Lê, Pop,
//! Cohen and Zappa Nardelli ("Correct and Efficient Work-Stealing for Weak
//! Memory Models", PPoPP 2013), and a *steal claim* in the manner of tokio's
//! local run queue. One [`Worker`] (the owner) pushes and pops at the
//! bottom, last in first out, with no read-modify-write in the common case;
//! any number of [`Stealer`]s take from the top, oldest first, one element
//! or a batch at a time.
//!
//! Two counters index an endless sequence of positions; position `i` lives in
//! slot `i & mask` of a ring of `capacity.next_power_of_two()` slots:
//!
//! * `bottom` (a `u32`, written only by the owner): the next position the
//!   owner pushes to.
//! * `top` (a `u64`) packs two `u32` halves, `steal` (high) and `real` (low).
//!   Positions `real..bottom` hold the elements in the deque; positions
//!   `steal..real` have been *claimed* by a thief that is still copying them
//!   out. With no claim in progress, `steal == real`.
//!
//! The owner's "full" test is `bottom - steal == capacity`, so the ring holds
//! exactly `capacity` elements, and never more than `capacity` positions are
//! live between `steal` and `bottom`.
//!
//! ## Why a claim: the bounded-ring race
//!
//! In textbook Chase–Lev a thief reads slot `t` *before* its CAS moves `top`
//! past `t`. On a growable array that read is harmless when the CAS fails,
//! but on a fixed ring it is a data race: once `top` has moved past `t`, the
//! owner may push position `t + slot_count`, which is the same physical slot,
//! while the stale thief is still reading it. (crossbeam-deque reads the slot
//! with a volatile read and forgets the value on failure; for a generic `T`
//! that is still a data race, and loom reports it.) Here a thief first
//! *claims* positions by moving `real` forward with the `steal` half held at
//! the old value, then copies the claimed elements out, and only then moves
//! `steal` up to `real`. Because the owner's capacity test uses `steal`, it
//! cannot reuse a claimed slot until the copy is done. While one claim is in
//! progress, other thieves answer [`Steal::Retry`].
//!
//! ## Batches are claimed one position at a time
//!
//! The owner's pop takes position `bottom - 1` without any read-modify-write
//! when it sees `real < bottom - 1`. The proof that no thief takes the same
//! position (below) only covers a thief whose claimed position *is* the
//! `real` it read, so a thief that claimed `n` positions with one CAS could
//! collide with owner pops of the positions above `real`: the owner, popping
//! down from the bottom after the thief read `bottom`, sees no claim yet and
//! takes them too. A batch steal therefore claims its first position as a
//! single steal does and then *extends* the claim one position at a time
//! (fence, re-read `bottom`, CAS `real` from `p` to `p + 1`), which is the
//! single-steal protocol repeated; crossbeam-deque's LIFO flavour steals
//! batches one by one for the same reason. The copies and the release of
//! the claim happen once, at the end.
//!
//! # Memory ordering
//!
//! * **Publishing elements.** The owner writes a slot, then stores `bottom`
//!   with Release. Every owner store to `bottom` that a thief may act on is
//!   Release (the decrement in `pop` too), so whichever such value a thief's
//!   Acquire load of `bottom` returns, the slot writes of the positions below
//!   it happen-before the thief's reads of them. The one exception is the
//!   restore after `pop`'s last-element race, which is Relaxed as in Lê et
//!   al.: it runs when `real == bottom`, so a thief that reads it finds the
//!   deque empty, or fails its CAS against the `top` that race changed.
//! * **Returning slots.** A thief finishes a claim with a Release CAS that
//!   moves `steal` to `real`, after its last read of a claimed slot. The
//!   owner loads `top` with Acquire before its capacity test; every later
//!   write to `top` is a read-modify-write, so it stays in that release
//!   sequence, and the owner's next write of the slot happens after the
//!   thief's read.
//! * **Owner pop versus thief (the SeqCst fences).** The owner stores
//!   `bottom - 1`, issues `fence(SeqCst)`, then loads `top`; a thief loads
//!   `top` (Acquire), issues `fence(SeqCst)`, then loads `bottom`. The two
//!   fences are ordered one way or the other in the single total order of
//!   SeqCst operations. If the owner's fence comes first, the thief's load
//!   of `bottom` returns the decremented value (or a later one), so the thief
//!   does not claim the position the owner is popping (a later push that
//!   refills it publishes a new element there). If the thief's fence comes
//!   first, the owner's load of `top` returns at least the `real` the thief
//!   read (C++20 \[atomics.order\] p4: the write the thief read happens
//!   before its fence), so when that `real` is the position the owner wants,
//!   the owner sees it is the last element and competes for it with a CAS on
//!   `real`, exactly as the thief does; exactly one CAS wins. Without the
//!   owner's fence, its `bottom` store could still sit in its store buffer
//!   when it loads `top` (store-to-load reordering, which even x86 allows),
//!   and both sides would take the same element. All CASes on `top` are
//!   SeqCst, as in Lê et al., and a thief's first load of `top` is Acquire
//!   as there: their proof of the last-element race places these in the
//!   SeqCst order. loom models a SeqCst read-modify-write as AcqRel and
//!   takes the fence argument from the fences alone, so no model can tell
//!   these from weaker ones (a mutation check weakening each to Relaxed
//!   passes every model); they are kept on the published proof, not on a
//!   model.
//! * **Snapshots.** `len` on either end reads no slot, so its loads are
//!   Relaxed.
//!
//! # Limits and progress
//!
//! Indices are `u32` and wrap; with `capacity <= CAPACITY_MAX` (2^30) every
//! distance is far below 2^31 and reads unambiguously as a signed `i32`. A
//! thief's CAS could in theory succeed on a stale `top` if the owner moved
//! `real` by exactly 2^32 positions while the thief stood between its load
//! and its CAS; tokio's run queue accepts the same bound. The owner's push is
//! wait-free and its pop lock-free; a thief's operation finishes in a bounded
//! number of its own steps apart from the release loop, which retries only
//! when the owner has just taken an element. A push may answer [`Full`]
//! while a thief is still copying out a claim, even though
//! [`Worker::len`] is below the capacity: the claimed slots are not free yet.

use std::cell::Cell;
use std::fmt;
use std::marker::PhantomData;
use std::mem::MaybeUninit;

use crossbeam_utils::CachePadded;

use super::error::{CapacityError, Full, check_capacity};
use super::facade::{Arc, AtomicU32, AtomicU64, Ordering, UnsafeCell, fence};

/// Packs the two halves of `top`: `steal` high, `real` low.
#[inline(always)]
fn pack(steal: u32, real: u32) -> u64 {
    (u64::from(steal) << 32) | u64::from(real)
}

/// Splits `top` into `(steal, real)`.
#[inline(always)]
fn unpack(top: u64) -> (u32, u32) {
    ((top >> 32) as u32, top as u32)
}

/// The signed distance from position `from` to position `to`. Live distances
/// are at most `CAPACITY_MAX` (plus one transient step below zero in `pop`),
/// so the wrapping difference read as `i32` is exact.
#[inline(always)]
fn distance(from: u32, to: u32) -> i32 {
    to.wrapping_sub(from) as i32
}

/// The state the owner and the thieves share.
struct Inner<T> {
    /// `(steal, real)` packed by [`pack`]; see the module documentation.
    top: CachePadded<AtomicU64>,
    /// The next position the owner pushes to; written only by the owner.
    bottom: CachePadded<AtomicU32>,
    /// `capacity.next_power_of_two()` slots; position `i` is slot `i & mask`.
    slots: Box<[UnsafeCell<MaybeUninit<T>>]>,
    mask: u32,
    capacity: u32,
}

// SAFETY: the deque moves `T` values between the owner's thread and thieves'
// threads, so it needs `T: Send`. It never hands out `&T`: each slot is
// written by the owner and read by exactly one taker, ordered by the protocol
// in the module documentation, so `T: Sync` is not needed.
unsafe impl<T: Send> Send for Inner<T> {}
// SAFETY: as above; shared access only reaches slots through the claim
// protocol, which gives each position to one side at a time.
unsafe impl<T: Send> Sync for Inner<T> {}

/// The answer of a thief's claim on the top position.
enum Claim {
    /// The deque looked empty.
    Empty,
    /// Another claim was in progress, or the CAS lost a race.
    Retry,
    /// Position `head` is ours; `len_seen` elements were in the deque.
    Won { head: u32, len_seen: u32 },
}

impl<T> Inner<T> {
    fn new(capacity: usize, start: u32) -> Result<Self, CapacityError> {
        let capacity = check_capacity(capacity)?;
        let too_large = CapacityError::TooLarge { requested: capacity, max: super::CAPACITY_MAX };
        let slot_count = capacity.next_power_of_two();
        let mask = u32::try_from(slot_count - 1).map_err(|_| too_large)?;
        let slots = (0..slot_count).map(|_| UnsafeCell::new(MaybeUninit::uninit())).collect();
        Ok(Self {
            top: CachePadded::new(AtomicU64::new(pack(start, start))),
            bottom: CachePadded::new(AtomicU32::new(start)),
            slots,
            mask,
            capacity: u32::try_from(capacity).map_err(|_| too_large)?,
        })
    }

    /// The slot that holds position `index`.
    #[inline(always)]
    fn slot(&self, index: u32) -> &UnsafeCell<MaybeUninit<T>> {
        // `mask` is `slots.len() - 1` and the length is a power of two, so
        // the masked index is in bounds.
        &self.slots[(index & self.mask) as usize]
    }

    /// Moves the element out of position `index`.
    ///
    /// # Safety
    ///
    /// The caller owns position `index` (the owner below `bottom` with no
    /// thief able to claim it, or a thief inside its claim), the position
    /// holds an initialised element whose write happens-before this call,
    /// and nobody reads it again before it is written anew.
    #[inline(always)]
    unsafe fn take(&self, index: u32) -> T {
        // SAFETY: the caller guarantees exclusive access to an initialised
        // slot; reading it moves the element out exactly once.
        self.slot(index).with(|slot| unsafe { (*slot).assume_init_read() })
    }

    /// Writes `value` into position `index`.
    ///
    /// # Safety
    ///
    /// Only the owner calls this, for a position at or above `bottom` whose
    /// slot no thief may still read: `index - steal < capacity` against an
    /// Acquire load of `top`.
    #[inline(always)]
    unsafe fn put(&self, index: u32, value: T) {
        // SAFETY: the caller guarantees the slot is free and no thief reads
        // it until the owner publishes `bottom` past it.
        self.slot(index).with_mut(|slot| unsafe { (*slot).write(value) });
    }

    /// The owner's free space when its `bottom` is `bottom`, against an
    /// Acquire load of `top`.
    #[inline(always)]
    fn free_slots(&self, bottom: u32) -> u32 {
        let (steal, _) = unpack(self.top.load(Ordering::Acquire));
        let used = bottom.wrapping_sub(steal);
        debug_assert!(used <= self.capacity, "deque: {used} live positions in {}", self.capacity);
        self.capacity - used
    }

    /// A thief's claim on the top position (the first half of Chase–Lev's
    /// steal, with the claim in place of the read).
    fn claim_top(&self) -> Claim {
        let top = self.top.load(Ordering::Acquire);
        let (steal, real) = unpack(top);
        // Orders our `top` load before our `bottom` load in the SeqCst total
        // order, against the owner's fence in `pop` (module docs).
        fence(Ordering::SeqCst);
        let bottom = self.bottom.load(Ordering::Acquire);
        let len = distance(real, bottom);
        if len <= 0 {
            return Claim::Empty;
        }
        if steal != real {
            return Claim::Retry;
        }
        let claimed = pack(real, real.wrapping_add(1));
        match self.top.compare_exchange(top, claimed, Ordering::SeqCst, Ordering::Relaxed) {
            Ok(_) => Claim::Won { head: real, len_seen: len as u32 },
            Err(_) => Claim::Retry,
        }
    }

    /// Extends our claim at `head`, one position at a time, until it covers
    /// `want` positions, the deque runs dry, or the owner takes the next one.
    /// Returns how many positions the claim covers.
    fn extend_claim(&self, head: u32, want: u32) -> u32 {
        let mut claimed = 1;
        while claimed < want {
            let next = head.wrapping_add(claimed);
            // The single-steal protocol again: our own CAS wrote `real ==
            // next` before this fence, so the owner's fence argument holds.
            fence(Ordering::SeqCst);
            let bottom = self.bottom.load(Ordering::Acquire);
            if distance(next, bottom) <= 0 {
                break;
            }
            let current = pack(head, next);
            let extended = pack(head, next.wrapping_add(1));
            if self
                .top
                .compare_exchange(current, extended, Ordering::SeqCst, Ordering::Relaxed)
                .is_err()
            {
                // Only the owner moves `real` during our claim: it has just
                // taken position `next` as the last element.
                break;
            }
            claimed += 1;
        }
        claimed
    }

    /// Ends our claim: moves `steal` up to wherever `real` is now. Called
    /// after the last read of a claimed slot; `claimed` is the value our last
    /// successful CAS wrote.
    fn release_claim(&self, claimed: u64) {
        let mut current = claimed;
        loop {
            let (_, real) = unpack(current);
            match self.top.compare_exchange(
                current,
                pack(real, real),
                Ordering::Release,
                Ordering::Relaxed,
            ) {
                Ok(_) => return,
                Err(actual) => {
                    // The owner took the next element as its last one; the
                    // `steal` half is still ours.
                    debug_assert_eq!(unpack(actual).0, unpack(claimed).0, "deque: steal moved");
                    current = actual;
                }
            }
        }
    }
}

impl<T> Drop for Inner<T> {
    fn drop(&mut self) {
        let (steal, real) = unpack(self.top.load(Ordering::Relaxed));
        let bottom = self.bottom.load(Ordering::Relaxed);
        debug_assert_eq!(steal, real, "deque: dropped during a claim");
        let mut index = real;
        while index != bottom {
            // SAFETY: `drop` has `&mut self`: the worker and every stealer are
            // gone, no claim is in progress, and the `Arc` that owned us
            // synchronised with their last operations. Positions
            // `real..bottom` hold initialised elements nobody took.
            unsafe { drop(self.take(index)) };
            index = index.wrapping_add(1);
        }
    }
}

/// Creates a deque that holds exactly `capacity` elements and returns its
/// owner end and one thief end (clone it for more thieves).
///
/// ```
/// use zbmd_rt::sync::deque::{self, Steal};
///
/// let (worker, stealer) = deque::bounded::<u32>(2).unwrap();
/// worker.push(1).unwrap();
/// worker.push(2).unwrap();
/// assert_eq!(worker.push(3).unwrap_err().into_inner(), 3); // full: handed back
/// assert_eq!(stealer.steal(), Steal::Success(1)); // thieves take the oldest
/// assert_eq!(worker.pop(), Some(2)); // the owner takes the newest
/// assert!(stealer.steal().is_empty());
/// ```
///
/// # Errors
///
/// [`CapacityError`] when `capacity` is 0 or above
/// [`CAPACITY_MAX`](super::CAPACITY_MAX).
pub fn bounded<T>(capacity: usize) -> Result<(Worker<T>, Stealer<T>), CapacityError> {
    bounded_from(capacity, 0)
}

/// [`bounded`] with both counters starting at position `start`, so tests can
/// cross the `u32` wrap-around without 2^32 operations.
fn bounded_from<T>(capacity: usize, start: u32) -> Result<(Worker<T>, Stealer<T>), CapacityError> {
    let inner = Arc::new(Inner::new(capacity, start)?);
    let stealer = Stealer { inner: inner.clone() };
    Ok((Worker { inner, _not_sync: PhantomData }, stealer))
}

/// The owner end: pushes and pops at the bottom, last in first out. Exactly
/// one exists per deque; it may move between threads but not be shared:
///
/// ```compile_fail
/// fn shared<T: Sync>(_: &T) {}
/// let (worker, _) = zbmd_rt::sync::deque::bounded::<u32>(4).unwrap();
/// shared(&worker); // error: `Worker` is not `Sync`
/// ```
pub struct Worker<T> {
    inner: Arc<Inner<T>>,
    /// Every `&self` method assumes it runs on the one owner thread.
    _not_sync: PhantomData<Cell<()>>,
}

impl<T> Worker<T> {
    /// Pushes one element at the bottom, or hands it back in [`Full`] when
    /// `capacity` positions are taken (elements, plus any a thief is still
    /// copying out).
    #[inline]
    pub fn push(&self, value: T) -> Result<(), Full<T>> {
        let inner = &*self.inner;
        let bottom = inner.bottom.load(Ordering::Relaxed);
        if inner.free_slots(bottom) == 0 {
            return Err(Full(value));
        }
        // SAFETY: we are the owner (`Worker` is not `Sync`), and `free_slots`
        // saw `bottom - steal < capacity` against an Acquire load of `top`, so
        // every thief that read this slot's previous lap has released it.
        unsafe { inner.put(bottom, value) };
        inner.bottom.store(bottom.wrapping_add(1), Ordering::Release);
        Ok(())
    }

    /// Pops the newest element, or `None` when the deque is empty.
    #[inline]
    pub fn pop(&self) -> Option<T> {
        let inner = &*self.inner;
        let bottom = inner.bottom.load(Ordering::Relaxed);
        // `real` only grows and never passes `bottom`, so even a stale value
        // equal to `bottom` proves the deque empty.
        if unpack(inner.top.load(Ordering::Relaxed)).1 == bottom {
            return None;
        }
        let index = bottom.wrapping_sub(1);
        // Release, like every `bottom` store a thief may act on: a thief
        // that reads this value must see the slot writes below it.
        inner.bottom.store(index, Ordering::Release);
        // Orders the store above before the load below (module docs).
        fence(Ordering::SeqCst);
        let top = inner.top.load(Ordering::Relaxed);
        let remaining = distance(unpack(top).1, index);
        if remaining > 0 {
            // SAFETY: by the fence argument no thief can claim `index` while
            // `real < index`: a thief either sees `bottom == index` or its
            // `real` would have shown up in our `top` load.
            return Some(unsafe { inner.take(index) });
        }
        let won = remaining == 0 && self.win_last(top, index);
        // Whoever took it, `real == bottom` now: the deque is empty. Relaxed
        // (as in Lê et al.): this store publishes no slot. A thief that reads
        // it either read `top` after the race and finds the deque empty, or
        // read it before and its CAS fails on the `top` the race moved; the
        // next push publishes its slot with its own Release store.
        inner.bottom.store(bottom, Ordering::Relaxed);
        // SAFETY: our CAS moved `real` past `index`, so no thief claimed it,
        // and only the owner writes slots.
        won.then(|| unsafe { inner.take(index) })
    }

    /// Competes with the thieves for position `index == real`, the last
    /// element, by moving `real` past it. Returns whether we won.
    fn win_last(&self, mut top: u64, index: u32) -> bool {
        loop {
            let (steal, real) = unpack(top);
            if real != index {
                // A thief claimed it.
                return false;
            }
            // With no claim in progress, keep `steal == real`; during one,
            // the claiming thief moves `steal` when it is done.
            let steal_next = if steal == real { real.wrapping_add(1) } else { steal };
            let next = pack(steal_next, real.wrapping_add(1));
            match self.inner.top.compare_exchange(top, next, Ordering::SeqCst, Ordering::Relaxed) {
                Ok(_) => return true,
                // Either a thief claimed `index` (caught above) or a claim
                // below it ended and moved `steal`: look again.
                Err(actual) => top = actual,
            }
        }
    }

    /// How many elements the deque holds: exact for the owner's own pushes
    /// and pops, a snapshot of the thieves' progress.
    pub fn len(&self) -> usize {
        let bottom = self.inner.bottom.load(Ordering::Relaxed);
        // Relaxed: a snapshot that reads no slot.
        let (_, real) = unpack(self.inner.top.load(Ordering::Relaxed));
        distance(real, bottom).max(0) as usize
    }

    /// Whether the deque looked empty at the moment of the call.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The number of elements the deque holds when full.
    pub fn capacity(&self) -> usize {
        self.inner.capacity as usize
    }

    /// Our free space; only the owner calls it (`Worker` is not `Sync`).
    fn free_slots(&self) -> u32 {
        self.inner.free_slots(self.inner.bottom.load(Ordering::Relaxed))
    }

    /// Another thief end for this deque.
    pub fn stealer(&self) -> Stealer<T> {
        Stealer { inner: self.inner.clone() }
    }

    /// Moves `count` claimed positions of `source` from `from` on into our
    /// bottom, oldest first, with one publication.
    ///
    /// # Safety
    ///
    /// The caller holds a claim on `source` covering `from..from + count`,
    /// and we have room for `count` more elements.
    unsafe fn append_claimed(&self, source: &Inner<T>, from: u32, count: u32) {
        let inner = &*self.inner;
        let bottom = inner.bottom.load(Ordering::Relaxed);
        for offset in 0..count {
            // SAFETY: 1. the caller's claim makes these source positions ours
            // and their writes happen-before (our Acquire `bottom` loads);
            // 2. we are this deque's owner (`&Worker` cannot be shared), and
            // the caller checked the room against an Acquire load of `top`.
            unsafe {
                let value = source.take(from.wrapping_add(offset));
                inner.put(bottom.wrapping_add(offset), value);
            }
        }
        inner.bottom.store(bottom.wrapping_add(count), Ordering::Release);
    }
}

/// A thief end: takes the oldest elements from the top. Clone it freely.
pub struct Stealer<T> {
    inner: Arc<Inner<T>>,
}

impl<T> Clone for Stealer<T> {
    fn clone(&self) -> Self {
        Self { inner: self.inner.clone() }
    }
}

impl<T> Stealer<T> {
    /// Steals the oldest element.
    ///
    /// [`Steal::Retry`] when another thief's claim is in progress or the
    /// owner took the element first; the caller may try again.
    pub fn steal(&self) -> Steal<T> {
        let inner = &*self.inner;
        match inner.claim_top() {
            Claim::Empty => Steal::Empty,
            Claim::Retry => Steal::Retry,
            Claim::Won { head, .. } => {
                // SAFETY: our claim covers `head`, and the Acquire `bottom`
                // load in `claim_top` saw it published.
                let value = unsafe { inner.take(head) };
                inner.release_claim(pack(head, head.wrapping_add(1)));
                Steal::Success(value)
            }
        }
    }

    /// Steals up to half of the victim's elements (rounded up), at most
    /// `max` in all (`0` counts as 1) and at most one more than `dest` has
    /// room for; moves all but the oldest into `dest`, oldest first, and
    /// returns the oldest to run at once.
    ///
    /// [`Steal::Retry`] as for [`steal`](Self::steal).
    pub fn steal_batch_and_pop(&self, dest: &Worker<T>, max: usize) -> Steal<T> {
        let source = &*self.inner;
        let (head, len_seen) = match source.claim_top() {
            Claim::Empty => return Steal::Empty,
            Claim::Retry => return Steal::Retry,
            Claim::Won { head, len_seen } => (head, len_seen),
        };
        let max = u32::try_from(max).unwrap_or(u32::MAX).max(1);
        let want = len_seen.div_ceil(2).min(max).min(dest.free_slots().saturating_add(1));
        let claimed = source.extend_claim(head, want);
        debug_assert!((1..=want).contains(&claimed), "deque: claimed {claimed} of {want}");
        // SAFETY: our claim covers `head..head + claimed`, whose writes the
        // Acquire `bottom` loads saw published.
        let first = unsafe { source.take(head) };
        // SAFETY: the claim covers `head + 1..head + claimed`, and `want`
        // left room in `dest` for `claimed - 1` elements (thieves of `dest`
        // only make more room).
        unsafe { dest.append_claimed(source, head.wrapping_add(1), claimed - 1) };
        source.release_claim(pack(head, head.wrapping_add(claimed)));
        Steal::Success(first)
    }

    /// How many elements the deque held at the moment of the call (a
    /// snapshot: both ends may be moving).
    pub fn len(&self) -> usize {
        // Relaxed: a snapshot that reads no slot (the clamps keep it in
        // `0..=capacity` whatever order the loads see).
        let (_, real) = unpack(self.inner.top.load(Ordering::Relaxed));
        let bottom = self.inner.bottom.load(Ordering::Relaxed);
        (distance(real, bottom).max(0) as usize).min(self.inner.capacity as usize)
    }

    /// Whether the deque looked empty at the moment of the call.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// What a steal found.
#[must_use]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Steal<T> {
    /// The deque was empty.
    Empty,
    /// One element, now the thief's.
    Success(T),
    /// Another thief was mid-claim or won the race; try again.
    Retry,
}

impl<T> Steal<T> {
    /// The stolen element, if any.
    pub fn success(self) -> Option<T> {
        match self {
            Steal::Success(value) => Some(value),
            Steal::Empty | Steal::Retry => None,
        }
    }

    /// Whether the deque was empty.
    pub fn is_empty(&self) -> bool {
        matches!(self, Steal::Empty)
    }

    /// Whether the steal should be retried.
    pub fn is_retry(&self) -> bool {
        matches!(self, Steal::Retry)
    }
}

impl<T> fmt::Debug for Worker<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("deque::Worker")
            .field("len", &self.len())
            .field("capacity", &self.capacity())
            .finish()
    }
}

impl<T> fmt::Debug for Stealer<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("deque::Stealer").field("len", &self.len()).finish()
    }
}

#[cfg(all(test, not(zbmd_loom)))]
mod tests {
    use super::*;
    use crate::sync::CAPACITY_MAX;
    use std::sync::atomic::AtomicUsize as StdAtomicUsize;

    fn assert_send<T: Send>() {}
    fn assert_send_sync_clone<T: Send + Sync + Clone>() {}

    #[test]
    fn ends_are_send_and_stealers_are_sync() {
        assert_send::<Worker<String>>();
        assert_send_sync_clone::<Stealer<String>>();
    }

    #[test]
    fn rejects_zero_and_oversized_capacities() {
        assert_eq!(bounded::<u8>(0).unwrap_err(), CapacityError::Zero);
        assert_eq!(
            bounded::<u8>(CAPACITY_MAX + 1).unwrap_err(),
            CapacityError::TooLarge { requested: CAPACITY_MAX + 1, max: CAPACITY_MAX }
        );
    }

    #[test]
    fn owner_pops_newest_and_thieves_steal_oldest() {
        let (worker, stealer) = bounded(8).unwrap();
        for i in 0..5 {
            worker.push(i).unwrap();
        }
        assert_eq!(worker.pop(), Some(4));
        assert_eq!(stealer.steal(), Steal::Success(0));
        assert_eq!(stealer.steal(), Steal::Success(1));
        assert_eq!(worker.pop(), Some(3));
        assert_eq!(worker.len(), 1);
        assert_eq!(stealer.len(), 1);
        assert_eq!(stealer.steal(), Steal::Success(2));
        assert_eq!(worker.pop(), None);
        assert!(stealer.steal().is_empty());
        assert!(worker.is_empty() && stealer.is_empty());
    }

    #[test]
    fn holds_exactly_a_non_power_of_two_capacity() {
        let (worker, stealer) = bounded(3).unwrap();
        assert_eq!(worker.capacity(), 3);
        for i in 0..3 {
            worker.push(i).unwrap();
        }
        assert_eq!(worker.push(9), Err(Full(9)));
        assert_eq!(stealer.steal().success(), Some(0));
        worker.push(3).unwrap();
        assert_eq!(worker.push(9), Err(Full(9)));
        assert_eq!(worker.len(), 3);
        assert_eq!([worker.pop(), worker.pop(), worker.pop()], [Some(3), Some(2), Some(1)]);
        assert_eq!(worker.pop(), None);
    }

    #[test]
    fn capacity_one_alternates_full_and_empty_across_many_laps() {
        let (worker, stealer) = bounded(1).unwrap();
        for i in 0..1_000u32 {
            worker.push(i).unwrap();
            assert_eq!(worker.push(i), Err(Full(i)));
            if i % 2 == 0 {
                assert_eq!(worker.pop(), Some(i));
            } else {
                assert_eq!(stealer.steal(), Steal::Success(i));
            }
            assert_eq!(worker.pop(), None);
            assert!(stealer.steal().is_empty());
        }
    }

    #[test]
    fn positions_wrap_past_u32_max() {
        let (worker, stealer) = bounded_from(3, u32::MAX - 4).unwrap();
        let (local, _) = bounded_from(2, u32::MAX).unwrap();
        let mut next = 0u32;
        let mut expected_front = 0u32;
        for _ in 0..20 {
            while worker.push(next).is_ok() {
                next += 1;
            }
            assert_eq!(worker.len(), 3);
            assert_eq!(stealer.steal(), Steal::Success(expected_front));
            // One element left after the first of the batch: half of 2.
            assert_eq!(stealer.steal_batch_and_pop(&local, 8), Steal::Success(expected_front + 1));
            assert_eq!(worker.pop(), Some(next - 1));
            assert_eq!(local.pop(), None);
            expected_front = next;
        }
        assert!(next > 40);
    }

    #[test]
    fn batch_steals_half_rounded_up_within_max_and_room() {
        let (worker, stealer) = bounded(16).unwrap();
        let (local, local_stealer) = bounded(4).unwrap();
        for i in 0..9 {
            worker.push(i).unwrap();
        }
        // Half of 9, rounded up, is 5: one returned, four moved.
        assert_eq!(stealer.steal_batch_and_pop(&local, 32), Steal::Success(0));
        assert_eq!(local.len(), 4);
        assert_eq!(worker.len(), 4);
        // `local` is full: only the returned element moves.
        assert_eq!(stealer.steal_batch_and_pop(&local, 32), Steal::Success(5));
        assert_eq!(local.len(), 4);
        // The moved elements keep their order: oldest at the top.
        assert_eq!(local_stealer.steal(), Steal::Success(1));
        assert_eq!(local.pop(), Some(4));
        // `max` bounds the total, and 0 counts as 1.
        assert_eq!(stealer.steal_batch_and_pop(&local, 0), Steal::Success(6));
        assert_eq!(local.len(), 2);
        // Half of 2 is 1.
        assert_eq!(stealer.steal_batch_and_pop(&local, 2), Steal::Success(7));
        assert_eq!(local.len(), 2);
        assert_eq!(worker.pop(), Some(8));
        assert!(stealer.steal_batch_and_pop(&local, 2).is_empty());
        // With plenty of room and elements, `max` is the total taken.
        let (local, _) = bounded(16).unwrap();
        for i in 0..12 {
            worker.push(i).unwrap();
        }
        assert_eq!(stealer.steal_batch_and_pop(&local, 3), Steal::Success(0));
        assert_eq!([local.pop(), local.pop(), local.pop()], [Some(2), Some(1), None]);
        assert_eq!(worker.len(), 9);
    }

    #[test]
    fn steal_answers() {
        assert_eq!(Steal::Success(3).success(), Some(3));
        assert_eq!(Steal::<u8>::Empty.success(), None);
        assert!(Steal::<u8>::Retry.is_retry() && !Steal::<u8>::Retry.is_empty());
        assert!(Steal::<u8>::Empty.is_empty() && !Steal::Success(1).is_retry());
    }

    /// Counts its drops, so a test can prove every element is dropped once.
    struct Counted<'a>(&'a StdAtomicUsize);

    impl Drop for Counted<'_> {
        fn drop(&mut self) {
            self.0.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
    }

    #[test]
    fn drops_remaining_elements_once_when_the_last_end_goes() {
        let drops = StdAtomicUsize::new(0);
        let (worker, stealer) = bounded(5).unwrap();
        let (local, _) = bounded(5).unwrap();
        for _ in 0..5 {
            assert!(worker.push(Counted(&drops)).is_ok());
        }
        drop(worker.pop());
        drop(stealer.steal());
        drop(stealer.steal_batch_and_pop(&local, 4)); // takes 2: one dropped, one moved
        assert_eq!(drops.load(std::sync::atomic::Ordering::Relaxed), 3);
        drop(local);
        assert_eq!(drops.load(std::sync::atomic::Ordering::Relaxed), 4);
        let second = stealer.clone();
        drop(worker);
        drop(stealer);
        assert_eq!(drops.load(std::sync::atomic::Ordering::Relaxed), 4, "a stealer still holds it");
        drop(second);
        assert_eq!(drops.load(std::sync::atomic::Ordering::Relaxed), 5);
    }

    #[test]
    fn full_hands_the_value_back_intact() {
        let (worker, _stealer) = bounded(2).unwrap();
        worker.push(String::from("a")).unwrap();
        worker.push(String::from("b")).unwrap();
        let full = worker.push(String::from("c")).unwrap_err();
        assert_eq!(full.into_inner(), "c");
        assert_eq!(worker.pop().as_deref(), Some("b"));
    }
}
