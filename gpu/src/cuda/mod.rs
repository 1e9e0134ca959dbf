//! NVIDIA GPUs through the CUDA driver API (feature `cuda`).
//!
//! Built on cudarc's thin `result` layer (one call per driver function)
//! rather than its safe types, because the [`Device`] contract is itself
//! a handle table with explicit streams and events. cudarc loads libcuda,
//! NVRTC and cuBLAS at run time, so this builds with no CUDA toolkit; it
//! panics if a library is absent when first called, so `open_all` checks
//! each library's presence first and answers
//! [`NotAvailable`](GpuError::NotAvailable) as a value.
//!
//! - **Context.** Each device uses its primary context, made current on the
//!   calling thread at the start of every method (`cuCtxSetCurrent` is
//!   cheap), so any thread may call any method.
//! - **Memory.** A caching allocator (`pool`): freed blocks wait on
//!   per-size-class free lists for the next allocation of their class.
//!   So that a block is not reused while work submitted before its `free`
//!   still touches it, `free` records an event on every live stream and the
//!   block's next user waits for those events. An allocation the driver
//!   refuses empties the cache and retries once before reporting
//!   [`OutOfMemory`](GpuError::OutOfMemory).
//! - **Streams and events** are non-blocking CUDA streams and timing-free
//!   CUDA events, with bounded tables and small free lists of spares.
//! - **Kernels.** The standard kernels (`kernels/cuda/standard.cu`) are
//!   compiled by NVRTC once per device, on first use; user CUDA C through
//!   [`Device::compile`]. GEMM goes to cuBLAS when its library is present.
//!
//! Locking: one mutex guards the tables and is held while work is
//! submitted (submission does not wait for the device, except a write from
//! pageable memory, which waits for the stream's earlier work). Calls that
//! wait for the device (`synchronize`, `read`, `event_synchronize`,
//! `destroy_stream`) wait outside it, holding their stream or event by
//! [`Arc`] so a concurrent destroy cannot free it under them.

mod compile;
mod error;
mod pool;

use std::collections::HashMap;
use std::ffi::c_void;
use std::sync::{Arc, Mutex, MutexGuard};

use cudarc::cublas::{result as blas, sys as blas_sys};
use cudarc::driver::{result as drv, sys};

use self::error::{cublas_error, driver_error};
use self::pool::{SizeClassCache, size_class};
use crate::device::{
    Arg, BackendKind, Buffer, Device, DeviceId, DeviceInfo, Event, Gemm, HealthReport,
    KernelHandle, LaunchConfig, MemoryInfo, Stream,
};
use crate::error::GpuError;
use crate::kernel::{Kernel, KernelSource, gemm_args, gemm_config};

/// The standard kernels' CUDA C source.
const STANDARD_SOURCE: &str = include_str!("../../kernels/cuda/standard.cu");

/// Live buffers per device: far more than a model's tensors, and a bound
/// that catches a leak before the handle table grows without end.
const BUFFERS_MAX: usize = 1 << 20;
/// Live streams per device: a kernel actor holds one or two; the hardware
/// runs 128 concurrent kernels on Hopper, so more streams buy nothing.
const STREAMS_MAX: usize = 64;
/// Destroyed streams kept for the next `create_stream` instead of being
/// destroyed (stream creation costs a driver round trip).
const SPARE_STREAMS_MAX: usize = 8;
/// Live events per device (a training step records a handful per stream).
const EVENTS_MAX: usize = 1 << 16;
/// Destroyed events kept for reuse (also the source of `free`'s fences).
const SPARE_EVENTS_MAX: usize = 256;
/// Loaded kernels per device: the nine standard ones plus user kernels.
const KERNELS_MAX: usize = 4096;
/// Arguments one launch may pass. Every launch hands the driver this many
/// parameter slots (unused ones zero), so a user kernel that declares more
/// parameters than it was given reads zeros, not host memory past the end.
const KERNEL_ARGS_MAX: usize = 32;
/// Bytes behind each parameter slot: the widest by-value parameter a user
/// kernel may declare without reading past its slot.
const ARG_SLOT_WORDS: usize = 8;
/// The cache holds at most 1/8 of device memory: enough for a training
/// step's activations to cycle without touching the driver, while leaving
/// most memory to other processes and to allocations of other sizes.
const CACHE_FRACTION: u64 = 8;

/// How many CUDA devices the driver sees.
///
/// [`NotAvailable`](GpuError::NotAvailable) when libcuda cannot be loaded
/// ("driver not found (libcuda.so)"), when `cuInit` fails (no device, a
/// driver/library mismatch) or when it sees no device ("no device").
pub fn device_count() -> Result<usize, GpuError> {
    let absent = |reason: String| GpuError::NotAvailable { backend: BackendKind::Cuda, reason };
    // SAFETY: probing dlopens libcuda (running its initialisers) and closes
    // it again; libcuda is made to be loaded at any point of a process.
    if !unsafe { sys::is_culib_present() } {
        return Err(absent("driver not found (libcuda.so)".into()));
    }
    match drv::init() {
        Ok(()) => {}
        Err(e) if e.0 == sys::CUresult::CUDA_ERROR_NO_DEVICE => {
            return Err(absent("no device".into()));
        }
        Err(e) => return Err(absent(format!("cuInit failed: {:?}", e.0))),
    }
    let count = drv::device::get_count()
        .map_err(|e| absent(format!("cuDeviceGetCount failed: {:?}", e.0)))?;
    match usize::try_from(count) {
        Ok(0) | Err(_) => Err(absent("no device".into())),
        Ok(count) => Ok(count),
    }
}

