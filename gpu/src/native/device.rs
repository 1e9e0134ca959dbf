//! [`NativeDevice`]: the [`Device`] interface over any [`NativeApi`].
//!
//! Each method binds the device on the calling thread, looks its handles
//! up in the tables under the one mutex, and makes the vendor call; calls
//! that wait for the device wait outside the mutex on an `Arc`-held handle
//! (see the module doc of [`crate::native`]). The memory cache's fences
//! live in `memory.rs`, launch checks in `launch.rs`.

use std::sync::{Arc, Mutex, MutexGuard};

use super::cache::CacheStats;
use super::launch::{check_launch, launch_params};
use super::owned::Owned;
use super::state::{Allocation, OwnedEvent, State};
use super::{Blas, DevicePtr, Launch, NativeApi, Transfer};
use crate::device::Device;
use crate::error::GpuError;
use crate::handle::{Arg, Buffer, Event, Gemm, KernelHandle, LaunchConfig, Stream};
use crate::info::{BackendKind, DeviceId, DeviceInfo, HealthReport, MemoryInfo};
use crate::kernel::{Kernel, KernelSource};
use crate::launch::{gemm_args, gemm_config};

/// One GPU driven through a native API: CUDA's
/// `cuda::CudaDevice` and ROCm's `rocm::RocmDevice` are this type (each
/// behind its feature).
pub struct NativeDevice<A: NativeApi> {
    info: DeviceInfo,
    api: Arc<A>,
    state: Mutex<State<A>>,
}

impl<A: NativeApi> NativeDevice<A> {
    /// A device over `api`, described by `info`, whose memory cache holds at
    /// most `cache_bytes_max` bytes (0: freed memory goes straight back to
    /// the driver and allocations are of the exact size asked), with a BLAS
    /// handle for `Device::gemm` if the device has one.
    pub(crate) fn new(
        api: A,
        info: DeviceInfo,
        cache_bytes_max: usize,
        blas: Option<Box<dyn Blas<A::Stream>>>,
    ) -> Self {
        let state = State::new(info.id, cache_bytes_max, blas);
        NativeDevice { info, api: Arc::new(api), state: Mutex::new(state) }
    }

    /// The vendor API object, for a backend's own methods.
    pub(crate) fn api(&self) -> &A {
        &self.api
    }

    /// Whether `Device::gemm` goes through the vendor's BLAS library
    /// (else the standard kernel).
    pub fn has_blas(&self) -> bool {
        self.lock().blas.is_some()
    }

    /// What the memory cache holds now.
    pub fn cache_stats(&self) -> CacheStats {
        let state = self.lock();
        CacheStats {
            live_buffers: state.buffers.len(),
            cached_blocks: state.cache.cached_blocks(),
            cached_bytes: state.cache.cached_bytes(),
            cache_bytes_max: state.cache.max_bytes(),
        }
    }

    /// Memory as the driver sees it: unlike [`Device::memory`], cached
    /// blocks count as used.
    pub fn driver_memory(&self) -> Result<MemoryInfo, GpuError> {
        self.api.bind()?;
        self.api.memory()
    }

    /// Returns every cached block to the driver.
    pub fn trim_cache(&self) -> Result<(), GpuError> {
        self.api.bind()?;
        let mut state = self.lock();
        self.release_cache(&mut state)
    }

    /// The device address of `buffer`, to hand to another library of the
    /// same vendor (NCCL, a custom cuBLAS call). Valid until it is freed.
    pub fn device_pointer(&self, buffer: Buffer) -> Result<DevicePtr, GpuError> {
        self.lock().allocation(buffer).map(|allocation| allocation.ptr)
    }

    pub(super) fn lock(&self) -> MutexGuard<'_, State<A>> {
        // A panic while holding the lock leaves the tables consistent (every
        // update is a single insert or remove), so a poisoned lock is usable.
        self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// A timing-free event, from the spares when there is one.
    pub(super) fn new_event(&self, state: &mut State<A>) -> Result<OwnedEvent<A>, GpuError> {
        if let Some(event) = state.spare_events.pop() {
            return Ok(event);
        }
        Ok(Owned::new(&self.api, self.api.create_event()?, A::destroy_event))
    }

