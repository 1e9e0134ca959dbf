//! What the CUDA and ROCm backends share: one [`NativeDevice`] that keeps
//! every table a native GPU API needs (buffers, streams, events, kernels,
//! the memory cache), checks every handle, bound and launch shape, and
//! implements [`Device`](crate::device::Device) once, over a small
//! [`NativeApi`] trait that each vendor implements with its own calls only.
//!
//! ```text
//!   dyn Device ──▶ NativeDevice<A> ── tables, bounds, checks (one mutex)
//!                        │
//!                        └─▶ A: NativeApi ── cuda::CudaDriver (driver API, NVRTC, cuBLAS)
//!                                         └ rocm::HipRuntime  (HIP runtime, hiprtc)
//! ```
//!
//! The split follows the two vendor APIs, which mirror each other call for
//! call (`cuStreamCreate`/`hipStreamCreateWithFlags`, `cuModuleLoadData`/
//! `hipModuleLoadData`, ...): the vendor layer turns one call into one
//! `Result` with the vendor's error sorted into a [`GpuError`], and knows
//! nothing of handles, tables or limits; this module knows nothing of a
//! vendor.
//!
//! - **Buffers** are handles (`Buffer { id, bytes }`) into a table of device
//!   addresses; ids are never reused, so a stale handle is an
//!   `InvalidArgument`, not someone else's memory. Freed memory goes to a
//!   size-class [`cache`] when the backend keeps one (CUDA: 1/8 of device
//!   memory; ROCm: none, HIP's allocator pools on its own). So that a cached
//!   block is not reused while work submitted before its `free` still
//!   touches it, `free` records an event on every live stream and the
//!   block's next user waits for those events. An allocation the driver
//!   refuses empties the cache and retries once before reporting
//!   `OutOfMemory`.
//! - **Streams and events** are non-blocking streams and timing-free events,
//!   in bounded tables with small free lists of spares (creating either
//!   costs a driver round trip).
//! - **Kernels.** The standard kernels are compiled from the backend's
//!   standard source once per device, on first use; user kernels through
//!   `Device::compile`. Every launch passes [`KERNEL_ARGS_MAX`] zeroed
//!   parameter slots, so a kernel that declares more parameters than it was
//!   given reads zeros, not host memory past the end.
//!
//! Locking: one mutex guards the tables and is held while work is
//! submitted (submission does not wait for the device, except where the
//! vendor's write must wait: [`NativeApi::WRITE_WAITS`]). Calls that wait
//! for the device (`synchronize`, `read`, `event_synchronize`,
//! `destroy_stream`) wait outside it, holding their stream or event by
//! `Arc` so a concurrent destroy cannot free it under them.

pub mod cache;
mod device;
mod launch;
mod memory;
mod owned;
mod state;
#[cfg(test)]
mod tests;

use std::ffi::c_void;

pub use self::cache::CacheStats;
pub use self::device::NativeDevice;
pub(crate) use self::device::{device_id, open_all};
use crate::error::GpuError;
use crate::handle::{Gemm, LaunchConfig};
use crate::info::{HealthReport, MemoryInfo};
use crate::kernel::KernelSource;

/// Live buffers per device: far more than a model's tensors, and a bound
/// that catches a leak before the handle table grows without end.
pub const BUFFERS_MAX: usize = 1 << 20;
/// Live streams per device: a kernel actor holds one or two; the hardware
/// runs 128 concurrent kernels on Hopper, so more streams buy nothing.
pub const STREAMS_MAX: usize = 64;
/// Destroyed streams kept for the next `create_stream` instead of being
/// destroyed (stream creation costs a driver round trip).
const SPARE_STREAMS_MAX: usize = 8;
/// Live events per device (a training step records a handful per stream).
pub const EVENTS_MAX: usize = 1 << 16;
/// Destroyed events kept for reuse (also the source of `free`'s fences).
const SPARE_EVENTS_MAX: usize = 256;
/// Loaded kernels per device: the nine standard ones plus user kernels.
pub const KERNELS_MAX: usize = 4096;
/// Arguments one launch may pass. Every launch hands the driver this many
/// parameter slots (unused ones zero), so a user kernel that declares more
/// parameters than it was given reads zeros, not host memory past the end.
pub const KERNEL_ARGS_MAX: usize = 32;
/// Words behind each parameter slot (64 bytes): the widest by-value
/// parameter a user kernel may declare without reading past its slot.
const ARG_SLOT_WORDS: usize = 8;

/// A device address, as both vendors' drivers give it: an integer that is
/// never dereferenced on the host.
pub type DevicePtr = u64;

/// The parameter array one launch hands the driver: [`KERNEL_ARGS_MAX`]
/// pointers, each to a zeroed 64-byte slot holding one argument in its low
/// bytes (little-endian, so a `u32` or `f32` parameter reads the value).
pub type LaunchParams = [*mut c_void; KERNEL_ARGS_MAX];

