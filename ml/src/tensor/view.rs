//! Strided views and host accessors: which storage offsets a view shows
//! ([`Tensor::is_contiguous`], the row-major walk), reading them
//! ([`Tensor::get`], [`Tensor::to_vec_f32`], slices), and views that share
//! storage ([`Tensor::transpose`], [`Tensor::select`], [`Tensor::reshape`]
//! when contiguous). Host accessors refuse a device tensor with
//! [`TensorError::OnDevice`], or panic saying so where they return no
//! `Result`.

use std::sync::Arc;

use super::{DType, HostData, Storage, Tensor, TensorError, checked_numel, contiguous_strides};

impl Tensor {
    /// This tensor with its elements in row-major order and its dtype kept:
    /// itself when it already is, a host copy otherwise (a device tensor
    /// panics then, naming `op`). Half-precision elements are copied as bits,
    /// never through `f32`.
    pub(super) fn row_major(&self, op: &'static str) -> Tensor {
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
    pub(super) fn gather<T: Copy>(&self, storage: &[T]) -> Arc<Vec<T>> {
        let mut out = Vec::with_capacity(self.numel());
        self.for_each_offset(|at| out.push(storage[at]));
        Arc::new(out)
    }

    /// Whether the elements lie in row-major order with no gaps.
    pub fn is_contiguous(&self) -> bool {
        let want = contiguous_strides(&self.shape);
        self.shape.iter().zip(self.strides.iter().zip(&want)).all(|(&n, (&s, &w))| n <= 1 || s == w)
    }

    /// The host elements, or [`TensorError::OnDevice`] naming `op`.
    pub(super) fn host(&self, op: &'static str) -> Result<&HostData, TensorError> {
        match &self.storage {
            Storage::Host(data) => Ok(data),
            Storage::Device(data) => {
                Err(TensorError::OnDevice { op, device: data.device_id().to_string() })
            }
        }
    }

    /// The host elements for an accessor that returns no `Result`; panics
    /// with the [`TensorError::OnDevice`] message on a device tensor.
    pub(super) fn host_or_panic(&self, op: &'static str) -> &HostData {
        self.host(op).unwrap_or_else(|error| panic!("{error}"))
    }

    /// Storage offset of each logical element, in row-major order.
    pub(super) fn for_each_offset(&self, mut visit: impl FnMut(usize)) {
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
}

#[cfg(test)]
mod tests {
    use super::*;

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
    fn select_and_get_check_bounds() {
        let t = Tensor::from_vec((0..6).map(|x| x as f32).collect(), &[3, 2]).unwrap();
        assert_eq!(t.select(2).unwrap().to_vec_f32(), vec![4.0, 5.0]);
        assert!(matches!(t.select(3), Err(TensorError::Index { .. })));
        assert!(matches!(t.get(&[0, 2]), Err(TensorError::Index { .. })));
    }
}