    /// Copies `len` bytes between host memory and `buffer` at `offset` in
    /// stream order (`transfer` makes the copy from the device address),
    /// then waits for the stream when `wait`.
    fn host_copy<'h>(
        &self,
        stream: Stream,
        buffer: Buffer,
        offset: usize,
        len: usize,
        wait: bool,
        transfer: impl FnOnce(DevicePtr) -> Transfer<'h>,
    ) -> Result<(), GpuError> {
        self.api.bind()?;
        let waiter = {
            let state = self.lock();
            let raw = state.stream(stream)?;
            let address = state.span(buffer, offset, len)?;
            if len == 0 {
                return Ok(());
            }
            // SAFETY: the span lies in a live allocation (checked) and the
            // stream is live (in the table, whose lock is held). The host
            // memory is borrowed for `'h`, past this call, and the stream
            // is synchronized below before returning whenever the vendor
            // may touch it later: always for a read (`wait` is true), and
            // for a write when `WRITE_WAITS`.
            unsafe { self.api.copy(raw.raw(), transfer(address)) }?;
            if !wait {
                return Ok(());
            }
            Arc::clone(raw)
        };
        // SAFETY: the stream is held alive by the Arc.
        unsafe { self.api.synchronize(waiter.raw()) }
    }

    /// Compiles `source`, loads it and looks up `entries`, recording the
    /// module (kept until the device drops).
    fn load_source(
        &self,
        state: &mut State<A>,
        name: &str,
        source: &str,
        entries: &[&str],
    ) -> Result<Vec<A::Function>, GpuError> {
        state.check_kernel_room(entries.len())?;
        let module = self.api.load_module(name, source)?;
        let mut functions = Vec::with_capacity(entries.len());
        for entry in entries {
            // SAFETY: `module` was just loaded and is not unloaded here
            // unless the lookup fails.
            match unsafe { self.api.function(module, entry) } {
                Ok(function) => functions.push(function),
                Err(error) => {
                    // SAFETY: nothing refers to the module yet.
                    unsafe { self.api.unload_module(module) };
                    return Err(error);
                }
            }
        }
        state.modules.push(module);
        Ok(functions)
    }
}

/// The id of device `ordinal` of `backend`, which sees `count` devices;
/// `InvalidArgument` past the last.
pub(crate) fn device_id(
    backend: BackendKind,
    ordinal: u32,
    count: usize,
) -> Result<DeviceId, GpuError> {
    let id = DeviceId::new(backend, ordinal);
    if ordinal as usize >= count {
        return Err(GpuError::invalid(id, format!("there are only {count} {backend} devices")));
    }
    Ok(id)
}

/// Opens devices `0..count` of one backend with `open`, for detection.
pub(crate) fn open_all<A: NativeApi>(
    count: usize,
    open: fn(u32) -> Result<NativeDevice<A>, GpuError>,
) -> Result<Vec<Arc<dyn Device>>, GpuError> {
    let mut devices: Vec<Arc<dyn Device>> = Vec::with_capacity(count);
    for ordinal in 0..count {
        let device = open(ordinal as u32)?;
        tracing::info!(device = %device.info.id, name = %device.info.name, "opened a device");
        devices.push(Arc::new(device));
    }
    Ok(devices)
}

impl<A: NativeApi> Device for NativeDevice<A> {
    fn info(&self) -> &DeviceInfo {
        &self.info
    }

    fn memory(&self) -> Result<MemoryInfo, GpuError> {
        let driver = self.driver_memory()?;
        let cached = self.lock().cache.cached_bytes() as u64;
        Ok(MemoryInfo {
            free_bytes: (driver.free_bytes + cached).min(driver.total_bytes),
            total_bytes: driver.total_bytes,
        })
    }

    fn alloc(&self, bytes: usize) -> Result<Buffer, GpuError> {
        self.api.bind()?;
        let mut state = self.lock();
        state.check_buffer_room()?;
        let (ptr, class) = self.take_memory(&mut state, bytes)?;
        Ok(state.insert_buffer(Allocation { ptr, bytes, class }))
    }

    fn free(&self, buffer: Buffer) -> Result<(), GpuError> {
        self.api.bind()?;
        let mut state = self.lock();
        state.allocation(buffer)?;
        let allocation = state.buffers.remove(&buffer.id).expect("checked just above");
        self.cache_or_free(&mut state, allocation)
    }

    fn write(
        &self,
        stream: Stream,
        dst: Buffer,
        offset: usize,
        src: &[u8],
    ) -> Result<(), GpuError> {
        let transfer = |address| Transfer::ToDevice { dst: address, src };
        self.host_copy(stream, dst, offset, src.len(), A::WRITE_WAITS, transfer)
    }

