//! Device memory through the size-class cache: where an allocation comes
//! from, where a freed buffer goes, and the fences that keep a cached block
//! from being reused while work submitted before its `free` still runs.
//!
//! `free` records an event on every live stream (the block's fences) and
//! caches the block; the next allocation of its class waits for those
//! events before handing it out. `cuMemFree`/`hipFree` wait for pending
//! work themselves, so a block that goes back to the driver needs no wait.

use super::cache::size_class;
use super::device::NativeDevice;
use super::state::{Allocation, CachedBlock, OwnedEvent, State};
use super::{DevicePtr, NativeApi};
use crate::error::GpuError;

impl<A: NativeApi> NativeDevice<A> {
    /// Device memory for a request of `bytes`, with the size it really has:
    /// from the cache, else the driver, else the driver again after
    /// emptying the cache. Without a cache, exactly `bytes` (at least one,
    /// so the handle names real memory even for an empty buffer).
    pub(super) fn take_memory(
        &self,
        state: &mut State<A>,
        bytes: usize,
    ) -> Result<(DevicePtr, usize), GpuError> {
        let device = state.id;
        let out_of_memory = |free_bytes: usize| GpuError::OutOfMemory {
            device,
            requested_bytes: bytes,
            free_bytes,
        };
        let class = if state.cache.max_bytes() == 0 {
            bytes.max(1)
        } else {
            size_class(bytes).ok_or_else(|| out_of_memory(0))?
        };
        if let Some(block) = state.cache.take(class) {
            if let Err(error) = self.wait_fences(state, block.fences) {
                // SAFETY: the block left the cache and is in no table: this
                // is its only owner. The driver's free waits for pending work.
                let _ = unsafe { self.api().free(block.ptr) };
                return Err(error);
            }
            return Ok((block.ptr, class));
        }
        if let Some(ptr) = self.api().malloc(class)? {
            return Ok((ptr, class));
        }
        if state.cache.cached_blocks() > 0 {
            tracing::debug!(%device, bytes, "out of memory: emptying the cache and retrying");
            self.release_cache(state)?;
            if let Some(ptr) = self.api().malloc(class)? {
                return Ok((ptr, class));
            }
        }
        let free_bytes = self.api().memory().map(|m| m.free_bytes as usize).unwrap_or(0);
        Err(out_of_memory(free_bytes))
    }

    /// Puts a freed allocation (already out of the buffer table) in the
    /// cache, fenced, or gives it back to the driver.
    pub(super) fn cache_or_free(
        &self,
        state: &mut State<A>,
        allocation: Allocation,
    ) -> Result<(), GpuError> {
        if state.cache.max_bytes() == 0 {
            // SAFETY: `ptr` came from `malloc` and just left the buffer
            // table, so it is freed once; the driver waits for work using it.
            return unsafe { self.api().free(allocation.ptr) };
        }
        let fences = match self.fences(state) {
            Ok(fences) => fences,
            Err(error) => {
                // SAFETY: as above.
                let _ = unsafe { self.api().free(allocation.ptr) };
                return Err(error);
            }
        };
        let block = CachedBlock { ptr: allocation.ptr, fences };
        if let Err(block) = state.cache.put(allocation.class, block) {
            for fence in block.fences {
                state.recycle_event(fence);
            }
            // SAFETY: as above: the block is in neither the table nor the cache.
            unsafe { self.api().free(block.ptr) }?;
        }
        Ok(())
    }

    /// Records, on every live stream, an event marking its current end.
    fn fences(&self, state: &mut State<A>) -> Result<Vec<OwnedEvent<A>>, GpuError> {
        let streams: Vec<A::Stream> = state.streams.values().map(|s| s.raw()).collect();
        let mut fences = Vec::with_capacity(streams.len());
        for stream in streams {
            let event = self.new_event(state)?;
            // SAFETY: the event is owned here and the stream is in the table,
            // whose lock the caller holds.
            if let Err(error) = unsafe { self.api().record_event(event.raw(), stream) } {
                state.recycle_event(event);
                return Err(error);
            }
            fences.push(event);
        }
        Ok(fences)
    }

    /// Waits until the work a cached block's fences mark has finished.
    fn wait_fences(
        &self,
        state: &mut State<A>,
        fences: Vec<OwnedEvent<A>>,
    ) -> Result<(), GpuError> {
        for fence in fences {
            // SAFETY: the event is live (owned here).
            unsafe { self.api().event_synchronize(fence.raw()) }?;
            state.recycle_event(fence);
        }
        Ok(())
    }

    /// Frees every cached block for real, reporting the first failure.
    pub(super) fn release_cache(&self, state: &mut State<A>) -> Result<(), GpuError> {
        let mut first_error = Ok(());
        for block in state.cache.drain() {
            // The driver's free waits for work still using the block, so the
            // fences need no wait of their own.
            // SAFETY: the block came from `malloc` and left the buffer table
            // when it was cached, so nothing else frees it.
            let freed = unsafe { self.api().free(block.ptr) };
            if first_error.is_ok() {
                first_error = freed;
            }
            for fence in block.fences {
                state.recycle_event(fence);
            }
        }
        first_error
    }
}
