//! The handles a device deals in, and the work described with them.
//!
//! Buffers, streams, events and kernels are small `Copy` handles that name
//! an entry in one device's own tables (see [`crate::device`] for what a
//! handle used on the wrong device means). A launch is described by a
//! [`LaunchConfig`] and a list of [`Arg`]s; a matrix product by a [`Gemm`].

use crate::error::GpuError;
use crate::info::DeviceId;

/// A device buffer: `bytes` bytes of device memory, named by a handle.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Buffer {
    /// The device's handle for it.
    pub id: u64,
    /// Its size in bytes.
    pub bytes: usize,
}

impl Buffer {
    /// How many `f32`s it holds.
    pub fn len_f32(&self) -> usize {
        self.bytes / 4
    }
}

/// An in-order queue of work on one device.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Stream(pub u32);

/// A point in a stream's work that other streams (or the host) can wait for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Event(pub u64);

/// A loaded (compiled) kernel on one device.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct KernelHandle(pub u32);

/// A launch's shape: `grid` blocks of `block` threads, CUDA's convention
/// (x fastest). Vulkan maps blocks to workgroups; the CPU runs blocks in
/// turn.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct LaunchConfig {
    /// Blocks in x, y, z.
    pub grid: [u32; 3],
    /// Threads per block in x, y, z.
    pub block: [u32; 3],
}

impl LaunchConfig {
    /// One dimension: enough blocks of `block` threads to cover `n`.
    pub fn linear(n: usize, block: u32) -> Self {
        let blocks = n.div_ceil(block as usize).max(1);
        LaunchConfig { grid: [blocks as u32, 1, 1], block: [block, 1, 1] }
    }

    /// Total threads launched.
    pub fn threads(&self) -> u64 {
        let blocks: u64 = self.grid.iter().map(|&g| u64::from(g)).product();
        let per_block: u64 = self.block.iter().map(|&b| u64::from(b)).product();
        blocks * per_block
    }
}

/// One kernel argument. Buffers come first in a kernel's argument list
/// and scalars after (see [`crate::kernel::Kernel`] for each standard kernel's list);
/// Vulkan binds buffers to bindings 0, 1, ... and packs the scalars into
/// push constants in order, 4 bytes each.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Arg {
    /// A device buffer.
    Buffer(Buffer),
    /// A 32-bit unsigned integer.
    U32(u32),
    /// A 32-bit float.
    F32(f32),
}

/// A row-major single-precision matrix product on device buffers:
/// `c = alpha * a · b + beta * c`, with `a` m×k, `b` k×n and `c` m×n.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Gemm {
    /// Rows of `a` and `c`.
    pub m: usize,
    /// Columns of `b` and `c`.
    pub n: usize,
    /// Columns of `a`, rows of `b`.
    pub k: usize,
    /// Scale of the product.
    pub alpha: f32,
    /// Scale of `c`'s old contents (0 overwrites, and then `c` may hold anything).
    pub beta: f32,
    /// The m×k left operand.
    pub a: Buffer,
    /// The k×n right operand.
    pub b: Buffer,
    /// The m×n result.
    pub c: Buffer,
}

impl Gemm {
    /// Checks the buffers are big enough for the shapes.
    pub fn validate(&self, device: DeviceId) -> Result<(), GpuError> {
        let need = |rows: usize, cols: usize, buffer: &Buffer, name: &str| {
            let bytes = rows
                .checked_mul(cols)
                .and_then(|elements| elements.checked_mul(4))
                .ok_or_else(|| GpuError::invalid(device, format!("gemm: {name} size overflows")))?;
            if buffer.bytes < bytes {
                return Err(GpuError::invalid(
                    device,
                    format!(
                        "gemm: {name} is {rows}x{cols} f32 ({bytes} bytes) but its buffer has {}",
                        buffer.bytes
                    ),
                ));
            }
            Ok(())
        };
        need(self.m, self.k, &self.a, "a")?;
        need(self.k, self.n, &self.b, "b")?;
        need(self.m, self.n, &self.c, "c")
    }
}
