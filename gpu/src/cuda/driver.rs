//! [`CudaDriver`]: the CUDA driver API, NVRTC and cuBLAS calls a
//! [`NativeDevice`](crate::native::NativeDevice) makes, one call each.

use cudarc::driver::{result as drv, sys};

use super::compile;
use super::error::driver_error;
use crate::error::GpuError;
use crate::info::{BackendKind, DeviceId, HealthReport, MemoryInfo};
use crate::kernel::KernelSource;
use crate::native::{DevicePtr, Launch, NativeApi, Sealed, Transfer};

/// The standard kernels' CUDA C source.
const STANDARD_SOURCE: &str = include_str!("../../kernels/cuda/standard.cu");

/// One CUDA device's driver handles: its primary context, retained while
/// this lives.
pub struct CudaDriver {
    id: DeviceId,
    cu_device: sys::CUdevice,
    context: sys::CUcontext,
    compute_capability: (i32, i32),
    has_nvrtc: bool,
}

// SAFETY: the driver API is thread-safe once the context is current, which
// `bind` makes it (and `destroy_*` do themselves); the context handle is
// never mutated.
unsafe impl Send for CudaDriver {}
// SAFETY: as for `Send`.
unsafe impl Sync for CudaDriver {}

impl Sealed for CudaDriver {}

impl CudaDriver {
    /// Takes over `context`, the retained primary context of `cu_device`.
    pub(super) fn new(
        id: DeviceId,
        cu_device: sys::CUdevice,
        context: sys::CUcontext,
        compute_capability: (i32, i32),
        has_nvrtc: bool,
    ) -> Self {
        CudaDriver { id, cu_device, context, compute_capability, has_nvrtc }
    }

    fn fail<'a>(&self, what: &'a str) -> impl Fn(drv::DriverError) -> GpuError + 'a {
        let id = self.id;
        move |e| driver_error(id, e.0, what)
    }
}

impl Drop for CudaDriver {
    fn drop(&mut self) {
        // SAFETY: balances the retain in `CudaDevice::open`; every stream
        // and event holds this object alive, so none of the context is used
        // after this.
        let _ = unsafe { drv::primary_ctx::release(self.cu_device) };
    }
}

// SAFETY: CUDA streams, events, modules, functions and device pointers are
// usable from any thread once the context is current (`bind`).
unsafe impl NativeApi for CudaDriver {
    type Stream = sys::CUstream;
    type Event = sys::CUevent;
    type Module = sys::CUmodule;
    type Function = sys::CUfunction;

    fn bind(&self) -> Result<(), GpuError> {
        // SAFETY: `context` is retained until `Drop`, which cannot run while
        // `&self` is borrowed.
        unsafe { drv::ctx::set_current(self.context) }.map_err(self.fail("cuCtxSetCurrent"))
    }

    fn memory(&self) -> Result<MemoryInfo, GpuError> {
        let (free, total) = drv::mem_get_info().map_err(self.fail("cuMemGetInfo"))?;
        Ok(MemoryInfo { free_bytes: free as u64, total_bytes: total as u64 })
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
        Ok(match drv::mem_get_info() {
            Ok((free, total)) => HealthReport {
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
            },
            Err(e) => HealthReport {
                responsive: false,
                detail: driver_error(self.id, e.0, "cuMemGetInfo").to_string(),
                ..HealthReport::default()
            },
        })
    }

    fn malloc(&self, bytes: usize) -> Result<Option<DevicePtr>, GpuError> {
        // SAFETY: the context is current; the memory is uninitialised bytes,
        // which is what `alloc` promises.
        match unsafe { drv::malloc_sync(bytes) } {
            Ok(ptr) => Ok(Some(ptr)),
            Err(e) if e.0 == sys::CUresult::CUDA_ERROR_OUT_OF_MEMORY => Ok(None),
            Err(e) => Err(driver_error(self.id, e.0, &format!("cuMemAlloc({bytes})"))),
        }
    }

    unsafe fn free(&self, ptr: DevicePtr) -> Result<(), GpuError> {
        // SAFETY: the caller's: `ptr` came from cuMemAlloc, freed once.
        unsafe { drv::free_sync(ptr) }.map_err(self.fail("cuMemFree"))
    }

    /// Pageable host-to-device copies are staged by the driver before
    /// `cuMemcpyHtoDAsync` returns (CUDA's "API synchronization behavior"),
    /// so `src` may be reused at once.
    const WRITE_WAITS: bool = false;
    unsafe fn copy(&self, stream: sys::CUstream, transfer: Transfer<'_>) -> Result<(), GpuError> {
        // SAFETY: the caller's: the device spans and the stream are live,
        // and host memory stays borrowed until the stream is synchronized
        // where that is needed. A pageable host-to-device copy needs no
        // wait: the driver stages `src` before returning (WRITE_WAITS).
        unsafe {
            match transfer {
                Transfer::ToDevice { dst, src } => {
                    drv::memcpy_htod_async(dst, src, stream).map_err(self.fail("cuMemcpyHtoDAsync"))
                }
                Transfer::ToHost { dst, src } => {
                    drv::memcpy_dtoh_async(dst, src, stream).map_err(self.fail("cuMemcpyDtoHAsync"))
                }
                Transfer::OnDevice { dst, src, bytes } => {
                    drv::memcpy_dtod_async(dst, src, bytes, stream)
                        .map_err(self.fail("cuMemcpyDtoDAsync"))
                }
            }
        }
    }

