//! The core every pool shares: fixed-size blocks carved from a region, one
//! owner thread that allocates and frees without atomics, and a lock-free
//! remote-free stack that every other thread pushes onto.
//!
//! # Algorithm
//!
//! This is mimalloc's free-list sharding (Leijen, Zorn and de Moura,
//! "Mimalloc: Free List Sharding in Action", 2019) reduced to one list per
//! pool, with Seastar's rule that memory belongs to one shard and goes home
//! to it when another shard frees it:
//!
//! * **Owner.** A pool is bound to one thread ([`Core::bind`]), and only
//!   that thread allocates. Ownership changes only by the owner letting go
//!   ([`Core::unbind`], on the owner thread, so no local operation of its
//!   can be in flight) and another thread binding after it. Every thread has a unique, never reused token
//!   (`facade::thread_token`), so "am I the owner" is one thread-local load
//!   and a compare.
//! * **Local free list.** The owner pops and pushes block indices on an
//!   intrusive LIFO list (each free block's `next` lives in its metadata
//!   entry) with plain loads and stores: no atomic read-modify-write on the
//!   same-thread path. Blocks never handed out yet are taken from a bump
//!   index (`fresh`), so building a pool touches no block.
//! * **Remote frees.** Any other thread pushes the block onto the pool's
//!   remote stack, a Treiber stack (R. K. Treiber, "Systems Programming:
//!   Coping with Parallelism", IBM RJ 5118, 1986) of block indices: write
//!   `next = head`, then CAS `head` from that value to the block, `Release`.
//! * **Drain.** When its local list runs dry (or on
//!   [`Core::drain`]), the owner takes the whole remote stack with one
//!   `swap(EMPTY, Acquire)` and splices it onto its local list. The owner
//!   never pops single elements from the remote stack.
//!
//! # Why there is no ABA problem
//!
//! The ABA hazard of a Treiber stack lives in *pop*: a popper reads `top`
//! and `top.next`, and its CAS succeeds if `top` was popped, reused and
//! pushed again meanwhile, installing a stale `next`. Here nobody pops: the
//! one consumer takes the whole stack with an unconditional `swap`. A pusher
//! reads `head = h`, writes `block.next = h`, and CASes `h → block`. If `h`
//! was drained, reallocated, freed and pushed again in between, `head` is `h`
//! again and the CAS succeeds, which is correct: the only fact the push
//! relies on is "`block.next` equals the head at the moment of the CAS", and
//! the CAS checks exactly that. Whatever `h.next` is now was written by
//! whoever pushed `h` last, before its own CAS. So no tags or hazard
//! pointers are needed; the loom models in
//! `loom_tests/tests/alloc_remote_free.rs` check it.
//!
//! # Memory ordering
//!
//! * A freeing thread's writes to the block (and its `next`) happen before
//!   its `Release` CAS; the owner's `Acquire` swap reads the last CAS of a
//!   chain of CASes (read-modify-writes continue a release sequence), so it
//!   synchronises with every push in the taken list, and every `next` in it
//!   is visible.
//! * Local frees and allocations are all on the owner thread: program order.
//!
//! # Closing
//!
//! When the last pool handle drops (on the owner thread, or anywhere if the
//! pool was never bound), the pool closes: the owner gives up ownership,
//! swaps `CLOSED` into the remote stack (taking what was there), and adds
//! the number of blocks still out to `remaining`. A free that finds
//! `CLOSED` subtracts one instead of pushing. Whoever brings `remaining` to
//! zero (the closer when nothing is out, else the last freer) frees the
//! metadata and drops the pool's hold on the region. Before the close adds
//! its count the subtractions only make `remaining` wrap below zero, so it
//! is zero exactly once. A pool still bound to another thread cannot close
//! safely (the owner may be freeing locally at that moment): it is leaked
//! with an error log, and stays memory-safe. Unbinding first (on the
//! owner) makes a close on any thread safe.

