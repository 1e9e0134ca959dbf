//! Byte buffers: one size class per [`BufPool`], handed out as a unique,
//! mutable [`PooledBuf`] that can be frozen into a shared, immutable,
//! reference-counted [`SharedBuf`]. Both go home to their pool when the
//! last handle drops, on whatever thread drops it, and neither ever copies
//! its bytes: moving one between actors moves a pointer.
//!
//! A block's bytes are always initialised (zero-filled by the kernel when
//! the region was mapped, and since then only ever written as bytes), so a
//! fresh buffer is safe to read; its contents are whatever the block last
//! held (the 0xDB poison in debug builds) unless it came from
//! [`BufPool::alloc_zeroed`].

use std::fmt;
use std::mem::{self, ManuallyDrop};
use std::ops::{Bound, Deref, DerefMut, RangeBounds};
use std::ptr::NonNull;

use crate::error::AllocError;
use crate::facade::{Ordering, fence, thread_token};
use crate::pool::{Home, PoolRef, Spec};
use crate::region::Region;
use crate::stats::PoolStats;
use crate::typed::PoolBox;

/// Byte blocks below a page are aligned to their size rounded up to a power
/// of two, at most this: a block of 128 bytes or more never shares a line
/// pair with its neighbour (the adjacent-line prefetcher pulls 128-byte pairs
/// on x86_64, as `crossbeam_utils::CachePadded` assumes), and smaller blocks
/// do not waste more than they hold.
const SMALL_ALIGN: usize = 128;
/// Blocks of at least a page are page-aligned, as `O_DIRECT` I/O and DMA
/// registration want.
const PAGE_ALIGN: usize = 4096;

/// The alignment of a class's blocks.
pub(crate) fn class_align(block_bytes: usize) -> usize {
    if block_bytes >= PAGE_ALIGN {
        PAGE_ALIGN
    } else {
        SMALL_ALIGN.min(block_bytes.next_power_of_two())
    }
}

/// The most handles one [`SharedBuf`] (or [`PoolArc`](crate::PoolArc))
/// block can have, as for `Arc`: beyond it a clone aborts rather than wrap
/// the count.
pub(crate) const MAX_REFS: u32 = i32::MAX as u32;

/// One size class: `blocks` byte blocks of `block_bytes` bytes each.
///
/// ```
/// use zbmd_alloc::{BufPool, Region, RegionConfig};
///
/// let region = Region::map(RegionConfig::new("example", 1 << 16))?;
/// let pool = BufPool::new(&region, "buf-4k", 4096, 4)?;
/// pool.bind_current_thread()?;
/// let mut buf = pool.alloc_zeroed(100)?;
/// buf[..5].copy_from_slice(b"hello");
/// let shared = buf.freeze();
/// let word = shared.slice(0..5);
/// assert_eq!(&word[..], b"hello");
/// assert_eq!(word.as_ptr(), shared.as_ptr()); // same memory, no copy
/// # Ok::<(), zbmd_alloc::AllocError>(())
/// ```
pub struct BufPool {
    pool: PoolRef,
}

impl BufPool {
    /// Carves `blocks` blocks of `block_bytes` bytes out of `region`
    /// (aligned to their size rounded up to a power of two, at most 128
    /// bytes, below 4 KiB; page-aligned from 4 KiB up). Not bound yet.
    ///
    /// # Errors
    ///
    /// [`AllocError::ZeroSizedClass`], [`AllocError::BlockCount`],
    /// [`AllocError::SizeOverflow`], [`AllocError::RegionFull`].
    pub fn new(
        region: &Region,
        name: &str,
        block_bytes: usize,
        blocks: usize,
    ) -> Result<Self, AllocError> {
        Self::with_shard(region, name, None, block_bytes, blocks)
    }

    pub(crate) fn with_shard(
        region: &Region,
        name: &str,
        shard: Option<usize>,
        block_bytes: usize,
        blocks: usize,
    ) -> Result<Self, AllocError> {
        let align = class_align(block_bytes.max(1));
        let pool = PoolRef::new(Spec {
            region,
            name: name.into(),
            shard,
            block_bytes,
            align,
            blocks,
            bytes: true,
        })?;
        Ok(BufPool { pool })
    }