    fn create_stream(&self) -> Result<sys::CUstream, GpuError> {
        drv::stream::create(drv::stream::StreamKind::NonBlocking)
            .map_err(self.fail("cuStreamCreate"))
    }

    unsafe fn destroy_stream(&self, stream: sys::CUstream) {
        // SAFETY: the context is retained while `self` lives; the caller
        // destroys the stream once.
        unsafe {
            let _ = drv::ctx::set_current(self.context);
            let _ = drv::stream::destroy(stream);
        }
    }

    unsafe fn synchronize(&self, stream: sys::CUstream) -> Result<(), GpuError> {
        // SAFETY: the caller's: the stream is live.
        unsafe { drv::stream::synchronize(stream) }.map_err(self.fail("cuStreamSynchronize"))
    }

    fn synchronize_device(&self) {
        let _ = drv::ctx::synchronize();
    }

    fn create_event(&self) -> Result<sys::CUevent, GpuError> {
        drv::event::create(sys::CUevent_flags::CU_EVENT_DISABLE_TIMING)
            .map_err(self.fail("cuEventCreate"))
    }

    unsafe fn destroy_event(&self, event: sys::CUevent) {
        // SAFETY: as for `destroy_stream`.
        unsafe {
            let _ = drv::ctx::set_current(self.context);
            let _ = drv::event::destroy(event);
        }
    }

    unsafe fn record_event(
        &self,
        event: sys::CUevent,
        stream: sys::CUstream,
    ) -> Result<(), GpuError> {
        // SAFETY: the caller's: both handles are live.
        unsafe { drv::event::record(event, stream) }.map_err(self.fail("cuEventRecord"))
    }

    unsafe fn wait_event(
        &self,
        stream: sys::CUstream,
        event: sys::CUevent,
    ) -> Result<(), GpuError> {
        let flags = sys::CUevent_wait_flags::CU_EVENT_WAIT_DEFAULT;
        // SAFETY: the caller's: both handles are live.
        unsafe { drv::stream::wait_event(stream, event, flags) }
            .map_err(self.fail("cuStreamWaitEvent"))
    }

    unsafe fn event_synchronize(&self, event: sys::CUevent) -> Result<(), GpuError> {
        // SAFETY: the caller's: the event is live.
        unsafe { drv::event::synchronize(event) }.map_err(self.fail("cuEventSynchronize"))
    }

    const STANDARD_SOURCE: &'static str = STANDARD_SOURCE;
    const USER_LANGUAGE: (&'static str, &'static str) = ("CUDA C", "KernelSource::Cuda");

    fn user_source(source: &KernelSource) -> Option<(&str, &str)> {
        match source {
            KernelSource::Cuda { entry, source } => Some((entry, source)),
            _ => None,
        }
    }

    fn load_module(&self, name: &str, source: &str) -> Result<sys::CUmodule, GpuError> {
        if !self.has_nvrtc {
            return Err(GpuError::NotAvailable {
                backend: BackendKind::Cuda,
                reason: "NVRTC not found (libnvrtc.so): kernels cannot be compiled".into(),
            });
        }
        // SAFETY: the context is current (the caller bound it) and NVRTC is
        // present (checked above).
        unsafe { compile::compile_module(self.id, self.compute_capability, name, source) }
    }

    unsafe fn function(
        &self,
        module: sys::CUmodule,
        entry: &str,
    ) -> Result<sys::CUfunction, GpuError> {
        // SAFETY: the caller's: `module` is loaded in the current context.
        unsafe { compile::function(self.id, module, entry) }
    }

    unsafe fn unload_module(&self, module: sys::CUmodule) {
        // SAFETY: the caller's: nothing of the module runs or launches again.
        let _ = unsafe { drv::module::unload(module) };
    }

    unsafe fn launch(&self, launch: Launch<'_, Self>) -> Result<(), GpuError> {
        let [gx, gy, gz] = launch.config.grid;
        let [bx, by, bz] = launch.config.block;
        let (function, stream, params) = (launch.function, launch.stream, launch.params);
        // SAFETY: the caller's (`NativeApi::launch`): a loaded function, a
        // live stream, parameters laid out as `LaunchParams` says (the driver
        // copies them before returning), live buffers and a checked shape.
        unsafe { drv::launch_kernel(function, (gx, gy, gz), (bx, by, bz), 0, stream, params) }
            .map_err(|e| driver_error(self.id, e.0, launch.name))
    }
}
