//! Typed slab pools: fixed-size slots for one type, handed out as
//! [`PoolBox`]es that go home to their pool when dropped, on any thread.
//!
//! A slot's generation is bumped on every free, so a [`SlotId`] (index and
//! generation) names one allocation for all time: [`TypedPool::is_live`]
//! tells a stale id from a live one, and in debug builds freeing through a
//! stale raw handle ([`PoolBox::from_raw`] twice) panics instead of
//! corrupting the free list.

use std::fmt;
use std::marker::PhantomData;
use std::mem::{self, ManuallyDrop};
use std::ops::{Deref, DerefMut};
use std::ptr::NonNull;

use crate::buf::MAX_REFS;
use crate::error::AllocError;
use crate::facade::{Ordering, fence, thread_token};
use crate::pool::{Home, PoolRef, Spec};
use crate::region::Region;
use crate::stats::PoolStats;

/// A bounded pool of slots for values of type `T`, carved from a region at
/// startup.
///
/// Only the thread the pool is bound to allocates
/// ([`bind_current_thread`](TypedPool::bind_current_thread)); a
/// [`PoolBox`] may be dropped on any thread and its slot goes home.
///
/// ```
/// use zbmd_alloc::{Region, RegionConfig, TypedPool};
///
/// let region = Region::map(RegionConfig::new("example", 1 << 16))?;
/// let pool = TypedPool::<[u64; 4]>::new(&region, "quads", 2)?;
/// pool.bind_current_thread()?;
/// let a = pool.alloc([1, 2, 3, 4])?;
/// let _b = pool.alloc([0; 4])?;
/// assert!(pool.alloc([0; 4]).is_err()); // PoolExhausted: 2 slots
/// drop(a);
/// assert!(pool.alloc([0; 4]).is_ok());
/// # Ok::<(), zbmd_alloc::AllocError>(())
/// ```
pub struct TypedPool<T> {
    pool: PoolRef,
    _slots: PhantomData<fn() -> T>,
}

impl<T> TypedPool<T> {
    /// Carves `slots` slots for `T` (aligned as `T` requires) out of
    /// `region`. The pool is not bound to any thread yet.
    ///
    /// # Errors
    ///
    /// [`AllocError::BlockCount`] for 0 or more than
    /// [`MAX_BLOCKS`](crate::MAX_BLOCKS) slots, [`AllocError::RegionFull`]
    /// when the region has no room left.
    pub fn new(region: &Region, name: &str, slots: usize) -> Result<Self, AllocError> {
        Self::with_shard(region, name, None, slots)
    }

    pub(crate) fn with_shard(
        region: &Region,
        name: &str,
        shard: Option<usize>,
        slots: usize,
    ) -> Result<Self, AllocError> {
        let pool = PoolRef::new(Spec {
            region,
            name: name.into(),
            shard,
            // A zero-sized type still takes one byte, so each slot has its
            // own address and generation.
            block_bytes: mem::size_of::<T>().max(1),
            align: mem::align_of::<T>(),
            blocks: slots,
            bytes: false,
        })?;
        Ok(TypedPool { pool, _slots: PhantomData })
    }

    pub(crate) fn pool_ref(&self) -> &PoolRef {
        &self.pool
    }

    /// Binds the pool to the calling thread, which from now on is the only
    /// one that allocates from it. Drop the pool on this thread too, or call
    /// [`unbind_current_thread`](TypedPool::unbind_current_thread) first (a
    /// pool dropped on another thread while bound is leaked, with an error
    /// log).
    ///
    /// # Errors
    ///
    /// [`AllocError::AlreadyBound`].
    pub fn bind_current_thread(&self) -> Result<(), AllocError> {
        self.pool.core().bind(thread_token())
    }

    /// Gives up ownership: called on the owner thread, after which another
    /// thread may bind the pool, and it may be dropped on any thread.
    ///
    /// # Errors
    ///
    /// [`AllocError::NotOwner`] off the owner thread.
    pub fn unbind_current_thread(&self) -> Result<(), AllocError> {
        self.pool.core().unbind(thread_token())
    }

