//! zbmd-alloc: zbmd's memory. Everything is reserved at startup, lives in
//! pools owned by shards, and goes home to its shard when freed anywhere.
//!
//! - [`Region`]: an anonymous mapping made once, hugepage-backed where the
//!   machine allows ([`HugePages`], [`PageKind`]), bound to a NUMA node,
//!   optionally prefaulted; its [`RegionInfo`] is what io_uring, CUDA and
//!   RDMA register.
//! - [`TypedPool`] / [`PoolBox`] / [`PoolArc`]: fixed-size slots for one
//!   type, with generation-checked [`SlotId`]s; a value owned, or shared by
//!   reference counting. [`ShardPools::alloc_box`] puts a value of any type
//!   in the smallest byte class that fits it.
//! - [`BufPool`] / [`PooledBuf`] / [`SharedBuf`]: byte buffers of one size
//!   class; unique and mutable, or shared, immutable and sliceable; moved
//!   between actors without copying a byte.
//! - [`ShardPools`]: one shard's region, size classes and typed pools.
//! - [`PoolStats`] and [`to_prometheus`]: capacity, in use, high-water mark,
//!   remote frees, refusals.
//!
//! Each pool is bound to one thread (its shard), the only one that
//! allocates; frees from that thread touch no atomic, and frees from any
//! other thread go onto a lock-free remote-free stack the owner drains
//! (mimalloc's and Seastar's scheme; see the `pool` module and
//! `docs/memory.md`). A full pool answers [`AllocError::PoolExhausted`]:
//! nothing falls back to the global allocator.
#![deny(unsafe_op_in_unsafe_fn)]

mod buf;
mod error;
#[doc(hidden)]
pub mod facade;
mod pool;
mod region;
mod shard;
mod stats;
mod sys;
mod typed;

pub use buf::{BufPool, PooledBuf, SharedBuf};
pub use error::AllocError;
pub use pool::MAX_BLOCKS;
pub use region::{HugePages, PageKind, Region, RegionConfig, RegionInfo};
pub use shard::{DEFAULT_CLASSES, ShardPools, ShardPoolsBuilder};
pub use stats::{PoolStats, to_prometheus};
pub use typed::{PoolArc, PoolBox, RawSlot, SlotId, TypedPool};
