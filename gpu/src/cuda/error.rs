//! CUDA driver, NVRTC and cuBLAS status codes as [`GpuError`]s.
//!
//! One function, [`driver_error`], sorts every `CUresult` into the class a
//! caller acts on (see [`crate::error::ErrorClass`]). It reads only the
//! code's enum name, never the driver, so it runs (and is tested) on a
//! machine without libcuda.

use cudarc::driver::sys::CUresult;

use crate::device::DeviceId;
use crate::error::GpuError;

/// Converts a failed driver call into a [`GpuError`].
///
/// `what` names the operation ("cuMemAlloc of 4096 bytes", a kernel's name
/// for launch errors). An out-of-memory code gives `requested`/`free` of 0:
/// the allocation path, which knows both, builds its own.
pub(crate) fn driver_error(device: DeviceId, code: CUresult, what: &str) -> GpuError {
    let name = format!("{code:?}");
    let detail = format!("{what}: {name}");
    match code {
        CUresult::CUDA_ERROR_OUT_OF_MEMORY => {
            GpuError::OutOfMemory { device, requested_bytes: 0, free_bytes: 0 }
        }
        CUresult::CUDA_ERROR_ECC_UNCORRECTABLE | CUresult::CUDA_ERROR_NVLINK_UNCORRECTABLE => {
            GpuError::Ecc { device, detail }
        }
        CUresult::CUDA_ERROR_LAUNCH_TIMEOUT | CUresult::CUDA_ERROR_TIMEOUT => {
            GpuError::KernelTimeout { device, kernel: what.to_string() }
        }
        CUresult::CUDA_ERROR_LAUNCH_OUT_OF_RESOURCES
        | CUresult::CUDA_ERROR_NOT_READY
        | CUresult::CUDA_ERROR_MPS_SERVER_NOT_READY
        | CUresult::CUDA_ERROR_SYSTEM_NOT_READY => GpuError::Busy { device, detail },
        // A kernel fault poisons the context: every later call on it fails,
        // so the device is lost to this process.
        CUresult::CUDA_ERROR_ILLEGAL_ADDRESS
        | CUresult::CUDA_ERROR_LAUNCH_FAILED
        | CUresult::CUDA_ERROR_HARDWARE_STACK_ERROR
        | CUresult::CUDA_ERROR_ILLEGAL_INSTRUCTION
        | CUresult::CUDA_ERROR_MISALIGNED_ADDRESS
        | CUresult::CUDA_ERROR_INVALID_ADDRESS_SPACE
        | CUresult::CUDA_ERROR_INVALID_PC
        | CUresult::CUDA_ERROR_ASSERT
        | CUresult::CUDA_ERROR_DEVICE_UNAVAILABLE
        | CUresult::CUDA_ERROR_CONTEXT_IS_DESTROYED
        | CUresult::CUDA_ERROR_DEINITIALIZED
        | CUresult::CUDA_ERROR_EXTERNAL_DEVICE => GpuError::DeviceLost { device, detail },
        CUresult::CUDA_ERROR_INVALID_VALUE
        | CUresult::CUDA_ERROR_INVALID_HANDLE
        | CUresult::CUDA_ERROR_NOT_FOUND
        | CUresult::CUDA_ERROR_INVALID_DEVICE => GpuError::invalid(device, detail),
        _ => GpuError::Driver { device, code: name, detail },
    }
}

/// Converts a failed NVRTC call other than compilation itself (which
/// carries the log: see `compile.rs`) into a [`GpuError::Compile`].
pub(crate) fn nvrtc_error(
    device: DeviceId,
    code: cudarc::nvrtc::sys::nvrtcResult,
    kernel: &str,
    what: &str,
) -> GpuError {
    GpuError::Compile { device, kernel: kernel.to_string(), log: format!("{what}: {code:?}") }
}

/// Converts a failed cuBLAS call into a [`GpuError`].
pub(crate) fn cublas_error(
    device: DeviceId,
    status: cudarc::cublas::sys::cublasStatus_t,
    what: &str,
) -> GpuError {
    use cudarc::cublas::sys::cublasStatus_t as S;
    let name = format!("{status:?}");
    let detail = format!("{what}: {name}");
    match status {
        S::CUBLAS_STATUS_ALLOC_FAILED => {
            GpuError::OutOfMemory { device, requested_bytes: 0, free_bytes: 0 }
        }
        S::CUBLAS_STATUS_INVALID_VALUE => GpuError::invalid(device, detail),
        S::CUBLAS_STATUS_EXECUTION_FAILED => GpuError::DeviceLost { device, detail },
        _ => GpuError::Driver { device, code: name, detail },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::device::BackendKind;
    use crate::error::ErrorClass;
    use crate::native::testing::assert_classes;

    const DEVICE: DeviceId = DeviceId::new(BackendKind::Cuda, 0);

    #[test]
    fn driver_codes_map_to_the_class_a_caller_acts_on() {
        use CUresult as R;
        let cases: [(ErrorClass, &[CUresult]); 4] = [
            (ErrorClass::OutOfMemory, &[R::CUDA_ERROR_OUT_OF_MEMORY]),
            (
                ErrorClass::Transient,
                &[R::CUDA_ERROR_LAUNCH_TIMEOUT, R::CUDA_ERROR_LAUNCH_OUT_OF_RESOURCES],
            ),
            (ErrorClass::Request, &[R::CUDA_ERROR_INVALID_VALUE]),
            (
                ErrorClass::Device,
                &[
                    R::CUDA_ERROR_ECC_UNCORRECTABLE,
                    R::CUDA_ERROR_ILLEGAL_ADDRESS,
                    R::CUDA_ERROR_LAUNCH_FAILED,
                    R::CUDA_ERROR_NOT_PERMITTED,
                ],
            ),
        ];
        assert_classes(DEVICE, |code| driver_error(DEVICE, code, "op"), &cases);
    }

    #[test]
    fn driver_codes_pick_the_specific_variant_and_keep_the_code_name() {
        let oom = driver_error(DEVICE, CUresult::CUDA_ERROR_OUT_OF_MEMORY, "cuMemAlloc");
        assert!(matches!(oom, GpuError::OutOfMemory { .. }), "{oom:?}");
        let ecc = driver_error(DEVICE, CUresult::CUDA_ERROR_ECC_UNCORRECTABLE, "sync");
        assert!(
            matches!(&ecc, GpuError::Ecc { detail, .. } if detail.contains("ECC_UNCORRECTABLE"))
        );
        let timeout = driver_error(DEVICE, CUresult::CUDA_ERROR_LAUNCH_TIMEOUT, "zbmd_gemm");
        assert!(
            matches!(&timeout, GpuError::KernelTimeout { kernel, .. } if kernel == "zbmd_gemm")
        );
        let busy = driver_error(DEVICE, CUresult::CUDA_ERROR_LAUNCH_OUT_OF_RESOURCES, "launch");
        assert!(matches!(busy, GpuError::Busy { .. }), "{busy:?}");
        let lost = driver_error(DEVICE, CUresult::CUDA_ERROR_ILLEGAL_ADDRESS, "sync");
        assert!(
            matches!(&lost, GpuError::DeviceLost { detail, .. } if detail == "sync: CUDA_ERROR_ILLEGAL_ADDRESS"),
            "{lost:?}"
        );
        let other = driver_error(DEVICE, CUresult::CUDA_ERROR_NOT_PERMITTED, "cuCtxSetLimit");
        assert!(
            matches!(&other, GpuError::Driver { code, .. } if code == "CUDA_ERROR_NOT_PERMITTED"),
            "{other:?}"
        );
    }
}
