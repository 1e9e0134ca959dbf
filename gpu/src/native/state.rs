//! A native device's tables: buffers, streams, events, modules and kernels,
//! each bounded, and the lookups that turn a caller's handle into a live
//! vendor handle or an `InvalidArgument` that says what was wrong with it.
//!
//! Every update is a single insert or remove, so the tables are consistent
//! between any two calls, including after a panic in one (see
//! `NativeDevice::lock`).

use std::collections::HashMap;
use std::sync::Arc;

use super::cache::MemoryCache;
use super::owned::Owned;
use super::{
    BUFFERS_MAX, Blas, DevicePtr, EVENTS_MAX, KERNELS_MAX, NativeApi, SPARE_EVENTS_MAX,
    SPARE_STREAMS_MAX, STREAMS_MAX,
};
use crate::error::GpuError;
use crate::handle::{Buffer, Event, KernelHandle, Stream};
use crate::info::DeviceId;
use crate::kernel::Kernel;

/// A stream of API `A`, destroyed with its last holder.
pub(super) type OwnedStream<A> = Owned<A, <A as NativeApi>::Stream>;
/// An event of API `A`, destroyed with its last holder.
pub(super) type OwnedEvent<A> = Owned<A, <A as NativeApi>::Event>;

/// A live buffer's device memory.
pub(super) struct Allocation {
    pub(super) ptr: DevicePtr,
    /// What the caller asked for (and its `Buffer` says).
    pub(super) bytes: usize,
    /// What was allocated: the size class when the device caches memory.
    pub(super) class: usize,
}

/// A freed block waiting in the cache, with the events that mark the end of
/// the work submitted before it was freed.
pub(super) struct CachedBlock<A: NativeApi> {
    pub(super) ptr: DevicePtr,
    pub(super) fences: Vec<OwnedEvent<A>>,
}

/// A kernel loaded on the device.
pub(super) struct LoadedKernel<A: NativeApi> {
    pub(super) function: A::Function,
    pub(super) name: String,
    /// The standard kernel it is, whose argument list is known.
    pub(super) standard: Option<Kernel>,
}

/// Everything mutable about a native device, behind its one mutex.
pub(super) struct State<A: NativeApi> {
    pub(super) id: DeviceId,
    pub(super) buffers: HashMap<u64, Allocation>,
    next_buffer: u64,
    pub(super) cache: MemoryCache<CachedBlock<A>>,
    pub(super) streams: HashMap<u32, Arc<OwnedStream<A>>>,
    pub(super) spare_streams: Vec<OwnedStream<A>>,
    next_stream: u32,
    pub(super) events: HashMap<u64, Arc<OwnedEvent<A>>>,
    pub(super) spare_events: Vec<OwnedEvent<A>>,
    next_event: u64,
    pub(super) modules: Vec<A::Module>,
    pub(super) kernels: Vec<LoadedKernel<A>>,
    pub(super) standard_handles: HashMap<Kernel, KernelHandle>,
    /// The vendor BLAS library, if the device has one.
    pub(super) blas: Option<Box<dyn Blas<A::Stream>>>,
}

// SAFETY: `NativeApi`'s contract: its handles (the modules and functions
// held here) may move to any thread; everything else in the tables is
// `Send` itself (the BLAS library is `Send` by its trait's bound).
unsafe impl<A: NativeApi> Send for State<A> {}

impl<A: NativeApi> State<A> {
    /// Empty tables for device `id`, with a memory cache of at most
    /// `cache_bytes_max` bytes (0: none).
    pub(super) fn new(
        id: DeviceId,
        cache_bytes_max: usize,
        blas: Option<Box<dyn Blas<A::Stream>>>,
    ) -> Self {
        State {
            id,
            buffers: HashMap::new(),
            next_buffer: 1,
            cache: MemoryCache::new(cache_bytes_max),
            streams: HashMap::new(),
            spare_streams: Vec::new(),
            next_stream: 1,
            events: HashMap::new(),
            spare_events: Vec::new(),
            next_event: 1,
            modules: Vec::new(),
            kernels: Vec::new(),
            standard_handles: HashMap::new(),
            blas,
        }
    }

    fn limit(&self, what: &'static str, limit: usize) -> GpuError {
        GpuError::LimitReached { device: self.id, what, limit }
    }

    /// [`LimitReached`](GpuError::LimitReached) when one more buffer would
    /// pass [`BUFFERS_MAX`].
    pub(super) fn check_buffer_room(&self) -> Result<(), GpuError> {
        if self.buffers.len() >= BUFFERS_MAX {
            return Err(self.limit("buffers", BUFFERS_MAX));
        }
        Ok(())
    }

    /// Records a new allocation under a fresh id (ids are never reused).
    pub(super) fn insert_buffer(&mut self, allocation: Allocation) -> Buffer {
        let bytes = allocation.bytes;
        let id = self.next_buffer;
        self.next_buffer += 1;
        self.buffers.insert(id, allocation);
        Buffer { id, bytes }
    }

