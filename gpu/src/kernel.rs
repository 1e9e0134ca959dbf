//! What a kernel is: the standard kernels every backend ships (their names,
//! argument lists and block sizes), and a user kernel's source.
//!
//! Each standard kernel is written once per backend language: CUDA C
//! (`kernels/cuda/*.cu`, which ROCm also compiles, behind
//! `kernels/hip/prelude.h`), WGSL (`kernels/wgsl/*.wgsl`) and Rust in the
//! CPU backend; each is checked against the CPU's results in the tests. All work on row-major `f32` data. Buffers come first in each
//! argument list, then scalars, as [`Arg`](crate::handle::Arg) says. How to
//! launch them with checked arguments is [`crate::launch`].

use crate::host::HostKernelFn;

/// Threads per block of the one-dimensional kernels (and of the reductions'
/// single block). Every backend's source is written for this size.
pub const BLOCK: u32 = 256;

/// The tile edge of the standard GEMM kernel: blocks of `GEMM_TILE` ×
/// `GEMM_TILE` threads, each computing one element of `c`.
pub const GEMM_TILE: u32 = 16;

/// The standard kernels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kernel {
    /// Does nothing: `[n: u32]`. Measures launch overhead.
    Empty,
    /// `out[i] = a[i] + b[i]`: `[a, b, out, n: u32]`.
    VectorAdd,
    /// `out[i] = alpha * x[i]`: `[x, out, alpha: f32, n: u32]`.
    Scale,
    /// `out[i] = max(x[i], 0)`: `[x, out, n: u32]`.
    Relu,
    /// `out[i] = grad[i]` where `x[i] > 0`, else 0: `[x, grad, out, n: u32]`.
    ReluGrad,
    /// `out[0] = Σ x[i]`: `[x, out, n: u32]`, one block of [`BLOCK`] threads.
    Sum,
    /// `out[0] = max x[i]` (−∞ for n = 0): `[x, out, n: u32]`, one block of
    /// [`BLOCK`] threads.
    Max,
    /// Row-wise softmax of a `rows` × `cols` matrix: `[x, out, rows: u32,
    /// cols: u32]`, one block of [`BLOCK`] threads per row.
    Softmax,
    /// `c = alpha * a · b + beta * c` with `a` m×k, `b` k×n: `[a, b, c, m: u32,
    /// n: u32, k: u32, alpha: f32, beta: f32]`, blocks of [`GEMM_TILE`]²
    /// threads, grid `(⌈n/16⌉, ⌈m/16⌉)`.
    Gemm,
}

impl Kernel {
    /// Every standard kernel.
    pub const ALL: [Kernel; 9] = [
        Kernel::Empty,
        Kernel::VectorAdd,
        Kernel::Scale,
        Kernel::Relu,
        Kernel::ReluGrad,
        Kernel::Sum,
        Kernel::Max,
        Kernel::Softmax,
        Kernel::Gemm,
    ];

    /// The kernel's name: its entry point in every backend's source.
    pub fn name(self) -> &'static str {
        match self {
            Kernel::Empty => "zbmd_empty",
            Kernel::VectorAdd => "zbmd_vector_add",
            Kernel::Scale => "zbmd_scale",
            Kernel::Relu => "zbmd_relu",
            Kernel::ReluGrad => "zbmd_relu_grad",
            Kernel::Sum => "zbmd_sum",
            Kernel::Max => "zbmd_max",
            Kernel::Softmax => "zbmd_softmax",
            Kernel::Gemm => "zbmd_gemm",
        }
    }

    /// How many buffers, then how many scalars, the kernel takes.
    pub fn arity(self) -> (usize, usize) {
        match self {
            Kernel::Empty => (0, 1),
            Kernel::VectorAdd => (3, 1),
            Kernel::Scale => (2, 2),
            Kernel::Relu => (2, 1),
            Kernel::ReluGrad => (3, 1),
            Kernel::Sum | Kernel::Max => (2, 1),
            Kernel::Softmax => (2, 2),
            Kernel::Gemm => (3, 5),
        }
    }
}

/// A kernel's source in one backend's language, for
/// [`Device::compile`](crate::device::Device::compile).
#[derive(Debug, Clone)]
pub enum KernelSource {
    /// CUDA C, compiled by NVRTC; `entry` is an `extern "C" __global__`.
    Cuda {
        /// The entry point.
        entry: String,
        /// The source.
        source: String,
    },
    /// HIP C++, compiled by hiprtc; `entry` is an `extern "C" __global__`.
    Hip {
        /// The entry point.
        entry: String,
        /// The source.
        source: String,
    },
    /// WGSL, compiled to SPIR-V by naga; `entry` is a `@compute` function.
    Wgsl {
        /// The entry point.
        entry: String,
        /// The source.
        source: String,
    },
    /// A Rust function run on the host (by the CPU backend).
    Cpu {
        /// Its name, for logs and errors.
        entry: String,
        /// The function.
        function: HostKernelFn,
    },
}

impl KernelSource {
    /// The entry point's name.
    pub fn entry(&self) -> &str {
        match self {
            KernelSource::Cuda { entry, .. }
            | KernelSource::Hip { entry, .. }
            | KernelSource::Wgsl { entry, .. }
            | KernelSource::Cpu { entry, .. } => entry,
        }
    }
}
