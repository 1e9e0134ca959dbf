//! Launching the standard kernels: argument checks and the launch shapes
//! that go with each.
//!
//! [`Kernels`] is a device with its standard kernels loaded, and the typed
//! way to launch them; [`check_args`], [`gemm_args`] and [`gemm_config`] are
//! the pieces backends reuse to launch the standard GEMM from their
//! [`Device::gemm`].

use crate::device::Device;
use crate::error::GpuError;
use crate::handle::{Arg, Buffer, Gemm, KernelHandle, LaunchConfig, Stream};
use crate::kernel::{BLOCK, GEMM_TILE, Kernel};

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
        self.elementwise(device, stream, Kernel::VectorAdd, [a, b, out], None, n)
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
        self.elementwise(device, stream, Kernel::Scale, [x, out], Some(alpha), n)
    }

    /// `out = relu(x)` over `n` floats.
    pub fn relu(
        &self,
        device: &dyn Device,
        stream: Stream,
        [x, out]: [Buffer; 2],
        n: usize,
    ) -> Result<(), GpuError> {
        self.elementwise(device, stream, Kernel::Relu, [x, out], None, n)
    }

    /// `out = grad * (x > 0)` over `n` floats.
    pub fn relu_grad(
        &self,
        device: &dyn Device,
        stream: Stream,
        [x, grad, out]: [Buffer; 3],
        n: usize,
    ) -> Result<(), GpuError> {
        self.elementwise(device, stream, Kernel::ReluGrad, [x, grad, out], None, n)
    }

    /// A one-dimensional kernel over `n` floats: its `B` buffers (each at
    /// least `n` long), then `alpha` if it takes one, then `n`.
    fn elementwise<const B: usize>(
        &self,
        device: &dyn Device,
        stream: Stream,
        kernel: Kernel,
        buffers: [Buffer; B],
        alpha: Option<f32>,
        n: usize,
    ) -> Result<(), GpuError> {
        // At most three buffers, a factor and a length.
        let mut args = [Arg::U32(0); 5];
        debug_assert!(B + usize::from(alpha.is_some()) < args.len(), "{kernel:?} fits in args");
        let scalars = alpha.map(Arg::F32).into_iter().chain([Arg::U32(u32_len(device, n)?)]);
        let mut len = 0;
        for (slot, arg) in args.iter_mut().zip(buffers.map(Arg::Buffer).into_iter().chain(scalars))
        {
            *slot = arg;
            len += 1;
        }
        let config = LaunchConfig::linear(n, BLOCK);
        self.launch(device, stream, kernel, config, &args[..len], &[n; B])
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