    fn read(
        &self,
        stream: Stream,
        src: Buffer,
        offset: usize,
        dst: &mut [u8],
    ) -> Result<(), GpuError> {
        let len = dst.len();
        self.host_copy(stream, src, offset, len, true, |address| Transfer::ToHost {
            dst,
            src: address,
        })
    }

    fn copy(&self, stream: Stream, src: Buffer, dst: Buffer, bytes: usize) -> Result<(), GpuError> {
        self.api.bind()?;
        let state = self.lock();
        let raw = state.stream(stream)?;
        let from = state.span(src, 0, bytes)?;
        let to = state.span(dst, 0, bytes)?;
        if bytes == 0 {
            return Ok(());
        }
        // SAFETY: both spans lie in live allocations (checked) and the
        // stream is live; the copy is ordered after the stream's earlier work.
        unsafe { self.api.copy(raw.raw(), Transfer::OnDevice { dst: to, src: from, bytes }) }
    }

    fn create_stream(&self) -> Result<Stream, GpuError> {
        self.api.bind()?;
        let mut state = self.lock();
        state.insert_stream(|| {
            Ok(Owned::new(&self.api, self.api.create_stream()?, A::destroy_stream))
        })
    }

    fn destroy_stream(&self, stream: Stream) -> Result<(), GpuError> {
        self.api.bind()?;
        let raw = {
            let mut state = self.lock();
            state.stream(stream)?;
            state.streams.remove(&stream.0).expect("checked just above")
        };
        // SAFETY: the stream is held alive by the Arc.
        let synced = unsafe { self.api.synchronize(raw.raw()) };
        if let Ok(raw) = Arc::try_unwrap(raw) {
            if synced.is_ok() {
                self.lock().recycle_stream(raw);
            }
        }
        synced
    }

    fn synchronize(&self, stream: Stream) -> Result<(), GpuError> {
        self.api.bind()?;
        let raw = Arc::clone(self.lock().stream(stream)?);
        // SAFETY: the stream is held alive by the Arc.
        unsafe { self.api.synchronize(raw.raw()) }
    }

    fn record_event(&self, stream: Stream) -> Result<Event, GpuError> {
        self.api.bind()?;
        let mut state = self.lock();
        state.check_event_room()?;
        let raw_stream = state.stream(stream)?.raw();
        let event = self.new_event(&mut state)?;
        // SAFETY: both handles are live: the event is owned here and the
        // stream stays in the table while the lock is held.
        if let Err(error) = unsafe { self.api.record_event(event.raw(), raw_stream) } {
            state.recycle_event(event);
            return Err(error);
        }
        Ok(state.insert_event(event))
    }

    fn wait_event(&self, stream: Stream, event: Event) -> Result<(), GpuError> {
        self.api.bind()?;
        let state = self.lock();
        let raw_stream = state.stream(stream)?;
        let raw_event = state.event(event)?;
        // SAFETY: both handles are live (in the tables, lock held).
        unsafe { self.api.wait_event(raw_stream.raw(), raw_event.raw()) }
    }

    fn event_synchronize(&self, event: Event) -> Result<(), GpuError> {
        self.api.bind()?;
        let raw = Arc::clone(self.lock().event(event)?);
        // SAFETY: the event is held alive by the Arc.
        unsafe { self.api.event_synchronize(raw.raw()) }
    }

    fn destroy_event(&self, event: Event) -> Result<(), GpuError> {
        self.api.bind()?;
        let mut state = self.lock();
        state.event(event)?;
        let raw = state.events.remove(&event.0).expect("checked just above");
        if let Ok(raw) = Arc::try_unwrap(raw) {
            state.recycle_event(raw);
        }
        Ok(())
    }

    fn load_kernel(&self, kernel: Kernel) -> Result<KernelHandle, GpuError> {
        self.api.bind()?;
        let mut state = self.lock();
        if let Some(&handle) = state.standard_handles.get(&kernel) {
            return Ok(handle);
        }
        if state.standard_handles.is_empty() {
            let names: Vec<&str> = Kernel::ALL.iter().map(|k| k.name()).collect();
            let functions =
                self.load_source(&mut state, "zbmd_standard", A::STANDARD_SOURCE, &names)?;
            for (standard, function) in Kernel::ALL.into_iter().zip(functions) {
                let handle = state.push_kernel(function, standard.name(), Some(standard));
                state.standard_handles.insert(standard, handle);
            }
        }
        state.standard_handles.get(&kernel).copied().ok_or_else(|| {
            GpuError::invalid(
                self.info.id,
                format!("{} missing from the standard module", kernel.name()),
            )
        })
    }

