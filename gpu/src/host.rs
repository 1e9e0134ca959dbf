//! Kernels written in Rust for the host: the function type such a kernel
//! is ([`HostKernelFn`]) and the view of one launch it reads its
//! arguments through ([`HostLaunch`]).
//!
//! This belongs to the interface, not to a backend: a user hands a host
//! kernel to any device as [`KernelSource::Cpu`](crate::kernel::KernelSource::Cpu),
//! and the backends that run host code (today the CPU backend) build a
//! [`HostLaunch`] over the buffers they have locked for the launch. The
//! interface never names the backend that runs it.

use std::marker::PhantomData;

use crate::error::GpuError;
use crate::handle::{Arg, LaunchConfig};
use crate::info::DeviceId;

/// A kernel written in Rust for the host. It reads its arguments through
/// the [`HostLaunch`] and returns when its work is done.
pub type HostKernelFn = fn(&mut HostLaunch<'_>) -> Result<(), GpuError>;

/// One host kernel launch: its shape, its scalars and views of its buffers.
///
/// Buffers are reached by argument index. [`io`](Self::io) hands out the
/// inputs and the one output a kernel writes together; if the output is
/// also one of the inputs (an in-place launch), that input is copied first,
/// so a kernel never sees aliased slices.
pub struct HostLaunch<'a> {
    device: DeviceId,
    kernel: &'a str,
    config: LaunchConfig,
    args: &'a [Arg],
    /// Each distinct buffer: its id and its words, borrowed mutably from
    /// the backend for the launch's whole life (`'a`). Kept as raw parts so
    /// that [`io`](Self::io) can hand out several shared views of one
    /// buffer (the same input twice) next to the one mutable view.
    views: Vec<(u64, *mut f32, usize)>,
    scratch: Vec<Vec<f32>>,
    _borrows: PhantomData<&'a mut [f32]>,
}

impl<'a> HostLaunch<'a> {
    /// A launch of `kernel` (its name, for errors) on `device`, over the
    /// buffers `views` (each distinct buffer's id and its words), which the
    /// caller lends for as long as the launch lives. A buffer argument whose
    /// id is not among them is an error when the kernel asks for it.
    pub fn new(
        device: DeviceId,
        kernel: &'a str,
        config: LaunchConfig,
        args: &'a [Arg],
        views: impl IntoIterator<Item = (u64, &'a mut [f32])>,
    ) -> Self {
        let views: Vec<(u64, *mut f32, usize)> =
            views.into_iter().map(|(id, words)| (id, words.as_mut_ptr(), words.len())).collect();
        HostLaunch {
            device,
            kernel,
            config,
            args,
            views,
            scratch: Vec::new(),
            _borrows: PhantomData,
        }
    }

    /// The launch's shape.
    pub fn config(&self) -> LaunchConfig {
        self.config
    }

    /// The device it runs on.
    pub fn device(&self) -> DeviceId {
        self.device
    }

    /// The number of arguments.
    pub fn arg_count(&self) -> usize {
        self.args.len()
    }

    fn error(&self, detail: String) -> GpuError {
        GpuError::invalid(self.device, format!("{}: {detail}", self.kernel))
    }

    /// Argument `index` as a `u32`.
    pub fn u32(&self, index: usize) -> Result<u32, GpuError> {
        match self.args.get(index) {
            Some(Arg::U32(value)) => Ok(*value),
            other => Err(self.error(format!("argument {index} should be a u32, is {other:?}"))),
        }
    }

    /// Argument `index` as an `f32`.
    pub fn f32(&self, index: usize) -> Result<f32, GpuError> {
        match self.args.get(index) {
            Some(Arg::F32(value)) => Ok(*value),
            other => Err(self.error(format!("argument {index} should be an f32, is {other:?}"))),
        }
    }

    fn view(&self, index: usize) -> Result<(u64, *mut f32, usize), GpuError> {
        let Some(Arg::Buffer(buffer)) = self.args.get(index) else {
            return Err(self.error(format!(
                "argument {index} should be a buffer, is {:?}",
                self.args.get(index)
            )));
        };
        let &(id, ptr, words) =
            self.views.iter().find(|(id, _, _)| *id == buffer.id).ok_or_else(|| {
                self.error(format!(
                    "argument {index}: buffer {} was not bound to this launch",
                    buffer.id
                ))
            })?;
        // A buffer's words round its bytes up; a kernel sees whole floats only.
        Ok((id, ptr, words.min(buffer.bytes / 4)))
    }

    /// Read-only views of buffer arguments `inputs` and a mutable view of
    /// buffer argument `output`.
    pub fn io<const N: usize>(
        &mut self,
        inputs: [usize; N],
        output: usize,
    ) -> Result<([&[f32]; N], &mut [f32]), GpuError> {
        let (out_id, out_ptr, out_len) = self.view(output)?;
        let mut resolved = [(std::ptr::null::<f32>(), 0usize); N];
        for (slot, &index) in resolved.iter_mut().zip(&inputs) {
            let (id, ptr, len) = self.view(index)?;
            *slot = if id == out_id {
                // SAFETY: `ptr` points at `len` initialised floats of a
                // buffer lent to this launch for `'a` (see `new`), and no
                // mutable view of it exists yet (views are only handed out
                // below, and the `&mut self` borrow ends any earlier ones).
                let copy = unsafe { std::slice::from_raw_parts(ptr, len) }.to_vec();
                self.scratch.push(copy);
                let copy = self.scratch.last().expect("just pushed");
                (copy.as_ptr(), copy.len())
            } else {
                (ptr.cast_const(), len)
            };
        }
        // SAFETY: 1. every pointer names initialised floats that stay valid
        // while `self` is borrowed: buffer words are lent for `'a`, which
        // outlives `self` (`new` took them as `&'a mut [f32]`), and scratch
        // copies are never moved or freed before `self` drops (`scratch`
        // only grows, and a `Vec`'s heap data does not move when the outer
        // `Vec` reallocates). 2. Views of different entries never
        // overlap: each entry was its own `&'a mut [f32]` borrow. 3. The output is the only
        // mutable view, and no input view aliases it: an input that named
        // the output's buffer was copied to scratch above. 4. The views
        // borrow `self` mutably, so no other call can hand out views of the
        // same words while they live.
        unsafe {
            let views = resolved.map(|(ptr, len)| std::slice::from_raw_parts(ptr, len));
            Ok((views, std::slice::from_raw_parts_mut(out_ptr, out_len)))
        }
    }
}
