//! The standard kernels every backend ships, their argument lists, and the
//! launch shapes that go with them.
//!
//! Each kernel is written once per backend, in that backend's language
//! (`kernels/cuda/*.cu`, `kernels/hip/*.hip`, `kernels/wgsl/*.wgsl`, Rust in
//! [`crate::cpu`]), and checked against the CPU's results in the tests. All
//! work on row-major `f32` data. Buffers come first in each argument list,
//! then scalars, as [`Arg`] says.

use crate::device::{Arg, Buffer, Device, KernelHandle, LaunchConfig, Stream};
use crate::error::GpuError;

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

/// A kernel's source in one backend's language, for [`Device::compile`].
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
    /// A Rust function run on the CPU.
    Cpu {
        /// Its name, for logs and errors.
        entry: String,
        /// The function.
        function: crate::cpu::CpuKernelFn,
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

/// Checks a standard kernel's arguments: count, order (buffers first) and
/// that no buffer is smaller than `min_f32[i]` floats.
pub fn check_args(
    device: &dyn Device,
    kernel: Kernel,
    args: &[Arg],
    min_f32: &[usize],
) -> Result<(), GpuError> {
    let id = device.id();
    let (buffers, scalars) = kernel.arity();
    if args.len() != buffers + scalars {
        return Err(GpuError::invalid(
            id,
            format!("{} takes {} arguments, got {}", kernel.name(), buffers + scalars, args.len()),
        ));
    }
    for (index, arg) in args.iter().enumerate() {
        let is_buffer = matches!(arg, Arg::Buffer(_));
        if is_buffer != (index < buffers) {
            return Err(GpuError::invalid(
                id,
                format!("{}: argument {index} has the wrong kind ({arg:?})", kernel.name()),
            ));
        }
        let (Arg::Buffer(buffer), Some(&need)) = (arg, min_f32.get(index)) else {
            continue;
        };
        if buffer.len_f32() < need {
            return Err(GpuError::invalid(
                id,
                format!(
                    "{}: buffer argument {index} holds {} f32 but {need} are needed",
                    kernel.name(),
                    buffer.len_f32()
                ),
            ));
        }
    }
    Ok(())
}

/// A device with its standard kernels loaded: the typed way to launch them.
///
/// Each method checks sizes, picks the standard launch shape and submits
/// to `stream`; none waits for the result.
pub struct Kernels {
    handles: [KernelHandle; Kernel::ALL.len()],
}

impl Kernels {
    /// Loads every standard kernel on `device`.
    pub fn load(device: &dyn Device) -> Result<Self, GpuError> {
        let mut handles = [KernelHandle(0); Kernel::ALL.len()];
        for (slot, kernel) in handles.iter_mut().zip(Kernel::ALL) {
            *slot = device.load_kernel(kernel)?;
        }
        Ok(Kernels { handles })
    }

    /// The handle of one standard kernel.
    pub fn handle(&self, kernel: Kernel) -> KernelHandle {
        self.handles[kernel as usize]
    }

    fn launch(
        &self,
        device: &dyn Device,
        stream: Stream,
        kernel: Kernel,
        config: LaunchConfig,
        args: &[Arg],
        min_f32: &[usize],
    ) -> Result<(), GpuError> {
        check_args(device, kernel, args, min_f32)?;
        device.launch(stream, self.handle(kernel), config, args)
    }

    /// The empty kernel over `n` threads.
    pub fn empty(&self, device: &dyn Device, stream: Stream, n: usize) -> Result<(), GpuError> {
        let config = LaunchConfig::linear(n, BLOCK);
        self.launch(device, stream, Kernel::Empty, config, &[Arg::U32(u32_len(device, n)?)], &[])
    }

    /// `out = a + b` over `n` floats.
    pub fn vector_add(
        &self,
        device: &dyn Device,
        stream: Stream,
        [a, b, out]: [Buffer; 3],
        n: usize,
    ) -> Result<(), GpuError> {
        let args =
            [Arg::Buffer(a), Arg::Buffer(b), Arg::Buffer(out), Arg::U32(u32_len(device, n)?)];
        let config = LaunchConfig::linear(n, BLOCK);
        self.launch(device, stream, Kernel::VectorAdd, config, &args, &[n, n, n])
    }

    /// `out = alpha * x` over `n` floats.
    pub fn scale(
        &self,
        device: &dyn Device,
        stream: Stream,
        [x, out]: [Buffer; 2],
        alpha: f32,
        n: usize,
    ) -> Result<(), GpuError> {
        let args =
            [Arg::Buffer(x), Arg::Buffer(out), Arg::F32(alpha), Arg::U32(u32_len(device, n)?)];
        let config = LaunchConfig::linear(n, BLOCK);
        self.launch(device, stream, Kernel::Scale, config, &args, &[n, n])
    }

    /// `out = relu(x)` over `n` floats.
    pub fn relu(
        &self,
        device: &dyn Device,
        stream: Stream,
        [x, out]: [Buffer; 2],
        n: usize,
    ) -> Result<(), GpuError> {
        let args = [Arg::Buffer(x), Arg::Buffer(out), Arg::U32(u32_len(device, n)?)];
        let config = LaunchConfig::linear(n, BLOCK);
        self.launch(device, stream, Kernel::Relu, config, &args, &[n, n])
    }

    /// `out = grad * (x > 0)` over `n` floats.
    pub fn relu_grad(
        &self,
        device: &dyn Device,
        stream: Stream,
        [x, grad, out]: [Buffer; 3],
        n: usize,
    ) -> Result<(), GpuError> {
        let args =
            [Arg::Buffer(x), Arg::Buffer(grad), Arg::Buffer(out), Arg::U32(u32_len(device, n)?)];
        let config = LaunchConfig::linear(n, BLOCK);
        self.launch(device, stream, Kernel::ReluGrad, config, &args, &[n, n, n])
    }

    /// `out[0] = Σ x[..n]`.
    pub fn sum(
        &self,
        device: &dyn Device,
        stream: Stream,
        [x, out]: [Buffer; 2],
        n: usize,
    ) -> Result<(), GpuError> {
        self.reduce(device, stream, Kernel::Sum, [x, out], n)
    }

    /// `out[0] = max x[..n]`.
    pub fn max(
        &self,
        device: &dyn Device,
        stream: Stream,
        [x, out]: [Buffer; 2],
        n: usize,
    ) -> Result<(), GpuError> {
        self.reduce(device, stream, Kernel::Max, [x, out], n)
    }

    fn reduce(
        &self,
        device: &dyn Device,
        stream: Stream,
        kernel: Kernel,
        [x, out]: [Buffer; 2],
        n: usize,
    ) -> Result<(), GpuError> {
        let args = [Arg::Buffer(x), Arg::Buffer(out), Arg::U32(u32_len(device, n)?)];
        let config = LaunchConfig { grid: [1, 1, 1], block: [BLOCK, 1, 1] };
        self.launch(device, stream, kernel, config, &args, &[n, 1])
    }

    /// Row-wise softmax of a `rows` × `cols` matrix.
    pub fn softmax(
        &self,
        device: &dyn Device,
        stream: Stream,
        [x, out]: [Buffer; 2],
        rows: usize,
        cols: usize,
    ) -> Result<(), GpuError> {
        let n = rows
            .checked_mul(cols)
            .ok_or_else(|| GpuError::invalid(device.id(), "softmax: rows × cols overflows"))?;
        let args = [
            Arg::Buffer(x),
            Arg::Buffer(out),
            Arg::U32(u32_len(device, rows)?),
            Arg::U32(u32_len(device, cols)?),
        ];
        let config =
            LaunchConfig { grid: [u32_len(device, rows.max(1))?, 1, 1], block: [BLOCK, 1, 1] };
        self.launch(device, stream, Kernel::Softmax, config, &args, &[n, n])
    }

    /// The standard GEMM kernel (not the vendor library: see [`Device::gemm`]).
    pub fn gemm(&self, device: &dyn Device, stream: Stream, gemm: &Gemm) -> Result<(), GpuError> {
        gemm.validate(device.id())?;
        let args = gemm_args(device, gemm)?;
        self.launch(device, stream, Kernel::Gemm, gemm_config(gemm), &args, &[])
    }
}

use crate::device::Gemm;

/// The standard GEMM kernel's arguments for `gemm`.
pub fn gemm_args(device: &dyn Device, gemm: &Gemm) -> Result<[Arg; 8], GpuError> {
    Ok([
        Arg::Buffer(gemm.a),
        Arg::Buffer(gemm.b),
        Arg::Buffer(gemm.c),
        Arg::U32(u32_len(device, gemm.m)?),
        Arg::U32(u32_len(device, gemm.n)?),
        Arg::U32(u32_len(device, gemm.k)?),
        Arg::F32(gemm.alpha),
        Arg::F32(gemm.beta),
    ])
}

/// The standard GEMM kernel's launch shape for `gemm`.
pub fn gemm_config(gemm: &Gemm) -> LaunchConfig {
    let tiles = |extent: usize| extent.div_ceil(GEMM_TILE as usize).max(1) as u32;
    LaunchConfig { grid: [tiles(gemm.n), tiles(gemm.m), 1], block: [GEMM_TILE, GEMM_TILE, 1] }
}

fn u32_len(device: &dyn Device, n: usize) -> Result<u32, GpuError> {
    u32::try_from(n).map_err(|_| {
        GpuError::invalid(device.id(), format!("{n} elements exceed a kernel's u32 index"))
    })
}