/// Opens every CUDA device, or says why there are none.
pub(crate) fn open_all() -> Result<Vec<Arc<dyn Device>>, GpuError> {
    let count = device_count()?;
    let mut devices: Vec<Arc<dyn Device>> = Vec::with_capacity(count);
    for ordinal in 0..count {
        let device = CudaDevice::open(ordinal as u32)?;
        tracing::info!(device = %device.info.id, name = %device.info.name, "opened CUDA device");
        devices.push(Arc::new(device));
    }
    Ok(devices)
}

/// The state of a [`CudaDevice`]'s caching allocator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolStats {
    /// Buffers allocated and not yet freed.
    pub live_buffers: usize,
    /// Freed blocks held for reuse.
    pub cached_blocks: usize,
    /// Bytes those blocks hold (counted as free by [`Device::memory`]).
    pub cached_bytes: usize,
    /// The most bytes the cache holds.
    pub cache_bytes_max: usize,
}

/// One NVIDIA GPU.
pub struct CudaDevice {
    info: DeviceInfo,
    cu_device: sys::CUdevice,
    context: sys::CUcontext,
    compute_capability: (i32, i32),
    has_nvrtc: bool,
    state: Mutex<State>,
}

// SAFETY: the raw CUDA handles in a `CudaDevice` (context, streams, events,
// modules, the cuBLAS handle) are usable from any thread: the driver API is
// thread-safe once the context is current, which every method makes it.
// Everything mutable is behind `state`'s mutex, and the cuBLAS handle, which
// is not thread-safe, is used only with that mutex held.
unsafe impl Send for CudaDevice {}
// SAFETY: as for `Send`: shared access goes through the mutex.
unsafe impl Sync for CudaDevice {}

/// A stream that destroys itself when its last holder lets go.
struct RawStream {
    stream: sys::CUstream,
    context: sys::CUcontext,
}

/// An event that destroys itself when its last holder lets go.
struct RawEvent {
    event: sys::CUevent,
    context: sys::CUcontext,
}

// SAFETY: stream and event handles may be used and destroyed from any thread
// once their context is current, which `Drop` (and every user) ensures.
unsafe impl Send for RawStream {}
// SAFETY: as above; the handle itself is never mutated.
unsafe impl Sync for RawStream {}
// SAFETY: as for `RawStream`.
unsafe impl Send for RawEvent {}
// SAFETY: as for `RawStream`.
unsafe impl Sync for RawEvent {}

impl Drop for RawStream {
    fn drop(&mut self) {
        // SAFETY: the context outlives every stream (the device drops its
        // streams before releasing it) and the stream is destroyed once,
        // here, by its only owner.
        unsafe {
            let _ = drv::ctx::set_current(self.context);
            let _ = drv::stream::destroy(self.stream);
        }
    }
}

impl Drop for RawEvent {
    fn drop(&mut self) {
        // SAFETY: as for `RawStream`.
        unsafe {
            let _ = drv::ctx::set_current(self.context);
            let _ = drv::event::destroy(self.event);
        }
    }
}

/// A live buffer's device memory.
struct Allocation {
    ptr: sys::CUdeviceptr,
    bytes: usize,
    class: usize,
}

/// A freed block waiting in the cache, with the events that mark the end of
/// the work submitted before it was freed.
struct CachedBlock {
    ptr: sys::CUdeviceptr,
    fences: Vec<RawEvent>,
}

struct LoadedKernel {
    function: sys::CUfunction,
    name: String,
    /// The standard kernel it is, whose argument list is known.
    standard: Option<Kernel>,
}

struct State {
    buffers: HashMap<u64, Allocation>,
    next_buffer: u64,
    cache: SizeClassCache<CachedBlock>,
    streams: HashMap<u32, Arc<RawStream>>,
    spare_streams: Vec<RawStream>,
    next_stream: u32,
    events: HashMap<u64, Arc<RawEvent>>,
    spare_events: Vec<RawEvent>,
    next_event: u64,
    modules: Vec<sys::CUmodule>,
    kernels: Vec<LoadedKernel>,
    standard_module: Option<sys::CUmodule>,
    standard_handles: HashMap<Kernel, KernelHandle>,
    blas: Option<blas_sys::cublasHandle_t>,
}

