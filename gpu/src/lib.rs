//! zbmd's GPU layer: one [`Device`] interface over the CPU, CUDA, Vulkan and
//! ROCm, a fault-injecting wrapper around any of them, device detection,
//! and kernels run by supervised actors that retry transient errors and
//! move to a healthy device when theirs fails.
//!
//! ```text
//!   caller ──launch──▶ KernelActor (one device, one stream) ──▶ dyn Device
//!                         │ crash on a device error                ├ cpu (always)
//!                         ▼                                        ├ cuda   (feature)
//!                  GPU supervisor ── health per device ──▶         ├ vulkan (feature)
//!                  restarts it on a healthy device                 ├ rocm   (feature)
//!                                                                  └ faulty(any)
//! ```
//!
//! Backends behind features build with no vendor toolkit installed (CUDA
//! and HIP libraries are loaded or linked only when used) and report an
//! absent driver or device as a value, never a panic: see [`detect_devices`].

pub mod cpu;
#[cfg(feature = "cuda")]
pub mod cuda;
pub mod detect;
pub mod device;
pub mod error;
pub mod faulty;
pub mod health;
pub mod kernel;
pub mod pool;
#[cfg(feature = "rocm")]
pub mod rocm;
#[cfg(feature = "vulkan")]
pub mod vulkan;

pub use cpu::CpuDevice;
pub use detect::{BackendReport, BackendStatus, Detection, detect_backends, detect_devices};
pub use device::{
    Arg, BackendKind, Buffer, Device, DeviceId, DeviceInfo, Event, Gemm, HealthReport,
    KernelHandle, LaunchConfig, MemoryInfo, Stream,
};
pub use error::{ErrorClass, GpuError};
pub use faulty::FaultyDevice;
pub use health::{Health, HealthPolicy, HealthRegistry};
pub use kernel::{Kernel, KernelSource, Kernels};
pub use pool::{Executor, GpuPool, Job, JobError, Op};
