//! CUDA C to PTX through NVRTC, loaded with `cuModuleLoadData`.

use std::ffi::{CString, c_char};

use cudarc::driver::{result as drv, sys as drv_sys};
use cudarc::nvrtc::{result as rtc, sys as rtc_sys};

use super::error::{driver_error, nvrtc_error};
use crate::device::DeviceId;
use crate::error::GpuError;

/// Compiles `source` for a device of compute capability `major.minor` and
/// loads it into the current context.
///
/// The PTX targets `compute_XY` (the device's own virtual architecture), so
/// the driver JIT-compiles it to the exact SASS at load time.
///
/// # Safety
///
/// The device's context must be current on this thread, and NVRTC's library
/// must be present (`cudarc::nvrtc::sys::is_culib_present`), else cudarc
/// panics.
pub(crate) unsafe fn compile_module(
    device: DeviceId,
    (major, minor): (i32, i32),
    name: &str,
    source: &str,
) -> Result<drv_sys::CUmodule, GpuError> {
    let compile_error = |log: String| GpuError::Compile { device, kernel: name.to_string(), log };
    let source = CString::new(source)
        .map_err(|_| compile_error("the source contains a NUL byte".to_string()))?;
    let program_name = CString::new(format!("{name}.cu"))
        .map_err(|_| compile_error("the kernel name contains a NUL byte".to_string()))?;
    let program = rtc::create_program(&source, Some(&program_name))
        .map_err(|e| nvrtc_error(device, e.0, name, "nvrtcCreateProgram"))?;
    let options = [format!("--gpu-architecture=compute_{major}{minor}"), "--std=c++14".into()];
    // SAFETY: `program` was just created and is destroyed only below; the
    // options are owned strings that outlive the call.
    let compiled = unsafe { rtc::compile_program(program, &options) };
    // SAFETY: as above; the log is read before the program is destroyed.
    let log = unsafe { rtc::get_program_log(program) }.map(c_chars_to_string).unwrap_or_default();
    let ptx = match compiled {
        // SAFETY: as above, and the program compiled.
        Ok(()) => unsafe { rtc::get_ptx(program) }
            .map_err(|e| nvrtc_error(device, e.0, name, "nvrtcGetPTX")),
        Err(rtc::NvrtcError(rtc_sys::nvrtcResult::NVRTC_ERROR_COMPILATION)) => {
            Err(compile_error(log))
        }
        Err(e) => Err(nvrtc_error(device, e.0, name, &format!("nvrtcCompileProgram: {log}"))),
    };
    // SAFETY: `program` is live and not used after this.
    let _ = unsafe { rtc::destroy_program(program) };
    let ptx = ptx?;
    if ptx.last() != Some(&0) {
        return Err(compile_error("NVRTC returned PTX without a terminating NUL".into()));
    }
    // SAFETY: `ptx` is a NUL-terminated PTX text (checked just above), which
    // cuModuleLoadData accepts; it copies the image, so `ptx` may then drop.
    // The caller made the context current.
    unsafe { drv::module::load_data(ptx.as_ptr().cast()) }.map_err(|e| match e.0 {
        drv_sys::CUresult::CUDA_ERROR_INVALID_PTX
        | drv_sys::CUresult::CUDA_ERROR_UNSUPPORTED_PTX_VERSION
        | drv_sys::CUresult::CUDA_ERROR_NO_BINARY_FOR_GPU
        | drv_sys::CUresult::CUDA_ERROR_JIT_COMPILER_NOT_FOUND => compile_error(format!(
            "the driver could not load NVRTC's PTX: {:?} (is NVRTC newer than the driver?)",
            e.0
        )),
        code => driver_error(device, code, &format!("cuModuleLoadData({name})")),
    })
}

/// Looks up `entry` in a loaded module.
///
/// # Safety
///
/// `module` must be loaded and not unloaded, in the current context.
pub(crate) unsafe fn function(
    device: DeviceId,
    module: drv_sys::CUmodule,
    entry: &str,
) -> Result<drv_sys::CUfunction, GpuError> {
    let c_entry = CString::new(entry)
        .map_err(|_| GpuError::invalid(device, format!("entry `{entry}` contains a NUL byte")))?;
    // SAFETY: the caller guarantees `module` is live in the current context.
    unsafe { drv::module::get_function(module, c_entry) }.map_err(|e| match e.0 {
        drv_sys::CUresult::CUDA_ERROR_NOT_FOUND => GpuError::Compile {
            device,
            kernel: entry.to_string(),
            log: format!(
                "no `extern \"C\" __global__` function named `{entry}` in the compiled module"
            ),
        },
        code => driver_error(device, code, &format!("cuModuleGetFunction({entry})")),
    })
}

fn c_chars_to_string(chars: Vec<c_char>) -> String {
    let bytes: Vec<u8> = chars.into_iter().take_while(|&c| c != 0).map(|c| c as u8).collect();
    String::from_utf8_lossy(&bytes).trim().to_string()
}