use std::ptr::NonNull;
use std::sync::Arc;

use crossbeam_utils::CachePadded;

use crate::error::AllocError;
use crate::facade::{AtomicU32, AtomicU64, AtomicUsize, Ordering, UnsafeCell, thread_token};
use crate::region::Region;
use crate::stats::PoolStats;

/// The most blocks one pool holds: 2^30, the same bound as zbmd's queues.
/// Indices are `u32` with two values reserved as markers, and a pool this
/// large is already a gigabyte of one-byte blocks.
pub const MAX_BLOCKS: usize = 1 << 30;

/// The end of a list, and an empty remote stack.
const EMPTY: u32 = u32::MAX;
/// The remote stack of a closed pool.
const CLOSED: u32 = u32::MAX - 1;
/// The owner of a pool not bound to any thread.
const NOBODY: usize = 0;

/// What a freed block is filled with in debug builds, so a read through a
/// stale pointer shows a recognisable pattern ("dead block").
#[cfg(debug_assertions)]
pub(crate) const POISON: u8 = 0xDB;

/// One block's metadata, kept apart from the block so a block is all
/// payload.
struct Meta {
    /// The next free block, while this one is on a free list or the remote
    /// stack. Written only by whoever holds the block.
    next: UnsafeCell<u32>,
    /// Bumped on every free: a handle from an earlier incarnation of the
    /// block no longer matches.
    generation: AtomicU32,
    /// Live [`SharedBuf`](crate::SharedBuf) handles on the block.
    refs: AtomicU32,
}

/// The owner's private list state.
struct Local {
    /// Head of the local free list.
    free: u32,
    /// Blocks `fresh..capacity` have never been handed out.
    fresh: u32,
}

/// Everything only the owner writes; readable (the counters) by anyone.
struct OwnerSide {
    local: UnsafeCell<Local>,
    in_use: AtomicUsize,
    high_water: AtomicUsize,
    remote_frees: AtomicU64,
    exhausted: AtomicU64,
}

/// The remote side: pushed by every other thread.
struct RemoteSide {
    head: AtomicU32,
    /// Blocks still out after the close (wrapping; see the module docs).
    remaining: AtomicUsize,
}

/// A pool's shared state. Reached through [`PoolRef`] (the pool handles)
/// and through raw pointers in every outstanding block handle.
pub(crate) struct Core {
    name: Arc<str>,
    shard: Option<usize>,
    base: NonNull<u8>,
    stride: usize,
    block_bytes: usize,
    align: usize,
    /// Byte pools: a value stored in a block is overwritten with zeros when
    /// it is dropped, so the block's bytes stay initialised for the
    /// `PooledBuf` that may get it next.
    scrub_values: bool,
    capacity: u32,
    meta: Box<[Meta]>,
    /// Keeps the mapping alive while any block is out.
    _region: Region,
    owner: AtomicUsize,
    /// Live pool handles.
    handles: AtomicUsize,
    owner_side: CachePadded<OwnerSide>,
    remote: CachePadded<RemoteSide>,
}

// SAFETY: 1. `base` points into the region `_region` keeps mapped for the
// core's whole life; 2. the owner side's `local` cell is touched only by the
// thread whose token equals `owner` (checked at each access), and the owner
// changes only from NOBODY to one token (bind) and back at close, both on
// that thread; 3. each `next` cell is touched only by the thread that holds
// its block, ordered by the remote stack's Release/Acquire pairs; 4. the
// rest is atomics or immutable after construction.
unsafe impl Send for Core {}
// SAFETY: see `Send`.
unsafe impl Sync for Core {}

/// Under loom only: freeing the core writes the owner's list and every
/// block's `next` cell. loom does not see a deallocation, so without this a
/// model could not tell a free that is ordered after every other thread's
/// last use of the core (the `AcqRel` of `count_home`) from one that is not;
/// with it, such a free is a data race on a cell, which loom reports.
#[cfg(zbmd_loom)]
impl Drop for Core {
    fn drop(&mut self) {
        self.owner_side.local.with_mut(|_| {});
        for meta in self.meta.iter() {
            meta.next.with_mut(|_| {});
        }
    }
}