    /// Moves `value` into a free slot. On error the value is dropped; see
    /// [`alloc_with`](TypedPool::alloc_with) to build it only when a slot
    /// is free.
    ///
    /// # Errors
    ///
    /// [`AllocError::PoolExhausted`], or [`AllocError::NotOwner`] off the
    /// owner thread.
    #[inline]
    pub fn alloc(&self, value: T) -> Result<PoolBox<T>, AllocError> {
        self.alloc_with(|| value)
    }

    /// Takes a free slot, then fills it with `make()`.
    ///
    /// # Errors
    ///
    /// As [`alloc`](TypedPool::alloc); `make` is not called then.
    #[inline]
    pub fn alloc_with(&self, make: impl FnOnce() -> T) -> Result<PoolBox<T>, AllocError> {
        let block = self.pool.core().alloc()?;
        let home = Home::new(&self.pool, block);
        // If `make` panics, the guard sends the empty slot home.
        let guard = Vacate { home: Some(home), scrub: None };
        let value = make();
        let home = guard.disarm();
        // SAFETY: the block is ours, at least `size_of::<T>()` bytes and
        // aligned for `T` (the pool was built for `T`).
        Ok(unsafe { PoolBox::write(block.ptr.cast(), home, value) })
    }

    /// Takes back now the slots other threads freed; returns how many.
    ///
    /// # Errors
    ///
    /// [`AllocError::NotOwner`] off the owner thread.
    pub fn drain_remote(&self) -> Result<usize, AllocError> {
        self.pool.core().drain()
    }

    /// Whether the allocation `id` names is still live (not freed).
    pub fn is_live(&self, id: SlotId) -> bool {
        self.pool.core().is_live(id.index, id.generation)
    }

    /// The pool's counters.
    pub fn stats(&self) -> PoolStats {
        self.pool.core().stats()
    }

    /// The pool's name.
    pub fn name(&self) -> &str {
        self.pool.core().name()
    }

    /// How many slots it has.
    pub fn capacity(&self) -> usize {
        self.pool.core().capacity()
    }
}

impl<T> fmt::Debug for TypedPool<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("TypedPool").field(&self.stats()).finish()
    }
}

/// Sends a block home when dropped: after a value's drop (even one that
/// panicked), or when a constructor panicked before the value was written.
/// In a byte pool it first zeroes the bytes the value held, so the block's
/// bytes stay initialised for a `PooledBuf` that gets it next.
struct Vacate {
    home: Option<Home>,
    /// The value's bytes, for pools whose blocks may be read as bytes.
    scrub: Option<(NonNull<u8>, usize)>,
}

impl Vacate {
    /// For a value being dropped at `ptr`.
    #[inline]
    fn after_drop<T: ?Sized>(home: Home, ptr: NonNull<T>, size: usize) -> Self {
        let scrub = home.core().scrubs_values().then(|| (ptr.cast::<u8>(), size));
        Vacate { home: Some(home), scrub }
    }

    fn disarm(mut self) -> Home {
        match self.home.take() {
            Some(home) => home,
            None => unreachable!("a guard is disarmed once"),
        }
    }
}

impl Drop for Vacate {
    #[inline]
    fn drop(&mut self) {
        let Some(home) = self.home.take() else { return };
        if let Some((ptr, size)) = self.scrub {
            // SAFETY: the value that occupied these `size` bytes of the block
            // has been dropped (or its drop unwound); nothing refers to them.
            unsafe { ptr.as_ptr().write_bytes(0, size) };
        }
        // SAFETY: the block holds no live value and nothing else refers to
        // it: the value was dropped, or never written.
        unsafe { home.release() };
    }
}