    fn compile(&self, source: &KernelSource) -> Result<KernelHandle, GpuError> {
        let Some((entry, text)) = A::user_source(source) else {
            let (language, variant) = A::USER_LANGUAGE;
            return Err(GpuError::invalid(
                self.info.id,
                format!(
                    "kernel `{}` is not {language}: the {} backend compiles only {variant}",
                    source.entry(),
                    self.info.id.backend
                ),
            ));
        };
        self.api.bind()?;
        let mut state = self.lock();
        let functions = self.load_source(&mut state, entry, text, &[entry])?;
        Ok(state.push_kernel(functions[0], entry, None))
    }

    fn launch(
        &self,
        stream: Stream,
        kernel: KernelHandle,
        config: LaunchConfig,
        args: &[Arg],
    ) -> Result<(), GpuError> {
        self.api.bind()?;
        let state = self.lock();
        let loaded = state.kernel(kernel)?;
        check_launch(&self.info, &loaded.name, loaded.standard, &config, args)?;
        let raw_stream = state.stream(stream)?.raw();
        let mut slots = Default::default();
        let mut params = launch_params(&mut slots, args, |buffer| {
            state.allocation(buffer).map(|allocation| allocation.ptr)
        })?;
        let launch = Launch {
            function: loaded.function,
            stream: raw_stream,
            config: &config,
            params: &mut params,
            name: &loaded.name,
        };
        // SAFETY: 1. the function belongs to a module loaded on this device
        // and kept until it drops; 2. the stream is live (in the table, lock
        // held); 3. `launch_params` laid `params` out over `slots`, which
        // outlive the call; 4. buffer arguments are live allocations
        // (looked up just above), their sizes checked against the standard
        // kernels' needs by `launch::check_args` when launched through
        // `Kernels` (a raw launch's sizes are the caller's to get right: a
        // device fault is reported as an error, not host memory
        // corruption); 5. `check_launch` checked the shape.
        unsafe { self.api.launch(launch) }
    }

    fn gemm(&self, stream: Stream, gemm: &Gemm) -> Result<(), GpuError> {
        gemm.validate(self.info.id)?;
        if gemm.m == 0 || gemm.n == 0 {
            return Ok(());
        }
        self.api.bind()?;
        let mut state = self.lock();
        let raw_stream = state.stream(stream)?.raw();
        let a = state.span(gemm.a, 0, gemm.m * gemm.k * 4)?;
        let b = state.span(gemm.b, 0, gemm.k * gemm.n * 4)?;
        let c = state.span(gemm.c, 0, gemm.m * gemm.n * 4)?;
        let Some(blas) = state.blas.as_mut() else {
            drop(state);
            let kernel = self.load_kernel(Kernel::Gemm)?;
            return self.launch(stream, kernel, gemm_config(gemm), &gemm_args(self, gemm)?);
        };
        // SAFETY: 1. the device is bound; 2. the stream is live (in the
        // table, lock held); 3. a, b and c are live allocations at least
        // m·k, k·n and m·n floats long (checked by `span`; `gemm.validate`
        // checked the products do not overflow), and m, n > 0.
        unsafe { blas.sgemm(raw_stream, gemm, [a, b, c]) }
    }

    fn health(&self) -> Result<HealthReport, GpuError> {
        self.api.health()
    }
}

impl<A: NativeApi> Drop for NativeDevice<A> {
    fn drop(&mut self) {
        // Best effort throughout: a lost device fails every call, and the
        // process must still be able to drop it.
        let _ = self.api.bind();
        self.api.synchronize_device();
        let state = self.state.get_mut().unwrap_or_else(|poisoned| poisoned.into_inner());
        // The BLAS handle goes first, while the device is bound.
        drop(state.blas.take());
        for (_, allocation) in state.buffers.drain() {
            // SAFETY: each live allocation came from `malloc` and is freed
            // once, here.
            let _ = unsafe { self.api.free(allocation.ptr) };
        }
        for block in state.cache.drain() {
            // SAFETY: as above, for cached blocks (out of the buffer table);
            // their fences drop with them.
            let _ = unsafe { self.api.free(block.ptr) };
        }
        // No method is running, so these Arcs are the only holders: dropping
        // them destroys the streams and events (before the API object, which
        // each of them holds: a CUDA context outlives its streams).
        state.streams.clear();
        state.spare_streams.clear();
        state.events.clear();
        state.spare_events.clear();
        for module in state.modules.drain(..) {
            // SAFETY: loaded on this device; the device was synchronized and
            // nothing launches from it again.
            unsafe { self.api.unload_module(module) };
        }
    }
}
