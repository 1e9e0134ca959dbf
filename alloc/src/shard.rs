//! One shard's memory: a region bound to the shard's NUMA node, a set of
//! byte-buffer size classes carved from it, and room for typed pools, all
//! owned by the shard's thread.

use std::fmt;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use crate::buf::{BufPool, PooledBuf, class_align};
use crate::error::AllocError;
use crate::facade::thread_token;
use crate::pool::PoolRef;
use crate::region::{HugePages, Region, RegionConfig};
use crate::stats::{PoolStats, to_prometheus};
use crate::typed::{PoolBox, TypedPool};

/// The size classes a shard gets unless told otherwise, as (block bytes,
/// blocks): small messages, pages, I/O chunks and large tensors' staging.
/// About 24 MiB per shard: enough for a laptop run, meant to be raised on a
/// cluster node (`ShardPoolsBuilder::classes`).
pub const DEFAULT_CLASSES: [(usize, usize); 4] =
    [(64, 4096), (4 << 10, 1024), (64 << 10, 64), (1 << 20, 16)];

/// Builds a [`ShardPools`]; see [`ShardPools::builder`].
#[derive(Debug, Clone)]
pub struct ShardPoolsBuilder {
    shard: usize,
    classes: Vec<(usize, usize)>,
    hugepages: HugePages,
    prefault: bool,
    numa_node: Option<usize>,
    typed_bytes: usize,
    region_bytes: Option<usize>,
}

impl ShardPoolsBuilder {
    /// The shard these pools belong to (labels, names, errors).
    pub fn shard(mut self, shard: usize) -> Self {
        self.shard = shard;
        self
    }

    /// Adds a size class of `blocks` blocks of `block_bytes` bytes.
    pub fn class(mut self, block_bytes: usize, blocks: usize) -> Self {
        self.classes.push((block_bytes, blocks));
        self
    }

    /// Replaces the size classes (the default is [`DEFAULT_CLASSES`]).
    pub fn classes(mut self, classes: impl IntoIterator<Item = (usize, usize)>) -> Self {
        self.classes = classes.into_iter().collect();
        self
    }

    /// The region's hugepage policy (default [`HugePages::Prefer`]).
    pub fn hugepages(mut self, policy: HugePages) -> Self {
        self.hugepages = policy;
        self
    }

    /// Touch every page at startup (default off).
    pub fn prefault(mut self, prefault: bool) -> Self {
        self.prefault = prefault;
        self
    }

    /// Bind the region to this NUMA node: the node of the shard's CPU.
    pub fn numa_node(mut self, node: Option<usize>) -> Self {
        self.numa_node = node;
        self
    }

    /// Extra bytes in the region for [`ShardPools::typed_pool`] (default 0).
    pub fn typed_bytes(mut self, bytes: usize) -> Self {
        self.typed_bytes = bytes;
        self
    }

    /// An exact region size instead of the classes' sum plus `typed_bytes`.
    pub fn region_bytes(mut self, bytes: usize) -> Self {
        self.region_bytes = Some(bytes);
        self
    }

    /// Checks the classes, maps the region, and carves the classes.
    ///
    /// # Errors
    ///
    /// [`AllocError::ZeroSizedClass`], [`AllocError::BlockCount`],
    /// [`AllocError::DuplicateClass`], [`AllocError::SizeOverflow`] for the
    /// classes; every error of [`Region::map`]; [`AllocError::RegionFull`]
    /// when an explicit `region_bytes` is too small.
    pub fn build(self) -> Result<ShardPools, AllocError> {
        let shard = self.shard;
        let mut classes = self.classes.clone();
        classes.sort_unstable();
        let needed = self.check(&classes)?;
        let bytes = self.region_bytes.unwrap_or(needed);
        let config = RegionConfig::new(&format!("shard{shard}"), bytes)
            .hugepages(self.hugepages)
            .prefault(self.prefault)
            .numa_node(self.numa_node);
        let region = Region::map(config)?;
        let pools = classes
            .iter()
            .map(|&(block_bytes, blocks)| {
                let name = format!("shard{shard}.buf-{}", human(block_bytes));
                BufPool::with_shard(&region, &name, Some(shard), block_bytes, blocks)
            })
            .collect::<Result<Box<[BufPool]>, _>>()?;
        Ok(ShardPools {
            shard,
            name: format!("shard{shard}").into(),
            sizes: classes.iter().map(|&(block_bytes, _)| block_bytes).collect(),
            classes: pools,
            region,
            owner: AtomicUsize::new(0),
            typed: Mutex::new(Vec::new()),
        })
    }