/// Test helpers the vendors' error tables share.
#[cfg(test)]
pub(crate) mod testing {
    use std::fmt::Debug;

    use crate::error::{ErrorClass, GpuError};
    use crate::info::DeviceId;

    /// Asserts that `to_error` sorts every vendor code listed under a class
    /// in `cases` into that class, on `device`.
    pub(crate) fn assert_classes<C: Copy + Debug>(
        device: DeviceId,
        to_error: impl Fn(C) -> GpuError,
        cases: &[(ErrorClass, &[C])],
    ) {
        for &(class, codes) in cases {
            for &code in codes {
                let error = to_error(code);
                assert_eq!(error.class(), class, "{code:?} -> {error}");
                assert_eq!(error.device(), Some(device), "{code:?} -> {error}");
            }
        }
    }
}

mod sealed {
    /// Only this crate's vendors implement [`super::NativeApi`].
    pub trait Sealed {}
}
pub(crate) use sealed::Sealed;

/// One copy in stream order, as [`NativeApi::copy`] submits it.
pub enum Transfer<'a> {
    /// Host memory `src` to device address `dst`.
    ToDevice {
        /// Where on the device.
        dst: DevicePtr,
        /// What to copy.
        src: &'a [u8],
    },
    /// Device address `src` into host memory `dst`.
    ToHost {
        /// Where on the host.
        dst: &'a mut [u8],
        /// Where on the device.
        src: DevicePtr,
    },
    /// `bytes` from device address `src` to `dst`.
    OnDevice {
        /// Where to.
        dst: DevicePtr,
        /// Where from.
        src: DevicePtr,
        /// How many bytes.
        bytes: usize,
    },
}

/// One kernel launch, as [`NativeApi::launch`] submits it.
pub struct Launch<'a, A: NativeApi> {
    /// The kernel's entry point.
    pub function: A::Function,
    /// The stream it runs on.
    pub stream: A::Stream,
    /// Its shape, checked against the device's limits.
    pub config: &'a LaunchConfig,
    /// Its parameters, laid out as [`LaunchParams`] says.
    pub params: &'a mut LaunchParams,
    /// The kernel's name, to label a failure.
    pub name: &'a str,
}

/// A vendor BLAS library bound to one device (cuBLAS), used for
/// `Device::gemm` when the device has one. Its handle need not be
/// thread-safe: [`NativeDevice`] keeps it behind its mutex and calls it
/// through `&mut`.
pub trait Blas<S>: Send {
    /// Computes `gemm` on `stream`; `operands` are the device addresses of
    /// `a`, `b` and `c`.
    ///
    /// # Safety
    ///
    /// 1. The device is bound on this thread; 2. `stream` is live; 3. the
    ///    operands are live allocations at least m·k, k·n and m·n floats
    ///    long, and `gemm.validate` passed with m, n > 0.
    unsafe fn sgemm(
        &mut self,
        stream: S,
        gemm: &Gemm,
        operands: [DevicePtr; 3],
    ) -> Result<(), GpuError>;
}