/// What a pool is made of.
pub(crate) struct Spec<'a> {
    pub(crate) region: &'a Region,
    pub(crate) name: Arc<str>,
    pub(crate) shard: Option<usize>,
    pub(crate) block_bytes: usize,
    pub(crate) align: usize,
    pub(crate) blocks: usize,
    /// Whether blocks may be read as bytes (byte pools).
    pub(crate) bytes: bool,
}

/// A block the owner just handed out.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Block {
    pub(crate) ptr: NonNull<u8>,
    pub(crate) index: u32,
    pub(crate) generation: u32,
}

/// Where a block goes home to: its pool, its index, and the generation it
/// was handed out with. Every block handle holds one.
#[derive(Debug)]
pub(crate) struct Home {
    pub(crate) core: NonNull<Core>,
    pub(crate) index: u32,
    pub(crate) generation: u32,
}

impl Home {
    pub(crate) fn new(pool: &PoolRef, block: Block) -> Self {
        Home { core: pool.core, index: block.index, generation: block.generation }
    }

    /// The pool this block belongs to.
    #[inline(always)]
    pub(crate) fn core(&self) -> &Core {
        // SAFETY: a pool's core lives until every block is home (module
        // docs, Closing), and this block is not home while `self` exists.
        unsafe { self.core.as_ref() }
    }

    /// A second ticket for the same block, for a shared buffer's clone.
    ///
    /// # Safety
    ///
    /// The block's reference count already includes the new ticket, so
    /// only the last of them releases the block.
    pub(crate) unsafe fn alias(&self) -> Home {
        Home { core: self.core, index: self.index, generation: self.generation }
    }

    /// The block's reference count (shared buffers only).
    #[inline]
    pub(crate) fn refs(&self) -> &AtomicU32 {
        &self.core().meta(self.index).refs
    }

    /// Sends the block home: local push on the owner, remote push
    /// elsewhere.
    ///
    /// # Safety
    ///
    /// The caller gives the block up: nothing reads or writes it afterwards,
    /// and anything it held has been dropped. Each block is released once
    /// per allocation (debug builds check this with the generation).
    #[inline(always)]
    pub(crate) unsafe fn release(self) {
        let core = self.core();
        core.retire(self.index, self.generation);
        if core.is_owner() {
            core.push_local(self.index);
        } else {
            // SAFETY: the caller gives the block up (contract).
            unsafe { Core::push_remote(self.core, self.index) };
        }
    }
}

impl Core {
    /// Whether the calling thread owns this pool.
    #[inline(always)]
    fn is_owner(&self) -> bool {
        self.owner.load(Ordering::Relaxed) == thread_token()
    }

    pub(crate) fn name(&self) -> &Arc<str> {
        &self.name
    }

    /// Usable bytes per block.
    #[inline]
    pub(crate) fn block_bytes(&self) -> usize {
        self.block_bytes
    }

    /// Every block's alignment.
    #[inline]
    pub(crate) fn align(&self) -> usize {
        self.align
    }

    /// Whether a value dropped in a block must be overwritten (byte pools).
    #[inline]
    pub(crate) fn scrubs_values(&self) -> bool {
        self.scrub_values
    }

    pub(crate) fn capacity(&self) -> usize {
        self.capacity as usize
    }

    /// A block's metadata, without a bounds check on the hot paths.
    #[inline(always)]
    fn meta(&self, index: u32) -> &Meta {
        debug_assert!(index < self.capacity, "{}: block {index} out of range", self.name);
        // SAFETY: every index that reaches here names a block of this pool:
        // it came off this pool's free lists or bump index, or from a handle
        // this pool made; all are `< capacity == meta.len()`.
        unsafe { self.meta.get_unchecked(index as usize) }
    }