    /// Validates the sorted classes; returns the region size they need.
    fn check(&self, classes: &[(usize, usize)]) -> Result<usize, AllocError> {
        let shard = self.shard;
        let mut total = self.typed_bytes;
        for (i, &(block_bytes, blocks)) in classes.iter().enumerate() {
            let pool: Arc<str> = format!("shard{shard}.buf-{}", human(block_bytes)).into();
            if block_bytes == 0 {
                return Err(AllocError::ZeroSizedClass { pool });
            }
            if blocks == 0 || blocks > crate::MAX_BLOCKS {
                return Err(AllocError::BlockCount { pool, blocks, max: crate::MAX_BLOCKS });
            }
            if i > 0 && classes[i - 1].0 == block_bytes {
                return Err(AllocError::DuplicateClass { shard, block_bytes });
            }
            let align = class_align(block_bytes);
            let bytes = block_bytes
                .checked_next_multiple_of(align)
                .and_then(|stride| stride.checked_mul(blocks))
                .and_then(|bytes| bytes.checked_add(align))
                .and_then(|bytes| bytes.checked_add(total));
            total = bytes.ok_or(AllocError::SizeOverflow { pool, block_bytes, blocks })?;
        }
        Ok(total)
    }
}

/// Writes 4096 as "4KiB", 1048576 as "1MiB", 100 as "100B".
fn human(bytes: usize) -> String {
    match bytes {
        b if b >= 1 << 20 && b % (1 << 20) == 0 => format!("{}MiB", b >> 20),
        b if b >= 1 << 10 && b % (1 << 10) == 0 => format!("{}KiB", b >> 10),
        b => format!("{b}B"),
    }
}

/// One shard's pools: byte-buffer size classes and typed pools, carved from
/// one region, bound to the shard's thread.
///
/// ```
/// use zbmd_alloc::{HugePages, ShardPools};
///
/// let pools = ShardPools::builder()
///     .shard(0)
///     .classes([(64, 128), (4096, 16)])
///     .hugepages(HugePages::Transparent)
///     .typed_bytes(64 << 10)
///     .build()?;
/// pools.bind_current_thread()?; // on the shard's thread
/// let small = pools.alloc_buf(40)?; // from the 64-byte class
/// let page = pools.alloc_buf(100)?; // from the 4 KiB class
/// assert_eq!((small.capacity(), page.capacity()), (64, 4096));
/// let cells = pools.typed_pool::<[u64; 8]>("cells", 100)?;
/// let cell = cells.alloc([0; 8])?;
/// # drop((small, page, cell));
/// # Ok::<(), zbmd_alloc::AllocError>(())
/// ```
pub struct ShardPools {
    shard: usize,
    name: Arc<str>,
    /// Block sizes of `classes`, ascending: the class lookup scans these.
    sizes: Box<[usize]>,
    classes: Box<[BufPool]>,
    region: Region,
    /// The thread token the set is bound to (0: none yet).
    owner: AtomicUsize,
    /// The typed pools carved through this set, for binding and stats.
    typed: Mutex<Vec<PoolRef>>,
}

impl ShardPools {
    /// A builder with [`DEFAULT_CLASSES`], shard 0, [`HugePages::Prefer`],
    /// no prefaulting, no NUMA binding and no room for typed pools.
    pub fn builder() -> ShardPoolsBuilder {
        ShardPoolsBuilder {
            shard: 0,
            classes: DEFAULT_CLASSES.to_vec(),
            hugepages: HugePages::default(),
            prefault: false,
            numa_node: None,
            typed_bytes: 0,
            region_bytes: None,
        }
    }

    /// The shard these pools belong to.
    pub fn shard(&self) -> usize {
        self.shard
    }

    /// Binds every pool of the set (and every typed pool carved through it,
    /// now or later) to the calling thread: the shard's thread, the only one
    /// that allocates from them. Drop the set on this thread too, or call
    /// [`unbind_current_thread`](ShardPools::unbind_current_thread) first.
    ///
    /// # Errors
    ///
    /// [`AllocError::AlreadyBound`].
    pub fn bind_current_thread(&self) -> Result<(), AllocError> {
        let token = thread_token();
        self.owner
            .compare_exchange(0, token, Ordering::AcqRel, Ordering::Acquire)
            .map_err(|_| AllocError::AlreadyBound { pool: self.name.clone() })?;
        for class in &self.classes {
            class.bind_token(token)?;
        }
        for pool in self.typed.lock().unwrap_or_else(PoisonError::into_inner).iter() {
            if !pool.core().is_bound() {
                pool.core().bind(token)?;
            }
        }
        Ok(())
    }

    /// Gives up ownership of every pool of the set: called on the set's
    /// thread (at shard shutdown, or to hand the set to another thread,
    /// which then binds it). Afterwards the set may be dropped anywhere.
    ///
    /// # Errors
    ///
    /// [`AllocError::NotOwner`] off the set's thread.
    pub fn unbind_current_thread(&self) -> Result<(), AllocError> {
        let token = thread_token();
        self.owner
            .compare_exchange(token, 0, Ordering::AcqRel, Ordering::Acquire)
            .map_err(|_| AllocError::NotOwner { pool: self.name.clone() })?;
        for class in &self.classes {
            class.unbind_current_thread()?;
        }
        for pool in self.typed.lock().unwrap_or_else(PoisonError::into_inner).iter() {
            // A typed pool bound elsewhere on its own stays so.
            let _ = pool.core().unbind(token);
        }
        Ok(())
    }