/// One native GPU API, as [`NativeDevice`] uses it: the vendor-specific
/// calls and nothing else. Implemented by `cuda::CudaDriver` and
/// `rocm::HipRuntime` only (sealed).
///
/// Each method is one driver call (or a short fixed sequence: compile and
/// load), returns the vendor's failure sorted into a [`GpuError`] naming
/// the call, and expects the device to be bound on the calling thread
/// ([`bind`](NativeApi::bind)) unless it says otherwise. Handles and
/// addresses are checked by [`NativeDevice`] before they reach a method
/// here: the `unsafe` methods' `# Safety` sections say what it checked.
///
/// # Safety
///
/// An implementation promises that every handle it hands out (streams,
/// events, modules, functions, device addresses) may be used, and
/// destroyed, from any thread once [`bind`](NativeApi::bind) has run on
/// that thread, so [`NativeDevice`] may move them between threads and
/// share them behind its mutex.
pub unsafe trait NativeApi: Sealed + Send + Sync + Sized + 'static {
    /// A raw stream.
    type Stream: Copy;
    /// A raw event.
    type Event: Copy;
    /// A loaded code module.
    type Module: Copy;
    /// A kernel entry point in a loaded module.
    type Function: Copy;

    /// Makes the device current on the calling thread (cheap; every
    /// [`NativeDevice`] method calls it first).
    fn bind(&self) -> Result<(), GpuError>;
    /// Memory as the driver sees it (cached blocks count as used).
    fn memory(&self) -> Result<MemoryInfo, GpuError>;
    /// What the driver says of the device's health now (binds first).
    fn health(&self) -> Result<HealthReport, GpuError>;

    /// Allocates `bytes` of device memory; `Ok(None)` when the driver is
    /// out of memory (the caller may empty its cache and retry).
    fn malloc(&self, bytes: usize) -> Result<Option<DevicePtr>, GpuError>;
    /// Frees device memory; the driver waits for work still using it.
    ///
    /// # Safety
    ///
    /// `ptr` came from [`malloc`](NativeApi::malloc) and is freed once.
    unsafe fn free(&self, ptr: DevicePtr) -> Result<(), GpuError>;
    /// Whether a host-to-device copy must be waited for before `write`
    /// returns: HIP does not promise to have consumed pageable host memory
    /// when its async copy returns; CUDA stages pageable memory first.
    const WRITE_WAITS: bool;
    /// Submits `transfer` to `stream`. A copy to the host has finished only
    /// once the stream is synchronized; so has a copy from the host when
    /// [`WRITE_WAITS`](NativeApi::WRITE_WAITS).
    ///
    /// # Safety
    ///
    /// Every device span lies in a live allocation; `stream` is live; the
    /// caller keeps the host memory borrowed until it has synchronized
    /// `stream` (a copy to the host, or any copy when `WRITE_WAITS`).
    unsafe fn copy(&self, stream: Self::Stream, transfer: Transfer<'_>) -> Result<(), GpuError>;

    /// Creates a non-blocking stream.
    fn create_stream(&self) -> Result<Self::Stream, GpuError>;
    /// Destroys a stream, binding the device itself first (it runs from
    /// `Drop`, on any thread); best effort.
    ///
    /// # Safety
    ///
    /// `stream` is live, destroyed once, and used by nobody afterwards.
    unsafe fn destroy_stream(&self, stream: Self::Stream);
    /// Waits for everything submitted to `stream`.
    ///
    /// # Safety
    ///
    /// `stream` is live for the call.
    unsafe fn synchronize(&self, stream: Self::Stream) -> Result<(), GpuError>;
    /// Waits for everything submitted to the device (best effort, at drop).
    fn synchronize_device(&self);

    /// Creates a timing-free event.
    fn create_event(&self) -> Result<Self::Event, GpuError>;
    /// Destroys an event, binding the device itself first; best effort.
    ///
    /// # Safety
    ///
    /// `event` is live, destroyed once, and used by nobody afterwards.
    unsafe fn destroy_event(&self, event: Self::Event);
    /// Records `event` at the current end of `stream`'s work.
    ///
    /// # Safety
    ///
    /// Both handles are live.
    unsafe fn record_event(&self, event: Self::Event, stream: Self::Stream)
    -> Result<(), GpuError>;
    /// Makes `stream`'s later work wait for `event`.
    ///
    /// # Safety
    ///
    /// Both handles are live.
    unsafe fn wait_event(&self, stream: Self::Stream, event: Self::Event) -> Result<(), GpuError>;
    /// Blocks until `event` has happened.
    ///
    /// # Safety
    ///
    /// `event` is live for the call.
    unsafe fn event_synchronize(&self, event: Self::Event) -> Result<(), GpuError>;

    /// The standard kernels' source, in this API's language.
    const STANDARD_SOURCE: &'static str;
    /// The language of user kernels (`"CUDA C"`) and the
    /// [`KernelSource`] variant that carries it (`"KernelSource::Cuda"`).
    const USER_LANGUAGE: (&'static str, &'static str);

    /// The entry and text of a user kernel in this API's language; `None`
    /// for another backend's.
    fn user_source(source: &KernelSource) -> Option<(&str, &str)>;
    /// Compiles `source` (named `name` in logs) and loads it on the device.
    fn load_module(&self, name: &str, source: &str) -> Result<Self::Module, GpuError>;
    /// Looks up the `extern "C"` kernel `entry`; a missing one is a
    /// [`GpuError::Compile`].
    ///
    /// # Safety
    ///
    /// `module` is loaded and not unloaded.
    unsafe fn function(
        &self,
        module: Self::Module,
        entry: &str,
    ) -> Result<Self::Function, GpuError>;
    /// Unloads a module; best effort.
    ///
    /// # Safety
    ///
    /// No function of `module` runs or is launched again.
    unsafe fn unload_module(&self, module: Self::Module);
    /// Submits a kernel.
    ///
    /// # Safety
    ///
    /// 1. The function belongs to a loaded module; 2. the stream is live;
    /// 3. the parameters are laid out as [`LaunchParams`] says, and the
    ///    driver copies them before returning; 4. buffer arguments are live
    ///    allocations; 5. the shape was checked against the device's limits.
    unsafe fn launch(&self, launch: Launch<'_, Self>) -> Result<(), GpuError>;
}
