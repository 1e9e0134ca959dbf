//! Tensors and reverse-mode automatic differentiation.
//!
//! A [`Tensor`] is an n-dimensional array with a shape, strides and a storage
//! dtype: computation is always in `f32`, while `f16` and `bf16` (through the
//! `half` crate) exist as storage formats that [`Tensor::to_dtype`] converts
//! to and from. Storage is a [`Storage`] enum: host memory, shared
//! copy-on-write between views, or one buffer on a zbmd-gpu [`Device`]
//! ([`Tensor::to_device`], [`Tensor::to_host`]). Device storage is `f32`
//! only, and a device tensor is a place to keep values, not to compute on:
//! host accessors refuse it with [`TensorError::OnDevice`] (or, where they
//! return no `Result`, panic saying so), and the graph computes on the host,
//! optionally sending its matrix products to a device through a
//! [`MatmulBackend`].
//!
//! Differentiation is a tape ([`Graph`]): every operation on [`Var`]s records
//! a node, and [`Graph::backward`] walks the tape in reverse, the classic
//! reverse-mode scheme (Griewank and Walther, *Evaluating Derivatives*, 2008).
//! Matrix products go through the `gemm` crate.

mod device;
mod graph;
mod kernels;

use std::sync::Arc;

use half::{bf16, f16};
use zbmd_gpu::{Device, DeviceId, ErrorClass};

use crate::rng::Rng;

pub use device::{DeviceData, MatmulBackend, PoolMatmul, Product};
pub use graph::{Gradients, Graph, Var};
pub use kernels::erf;

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
    /// A [`Var`] from another graph, or from before [`Graph::clear`], was used.
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

/// The storage format of a tensor's elements. Arithmetic is always `f32`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DType {
    /// IEEE 754 single precision.
    F32,
    /// IEEE 754 half precision (storage only).
    F16,
    /// bfloat16 (storage only).
    BF16,
}

impl DType {
    /// Bytes per element.
    pub fn size_bytes(self) -> usize {
        match self {
            DType::F32 => 4,
            DType::F16 | DType::BF16 => 2,
        }
    }
}

/// Host element buffers, one variant per [`DType`], shared between views.
#[derive(Debug, Clone)]
pub enum HostData {
    /// `f32` elements.
    F32(Arc<Vec<f32>>),
    /// `f16` elements.
    F16(Arc<Vec<f16>>),
    /// `bf16` elements.
    BF16(Arc<Vec<bf16>>),
}

impl HostData {
    fn dtype(&self) -> DType {
        match self {
            HostData::F32(_) => DType::F32,
            HostData::F16(_) => DType::F16,
            HostData::BF16(_) => DType::BF16,
        }
    }

    fn get(&self, at: usize) -> f32 {
        match self {
            HostData::F32(v) => v[at],
            HostData::F16(v) => v[at].to_f32(),
            HostData::BF16(v) => v[at].to_f32(),
        }
    }
}

/// Where a tensor's elements live.
#[derive(Debug, Clone)]
pub enum Storage {
    /// Host memory.
    Host(HostData),
    /// One buffer on a zbmd-gpu device, in the tensor's dtype, shared
    /// between views and freed when the last of them is dropped.
    Device(DeviceData),
}

/// An n-dimensional array: shape, strides (in elements), an offset into its
/// storage, and the storage itself. Clones and views share storage; writes
/// through [`Tensor::as_f32_slice_mut`] copy first when it is shared.
#[derive(Debug, Clone)]
pub struct Tensor {
    shape: Vec<usize>,
    strides: Vec<usize>,
    offset: usize,
    storage: Storage,
}

/// The element count of `shape`, checked: every product is a `checked_mul`,
/// and dimensions of zero count as one so that the strides of an empty
/// tensor fit in `usize` too (`[0, 2^40, 2^40]` is refused, not wrapped).
/// Constructors call this once; element loops then run unchecked.
pub(crate) fn checked_numel(op: &'static str, shape: &[usize]) -> Result<usize, TensorError> {
    let too_large = || TensorError::TooLarge {
        op,
        shape: shape.to_vec(),
        reason: "the product of its dimensions overflows usize".to_string(),
    };
    let spans = shape.iter().try_fold(1usize, |acc, &n| acc.checked_mul(n.max(1)));
    spans.ok_or_else(too_large)?;
    Ok(if shape.contains(&0) { 0 } else { shape.iter().product() })
}