impl CudaDevice {
    /// Opens CUDA device `ordinal` (its primary context), or says why not:
    /// [`NotAvailable`](GpuError::NotAvailable) without a driver or device.
    pub fn open(ordinal: u32) -> Result<CudaDevice, GpuError> {
        let count = device_count()?;
        let id = DeviceId::new(BackendKind::Cuda, ordinal);
        if ordinal as usize >= count {
            return Err(GpuError::invalid(id, format!("there are only {count} CUDA devices")));
        }
        let fail = |what: &'static str| move |e: drv::DriverError| driver_error(id, e.0, what);
        let cu_device = drv::device::get(ordinal as i32).map_err(fail("cuDeviceGet"))?;
        let attribute = |attribute: sys::CUdevice_attribute| {
            // SAFETY: `cu_device` came from cuDeviceGet just above.
            unsafe { drv::device::get_attribute(cu_device, attribute) }
                .map_err(fail("cuDeviceGetAttribute"))
        };
        use sys::CUdevice_attribute as A;
        let major = attribute(A::CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR)?;
        let minor = attribute(A::CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR)?;
        let max_block_threads = attribute(A::CU_DEVICE_ATTRIBUTE_MAX_THREADS_PER_BLOCK)?;
        // SAFETY: as above.
        let memory_total =
            unsafe { drv::device::total_mem(cu_device) }.map_err(fail("cuDeviceTotalMem"))? as u64;
        let name = drv::device::get_name(cu_device).map_err(fail("cuDeviceGetName"))?;
        // SAFETY: as above; released in `Drop` (or just below on failure).
        let context = unsafe { drv::primary_ctx::retain(cu_device) }
            .map_err(fail("cuDevicePrimaryCtxRetain"))?;
        // SAFETY: the context was just retained.
        if let Err(e) = unsafe { drv::ctx::set_current(context) } {
            // SAFETY: balances the retain above; nothing uses the context.
            let _ = unsafe { drv::primary_ctx::release(cu_device) };
            return Err(driver_error(id, e.0, "cuCtxSetCurrent"));
        }
        // SAFETY: probing dlopens and closes the library (see device_count).
        let has_nvrtc = unsafe { cudarc::nvrtc::sys::is_culib_present() };
        // SAFETY: as above.
        let blas = if unsafe { blas_sys::is_culib_present() } {
            // The context is current: cuBLAS binds the handle to it.
            match blas::create_handle() {
                Ok(handle) => Some(handle),
                Err(e) => {
                    tracing::warn!(device = %id, status = ?e.0, "cuBLAS unusable: GEMM uses the standard kernel");
                    None
                }
            }
        } else {
            tracing::info!(device = %id, "cuBLAS not found: GEMM uses the standard kernel");
            None
        };
        let info = DeviceInfo {
            id,
            name,
            memory_total,
            capability: format!("sm_{major}{minor}"),
            is_software: false,
            max_block_threads: max_block_threads.max(1) as u32,
        };
        let cache_bytes_max = usize::try_from(memory_total / CACHE_FRACTION).unwrap_or(usize::MAX);
        let state = State {
            buffers: HashMap::new(),
            next_buffer: 1,
            cache: SizeClassCache::new(cache_bytes_max),
            streams: HashMap::new(),
            spare_streams: Vec::new(),
            next_stream: 1,
            events: HashMap::new(),
            spare_events: Vec::new(),
            next_event: 1,
            modules: Vec::new(),
            kernels: Vec::new(),
            standard_module: None,
            standard_handles: HashMap::new(),
            blas,
        };
        Ok(CudaDevice {
            info,
            cu_device,
            context,
            compute_capability: (major, minor),
            has_nvrtc,
            state: Mutex::new(state),
        })
    }

    /// Whether GEMM goes through cuBLAS (else the standard kernel).
    pub fn has_cublas(&self) -> bool {
        self.lock().blas.is_some()
    }

    /// The caching allocator's state.
    pub fn pool_stats(&self) -> PoolStats {
        let state = self.lock();
        PoolStats {
            live_buffers: state.buffers.len(),
            cached_blocks: state.cache.cached_blocks(),
            cached_bytes: state.cache.cached_bytes(),
            cache_bytes_max: state.cache.max_bytes(),
        }
    }

    /// Memory as the driver sees it (`cuMemGetInfo`): unlike
    /// [`Device::memory`], cached blocks count as used.
    pub fn driver_memory(&self) -> Result<MemoryInfo, GpuError> {
        self.bind()?;
        let (free, total) = drv::mem_get_info().map_err(self.fail("cuMemGetInfo"))?;
        Ok(MemoryInfo { free: free as u64, total: total as u64 })
    }

    /// Returns every cached block to the driver.
    pub fn trim_cache(&self) -> Result<(), GpuError> {
        self.bind()?;
        let mut state = self.lock();
        self.release_cache(&mut state)
    }

    /// The device address of `buffer`, to hand to another CUDA library
    /// (NCCL, a custom cuBLAS call). Valid until the buffer is freed.
    pub fn device_pointer(&self, buffer: Buffer) -> Result<u64, GpuError> {
        let state = self.lock();
        self.allocation(&state, buffer).map(|allocation| allocation.ptr)
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock leaves the tables consistent (every
        // update is a single insert or remove), so a poisoned lock is usable.
        self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Makes the device's context current on this thread.
    fn bind(&self) -> Result<(), GpuError> {
        // SAFETY: `context` is retained until `Drop`, which cannot run while
        // `&self` is borrowed.
        unsafe { drv::ctx::set_current(self.context) }.map_err(self.fail("cuCtxSetCurrent"))
    }

    fn fail<'a>(&self, what: &'a str) -> impl Fn(drv::DriverError) -> GpuError + 'a {
        let id = self.info.id;
        move |e| driver_error(id, e.0, what)
    }