    /// The live allocation `buffer` names, checked to be the size it says.
    pub(super) fn allocation(&self, buffer: Buffer) -> Result<&Allocation, GpuError> {
        match self.buffers.get(&buffer.id) {
            Some(allocation) if allocation.bytes == buffer.bytes => Ok(allocation),
            Some(allocation) => Err(GpuError::invalid(
                self.id,
                format!(
                    "buffer {} says {} bytes but was allocated with {}",
                    buffer.id, buffer.bytes, allocation.bytes
                ),
            )),
            None => Err(GpuError::invalid(
                self.id,
                format!(
                    "buffer {} is not live on this device (freed, or another device's)",
                    buffer.id
                ),
            )),
        }
    }

    /// The address of `bytes` at `offset` in `buffer`, checked to lie inside.
    pub(super) fn span(
        &self,
        buffer: Buffer,
        offset: usize,
        bytes: usize,
    ) -> Result<DevicePtr, GpuError> {
        let allocation = self.allocation(buffer)?;
        match offset.checked_add(bytes) {
            Some(end) if end <= allocation.bytes => Ok(allocation.ptr + offset as u64),
            _ => Err(GpuError::invalid(
                self.id,
                format!(
                    "{bytes} bytes at offset {offset} overrun buffer {} of {} bytes",
                    buffer.id, allocation.bytes
                ),
            )),
        }
    }

    /// The live stream `stream` names.
    pub(super) fn stream(&self, stream: Stream) -> Result<&Arc<OwnedStream<A>>, GpuError> {
        self.streams.get(&stream.0).ok_or_else(|| {
            GpuError::invalid(self.id, format!("stream {} is not open on this device", stream.0))
        })
    }

    /// Records a new stream (a spare, or one `create` makes) under a fresh
    /// id, within [`STREAMS_MAX`].
    pub(super) fn insert_stream(
        &mut self,
        create: impl FnOnce() -> Result<OwnedStream<A>, GpuError>,
    ) -> Result<Stream, GpuError> {
        if self.streams.len() >= STREAMS_MAX {
            return Err(self.limit("streams", STREAMS_MAX));
        }
        let raw = match self.spare_streams.pop() {
            Some(raw) => raw,
            None => create()?,
        };
        let id = self.next_stream;
        self.next_stream = self.next_stream.wrapping_add(1).max(1);
        self.streams.insert(id, Arc::new(raw));
        Ok(Stream(id))
    }

    /// Keeps a destroyed (and synchronized) stream for reuse, within
    /// [`SPARE_STREAMS_MAX`]; drops it otherwise.
    pub(super) fn recycle_stream(&mut self, stream: OwnedStream<A>) {
        if self.spare_streams.len() < SPARE_STREAMS_MAX {
            self.spare_streams.push(stream);
        }
    }

    /// The live event `event` names.
    pub(super) fn event(&self, event: Event) -> Result<&Arc<OwnedEvent<A>>, GpuError> {
        self.events.get(&event.0).ok_or_else(|| {
            GpuError::invalid(self.id, format!("event {} is not live on this device", event.0))
        })
    }

    /// [`LimitReached`](GpuError::LimitReached) when one more event would
    /// pass [`EVENTS_MAX`].
    pub(super) fn check_event_room(&self) -> Result<(), GpuError> {
        if self.events.len() >= EVENTS_MAX {
            return Err(self.limit("events", EVENTS_MAX));
        }
        Ok(())
    }

    /// Records a recorded event under a fresh id.
    pub(super) fn insert_event(&mut self, event: OwnedEvent<A>) -> Event {
        let id = self.next_event;
        self.next_event += 1;
        self.events.insert(id, Arc::new(event));
        Event(id)
    }

    /// Keeps a released event for reuse, within [`SPARE_EVENTS_MAX`].
    pub(super) fn recycle_event(&mut self, event: OwnedEvent<A>) {
        if self.spare_events.len() < SPARE_EVENTS_MAX {
            self.spare_events.push(event);
        }
    }

    /// [`LimitReached`](GpuError::LimitReached) when `more` kernels would
    /// pass [`KERNELS_MAX`].
    pub(super) fn check_kernel_room(&self, more: usize) -> Result<(), GpuError> {
        if self.kernels.len() + more > KERNELS_MAX {
            return Err(self.limit("kernels", KERNELS_MAX));
        }
        Ok(())
    }

    /// Records a loaded kernel; its handle is its index (never reused).
    pub(super) fn push_kernel(
        &mut self,
        function: A::Function,
        name: &str,
        standard: Option<Kernel>,
    ) -> KernelHandle {
        let handle = KernelHandle(self.kernels.len() as u32);
        self.kernels.push(LoadedKernel { function, name: name.to_string(), standard });
        handle
    }

    /// The kernel `kernel` names.
    pub(super) fn kernel(&self, kernel: KernelHandle) -> Result<&LoadedKernel<A>, GpuError> {
        self.kernels.get(kernel.0 as usize).ok_or_else(|| {
            GpuError::invalid(self.id, format!("kernel {} is not loaded on this device", kernel.0))
        })
    }
}
