//! AMD GPUs through HIP (feature `rocm`).
//!
//! A [`RocmDevice`] is a [`NativeDevice`] over [`HipRuntime`]: the shared
//! native layer ([`crate::native`]) keeps the tables and every check; this
//! module makes the HIP calls.
//!
//! Built on hip-runtime-sys's bindings of the HIP runtime, plus a small
//! hand-written binding of hiprtc (`hiprtc.rs`; the crate has none). Unlike
//! the CUDA backend, libamdhip64 is *linked*, not loaded: a binary built
//! with `rocm` needs the library to start at all, so "library missing" is a
//! link- or load-time failure, not a run-time answer. What detection does
//! answer as a value is a machine with the library and no AMD GPU: HIP
//! reports `hipErrorNoDevice`, which `open_all` turns into
//! [`NotAvailable`](GpuError::NotAvailable) "no device".
//!
//! - **Device selection.** HIP's current device is per thread; every method
//!   calls `hipSetDevice` first, so any thread may call any method.
//! - **Memory** comes straight from `hipMalloc`/`hipFree`: the native
//!   layer's cache is off (HIP's own allocator already pools). A `write`
//!   waits for its copy to finish ([`NativeApi::WRITE_WAITS`]).
//! - **Kernels.** There is no HIP copy of the standard kernels: they are
//!   `kernels/cuda/standard.cu` behind the prelude `kernels/hip/prelude.h`
//!   ([`STANDARD_SOURCE`]), compiled by hiprtc once per device for its
//!   `gcnArchName`, loaded with `hipModuleLoadData` and launched with
//!   `hipModuleLaunchKernel`. GEMM uses the standard kernel (Debian ships
//!   no rocBLAS).

mod hiprtc;
mod runtime;

use std::ffi::{c_char, c_int};
use std::sync::Arc;

use hip_runtime_sys as hip;

pub use self::runtime::HipRuntime;
pub(crate) use self::runtime::hip_error;
use self::runtime::{check, error_name};
use crate::device::Device;
use crate::error::GpuError;
use crate::info::{BackendKind, DeviceInfo};
use crate::native::{NativeApi, NativeDevice};

/// The standard kernels' HIP source: the HIP prelude, then the CUDA source
/// itself, so the two backends run the same kernel text.
pub const STANDARD_SOURCE: &str = concat!(
    include_str!("../../kernels/hip/prelude.h"),
    include_str!("../../kernels/cuda/standard.cu")
);

/// One AMD GPU.
pub type RocmDevice = NativeDevice<HipRuntime>;

/// How many AMD GPUs HIP sees; [`NotAvailable`](GpuError::NotAvailable)
/// "no device" when it sees none (`hipErrorNoDevice`, as on a machine with
/// the library but no GPU or no `/dev/kfd`).
pub fn device_count() -> Result<usize, GpuError> {
    let absent = |reason: String| GpuError::NotAvailable { backend: BackendKind::Rocm, reason };
    let mut count: c_int = 0;
    // SAFETY: `count` is a valid out-pointer for the call's duration.
    match check(unsafe { hip::hipGetDeviceCount(&mut count) }) {
        Ok(()) if count > 0 => Ok(count as usize),
        Ok(()) | Err(hip::hipError_t::hipErrorNoDevice) => Err(absent("no device".into())),
        Err(code) => Err(absent(format!("hipGetDeviceCount failed: {}", error_name(code)))),
    }
}

/// Opens every AMD GPU, or says why there are none.
pub(crate) fn open_all() -> Result<Vec<Arc<dyn Device>>, GpuError> {
    crate::native::open_all(device_count()?, RocmDevice::open)
}

/// `hipDeviceProp_t` with room to spare: a runtime whose struct is larger
/// than the one hip-runtime-sys was generated from writes into the padding
/// instead of past the end.
#[repr(C)]
struct Properties {
    properties: hip::hipDeviceProp_t,
    _spare: [u8; 4096],
}

impl NativeDevice<HipRuntime> {
    /// Opens AMD GPU `ordinal`, or says why not.
    pub fn open(ordinal: u32) -> Result<RocmDevice, GpuError> {
        let id = crate::native::device_id(BackendKind::Rocm, ordinal, device_count()?)?;
        let hip_ordinal = ordinal as c_int;
        // SAFETY: the ordinal is in range (checked above).
        check(unsafe { hip::hipSetDevice(hip_ordinal) })
            .map_err(|e| hip_error(id, e, "hipSetDevice"))?;
        // SAFETY: `Properties` is plain old data (integers, arrays, raw
        // pointers), for which all-zero bytes are a valid value.
        let mut props: Box<Properties> = Box::new(unsafe { std::mem::zeroed() });
        // SAFETY: the pointer addresses a writable, zeroed struct at least
        // as large as the runtime's (see `Properties`).
        check(unsafe { hip::hipGetDeviceProperties(&mut props.properties, hip_ordinal) })
            .map_err(|e| hip_error(id, e, "hipGetDeviceProperties"))?;
        let text = |chars: &[c_char]| {
            let bytes: Vec<u8> = chars.iter().take_while(|&&c| c != 0).map(|&c| c as u8).collect();
            String::from_utf8_lossy(&bytes).into_owned()
        };
        let arch = text(&props.properties.gcnArchName);
        let capability = arch.split(':').next().unwrap_or_default().to_string();
        let runtime = HipRuntime::new(id, hip_ordinal, arch);
        let memory = runtime.memory()?;
        let info = DeviceInfo {
            id,
            name: text(&props.properties.name),
            memory_total_bytes: memory.total_bytes,
            capability,
            is_software: false,
            max_block_threads: props.properties.maxThreadsPerBlock.max(1) as u32,
        };
        // No cache: HIP's allocator pools on its own.
        Ok(NativeDevice::new(runtime, info, 0, None))
    }

    /// The full architecture name hiprtc compiles for
    /// (`gfx90a:sramecc+:xnack-`); [`DeviceInfo::capability`] is its first part.
    pub fn arch(&self) -> &str {
        self.api().arch()
    }
}

#[cfg(test)]
mod tests;
