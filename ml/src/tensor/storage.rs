//! Element storage: the dtypes a tensor can be stored as ([`DType`]), host
//! buffers of each ([`HostData`], shared between views) and where a
//! tensor's elements live ([`Storage`]: host memory or one device buffer).

use std::sync::Arc;

use half::{bf16, f16};

use super::DeviceData;

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
    pub(super) fn dtype(&self) -> DType {
        match self {
            HostData::F32(_) => DType::F32,
            HostData::F16(_) => DType::F16,
            HostData::BF16(_) => DType::BF16,
        }
    }

    pub(super) fn get(&self, at: usize) -> f32 {
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
