//! The size-class memory cache behind a [`NativeDevice`](super::NativeDevice)'s
//! allocator (a cache of freed device memory, not a pool of workers: "pool"
//! in this crate means the kernel-actor pool).
//!
//! In the manner of PyTorch's CUDA caching allocator, much simplified: a
//! freed block is kept on its size class's free list and handed back to the
//! next allocation of that class instead of going through the driver's
//! free and alloc (`cuMemFree`/`cuMemAlloc` can each synchronize the whole
//! device). The cache holds at most `max_bytes`; beyond that a freed block
//! goes back to the driver, and a cache of 0 bytes holds nothing. The cache
//! is plain data: the device decides what a block is and when it is safe to
//! reuse.

use std::collections::BTreeMap;

/// The smallest size class: below it, rounding wastes little and keeps the
/// number of lists small.
const CLASS_MIN_BYTES: usize = 512;

/// Up to this size, classes are powers of two (at most 2x waste on blocks
/// that are small anyway); above it, multiples of it (under 1 MiB of waste
/// on large blocks, where a power of two could waste gigabytes).
const CLASS_STEP_BYTES: usize = 1 << 20;

/// The size class a request of `bytes` is served from, `None` when rounding
/// up overflows.
pub(crate) fn size_class(bytes: usize) -> Option<usize> {
    if bytes <= CLASS_STEP_BYTES {
        Some(bytes.max(CLASS_MIN_BYTES).next_power_of_two())
    } else {
        bytes.checked_next_multiple_of(CLASS_STEP_BYTES)
    }
}

/// What a device's memory cache holds now
/// ([`NativeDevice::cache_stats`](super::NativeDevice::cache_stats)).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CacheStats {
    /// Buffers allocated and not yet freed.
    pub live_buffers: usize,
    /// Freed blocks held for reuse.
    pub cached_blocks: usize,
    /// Bytes those blocks hold (counted as free by `Device::memory`).
    pub cached_bytes: usize,
    /// The most bytes the cache holds (0: the backend caches nothing).
    pub cache_bytes_max: usize,
}

/// Free blocks by size class, bounded in bytes.
#[derive(Debug)]
pub(crate) struct MemoryCache<T> {
    lists: BTreeMap<usize, Vec<T>>,
    cached_bytes: usize,
    cached_blocks: usize,
    max_bytes: usize,
}

impl<T> MemoryCache<T> {
    /// An empty cache that holds at most `max_bytes`.
    pub(crate) fn new(max_bytes: usize) -> Self {
        MemoryCache { lists: BTreeMap::new(), cached_bytes: 0, cached_blocks: 0, max_bytes }
    }

    /// Takes a cached block of exactly size class `class`, if there is one.
    pub(crate) fn take(&mut self, class: usize) -> Option<T> {
        let list = self.lists.get_mut(&class)?;
        let block = list.pop()?;
        if list.is_empty() {
            self.lists.remove(&class);
        }
        self.cached_bytes -= class;
        self.cached_blocks -= 1;
        Some(block)
    }

    /// Keeps `block` of size class `class`, or hands it back when the cache
    /// would pass its bound (the caller then frees it for real).
    pub(crate) fn put(&mut self, class: usize, block: T) -> Result<(), T> {
        match self.cached_bytes.checked_add(class) {
            Some(total) if total <= self.max_bytes => {
                self.lists.entry(class).or_default().push(block);
                self.cached_bytes = total;
                self.cached_blocks += 1;
                Ok(())
            }
            _ => Err(block),
        }
    }

    /// Empties the cache, returning every block (to be freed for real).
    pub(crate) fn drain(&mut self) -> Vec<T> {
        self.cached_bytes = 0;
        self.cached_blocks = 0;
        std::mem::take(&mut self.lists).into_values().flatten().collect()
    }

    /// Bytes held now.
    pub(crate) fn cached_bytes(&self) -> usize {
        self.cached_bytes
    }

    /// Blocks held now.
    pub(crate) fn cached_blocks(&self) -> usize {
        self.cached_blocks
    }

    /// The bound in bytes.
    pub(crate) fn max_bytes(&self) -> usize {
        self.max_bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classes_round_up_to_powers_of_two_then_to_whole_steps() {
        assert_eq!(size_class(0), Some(512));
        assert_eq!(size_class(1), Some(512));
        assert_eq!(size_class(513), Some(1024));
        assert_eq!(size_class(1 << 20), Some(1 << 20));
        assert_eq!(size_class((1 << 20) + 1), Some(2 << 20));
        assert_eq!(size_class((3 << 20) + 5), Some(4 << 20));
        assert_eq!(size_class(usize::MAX), None);
        for bytes in [1usize, 700, 4096, 100_000, 5 << 20, (7 << 20) + 3] {
            let class = size_class(bytes).unwrap();
            assert!(class >= bytes, "class {class} < request {bytes}");
        }
    }

    #[test]
    fn a_freed_block_is_reused_by_the_same_class_only() {
        let mut cache = MemoryCache::new(1 << 20);
        cache.put(1024, "a").unwrap();
        assert_eq!(cache.take(2048), None);
        assert_eq!(cache.cached_bytes(), 1024);
        assert_eq!(cache.take(1024), Some("a"));
        assert_eq!(cache.take(1024), None);
        assert_eq!((cache.cached_bytes(), cache.cached_blocks()), (0, 0));
    }

    #[test]
    fn the_byte_bound_sends_blocks_back_and_drain_empties() {
        let mut cache = MemoryCache::new(3000);
        cache.put(1024, 1).unwrap();
        cache.put(1024, 2).unwrap();
        assert_eq!(cache.put(1024, 3), Err(3), "3072 bytes would pass the 3000 bound");
        cache.put(512, 4).unwrap();
        assert_eq!(cache.cached_bytes(), 2560);
        let mut drained = cache.drain();
        drained.sort();
        assert_eq!(drained, vec![1, 2, 4]);
        assert_eq!((cache.cached_bytes(), cache.cached_blocks()), (0, 0));
        assert_eq!(cache.take(1024), None);
    }
}
