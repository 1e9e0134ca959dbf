//! cuBLAS as a CUDA device's [`Blas`]: `Device::gemm` through `cublasSgemm`.

use cudarc::cublas::{result as blas, sys as blas_sys};
use cudarc::driver::{result as drv, sys};

use super::error::cublas_error;
use crate::error::GpuError;
use crate::handle::Gemm;
use crate::info::DeviceId;
use crate::native::{Blas, DevicePtr};

/// A cuBLAS handle bound to one device's context.
pub(super) struct Cublas {
    id: DeviceId,
    handle: blas_sys::cublasHandle_t,
    /// The context the handle belongs to, made current to destroy it.
    context: sys::CUcontext,
}

// SAFETY: the handle is not thread-safe, but it moves between threads only
// inside its device's table, which calls it through `&mut` with the
// device's mutex held: never from two threads at once. The context outlives
// it (the device drops it before the driver object releases the context).
unsafe impl Send for Cublas {}

impl Cublas {
    /// A handle bound to `context`, which must be current on this thread;
    /// `None` when libcublas is absent or refuses (GEMM then uses the
    /// standard kernel).
    pub(super) fn open(id: DeviceId, context: sys::CUcontext) -> Option<Cublas> {
        // SAFETY: probing dlopens and closes the library (see device_count).
        if !unsafe { blas_sys::is_culib_present() } {
            tracing::info!(device = %id, "cuBLAS not found: GEMM uses the standard kernel");
            return None;
        }
        // The context is current: cuBLAS binds the handle to it.
        match blas::create_handle() {
            Ok(handle) => Some(Cublas { id, handle, context }),
            Err(e) => {
                tracing::warn!(device = %id, status = ?e.0, "cuBLAS unusable: GEMM uses the standard kernel");
                None
            }
        }
    }
}

impl Drop for Cublas {
    fn drop(&mut self) {
        // SAFETY: the handle was created in `context`, which is still
        // retained (see `Send`), and is not used again.
        unsafe {
            let _ = drv::ctx::set_current(self.context);
            let _ = blas::destroy_handle(self.handle);
        }
    }
}

impl Blas<sys::CUstream> for Cublas {
    unsafe fn sgemm(
        &mut self,
        stream: sys::CUstream,
        gemm: &Gemm,
        [a, b, c]: [DevicePtr; 3],
    ) -> Result<(), GpuError> {
        let dim = |extent: usize, what: &str| {
            i32::try_from(extent).map_err(|_| {
                GpuError::invalid(self.id, format!("gemm: {what} = {extent} exceeds cuBLAS's i32"))
            })
        };
        let (m, n, k) = (dim(gemm.m, "m")?, dim(gemm.n, "n")?, dim(gemm.k, "k")?);
        // m, n > 0 (the caller returns early otherwise); k may be 0 (then
        // c = beta * c), but a leading dimension must be at least 1.
        let ld_a = k.max(1);
        let op = blas_sys::cublasOperation_t::CUBLAS_OP_N;
        // Row-major C = A·B is column-major Cᵀ = Bᵀ·Aᵀ: hand cuBLAS b as the
        // left operand (n×k, leading dimension n) and a as the right one
        // (k×m, leading dimension k); Cᵀ is n×m with leading dimension n.
        // SAFETY: (1) the handle is used only through `&mut self`, under the
        // device's lock; (2) the stream is live in the current context;
        // (3) a, b and c are live allocations at least m·k, k·n and m·n
        // floats long (the caller's); (4) alpha and beta are host scalars
        // that outlive the call, which reads them before returning (the
        // default host pointer mode).
        unsafe {
            blas::set_stream(self.handle, stream.cast())
                .map_err(|e| cublas_error(self.id, e.0, "cublasSetStream"))?;
            blas::sgemm(
                self.handle,
                op,
                op,
                n,
                m,
                k,
                &gemm.alpha,
                b as *const f32,
                n,
                a as *const f32,
                ld_a,
                &gemm.beta,
                c as *mut f32,
                n,
            )
            .map_err(|e| cublas_error(self.id, e.0, "cublasSgemm"))
        }
    }
}
