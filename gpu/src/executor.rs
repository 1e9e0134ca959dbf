//! The device work of a kernel actor, without the actor: an [`Executor`]
//! owns one stream on one device, the standard kernels loaded there, and
//! device buffers for a job's inputs and output, grown as jobs need and
//! reused after.
//!
//! Benchmarks call one directly as the baseline of the actor's overhead.

use std::sync::Arc;

use crate::device::Device;
use crate::error::GpuError;
use crate::handle::{Buffer, Gemm, Stream};
use crate::job::{Job, Op};
use crate::launch::Kernels;

/// Runs jobs on one device through one stream, keeping a device buffer per
/// input and one for the output, grown as jobs need and reused after.
///
/// This is the device work of a kernel actor, without the actor:
/// benchmarks call it directly as the baseline of the actor's overhead.
pub struct Executor {
    device: Arc<dyn Device>,
    stream: Stream,
    kernels: Kernels,
    /// Cached buffers: inputs first, the output last.
    scratch: Vec<Option<Buffer>>,
}

impl Executor {
    /// Opens a stream on `device` and loads the standard kernels.
    pub fn open(device: Arc<dyn Device>) -> Result<Executor, GpuError> {
        let stream = device.create_stream()?;
        match Kernels::load(&*device) {
            Ok(kernels) => Ok(Executor { device, stream, kernels, scratch: vec![None; 3] }),
            Err(error) => {
                let _ = device.destroy_stream(stream);
                Err(error)
            }
        }
    }

    /// The device it runs on.
    pub fn device(&self) -> &Arc<dyn Device> {
        &self.device
    }

    /// Its stream.
    pub fn stream(&self) -> Stream {
        self.stream
    }

    /// The standard kernels, loaded on its device.
    pub fn kernels(&self) -> &Kernels {
        &self.kernels
    }

    /// A cached buffer of at least `len` floats in `slot`.
    fn buffer(&mut self, slot: usize, len: usize) -> Result<Buffer, GpuError> {
        let bytes = len.max(1) * 4;
        if let Some(buffer) = self.scratch[slot] {
            if buffer.bytes >= bytes {
                return Ok(buffer);
            }
            self.scratch[slot] = None;
            self.device.free(buffer)?;
        }
        let buffer = self.device.alloc(bytes)?;
        self.scratch[slot] = Some(buffer);
        Ok(buffer)
    }

    /// Frees the cached buffers (after an out-of-memory error, say).
    pub fn release_scratch(&mut self) {
        for buffer in self.scratch.iter_mut().filter_map(Option::take) {
            let _ = self.device.free(buffer);
        }
    }

    /// Runs `job`: uploads its inputs, launches, and leaves the result in
    /// `out` (resized to the op's output length).
    pub fn run(&mut self, job: &Job, out: &mut Vec<f32>) -> Result<(), GpuError> {
        let mut inputs = [None; 2];
        for (slot, input) in job.inputs().iter().enumerate() {
            let buffer = self.buffer(slot, input.len())?;
            self.device.write(self.stream, buffer, 0, bytemuck::cast_slice(input))?;
            inputs[slot] = Some(buffer);
        }
        let output_len = job.op().output_len();
        let output = self.buffer(2, output_len)?;
        let (device, stream, kernels) = (&*self.device, self.stream, &self.kernels);
        let input = |slot: usize| inputs[slot].expect("validated by Job::new");
        match job.op() {
            Op::Empty { n } => kernels.empty(device, stream, n)?,
            Op::VectorAdd { n } => {
                kernels.vector_add(device, stream, [input(0), input(1), output], n)?
            }
            Op::Scale { alpha, n } => {
                kernels.scale(device, stream, [input(0), output], alpha, n)?
            }
            Op::Relu { n } => kernels.relu(device, stream, [input(0), output], n)?,
            Op::ReluGrad { n } => {
                kernels.relu_grad(device, stream, [input(0), input(1), output], n)?
            }
            Op::Sum { n } => kernels.sum(device, stream, [input(0), output], n)?,
            Op::Max { n } => kernels.max(device, stream, [input(0), output], n)?,
            Op::Softmax { rows, cols } => {
                kernels.softmax(device, stream, [input(0), output], rows, cols)?
            }
            Op::Gemm { m, n, k } => {
                let gemm =
                    Gemm { m, n, k, alpha: 1.0, beta: 0.0, a: input(0), b: input(1), c: output };
                device.gemm(stream, &gemm)?
            }
        }
        out.clear();
        out.resize(output_len, 0.0);
        if output_len == 0 {
            self.device.synchronize(self.stream)
        } else {
            self.device.read(self.stream, output, 0, bytemuck::cast_slice_mut(out))
        }
    }
}

impl Drop for Executor {
    fn drop(&mut self) {
        self.release_scratch();
        let _ = self.device.destroy_stream(self.stream);
    }
}
