//! [`TensorError`]: what can go wrong building a tensor or computing with
//! one, each variant naming the operation that was attempted.

use zbmd_gpu::ErrorClass;

/// Errors from tensor construction and tensor operations.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum TensorError {
    /// Two operands' shapes are incompatible for an operation.
    #[error("{op}: shapes {left:?} and {right:?} are incompatible")]
    ShapeMismatch {
        /// The operation that was attempted.
        op: &'static str,
        /// The first operand's shape.
        left: Vec<usize>,
        /// The second operand's shape.
        right: Vec<usize>,
    },
    /// A buffer's length does not match the element count of the shape it was
    /// given.
    #[error("{op}: shape {shape:?} holds {expected} elements but {actual} were given")]
    DataLength {
        /// The operation that was attempted.
        op: &'static str,
        /// The requested shape.
        shape: Vec<usize>,
        /// Elements the shape holds.
        expected: usize,
        /// Elements supplied.
        actual: usize,
    },
    /// An operand has the wrong number of dimensions.
    #[error("{op}: needs a tensor of rank {expected}, got shape {shape:?}")]
    Rank {
        /// The operation that was attempted.
        op: &'static str,
        /// The rank the operation needs.
        expected: usize,
        /// The operand's shape.
        shape: Vec<usize>,
    },
    /// An axis is out of range for a shape.
    #[error("{op}: axis {axis} is out of range for shape {shape:?}")]
    Axis {
        /// The operation that was attempted.
        op: &'static str,
        /// The requested axis.
        axis: usize,
        /// The operand's shape.
        shape: Vec<usize>,
    },
    /// An index is out of bounds.
    #[error("{op}: index {index:?} is out of bounds for shape {shape:?}")]
    Index {
        /// The operation that was attempted.
        op: &'static str,
        /// The requested index.
        index: Vec<usize>,
        /// The indexed shape.
        shape: Vec<usize>,
    },
    /// A class target or an embedding id is out of range.
    #[error("{op}: entry {position} is {value}, outside 0..{bound}")]
    OutOfRange {
        /// The operation that was attempted.
        op: &'static str,
        /// Position of the offending entry in the id or target list.
        position: usize,
        /// The offending value.
        value: usize,
        /// The exclusive upper bound (classes or table rows).
        bound: usize,
    },
    /// An operation needs a one-element tensor (for example the loss passed to
    /// `backward`).
    #[error("{op}: needs a scalar (one element), got shape {shape:?}")]
    NotScalar {
        /// The operation that was attempted.
        op: &'static str,
        /// The operand's shape.
        shape: Vec<usize>,
    },
    /// A [`Var`](super::Var) from another graph, or from before
    /// [`Graph::clear`](super::Graph::clear), was used.
    #[error("{op}: variable #{index} belongs to another graph or to one that was cleared")]
    ForeignVar {
        /// The operation that was attempted.
        op: &'static str,
        /// The variable's index on its own tape.
        index: usize,
    },
    /// An input value that must be a whole non-negative number was not.
    #[error("{op}: entry {position} is {value}, not a non-negative whole number")]
    NotAnIndex {
        /// The operation that was attempted.
        op: &'static str,
        /// Position of the offending entry.
        position: usize,
        /// The offending value.
        value: f32,
    },
    /// A parameter of an operation is out of its valid range.
    #[error("{op}: {what}")]
    InvalidArgument {
        /// The operation that was attempted.
        op: &'static str,
        /// What is wrong.
        what: String,
    },
    /// A host accessor was called on a tensor whose elements live on a
    /// device.
    #[error("{op}: tensor lives on {device}; move it to the host first (Tensor::to_host)")]
    OnDevice {
        /// The operation that was attempted.
        op: &'static str,
        /// The device holding the elements (`vulkan:0`).
        device: String,
    },
    /// A shape too large to hold: its element count (or a stride) overflows
    /// `usize`, or host memory for its elements cannot be allocated.
    #[error("{op}: shape {shape:?} is too large: {reason}")]
    TooLarge {
        /// The operation that was attempted.
        op: &'static str,
        /// The requested shape.
        shape: Vec<usize>,
        /// What does not fit (the overflow, or the bytes that could not be
        /// allocated).
        reason: String,
    },
    /// A device (or the pool running work on devices) failed.
    #[error("{op}: {class}: {message}")]
    Device {
        /// The operation that was attempted.
        op: &'static str,
        /// What the caller can do about it (retry, ask for less memory,
        /// move to another device, fix the request).
        class: ErrorClass,
        /// The device's or the pool's own description of the failure.
        message: String,
    },
}

impl TensorError {
    /// A device failure during `op`, classified as zbmd-gpu classifies it.
    pub fn device(op: &'static str, error: &zbmd_gpu::GpuError) -> TensorError {
        TensorError::Device { op, class: error.class(), message: error.to_string() }
    }
}
