//! What names and describes a device: its backend, its id, what it is
//! (fixed when it was opened), and what it reports of its memory and
//! health now.
//!
//! These are plain values with no behaviour beyond naming: the leaf of the
//! interface, which [`crate::error`] and every other module build on.

use std::fmt;

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
    pub memory_total_bytes: u64,
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
    pub free_bytes: u64,
    /// Bytes in all.
    pub total_bytes: u64,
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
