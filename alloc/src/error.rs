//! The one error type of zbmd-alloc: what went wrong at startup (a region or
//! pool that cannot be built) or on the hot path (a pool that is full).

use std::io;
use std::sync::Arc;

/// Everything zbmd-alloc can refuse, each with what to do about it.
///
/// Startup errors (regions, pools, classes) come from the constructors;
/// [`PoolExhausted`](AllocError::PoolExhausted),
/// [`BufferTooLarge`](AllocError::BufferTooLarge) and
/// [`NotOwner`](AllocError::NotOwner) are the only ones an allocation can
/// answer. Nothing ever falls back to the global allocator.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AllocError {
    /// Every block of a pool is in use (after taking back the blocks other
    /// threads freed).
    #[error(
        "pool {pool} is exhausted: all {limit} blocks are in use; \
         reserve more at startup or release buffers sooner"
    )]
    PoolExhausted {
        /// The pool's name.
        pool: Arc<str>,
        /// How many blocks it has.
        limit: usize,
    },

    /// A byte buffer was asked for that no size class holds.
    #[error(
        "a buffer of {requested_bytes} bytes is larger than the largest block \
         ({max_bytes} bytes) of {pool}; add a larger size class"
    )]
    BufferTooLarge {
        /// The pool or shard that was asked.
        pool: Arc<str>,
        /// What was asked for.
        requested_bytes: usize,
        /// The largest buffer it can hand out.
        max_bytes: usize,
    },

    /// A value was to be boxed in a byte class whose blocks are too small
    /// or too little aligned for its type.
    #[error(
        "pool {pool}: a value of {bytes} bytes aligned to {align} does not fit its blocks; \
         use a larger class (ShardPools::alloc_box picks one)"
    )]
    ValueDoesNotFit {
        /// The pool or shard that was asked.
        pool: Arc<str>,
        /// The value's size.
        bytes: usize,
        /// The value's alignment.
        align: usize,
    },

    /// An allocation or drain was attempted on a thread that does not own
    /// the pool. Only the owner allocates; any thread may free.
    #[error(
        "pool {pool} is not bound to this thread: allocate on the thread that \
         called bind_current_thread (its shard); any thread may free"
    )]
    NotOwner {
        /// The pool's name.
        pool: Arc<str>,
    },

    /// A pool was bound to a thread a second time. Binding is once: the
    /// owner never changes while the pool lives.
    #[error("pool {pool} is already bound to a thread; a pool's owner never changes")]
    AlreadyBound {
        /// The pool's name.
        pool: Arc<str>,
    },

    /// A region of zero bytes was asked for.
    #[error("region {region}: a region must be at least one byte long")]
    EmptyRegion {
        /// The region's name.
        region: Arc<str>,
    },

    /// A region larger than this machine's physical memory was asked for.
    #[error(
        "region {region}: {requested_bytes} bytes requested but this machine has \
         {machine_bytes} bytes of memory; lower the region size"
    )]
    RegionTooLarge {
        /// The region's name.
        region: Arc<str>,
        /// What was asked for.
        requested_bytes: usize,
        /// The machine's physical memory.
        machine_bytes: usize,
    },

    /// A region was asked for on a NUMA node this machine does not have.
    #[error("region {region}: NUMA node {node} does not exist; this machine's nodes are {online}")]
    NoSuchNumaNode {
        /// The region's name.
        region: Arc<str>,
        /// The node asked for.
        node: usize,
        /// The nodes that exist, as the kernel lists them (`0-1`).
        online: String,
    },

    /// Explicit hugepages were required ([`HugePages::Require`]) but not
    /// enough are reserved.
    ///
    /// [`HugePages::Require`]: crate::HugePages::Require
    #[error(
        "region {region}: {requested_bytes} bytes of explicit hugepages required but only \
         {free_bytes} bytes are reserved and free (page size {page_bytes} bytes); reserve \
         more with `sysctl vm.nr_hugepages=N`, or allow the fallback with HugePages::Prefer"
    )]
    HugePagesNotReserved {
        /// The region's name.
        region: Arc<str>,
        /// The region's size, rounded up to whole hugepages.
        requested_bytes: usize,
        /// Free, unreserved hugepage memory (`/proc/meminfo`).
        free_bytes: usize,
        /// The hugepage size.
        page_bytes: usize,
    },

    /// The kernel refused to map a region.
    #[error("region {region}: mapping {bytes} bytes failed: {source}")]
    Map {
        /// The region's name.
        region: Arc<str>,
        /// The mapping's size.
        bytes: usize,
        /// The kernel's answer.
        source: io::Error,
    },

    /// Binding a region to its NUMA node failed.
    #[error("region {region}: binding {bytes} bytes to NUMA node {node} failed: {source}")]
    NumaBind {
        /// The region's name.
        region: Arc<str>,
        /// The node asked for.
        node: usize,
        /// The region's size.
        bytes: usize,
        /// The kernel's (or hwloc's) answer.
        source: io::Error,
    },

    /// Touching a region's pages at startup failed (not enough memory).
    #[error("region {region}: prefaulting {bytes} bytes failed: {source}")]
    Prefault {
        /// The region's name.
        region: Arc<str>,
        /// The region's size.
        bytes: usize,
        /// The kernel's answer.
        source: io::Error,
    },

    /// A pool does not fit in what is left of its region.
    #[error(
        "region {region} has {available_bytes} bytes left but pool {pool} needs \
         {requested_bytes}; make the region larger"
    )]
    RegionFull {
        /// The region's name.
        region: Arc<str>,
        /// The pool that did not fit.
        pool: Arc<str>,
        /// The bytes the pool needs (its blocks, aligned).
        requested_bytes: usize,
        /// The bytes left in the region.
        available_bytes: usize,
    },

    /// A size class (or a typed pool's slot) of zero bytes was asked for.
    #[error("pool {pool}: a size class must hold at least one byte")]
    ZeroSizedClass {
        /// The pool's name.
        pool: Arc<str>,
    },

    /// A pool with no blocks, or with more than [`MAX_BLOCKS`], was asked for.
    ///
    /// [`MAX_BLOCKS`]: crate::MAX_BLOCKS
    #[error("pool {pool}: {blocks} blocks asked for; a pool holds 1 to {max} blocks")]
    BlockCount {
        /// The pool's name.
        pool: Arc<str>,
        /// What was asked for.
        blocks: usize,
        /// [`MAX_BLOCKS`](crate::MAX_BLOCKS).
        max: usize,
    },

    /// Two size classes of a shard have the same block size.
    #[error("shard {shard}: two size classes have {block_bytes}-byte blocks; merge them")]
    DuplicateClass {
        /// The shard.
        shard: usize,
        /// The repeated block size.
        block_bytes: usize,
    },

    /// A pool's size overflows the address space.
    #[error("pool {pool}: {blocks} blocks of {block_bytes} bytes overflow the address space")]
    SizeOverflow {
        /// The pool's name.
        pool: Arc<str>,
        /// The block size.
        block_bytes: usize,
        /// The block count.
        blocks: usize,
    },
}