    fn allocation<'s>(&self, state: &'s State, buffer: Buffer) -> Result<&'s Allocation, GpuError> {
        match state.buffers.get(&buffer.id) {
            Some(allocation) if allocation.bytes == buffer.bytes => Ok(allocation),
            Some(allocation) => Err(GpuError::invalid(
                self.info.id,
                format!(
                    "buffer {} says {} bytes but was allocated with {}",
                    buffer.id, buffer.bytes, allocation.bytes
                ),
            )),
            None => Err(GpuError::invalid(
                self.info.id,
                format!(
                    "buffer {} is not live on this device (freed, or another device's)",
                    buffer.id
                ),
            )),
        }
    }

    fn stream(&self, state: &State, stream: Stream) -> Result<Arc<RawStream>, GpuError> {
        state.streams.get(&stream.0).cloned().ok_or_else(|| {
            GpuError::invalid(
                self.info.id,
                format!("stream {} is not open on this device", stream.0),
            )
        })
    }

    fn event(&self, state: &State, event: Event) -> Result<Arc<RawEvent>, GpuError> {
        state.events.get(&event.0).cloned().ok_or_else(|| {
            GpuError::invalid(self.info.id, format!("event {} is not live on this device", event.0))
        })
    }

    /// Checks `bytes` at `offset` lie inside `buffer`, returning the address.
    fn span(
        &self,
        state: &State,
        buffer: Buffer,
        offset: usize,
        bytes: usize,
    ) -> Result<u64, GpuError> {
        let allocation = self.allocation(state, buffer)?;
        match offset.checked_add(bytes) {
            Some(end) if end <= allocation.bytes => Ok(allocation.ptr + offset as u64),
            _ => Err(GpuError::invalid(
                self.info.id,
                format!(
                    "{bytes} bytes at offset {offset} overrun buffer {} of {} bytes",
                    buffer.id, allocation.bytes
                ),
            )),
        }
    }

    /// A timing-free event, from the spares when there is one.
    fn new_event(&self, state: &mut State) -> Result<RawEvent, GpuError> {
        if let Some(event) = state.spare_events.pop() {
            return Ok(event);
        }
        let event = drv::event::create(sys::CUevent_flags::CU_EVENT_DISABLE_TIMING)
            .map_err(self.fail("cuEventCreate"))?;
        Ok(RawEvent { event, context: self.context })
    }

    fn recycle_event(state: &mut State, event: RawEvent) {
        if state.spare_events.len() < SPARE_EVENTS_MAX {
            state.spare_events.push(event);
        }
    }

    /// Records, on every live stream, an event marking its current end.
    fn fences(&self, state: &mut State) -> Result<Vec<RawEvent>, GpuError> {
        let streams: Vec<sys::CUstream> = state.streams.values().map(|s| s.stream).collect();
        let mut fences = Vec::with_capacity(streams.len());
        for stream in streams {
            let event = self.new_event(state)?;
            // SAFETY: both handles are live in the current context.
            unsafe { drv::event::record(event.event, stream) }
                .map_err(self.fail("cuEventRecord"))?;
            fences.push(event);
        }
        Ok(fences)
    }

    /// Waits until the work a cached block's fences mark has finished.
    fn wait_fences(&self, state: &mut State, fences: Vec<RawEvent>) -> Result<(), GpuError> {
        for fence in fences {
            // SAFETY: the event is live (owned here) in the current context.
            unsafe { drv::event::synchronize(fence.event) }
                .map_err(self.fail("cuEventSynchronize (reusing a freed block)"))?;
            Self::recycle_event(state, fence);
        }
        Ok(())
    }

    /// Frees every cached block for real.
    fn release_cache(&self, state: &mut State) -> Result<(), GpuError> {
        let mut first_error = Ok(());
        for block in state.cache.drain() {
            // cuMemFree waits for work still using the block, so the fences
            // need no wait of their own.
            // SAFETY: the block came from cuMemAlloc and left the buffer
            // table when it was cached, so nothing else frees it.
            let freed = unsafe { drv::free_sync(block.ptr) }.map_err(self.fail("cuMemFree"));
            if first_error.is_ok() {
                first_error = freed;
            }
            for fence in block.fences {
                Self::recycle_event(state, fence);
            }
        }
        first_error
    }

    /// Device memory of size class `class`: from the cache, else the driver,
    /// else the driver again after emptying the cache.
    fn take_memory(&self, state: &mut State, bytes: usize, class: usize) -> Result<u64, GpuError> {
        if let Some(block) = state.cache.take(class) {
            self.wait_fences(state, block.fences)?;
            return Ok(block.ptr);
        }
        // SAFETY: the context is current; the memory is uninitialised bytes,
        // which is what `alloc` promises.
        match unsafe { drv::malloc_sync(class) } {
            Ok(ptr) => return Ok(ptr),
            Err(e) if e.0 == sys::CUresult::CUDA_ERROR_OUT_OF_MEMORY => {}
            Err(e) => return Err(driver_error(self.info.id, e.0, &format!("cuMemAlloc({class})"))),
        }
        if state.cache.cached_blocks() > 0 {
            tracing::debug!(device = %self.info.id, bytes, "out of memory: emptying the cache and retrying");
            self.release_cache(state)?;
            // SAFETY: as above.
            match unsafe { drv::malloc_sync(class) } {
                Ok(ptr) => return Ok(ptr),
                Err(e) if e.0 == sys::CUresult::CUDA_ERROR_OUT_OF_MEMORY => {}
                Err(e) => {
                    return Err(driver_error(self.info.id, e.0, &format!("cuMemAlloc({class})")));
                }
            }
        }
        let free = drv::mem_get_info().map(|(free, _)| free).unwrap_or(0);
        Err(GpuError::OutOfMemory { device: self.info.id, requested: bytes, free })
    }

    /// The function and standard identity of a loaded kernel.
    fn kernel<'s>(
        &self,
        state: &'s State,
        kernel: KernelHandle,
    ) -> Result<&'s LoadedKernel, GpuError> {
        state.kernels.get(kernel.0 as usize).ok_or_else(|| {
            GpuError::invalid(
                self.info.id,
                format!("kernel {} is not loaded on this device", kernel.0),
            )
        })
    }

    /// Compiles `source` and loads `entry` from it, recording both.
    fn load_source(
        &self,
        state: &mut State,
        name: &str,
        source: &str,
        entries: &[&str],
    ) -> Result<(sys::CUmodule, Vec<sys::CUfunction>), GpuError> {
        if !self.has_nvrtc {
            return Err(GpuError::NotAvailable {
                backend: BackendKind::Cuda,
                reason: "NVRTC not found (libnvrtc.so): kernels cannot be compiled".into(),
            });
        }
        if state.kernels.len() + entries.len() > KERNELS_MAX {
            return Err(GpuError::LimitReached {
                device: self.info.id,
                what: "kernels",
                limit: KERNELS_MAX,
            });
        }
        // SAFETY: the context is current (callers bind first) and NVRTC is
        // present (checked above).
        let module = unsafe {
            compile::compile_module(self.info.id, self.compute_capability, name, source)?
        };
        let mut functions = Vec::with_capacity(entries.len());
        for entry in entries {
            // SAFETY: `module` was just loaded in the current context.
            match unsafe { compile::function(self.info.id, module, entry) } {
                Ok(function) => functions.push(function),
                Err(e) => {
                    // SAFETY: nothing refers to the module yet.
                    let _ = unsafe { drv::module::unload(module) };
                    return Err(e);
                }
            }
        }
        state.modules.push(module);
        Ok((module, functions))
    }

    fn push_kernel(
        state: &mut State,
        function: sys::CUfunction,
        name: &str,
        standard: Option<Kernel>,
    ) -> KernelHandle {
        let handle = KernelHandle(state.kernels.len() as u32);
        state.kernels.push(LoadedKernel { function, name: name.to_string(), standard });
        handle
    }

    /// Checks a launch's shape against the device's limits.
    fn check_config(&self, name: &str, config: &LaunchConfig) -> Result<(), GpuError> {
        let per_block: u64 = config.block.iter().map(|&b| u64::from(b)).product();
        if per_block == 0 || config.grid.contains(&0) {
            return Err(GpuError::invalid(
                self.info.id,
                format!("{name}: empty launch shape {config:?}"),
            ));
        }
        if per_block > u64::from(self.info.max_block_threads) {
            return Err(GpuError::invalid(
                self.info.id,
                format!(
                    "{name}: {per_block} threads per block exceed the device's {}",
                    self.info.max_block_threads
                ),
            ));
        }
        Ok(())
    }

    fn submit_gemm(&self, stream: Stream, gemm: &Gemm) -> Result<(), GpuError> {
        let state = self.lock();
        let Some(handle) = state.blas else {
            drop(state);
            let kernel = self.load_kernel(Kernel::Gemm)?;
            return self.launch(stream, kernel, gemm_config(gemm), &gemm_args(self, gemm)?);
        };
        let raw_stream = self.stream(&state, stream)?;
        let a = self.span(&state, gemm.a, 0, gemm.m * gemm.k * 4)?;
        let b = self.span(&state, gemm.b, 0, gemm.k * gemm.n * 4)?;
        let c = self.span(&state, gemm.c, 0, gemm.m * gemm.n * 4)?;
        let dim = |extent: usize, what: &str| {
            i32::try_from(extent).map_err(|_| {
                GpuError::invalid(
                    self.info.id,
                    format!("gemm: {what} = {extent} exceeds cuBLAS's i32"),
                )
            })
        };
        let (m, n, k) = (dim(gemm.m, "m")?, dim(gemm.n, "n")?, dim(gemm.k, "k")?);
        // m, n > 0 (the caller returns early otherwise); k may be 0 (then
        // c = beta * c), but a leading dimension must be at least 1.
        let ld_a = k.max(1);
        let op = blas_sys::cublasOperation_t::CUBLAS_OP_N;
        // Row-major C = A·B is column-major Cᵀ = Bᵀ·Aᵀ: hand cuBLAS b as the
        // left operand (n×k, leading dimension n) and a as the right one
        // (k×m, leading dimension k); Cᵀ is n×m with leading dimension n.
        // SAFETY: (1) the handle is used only under the state lock; (2) the
        // stream is live in the current context; (3) a, b and c are live
        // allocations at least m·k, k·n and m·n floats long (checked by
        // `span`, and `gemm.validate` checked the products do not overflow);
        // (4) alpha and beta are host scalars that outlive the call, which
        // reads them before returning (the default host pointer mode).
        unsafe {
            blas::set_stream(handle, raw_stream.stream.cast())
                .map_err(|e| cublas_error(self.info.id, e.0, "cublasSetStream"))?;
            blas::sgemm(
                handle,
                op,
                op,
                n,
                m,
                k,
                &gemm.alpha,
                b as *const f32,
                n,
                a as *const f32,
                ld_a,
                &gemm.beta,
                c as *mut f32,
                n,
            )
            .map_err(|e| cublas_error(self.info.id, e.0, "cublasSgemm"))
        }
    }
}

