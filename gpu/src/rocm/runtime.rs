//! [`HipRuntime`]: the HIP runtime calls a
//! [`NativeDevice`](crate::native::NativeDevice) makes, one call each, and
//! HIP's error codes sorted into [`GpuError`]s.

use std::ffi::{CString, c_int};

use hip::hipError_t;
use hip_runtime_sys as hip;

use super::hiprtc;
use crate::error::GpuError;
use crate::info::{DeviceId, HealthReport, MemoryInfo};
use crate::kernel::KernelSource;
use crate::native::{DevicePtr, Launch, NativeApi, Sealed, Transfer};

/// The name HIP gives an error code (`hipErrorOutOfMemory`).
pub(super) fn error_name(code: hipError_t) -> String {
    format!("{code:?}")
}

/// Converts a failed HIP call into a [`GpuError`] of the right class.
pub(crate) fn hip_error(device: DeviceId, code: hipError_t, what: &str) -> GpuError {
    let name = error_name(code);
    let detail = format!("{what}: {name}");
    match code {
        hipError_t::hipErrorOutOfMemory | hipError_t::hipErrorRuntimeMemory => {
            GpuError::OutOfMemory { device, requested_bytes: 0, free_bytes: 0 }
        }
        hipError_t::hipErrorECCNotCorrectable => GpuError::Ecc { device, detail },
        hipError_t::hipErrorLaunchTimeOut => {
            GpuError::KernelTimeout { device, kernel: what.to_string() }
        }
        hipError_t::hipErrorLaunchOutOfResources | hipError_t::hipErrorNotReady => {
            GpuError::Busy { device, detail }
        }
        hipError_t::hipErrorIllegalAddress
        | hipError_t::hipErrorLaunchFailure
        | hipError_t::hipErrorAssert
        | hipError_t::hipErrorContextIsDestroyed
        | hipError_t::hipErrorDeinitialized
        | hipError_t::hipErrorPriorLaunchFailure => GpuError::DeviceLost { device, detail },
        hipError_t::hipErrorInvalidValue
        | hipError_t::hipErrorInvalidHandle
        | hipError_t::hipErrorInvalidDevicePointer
        | hipError_t::hipErrorInvalidConfiguration
        | hipError_t::hipErrorNotFound => GpuError::invalid(device, detail),
        _ => GpuError::Driver { device, code: name, detail },
    }
}

/// Turns a HIP status into a `Result`.
pub(super) fn check(code: hipError_t) -> Result<(), hipError_t> {
    if code == hipError_t::hipSuccess { Ok(()) } else { Err(code) }
}

/// One AMD GPU as HIP selects it: an ordinal, and the architecture hiprtc
/// compiles for.
pub struct HipRuntime {
    id: DeviceId,
    ordinal: c_int,
    /// The full `gcnArchName` (`gfx90a:sramecc+:xnack-`), hiprtc's target.
    arch: String,
}

impl Sealed for HipRuntime {}

impl HipRuntime {
    /// The runtime for HIP device `ordinal`, of architecture `arch`.
    pub(super) fn new(id: DeviceId, ordinal: c_int, arch: String) -> Self {
        HipRuntime { id, ordinal, arch }
    }

    /// The full architecture name hiprtc compiles for.
    pub fn arch(&self) -> &str {
        &self.arch
    }

    fn fail<'a>(&self, what: &'a str) -> impl Fn(hipError_t) -> GpuError + 'a {
        let id = self.id;
        move |code| hip_error(id, code, what)
    }

    /// A handle made by `call`, HIP's `what`, through an out-pointer.
    fn create<T>(
        &self,
        what: &str,
        call: impl FnOnce(&mut *mut T) -> hipError_t,
    ) -> Result<*mut T, GpuError> {
        let mut handle = std::ptr::null_mut();
        check(call(&mut handle)).map_err(self.fail(what))?;
        Ok(handle)
    }

    /// Selects the device (a destroy may run on any thread) and calls
    /// `destroy`; best effort.
    fn on_device(&self, destroy: impl FnOnce() -> hipError_t) {
        // SAFETY: selecting a device touches no Rust memory; the ordinal was
        // valid when the device opened.
        let _ = unsafe { hip::hipSetDevice(self.ordinal) };
        let _ = destroy();
    }

    /// A device address as HIP's pointer type (never dereferenced here).
    fn ptr(address: DevicePtr) -> hip::hipDeviceptr_t {
        address as usize as hip::hipDeviceptr_t
    }
}

// SAFETY: HIP handles (streams, events, modules, functions, device
// pointers) may be used from any thread once the device is selected, which
// `bind` does (and `destroy_*` do themselves).
unsafe impl NativeApi for HipRuntime {
    type Stream = hip::hipStream_t;
    type Event = hip::hipEvent_t;
    type Module = hip::hipModule_t;
    type Function = hip::hipFunction_t;