/// A vector of `len` copies of `value`, or [`TensorError::TooLarge`] when
/// the memory cannot be had (instead of aborting the process).
pub(crate) fn try_filled<T: Copy>(
    op: &'static str,
    shape: &[usize],
    len: usize,
    value: T,
) -> Result<Vec<T>, TensorError> {
    let mut out = try_with_capacity(op, shape, len)?;
    out.resize(len, value);
    Ok(out)
}

/// An empty vector with room for exactly `len` elements, or
/// [`TensorError::TooLarge`] naming the bytes that could not be allocated.
pub(crate) fn try_with_capacity<T>(
    op: &'static str,
    shape: &[usize],
    len: usize,
) -> Result<Vec<T>, TensorError> {
    let mut out = Vec::new();
    out.try_reserve_exact(len).map_err(|_| TensorError::TooLarge {
        op,
        shape: shape.to_vec(),
        reason: format!(
            "cannot allocate {} bytes for its {len} elements",
            (len as u128) * std::mem::size_of::<T>() as u128
        ),
    })?;
    Ok(out)
}

/// Row-major (C order) strides for `shape`, whose size was checked by
/// [`checked_numel`] (so no product here overflows).
pub(crate) fn contiguous_strides(shape: &[usize]) -> Vec<usize> {
    let mut strides = vec![1; shape.len()];
    for d in (0..shape.len().saturating_sub(1)).rev() {
        strides[d] = strides[d + 1] * shape[d + 1];
    }
    strides
}

impl Tensor {
    /// A tensor of `shape` from row-major `data`; the lengths must agree.
    pub fn from_vec(data: Vec<f32>, shape: &[usize]) -> Result<Tensor, TensorError> {
        let expected = checked_numel("from_vec", shape)?;
        if expected != data.len() {
            return Err(TensorError::DataLength {
                op: "from_vec",
                shape: shape.to_vec(),
                expected,
                actual: data.len(),
            });
        }
        Ok(Tensor::from_parts(HostData::F32(Arc::new(data)), shape))
    }

    fn from_parts(data: HostData, shape: &[usize]) -> Tensor {
        Tensor {
            shape: shape.to_vec(),
            strides: contiguous_strides(shape),
            offset: 0,
            storage: Storage::Host(data),
        }
    }

    /// A tensor of `shape` filled with `value`.
    ///
    /// # Panics
    ///
    /// When the shape is too large (see [`try_full`](Self::try_full), which
    /// takes sizes that come from users or files).
    pub fn full(shape: &[usize], value: f32) -> Tensor {
        Tensor::try_full(shape, value).unwrap_or_else(|error| panic!("{error}"))
    }

    /// A tensor of `shape` filled with `value`, or [`TensorError::TooLarge`]
    /// when the shape's element count overflows or its memory cannot be
    /// allocated.
    pub fn try_full(shape: &[usize], value: f32) -> Result<Tensor, TensorError> {
        let numel = checked_numel("full", shape)?;
        let data = try_filled("full", shape, numel, value)?;
        Ok(Tensor::from_parts(HostData::F32(Arc::new(data)), shape))
    }

    /// A tensor of `shape` filled with zeros.
    ///
    /// # Panics
    ///
    /// When the shape is too large (see [`try_zeros`](Self::try_zeros)).
    pub fn zeros(shape: &[usize]) -> Tensor {
        Tensor::full(shape, 0.0)
    }

    /// A tensor of `shape` filled with zeros, or [`TensorError::TooLarge`].
    pub fn try_zeros(shape: &[usize]) -> Result<Tensor, TensorError> {
        Tensor::try_full(shape, 0.0)
    }

    /// A one-element tensor of shape `[]`.
    pub fn scalar(value: f32) -> Tensor {
        Tensor::full(&[], value)
    }