/// Checks that `unsize`'s closure gave back the whole value it was given:
/// same address, same size.
fn same_value<T: ?Sized, U: ?Sized>(whole: *const T, size: usize, coerced: &U) -> bool {
    std::ptr::addr_eq(coerced as *const U, whole) && mem::size_of_val(coerced) == size
}

/// One allocation's name: slot index and generation. Stays valid as a name
/// after the slot is freed and reused, when [`TypedPool::is_live`] answers
/// `false` for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct SlotId {
    /// The slot's index in its pool.
    pub index: u32,
    /// The slot's generation when this allocation was made.
    pub generation: u32,
}

/// A value in a pool slot: owned, like a `Box`, and sent home to its pool
/// when dropped, from whatever thread drops it.
///
/// `PoolBox<T>` becomes a `PoolBox<dyn Trait>` with
/// [`unsize`](PoolBox::unsize); [`into_raw`](PoolBox::into_raw) and
/// [`from_raw`](PoolBox::from_raw) let a runtime keep it as a raw pointer.
pub struct PoolBox<T: ?Sized> {
    ptr: NonNull<T>,
    home: ManuallyDrop<Home>,
    _owns: PhantomData<T>,
}

// SAFETY: a PoolBox owns its `T` exactly as a `Box<T>` does, and sending its
// slot home from any thread is what the pool's remote path is for.
unsafe impl<T: ?Sized + Send> Send for PoolBox<T> {}
// SAFETY: `&PoolBox<T>` only gives `&T`.
unsafe impl<T: ?Sized + Sync> Sync for PoolBox<T> {}

impl<T: ?Sized> PoolBox<T> {
    /// This allocation's name, for [`TypedPool::is_live`].
    pub fn slot_id(this: &Self) -> SlotId {
        SlotId { index: this.home.index, generation: this.home.generation }
    }

    /// The value's address (stable for the box's life).
    pub fn as_ptr(this: &Self) -> NonNull<T> {
        this.ptr
    }

    /// Turns a `PoolBox<T>` into a `PoolBox<U>` where `&mut T` coerces to
    /// `&mut U`, typically a trait object:
    /// `PoolBox::unsize(b, |x| x as &mut dyn Trait)`.
    ///
    /// # Panics
    ///
    /// If `coerce` returns anything but the whole value it was given (a
    /// reference elsewhere, or to a part of it): the address and size must
    /// be the same.
    pub fn unsize<U: ?Sized>(this: Self, coerce: impl FnOnce(&mut T) -> &mut U) -> PoolBox<U> {
        let mut this = ManuallyDrop::new(this);
        let value: &mut T = &mut this;
        let (whole, size) = (value as *const T, mem::size_of_val(value));
        let coerced = coerce(value);
        let same = same_value(whole, size, coerced);
        let coerced = NonNull::from(coerced);
        if !same {
            drop(ManuallyDrop::into_inner(this));
            panic!("PoolBox::unsize: the closure must return the whole value it was given");
        }
        // SAFETY: `this` is never dropped (ManuallyDrop); its home moves to
        // the new box, which owns the same value at the same address and of
        // the same size, now seen as a `U` (checked above).
        let home = unsafe { ManuallyDrop::take(&mut this.home) };
        PoolBox { ptr: coerced, home: ManuallyDrop::new(home), _owns: PhantomData }
    }

    /// Shares the value: a reference-counted [`PoolArc`] in the same slot,
    /// without moving it.
    pub fn into_arc(this: Self) -> PoolArc<T> {
        let mut this = ManuallyDrop::new(this);
        // SAFETY: `this` is never dropped; its home moves into the result.
        let home = unsafe { ManuallyDrop::take(&mut this.home) };
        // The slot is ours alone: a plain store starts the count.
        home.refs().store(1, Ordering::Relaxed);
        PoolArc { ptr: this.ptr, home: ManuallyDrop::new(home), _owns: PhantomData }
    }