    /// Binds the pool to the calling thread, the only one that allocates
    /// from it from now on. Drop the pool on this thread too, or call
    /// [`unbind_current_thread`](BufPool::unbind_current_thread) first (a
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
    /// thread may bind the pool, and it may be dropped on any thread. The
    /// old owner's later frees take the remote path.
    ///
    /// # Errors
    ///
    /// [`AllocError::NotOwner`] off the owner thread.
    pub fn unbind_current_thread(&self) -> Result<(), AllocError> {
        self.pool.core().unbind(thread_token())
    }

    pub(crate) fn bind_token(&self, token: usize) -> Result<(), AllocError> {
        self.pool.core().bind(token)
    }

    /// A buffer of `len` bytes whose contents are unspecified (what the
    /// block last held). Never zeroes, never copies.
    ///
    /// # Errors
    ///
    /// [`AllocError::BufferTooLarge`] when `len` exceeds the block size,
    /// [`AllocError::PoolExhausted`], [`AllocError::NotOwner`].
    #[inline(always)]
    pub fn alloc(&self, len: usize) -> Result<PooledBuf, AllocError> {
        let core = self.pool.core();
        if len > core.block_bytes() {
            return Err(AllocError::BufferTooLarge {
                pool: core.name().clone(),
                requested_bytes: len,
                max_bytes: core.block_bytes(),
            });
        }
        let block = core.alloc()?;
        Ok(PooledBuf { ptr: block.ptr, len, home: ManuallyDrop::new(Home::new(&self.pool, block)) })
    }

    /// Moves `value` into one block of this class: objects of any type
    /// (an actor's cell, a mailbox) from a shard's byte classes. When the
    /// box drops, the value is dropped and its bytes are zeroed, so the block
    /// can serve as a byte buffer again.
    ///
    /// # Errors
    ///
    /// [`AllocError::ValueDoesNotFit`] when `T` is larger or more aligned
    /// than a block; then as [`alloc`](BufPool::alloc). The value is
    /// dropped on error.
    #[inline]
    pub fn alloc_box<T>(&self, value: T) -> Result<PoolBox<T>, AllocError> {
        let core = self.pool.core();
        if mem::size_of::<T>() > core.block_bytes() || mem::align_of::<T>() > core.align() {
            return Err(AllocError::ValueDoesNotFit {
                pool: core.name().clone(),
                bytes: mem::size_of::<T>(),
                align: mem::align_of::<T>(),
            });
        }
        let block = core.alloc()?;
        // SAFETY: the block is ours, holds `size_of::<T>()` bytes and is
        // aligned for `T` (checked above).
        Ok(unsafe { PoolBox::write(block.ptr.cast(), Home::new(&self.pool, block), value) })
    }

    /// As [`alloc`](BufPool::alloc), with the `len` bytes zeroed.
    ///
    /// # Errors
    ///
    /// As [`alloc`](BufPool::alloc).
    pub fn alloc_zeroed(&self, len: usize) -> Result<PooledBuf, AllocError> {
        let mut buf = self.alloc(len)?;
        buf.fill(0);
        Ok(buf)
    }

    /// Takes back now the blocks other threads freed; returns how many.
    ///
    /// # Errors
    ///
    /// [`AllocError::NotOwner`] off the owner thread.
    pub fn drain_remote(&self) -> Result<usize, AllocError> {
        self.pool.core().drain()
    }

    /// The pool's counters.
    pub fn stats(&self) -> PoolStats {
        self.pool.core().stats()
    }

    /// The pool's name.
    pub fn name(&self) -> &str {
        self.pool.core().name()
    }

    /// Bytes per block: the largest buffer it hands out.
    pub fn block_bytes(&self) -> usize {
        self.pool.core().block_bytes()
    }