    /// Standard normal samples scaled by `std`, drawn in row-major order.
    ///
    /// # Panics
    ///
    /// When the shape is too large (see [`try_randn`](Self::try_randn)).
    pub fn randn(shape: &[usize], std: f32, rng: &mut Rng) -> Tensor {
        Tensor::try_randn(shape, std, rng).unwrap_or_else(|error| panic!("{error}"))
    }

    /// Standard normal samples scaled by `std`, or [`TensorError::TooLarge`]
    /// (and `rng` untouched).
    pub fn try_randn(shape: &[usize], std: f32, rng: &mut Rng) -> Result<Tensor, TensorError> {
        Tensor::try_sampled("randn", shape, || rng.normal() * std)
    }

    /// Uniform samples in `[low, high)`, drawn in row-major order.
    ///
    /// # Panics
    ///
    /// When the shape is too large (see [`try_uniform`](Self::try_uniform)).
    pub fn uniform(shape: &[usize], low: f32, high: f32, rng: &mut Rng) -> Tensor {
        Tensor::try_uniform(shape, low, high, rng).unwrap_or_else(|error| panic!("{error}"))
    }

    /// Uniform samples in `[low, high)`, or [`TensorError::TooLarge`] (and
    /// `rng` untouched).
    pub fn try_uniform(
        shape: &[usize],
        low: f32,
        high: f32,
        rng: &mut Rng,
    ) -> Result<Tensor, TensorError> {
        Tensor::try_sampled("uniform", shape, || low + (high - low) * rng.next_f32())
    }

    /// A tensor of `shape` whose elements are `sample()`'s results in
    /// row-major order; the memory is reserved (or refused) before the first
    /// draw.
    fn try_sampled(
        op: &'static str,
        shape: &[usize],
        mut sample: impl FnMut() -> f32,
    ) -> Result<Tensor, TensorError> {
        let numel = checked_numel(op, shape)?;
        let mut data = try_with_capacity(op, shape, numel)?;
        data.extend((0..numel).map(|_| sample()));
        Ok(Tensor::from_parts(HostData::F32(Arc::new(data)), shape))
    }

    /// The shape.
    pub fn shape(&self) -> &[usize] {
        &self.shape
    }

    /// The strides, in elements.
    pub fn strides(&self) -> &[usize] {
        &self.strides
    }

    /// The number of dimensions.
    pub fn rank(&self) -> usize {
        self.shape.len()
    }