    fn bind(&self) -> Result<(), GpuError> {
        // SAFETY: the ordinal was valid when the device opened.
        check(unsafe { hip::hipSetDevice(self.ordinal) }).map_err(self.fail("hipSetDevice"))
    }

    fn memory(&self) -> Result<MemoryInfo, GpuError> {
        let (mut free, mut total) = (0usize, 0usize);
        // SAFETY: valid out-pointers; the device is selected.
        check(unsafe { hip::hipMemGetInfo(&mut free, &mut total) })
            .map_err(self.fail("hipMemGetInfo"))?;
        Ok(MemoryInfo { free_bytes: free as u64, total_bytes: total as u64 })
    }

    fn health(&self) -> Result<HealthReport, GpuError> {
        let memory = self.bind().and_then(|()| self.memory());
        Ok(match memory {
            Ok(memory) => HealthReport {
                responsive: true,
                detail: format!(
                    "{} of {} bytes free; ECC counts need rocm-smi",
                    memory.free_bytes, memory.total_bytes
                ),
                ..HealthReport::default()
            },
            Err(error) => HealthReport {
                responsive: false,
                detail: error.to_string(),
                ..HealthReport::default()
            },
        })
    }

    fn malloc(&self, bytes: usize) -> Result<Option<DevicePtr>, GpuError> {
        let mut ptr: hip::hipDeviceptr_t = std::ptr::null_mut();
        // SAFETY: valid out-pointer; the device is selected.
        match check(unsafe { hip::hipMalloc(&mut ptr, bytes) }) {
            Ok(()) => Ok(Some(ptr as usize as DevicePtr)),
            Err(hipError_t::hipErrorOutOfMemory) => Ok(None),
            Err(code) => Err(hip_error(self.id, code, &format!("hipMalloc({bytes})"))),
        }
    }

    unsafe fn free(&self, ptr: DevicePtr) -> Result<(), GpuError> {
        // SAFETY: the caller's: `ptr` came from hipMalloc, freed once;
        // hipFree waits for work still using it.
        check(unsafe { hip::hipFree(Self::ptr(ptr)) }).map_err(self.fail("hipFree"))
    }

    /// HIP does not promise to have consumed pageable host memory when
    /// `hipMemcpyHtoDAsync` returns, and the caller may reuse it at once.
    const WRITE_WAITS: bool = true;
    unsafe fn copy(
        &self,
        stream: hip::hipStream_t,
        transfer: Transfer<'_>,
    ) -> Result<(), GpuError> {
        // SAFETY: the caller's: the device spans and the stream are live,
        // and host memory stays borrowed until the stream is synchronized
        // (for a copy from the host too: WRITE_WAITS). HIP only reads the
        // source of a host-to-device copy, though the binding says `*mut`.
        let (code, what) = unsafe {
            match transfer {
                Transfer::ToDevice { dst, src } => (
                    hip::hipMemcpyHtoDAsync(
                        Self::ptr(dst),
                        src.as_ptr().cast_mut().cast(),
                        src.len(),
                        stream,
                    ),
                    "hipMemcpyHtoDAsync",
                ),
                Transfer::ToHost { dst, src } => (
                    hip::hipMemcpyDtoHAsync(
                        dst.as_mut_ptr().cast(),
                        Self::ptr(src),
                        dst.len(),
                        stream,
                    ),
                    "hipMemcpyDtoHAsync",
                ),
                Transfer::OnDevice { dst, src, bytes } => (
                    hip::hipMemcpyDtoDAsync(Self::ptr(dst), Self::ptr(src), bytes, stream),
                    "hipMemcpyDtoDAsync",
                ),
            }
        };
        check(code).map_err(self.fail(what))
    }

    fn create_stream(&self) -> Result<hip::hipStream_t, GpuError> {
        // SAFETY: `create` passes a valid out-pointer; the device is selected.
        self.create("hipStreamCreateWithFlags", |stream| unsafe {
            hip::hipStreamCreateWithFlags(stream, hip::hipStreamNonBlocking)
        })
    }

    unsafe fn destroy_stream(&self, stream: hip::hipStream_t) {
        // SAFETY: the caller's: the stream is live and destroyed once, here.
        self.on_device(|| unsafe { hip::hipStreamDestroy(stream) });
    }

    unsafe fn synchronize(&self, stream: hip::hipStream_t) -> Result<(), GpuError> {
        // SAFETY: the caller's: the stream is live.
        check(unsafe { hip::hipStreamSynchronize(stream) })
            .map_err(self.fail("hipStreamSynchronize"))
    }