    /// How many blocks it has.
    pub fn capacity(&self) -> usize {
        self.pool.core().capacity()
    }
}

impl fmt::Debug for BufPool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("BufPool").field(&self.stats()).finish()
    }
}

/// A unique, mutable byte buffer in a pool block. Derefs to `[u8]`; goes
/// home when dropped, from any thread.
pub struct PooledBuf {
    ptr: NonNull<u8>,
    len: usize,
    home: ManuallyDrop<Home>,
}

// SAFETY: a PooledBuf owns its block's bytes like a `Box<[u8]>`; sending the
// block home from another thread is the pool's remote path.
unsafe impl Send for PooledBuf {}
// SAFETY: `&PooledBuf` only gives `&[u8]`.
unsafe impl Sync for PooledBuf {}

impl PooledBuf {
    /// The buffer's length.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the length is zero.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The block's size: the longest this buffer can be made with
    /// [`set_len`](PooledBuf::set_len).
    pub fn capacity(&self) -> usize {
        self.home.core().block_bytes()
    }

    /// Changes the length within the block. Growing exposes what the block
    /// held (initialised bytes, unspecified values).
    ///
    /// # Errors
    ///
    /// [`AllocError::BufferTooLarge`] beyond the capacity.
    pub fn set_len(&mut self, len: usize) -> Result<(), AllocError> {
        let core = self.home.core();
        if len > core.block_bytes() {
            return Err(AllocError::BufferTooLarge {
                pool: core.name().clone(),
                requested_bytes: len,
                max_bytes: core.block_bytes(),
            });
        }
        self.len = len;
        Ok(())
    }

    /// The first byte's address: stable for the buffer's life and inside
    /// its region ([`Region::info`]), for registered I/O.
    pub fn as_ptr(&self) -> *const u8 {
        self.ptr.as_ptr()
    }

    /// The first byte's address, writable (for the kernel or a device to
    /// fill). Whatever writes through it must leave the bytes initialised.
    pub fn as_mut_ptr(&mut self) -> *mut u8 {
        self.ptr.as_ptr()
    }

    /// The pool this buffer goes home to.
    pub fn pool_name(&self) -> &str {
        self.home.core().name()
    }

    /// Makes the buffer shared and immutable, without copying: the result
    /// has one handle, and clones share the block.
    pub fn freeze(self) -> SharedBuf {
        let mut this = ManuallyDrop::new(self);
        // SAFETY: `this` is never dropped; its home moves into the result.
        let home = unsafe { ManuallyDrop::take(&mut this.home) };
        // The block is ours alone: a plain store starts the count. Handing
        // the result to another thread synchronises as any move does.
        home.refs().store(1, Ordering::Relaxed);
        SharedBuf { ptr: this.ptr, len: this.len, home: ManuallyDrop::new(home) }
    }
}

impl Deref for PooledBuf {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        // SAFETY: `len` is within the block, which this handle owns alone,
        // and a block's bytes are always initialised (module docs).
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.len) }
    }
}

impl DerefMut for PooledBuf {
    fn deref_mut(&mut self) -> &mut [u8] {
        // SAFETY: as for `deref`, and `&mut self` makes the access unique.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.as_ptr(), self.len) }
    }
}

impl AsRef<[u8]> for PooledBuf {
    fn as_ref(&self) -> &[u8] {
        self
    }
}

impl AsMut<[u8]> for PooledBuf {
    fn as_mut(&mut self) -> &mut [u8] {
        self
    }
}

impl Drop for PooledBuf {
    #[inline(always)]
    fn drop(&mut self) {
        // SAFETY: taken once, here; `self` is not used afterwards.
        let home = unsafe { ManuallyDrop::take(&mut self.home) };
        // SAFETY: this handle was the block's only owner and is going.
        unsafe { home.release() };
    }
}

impl fmt::Debug for PooledBuf {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PooledBuf")
            .field("pool", &self.pool_name())
            .field("addr", &self.ptr)
            .field("len", &self.len)
            .field("capacity", &self.capacity())
            .finish()
    }
}

