//! NVIDIA GPUs through the CUDA driver API (feature `cuda`).
//!
//! A [`CudaDevice`] is a [`NativeDevice`] over [`CudaDriver`]: the shared
//! native layer ([`crate::native`]) keeps the tables, the memory cache and
//! every check; this module makes the CUDA calls.
//!
//! Built on cudarc's thin `result` layer (one call per driver function)
//! rather than its safe types, because the [`Device`]
//! contract is itself a handle table with explicit streams and events.
//! cudarc loads libcuda, NVRTC and cuBLAS at run time, so this builds with
//! no CUDA toolkit; it panics if a library is absent when first called, so
//! `open_all` checks each library's presence first and answers
//! [`NotAvailable`](GpuError::NotAvailable) as a value.
//!
//! - **Context.** Each device uses its primary context, made current on the
//!   calling thread at the start of every method (`cuCtxSetCurrent` is
//!   cheap), so any thread may call any method.
//! - **Memory.** The native layer's size-class cache holds at most 1/8 of
//!   device memory ([`CudaDevice::cache_stats`], [`CudaDevice::trim_cache`]).
//!   A `write` does not wait: the driver stages pageable host memory before
//!   `cuMemcpyHtoDAsync` returns.
//! - **Kernels.** The standard kernels (`kernels/cuda/standard.cu`) are
//!   compiled by NVRTC once per device, on first use; user CUDA C through
//!   `Device::compile`. GEMM goes to cuBLAS when its library is present.

mod blas;
mod compile;
mod driver;
mod error;

use std::sync::Arc;

use cudarc::driver::{result as drv, sys};

use self::blas::Cublas;
pub use self::driver::CudaDriver;
use self::error::driver_error;
use crate::device::Device;
use crate::error::GpuError;
use crate::info::{BackendKind, DeviceInfo};
pub use crate::native::CacheStats;
use crate::native::NativeDevice;

/// One NVIDIA GPU.
pub type CudaDevice = NativeDevice<CudaDriver>;

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
    crate::native::open_all(device_count()?, CudaDevice::open)
}

impl NativeDevice<CudaDriver> {
    /// Opens CUDA device `ordinal` (its primary context), or says why not:
    /// [`NotAvailable`](GpuError::NotAvailable) without a driver or device.
    pub fn open(ordinal: u32) -> Result<CudaDevice, GpuError> {
        let id = crate::native::device_id(BackendKind::Cuda, ordinal, device_count()?)?;
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
        let memory_total_bytes =
            unsafe { drv::device::total_mem(cu_device) }.map_err(fail("cuDeviceTotalMem"))? as u64;
        let name = drv::device::get_name(cu_device).map_err(fail("cuDeviceGetName"))?;
        // SAFETY: `cu_device` came from cuDeviceGet; the retain is released
        // when the driver object drops (also on the failures below).
        let context = unsafe { drv::primary_ctx::retain(cu_device) }
            .map_err(fail("cuDevicePrimaryCtxRetain"))?;
        // SAFETY: probing dlopens and closes the library (see device_count).
        let has_nvrtc = unsafe { cudarc::nvrtc::sys::is_culib_present() };
        let driver = CudaDriver::new(id, cu_device, context, (major, minor), has_nvrtc);
        crate::native::NativeApi::bind(&driver)?;
        let info = DeviceInfo {
            id,
            name,
            memory_total_bytes,
            capability: format!("sm_{major}{minor}"),
            is_software: false,
            max_block_threads: max_block_threads.max(1) as u32,
        };
        let cache_bytes_max =
            usize::try_from(memory_total_bytes / CACHE_FRACTION).unwrap_or(usize::MAX);
        let blas = Cublas::open(id, context).map(|blas| Box::new(blas) as Box<_>);
        Ok(NativeDevice::new(driver, info, cache_bytes_max, blas))
    }

    /// Whether GEMM goes through cuBLAS (else the standard kernel).
    pub fn has_cublas(&self) -> bool {
        self.has_blas()
    }
}