    #[inline(always)]
    fn block_ptr(&self, index: u32) -> NonNull<u8> {
        debug_assert!(index < self.capacity);
        // SAFETY: `index < capacity`, and the region carved
        // `capacity * stride` bytes from `base`.
        unsafe { self.base.add(index as usize * self.stride) }
    }

    /// Binds the pool to the calling thread. Acquire on success: pairs with
    /// `unbind`, so the former owner's local operations happen before ours
    /// (`loom_tests`: `a_pool_rebound_on_another_thread_sees_its_free_list`).
    /// Relaxed on failure: a thread that did not bind reads nothing of the
    /// pool's owner side.
    pub(crate) fn bind(&self, token: usize) -> Result<(), AllocError> {
        self.owner
            .compare_exchange(NOBODY, token, Ordering::AcqRel, Ordering::Relaxed)
            .map(drop)
            .map_err(|_| AllocError::AlreadyBound { pool: self.name.clone() })
    }

    /// Unbinds the pool from the calling thread, its owner. Release: the
    /// owner's last local operations happen before whatever binds or
    /// closes the pool next (both load the owner with Acquire).
    pub(crate) fn unbind(&self, token: usize) -> Result<(), AllocError> {
        self.owner
            .compare_exchange(token, NOBODY, Ordering::Release, Ordering::Relaxed)
            .map(drop)
            .map_err(|_| self.not_owner())
    }

    /// Whether the pool is bound to some thread: a snapshot. Relaxed: it
    /// publishes nothing; a caller that acts on it binds, and `bind`'s own
    /// exchange is what acquires.
    pub(crate) fn is_bound(&self) -> bool {
        self.owner.load(Ordering::Relaxed) != NOBODY
    }

    #[cold]
    fn not_owner(&self) -> AllocError {
        AllocError::NotOwner { pool: self.name.clone() }
    }

    /// Hands out a block: local list, else the drained remote stack, else a
    /// never-used block, else [`AllocError::PoolExhausted`].
    #[inline(always)]
    pub(crate) fn alloc(&self) -> Result<Block, AllocError> {
        if !self.is_owner() {
            return Err(self.not_owner());
        }
        let side = &self.owner_side;
        let index = side.local.with_mut(|local| {
            // SAFETY: the owner thread (checked above) is the only one that
            // touches `local`, and nothing below re-enters the pool.
            let local = unsafe { &mut *local };
            self.pop(local)
        });
        let Some(index) = index else {
            bump(&side.exhausted, 1);
            return Err(AllocError::PoolExhausted {
                pool: self.name.clone(),
                limit: self.capacity(),
            });
        };
        let in_use = side.in_use.load(Ordering::Relaxed) + 1;
        side.in_use.store(in_use, Ordering::Relaxed);
        if in_use > side.high_water.load(Ordering::Relaxed) {
            side.high_water.store(in_use, Ordering::Relaxed);
        }
        let generation = self.meta(index).generation.load(Ordering::Relaxed);
        Ok(Block { ptr: self.block_ptr(index), index, generation })
    }

    /// Owner only: takes a free block index.
    #[inline(always)]
    fn pop(&self, local: &mut Local) -> Option<u32> {
        if local.free == EMPTY && self.take_remote(local) == 0 {
            if local.fresh == self.capacity {
                return None;
            }
            local.fresh += 1;
            return Some(local.fresh - 1);
        }
        let index = local.free;
        // SAFETY: `index` is on the owner's list, so the owner holds the
        // block and its `next`.
        local.free = self.meta(index).next.with(|next| unsafe { *next });
        Some(index)
    }

