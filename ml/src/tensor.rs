//! Tensors and reverse-mode automatic differentiation.
//!
//! A [`Tensor`] is an n-dimensional array with a shape, strides and a storage
//! dtype: computation is always in `f32`, while `f16` and `bf16` (through the
//! `half` crate) exist as storage formats that [`Tensor::to_dtype`] converts
//! to and from. Storage is a [`Storage`] enum: host memory, shared
//! copy-on-write between views, or one buffer on a zbmd-gpu
//! [`Device`](zbmd_gpu::Device) ([`Tensor::to_device`],
//! [`Tensor::to_host`]). Device storage is `f32` only, and a device tensor
//! is a place to keep values, not to compute on:
//! host accessors refuse it with [`TensorError::OnDevice`] (or, where they
//! return no `Result`, panic saying so), and the graph computes on the host,
//! optionally sending its matrix products to a device through a
//! [`MatmulBackend`].
//!
//! Differentiation is a tape ([`Graph`]): every operation on [`Var`]s records
//! a node, and [`Graph::backward`] walks the tape in reverse, the classic
//! reverse-mode scheme (Griewank and Walther, *Evaluating Derivatives*, 2008).
//! Matrix products go through the `gemm` crate.
//!
//! The files follow the ideas: `error.rs` ([`TensorError`]), `storage.rs`
//! (dtypes and where elements live), `shape.rs` (element counts and
//! allocations that cannot overflow or abort), this file (the [`Tensor`]
//! and its constructors), `view.rs` (strided views and host accessors),
//! `convert.rs` (dtype, byte and device conversions), `graph.rs` and
//! `graph/` (the tape), `kernels.rs` (the numeric kernels) and `device.rs`
//! (device buffers and matrix-product backends).

mod convert;
mod device;
mod error;
mod graph;
mod kernels;
mod shape;
mod storage;
mod view;

use std::sync::Arc;

use zbmd_gpu::DeviceId;

use crate::rng::Rng;

pub use device::{DeviceData, MatmulBackend, PoolMatmul, Product};
pub use error::TensorError;
pub use graph::{Gradients, Graph, Var};
pub use kernels::erf;
pub(crate) use shape::{checked_numel, contiguous_strides, try_filled, try_with_capacity};
pub use storage::{DType, HostData, Storage};

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

    /// The storage.
    pub fn storage(&self) -> &Storage {
        &self.storage
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