    fn synchronize_device(&self) {
        // SAFETY: synchronizing the selected device touches no Rust memory.
        let _ = unsafe { hip::hipDeviceSynchronize() };
    }

    fn create_event(&self) -> Result<hip::hipEvent_t, GpuError> {
        // SAFETY: `create` passes a valid out-pointer; the device is selected.
        self.create("hipEventCreateWithFlags", |event| unsafe {
            hip::hipEventCreateWithFlags(event, hip::hipEventDisableTiming)
        })
    }

    unsafe fn destroy_event(&self, event: hip::hipEvent_t) {
        // SAFETY: the caller's: the event is live and destroyed once, here.
        self.on_device(|| unsafe { hip::hipEventDestroy(event) });
    }

    unsafe fn record_event(
        &self,
        event: hip::hipEvent_t,
        stream: hip::hipStream_t,
    ) -> Result<(), GpuError> {
        // SAFETY: the caller's: both handles are live.
        check(unsafe { hip::hipEventRecord(event, stream) }).map_err(self.fail("hipEventRecord"))
    }

    unsafe fn wait_event(
        &self,
        stream: hip::hipStream_t,
        event: hip::hipEvent_t,
    ) -> Result<(), GpuError> {
        // SAFETY: the caller's: both handles are live; HIP requires flags 0.
        check(unsafe { hip::hipStreamWaitEvent(stream, event, 0) })
            .map_err(self.fail("hipStreamWaitEvent"))
    }

    unsafe fn event_synchronize(&self, event: hip::hipEvent_t) -> Result<(), GpuError> {
        // SAFETY: the caller's: the event is live.
        check(unsafe { hip::hipEventSynchronize(event) }).map_err(self.fail("hipEventSynchronize"))
    }

    const STANDARD_SOURCE: &'static str = super::STANDARD_SOURCE;
    const USER_LANGUAGE: (&'static str, &'static str) = ("HIP", "KernelSource::Hip");

    fn user_source(source: &KernelSource) -> Option<(&str, &str)> {
        let KernelSource::Hip { entry, source } = source else { return None };
        Some((entry, source))
    }

    fn load_module(&self, name: &str, source: &str) -> Result<hip::hipModule_t, GpuError> {
        let code = hiprtc::compile(name, source, &self.arch).map_err(|log| GpuError::Compile {
            device: self.id,
            kernel: name.to_string(),
            log,
        })?;
        let mut module: hip::hipModule_t = std::ptr::null_mut();
        // SAFETY: `code` is a complete code object from hiprtc, alive for the
        // call (HIP copies it); the device is selected.
        check(unsafe { hip::hipModuleLoadData(&mut module, code.as_ptr().cast()) })
            .map_err(self.fail("hipModuleLoadData"))?;
        Ok(module)
    }

    unsafe fn function(
        &self,
        module: hip::hipModule_t,
        entry: &str,
    ) -> Result<hip::hipFunction_t, GpuError> {
        let c_entry = CString::new(entry).map_err(|_| {
            GpuError::invalid(self.id, format!("entry `{entry}` contains a NUL byte"))
        })?;
        let mut function: hip::hipFunction_t = std::ptr::null_mut();
        // SAFETY: the caller's: `module` is loaded; valid out-pointer and name.
        check(unsafe { hip::hipModuleGetFunction(&mut function, module, c_entry.as_ptr()) })
            .map_err(|code| GpuError::Compile {
                device: self.id,
                kernel: entry.to_string(),
                log: format!(
                    "no `extern \"C\" __global__` function `{entry}` in the module ({})",
                    error_name(code)
                ),
            })?;
        Ok(function)
    }

    unsafe fn unload_module(&self, module: hip::hipModule_t) {
        // SAFETY: the caller's: nothing of the module runs or launches again.
        let _ = unsafe { hip::hipModuleUnload(module) };
    }

    unsafe fn launch(&self, launch: Launch<'_, Self>) -> Result<(), GpuError> {
        let [gx, gy, gz] = launch.config.grid;
        let [bx, by, bz] = launch.config.block;
        // SAFETY: the caller's (`NativeApi::launch`): a loaded function, a
        // live stream, parameters laid out as `LaunchParams` says (HIP copies
        // them before returning), live buffers and a checked shape; no
        // `extra` array.
        let code = unsafe {
            hip::hipModuleLaunchKernel(
                launch.function,
                gx,
                gy,
                gz,
                bx,
                by,
                bz,
                0,
                launch.stream,
                launch.params.as_mut_ptr(),
                std::ptr::null_mut(),
            )
        };
        check(code).map_err(|code| hip_error(self.id, code, launch.name))
    }
}