    /// Owner only: splices the whole remote stack onto the local list;
    /// returns how many blocks came home. Kept out of line so the
    /// allocation fast path stays small.
    #[inline(never)]
    fn take_remote(&self, local: &mut Local) -> usize {
        let head = &self.remote.head;
        if head.load(Ordering::Relaxed) == EMPTY {
            return 0;
        }
        // Acquire: synchronises with every push in the list (module docs).
        let top = head.swap(EMPTY, Ordering::Acquire);
        debug_assert_ne!(top, CLOSED, "{}: an open pool's remote stack was closed", self.name);
        let (last, count) = self.walk(top);
        if count == 0 {
            return 0;
        }
        // SAFETY: the swap made the owner the holder of every block in the
        // list, `last` included.
        self.meta(last).next.with_mut(|next| unsafe { *next = local.free });
        local.free = top;
        let side = &self.owner_side;
        side.in_use.store(side.in_use.load(Ordering::Relaxed) - count, Ordering::Relaxed);
        bump(&side.remote_frees, count as u64);
        count
    }

    /// Follows a taken list to its end: (last index, length).
    fn walk(&self, top: u32) -> (u32, usize) {
        if top == EMPTY {
            return (EMPTY, 0);
        }
        let (mut last, mut count) = (top, 1);
        loop {
            // SAFETY: the caller took this list with an Acquire swap, so it
            // holds every block in it and sees each pusher's `next`.
            let next = self.meta(last).next.with(|next| unsafe { *next });
            if next == EMPTY {
                return (last, count);
            }
            debug_assert!(count < self.capacity as usize, "{}: remote list loops", self.name);
            last = next;
            count += 1;
        }
    }

    /// Owner only: drains the remote stack now.
    pub(crate) fn drain(&self) -> Result<usize, AllocError> {
        if !self.is_owner() {
            return Err(self.not_owner());
        }
        // SAFETY: owner thread, checked above.
        Ok(self.owner_side.local.with_mut(|local| self.take_remote(unsafe { &mut *local })))
    }

    /// Marks a block freed: bumps its generation (debug builds check the
    /// handle's generation first and poison the block).
    #[inline(always)]
    fn retire(&self, index: u32, generation: u32) {
        let slot = &self.meta(index).generation;
        #[cfg(debug_assertions)]
        {
            if let Err(now) = slot.compare_exchange(
                generation,
                generation.wrapping_add(1),
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                panic!(
                    "zbmd-alloc: double free or use after free of block {index} of pool {}: \
                     the handle has generation {generation}, the block is at {now}",
                    self.name
                );
            }
            // SAFETY: the caller of `Home::release` gave the block up; its
            // `stride` bytes are ours to overwrite.
            unsafe { self.block_ptr(index).as_ptr().write_bytes(POISON, self.stride) };
        }
        #[cfg(not(debug_assertions))]
        slot.store(generation.wrapping_add(1), Ordering::Relaxed);
    }

    /// Owner only: puts a block back on the local list.
    #[inline(always)]
    fn push_local(&self, index: u32) {
        let side = &self.owner_side;
        side.local.with_mut(|local| {
            // SAFETY: owner thread (the caller checked `is_owner`).
            let local = unsafe { &mut *local };
            // SAFETY: the block was given up to the owner, `next` included.
            self.meta(index).next.with_mut(|next| unsafe { *next = local.free });
            local.free = index;
        });
        side.in_use.store(side.in_use.load(Ordering::Relaxed) - 1, Ordering::Relaxed);
    }

    /// Any thread: pushes a block onto the remote stack, or, once the pool
    /// is closed, counts it home.
    ///
    /// # Safety
    ///
    /// `core` is live and the caller gives the block up. After the push the
    /// core may be freed at any moment, so nothing touches it afterwards.
    unsafe fn push_remote(core: NonNull<Core>, index: u32) {
        // SAFETY: live until this block is home (caller).
        let this = unsafe { core.as_ref() };
        let head = &this.remote.head;
        let mut seen = head.load(Ordering::Relaxed);
        loop {
            if seen == CLOSED {
                // SAFETY: this block is out, so the core is still live.
                unsafe { Core::count_home(core, 1) };
                return;
            }
            // SAFETY: the caller gave the block up to us, `next` included.
            this.meta(index).next.with_mut(|next| unsafe { *next = seen });
            // Release: our writes to the block and `next` happen before the
            // owner's Acquire swap that takes it.
            match head.compare_exchange_weak(seen, index, Ordering::Release, Ordering::Relaxed) {
                Ok(_) => return,
                Err(now) => seen = now,
            }
        }
    }