impl Device for CudaDevice {
    fn info(&self) -> &DeviceInfo {
        &self.info
    }

    fn memory(&self) -> Result<MemoryInfo, GpuError> {
        let driver = self.driver_memory()?;
        let cached = self.lock().cache.cached_bytes() as u64;
        Ok(MemoryInfo { free: (driver.free + cached).min(driver.total), total: driver.total })
    }

    fn alloc(&self, bytes: usize) -> Result<Buffer, GpuError> {
        let class = size_class(bytes).ok_or(GpuError::OutOfMemory {
            device: self.info.id,
            requested: bytes,
            free: 0,
        })?;
        self.bind()?;
        let mut state = self.lock();
        if state.buffers.len() >= BUFFERS_MAX {
            return Err(GpuError::LimitReached {
                device: self.info.id,
                what: "buffers",
                limit: BUFFERS_MAX,
            });
        }
        let ptr = self.take_memory(&mut state, bytes, class)?;
        let id = state.next_buffer;
        state.next_buffer += 1;
        state.buffers.insert(id, Allocation { ptr, bytes, class });
        Ok(Buffer { id, bytes })
    }

    fn free(&self, buffer: Buffer) -> Result<(), GpuError> {
        self.bind()?;
        let mut state = self.lock();
        self.allocation(&state, buffer)?;
        let Some(allocation) = state.buffers.remove(&buffer.id) else {
            unreachable!("checked just above");
        };
        let fences = match self.fences(&mut state) {
            Ok(fences) => fences,
            Err(error) => {
                // SAFETY: as below; cuMemFree itself waits for pending work.
                let _ = unsafe { drv::free_sync(allocation.ptr) };
                return Err(error);
            }
        };
        let block = CachedBlock { ptr: allocation.ptr, fences };
        if let Err(block) = state.cache.put(allocation.class, block) {
            for fence in block.fences {
                Self::recycle_event(&mut state, fence);
            }
            // SAFETY: the block came from cuMemAlloc and just left the buffer
            // table; cuMemFree waits for work still using it.
            unsafe { drv::free_sync(block.ptr) }.map_err(self.fail("cuMemFree"))?;
        }
        Ok(())
    }

