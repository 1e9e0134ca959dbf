//! Conversions: to and from the device ([`Tensor::to_device`],
//! [`Tensor::to_host`]), between storage dtypes ([`Tensor::to_dtype`]) and
//! to and from little-endian element bytes (the safetensors layout).

use std::sync::Arc;

use half::{bf16, f16};
use zbmd_gpu::Device;

use super::{
    DType, DeviceData, HostData, Storage, Tensor, TensorError, checked_numel, contiguous_strides,
    try_with_capacity,
};

impl Tensor {
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
}