    /// The number of elements.
    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }

    /// The storage dtype.
    pub fn dtype(&self) -> DType {
        match &self.storage {
            Storage::Host(data) => data.dtype(),
            Storage::Device(data) => data.dtype(),
        }
    }

    /// The device holding the elements, or `None` for host memory.
    pub fn device(&self) -> Option<DeviceId> {
        match &self.storage {
            Storage::Host(_) => None,
            Storage::Device(data) => Some(data.device_id()),
        }
    }

    /// Whether the elements are in host memory (every accessor works).
    pub fn is_on_host(&self) -> bool {
        matches!(self.storage, Storage::Host(_))
    }

    /// A copy of this tensor on `device`, row-major, in its own dtype (the
    /// same bits come back): one allocation, one upload on a fresh stream,
    /// then a synchronize, so the copy is complete when this returns. A
    /// tensor already on this very device object is shared, not copied; one
    /// on another device goes through the host.
    pub fn to_device(&self, device: &Arc<dyn Device>) -> Result<Tensor, TensorError> {
        if let Storage::Device(data) = &self.storage {
            if data.is_on(device) {
                return Ok(self.clone());
            }
            return self.to_host()?.to_device(device);
        }
        let dense = self.row_major("to_device");
        let Storage::Host(host) = &dense.storage else {
            unreachable!("a host tensor's row-major copy is on the host")
        };
        let data = DeviceData::upload(device, host, dense.offset..dense.offset + dense.numel())?;
        Ok(Tensor {
            shape: self.shape.clone(),
            strides: contiguous_strides(&self.shape),
            offset: 0,
            storage: Storage::Device(data),
        })
    }

    /// A row-major copy of this tensor in host memory, in its own dtype,
    /// downloaded on a fresh stream (only the elements this view covers when
    /// it is contiguous, the whole buffer otherwise). A host tensor is
    /// returned as it is, shared.
    pub fn to_host(&self) -> Result<Tensor, TensorError> {
        let Storage::Device(data) = &self.storage else {
            return Ok(self.clone());
        };
        if self.is_contiguous() {
            return Ok(Tensor::from_parts(data.download(self.offset, self.numel())?, &self.shape));
        }
        let view = Tensor {
            shape: self.shape.clone(),
            strides: self.strides.clone(),
            offset: self.offset,
            storage: Storage::Host(data.download(0, data.len())?),
        };
        Ok(view.row_major("to_host"))
    }

    /// This tensor with its elements in row-major order and its dtype kept:
    /// itself when it already is, a host copy otherwise (a device tensor
    /// panics then, naming `op`). Half-precision elements are copied as bits,
    /// never through `f32`.
    fn row_major(&self, op: &'static str) -> Tensor {
        if self.is_contiguous() {
            return self.clone();
        }
        let data = match self.host_or_panic(op) {
            HostData::F32(v) => HostData::F32(self.gather(v)),
            HostData::F16(v) => HostData::F16(self.gather(v)),
            HostData::BF16(v) => HostData::BF16(self.gather(v)),
        };
        Tensor::from_parts(data, &self.shape)
    }

    /// The elements of `storage` this view shows, in row-major order.
    fn gather<T: Copy>(&self, storage: &[T]) -> Arc<Vec<T>> {
        let mut out = Vec::with_capacity(self.numel());
        self.for_each_offset(|at| out.push(storage[at]));
        Arc::new(out)
    }

    /// The storage.
    pub fn storage(&self) -> &Storage {
        &self.storage
    }

    /// Whether the elements lie in row-major order with no gaps.
    pub fn is_contiguous(&self) -> bool {
        let want = contiguous_strides(&self.shape);
        self.shape.iter().zip(self.strides.iter().zip(&want)).all(|(&n, (&s, &w))| n <= 1 || s == w)
    }

    /// The host elements, or [`TensorError::OnDevice`] naming `op`.
    fn host(&self, op: &'static str) -> Result<&HostData, TensorError> {
        match &self.storage {
            Storage::Host(data) => Ok(data),
            Storage::Device(data) => {
                Err(TensorError::OnDevice { op, device: data.device_id().to_string() })
            }
        }
    }

    /// The host elements for an accessor that returns no `Result`; panics
    /// with the [`TensorError::OnDevice`] message on a device tensor.
    fn host_or_panic(&self, op: &'static str) -> &HostData {
        self.host(op).unwrap_or_else(|error| panic!("{error}"))
    }

    /// Storage offset of each logical element, in row-major order.
    fn for_each_offset(&self, mut visit: impl FnMut(usize)) {
        let numel = self.numel();
        if numel == 0 {
            return;
        }
        let rank = self.shape.len();
        let mut index = vec![0usize; rank];
        let mut at = self.offset;
        for _ in 0..numel {
            visit(at);
            for d in (0..rank).rev() {
                index[d] += 1;
                at += self.strides[d];
                if index[d] < self.shape[d] {
                    break;
                }
                at -= self.strides[d] * self.shape[d];
                index[d] = 0;
            }
        }
    }

    /// The elements as `f32`, in row-major logical order.
    ///
    /// # Panics
    ///
    /// On a device tensor (call [`to_host`](Self::to_host) first).
    pub fn to_vec_f32(&self) -> Vec<f32> {
        if let Some(slice) = self.as_f32_slice() {
            return slice.to_vec();
        }
        let host = self.host_or_panic("to_vec_f32");
        let mut out = Vec::with_capacity(self.numel());
        self.for_each_offset(|at| out.push(host.get(at)));
        out
    }

    /// The elements, when this is a contiguous `f32` tensor in host memory
    /// (`None` on a device: see [`is_on_host`](Self::is_on_host)).
    pub fn as_f32_slice(&self) -> Option<&[f32]> {
        match &self.storage {
            Storage::Host(HostData::F32(v)) if self.is_contiguous() => {
                Some(&v[self.offset..self.offset + self.numel()])
            }
            _ => None,
        }
    }

    /// The elements for writing, when this is a contiguous `f32` tensor in
    /// host memory (`None` on a device); storage shared with another tensor
    /// is copied first.
    pub fn as_f32_slice_mut(&mut self) -> Option<&mut [f32]> {
        if !self.is_contiguous() {
            return None;
        }
        let numel = self.numel();
        let offset = self.offset;
        match &mut self.storage {
            Storage::Host(HostData::F32(v)) => Some(&mut Arc::make_mut(v)[offset..offset + numel]),
            Storage::Host(_) | Storage::Device(_) => None,
        }
    }

    /// A row-major `f32` copy (or this tensor, shared, if it already is one).
    ///
    /// # Panics
    ///
    /// On a device tensor that is not already row-major from its buffer's
    /// start (call [`to_host`](Self::to_host) first).
    pub fn contiguous(&self) -> Tensor {
        if self.dtype() == DType::F32 && self.is_contiguous() && self.offset == 0 {
            return self.clone();
        }
        self.host_or_panic("contiguous");
        Tensor::from_parts(HostData::F32(Arc::new(self.to_vec_f32())), &self.shape)
    }

    /// The same elements with a new shape of equal element count. Shares
    /// storage when contiguous, copies otherwise (which a device tensor
    /// cannot: [`TensorError::OnDevice`]).
    pub fn reshape(&self, shape: &[usize]) -> Result<Tensor, TensorError> {
        let numel = checked_numel("reshape", shape)?;
        if numel != self.numel() {
            return Err(TensorError::ShapeMismatch {
                op: "reshape",
                left: self.shape.clone(),
                right: shape.to_vec(),
            });
        }
        if !self.is_contiguous() {
            self.host("reshape (copy of a strided view)")?;
        }
        let base = if self.is_contiguous() { self.clone() } else { self.contiguous() };
        Ok(Tensor {
            shape: shape.to_vec(),
            strides: contiguous_strides(shape),
            offset: base.offset,
            storage: base.storage,
        })
    }

    /// The transpose of a 2-D tensor, as a view sharing storage.
    pub fn transpose(&self) -> Result<Tensor, TensorError> {
        if self.rank() != 2 {
            return Err(TensorError::Rank {
                op: "transpose",
                expected: 2,
                shape: self.shape.clone(),
            });
        }
        Ok(Tensor {
            shape: vec![self.shape[1], self.shape[0]],
            strides: vec![self.strides[1], self.strides[0]],
            offset: self.offset,
            storage: self.storage.clone(),
        })
    }

    /// The element at `index` (one coordinate per dimension).
    pub fn get(&self, index: &[usize]) -> Result<f32, TensorError> {
        let in_bounds =
            index.len() == self.rank() && index.iter().zip(&self.shape).all(|(i, n)| i < n);
        if !in_bounds {
            return Err(TensorError::Index {
                op: "get",
                index: index.to_vec(),
                shape: self.shape.clone(),
            });
        }
        let host = self.host("get")?;
        let at = self.offset + index.iter().zip(&self.strides).map(|(i, s)| i * s).sum::<usize>();
        Ok(host.get(at))
    }

    /// Sub-tensor `i` along the first dimension, as a view sharing storage.
    pub fn select(&self, i: usize) -> Result<Tensor, TensorError> {
        if self.rank() == 0 || i >= self.shape[0] {
            return Err(TensorError::Index {
                op: "select",
                index: vec![i],
                shape: self.shape.clone(),
            });
        }
        Ok(Tensor {
            shape: self.shape[1..].to_vec(),
            strides: self.strides[1..].to_vec(),
            offset: self.offset + i * self.strides[0],
            storage: self.storage.clone(),
        })
    }

    /// A row-major copy stored as `dtype` (rounding to nearest for `f16` and
    /// `bf16`).
    ///
    /// # Panics
    ///
    /// On a device tensor, unless it already is row-major `dtype` (call
    /// [`to_host`](Self::to_host) first).
    pub fn to_dtype(&self, dtype: DType) -> Tensor {
        if dtype == self.dtype() {
            return self.row_major("to_dtype");
        }
        self.host_or_panic("to_dtype");
        let values = self.to_vec_f32();
        let data = match dtype {
            DType::F32 => HostData::F32(Arc::new(values)),
            DType::F16 => {
                HostData::F16(Arc::new(values.iter().map(|&x| f16::from_f32(x)).collect()))
            }
            DType::BF16 => {
                HostData::BF16(Arc::new(values.iter().map(|&x| bf16::from_f32(x)).collect()))
            }
        };
        Tensor::from_parts(data, &self.shape)
    }

    /// A tensor of `shape` from little-endian element bytes of `dtype` (the
    /// safetensors layout), converted to `f32`.
    pub fn from_le_bytes(
        bytes: &[u8],
        dtype: DType,
        shape: &[usize],
    ) -> Result<Tensor, TensorError> {
        let expected = checked_numel("from_le_bytes", shape)?;
        let size = dtype.size_bytes();
        if expected.checked_mul(size) != Some(bytes.len()) {
            return Err(TensorError::DataLength {
                op: "from_le_bytes",
                shape: shape.to_vec(),
                expected,
                actual: bytes.len() / size,
            });
        }
        let mut values = try_with_capacity("from_le_bytes", shape, expected)?;
        match dtype {
            DType::F32 => values.extend(
                bytes.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])),
            ),
            DType::F16 => values
                .extend(bytes.chunks_exact(2).map(|b| f16::from_le_bytes([b[0], b[1]]).to_f32())),
            DType::BF16 => values
                .extend(bytes.chunks_exact(2).map(|b| bf16::from_le_bytes([b[0], b[1]]).to_f32())),
        }
        Tensor::from_vec(values, shape)
    }

    /// The elements as little-endian bytes of the storage dtype, row-major.
    ///
    /// # Panics
    ///
    /// On a device tensor (call [`to_host`](Self::to_host) first).
    pub fn to_le_bytes(&self) -> Vec<u8> {
        let host = self.host_or_panic("to_le_bytes");
        let mut out = Vec::with_capacity(self.numel() * self.dtype().size_bytes());
        self.for_each_offset(|at| match host {
            HostData::F32(v) => out.extend_from_slice(&v[at].to_le_bytes()),
            HostData::F16(v) => out.extend_from_slice(&v[at].to_le_bytes()),
            HostData::BF16(v) => out.extend_from_slice(&v[at].to_le_bytes()),
        });
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn from_vec_checks_the_length_and_names_the_shape() {
        let err = Tensor::from_vec(vec![1.0; 5], &[2, 3]).unwrap_err();
        assert_eq!(err.to_string(), "from_vec: shape [2, 3] holds 6 elements but 5 were given");
    }

    #[test]
    fn transpose_is_a_view_and_contiguous_materialises_it() {
        let t = Tensor::from_vec((0..6).map(|x| x as f32).collect(), &[2, 3]).unwrap();
        let tt = t.transpose().unwrap();
        assert_eq!(tt.shape(), &[3, 2]);
        assert!(!tt.is_contiguous());
        assert_eq!(tt.get(&[2, 1]).unwrap(), 5.0);
        assert_eq!(tt.contiguous().as_f32_slice().unwrap(), &[0.0, 3.0, 1.0, 4.0, 2.0, 5.0]);
        assert_eq!(tt.reshape(&[6]).unwrap().to_vec_f32(), vec![0.0, 3.0, 1.0, 4.0, 2.0, 5.0]);
        assert!(t.reshape(&[4]).is_err());
    }

    #[test]
    fn writes_copy_shared_storage() {
        let a = Tensor::zeros(&[2, 2]);
        let mut b = a.clone();
        b.as_f32_slice_mut().unwrap()[0] = 7.0;
        assert_eq!(a.get(&[0, 0]).unwrap(), 0.0);
        assert_eq!(b.get(&[0, 0]).unwrap(), 7.0);
    }

    #[test]
    fn half_precision_round_trips_representable_values() {
        let t = Tensor::from_vec(vec![1.5, -2.25, 0.0, 1024.0], &[4]).unwrap();
        for dtype in [DType::F16, DType::BF16] {
            let h = t.to_dtype(dtype);
            assert_eq!(h.dtype(), dtype);
            assert_eq!(h.to_le_bytes().len(), 8);
            assert_eq!(h.to_dtype(DType::F32).to_vec_f32(), t.to_vec_f32());
            let back = Tensor::from_le_bytes(&h.to_le_bytes(), dtype, &[4]).unwrap();
            assert_eq!(back.to_vec_f32(), t.to_vec_f32());
        }
        // bf16 keeps 8 mantissa bits: 1 + 2^-9 rounds to 1.
        let fine = Tensor::from_vec(vec![1.0 + 1.0 / 512.0], &[1]).unwrap();
        assert_eq!(fine.to_dtype(DType::BF16).to_vec_f32(), vec![1.0]);
    }

    #[test]
    fn select_and_get_check_bounds() {
        let t = Tensor::from_vec((0..6).map(|x| x as f32).collect(), &[3, 2]).unwrap();
        assert_eq!(t.select(2).unwrap().to_vec_f32(), vec![4.0, 5.0]);
        assert!(matches!(t.select(3), Err(TensorError::Index { .. })));
        assert!(matches!(t.get(&[0, 2]), Err(TensorError::Index { .. })));
    }

    #[test]
    fn shapes_whose_element_count_overflows_are_errors_not_wraps() {
        // [2^63, 2] wraps to 0 elements: it used to pass as an empty tensor
        // (or panic on overflow in a debug build).
        let wraps = [1usize << 63, 2];
        assert!(matches!(Tensor::from_vec(vec![], &wraps), Err(TensorError::TooLarge { .. })));
        assert!(matches!(Tensor::try_zeros(&wraps), Err(TensorError::TooLarge { .. })));
        assert!(matches!(
            Tensor::from_le_bytes(&[], DType::F16, &wraps),
            Err(TensorError::TooLarge { .. })
        ));
        let t = Tensor::zeros(&[2, 2]);
        assert!(matches!(t.reshape(&[1 << 62, 8]), Err(TensorError::TooLarge { .. })));
        // Empty, but its strides would overflow.
        let error = Tensor::from_vec(vec![], &[0, 1 << 40, 1 << 40]).unwrap_err();
        assert_eq!(
            error.to_string(),
            "from_vec: shape [0, 1099511627776, 1099511627776] is too large: \
             the product of its dimensions overflows usize"
        );
        assert_eq!(Tensor::from_vec(vec![], &[0, 1 << 20, 3]).unwrap().numel(), 0);
    }

    #[test]
    fn allocations_that_cannot_be_had_are_errors_not_aborts() {
        // 2^61 f32 elements are 2^63 bytes: more than any allocation may be.
        let mut rng = Rng::new(1);
        let state = rng.state();
        let error = Tensor::try_uniform(&[1 << 61], -1.0, 1.0, &mut rng).unwrap_err();
        assert!(error.to_string().contains("cannot allocate 9223372036854775808 bytes"), "{error}");
        assert_eq!(rng.state(), state, "nothing is drawn before the memory is had");
        assert!(matches!(
            Tensor::try_randn(&[1 << 61], 1.0, &mut rng),
            Err(TensorError::TooLarge { .. })
        ));
        assert!(matches!(Tensor::try_full(&[usize::MAX], 1.0), Err(TensorError::TooLarge { .. })));
    }

    #[test]
    fn fallible_constructors_draw_what_the_infallible_ones_do() {
        let (mut a, mut b) = (Rng::new(5), Rng::new(5));
        let x = Tensor::uniform(&[3, 4], -1.0, 1.0, &mut a).to_vec_f32();
        let y = Tensor::try_uniform(&[3, 4], -1.0, 1.0, &mut b).unwrap().to_vec_f32();
        assert_eq!(x, y);
        assert_eq!(Tensor::try_full(&[2, 0], 1.0).unwrap().numel(), 0);
    }
}