    fn write(
        &self,
        stream: Stream,
        dst: Buffer,
        offset: usize,
        src: &[u8],
    ) -> Result<(), GpuError> {
        self.bind()?;
        let state = self.lock();
        let raw_stream = self.stream(&state, stream)?;
        let address = self.span(&state, dst, offset, src.len())?;
        if src.is_empty() {
            return Ok(());
        }
        // SAFETY: the destination span lies in a live allocation (checked),
        // the stream is live, and `src` is pageable memory, which the driver
        // copies to a staging buffer before returning, so `src` may be
        // reused as soon as this returns (CUDA's "API synchronization
        // behavior": pageable host-to-device copies).
        unsafe { drv::memcpy_htod_async(address, src, raw_stream.stream) }
            .map_err(self.fail("cuMemcpyHtoDAsync"))
    }

    fn read(
        &self,
        stream: Stream,
        src: Buffer,
        offset: usize,
        dst: &mut [u8],
    ) -> Result<(), GpuError> {
        self.bind()?;
        let raw_stream = {
            let state = self.lock();
            let raw_stream = self.stream(&state, stream)?;
            let address = self.span(&state, src, offset, dst.len())?;
            if dst.is_empty() {
                return Ok(());
            }
            // SAFETY: the span lies in a live allocation (checked) and the
            // stream is live; `dst` stays borrowed until the stream has been
            // synchronized below, so the copy never outlives it.
            unsafe { drv::memcpy_dtoh_async(dst, address, raw_stream.stream) }
                .map_err(self.fail("cuMemcpyDtoHAsync"))?;
            raw_stream
        };
        // SAFETY: the stream is held alive by the Arc.
        unsafe { drv::stream::synchronize(raw_stream.stream) }
            .map_err(self.fail("cuStreamSynchronize (read)"))
    }

    fn copy(&self, stream: Stream, src: Buffer, dst: Buffer, bytes: usize) -> Result<(), GpuError> {
        self.bind()?;
        let state = self.lock();
        let raw_stream = self.stream(&state, stream)?;
        let from = self.span(&state, src, 0, bytes)?;
        let to = self.span(&state, dst, 0, bytes)?;
        if bytes == 0 {
            return Ok(());
        }
        // SAFETY: both spans lie in live allocations (checked), the stream
        // is live, and the copy is ordered after the stream's earlier work.
        unsafe { drv::memcpy_dtod_async(to, from, bytes, raw_stream.stream) }
            .map_err(self.fail("cuMemcpyDtoDAsync"))
    }