    /// Adds `delta` (wrapping: `usize::MAX` is -1) to the blocks a closed
    /// pool still waits for; frees the core when that reaches zero.
    ///
    /// # Safety
    ///
    /// `core` is live; after this call the caller must not touch it.
    unsafe fn count_home(core: NonNull<Core>, returned: usize) {
        // SAFETY: live (caller).
        let remaining = unsafe { &core.as_ref().remote.remaining };
        // AcqRel: every earlier use of the core by any thread happens before
        // the decrement that reaches zero, which then frees it.
        if remaining.fetch_sub(returned, Ordering::AcqRel) == returned {
            // SAFETY: `remaining` reached zero exactly once (module docs):
            // no handle and no block refers to the core any more.
            drop(unsafe { Box::from_raw(core.as_ptr()) });
        }
    }

    /// Generation check for a slot id: whether that allocation is still
    /// live (a snapshot). Relaxed: the answer publishes nothing (the caller
    /// reaches no block through it), and the bump it would pair with,
    /// `retire`'s, is itself Relaxed in release builds.
    pub(crate) fn is_live(&self, index: u32, generation: u32) -> bool {
        self.meta
            .get(index as usize)
            .is_some_and(|meta| meta.generation.load(Ordering::Relaxed) == generation)
    }

    /// Debug builds: panics unless the block is at `generation`.
    #[inline]
    pub(crate) fn check_generation(&self, index: u32, generation: u32) {
        if cfg!(debug_assertions) {
            let now = self.meta.get(index as usize).map(|m| m.generation.load(Ordering::Acquire));
            assert_eq!(
                now,
                Some(generation),
                "zbmd-alloc: stale handle to block {index} of pool {} (double free or use \
                 after free)",
                self.name
            );
        }
    }

    pub(crate) fn stats(&self) -> PoolStats {
        let side = &self.owner_side;
        PoolStats {
            pool: self.name.clone(),
            shard: self.shard,
            block_bytes: self.block_bytes,
            capacity: self.capacity(),
            in_use: side.in_use.load(Ordering::Relaxed),
            high_water: side.high_water.load(Ordering::Relaxed),
            remote_frees: side.remote_frees.load(Ordering::Relaxed),
            exhausted: side.exhausted.load(Ordering::Relaxed),
        }
    }
}

/// Owner-only counter increment: a load and a store, no read-modify-write
/// (only the owner writes these; other threads only read them).
#[inline(always)]
fn bump(counter: &AtomicU64, n: u64) {
    counter.store(counter.load(Ordering::Relaxed) + n, Ordering::Relaxed);
}

/// A counted handle on a pool core: the pool objects ([`TypedPool`],
/// [`BufPool`], a shard's registry) hold these. The last one to go closes
/// the pool.
///
/// [`TypedPool`]: crate::TypedPool
/// [`BufPool`]: crate::BufPool
pub(crate) struct PoolRef {
    core: NonNull<Core>,
}

// SAFETY: the core is `Send + Sync` (see there) and lives while this handle
// does.
unsafe impl Send for PoolRef {}
// SAFETY: as above.
unsafe impl Sync for PoolRef {}