/// A shared, immutable view of a pool block: cheap to clone (one atomic
/// increment) and to slice (no copy); the block goes home when the last
/// view drops, on whatever thread that is.
pub struct SharedBuf {
    ptr: NonNull<u8>,
    len: usize,
    home: ManuallyDrop<Home>,
}

// SAFETY: the block is immutable while shared and its count is atomic, so
// views may live on and drop from any thread, like `Arc<[u8]>`.
unsafe impl Send for SharedBuf {}
// SAFETY: as above.
unsafe impl Sync for SharedBuf {}

impl SharedBuf {
    /// The view's length.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the view is empty.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The view's first byte.
    pub fn as_ptr(&self) -> *const u8 {
        self.ptr.as_ptr()
    }

    /// How many views share the block now (a snapshot).
    pub fn ref_count(&self) -> usize {
        self.home.refs().load(Ordering::Relaxed) as usize
    }

    /// A view of `range` (relative to this view) sharing the same block.
    ///
    /// # Panics
    ///
    /// If the range is out of bounds or decreasing, like slice indexing;
    /// [`try_slice`](SharedBuf::try_slice) answers `None` instead.
    pub fn slice(&self, range: impl RangeBounds<usize>) -> SharedBuf {
        let (start, end) = (range.start_bound().cloned(), range.end_bound().cloned());
        match self.try_slice((start, end)) {
            Some(view) => view,
            None => panic!("SharedBuf::slice: {start:?}..{end:?} out of 0..{}", self.len),
        }
    }

    /// A view of `range` sharing the same block, or `None` if the range is
    /// out of bounds or decreasing.
    pub fn try_slice(&self, range: impl RangeBounds<usize>) -> Option<SharedBuf> {
        let start = match range.start_bound() {
            Bound::Included(&s) => s,
            Bound::Excluded(&s) => s.checked_add(1)?,
            Bound::Unbounded => 0,
        };
        let end = match range.end_bound() {
            Bound::Included(&e) => e.checked_add(1)?,
            Bound::Excluded(&e) => e,
            Bound::Unbounded => self.len,
        };
        if start > end || end > self.len {
            return None;
        }
        let mut view = self.clone();
        // SAFETY: `start <= len`, so the pointer stays within this view.
        view.ptr = unsafe { self.ptr.add(start) };
        view.len = end - start;
        Some(view)
    }
}

impl Clone for SharedBuf {
    #[inline]
    fn clone(&self) -> Self {
        // Relaxed, as `Arc::clone`: the new view is derived from a live one,
        // which keeps the block alive meanwhile.
        if self.home.refs().fetch_add(1, Ordering::Relaxed) >= MAX_REFS {
            std::process::abort();
        }
        // SAFETY: the count now includes the new view's share.
        let home = unsafe { self.home.alias() };
        SharedBuf { ptr: self.ptr, len: self.len, home: ManuallyDrop::new(home) }
    }
}

impl Deref for SharedBuf {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        // SAFETY: the view is within the block, which stays allocated and
        // unwritten while any view exists; its bytes are initialised.
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.len) }
    }
}

impl AsRef<[u8]> for SharedBuf {
    fn as_ref(&self) -> &[u8] {
        self
    }
}

impl Drop for SharedBuf {
    #[inline]
    fn drop(&mut self) {
        // Release: this view's reads happen before the block is reused.
        if self.home.refs().fetch_sub(1, Ordering::Release) != 1 {
            return;
        }
        // Acquire: every other view's reads happen before the release below.
        fence(Ordering::Acquire);
        // SAFETY: taken once, here.
        let home = unsafe { ManuallyDrop::take(&mut self.home) };
        // SAFETY: this was the last view: nobody refers to the block.
        unsafe { home.release() };
    }
}

impl fmt::Debug for SharedBuf {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SharedBuf")
            .field("pool", &&**self.home.core().name())
            .field("addr", &self.ptr)
            .field("len", &self.len)
            .field("refs", &self.ref_count())
            .finish()
    }
}