    fn create_stream(&self) -> Result<Stream, GpuError> {
        self.bind()?;
        let mut state = self.lock();
        if state.streams.len() >= STREAMS_MAX {
            return Err(GpuError::LimitReached {
                device: self.info.id,
                what: "streams",
                limit: STREAMS_MAX,
            });
        }
        let raw = match state.spare_streams.pop() {
            Some(raw) => raw,
            None => {
                let stream = drv::stream::create(drv::stream::StreamKind::NonBlocking)
                    .map_err(self.fail("cuStreamCreate"))?;
                RawStream { stream, context: self.context }
            }
        };
        let id = state.next_stream;
        state.next_stream = state.next_stream.wrapping_add(1).max(1);
        state.streams.insert(id, Arc::new(raw));
        Ok(Stream(id))
    }

    fn destroy_stream(&self, stream: Stream) -> Result<(), GpuError> {
        self.bind()?;
        let raw = {
            let mut state = self.lock();
            self.stream(&state, stream)?;
            state.streams.remove(&stream.0).expect("checked just above")
        };
        // SAFETY: the stream is held alive by the Arc.
        let synced = unsafe { drv::stream::synchronize(raw.stream) }
            .map_err(self.fail("cuStreamSynchronize"));
        if let Ok(raw) = Arc::try_unwrap(raw) {
            let mut state = self.lock();
            if synced.is_ok() && state.spare_streams.len() < SPARE_STREAMS_MAX {
                state.spare_streams.push(raw);
            }
        }
        synced
    }

    fn synchronize(&self, stream: Stream) -> Result<(), GpuError> {
        self.bind()?;
        let raw = self.stream(&self.lock(), stream)?;
        // SAFETY: the stream is held alive by the Arc.
        unsafe { drv::stream::synchronize(raw.stream) }.map_err(self.fail("cuStreamSynchronize"))
    }

    fn record_event(&self, stream: Stream) -> Result<Event, GpuError> {
        self.bind()?;
        let mut state = self.lock();
        if state.events.len() >= EVENTS_MAX {
            return Err(GpuError::LimitReached {
                device: self.info.id,
                what: "events",
                limit: EVENTS_MAX,
            });
        }
        let raw_stream = self.stream(&state, stream)?;
        let event = self.new_event(&mut state)?;
        // SAFETY: both handles are live in the current context.
        if let Err(e) = unsafe { drv::event::record(event.event, raw_stream.stream) } {
            Self::recycle_event(&mut state, event);
            return Err(driver_error(self.info.id, e.0, "cuEventRecord"));
        }
        let id = state.next_event;
        state.next_event += 1;
        state.events.insert(id, Arc::new(event));
        Ok(Event(id))
    }

    fn wait_event(&self, stream: Stream, event: Event) -> Result<(), GpuError> {
        self.bind()?;
        let state = self.lock();
        let raw_stream = self.stream(&state, stream)?;
        let raw_event = self.event(&state, event)?;
        // SAFETY: both handles are live in the current context.
        unsafe {
            drv::stream::wait_event(
                raw_stream.stream,
                raw_event.event,
                sys::CUevent_wait_flags::CU_EVENT_WAIT_DEFAULT,
            )
        }
        .map_err(self.fail("cuStreamWaitEvent"))
    }

    fn event_synchronize(&self, event: Event) -> Result<(), GpuError> {
        self.bind()?;
        let raw = self.event(&self.lock(), event)?;
        // SAFETY: the event is held alive by the Arc.
        unsafe { drv::event::synchronize(raw.event) }.map_err(self.fail("cuEventSynchronize"))
    }

    fn destroy_event(&self, event: Event) -> Result<(), GpuError> {
        self.bind()?;
        let mut state = self.lock();
        self.event(&state, event)?;
        let raw = state.events.remove(&event.0).expect("checked just above");
        if let Ok(raw) = Arc::try_unwrap(raw) {
            Self::recycle_event(&mut state, raw);
        }
        Ok(())
    }