impl PoolRef {
    /// Carves a pool out of a region.
    pub(crate) fn new(spec: Spec<'_>) -> Result<PoolRef, AllocError> {
        let Spec { region, name, shard, block_bytes, align, blocks, bytes } = spec;
        if block_bytes == 0 {
            return Err(AllocError::ZeroSizedClass { pool: name });
        }
        if blocks == 0 || blocks > MAX_BLOCKS {
            return Err(AllocError::BlockCount { pool: name, blocks, max: MAX_BLOCKS });
        }
        let overflow = || AllocError::SizeOverflow { pool: name.clone(), block_bytes, blocks };
        let stride = block_bytes.checked_next_multiple_of(align).ok_or_else(overflow)?;
        let total = stride.checked_mul(blocks).ok_or_else(overflow)?;
        let base = region.carve(&name, total, align)?;
        let meta = (0..blocks)
            .map(|_| Meta {
                next: UnsafeCell::new(EMPTY),
                generation: AtomicU32::new(0),
                refs: AtomicU32::new(0),
            })
            .collect();
        let core = Box::new(Core {
            name,
            shard,
            base,
            stride,
            block_bytes,
            align,
            scrub_values: bytes,
            capacity: blocks as u32,
            meta,
            _region: region.clone(),
            owner: AtomicUsize::new(NOBODY),
            handles: AtomicUsize::new(1),
            owner_side: CachePadded::new(OwnerSide {
                local: UnsafeCell::new(Local { free: EMPTY, fresh: 0 }),
                in_use: AtomicUsize::new(0),
                high_water: AtomicUsize::new(0),
                remote_frees: AtomicU64::new(0),
                exhausted: AtomicU64::new(0),
            }),
            remote: CachePadded::new(RemoteSide {
                head: AtomicU32::new(EMPTY),
                remaining: AtomicUsize::new(0),
            }),
        });
        Ok(PoolRef { core: NonNull::from(Box::leak(core)) })
    }

    #[inline(always)]
    pub(crate) fn core(&self) -> &Core {
        // SAFETY: a handle keeps the core open, and an open core is live.
        unsafe { self.core.as_ref() }
    }

    /// Closes the pool (the last handle is going); see the module docs.
    fn close(&self) {
        let core = self.core();
        // Relaxed: this load only decides between leaking and closing. A
        // former owner's local work (and its `unbind`) already happens
        // before this close: the close runs on the last handle's drop, whose
        // `AcqRel` decrement orders it after every use of every handle, and
        // a thread can only unbind through a handle (or a reference to one,
        // whose end Rust orders before the handle's drop, by a join or
        // whatever else passed it on).
        let owner = core.owner.load(Ordering::Relaxed);
        if owner != NOBODY && owner != thread_token() {
            tracing::error!(
                pool = %core.name,
                "a bound pool was dropped on a thread that does not own it: leaked (its \
                 blocks stay valid and its region stays mapped); drop pools on their owner"
            );
            return;
        }
        // From here on every free, the owner's included, takes the remote
        // path and finds CLOSED.
        core.owner.store(NOBODY, Ordering::Relaxed);
        let top = core.remote.head.swap(CLOSED, Ordering::AcqRel);
        let (_, drained) = core.walk(top);
        let out = core.owner_side.in_use.load(Ordering::Relaxed) - drained;
        // SAFETY: the core is live (we still hold it); `wrapping_neg` turns
        // "out blocks still to come" into the subtraction count_home does.
        unsafe { Core::count_home(self.core, out.wrapping_neg()) };
    }
}

impl Clone for PoolRef {
    fn clone(&self) -> Self {
        self.core().handles.fetch_add(1, Ordering::Relaxed);
        PoolRef { core: self.core }
    }
}

impl Drop for PoolRef {
    fn drop(&mut self) {
        // AcqRel, as `Arc`'s drop: every use of the pool through another
        // handle happens before the close that the last decrement runs
        // (`close` leans on it, see there). No model tells it from Relaxed:
        // the models' pools have one handle (a second lives in a shard's
        // registry); it rests on `Arc`'s argument.
        if self.core().handles.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.close();
        }
    }
}
