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

use std::fmt;

use crate::error::GpuError;
use crate::kernel::{Kernel, KernelSource};

/// The backends zbmd-gpu knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum BackendKind {
    /// NVIDIA GPUs through the CUDA driver API (feature `cuda`).
    Cuda,
    /// AMD GPUs through HIP (feature `rocm`).
    Rocm,
    /// Any Vulkan 1.2+ device with a compute queue (feature `vulkan`).
    Vulkan,
    /// The host's cores, always present.
    Cpu,
}

impl BackendKind {
    /// Every backend, in the order detection lists them (CPU last).
    pub const ALL: [BackendKind; 4] =
        [BackendKind::Cuda, BackendKind::Rocm, BackendKind::Vulkan, BackendKind::Cpu];

    /// The name used in `ZBMD_GPU_BACKEND`, logs and metrics.
    pub fn name(self) -> &'static str {
        match self {
            BackendKind::Cuda => "cuda",
            BackendKind::Rocm => "rocm",
            BackendKind::Vulkan => "vulkan",
            BackendKind::Cpu => "cpu",
        }
    }

    /// Parses a name as `ZBMD_GPU_BACKEND` spells it (case-insensitive).
    pub fn parse(name: &str) -> Option<BackendKind> {
        BackendKind::ALL.into_iter().find(|kind| kind.name().eq_ignore_ascii_case(name.trim()))
    }
}

impl fmt::Display for BackendKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Names one device: its backend and its index among that backend's devices.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DeviceId {
    /// The backend.
    pub backend: BackendKind,
    /// The device's index within the backend (CUDA ordinal, Vulkan physical
    /// device index, ...). Fault-injecting wrappers keep their inner id.
    pub ordinal: u32,
}

impl DeviceId {
    /// The id of `backend`'s device number `ordinal`.
    pub const fn new(backend: BackendKind, ordinal: u32) -> Self {
        DeviceId { backend, ordinal }
    }
}

impl fmt::Display for DeviceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.backend, self.ordinal)
    }
}

/// What a device is, as fixed when it was opened.
#[derive(Debug, Clone, PartialEq)]
pub struct DeviceInfo {
    /// The device's id.
    pub id: DeviceId,
    /// The name the driver reports ("NVIDIA H100 80GB HBM3", "llvmpipe
    /// (LLVM 15.0.6, 256 bits)", "cpu: AMD EPYC ... (2 cores)").
    pub name: String,
    /// Total device memory in bytes (for the CPU: the budget it was opened with).
    pub memory_total: u64,
    /// The compute capability or its equivalent: `sm_90`, `gfx90a`,
    /// `Vulkan 1.3 (cpu)`, `x86_64 avx512f`.
    pub capability: String,
    /// Whether the device is the host's own CPU or a software rasteriser
    /// (lavapipe): placement prefers real accelerators.
    pub is_software: bool,
    /// The most threads one block (workgroup) may have.
    pub max_block_threads: u32,
}

/// Memory in use on a device now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MemoryInfo {
    /// Bytes free.
    pub free: u64,
    /// Bytes in all.
    pub total: u64,
}

/// What the driver says of the device's health (the GPU supervisor adds
/// the error counts it saw itself; see [`crate::health`]).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct HealthReport {
    /// Whether the device answers at all.
    pub responsive: bool,
    /// Corrected memory errors reported by the driver, when it reports them.
    pub ecc_corrected: Option<u64>,
    /// Uncorrected memory errors reported by the driver, when it reports them.
    pub ecc_uncorrected: Option<u64>,
    /// Anything else the backend wants to say.
    pub detail: String,
}

/// A device buffer: `bytes` bytes of device memory, named by a handle.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Buffer {
    /// The device's handle for it.
    pub id: u64,
    /// Its size in bytes.
    pub bytes: usize,
}

impl Buffer {
    /// How many `f32`s it holds.
    pub fn len_f32(&self) -> usize {
        self.bytes / 4
    }
}

/// An in-order queue of work on one device.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Stream(pub u32);

/// A point in a stream's work that other streams (or the host) can wait for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Event(pub u64);

/// A loaded (compiled) kernel on one device.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct KernelHandle(pub u32);

/// A launch's shape: `grid` blocks of `block` threads, CUDA's convention
/// (x fastest). Vulkan maps blocks to workgroups; the CPU runs blocks in
/// turn.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct LaunchConfig {
    /// Blocks in x, y, z.
    pub grid: [u32; 3],
    /// Threads per block in x, y, z.
    pub block: [u32; 3],
}

impl LaunchConfig {
    /// One dimension: enough blocks of `block` threads to cover `n`.
    pub fn linear(n: usize, block: u32) -> Self {
        let blocks = n.div_ceil(block as usize).max(1);
        LaunchConfig { grid: [blocks as u32, 1, 1], block: [block, 1, 1] }
    }

    /// Total threads launched.
    pub fn threads(&self) -> u64 {
        let blocks: u64 = self.grid.iter().map(|&g| u64::from(g)).product();
        let per_block: u64 = self.block.iter().map(|&b| u64::from(b)).product();
        blocks * per_block
    }
}

/// One kernel argument. Buffers come first in a kernel's argument list
/// and scalars after (see [`Kernel`] for each standard kernel's list);
/// Vulkan binds buffers to bindings 0, 1, ... and packs the scalars into
/// push constants in order, 4 bytes each.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Arg {
    /// A device buffer.
    Buffer(Buffer),
    /// A 32-bit unsigned integer.
    U32(u32),
    /// A 32-bit float.
    F32(f32),
}

/// A row-major single-precision matrix product on device buffers:
/// `c = alpha * a · b + beta * c`, with `a` m×k, `b` k×n and `c` m×n.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Gemm {
    /// Rows of `a` and `c`.
    pub m: usize,
    /// Columns of `b` and `c`.
    pub n: usize,
    /// Columns of `a`, rows of `b`.
    pub k: usize,
    /// Scale of the product.
    pub alpha: f32,
    /// Scale of `c`'s old contents (0 overwrites, and then `c` may hold anything).
    pub beta: f32,
    /// The m×k left operand.
    pub a: Buffer,
    /// The k×n right operand.
    pub b: Buffer,
    /// The m×n result.
    pub c: Buffer,
}

impl Gemm {
    /// Checks the buffers are big enough for the shapes.
    pub fn validate(&self, device: DeviceId) -> Result<(), GpuError> {
        let need = |rows: usize, cols: usize, buffer: &Buffer, name: &str| {
            let bytes = rows
                .checked_mul(cols)
                .and_then(|elements| elements.checked_mul(4))
                .ok_or_else(|| GpuError::invalid(device, format!("gemm: {name} size overflows")))?;
            if buffer.bytes < bytes {
                return Err(GpuError::invalid(
                    device,
                    format!(
                        "gemm: {name} is {rows}x{cols} f32 ({bytes} bytes) but its buffer has {}",
                        buffer.bytes
                    ),
                ));
            }
            Ok(())
        };
        need(self.m, self.k, &self.a, "a")?;
        need(self.k, self.n, &self.b, "b")?;
        need(self.m, self.n, &self.c, "c")
    }
}

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