    /// The smallest class whose blocks hold `len` bytes.
    #[inline]
    pub fn class_for(&self, len: usize) -> Option<&BufPool> {
        let index = self.sizes.iter().position(|&size| size >= len)?;
        Some(&self.classes[index])
    }

    /// A buffer of `len` bytes from the smallest class that holds it
    /// (contents unspecified). A full class is an error: it never borrows
    /// from a larger class or from the global allocator.
    ///
    /// # Errors
    ///
    /// [`AllocError::BufferTooLarge`] beyond the largest class,
    /// [`AllocError::PoolExhausted`], [`AllocError::NotOwner`].
    #[inline]
    pub fn alloc_buf(&self, len: usize) -> Result<PooledBuf, AllocError> {
        match self.class_for(len) {
            Some(class) => class.alloc(len),
            None => Err(self.too_large(len)),
        }
    }

    /// As [`alloc_buf`](ShardPools::alloc_buf), zeroed.
    ///
    /// # Errors
    ///
    /// As [`alloc_buf`](ShardPools::alloc_buf).
    pub fn alloc_buf_zeroed(&self, len: usize) -> Result<PooledBuf, AllocError> {
        match self.class_for(len) {
            Some(class) => class.alloc_zeroed(len),
            None => Err(self.too_large(len)),
        }
    }

    /// Moves `value` into the smallest class whose blocks hold a `T` (size
    /// and alignment): an object of any type (an actor's cell, a mailbox)
    /// from the shard's memory. See [`BufPool::alloc_box`].
    ///
    /// # Errors
    ///
    /// [`AllocError::ValueDoesNotFit`] when no class holds a `T`;
    /// [`AllocError::PoolExhausted`] when that class is full (it never
    /// borrows from a larger one); [`AllocError::NotOwner`].
    #[inline]
    pub fn alloc_box<T>(&self, value: T) -> Result<PoolBox<T>, AllocError> {
        let (bytes, align) = (std::mem::size_of::<T>(), std::mem::align_of::<T>());
        let class = self.sizes.iter().position(|&size| size >= bytes && class_align(size) >= align);
        match class {
            Some(index) => self.classes[index].alloc_box(value),
            None => Err(AllocError::ValueDoesNotFit { pool: self.name.clone(), bytes, align }),
        }
    }

    #[cold]
    fn too_large(&self, len: usize) -> AllocError {
        AllocError::BufferTooLarge {
            pool: self.name.clone(),
            requested_bytes: len,
            max_bytes: self.sizes.last().copied().unwrap_or(0),
        }
    }

    /// Carves a typed pool of `slots` slots for `T` from the region's room
    /// for typed pools, named `shard<N>.<name>`, bound to the set's thread
    /// if the set is bound.
    ///
    /// # Errors
    ///
    /// As [`TypedPool::new`]; [`AllocError::RegionFull`] when the builder's
    /// `typed_bytes` is used up.
    pub fn typed_pool<T>(&self, name: &str, slots: usize) -> Result<TypedPool<T>, AllocError> {
        let full = format!("shard{}.{name}", self.shard);
        let pool = TypedPool::with_shard(&self.region, &full, Some(self.shard), slots)?;
        let mut typed = self.typed.lock().unwrap_or_else(PoisonError::into_inner);
        match self.owner.load(Ordering::Acquire) {
            0 => {}
            // The pool is new and unused: binding it for the set's thread is
            // safe from here (that thread sees it only through a handle
            // handed over later).
            token => pool.pool_ref().core().bind(token)?,
        }
        typed.push(pool.pool_ref().clone());
        Ok(pool)
    }

    /// The size classes, smallest first.
    pub fn classes(&self) -> &[BufPool] {
        &self.classes
    }

    /// Takes back every block other threads freed, in every pool of the
    /// set; returns how many.
    ///
    /// # Errors
    ///
    /// [`AllocError::NotOwner`] off the set's thread.
    pub fn drain_remote(&self) -> Result<usize, AllocError> {
        let mut total = 0;
        for class in &self.classes {
            total += class.drain_remote()?;
        }
        for pool in self.typed.lock().unwrap_or_else(PoisonError::into_inner).iter() {
            total += pool.core().drain()?;
        }
        Ok(total)
    }

    /// Every pool's counters: the classes, then the typed pools.
    pub fn stats(&self) -> Vec<PoolStats> {
        let typed = self.typed.lock().unwrap_or_else(PoisonError::into_inner);
        self.classes
            .iter()
            .map(BufPool::stats)
            .chain(typed.iter().map(|pool| pool.core().stats()))
            .collect()
    }

    /// [`stats`](ShardPools::stats) in Prometheus' text format.
    pub fn to_prometheus(&self) -> String {
        to_prometheus(&self.stats())
    }

    /// The region every pool of the set lives in: register
    /// `region().info()` once with io_uring, CUDA or RDMA.
    pub fn region(&self) -> &Region {
        &self.region
    }
}

impl fmt::Debug for ShardPools {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ShardPools")
            .field("shard", &self.shard)
            .field("region", &self.region)
            .field("stats", &self.stats())
            .finish()
    }
}