    /// Gives up the box without dropping the value: the raw pointer and the
    /// slot's ticket. [`from_raw`](PoolBox::from_raw) makes it a box again.
    pub fn into_raw(this: Self) -> (NonNull<T>, RawSlot) {
        let mut this = ManuallyDrop::new(this);
        // SAFETY: `this` is never dropped; the home moves into the ticket.
        let home = unsafe { ManuallyDrop::take(&mut this.home) };
        (this.ptr, RawSlot { home })
    }

    /// Rebuilds a box from [`into_raw`](PoolBox::into_raw)'s parts.
    ///
    /// # Safety
    ///
    /// `ptr` and `slot` come from the same `into_raw` call, and each such
    /// pair is turned back into a box at most once. (Debug builds check the
    /// slot's generation and panic on a stale ticket.)
    pub unsafe fn from_raw(ptr: NonNull<T>, slot: RawSlot) -> Self {
        slot.home.core().check_generation(slot.home.index, slot.home.generation);
        PoolBox { ptr, home: ManuallyDrop::new(slot.home), _owns: PhantomData }
    }
}

impl<T: ?Sized> Deref for PoolBox<T> {
    type Target = T;

    fn deref(&self) -> &T {
        // SAFETY: the box owns a live, initialised `T` at `ptr`.
        unsafe { self.ptr.as_ref() }
    }
}

impl<T: ?Sized> DerefMut for PoolBox<T> {
    fn deref_mut(&mut self) -> &mut T {
        // SAFETY: as above, and `&mut self` makes the access unique.
        unsafe { self.ptr.as_mut() }
    }
}

impl<T: ?Sized> Drop for PoolBox<T> {
    #[inline]
    fn drop(&mut self) {
        let size = mem::size_of_val::<T>(self);
        // SAFETY: the home is taken once, here, and `self` is not used after.
        let home = unsafe { ManuallyDrop::take(&mut self.home) };
        // Sends the slot home even if the value's drop panics.
        let _vacate = Vacate::after_drop(home, self.ptr, size);
        // SAFETY: the box owns an initialised value that nothing else refers
        // to; it is dropped once, here.
        unsafe { self.ptr.as_ptr().drop_in_place() };
    }
}

impl<T> PoolBox<T> {
    /// Writes `value` into a block and boxes it.
    ///
    /// # Safety
    ///
    /// `ptr` is `home`'s block, just allocated, holding at least
    /// `size_of::<T>()` bytes and aligned for `T`.
    #[inline]
    pub(crate) unsafe fn write(ptr: NonNull<T>, home: Home, value: T) -> Self {
        // SAFETY: the caller's contract.
        unsafe { ptr.as_ptr().write(value) };
        PoolBox { ptr, home: ManuallyDrop::new(home), _owns: PhantomData }
    }
}

impl<T: ?Sized + fmt::Debug> fmt::Debug for PoolBox<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&**self, f)
    }
}

/// The slot ticket of a [`PoolBox`] turned into a raw pointer: which pool,
/// which slot, which generation. Hand it back to [`PoolBox::from_raw`].
/// Dropping it without doing so leaks the slot (and the value).
#[derive(Debug)]
pub struct RawSlot {
    home: Home,
}

// SAFETY: the ticket names a slot; sending it between threads is what a
// PoolBox does.
unsafe impl Send for RawSlot {}
// SAFETY: `&RawSlot` gives nothing.
unsafe impl Sync for RawSlot {}

impl RawSlot {
    /// The allocation's name.
    pub fn slot_id(&self) -> SlotId {
        SlotId { index: self.home.index, generation: self.home.generation }
    }
}

/// A value in a pool slot shared by reference counting, like an `Arc`:
/// cheap to clone (one atomic increment), immutable, and dropped (its slot
/// sent home) when the last handle drops, on whatever thread that is. Made
/// with [`PoolBox::into_arc`].
pub struct PoolArc<T: ?Sized> {
    ptr: NonNull<T>,
    home: ManuallyDrop<Home>,
    _owns: PhantomData<T>,
}