    fn load_kernel(&self, kernel: Kernel) -> Result<KernelHandle, GpuError> {
        self.bind()?;
        let mut state = self.lock();
        if let Some(&handle) = state.standard_handles.get(&kernel) {
            return Ok(handle);
        }
        if state.standard_module.is_none() {
            let names: Vec<&str> = Kernel::ALL.iter().map(|k| k.name()).collect();
            let (module, functions) =
                self.load_source(&mut state, "zbmd_standard", STANDARD_SOURCE, &names)?;
            state.standard_module = Some(module);
            for (standard, function) in Kernel::ALL.into_iter().zip(functions) {
                let handle =
                    Self::push_kernel(&mut state, function, standard.name(), Some(standard));
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
        let KernelSource::Cuda { entry, source } = source else {
            return Err(GpuError::invalid(
                self.info.id,
                format!(
                    "kernel `{}` is not CUDA C: the CUDA backend compiles only KernelSource::Cuda",
                    source.entry()
                ),
            ));
        };
        self.bind()?;
        let mut state = self.lock();
        let (_, functions) = self.load_source(&mut state, entry, source, &[entry.as_str()])?;
        Ok(Self::push_kernel(&mut state, functions[0], entry, None))
    }

    fn launch(
        &self,
        stream: Stream,
        kernel: KernelHandle,
        config: LaunchConfig,
        args: &[Arg],
    ) -> Result<(), GpuError> {
        self.bind()?;
        let state = self.lock();
        let loaded = self.kernel(&state, kernel)?;
        let name = loaded.name.as_str();
        self.check_config(name, &config)?;
        if args.len() > KERNEL_ARGS_MAX {
            return Err(GpuError::LimitReached {
                device: self.info.id,
                what: "kernel arguments",
                limit: KERNEL_ARGS_MAX,
            });
        }
        if let Some(standard) = loaded.standard {
            let (buffers, scalars) = standard.arity();
            let kinds_match = args.len() == buffers + scalars
                && args
                    .iter()
                    .enumerate()
                    .all(|(i, arg)| matches!(arg, Arg::Buffer(_)) == (i < buffers));
            if !kinds_match {
                return Err(GpuError::invalid(
                    self.info.id,
                    format!("{name} takes {buffers} buffers then {scalars} scalars, got {args:?}"),
                ));
            }
        }
        let raw_stream = self.stream(&state, stream)?;
        // Every parameter gets a zeroed slot of ARG_SLOT_WORDS words, and all
        // KERNEL_ARGS_MAX slots are passed (see KERNEL_ARGS_MAX).
        let mut slots = [[0u64; ARG_SLOT_WORDS]; KERNEL_ARGS_MAX];
        for (slot, arg) in slots.iter_mut().zip(args) {
            match *arg {
                Arg::Buffer(buffer) => slot[0] = self.allocation(&state, buffer)?.ptr,
                Arg::U32(value) => slot[0] = u64::from(value),
                Arg::F32(value) => slot[0] = u64::from(value.to_bits()),
            }
        }
        let mut params: Vec<*mut c_void> =
            slots.iter_mut().map(|slot| slot.as_mut_ptr().cast()).collect();
        let grid = (config.grid[0], config.grid[1], config.grid[2]);
        let block = (config.block[0], config.block[1], config.block[2]);
        // SAFETY: (1) the function belongs to a module loaded in this context
        // and never unloaded while the device lives; (2) the stream is live;
        // (3) each parameter pointer addresses a 64-byte slot holding the
        // argument in its low bytes (little-endian, so a u32 or f32 parameter
        // reads the value), and the driver copies the parameters before
        // returning, so `slots` may drop after; (4) buffer arguments are live
        // allocations, and their sizes were checked against the standard
        // kernels' needs by `kernel::check_args` when launched through
        // `Kernels` (a raw launch's sizes are the caller's to get right: a
        // device fault is reported as an error, not host memory corruption).
        unsafe {
            drv::launch_kernel(loaded.function, grid, block, 0, raw_stream.stream, &mut params)
        }
        .map_err(|e| driver_error(self.info.id, e.0, name))
    }

    fn gemm(&self, stream: Stream, gemm: &Gemm) -> Result<(), GpuError> {
        gemm.validate(self.info.id)?;
        if gemm.m == 0 || gemm.n == 0 {
            return Ok(());
        }
        self.bind()?;
        self.submit_gemm(stream, gemm)
    }

    fn health(&self) -> Result<HealthReport, GpuError> {
        self.bind()?;
        // SAFETY: `cu_device` came from cuDeviceGet when the device opened.
        let ecc = unsafe {
            drv::device::get_attribute(
                self.cu_device,
                sys::CUdevice_attribute::CU_DEVICE_ATTRIBUTE_ECC_ENABLED,
            )
        };
        match drv::mem_get_info() {
            Ok((free, total)) => Ok(HealthReport {
                responsive: true,
                ecc_corrected: None,
                ecc_uncorrected: None,
                detail: format!(
                    "{free} of {total} bytes free; ECC {}; error counts need NVML",
                    match ecc {
                        Ok(0) => "off",
                        Ok(_) => "on",
                        Err(_) => "unknown",
                    }
                ),
            }),
            Err(e) => {
                let error = driver_error(self.info.id, e.0, "cuMemGetInfo");
                Ok(HealthReport {
                    responsive: false,
                    detail: error.to_string(),
                    ..HealthReport::default()
                })
            }
        }
    }
}

impl Drop for CudaDevice {
    fn drop(&mut self) {
        // Best effort throughout: a lost device fails every call, and the
        // process must still be able to drop it.
        let _ = self.bind();
        let _ = drv::ctx::synchronize();
        let state = self.state.get_mut().unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(handle) = state.blas.take() {
            // SAFETY: the handle was created in this context and is not used
            // again.
            let _ = unsafe { blas::destroy_handle(handle) };
        }
        for (_, allocation) in state.buffers.drain() {
            // SAFETY: each live allocation came from cuMemAlloc and is freed
            // once, here.
            let _ = unsafe { drv::free_sync(allocation.ptr) };
        }
        for block in state.cache.drain() {
            // SAFETY: as above, for cached blocks (out of the buffer table).
            let _ = unsafe { drv::free_sync(block.ptr) };
        }
        // No method is running (`&mut self`), so these Arcs are the only
        // holders: dropping them destroys the streams and events.
        state.streams.clear();
        state.spare_streams.clear();
        state.events.clear();
        state.spare_events.clear();
        for module in state.modules.drain(..) {
            // SAFETY: loaded in this context; no function of it runs any more
            // (the context was synchronized) or is launched again.
            let _ = unsafe { drv::module::unload(module) };
        }
        // SAFETY: balances the retain in `open`; nothing of the context is
        // used after this.
        let _ = unsafe { drv::primary_ctx::release(self.cu_device) };
    }
}
