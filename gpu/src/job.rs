//! What a kernel actor runs: a [`Job`] is an [`Op`] and its inputs in host
//! memory, so that any device can run it (and run it again after a
//! migration), and [`JobError`] says why one did not complete.

use std::sync::Arc;
use std::time::Duration;

use crate::error::GpuError;
use crate::info::DeviceId;

/// One operation of a [`Job`], with its sizes. Inputs are in the order the
/// standard kernel takes them ([`crate::kernel::Kernel`]).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Op {
    /// The empty kernel over `n` threads; no inputs, no output.
    Empty {
        /// Threads.
        n: usize,
    },
    /// `a + b`.
    VectorAdd {
        /// Elements.
        n: usize,
    },
    /// `alpha * x`.
    Scale {
        /// The factor.
        alpha: f32,
        /// Elements.
        n: usize,
    },
    /// `max(x, 0)`.
    Relu {
        /// Elements.
        n: usize,
    },
    /// `grad * (x > 0)`, inputs `x` then `grad`.
    ReluGrad {
        /// Elements.
        n: usize,
    },
    /// `Σ x`, one output.
    Sum {
        /// Elements.
        n: usize,
    },
    /// `max x`, one output.
    Max {
        /// Elements.
        n: usize,
    },
    /// Row-wise softmax.
    Softmax {
        /// Rows.
        rows: usize,
        /// Columns.
        cols: usize,
    },
    /// `a · b` with `a` m×k and `b` k×n, row-major.
    Gemm {
        /// Rows of the result.
        m: usize,
        /// Columns of the result.
        n: usize,
        /// The shared dimension.
        k: usize,
    },
}

impl Op {
    /// The lengths its inputs must have.
    pub fn input_lens(&self) -> Vec<usize> {
        match *self {
            Op::Empty { .. } => vec![],
            Op::VectorAdd { n } | Op::ReluGrad { n } => vec![n, n],
            Op::Scale { n, .. } | Op::Relu { n } | Op::Sum { n } | Op::Max { n } => vec![n],
            Op::Softmax { rows, cols } => vec![rows.saturating_mul(cols)],
            Op::Gemm { m, n, k } => vec![m.saturating_mul(k), k.saturating_mul(n)],
        }
    }

    /// The length of its result.
    pub fn output_len(&self) -> usize {
        match *self {
            Op::Empty { .. } => 0,
            Op::VectorAdd { n } | Op::ReluGrad { n } | Op::Scale { n, .. } | Op::Relu { n } => n,
            Op::Sum { .. } | Op::Max { .. } => 1,
            Op::Softmax { rows, cols } => rows.saturating_mul(cols),
            Op::Gemm { m, n, .. } => m.saturating_mul(n),
        }
    }
}

/// Work for a kernel actor: an operation and its inputs, in host memory so
/// that any device can run it (and run it again after a migration).
/// Cloning shares the inputs.
#[derive(Debug, Clone)]
pub struct Job {
    op: Op,
    inputs: Vec<Arc<[f32]>>,
}

impl Job {
    /// A job, checked: as many inputs as the op takes, each of its length.
    pub fn new(op: Op, inputs: Vec<Arc<[f32]>>) -> Result<Job, JobError> {
        let lens = op.input_lens();
        if inputs.len() != lens.len() {
            return Err(JobError::Invalid(format!(
                "{op:?} takes {} inputs, got {}",
                lens.len(),
                inputs.len()
            )));
        }
        for (index, (input, &len)) in inputs.iter().zip(&lens).enumerate() {
            if input.len() != len {
                return Err(JobError::Invalid(format!(
                    "{op:?}: input {index} has {} elements, {len} expected",
                    input.len()
                )));
            }
        }
        Ok(Job { op, inputs })
    }

    /// The operation.
    pub fn op(&self) -> Op {
        self.op
    }

    /// The inputs.
    pub fn inputs(&self) -> &[Arc<[f32]>] {
        &self.inputs
    }
}

/// " (N bytes asked)" for an allocation's out-of-memory, nothing otherwise.
fn asked(requested_bytes: usize) -> String {
    if requested_bytes == 0 { String::new() } else { format!(" ({requested_bytes} bytes asked)") }
}

/// Why a job did not complete.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum JobError {
    /// The job itself is malformed.
    #[error("invalid job: {0}")]
    Invalid(String),
    /// The job did not fit in device memory, even with the actor's cached
    /// buffers freed. Recoverable: retry with less.
    #[error("{device}: out of memory for this job{}", asked(*.requested_bytes))]
    OutOfMemory {
        /// The device.
        device: DeviceId,
        /// The bytes of the allocation that failed (0 when the device ran
        /// out during a launch or a wait rather than an allocation).
        requested_bytes: usize,
    },
    /// The device failed under the job; the actor is moving to another
    /// device. [`GpuPool::run`](crate::pool::GpuPool::run) retries these itself.
    #[error("{device} failed: {error}")]
    DeviceFailed {
        /// The device.
        device: DeviceId,
        /// What it said.
        error: GpuError,
    },
    /// A device error that retrying cannot fix (a bad request, or transient
    /// errors past the retry bound).
    #[error(transparent)]
    Gpu(GpuError),
    /// No device is left to run the job: every one is critical, or the job
    /// moved `max_migrations` times.
    #[error("no healthy device to run the job after {migrations} migrations (last error: {last})")]
    NoHealthyDevice {
        /// Migrations made.
        migrations: u32,
        /// The last device failure, in words.
        last: String,
    },
    /// The job did not complete within the pool's call timeout.
    #[error("the job did not complete in {0:?}")]
    Timeout(Duration),
    /// The runtime refused the request (shutting down, say).
    #[error("runtime: {0}")]
    Runtime(String),
}