// SAFETY: as for `Arc<T>`: handles on several threads share `&T` and the
// last one drops the `T` wherever it is.
unsafe impl<T: ?Sized + Send + Sync> Send for PoolArc<T> {}
// SAFETY: as above.
unsafe impl<T: ?Sized + Send + Sync> Sync for PoolArc<T> {}

impl<T: ?Sized> PoolArc<T> {
    /// How many handles share the value now (a snapshot).
    pub fn strong_count(this: &Self) -> usize {
        this.home.refs().load(Ordering::Relaxed) as usize
    }

    /// Whether two handles share one value.
    pub fn ptr_eq(a: &Self, b: &Self) -> bool {
        std::ptr::addr_eq(a.ptr.as_ptr(), b.ptr.as_ptr())
    }

    /// The value's address.
    pub fn as_ptr(this: &Self) -> NonNull<T> {
        this.ptr
    }

    /// This allocation's name.
    pub fn slot_id(this: &Self) -> SlotId {
        SlotId { index: this.home.index, generation: this.home.generation }
    }

    /// Turns this handle into a `PoolArc<U>` where `&T` coerces to `&U`
    /// (a trait object): `PoolArc::unsize(a, |x| x as &dyn Trait)`. The
    /// other handles keep their type; the count does not change.
    ///
    /// # Panics
    ///
    /// If `coerce` returns anything but the whole value it was given.
    pub fn unsize<U: ?Sized>(this: Self, coerce: impl FnOnce(&T) -> &U) -> PoolArc<U> {
        let mut this = ManuallyDrop::new(this);
        let value: &T = &this;
        let (whole, size) = (value as *const T, mem::size_of_val(value));
        let coerced = coerce(value);
        let same = same_value(whole, size, coerced);
        let coerced = NonNull::from(coerced);
        if !same {
            drop(ManuallyDrop::into_inner(this));
            panic!("PoolArc::unsize: the closure must return the whole value it was given");
        }
        // SAFETY: `this` is never dropped; its share moves to the result,
        // which sees the same value (same address and size) as a `U`.
        let home = unsafe { ManuallyDrop::take(&mut this.home) };
        PoolArc { ptr: coerced, home: ManuallyDrop::new(home), _owns: PhantomData }
    }
}

impl<T: ?Sized> Clone for PoolArc<T> {
    #[inline]
    fn clone(&self) -> Self {
        // Relaxed, as `Arc::clone`: derived from a live handle.
        if self.home.refs().fetch_add(1, Ordering::Relaxed) >= MAX_REFS {
            std::process::abort();
        }
        // SAFETY: the count now includes the new handle's share.
        let home = unsafe { self.home.alias() };
        PoolArc { ptr: self.ptr, home: ManuallyDrop::new(home), _owns: PhantomData }
    }
}

impl<T: ?Sized> Deref for PoolArc<T> {
    type Target = T;

    fn deref(&self) -> &T {
        // SAFETY: the value lives while any handle does, and is only ever
        // shared immutably.
        unsafe { self.ptr.as_ref() }
    }
}

impl<T: ?Sized> Drop for PoolArc<T> {
    #[inline]
    fn drop(&mut self) {
        // Release: this handle's uses of the value happen before its drop.
        if self.home.refs().fetch_sub(1, Ordering::Release) != 1 {
            return;
        }
        // Acquire: every other handle's uses happen before the drop below.
        fence(Ordering::Acquire);
        let size = mem::size_of_val::<T>(self);
        // SAFETY: taken once, here, by the last handle.
        let home = unsafe { ManuallyDrop::take(&mut self.home) };
        let _vacate = Vacate::after_drop(home, self.ptr, size);
        // SAFETY: the last handle: nothing else refers to the value.
        unsafe { self.ptr.as_ptr().drop_in_place() };
    }
}

impl<T: ?Sized + fmt::Debug> fmt::Debug for PoolArc<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&**self, f)
    }
}
