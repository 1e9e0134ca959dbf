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

// The interface: what every backend implements and the machinery built on
// it. These modules name no backend (gpu/tests/interface_graph.rs checks).
pub mod device;
pub mod error;
pub mod executor;
pub mod handle;
pub mod health;
mod health_monitor;
pub mod host;
pub mod info;
pub mod job;
pub mod kernel;
pub mod kernel_actor;
pub mod launch;
pub mod pool;

// The backends, each depending on the interface, and detection, which
// knows them all.
pub mod cpu;
#[cfg(feature = "cuda")]
pub mod cuda;
pub mod detect;
pub mod faulty;
#[cfg(any(feature = "cuda", feature = "rocm"))]
pub mod native;
#[cfg(feature = "rocm")]
pub mod rocm;
#[cfg(feature = "vulkan")]
pub mod vulkan;

pub use cpu::CpuDevice;
pub use detect::{BackendReport, BackendStatus, Detection, detect_backends, detect_devices};
pub use device::Device;
pub use error::{ErrorClass, GpuError};
pub use executor::Executor;
pub use faulty::FaultyDevice;
pub use handle::{Arg, Buffer, Event, Gemm, KernelHandle, LaunchConfig, Stream};
pub use health::{Health, HealthConfigError, HealthPolicy, HealthRegistry};
pub use host::{HostKernelFn, HostLaunch};
pub use info::{BackendKind, DeviceId, DeviceInfo, HealthReport, MemoryInfo};
pub use job::{Job, JobError, Op};
pub use kernel::{Kernel, KernelSource};
pub use launch::Kernels;
pub use pool::{GpuPool, GpuPoolBuilder, GpuPoolError, JobStats};
