//! The one interface every backend implements, and the handles it deals in.
//!
//! A [`Device`] is one accelerator (or the CPU) as a backend sees it. Its
//! buffers, streams, events and kernels are small `Copy` handles that name
//! an entry in the device's own tables; a handle used on another device, or
//! after it was freed, is an [`InvalidArgument`](GpuError::InvalidArgument),
//! never undefined behaviour. Every table has a bound
//! ([`LimitReached`](GpuError::LimitReached) when full).
//!
//! Ordering follows CUDA's stream model: work submitted to one stream runs
//! in submission order; work on different streams may overlap unless an
//! [`Event`] orders it. Host memory passed to [`Device::write`] may be reused
//! as soon as the call returns, and [`Device::read`] returns once the data is
//! in the host slice (both wait for the stream's earlier work).

use crate::error::GpuError;
use crate::kernel::{Kernel, KernelSource};

pub use crate::handle::{Arg, Buffer, Event, Gemm, KernelHandle, LaunchConfig, Stream};
pub use crate::info::{BackendKind, DeviceId, DeviceInfo, HealthReport, MemoryInfo};

/// One device, as every backend presents it.
///
/// Implementations are `Send + Sync`: a kernel actor owns its streams, but
/// the GPU supervisor queries memory and health from its own shard.
pub trait Device: Send + Sync + 'static {
    /// What the device is.
    fn info(&self) -> &DeviceInfo;

    /// The device's id (shorthand for `info().id`).
    fn id(&self) -> DeviceId {
        self.info().id
    }

    /// Memory free and in all, now.
    fn memory(&self) -> Result<MemoryInfo, GpuError>;

    /// Allocates `bytes` of device memory (contents unspecified).
    /// [`OutOfMemory`](GpuError::OutOfMemory) when it does not fit.
    fn alloc(&self, bytes: usize) -> Result<Buffer, GpuError>;

    /// Frees a buffer. Work already submitted that uses it finishes first.
    fn free(&self, buffer: Buffer) -> Result<(), GpuError>;

    /// Copies `src` to `dst` at byte `offset`, after the stream's earlier
    /// work; `src` may be reused when this returns.
    fn write(&self, stream: Stream, dst: Buffer, offset: usize, src: &[u8])
    -> Result<(), GpuError>;

    /// Copies `dst.len()` bytes from `src` at byte `offset` into `dst`, after
    /// the stream's earlier work; returns once `dst` holds them.
    fn read(
        &self,
        stream: Stream,
        src: Buffer,
        offset: usize,
        dst: &mut [u8],
    ) -> Result<(), GpuError>;

    /// Copies `bytes` bytes from `src` to `dst` on the device, in stream order.
    fn copy(&self, stream: Stream, src: Buffer, dst: Buffer, bytes: usize) -> Result<(), GpuError>;

    /// Opens a new stream.
    fn create_stream(&self) -> Result<Stream, GpuError>;

    /// Waits for a stream's work, then closes it.
    fn destroy_stream(&self, stream: Stream) -> Result<(), GpuError>;

    /// Waits until everything submitted to `stream` has finished, and reports
    /// the first error any of it hit.
    fn synchronize(&self, stream: Stream) -> Result<(), GpuError>;

    /// Marks the current end of `stream`'s work.
    fn record_event(&self, stream: Stream) -> Result<Event, GpuError>;

    /// Makes `stream`'s later work wait for `event`.
    fn wait_event(&self, stream: Stream, event: Event) -> Result<(), GpuError>;

    /// Blocks the caller until `event` has happened.
    fn event_synchronize(&self, event: Event) -> Result<(), GpuError>;

    /// Releases an event.
    fn destroy_event(&self, event: Event) -> Result<(), GpuError>;

    /// Loads one of the standard kernels, compiled from this backend's own
    /// source for it (CUDA C through NVRTC, WGSL through naga, HIP through
    /// hiprtc, Rust on the CPU). Loading the same kernel twice may return
    /// the same handle.
    fn load_kernel(&self, kernel: Kernel) -> Result<KernelHandle, GpuError>;

    /// Compiles and loads a kernel from source. A source in another
    /// backend's language is an [`InvalidArgument`](GpuError::InvalidArgument).
    fn compile(&self, source: &KernelSource) -> Result<KernelHandle, GpuError>;

    /// Submits a kernel to `stream`. Arguments follow the kernel's list
    /// (buffers first, then scalars).
    fn launch(
        &self,
        stream: Stream,
        kernel: KernelHandle,
        config: LaunchConfig,
        args: &[Arg],
    ) -> Result<(), GpuError>;

    /// Submits a matrix product to `stream`: the vendor library where there
    /// is one (cuBLAS, the `gemm` crate on the CPU), else the standard
    /// [`Kernel::Gemm`].
    fn gemm(&self, stream: Stream, gemm: &Gemm) -> Result<(), GpuError>;

    /// What the driver says of the device's health now.
    fn health(&self) -> Result<HealthReport, GpuError>;
}
